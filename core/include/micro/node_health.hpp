// micro/node_health.hpp — what selectors share: the "recently failed" penalty and a fast
// per-thread random number.
//
// FailurePenalty remembers, per service and per node, when the node last failed (and how
// many attempts on it succeeded or failed). For `penalty` after a failure the node counts
// as penalised; a success on the node lifts the penalty at once. Selectors use it to pass
// over nodes that just failed; what to do when every node is penalised is theirs to decide.
//
// Nodes are keyed by Node::id, or by Node::address when the id is empty.
//
// Threading contract: every member may be called concurrently from any thread.
// - recent_failure() is one relaxed atomic load and never locks: the hot-path shortcut.
//   While it says false, no node of any service is penalised and the tables need no look.
// - record() takes shared (read) locks, and exclusive locks only the first time a service
//   or a node is seen (and then, past 1024 nodes in a service, drops the entries of nodes
//   without a recent failure, so churning node ids do not grow the table forever).
// - read() holds a shared lock on one service's table for as long as the returned
//   ServiceView lives: keep it on the stack for one pick, and call no other member of the
//   same FailurePenalty from that thread meanwhile.
// Stamps are relaxed atomics: a reader may see a failure or a success a moment late, which
// only costs fairness, never correctness.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string_view>

#include <micro/random.hpp>  // thread_random, which every selector draws from
#include <micro/registry.hpp>
#include <micro/selector.hpp>

namespace micro {

class FailurePenalty {
 public:
  using Clock = std::chrono::steady_clock;

  // A `penalty` of zero (or less) turns the penalty off: nothing is ever penalised.
  explicit FailurePenalty(std::chrono::nanoseconds penalty);
  ~FailurePenalty();
  FailurePenalty(const FailurePenalty&) = delete;
  FailurePenalty& operator=(const FailurePenalty&) = delete;

  // Feedback for an attempt on `node` of `service`: a failure stamps the node with the
  // current time, a success clears its stamp.
  void record(std::string_view service, const Node& node, const Outcome& outcome);

  // Whether any node of any service failed within the penalty window before `now`.
  bool recent_failure(Clock::time_point now) const noexcept {
    return penalty_ > 0 &&
           nanoseconds_of(now) - last_failure_.load(std::memory_order_relaxed) < penalty_;
  }

  struct ServiceTable;

  // One service's penalties as of `now`, read under a shared lock held while this lives.
  class ServiceView {
   public:
    bool penalised(const Node& node) const;

   private:
    friend class FailurePenalty;
    ServiceView(const FailurePenalty& owner, const ServiceTable* table, std::int64_t now);
    const FailurePenalty* owner_;
    const ServiceTable* table_;  // null when the service has no reports yet
    std::shared_lock<std::shared_mutex> lock_;
    std::int64_t now_;
  };

  ServiceView read(std::string_view service, Clock::time_point now) const;

  // One-off test under its own shared lock; for several nodes, read() once instead.
  bool is_penalised(std::string_view service, const Node& node, Clock::time_point now) const;

  struct Counts {
    std::uint64_t successes = 0, failures = 0;
  };
  // The outcomes recorded for `node` of `service` (zero once its entry was dropped).
  Counts counts(std::string_view service, const Node& node) const;

  std::chrono::nanoseconds penalty() const noexcept { return std::chrono::nanoseconds(penalty_); }

 private:
  struct State;

  static std::int64_t nanoseconds_of(Clock::time_point time) noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(time.time_since_epoch()).count();
  }

  const std::int64_t penalty_;  // nanoseconds; 0 or less: off
  // The latest failure of any node, so the common path can skip the tables entirely.
  std::atomic<std::int64_t> last_failure_;
  std::unique_ptr<State> state_;
};

}  // namespace micro
