// selector/random — picks a node uniformly at random, avoiding nodes that failed recently.
//
// Feedback: every report() goes to a micro::NodeHealth (<micro/node_health.hpp>): a node that
// failed within `penalty` is skipped as long as some other node has not failed recently (a
// success lifts the penalty), and an ejected node is skipped until its half-open probe, which
// the next pick after its ejection period carries, succeeds. When every node is penalised
// the pick is uniform over all of them, so a call is never refused for lack of a healthy node.
//
// Hot path: with every node healthy (two atomic loads say so), a pick is a thread-local
// random number (micro::thread_random_below) and nothing else. Otherwise it reads the
// service's table in the NodeHealth under a shared (read) lock.
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include <micro/context.hpp>
#include <micro/node_health.hpp>
#include <micro/plugin.hpp>
#include <micro/registry.hpp>
#include <micro/selector.hpp>

namespace {

class RandomSelector final : public micro::Selector {
 public:
  explicit RandomSelector(const micro::PluginArguments& arguments)
      : health_(micro::NodeHealthOptions::from(arguments)) {}

  std::size_t select_node(std::string_view service, std::span<const micro::Node> nodes,
                          const micro::Context&, int) override {
    micro::require_nodes("random", service, nodes);
    std::size_t count = nodes.size();
    if (count == 1) return 0;
    auto now = micro::NodeHealth::Clock::now();
    if (health_.all_healthy(now)) return micro::thread_random_below(count);

    // Uniform among the usable nodes: take the k-th of them.
    micro::NodeHealth::PickView view = health_.pick(service, nodes, now);
    if (auto probe = view.probe()) return *probe;
    std::size_t wanted = micro::thread_random_below(view.usable_count());
    for (std::size_t index = 0; index < count; ++index) {
      if (!view.usable(index)) continue;
      if (wanted == 0) return index;
      --wanted;
    }
    return micro::thread_random_below(count);  // not reached: usable_count() counts them
  }

  void report(std::string_view service, const micro::Node& node,
              const micro::Outcome& outcome) override {
    health_.record(service, node, outcome);
  }

 private:
  micro::NodeHealth health_;
};

const micro::PluginOption options[] = {MICRO_NODE_HEALTH_PLUGIN_OPTIONS};

}  // namespace

MICRO_PLUGIN(selector, random, "uniformly random node, skipping nodes that failed recently",
             options, [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new RandomSelector(arguments);
             })
