// Selector plugins (random, roundrobin) loaded through the plugin loader: what only one of
// them promises — random's uniformity and its penalty, roundrobin's rotation, its exact split
// under contention. What every selector promises is in selector_conformance_test.cpp.
#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include <micro/context.hpp>
#include <micro/error.hpp>
#include <micro/registry.hpp>
#include <micro/selector.hpp>

#include "selector/selector_test_support.hpp"
#include "support/wait.hpp"

using namespace selector_test;
using test_support::wait_until;

TEST_CASE("random: picks are roughly uniform over three nodes") {
  auto selector = load_selector("random");
  auto nodes = three_nodes();
  constexpr int picks = 30000;
  auto counts = pick_counts(*selector, "greeter", nodes, picks);
  // Expected 10000 each, standard deviation about 82: ±5% is six deviations.
  for (int count : counts) {
    CHECK(count > 9500);
    CHECK(count < 10500);
  }
  // And the chi-square statistic stays below the 0.1% critical value for 2 degrees of freedom.
  double chi_square = 0;
  for (int count : counts) chi_square += std::pow(count - picks / 3.0, 2) / (picks / 3.0);
  CHECK(chi_square < 13.82);
}

TEST_CASE("roundrobin: calls 1..3N hit each node exactly N times, in rotation") {
  auto selector = load_selector("roundrobin");
  auto nodes = three_nodes();
  micro::Context context;
  constexpr int rounds = 1000;
  std::array<int, 3> counts{};
  std::size_t previous = selector->select_node("greeter", nodes, context, 1);
  ++counts[previous];
  for (int call = 2; call <= 3 * rounds; ++call) {
    std::size_t index = selector->select_node("greeter", nodes, context, 1);
    // Every call, not only a call's retries, moves the rotation on by one.
    REQUIRE(index == (previous + 1) % 3);
    ++counts[index];
    previous = index;
  }
  CHECK(counts == std::array<int, 3>{rounds, rounds, rounds});
}

TEST_CASE("roundrobin: each service rotates on its own") {
  auto selector = load_selector("roundrobin");
  auto nodes = three_nodes();
  micro::Context context;
  std::size_t greeter = selector->select_node("greeter", nodes, context, 1);
  std::size_t other = selector->select_node("other", nodes, context, 1);
  for (int i = 0; i < 10; ++i) {
    // Calls to "other" in between do not move the rotation of "greeter".
    other = selector->select_node("other", nodes, context, 1);
    std::size_t next = selector->select_node("greeter", nodes, context, 1);
    CHECK(next == (greeter + 1) % 3);
    greeter = next;
  }
  (void)other;
}

TEST_CASE("roundrobin: retries move to the next nodes") {
  auto nodes = three_nodes();
  micro::Context context;

  SUBCASE("attempt 2 and 3 take the next nodes") {
    auto selector = load_selector("roundrobin");
    for (int call = 0; call < 30; ++call) {
      std::size_t first = selector->select_node("greeter", nodes, context, 1);
      std::size_t second = selector->select_node("greeter", nodes, context, 2);
      std::size_t third = selector->select_node("greeter", nodes, context, 3);
      CHECK(second == (first + 1) % 3);
      CHECK(third == (first + 2) % 3);
    }
  }

  SUBCASE("a retry after a failure skips the failed node even out of turn") {
    auto selector = load_selector("roundrobin");
    for (int call = 0; call < 30; ++call) {
      std::size_t first = selector->select_node("greeter", nodes, context, 1);
      selector->report("greeter", nodes[first], failure);
      // Two other calls take their turns in between (another thread's calls).
      selector->select_node("greeter", nodes, context, 1);
      selector->select_node("greeter", nodes, context, 1);
      std::size_t retry = selector->select_node("greeter", nodes, context, 2);
      REQUIRE(retry != first);
      selector->report("greeter", nodes[first], success);
    }
  }
}

TEST_CASE("random: feedback reaches the selector and changes picks") {
  auto nodes = three_nodes();

  SUBCASE("a recently failed node is avoided while others are healthy") {
    auto selector = load_selector("random");
    selector->report("greeter", nodes[1], failure);
    auto counts = pick_counts(*selector, "greeter", nodes, 3000);
    CHECK(counts[1] == 0);
    CHECK(counts[0] > 1200);
    CHECK(counts[2] > 1200);
    // Other services are not affected by greeter's failures.
    auto other = pick_counts(*selector, "other", nodes, 3000);
    CHECK(other[1] > 800);
  }

  SUBCASE("a success lifts the penalty") {
    auto selector = load_selector("random");
    selector->report("greeter", nodes[1], failure);
    selector->report("greeter", nodes[1], success);
    auto counts = pick_counts(*selector, "greeter", nodes, 3000);
    CHECK(counts[1] > 800);
  }

  SUBCASE("when every node failed recently, picks stay spread over all of them") {
    auto selector = load_selector("random");
    for (const auto& node : nodes) selector->report("greeter", node, failure);
    auto counts = pick_counts(*selector, "greeter", nodes, 3000);
    for (int count : counts) CHECK(count > 800);
  }

  SUBCASE("the penalty ends after its duration") {
    auto selector = load_selector("random", {{"penalty", "100ms"}});
    selector->report("greeter", nodes[1], failure);
    CHECK(pick_counts(*selector, "greeter", nodes, 300)[1] == 0);
    micro::Context context;
    CHECK(wait_until([&] { return selector->select_node("greeter", nodes, context, 1) == 1; }, 5s));
  }

  SUBCASE("penalty=0 turns the avoidance off") {
    auto selector = load_selector("random", {{"penalty", "0"}});
    selector->report("greeter", nodes[1], failure);
    CHECK(pick_counts(*selector, "greeter", nodes, 3000)[1] > 800);
  }
}

TEST_CASE("roundrobin: a recently failed node is passed over") {
  auto selector = load_selector("roundrobin");
  auto nodes = three_nodes();
  selector->report("greeter", nodes[2], failure);
  auto counts = pick_counts(*selector, "greeter", nodes, 300);
  CHECK(counts[2] == 0);
  CHECK(counts[0] + counts[1] == 300);
  CHECK(counts[0] >= 100);  // node 0 takes node 2's turns as well
  selector->report("greeter", nodes[2], success);
  counts = pick_counts(*selector, "greeter", nodes, 300);
  CHECK(counts == std::array<int, 3>{100, 100, 100});
}

TEST_CASE("random: an ill-typed penalty is refused by the loader") {
  try {
    load_selector("random", {{"penalty", "soon"}});
    FAIL("an ill-typed penalty was accepted");
  } catch (const micro::Exception& error) {
    CHECK(error.error().code == 400);
    CHECK(error.error().detail.find("option 'penalty' is duration, got 'soon'") !=
          std::string::npos);
  }
}

TEST_CASE("roundrobin: an exact split under contention") {
  auto nodes = three_nodes();
  constexpr int thread_count = 8;
  constexpr int calls_per_thread = 30000;
  auto selector = load_selector("roundrobin");
  std::array<std::atomic<int>, 3> counts{};
  std::vector<std::thread> threads;
  for (int t = 0; t < thread_count; ++t) {
    threads.emplace_back([&] {
      micro::Context context;
      for (int i = 0; i < calls_per_thread; ++i) {
        std::size_t index = selector->select_node("greeter", nodes, context, 1);
        if (index >= 3) return;  // counted as missing below
        counts[index].fetch_add(1);
        // Successes are reported concurrently with picks; they never penalise.
        if (i % 100 == 0) selector->report("greeter", nodes[index], success);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (auto& count : counts) CHECK(count.load() == thread_count * calls_per_thread / 3);
}
