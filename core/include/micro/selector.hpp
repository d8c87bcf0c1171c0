// micro/selector.hpp — picks the node for each attempt of a call, and learns from outcomes.
#pragma once

#include <chrono>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include <micro/error.hpp>
#include <micro/plugin.hpp>
#include <micro/registry.hpp>

namespace micro {

class Context;

// What the pipeline tells the selector after every attempt.
struct Outcome {
  bool ok = true;         // false for transport errors, 408, 5xx
  std::int32_t code = 0;  // the error code, 0 when ok
  std::chrono::nanoseconds latency{0};
};

// The client calls report() exactly once for every select_node() it makes, after the
// attempt ends (selectors that count calls in flight, like p2c, rely on it); other callers
// may pick without reporting, which a selector must survive. Penalty and outlier ejection,
// shared by every selector, are micro::NodeHealth (<micro/node_health.hpp>).
//
// Threading contract: select_node and report are called concurrently from the I/O threads
// for many calls at once; they must not block, and should not take a lock per call on
// the common path.
//
// Every selector passes test/selector/selector_conformance_test.cpp, which checks this
// contract: picks stay inside `nodes` (whatever its size from call to call), an empty
// `nodes` is refused with require_nodes' error, every node gets picks, report() takes any
// outcome for any node (known or not), one service's feedback leaves other services alone,
// and a retry after a failure reported on a node goes to another node while there is one.
class Selector : public PluginObject {
 public:
  static constexpr PluginKind plugin_kind = PluginKind::selector;

  // Index into `nodes` of the node for `attempt` (1 for the first try). `context` is the
  // call's (hash selectors read a key from its metadata). The client never passes an empty
  // `nodes` (it answers 503 first); a selector that gets one throws (require_nodes).
  virtual std::size_t select_node(std::string_view service, std::span<const Node> nodes,
                                  const Context& context, int attempt) = 0;
  // Feedback for an attempt made on `node` of `service`.
  virtual void report(std::string_view service, const Node& node, const Outcome& outcome) = 0;
};

// What every selector does first in select_node: an empty `nodes` throws micro::Exception
// with code 503, id `micro.selector.<selector>`, naming the service.
inline void require_nodes(std::string_view selector, std::string_view service,
                          std::span<const Node> nodes) {
  if (!nodes.empty()) [[likely]]
    return;
  throw Exception(Error("micro.selector." + std::string(selector), ErrorCode::unavailable,
                        "no nodes to select from for service '" + std::string(service) +
                            "'; expected at least one node (the client answers 503 before "
                            "asking a selector)"));
}

}  // namespace micro
