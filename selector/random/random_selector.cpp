// selector/random — picks a node uniformly at random, avoiding nodes that failed recently.
//
// Feedback: every report() goes to a micro::FailurePenalty (<micro/node_health.hpp>), which
// counts it per node and stamps a failed node with the time of its last failure. For
// `penalty` after that, the node is skipped as long as some other node has not failed
// recently; a success on the node lifts the penalty.
// When every node is penalised the pick is uniform over all of them, so a call is never
// refused for lack of a healthy node.
//
// Hot path: with no failure inside the penalty window (one atomic load says so), a pick is
// a thread-local random number (micro::thread_random_below) and nothing else. Otherwise it takes
// shared (read) locks on the service's table in the FailurePenalty to read the failure stamps.
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
      : penalty_(arguments.get_duration("penalty")) {}

  std::size_t select_node(std::string_view service, std::span<const micro::Node> nodes,
                          const micro::Context&, int) override {
    micro::require_nodes("random", service, nodes);
    std::size_t count = nodes.size();
    if (count == 1) return 0;
    auto now = micro::FailurePenalty::Clock::now();
    if (!penalty_.recent_failure(now)) return micro::thread_random_below(count);

    // Pick uniformly among the nodes without a recent failure: count them, then take the
    // k-th. The stamps may move between the passes; a stale read only costs fairness.
    micro::FailurePenalty::ServiceView penalties = penalty_.read(service, now);
    std::size_t healthy = 0;
    for (const micro::Node& node : nodes)
      if (!penalties.penalised(node)) ++healthy;
    if (healthy == 0 || healthy == count) return micro::thread_random_below(count);
    std::size_t wanted = micro::thread_random_below(healthy);
    for (std::size_t index = 0; index < count; ++index) {
      if (penalties.penalised(nodes[index])) continue;
      if (wanted == 0) return index;
      --wanted;
    }
    return micro::thread_random_below(count);  // only if stamps changed under us
  }

  void report(std::string_view service, const micro::Node& node,
              const micro::Outcome& outcome) override {
    penalty_.record(service, node, outcome);
  }

 private:
  micro::FailurePenalty penalty_;
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
