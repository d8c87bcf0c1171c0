// selector/random — picks a node uniformly at random, avoiding nodes that failed recently.
//
// Feedback: every report() is counted per node (successes, failures) and a failure stamps
// the node's time of last failure. For `penalty` after that, the node is skipped as long
// as some other node has not failed recently; a success on the node lifts the penalty.
// When every node is penalised the pick is uniform over all of them, so a call is never
// refused for lack of a healthy node.
//
// Hot path: with no failure inside the penalty window (one atomic load says so), a pick is
// a thread-local random number and nothing else. Otherwise it takes shared (read) locks on
// the per-service table to read the failure stamps.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>

#include <micro/context.hpp>
#include <micro/plugin.hpp>
#include <micro/registry.hpp>
#include <micro/selector.hpp>

namespace {

using Clock = std::chrono::steady_clock;

std::int64_t now_nanoseconds() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// splitmix64 per thread: fast, no shared state, seeded once per thread.
std::uint64_t next_random() {
  thread_local std::uint64_t state = [] {
    std::random_device device;
    return (static_cast<std::uint64_t>(device()) << 32) ^ device() ^
           std::hash<std::thread::id>{}(std::this_thread::get_id());
  }();
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A number in [0, bound) without division (Lemire); the bias is negligible for node counts.
std::size_t random_below(std::size_t bound) {
  return static_cast<std::size_t>(((next_random() >> 32) * static_cast<std::uint64_t>(bound)) >>
                                  32);
}

const std::string& node_key(const micro::Node& node) {
  return node.id.empty() ? node.address : node.id;
}

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view text) const noexcept {
    return std::hash<std::string_view>{}(text);
  }
};

struct NodeHealth {
  static constexpr std::int64_t never = INT64_MIN / 2;
  std::atomic<std::int64_t> last_failure{never};
  std::atomic<std::uint64_t> failures{0};
  std::atomic<std::uint64_t> successes{0};
};

struct ServiceHealth {
  std::shared_mutex mutex;
  // shared_ptr: report() keeps its node alive even if a prune drops the entry meanwhile.
  std::unordered_map<std::string, std::shared_ptr<NodeHealth>, StringHash, std::equal_to<>> nodes;
};

// Entries of nodes that have not failed recently are dropped past this many per service,
// so churning node ids do not grow the table forever.
constexpr std::size_t max_nodes_per_service = 1024;

class RandomSelector final : public micro::Selector {
 public:
  explicit RandomSelector(const micro::PluginArguments& arguments)
      : penalty_(std::chrono::duration_cast<std::chrono::nanoseconds>(
                     arguments.get_duration("penalty", std::chrono::seconds(10)))
                     .count()) {}

  std::size_t select_node(std::string_view service, std::span<const micro::Node> nodes,
                          const micro::Context&, int) override {
    std::size_t count = nodes.size();
    if (count <= 1) return 0;
    std::int64_t now = now_nanoseconds();
    if (penalty_ <= 0 || now - last_failure_.load(std::memory_order_relaxed) >= penalty_)
      return random_below(count);

    ServiceHealth* health = find_service(service);
    if (!health) return random_below(count);
    // Pick uniformly among the nodes without a recent failure: count them, then take the
    // k-th. The stamps may move between the passes; a stale read only costs fairness.
    std::shared_lock lock(health->mutex);
    auto penalised = [&](const micro::Node& node) {
      auto found = health->nodes.find(node_key(node));
      return found != health->nodes.end() &&
             now - found->second->last_failure.load(std::memory_order_relaxed) < penalty_;
    };
    std::size_t healthy = 0;
    for (const micro::Node& node : nodes)
      if (!penalised(node)) ++healthy;
    if (healthy == 0 || healthy == count) return random_below(count);
    std::size_t wanted = random_below(healthy);
    for (std::size_t index = 0; index < count; ++index) {
      if (penalised(nodes[index])) continue;
      if (wanted == 0) return index;
      --wanted;
    }
    return random_below(count);  // only if stamps changed under us
  }

  void report(std::string_view service, const micro::Node& node,
              const micro::Outcome& outcome) override {
    std::shared_ptr<NodeHealth> stats = node_health(service, node_key(node));
    NodeHealth& health = *stats;
    if (outcome.ok) {
      health.successes.fetch_add(1, std::memory_order_relaxed);
      health.last_failure.store(NodeHealth::never, std::memory_order_relaxed);
      return;
    }
    health.failures.fetch_add(1, std::memory_order_relaxed);
    std::int64_t now = now_nanoseconds();
    health.last_failure.store(now, std::memory_order_relaxed);
    last_failure_.store(now, std::memory_order_relaxed);
  }

 private:
  ServiceHealth* find_service(std::string_view service) {
    std::shared_lock lock(mutex_);
    auto found = services_.find(service);
    return found == services_.end() ? nullptr : found->second.get();
  }

  std::shared_ptr<NodeHealth> node_health(std::string_view service_name, std::string_view key) {
    ServiceHealth* service = find_service(service_name);
    if (!service) {
      std::unique_lock lock(mutex_);
      auto& slot = services_[std::string(service_name)];
      if (!slot) slot = std::make_unique<ServiceHealth>();
      service = slot.get();
    }
    {
      std::shared_lock lock(service->mutex);
      auto found = service->nodes.find(key);
      if (found != service->nodes.end()) return found->second;
    }
    std::unique_lock lock(service->mutex);
    if (service->nodes.size() >= max_nodes_per_service) {
      std::int64_t now = now_nanoseconds();
      std::erase_if(service->nodes, [&](const auto& entry) {
        return now - entry.second->last_failure.load(std::memory_order_relaxed) >= penalty_;
      });
    }
    auto& slot = service->nodes[std::string(key)];
    if (!slot) slot = std::make_shared<NodeHealth>();
    return slot;
  }

  const std::int64_t penalty_;  // nanoseconds; 0 turns the penalty off
  // The latest failure of any node: lets the common path skip the tables entirely.
  std::atomic<std::int64_t> last_failure_{NodeHealth::never};
  std::shared_mutex mutex_;
  // Services are never removed, so a ServiceHealth pointer stays valid once found.
  std::unordered_map<std::string, std::unique_ptr<ServiceHealth>, StringHash, std::equal_to<>>
      services_;
};

const micro::PluginOption options[] = {
    {"penalty", "duration", "10s",
     "how long a node that failed is skipped while other nodes are healthy (0: never)"},
};

}  // namespace

MICRO_PLUGIN(selector, random, "uniformly random node, skipping nodes that failed recently",
             options, [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new RandomSelector(arguments);
             })
