// selector/roundrobin — rotates over a service's nodes across calls and their retries.
//
// Every select_node() of a service, first attempt or retry, takes the next turn of one
// per-service atomic counter, so consecutive calls (and a retry after its failed attempt)
// land on consecutive nodes. The rotation of each service starts at a random node, so many
// clients started together do not all hit the first node first.
//
// Feedback: every report() is counted per node (successes, failures) and a failure stamps
// the node's time of last failure. For `penalty` after that, a turn that lands on the node
// moves on to the next node without a recent failure; a success on the node lifts the
// penalty. When every node is penalised the rotation goes on unchanged.
//
// Hot path: one shared (read) lock to find the service's counter and one atomic increment;
// the failure stamps are read only while some failure is inside the penalty window.
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
  explicit ServiceHealth(std::uint64_t start) : next(start) {}
  std::atomic<std::uint64_t> next;  // the rotation's next turn
  std::shared_mutex mutex;
  // shared_ptr: report() keeps its node alive even if a prune drops the entry meanwhile.
  std::unordered_map<std::string, std::shared_ptr<NodeHealth>, StringHash, std::equal_to<>> nodes;
};

// Entries of nodes that have not failed recently are dropped past this many per service,
// so churning node ids do not grow the table forever.
constexpr std::size_t max_nodes_per_service = 1024;

class RoundRobinSelector final : public micro::Selector {
 public:
  explicit RoundRobinSelector(const micro::PluginArguments& arguments)
      : penalty_(std::chrono::duration_cast<std::chrono::nanoseconds>(
                     arguments.get_duration("penalty", std::chrono::seconds(10)))
                     .count()) {}

  std::size_t select_node(std::string_view service_name, std::span<const micro::Node> nodes,
                          const micro::Context&, int) override {
    std::size_t count = nodes.size();
    if (count <= 1) return 0;
    ServiceHealth& service = service_health(service_name);
    std::size_t index =
        static_cast<std::size_t>(service.next.fetch_add(1, std::memory_order_relaxed) % count);
    std::int64_t now = now_nanoseconds();
    if (penalty_ <= 0 || now - last_failure_.load(std::memory_order_relaxed) >= penalty_)
      return index;

    std::shared_lock lock(service.mutex);
    auto penalised = [&](const micro::Node& node) {
      auto found = service.nodes.find(node_key(node));
      return found != service.nodes.end() &&
             now - found->second->last_failure.load(std::memory_order_relaxed) < penalty_;
    };
    for (std::size_t step = 0; step < count; ++step) {
      std::size_t candidate = (index + step) % count;
      if (!penalised(nodes[candidate])) return candidate;
    }
    return index;
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
  // Services are never removed, so the reference stays valid once found.
  ServiceHealth& service_health(std::string_view service_name) {
    {
      std::shared_lock lock(mutex_);
      auto found = services_.find(service_name);
      if (found != services_.end()) return *found->second;
    }
    std::unique_lock lock(mutex_);
    auto& slot = services_[std::string(service_name)];
    if (!slot) slot = std::make_unique<ServiceHealth>(next_random());
    return *slot;
  }

  std::shared_ptr<NodeHealth> node_health(std::string_view service_name, std::string_view key) {
    ServiceHealth& service = service_health(service_name);
    {
      std::shared_lock lock(service.mutex);
      auto found = service.nodes.find(key);
      if (found != service.nodes.end()) return found->second;
    }
    std::unique_lock lock(service.mutex);
    if (service.nodes.size() >= max_nodes_per_service) {
      std::int64_t now = now_nanoseconds();
      std::erase_if(service.nodes, [&](const auto& entry) {
        return now - entry.second->last_failure.load(std::memory_order_relaxed) >= penalty_;
      });
    }
    auto& slot = service.nodes[std::string(key)];
    if (!slot) slot = std::make_shared<NodeHealth>();
    return slot;
  }

  const std::int64_t penalty_;  // nanoseconds; 0 turns the penalty off
  // The latest failure of any node: lets the common path skip the failure stamps.
  std::atomic<std::int64_t> last_failure_{NodeHealth::never};
  std::shared_mutex mutex_;
  std::unordered_map<std::string, std::unique_ptr<ServiceHealth>, StringHash, std::equal_to<>>
      services_;
};

const micro::PluginOption options[] = {
    {"penalty", "duration", "10s",
     "how long a node that failed is passed over while other nodes are healthy (0: never)"},
};

}  // namespace

MICRO_PLUGIN(selector, roundrobin, "rotates over nodes across calls, skipping recent failures",
             options, [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new RoundRobinSelector(arguments);
             })
