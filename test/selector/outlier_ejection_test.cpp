// Outlier ejection in micro::NodeHealth (<micro/node_health.hpp>) on its own, driven by a
// clock of the test's own (every record() and pick() takes `now`): what ejects a node, how
// long for, the half-open probe that lets it back, the doubling and its decay, and the cap on
// the ejected share. Nothing here waits.
#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <vector>

#include <micro/node_health.hpp>
#include <micro/plugin.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/registry.hpp>
#include <micro/selector.hpp>

#include "selector/selector_test_support.hpp"

using namespace std::chrono_literals;
using Clock = micro::NodeHealth::Clock;

namespace {

const micro::Outcome failed{false, 503, 1ms};
const micro::Outcome succeeded{true, 0, 1ms};

// Consecutive failures only (3 in a row), 100 ms doubling to at most 800 ms, no penalty.
micro::NodeHealthOptions consecutive_options() {
  micro::NodeHealthOptions options;
  options.penalty = 0ns;
  options.eject_consecutive = 3;
  options.eject_error_percent = 0;
  options.eject_base = 100ms;
  options.eject_max = 800ms;
  options.eject_max_percent = 50;
  options.eject_decay = 10s;
  return options;
}

struct Nodes {
  std::vector<micro::Node> list = selector_test::nodes_named(4);
  const micro::Node& operator[](std::size_t index) const { return list[index]; }
};

void fail_times(micro::NodeHealth& health, const micro::Node& node, int times,
                Clock::time_point now) {
  for (int i = 0; i < times; ++i) health.record("greeter", node, failed, now);
}

}  // namespace

TEST_CASE("ejection: consecutive failures eject a node; a success in between resets the run") {
  micro::NodeHealth health(consecutive_options());
  Nodes nodes;
  const auto t0 = Clock::time_point(1h);
  CHECK(health.all_healthy(t0));
  fail_times(health, nodes[1], 2, t0);
  health.record("greeter", nodes[1], succeeded, t0);
  fail_times(health, nodes[1], 2, t0);
  CHECK_FALSE(health.is_ejected("greeter", nodes[1], t0));
  CHECK(health.all_healthy(t0));  // penalty off, nothing ejected
  health.record("greeter", nodes[1], failed, t0);
  CHECK(health.is_ejected("greeter", nodes[1], t0));
  CHECK_FALSE(health.all_healthy(t0));
  CHECK(health.counts("greeter", nodes[1]).ejections == 1);

  auto view = health.pick("greeter", nodes.list, t0 + 50ms);
  CHECK_FALSE(view.probe());
  CHECK(view.usable(0));
  CHECK_FALSE(view.usable(1));
  CHECK(view.usable_count() == 3);
  // Another service's node of the same name is not affected.
  CHECK(health.pick("other", nodes.list, t0).usable(1));
}

TEST_CASE("ejection: after its period one pick carries the probe; success re-admits") {
  micro::NodeHealth health(consecutive_options());
  Nodes nodes;
  const auto t0 = Clock::time_point(1h);
  fail_times(health, nodes[2], 3, t0);
  CHECK_FALSE(health.pick("greeter", nodes.list, t0 + 100ms - 1ns).probe());
  auto probe_pick = health.pick("greeter", nodes.list, t0 + 100ms);
  REQUIRE(probe_pick.probe());
  CHECK(*probe_pick.probe() == 2);
  // Only one probe at a time: the next picks keep the node out.
  auto next = health.pick("greeter", nodes.list, t0 + 101ms);
  CHECK_FALSE(next.probe());
  CHECK_FALSE(next.usable(2));

  health.record("greeter", nodes[2], succeeded, t0 + 102ms);
  CHECK_FALSE(health.is_ejected("greeter", nodes[2], t0 + 102ms));
  CHECK(health.all_healthy(t0 + 102ms));
  CHECK(health.pick("greeter", nodes.list, t0 + 102ms).usable(2));
}

TEST_CASE("ejection: a failed probe ejects again for twice as long, up to eject_max") {
  micro::NodeHealth health(consecutive_options());
  Nodes nodes;
  auto now = Clock::time_point(1h);
  fail_times(health, nodes[0], 3, now);
  // Periods: 100, 200, 400, 800, 800 ms (eject_max).
  for (auto period : {100ms, 200ms, 400ms, 800ms, 800ms}) {
    CAPTURE(period.count());
    CHECK_FALSE(health.pick("greeter", nodes.list, now + period - 1ns).probe());
    auto view = health.pick("greeter", nodes.list, now + period);
    REQUIRE(view.probe());
    CHECK(*view.probe() == 0);
    now += period;
    health.record("greeter", nodes[0], failed, now);  // the probe fails
    CHECK(health.is_ejected("greeter", nodes[0], now));
  }
  CHECK(health.counts("greeter", nodes[0]).ejections == 6);  // the first and five re-ejections
}

TEST_CASE("ejection: outcomes of attempts made before the ejection do not re-admit") {
  micro::NodeHealth health(consecutive_options());
  Nodes nodes;
  const auto t0 = Clock::time_point(1h);
  fail_times(health, nodes[3], 3, t0);
  health.record("greeter", nodes[3], succeeded, t0 + 10ms);  // a late answer, no probe out
  CHECK(health.is_ejected("greeter", nodes[3], t0 + 10ms));
}

TEST_CASE("ejection: the doubling decays while a re-admitted node stays healthy") {
  auto options = consecutive_options();
  options.eject_decay = 1s;
  micro::NodeHealth health(options);
  Nodes nodes;
  auto now = Clock::time_point(1h);
  // Ejected (100 ms), probe fails (200 ms), probe succeeds: the next ejection would be 400 ms.
  fail_times(health, nodes[1], 3, now);
  now += 100ms;
  REQUIRE(health.pick("greeter", nodes.list, now).probe());
  health.record("greeter", nodes[1], failed, now);
  now += 200ms;
  REQUIRE(health.pick("greeter", nodes.list, now).probe());
  health.record("greeter", nodes[1], succeeded, now);
  REQUIRE_FALSE(health.is_ejected("greeter", nodes[1], now));

  SUBCASE("failing again at once: 400 ms") {
    fail_times(health, nodes[1], 3, now);
    CHECK_FALSE(health.pick("greeter", nodes.list, now + 400ms - 1ns).probe());
    CHECK(health.pick("greeter", nodes.list, now + 400ms).probe());
  }
  SUBCASE("after 2 s admitted, two doublings fewer: 100 ms") {
    now += 2s;
    fail_times(health, nodes[1], 3, now);
    CHECK_FALSE(health.pick("greeter", nodes.list, now + 100ms - 1ns).probe());
    CHECK(health.pick("greeter", nodes.list, now + 100ms).probe());
  }
}

TEST_CASE("ejection: an error share over one window ejects, once the window has enough calls") {
  micro::NodeHealthOptions options = consecutive_options();
  options.eject_consecutive = 0;
  options.eject_error_percent = 50;
  options.eject_min_calls = 10;
  options.eject_window = 1s;
  micro::NodeHealth health(options);
  Nodes nodes;
  const auto t0 = Clock::time_point(1h);
  SUBCASE("half of ten calls fail in one window") {
    for (int call = 1; call <= 10; ++call) {
      CHECK_FALSE(health.is_ejected("greeter", nodes[0], t0));
      health.record("greeter", nodes[0], call % 2 == 0 ? failed : succeeded, t0 + call * 1ms);
    }
    CHECK(health.is_ejected("greeter", nodes[0], t0 + 10ms));
  }
  SUBCASE("40 % fail: stays") {
    for (int call = 1; call <= 50; ++call)
      health.record("greeter", nodes[0], call % 5 < 2 ? failed : succeeded, t0 + call * 1ms);
    CHECK_FALSE(health.is_ejected("greeter", nodes[0], t0 + 50ms));
  }
  SUBCASE("the same failures spread over windows of too few calls each: stays") {
    for (int call = 1; call <= 40; ++call)
      health.record("greeter", nodes[0], call % 2 == 0 ? failed : succeeded,
                    t0 + (call / 5) * 1s + call * 1ms);  // five calls a window
    CHECK_FALSE(health.is_ejected("greeter", nodes[0], t0 + 9s));
  }
}

TEST_CASE("ejection: never more than eject_max_percent of the nodes; the first ejected stay out") {
  auto options = consecutive_options();
  SUBCASE("50 % of 4: two") {
    micro::NodeHealth health(options);
    Nodes nodes;
    const auto t0 = Clock::time_point(1h);
    fail_times(health, nodes[2], 3, t0);
    fail_times(health, nodes[0], 3, t0 + 1ms);
    fail_times(health, nodes[3], 3, t0 + 2ms);
    auto view = health.pick("greeter", nodes.list, t0 + 3ms);
    CHECK_FALSE(view.usable(2));
    CHECK_FALSE(view.usable(0));
    CHECK(view.usable(3));  // ejected last: over the cap, still picked
    CHECK(view.usable(1));
    CHECK(view.usable_count() == 2);
    // With two nodes of the four given, only one of them may be out.
    std::vector<micro::Node> two{nodes[2], nodes[0]};
    auto pair = health.pick("greeter", two, t0 + 3ms);
    CHECK_FALSE(pair.usable(0));
    CHECK(pair.usable(1));
  }
  SUBCASE("a single node is never ejected from its pick") {
    micro::NodeHealth health(options);
    Nodes nodes;
    const auto t0 = Clock::time_point(1h);
    std::vector<micro::Node> one{nodes[0]};
    fail_times(health, nodes[0], 3, t0);
    CHECK(health.pick("greeter", one, t0).usable(0));
  }
  SUBCASE("0 %: nobody") {
    options.eject_max_percent = 0;
    micro::NodeHealth health(options);
    Nodes nodes;
    const auto t0 = Clock::time_point(1h);
    fail_times(health, nodes[1], 3, t0);
    CHECK(health.pick("greeter", nodes.list, t0).usable_count() == 4);
  }
}

TEST_CASE("ejection: off when both triggers are 0, as FailurePenalty(penalty) always was") {
  micro::NodeHealth health(10s);
  Nodes nodes;
  const auto t0 = Clock::time_point(1h);
  fail_times(health, nodes[0], 100, t0);
  CHECK_FALSE(health.is_ejected("greeter", nodes[0], t0));
  auto view = health.pick("greeter", nodes.list, t0);
  CHECK_FALSE(view.usable(0));  // penalised, while others are not
  CHECK(view.usable_count() == 3);
  CHECK(health.ejections() == 0);
}

TEST_CASE(
    "ejection options: every selector plugin takes them, with ranges, and checks base <= max") {
  for (std::string name : {"random", "roundrobin", "weighted", "p2c", "hash"}) {
    CAPTURE(name);
    CHECK(selector_test::load_selector(name, {{"eject_consecutive", "5"},
                                              {"eject_base", "100ms"},
                                              {"eject_max", "30s"},
                                              {"eject_error_percent", "50"},
                                              {"eject_min_calls", "20"},
                                              {"eject_window", "10s"},
                                              {"eject_max_percent", "50"},
                                              {"eject_decay", "10s"},
                                              {"penalty", "0"}}) != nullptr);
    try {
      selector_test::load_selector(name, {{"eject_max_percent", "150"}});
      FAIL("an out-of-range share was accepted");
    } catch (const micro::Exception& error) {
      CHECK(error.error().code == 400);
      CHECK(error.error().detail.find("eject_max_percent") != std::string::npos);
    }
    try {
      selector_test::load_selector(name, {{"eject_base", "1m"}, {"eject_max", "30s"}});
      FAIL("eject_base above eject_max was accepted");
    } catch (const micro::Exception& error) {
      CHECK(error.error().code == 400);
      // The loader names the plugin first; the rest is the selector's own message.
      CHECK(error.error().detail.ends_with(
          "failed to start: option eject_base (1m) is longer than eject_max (30s); expected "
          "eject_base <= eject_max"));
    }
  }
}
