// FailurePenalty: per-service, per-node failure stamps behind a lock-free "any recent failure"
// shortcut. Two levels of tables, each behind a shared_mutex: services (never removed, so a
// ServiceTable pointer stays valid for the FailurePenalty's life) and, per service, nodes.
#include <micro/node_health.hpp>

#include <micro/text.hpp>

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

std::int64_t now_nanoseconds() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             FailurePenalty::Clock::now().time_since_epoch())
      .count();
}

struct NodeHealth {
  std::atomic<std::int64_t> last_failure{never};
  std::atomic<std::uint64_t> failures{0};
  std::atomic<std::uint64_t> successes{0};
};

}  // namespace

struct FailurePenalty::ServiceTable {
  mutable std::shared_mutex mutex;
  // shared_ptr: record() keeps its node alive even if a prune drops the entry meanwhile.
  StringMap<std::shared_ptr<NodeHealth>> nodes;
};

struct FailurePenalty::State {
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

  std::shared_ptr<NodeHealth> node_health(std::string_view service, std::string_view key,
                                          std::int64_t penalty) {
    ServiceTable& table = service_table(service);
    {
      std::shared_lock lock(table.mutex);
      auto found = table.nodes.find(key);
      if (found != table.nodes.end()) return found->second;
    }
    std::unique_lock lock(table.mutex);
    if (table.nodes.size() >= max_nodes_per_service) {
      std::int64_t now = now_nanoseconds();
      std::erase_if(table.nodes, [&](const auto& entry) {
        return now - entry.second->last_failure.load(std::memory_order_relaxed) >= penalty;
      });
    }
    auto& slot = table.nodes[std::string(key)];
    if (!slot) slot = std::make_shared<NodeHealth>();
    return slot;
  }
};

FailurePenalty::FailurePenalty(std::chrono::nanoseconds penalty)
    : penalty_(penalty.count()), last_failure_(never), state_(std::make_unique<State>()) {}

FailurePenalty::~FailurePenalty() = default;

void FailurePenalty::record(std::string_view service, const Node& node, const Outcome& outcome) {
  std::shared_ptr<NodeHealth> health = state_->node_health(service, node_key(node), penalty_);
  if (outcome.ok) {
    health->successes.fetch_add(1, std::memory_order_relaxed);
    health->last_failure.store(never, std::memory_order_relaxed);
    return;
  }
  health->failures.fetch_add(1, std::memory_order_relaxed);
  std::int64_t now = now_nanoseconds();
  health->last_failure.store(now, std::memory_order_relaxed);
  last_failure_.store(now, std::memory_order_relaxed);
}

FailurePenalty::ServiceView::ServiceView(const FailurePenalty& owner, const ServiceTable* table,
                                         std::int64_t now)
    : owner_(&owner), table_(table), now_(now) {
  if (table_) lock_ = std::shared_lock(table_->mutex);
}

bool FailurePenalty::ServiceView::penalised(const Node& node) const {
  if (!table_ || owner_->penalty_ <= 0) return false;
  auto found = table_->nodes.find(node_key(node));
  return found != table_->nodes.end() &&
         now_ - found->second->last_failure.load(std::memory_order_relaxed) < owner_->penalty_;
}

FailurePenalty::ServiceView FailurePenalty::read(std::string_view service,
                                                 Clock::time_point now) const {
  return ServiceView(*this, state_->find_service(service), nanoseconds_of(now));
}

bool FailurePenalty::is_penalised(std::string_view service, const Node& node,
                                  Clock::time_point now) const {
  return read(service, now).penalised(node);
}

FailurePenalty::Counts FailurePenalty::counts(std::string_view service, const Node& node) const {
  ServiceTable* table = state_->find_service(service);
  if (!table) return {};
  std::shared_lock lock(table->mutex);
  auto found = table->nodes.find(node_key(node));
  if (found == table->nodes.end()) return {};
  return {found->second->successes.load(std::memory_order_relaxed),
          found->second->failures.load(std::memory_order_relaxed)};
}

}  // namespace micro
