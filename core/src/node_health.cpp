// NodeHealth: per-service, per-node failure stamps and ejection state behind a lock-free "all
// healthy" shortcut. Two levels of tables, each behind a shared_mutex: services (never
// removed, so a ServiceTable pointer stays valid for the NodeHealth's life) and, per service,
// nodes. A node's state is atomics only; ejection moves by compare-and-swap.
#include <micro/node_health.hpp>

#include <micro/error.hpp>
#include <micro/text.hpp>

#include <algorithm>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

namespace micro {

namespace {

constexpr std::int64_t never = INT64_MIN / 2;  // far past, yet safe to subtract from now

// Entries of nodes without a recent failure are dropped past this many per service.
constexpr std::size_t max_nodes_per_service = 1024;

const std::string& node_key(const Node& node) {
  return node.id.empty() ? node.address : node.id;
}

std::int64_t count_of(std::chrono::nanoseconds duration) {
  return duration.count();
}

}  // namespace

NodeHealthOptions NodeHealthOptions::penalty_only(std::chrono::nanoseconds penalty) {
  NodeHealthOptions options;
  options.penalty = penalty;
  options.eject_consecutive = 0;
  options.eject_error_percent = 0;
  return options;
}

NodeHealthOptions NodeHealthOptions::from(const PluginArguments& arguments) {
  NodeHealthOptions options;
  options.penalty = arguments.get_duration("penalty");
  options.eject_consecutive = static_cast<int>(arguments.get_int("eject_consecutive"));
  options.eject_error_percent = static_cast<int>(arguments.get_int("eject_error_percent"));
  options.eject_min_calls = static_cast<int>(arguments.get_int("eject_min_calls"));
  options.eject_window = arguments.get_duration("eject_window");
  options.eject_base = arguments.get_duration("eject_base");
  options.eject_max = arguments.get_duration("eject_max");
  options.eject_max_percent = static_cast<int>(arguments.get_int("eject_max_percent"));
  options.eject_decay = arguments.get_duration("eject_decay");
  if (options.eject_base > options.eject_max)
    throw Exception(Error(arguments.error_id(), ErrorCode::bad_request,
                          "option eject_base (" + arguments.get_string("eject_base") +
                              ") is longer than eject_max (" + arguments.get_string("eject_max") +
                              "); expected eject_base <= eject_max"));
  return options;
}

struct NodeHealth::NodeState {
  std::atomic<std::int64_t> last_failure{never};
  std::atomic<std::uint64_t> failures{0}, successes{0}, ejections{0};
  // Admitted: failures in a row, and the tumbling window's counts.
  std::atomic<std::uint32_t> consecutive{0};
  std::atomic<std::int64_t> window_start{never};
  std::atomic<std::uint32_t> window_calls{0}, window_failures{0};
  // Ejected: since when (the first ejection of this spell, for the share cap), until when,
  // and the pick that claimed the half-open probe (never: no probe out).
  std::atomic<bool> ejected{false};
  std::atomic<std::int64_t> ejected_at{never}, ejected_until{never}, period{0};
  std::atomic<std::int64_t> probe_claimed{never};
  // Doublings the next ejection gets, and when the node was last re-admitted (for decay).
  std::atomic<int> level{0};
  std::atomic<std::int64_t> admitted_since{never};
};

struct NodeHealth::ServiceTable {
  mutable std::shared_mutex mutex;
  // shared_ptr: record() keeps its node alive even if a prune drops the entry meanwhile.
  StringMap<std::shared_ptr<NodeState>> nodes;

  const NodeState* find(const Node& node) const {
    auto found = nodes.find(node_key(node));
    return found == nodes.end() ? nullptr : found->second.get();
  }
};

struct NodeHealth::State {
  mutable std::shared_mutex mutex;
  StringMap<std::unique_ptr<ServiceTable>> services;

  ServiceTable* find_service(std::string_view service) const {
    std::shared_lock lock(mutex);
    auto found = services.find(service);
    return found == services.end() ? nullptr : found->second.get();
  }

  ServiceTable& service_table(std::string_view service) {
    if (ServiceTable* table = find_service(service)) return *table;
    std::unique_lock lock(mutex);
    auto& slot = services[std::string(service)];
    if (!slot) slot = std::make_unique<ServiceTable>();
    return *slot;
  }

  std::shared_ptr<NodeState> node_state(std::string_view service, std::string_view key,
                                        std::int64_t penalty, std::int64_t now) {
    ServiceTable& table = service_table(service);
    {
      std::shared_lock lock(table.mutex);
      auto found = table.nodes.find(key);
      if (found != table.nodes.end()) return found->second;
    }
    std::unique_lock lock(table.mutex);
    if (table.nodes.size() >= max_nodes_per_service) {
      std::erase_if(table.nodes, [&](const auto& entry) {
        return now - entry.second->last_failure.load(std::memory_order_relaxed) >= penalty &&
               !entry.second->ejected.load(std::memory_order_relaxed);
      });
    }
    auto& slot = table.nodes[std::string(key)];
    if (!slot) slot = std::make_shared<NodeState>();
    return slot;
  }
};

NodeHealth::NodeHealth(const NodeHealthOptions& options)
    : options_(options),
      penalty_(options.penalty.count()),
      last_failure_(never),
      state_(std::make_unique<State>()) {}

NodeHealth::NodeHealth(std::chrono::nanoseconds penalty)
    : NodeHealth(NodeHealthOptions::penalty_only(penalty)) {}

NodeHealth::~NodeHealth() = default;

bool NodeHealth::should_eject(NodeState& node, std::int64_t now) {
  // consecutive was bumped by the caller for a failure; the window is counted here.
  std::int64_t start = node.window_start.load(std::memory_order_relaxed);
  if (now - start >= count_of(options_.eject_window) &&
      node.window_start.compare_exchange_strong(start, now, std::memory_order_relaxed)) {
    node.window_calls.store(0, std::memory_order_relaxed);
    node.window_failures.store(0, std::memory_order_relaxed);
  }
  std::uint64_t calls = node.window_calls.fetch_add(1, std::memory_order_relaxed) + 1;
  std::uint64_t failures = node.window_failures.fetch_add(1, std::memory_order_relaxed) + 1;
  if (options_.eject_consecutive > 0 && node.consecutive.load(std::memory_order_relaxed) >=
                                            static_cast<std::uint32_t>(options_.eject_consecutive))
    return true;
  return options_.eject_error_percent > 0 &&
         calls >= static_cast<std::uint64_t>(options_.eject_min_calls) &&
         failures * 100 >= static_cast<std::uint64_t>(options_.eject_error_percent) * calls;
}

// Ejects an admitted node (from_probe false) or re-ejects a half-open one whose probe failed.
void NodeHealth::eject(NodeState& node, std::int64_t now, bool from_probe) {
  int level = node.level.load(std::memory_order_relaxed);
  if (!from_probe) {
    // Every full eject_decay admitted since the last re-admission takes a doubling off.
    std::int64_t since = node.admitted_since.load(std::memory_order_relaxed);
    std::int64_t decay = count_of(options_.eject_decay);
    if (since != never && decay > 0)
      level = static_cast<int>(std::max<std::int64_t>(0, level - (now - since) / decay));
  }
  std::int64_t period = count_of(options_.eject_base);
  const std::int64_t longest = count_of(options_.eject_max);
  for (int doubling = 0; doubling < level && period < longest; ++doubling) period *= 2;
  period = std::min(period, longest);
  node.level.store(std::min(level + 1, 62), std::memory_order_relaxed);
  node.period.store(period, std::memory_order_relaxed);
  node.ejected_until.store(now + period, std::memory_order_relaxed);
  if (!from_probe) {
    node.ejected_at.store(now, std::memory_order_relaxed);
    bool admitted = false;
    // Stamps first, flag last: a pick that sees the flag sees the period too.
    if (!node.ejected.compare_exchange_strong(admitted, true, std::memory_order_release,
                                              std::memory_order_relaxed))
      return;  // another thread ejected it meanwhile
    ejected_.fetch_add(1, std::memory_order_relaxed);
  }
  node.ejections.fetch_add(1, std::memory_order_relaxed);
  ejections_.fetch_add(1, std::memory_order_relaxed);
}

void NodeHealth::readmit(NodeState& node, std::int64_t now) {
  node.consecutive.store(0, std::memory_order_relaxed);
  node.window_start.store(now, std::memory_order_relaxed);
  node.window_calls.store(0, std::memory_order_relaxed);
  node.window_failures.store(0, std::memory_order_relaxed);
  node.admitted_since.store(now, std::memory_order_relaxed);
  bool ejected = true;
  if (node.ejected.compare_exchange_strong(ejected, false, std::memory_order_release,
                                           std::memory_order_relaxed))
    ejected_.fetch_sub(1, std::memory_order_relaxed);
}

void NodeHealth::record(std::string_view service, const Node& node, const Outcome& outcome,
                        Clock::time_point time) {
  std::int64_t now = nanoseconds_of(time);
  std::shared_ptr<NodeState> state = state_->node_state(service, node_key(node), penalty_, now);
  if (outcome.ok) {
    state->successes.fetch_add(1, std::memory_order_relaxed);
    state->last_failure.store(never, std::memory_order_relaxed);
  } else {
    state->failures.fetch_add(1, std::memory_order_relaxed);
    state->last_failure.store(now, std::memory_order_relaxed);
    last_failure_.store(now, std::memory_order_relaxed);
  }
  if (!options_.ejection_enabled()) return;

  if (state->ejected.load(std::memory_order_acquire)) {
    // Only the probe's outcome moves an ejected node: outcomes of attempts made before the
    // ejection, arriving late, say nothing new. The first outcome after a claim is taken as
    // the probe's; so is an outcome after the period of a node the share cap kept pickable
    // (it gets traffic without a probe).
    std::int64_t claimed = state->probe_claimed.load(std::memory_order_relaxed);
    if (claimed == never) {
      if (now < state->ejected_until.load(std::memory_order_relaxed)) return;
    } else if (!state->probe_claimed.compare_exchange_strong(claimed, never,
                                                             std::memory_order_relaxed)) {
      return;
    }
    if (outcome.ok)
      readmit(*state, now);
    else
      eject(*state, now, true);
    return;
  }

  if (outcome.ok) {
    state->consecutive.store(0, std::memory_order_relaxed);
    std::int64_t start = state->window_start.load(std::memory_order_relaxed);
    if (now - start >= count_of(options_.eject_window) &&
        state->window_start.compare_exchange_strong(start, now, std::memory_order_relaxed)) {
      state->window_calls.store(0, std::memory_order_relaxed);
      state->window_failures.store(0, std::memory_order_relaxed);
    }
    state->window_calls.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  state->consecutive.fetch_add(1, std::memory_order_relaxed);
  if (should_eject(*state, now)) eject(*state, now, false);
}

NodeHealth::PickView NodeHealth::pick(std::string_view service, std::span<const Node> nodes,
                                      Clock::time_point time) {
  PickView view;
  const std::size_t count = nodes.size();
  view.size_ = count;
  std::uint8_t* ranks = view.inline_ranks_.data();
  if (count > view.inline_ranks_.size()) {
    view.heap_ranks_.assign(count, PickView::healthy);
    ranks = view.heap_ranks_.data();
  } else {
    std::fill_n(ranks, count, PickView::healthy);
  }
  view.usable_ = count;
  ServiceTable* table = state_->find_service(service);
  if (!table) return view;

  const std::int64_t now = nanoseconds_of(time);
  std::shared_lock lock(table->mutex);
  std::size_t ejected_count = 0;
  for (std::size_t index = 0; index < count; ++index) {
    auto found = table->nodes.find(node_key(nodes[index]));
    if (found == table->nodes.end()) continue;
    NodeState& state = *found->second;
    bool penalised =
        penalty_ > 0 && now - state.last_failure.load(std::memory_order_relaxed) < penalty_;
    ranks[index] = penalised ? PickView::penalised : PickView::healthy;
    if (!state.ejected.load(std::memory_order_acquire)) continue;
    ranks[index] = PickView::ejected;
    ++ejected_count;
  }

  // The share cap: beyond `allowed`, the nodes ejected last count as not ejected for this
  // pick (only penalised if they failed within the penalty).
  const std::size_t allowed = count * static_cast<std::size_t>(options_.eject_max_percent) / 100;
  while (ejected_count > allowed) {
    std::size_t latest = count;
    std::int64_t latest_at = never;
    for (std::size_t index = 0; index < count; ++index) {
      if (ranks[index] != PickView::ejected) continue;
      std::int64_t at = table->find(nodes[index])->ejected_at.load(std::memory_order_relaxed);
      if (latest == count || at > latest_at) {
        latest = index;
        latest_at = at;
      }
    }
    bool penalised =
        penalty_ > 0 &&
        now - table->find(nodes[latest])->last_failure.load(std::memory_order_relaxed) < penalty_;
    ranks[latest] = penalised ? PickView::penalised : PickView::healthy;
    --ejected_count;
  }

  // Half-open: one pick at a time carries the probe of a node (still ejected after the cap)
  // whose period is over; a probe that never reported (its attempt was lost) is given to
  // another pick after one more period.
  for (std::size_t index = 0; index < count && ejected_count > 0; ++index) {
    if (ranks[index] != PickView::ejected) continue;
    NodeState& state = *table->nodes.find(node_key(nodes[index]))->second;
    if (now < state.ejected_until.load(std::memory_order_relaxed)) continue;
    std::int64_t claimed = state.probe_claimed.load(std::memory_order_relaxed);
    if (claimed != never && now - claimed < state.period.load(std::memory_order_relaxed)) continue;
    if (state.probe_claimed.compare_exchange_strong(claimed, now, std::memory_order_relaxed)) {
      view.probe_ = index;
      break;
    }
  }

  std::uint8_t best = PickView::ejected;
  for (std::size_t index = 0; index < count; ++index) best = std::min(best, ranks[index]);
  view.best_ = best;
  view.usable_ = static_cast<std::size_t>(
      std::count_if(ranks, ranks + count, [best](std::uint8_t rank) { return rank <= best; }));
  return view;
}

NodeHealth::ServiceView::ServiceView(const NodeHealth& owner, const ServiceTable* table,
                                     std::int64_t now)
    : owner_(&owner), table_(table), now_(now) {
  if (table_) lock_ = std::shared_lock(table_->mutex);
}

bool NodeHealth::ServiceView::penalised(const Node& node) const {
  if (!table_ || owner_->penalty_ <= 0) return false;
  const NodeState* state = table_->find(node);
  return state && now_ - state->last_failure.load(std::memory_order_relaxed) < owner_->penalty_;
}

NodeHealth::ServiceView NodeHealth::read(std::string_view service, Clock::time_point now) const {
  return ServiceView(*this, state_->find_service(service), nanoseconds_of(now));
}

bool NodeHealth::is_penalised(std::string_view service, const Node& node,
                              Clock::time_point now) const {
  return read(service, now).penalised(node);
}

bool NodeHealth::is_ejected(std::string_view service, const Node& node, Clock::time_point) const {
  ServiceTable* table = state_->find_service(service);
  if (!table) return false;
  std::shared_lock lock(table->mutex);
  const NodeState* state = table->find(node);
  return state && state->ejected.load(std::memory_order_acquire);
}

NodeHealth::Counts NodeHealth::counts(std::string_view service, const Node& node) const {
  ServiceTable* table = state_->find_service(service);
  if (!table) return {};
  std::shared_lock lock(table->mutex);
  const NodeState* state = table->find(node);
  if (!state) return {};
  return {state->successes.load(std::memory_order_relaxed),
          state->failures.load(std::memory_order_relaxed),
          state->ejections.load(std::memory_order_relaxed)};
}

}  // namespace micro
