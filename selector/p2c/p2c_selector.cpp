// selector/p2c — power of two choices over in-flight calls and an EWMA of latency
// (the Finagle/Linkerd balancer).
//
// Each pick draws two different usable nodes at random and takes the cheaper one, where
//   cost = latency × (in-flight + 1) / warmth
// - in-flight: attempts this selector picked the node for and has not heard back about
//   (select_node counts one up, report counts it down: the client reports every attempt).
// - latency: an EWMA of the node's reported latencies, each sample weighted by the time since
//   the previous one (time constant `decay`, default 100 ms), so a node that turns slow is
//   avoided within about `decay` of its first slow answers. Not Finagle's peak EWMA (where a
//   slower sample replaces the average at once) nor its 10 s decay: on a busy host a fast
//   node's one-off spike then outweighs its in-flight advantage for seconds, and
//   bench/selector_bench measured p99 at the slow node's latency with either; a node that
//   is slow keeps saying so with every answer. A node without a report yet is given its
//   rival's latency (only in-flight and warmth tell them apart); two such nodes compare by
//   in-flight alone.
// - warmth: a node first seen less than `slow_start` ago ramps from 10 % to 100 % of its
//   share (its cost is divided by age/slow_start), so a new node is not flooded with the
//   traffic its empty in-flight count invites. Nodes seen together warm together.
// Failures go through micro::NodeHealth (<micro/node_health.hpp>): penalised and ejected
// nodes are left out of the draw while others are usable, and an ejected node's half-open
// probe is carried by the next pick after its period.
//
// Hot path: shared (read) locks to find the service's table and the two nodes in it, relaxed
// atomics; the first pick of a node takes the table's lock exclusively once.
#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>

#include <micro/context.hpp>
#include <micro/node_health.hpp>
#include <micro/plugin.hpp>
#include <micro/registry.hpp>
#include <micro/selector.hpp>
#include <micro/text.hpp>

namespace {

using Clock = std::chrono::steady_clock;

std::int64_t nanoseconds_now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

const std::string& node_key(const micro::Node& node) {
  return node.id.empty() ? node.address : node.id;
}

struct NodeLoad {
  explicit NodeLoad(std::int64_t now) : first_seen(now) {}
  const std::int64_t first_seen;
  std::atomic<std::int64_t> in_flight{0};
  std::atomic<std::uint64_t> latency_bits{0};  // the EWMA in nanoseconds, a double's bits
  std::atomic<std::int64_t> updated{0};        // when the EWMA last moved; 0: no sample yet
};

struct ServiceLoads {
  std::shared_mutex mutex;
  // shared_ptr: a pick keeps its two nodes alive even if a prune drops their entries.
  micro::StringMap<std::shared_ptr<NodeLoad>> nodes;
};

// Past this many nodes in a service, entries with nothing in flight are dropped before the
// table grows, so churning node ids do not grow it forever.
constexpr std::size_t max_nodes_per_service = 1024;

class P2cSelector final : public micro::Selector {
 public:
  explicit P2cSelector(const micro::PluginArguments& arguments)
      : health_(micro::NodeHealthOptions::from(arguments)),
        decay_(std::chrono::nanoseconds(arguments.get_duration("decay")).count()),
        slow_start_(std::chrono::nanoseconds(arguments.get_duration("slow_start")).count()) {}

  std::size_t select_node(std::string_view service, std::span<const micro::Node> nodes,
                          const micro::Context&, int) override {
    micro::require_nodes("p2c", service, nodes);
    const std::size_t count = nodes.size();
    ServiceLoads& loads = service_loads(service);
    if (count == 1) {
      started(loads, nodes[0]);
      return 0;
    }
    auto now = micro::NodeHealth::Clock::now();
    std::size_t first, second;
    if (health_.all_healthy(now)) {
      first = micro::thread_random_below(count);
      second = micro::thread_random_below(count - 1);
      if (second >= first) ++second;
    } else {
      micro::NodeHealth::PickView view = health_.pick(service, nodes, now);
      if (auto probe = view.probe()) {
        started(loads, nodes[*probe]);
        return *probe;
      }
      std::size_t usable = view.usable_count();
      if (usable == 1) {
        for (std::size_t index = 0; index < count; ++index) {
          if (!view.usable(index)) continue;
          started(loads, nodes[index]);
          return index;
        }
      }
      std::size_t a = micro::thread_random_below(usable);
      std::size_t b = micro::thread_random_below(usable - 1);
      if (b >= a) ++b;
      first = second = count;
      for (std::size_t index = 0, seen = 0; index < count; ++index) {
        if (!view.usable(index)) continue;
        if (seen == a) first = index;
        if (seen == b) second = index;
        ++seen;
      }
    }
    std::int64_t clock = nanoseconds_now();
    std::shared_ptr<NodeLoad> first_load = load_of(loads, nodes[first], clock);
    std::shared_ptr<NodeLoad> second_load = load_of(loads, nodes[second], clock);
    const NodeLoad& load_first = *first_load;
    const NodeLoad& load_second = *second_load;
    bool take_first = cost(load_first, load_second, clock) <= cost(load_second, load_first, clock);
    (take_first ? first_load : second_load)->in_flight.fetch_add(1, std::memory_order_relaxed);
    return take_first ? first : second;
  }

  void report(std::string_view service, const micro::Node& node,
              const micro::Outcome& outcome) override {
    health_.record(service, node, outcome);
    ServiceLoads& loads = service_loads(service);
    std::shared_lock lock(loads.mutex);
    auto found = loads.nodes.find(node_key(node));
    if (found == loads.nodes.end()) return;  // never picked here: nothing in flight to end
    NodeLoad& load = *found->second;
    // Down by one, never below zero (a report without a pick must not go negative).
    std::int64_t in_flight = load.in_flight.load(std::memory_order_relaxed);
    while (in_flight > 0 && !load.in_flight.compare_exchange_weak(in_flight, in_flight - 1,
                                                                  std::memory_order_relaxed)) {
    }
    observe_latency(load, static_cast<double>(std::max<std::int64_t>(outcome.latency.count(), 1)),
                    nanoseconds_now());
  }

 private:
  static double latency_of(const NodeLoad& load) {
    return std::bit_cast<double>(load.latency_bits.load(std::memory_order_relaxed));
  }

  // A time-weighted EWMA: the sample is blended in by how long it has been since the last
  // (time constant decay_); the first sample is the average.
  void observe_latency(NodeLoad& load, double sample, std::int64_t now) {
    std::int64_t previous_update = load.updated.exchange(now, std::memory_order_relaxed);
    std::uint64_t bits = load.latency_bits.load(std::memory_order_relaxed);
    for (;;) {
      double average = std::bit_cast<double>(bits);
      double next;
      if (previous_update == 0) {
        next = sample;
      } else {
        double elapsed = static_cast<double>(std::max<std::int64_t>(now - previous_update, 0));
        double keep = decay_ > 0 ? std::exp(-elapsed / static_cast<double>(decay_)) : 0.0;
        next = average + (sample - average) * (1.0 - keep);  // exact when they agree
      }
      if (load.latency_bits.compare_exchange_weak(bits, std::bit_cast<std::uint64_t>(next),
                                                  std::memory_order_relaxed))
        return;
    }
  }

  double warmth(const NodeLoad& load, std::int64_t now) const {
    if (slow_start_ <= 0) return 1.0;
    double age = static_cast<double>(now - load.first_seen) / static_cast<double>(slow_start_);
    return std::clamp(age, 0.1, 1.0);
  }

  // `load`'s cost against `rival`: a node without a latency sample borrows its rival's.
  double cost(const NodeLoad& load, const NodeLoad& rival, std::int64_t now) const {
    bool sampled = load.updated.load(std::memory_order_relaxed) != 0;
    bool rival_sampled = rival.updated.load(std::memory_order_relaxed) != 0;
    double latency = sampled ? latency_of(load) : rival_sampled ? latency_of(rival) : 1.0;
    double in_flight = static_cast<double>(load.in_flight.load(std::memory_order_relaxed));
    return latency * (in_flight + 1.0) / warmth(load, now);
  }

  void started(ServiceLoads& loads, const micro::Node& node) {
    load_of(loads, node, nanoseconds_now())->in_flight.fetch_add(1, std::memory_order_relaxed);
  }

  std::shared_ptr<NodeLoad> load_of(ServiceLoads& loads, const micro::Node& node,
                                    std::int64_t now) {
    {
      std::shared_lock lock(loads.mutex);
      auto found = loads.nodes.find(node_key(node));
      if (found != loads.nodes.end()) return found->second;
    }
    std::unique_lock lock(loads.mutex);
    if (loads.nodes.size() >= max_nodes_per_service)
      std::erase_if(loads.nodes, [](const auto& entry) {
        return entry.second->in_flight.load(std::memory_order_relaxed) == 0;
      });
    auto& slot = loads.nodes[node_key(node)];
    if (!slot) slot = std::make_shared<NodeLoad>(now);
    return slot;
  }

  ServiceLoads& service_loads(std::string_view service) {
    {
      std::shared_lock lock(mutex_);
      auto found = services_.find(service);
      if (found != services_.end()) return *found->second;
    }
    std::unique_lock lock(mutex_);
    auto& slot = services_[std::string(service)];
    if (!slot) slot = std::make_unique<ServiceLoads>();
    return *slot;
  }

  micro::NodeHealth health_;
  const std::int64_t decay_;       // nanoseconds
  const std::int64_t slow_start_;  // nanoseconds; 0: no warm-up
  std::shared_mutex mutex_;
  micro::StringMap<std::unique_ptr<ServiceLoads>> services_;
};

const micro::PluginOption options[] = {
    {"decay", "duration", "100ms", "how fast the latency average forgets a slow answer", "1ms",
     "1h"},
    {"slow_start", "duration", "30s",
     "how long a newly seen node ramps up from 10 % to its full share (0: at once)", "0", "1h"},
    MICRO_NODE_HEALTH_PLUGIN_OPTIONS};

}  // namespace

MICRO_PLUGIN(selector, p2c, "power of two choices by in-flight calls and latency (EWMA)", options,
             [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new P2cSelector(arguments);
             })
