// micro/selector.hpp — picks the node for each attempt of a call, and learns from outcomes.
#pragma once

#include <chrono>
#include <cstddef>
#include <span>
#include <string_view>

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

// Threading contract: select_node and report are called concurrently from the I/O threads
// for many calls at once; they must not block, and should not take a lock per call on
// the common path.
class Selector : public PluginObject {
 public:
  static constexpr PluginKind plugin_kind = PluginKind::selector;

  // Index into `nodes` (never empty) of the node for `attempt` (1 for the first try).
  // `context` is the call's (hash selectors read a key from its metadata).
  virtual std::size_t select_node(std::string_view service, std::span<const Node> nodes,
                                  const Context& context, int attempt) = 0;
  // Feedback for an attempt made on `node` of `service`.
  virtual void report(std::string_view service, const Node& node, const Outcome& outcome) = 0;
};

}  // namespace micro
