// micro/node_health.hpp — what selectors share: the "recently failed" penalty, outlier
// ejection, and a fast per-thread random number.
//
// NodeHealth (also spelled FailurePenalty, its older name) remembers, per service and per
// node, what the node's recent attempts did:
//
// - Penalty: for `penalty` after a failure the node counts as penalised; a success on the
//   node lifts the penalty at once. Selectors pass over penalised nodes while another node
//   is not penalised (a soft preference).
// - Outlier ejection: `eject_consecutive` failures in a row, or at least `eject_error_percent`
//   failures among at least `eject_min_calls` attempts of one `eject_window` (a tumbling
//   window), eject the node: no selector picks it for its ejection period. The period is
//   `eject_base`, doubled on each repeat ejection up to `eject_max`; every full `eject_decay`
//   the node then stays admitted takes one doubling off again (gradual reset). When the
//   period is over the node is half-open: the next pick of the service carries one probe to
//   it (only one at a time); the probe's success re-admits the node, its failure ejects it
//   again for the doubled period. At most `eject_max_percent` of the nodes given to one pick
//   count as ejected (the ones ejected first); the rest stay pickable, so an outage of the
//   whole service does not become "no nodes".
//
// The options are declared once, here (MICRO_NODE_HEALTH_PLUGIN_OPTIONS), and every selector
// plugin accepts them: `selector=roundrobin?eject_consecutive=5&eject_base=100ms`.
//
// Nodes are keyed by Node::id, or by Node::address when the id is empty.
//
// Threading contract: every member may be called concurrently from any thread.
// - all_healthy() is two relaxed atomic loads and never locks: the hot-path shortcut. While
//   it says true, no node of any service is penalised, ejected or due for a probe, and the
//   tables need no look.
// - record() takes shared (read) locks, and exclusive locks only the first time a service
//   or a node is seen (and then, past 1024 nodes in a service, drops the entries of nodes
//   neither recently failed nor ejected, so churning node ids do not grow the table forever).
//   Ejection state changes are compare-and-swaps on the node's atomics.
// - pick() reads one service's table under a shared lock and returns a PickView that holds
//   no lock.
// - read() holds a shared lock on one service's table for as long as the returned
//   ServiceView lives: keep it on the stack, and call no other member meanwhile.
// Stamps are relaxed atomics: a reader may see a failure or a success a moment late, which
// only costs fairness, never correctness.
//
// Time: every member that needs the time takes it as an argument (or reads Clock::now() in
// the overload without one), so tests drive ejection with a clock of their own.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string_view>
#include <vector>

#include <micro/plugin.hpp>
#include <micro/random.hpp>  // thread_random, which every selector draws from
#include <micro/registry.hpp>
#include <micro/selector.hpp>

namespace micro {

// The options every selector plugin declares (defaults and ranges in one place), spliced into
// a plugin's option array:
//   const micro::PluginOption options[] = {{"key", …}, MICRO_NODE_HEALTH_PLUGIN_OPTIONS};
// NodeHealthOptions::from(arguments) reads them back.
// clang-format off
#define MICRO_NODE_HEALTH_PLUGIN_OPTIONS \
  {"penalty", "duration", "10s", \
   "how long a node that failed is passed over while other nodes are healthy (0: never)", \
   "0", "1h"}, \
  {"eject_consecutive", "int", "5", "failures in a row that eject a node (0: never)", \
   "0", "1000000"}, \
  {"eject_error_percent", "int", "50", \
   "failed share, in percent, of one window's attempts that ejects a node (0: never)", \
   "0", "100"}, \
  {"eject_min_calls", "int", "20", "attempts a window needs before its failed share counts", \
   "1", "1000000"}, \
  {"eject_window", "duration", "10s", "the window the failed share is counted over", \
   "10ms", "1h"}, \
  {"eject_base", "duration", "100ms", "the first ejection's length, doubled on each repeat", \
   "1ms", "1h"}, \
  {"eject_max", "duration", "30s", "the longest ejection", "1ms", "24h"}, \
  {"eject_max_percent", "int", "50", \
   "at most this share of a service's nodes, in percent, is ejected at once", "0", "100"}, \
  {"eject_decay", "duration", "10s", \
   "each full period a re-admitted node stays admitted takes one doubling off", "1ms", "24h"}
// clang-format on

struct NodeHealthOptions {
  std::chrono::nanoseconds penalty{std::chrono::seconds(10)};  // 0 or less: off
  int eject_consecutive = 5;                                   // 0: off
  int eject_error_percent = 50;                                // 0: off
  int eject_min_calls = 20;
  std::chrono::nanoseconds eject_window{std::chrono::seconds(10)};
  std::chrono::nanoseconds eject_base{std::chrono::milliseconds(100)};
  std::chrono::nanoseconds eject_max{std::chrono::seconds(30)};
  int eject_max_percent = 50;
  std::chrono::nanoseconds eject_decay{std::chrono::seconds(10)};

  // Penalty only, ejection off: what FailurePenalty(penalty) always meant.
  static NodeHealthOptions penalty_only(std::chrono::nanoseconds penalty);
  // The MICRO_NODE_HEALTH_PLUGIN_OPTIONS of a selector plugin's arguments. Throws
  // micro::Exception 400 (id arguments.error_id()) when eject_base exceeds eject_max.
  static NodeHealthOptions from(const PluginArguments& arguments);

  bool ejection_enabled() const noexcept {
    return eject_consecutive > 0 || eject_error_percent > 0;
  }
};

class NodeHealth {
 public:
  using Clock = std::chrono::steady_clock;

  explicit NodeHealth(const NodeHealthOptions& options);
  // Penalty only: a `penalty` of zero (or less) turns it off; nothing is ever ejected.
  explicit NodeHealth(std::chrono::nanoseconds penalty);
  ~NodeHealth();
  NodeHealth(const NodeHealth&) = delete;
  NodeHealth& operator=(const NodeHealth&) = delete;

  // Feedback for an attempt on `node` of `service`: counts it, stamps or clears the penalty,
  // and moves the node in or out of ejection.
  void record(std::string_view service, const Node& node, const Outcome& outcome,
              Clock::time_point now);
  void record(std::string_view service, const Node& node, const Outcome& outcome) {
    record(service, node, outcome, Clock::now());
  }

  // Whether any node of any service failed within the penalty window before `now`.
  bool recent_failure(Clock::time_point now) const noexcept {
    return penalty_ > 0 &&
           nanoseconds_of(now) - last_failure_.load(std::memory_order_relaxed) < penalty_;
  }
  // Whether no node of any service is penalised or ejected (or half-open) at `now`: then a
  // pick needs no look at the tables. Lock-free.
  bool all_healthy(Clock::time_point now) const noexcept {
    return ejected_.load(std::memory_order_relaxed) == 0 && !recent_failure(now);
  }

  struct ServiceTable;

  // One pick's verdict on each of `nodes`: which may be picked, and whether this pick is to
  // carry a node's half-open probe. Holds no lock.
  class PickView {
   public:
    // The node whose probe this pick carries: the selector returns it. At most one per pick,
    // and only one pick at a time gets a node's probe.
    std::optional<std::size_t> probe() const noexcept { return probe_; }
    // Whether nodes[index] may be picked: not ejected, and not penalised unless every
    // pickable node is (then the penalised ones are usable too).
    bool usable(std::size_t index) const noexcept { return rank(index) <= best_; }
    std::size_t usable_count() const noexcept { return usable_; }
    std::size_t size() const noexcept { return size_; }

   private:
    friend class NodeHealth;
    enum Rank : std::uint8_t { healthy = 0, penalised = 1, ejected = 2 };
    Rank rank(std::size_t index) const noexcept {
      return static_cast<Rank>(size_ <= inline_ranks_.size() ? inline_ranks_[index]
                                                             : heap_ranks_[index]);
    }
    std::array<std::uint8_t, 64> inline_ranks_;
    std::vector<std::uint8_t> heap_ranks_;  // when there are more nodes than fit inline
    std::size_t size_ = 0;
    std::size_t usable_ = 0;
    std::uint8_t best_ = healthy;
    std::optional<std::size_t> probe_;
  };

  // The verdict on `nodes` of `service` at `now`. May claim a half-open node's probe for
  // this pick (then probe() names it, and the caller is to pick it).
  PickView pick(std::string_view service, std::span<const Node> nodes, Clock::time_point now);

  // One service's penalties as of `now`, read under a shared lock held while this lives.
  class ServiceView {
   public:
    bool penalised(const Node& node) const;

   private:
    friend class NodeHealth;
    ServiceView(const NodeHealth& owner, const ServiceTable* table, std::int64_t now);
    const NodeHealth* owner_;
    const ServiceTable* table_;  // null when the service has no reports yet
    std::shared_lock<std::shared_mutex> lock_;
    std::int64_t now_;
  };

  ServiceView read(std::string_view service, Clock::time_point now) const;

  // One-off test under its own shared lock; for several nodes, read() once instead.
  bool is_penalised(std::string_view service, const Node& node, Clock::time_point now) const;
  // Whether `node` is ejected (or half-open, waiting for or carrying its probe) at `now`,
  // before the share cap of a pick is applied.
  bool is_ejected(std::string_view service, const Node& node, Clock::time_point now) const;

  struct Counts {
    std::uint64_t successes = 0, failures = 0;
    std::uint64_t ejections = 0;  // how often the node was ejected (re-ejections included)
  };
  // The outcomes recorded for `node` of `service` (zero once its entry was dropped).
  Counts counts(std::string_view service, const Node& node) const;
  // Ejections of every node of every service so far.
  std::uint64_t ejections() const noexcept { return ejections_.load(std::memory_order_relaxed); }

  std::chrono::nanoseconds penalty() const noexcept { return std::chrono::nanoseconds(penalty_); }
  const NodeHealthOptions& options() const noexcept { return options_; }

 private:
  struct State;
  struct NodeState;

  static std::int64_t nanoseconds_of(Clock::time_point time) noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(time.time_since_epoch()).count();
  }
  void eject(NodeState& node, std::int64_t now, bool from_probe);
  void readmit(NodeState& node, std::int64_t now);
  bool should_eject(NodeState& node, std::int64_t now);

  const NodeHealthOptions options_;
  const std::int64_t penalty_;  // nanoseconds; 0 or less: off
  // The latest failure of any node, so the common path can skip the tables entirely.
  std::atomic<std::int64_t> last_failure_;
  // Nodes of any service now ejected or half-open, for the same shortcut.
  std::atomic<std::int64_t> ejected_{0};
  std::atomic<std::uint64_t> ejections_{0};
  std::unique_ptr<State> state_;
};

// The older name, from before ejection: the penalty alone is NodeHealth(penalty).
using FailurePenalty = NodeHealth;

}  // namespace micro
