// selector/roundrobin — rotates over a service's nodes across calls and their retries.
//
// Every select_node() of a service, first attempt or retry, takes the next turn of one
// per-service atomic counter, so consecutive calls (and a retry after its failed attempt)
// land on consecutive nodes. The rotation of each service starts at a random node, so many
// clients started together do not all hit the first node first.
//
// Feedback: every report() goes to a micro::NodeHealth (<micro/node_health.hpp>). A turn that
// lands on a node that failed within `penalty`, or on an ejected node, moves on to the next
// usable node; a success lifts the penalty, and an ejected node comes back through the
// half-open probe the next pick after its ejection period carries. When every node is
// penalised the rotation goes on unchanged.
//
// Hot path: one shared (read) lock to find the service's counter and one atomic increment;
// the health table is read only while some node is penalised or ejected.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include <micro/context.hpp>
#include <micro/node_health.hpp>
#include <micro/plugin.hpp>
#include <micro/registry.hpp>
#include <micro/selector.hpp>
#include <micro/text.hpp>

namespace {

struct Rotation {
  explicit Rotation(std::uint64_t start) : next(start) {}
  std::atomic<std::uint64_t> next;  // the rotation's next turn
};

class RoundRobinSelector final : public micro::Selector {
 public:
  explicit RoundRobinSelector(const micro::PluginArguments& arguments)
      : health_(micro::NodeHealthOptions::from(arguments)) {}

  std::size_t select_node(std::string_view service, std::span<const micro::Node> nodes,
                          const micro::Context&, int) override {
    micro::require_nodes("roundrobin", service, nodes);
    std::size_t count = nodes.size();
    if (count == 1) return 0;
    std::size_t index = static_cast<std::size_t>(
        rotation(service).next.fetch_add(1, std::memory_order_relaxed) % count);
    auto now = micro::NodeHealth::Clock::now();
    if (health_.all_healthy(now)) return index;

    micro::NodeHealth::PickView view = health_.pick(service, nodes, now);
    if (auto probe = view.probe()) return *probe;
    for (std::size_t step = 0; step < count; ++step) {
      std::size_t candidate = (index + step) % count;
      if (view.usable(candidate)) return candidate;
    }
    return index;
  }

  void report(std::string_view service, const micro::Node& node,
              const micro::Outcome& outcome) override {
    health_.record(service, node, outcome);
  }

 private:
  // Rotations are never removed, so the reference stays valid once found.
  Rotation& rotation(std::string_view service) {
    {
      std::shared_lock lock(mutex_);
      auto found = rotations_.find(service);
      if (found != rotations_.end()) return *found->second;
    }
    std::unique_lock lock(mutex_);
    auto& slot = rotations_[std::string(service)];
    if (!slot) slot = std::make_unique<Rotation>(micro::thread_random());
    return *slot;
  }

  micro::NodeHealth health_;
  std::shared_mutex mutex_;
  micro::StringMap<std::unique_ptr<Rotation>> rotations_;
};

const micro::PluginOption options[] = {MICRO_NODE_HEALTH_PLUGIN_OPTIONS};

}  // namespace

MICRO_PLUGIN(selector, roundrobin, "rotates over nodes across calls, skipping recent failures",
             options, [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new RoundRobinSelector(arguments);
             })
