// micro::FailurePenalty on its own (<micro/node_health.hpp>): a failure penalises a node for
// the penalty window and no longer, a success lifts it at once, outcomes are counted per node
// and per service, the node table of a service is bounded; and thread_random's ranges.
// Time is never waited for: every check passes an explicit `now` relative to the moments
// measured around record(), so the window's edges are tested exactly.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <micro/node_health.hpp>
#include <micro/registry.hpp>
#include <micro/selector.hpp>

using namespace std::chrono_literals;
using Clock = micro::FailurePenalty::Clock;

namespace {

const micro::Outcome failure{false, 503, 1ms};
const micro::Outcome success{true, 0, 1ms};

micro::Node node(std::string id, std::string address = "127.0.0.1:1000") {
  return {std::move(id), std::move(address), {}};
}

// When a record() happened: between `before` and `after`.
struct Stamp {
  Clock::time_point before, after;
};

Stamp record(micro::FailurePenalty& penalty, std::string_view service, const micro::Node& target,
             const micro::Outcome& outcome) {
  Stamp stamp;
  stamp.before = Clock::now();
  penalty.record(service, target, outcome);
  stamp.after = Clock::now();
  return stamp;
}

}  // namespace

TEST_CASE("FailurePenalty: nothing is penalised before any failure") {
  micro::FailurePenalty penalty(10s);
  auto now = Clock::now();
  CHECK_FALSE(penalty.recent_failure(now));
  CHECK_FALSE(penalty.is_penalised("greeter", node("a"), now));
  CHECK(penalty.counts("greeter", node("a")).failures == 0);
  CHECK(penalty.penalty() == 10s);
}

TEST_CASE("FailurePenalty: a failure penalises the node for exactly the window") {
  micro::FailurePenalty penalty(1h);
  micro::Node failed = node("a");
  Stamp stamp = record(penalty, "greeter", failed, failure);

  CHECK(penalty.recent_failure(stamp.after));
  CHECK(penalty.is_penalised("greeter", failed, stamp.after));
  // The stamp lies in [before, after]: inside the window up to before + 1h, out from after + 1h.
  CHECK(penalty.is_penalised("greeter", failed, stamp.before + 1h - 1ns));
  CHECK_FALSE(penalty.is_penalised("greeter", failed, stamp.after + 1h));
  CHECK_FALSE(penalty.recent_failure(stamp.after + 1h));

  // Only that node, only in that service.
  CHECK_FALSE(penalty.is_penalised("greeter", node("b"), stamp.after));
  CHECK_FALSE(penalty.is_penalised("other", failed, stamp.after));
}

TEST_CASE("FailurePenalty: a later failure restarts the window") {
  micro::FailurePenalty penalty(1h);
  micro::Node failed = node("a");
  Stamp first = record(penalty, "greeter", failed, failure);
  // Let the clock move past the first stamp (microseconds), so the second stamp is later.
  auto between = Clock::now();
  while (between <= first.after + 1us) between = Clock::now();
  record(penalty, "greeter", failed, failure);
  // The first failure alone would be out of the window here; the second keeps it penalised.
  auto moment = between + 1h - 1ns;
  REQUIRE(moment - first.after >= 1h);
  CHECK(penalty.is_penalised("greeter", failed, moment));
  CHECK(penalty.counts("greeter", failed).failures == 2);
}

TEST_CASE("FailurePenalty: a success lifts the penalty at once") {
  micro::FailurePenalty penalty(1h);
  micro::Node recovered = node("a");
  Stamp stamp = record(penalty, "greeter", recovered, failure);
  REQUIRE(penalty.is_penalised("greeter", recovered, stamp.after));
  Stamp healed = record(penalty, "greeter", recovered, success);
  CHECK_FALSE(penalty.is_penalised("greeter", recovered, healed.after));
  CHECK_FALSE(penalty.is_penalised("greeter", recovered, stamp.before + 1h - 1ns));
  auto counts = penalty.counts("greeter", recovered);
  CHECK(counts.failures == 1);
  CHECK(counts.successes == 1);

  // Failing again penalises again.
  Stamp again = record(penalty, "greeter", recovered, failure);
  CHECK(penalty.is_penalised("greeter", recovered, again.after));
}

TEST_CASE("FailurePenalty: outcomes are counted per node, keyed by id or else address") {
  micro::FailurePenalty penalty(1h);
  for (int i = 0; i < 5; ++i) penalty.record("greeter", node("a"), failure);
  for (int i = 0; i < 3; ++i) penalty.record("greeter", node("a"), success);
  penalty.record("greeter", node("b"), success);
  CHECK(penalty.counts("greeter", node("a")).failures == 5);
  CHECK(penalty.counts("greeter", node("a")).successes == 3);
  CHECK(penalty.counts("greeter", node("b")).successes == 1);
  CHECK(penalty.counts("greeter", node("b")).failures == 0);

  // The same id at another address is the same node; without an id the address is the key.
  CHECK(penalty.counts("greeter", node("a", "10.0.0.9:1")).failures == 5);
  Stamp stamp = record(penalty, "greeter", node("", "10.0.0.1:80"), failure);
  CHECK(penalty.is_penalised("greeter", node("", "10.0.0.1:80"), stamp.after));
  CHECK_FALSE(penalty.is_penalised("greeter", node("", "10.0.0.2:80"), stamp.after));
}

TEST_CASE("FailurePenalty: a penalty of zero or less turns it off") {
  for (auto window : {std::chrono::nanoseconds(0), std::chrono::nanoseconds(-5s)}) {
    micro::FailurePenalty penalty(window);
    Stamp stamp = record(penalty, "greeter", node("a"), failure);
    CHECK_FALSE(penalty.recent_failure(stamp.after));
    CHECK_FALSE(penalty.is_penalised("greeter", node("a"), stamp.after));
    CHECK(penalty.counts("greeter", node("a")).failures == 1);  // still counted
  }
}

TEST_CASE("FailurePenalty: read() gives one service's view for several nodes") {
  micro::FailurePenalty penalty(1h);
  std::vector<micro::Node> nodes = {node("a"), node("b"), node("c")};
  Stamp stamp = record(penalty, "greeter", nodes[1], failure);
  {
    micro::FailurePenalty::ServiceView view = penalty.read("greeter", stamp.after);
    CHECK_FALSE(view.penalised(nodes[0]));
    CHECK(view.penalised(nodes[1]));
    CHECK_FALSE(view.penalised(nodes[2]));
  }
  micro::FailurePenalty::ServiceView unknown = penalty.read("nobody", stamp.after);
  CHECK_FALSE(unknown.penalised(nodes[1]));
}

TEST_CASE("FailurePenalty: a service's table is bounded, keeping recently failed nodes") {
  micro::FailurePenalty penalty(1h);
  // 1024 entries: one failed node and 1023 healthy ones. The next new node makes room by
  // dropping the entries without a recent failure.
  penalty.record("churn", node("failed"), failure);
  for (int i = 1; i < 1024; ++i)
    penalty.record("churn", node("healthy-" + std::to_string(i)), success);
  CHECK(penalty.counts("churn", node("healthy-7")).successes == 1);
  Stamp stamp = record(penalty, "churn", node("newcomer"), success);

  CHECK(penalty.counts("churn", node("healthy-7")).successes == 0);  // dropped
  CHECK(penalty.counts("churn", node("healthy-1023")).successes == 0);
  CHECK(penalty.counts("churn", node("newcomer")).successes == 1);
  CHECK(penalty.counts("churn", node("failed")).failures == 1);  // kept: still penalised
  CHECK(penalty.is_penalised("churn", node("failed"), stamp.after));
}

TEST_CASE("thread_random_below stays in range and reaches every value") {
  for (std::size_t bound : {1u, 2u, 3u, 7u, 64u}) {
    CAPTURE(bound);
    std::set<std::size_t> seen;
    for (int i = 0; i < 4000; ++i) {
      std::size_t value = micro::thread_random_below(bound);
      REQUIRE(value < bound);
      seen.insert(value);
    }
    CHECK(seen.size() == bound);  // 4000 draws miss one of 64 values with odds below 1e-25
  }
  CHECK(micro::thread_random_below(0) == 0);
}

TEST_CASE("thread_random: each thread has its own sequence") {
  std::vector<std::uint64_t> here, there;
  for (int i = 0; i < 4; ++i) here.push_back(micro::thread_random());
  std::thread other([&] {
    for (int i = 0; i < 4; ++i) there.push_back(micro::thread_random());
  });
  other.join();
  CHECK(here != there);
  std::set<std::uint64_t> distinct(here.begin(), here.end());
  CHECK(distinct.size() == here.size());
}
