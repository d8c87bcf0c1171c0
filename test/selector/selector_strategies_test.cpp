// What only one of the newer selectors promises, through the plugin loader: weighted's
// shares and smoothness, p2c's preference for fast and idle nodes and its slow start, hash's
// stickiness and the 1/N bound on keys that move when a node comes or goes.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <micro/context.hpp>
#include <micro/log.hpp>
#include <micro/selector.hpp>

#include "selector/selector_test_support.hpp"
#include "support/wait.hpp"

using namespace selector_test;
using namespace std::chrono_literals;

namespace {

std::vector<micro::Node> weighted_nodes(const std::vector<std::string>& weights) {
  auto nodes = nodes_named(weights.size());
  for (std::size_t i = 0; i < weights.size(); ++i)
    if (!weights[i].empty()) nodes[i].metadata["weight"] = weights[i];
  return nodes;
}

std::vector<int> counts_of(micro::Selector& selector, std::string_view service,
                           const std::vector<micro::Node>& nodes, int picks) {
  std::vector<int> counts(nodes.size(), 0);
  micro::Context context;
  for (int i = 0; i < picks; ++i) ++counts.at(selector.select_node(service, nodes, context, 1));
  return counts;
}

micro::Context keyed(const std::string& key, const std::string& value) {
  micro::Context context;
  context.metadata().set(key, value);
  return context;
}

}  // namespace

TEST_CASE("weighted: shares follow the weights exactly over whole rotations") {
  auto selector = load_selector("weighted");
  auto nodes = weighted_nodes({"1", "2", "3"});
  auto counts = counts_of(*selector, "greeter", nodes, 6000);
  CHECK(counts[0] == doctest::Approx(1000).epsilon(0.05));
  CHECK(counts[1] == doctest::Approx(2000).epsilon(0.05));
  CHECK(counts[2] == doctest::Approx(3000).epsilon(0.05));
  CHECK(counts[0] + counts[1] + counts[2] == 6000);
}

TEST_CASE("weighted: smooth, no bursts: weights 5,1,1 never give five of the heavy node in a row") {
  auto selector = load_selector("weighted");
  auto nodes = weighted_nodes({"5", "1", "1"});
  micro::Context context;
  int run = 0, longest = 0;
  std::array<int, 3> counts{};
  for (int i = 0; i < 700; ++i) {
    std::size_t index = selector->select_node("greeter", nodes, context, 1);
    ++counts[index];
    run = index == 0 ? run + 1 : 0;
    longest = std::max(longest, run);
  }
  CHECK(counts[0] == 500);
  CHECK(counts[1] == 100);
  CHECK(counts[2] == 100);
  CHECK(longest < 5);  // a a b a c a a, repeated: at most four across the period's seam
}

TEST_CASE("weighted: no weight is 1, weight 0 is left out, a bad weight is logged and taken as 1") {
  std::mutex mutex;
  std::vector<std::string> warnings;
  auto previous = micro::log::set_sink(
      [&](micro::log::Level level, std::string_view component, std::string_view message) {
        std::lock_guard lock(mutex);
        if (level == micro::log::Level::warn && component == "selector weighted")
          warnings.emplace_back(message);
      });
  auto selector = load_selector("weighted");
  auto nodes = weighted_nodes({"", "0", "heavy", "2", "-3"});
  auto counts = counts_of(*selector, "greeter", nodes, 5000);
  micro::log::set_sink(previous);
  CHECK(counts[0] == doctest::Approx(1000).epsilon(0.05));
  CHECK(counts[1] == 0);
  CHECK(counts[2] == doctest::Approx(1000).epsilon(0.05));
  CHECK(counts[3] == doctest::Approx(2000).epsilon(0.05));
  CHECK(counts[4] == doctest::Approx(1000).epsilon(0.05));
  REQUIRE(warnings.size() == 1);  // once per node list, not once per pick
  CHECK(warnings[0] ==
        "service 'greeter': node 'node-2' has weight 'heavy', node 'node-4' has weight '-3'; "
        "expected a whole number from 0 to 1000 (taken as 1)");
}

TEST_CASE("weighted: a changed node list is picked up at once") {
  auto selector = load_selector("weighted");
  auto before = weighted_nodes({"1", "1"});
  counts_of(*selector, "greeter", before, 10);
  auto after = weighted_nodes({"1", "1", "8"});
  auto counts = counts_of(*selector, "greeter", after, 1000);
  CHECK(counts[2] == doctest::Approx(800).epsilon(0.05));
}

TEST_CASE("p2c: a node ten times slower gets almost nothing; the fast ones share evenly") {
  auto selector = load_selector("p2c", {{"slow_start", "0"}});
  auto nodes = three_nodes();
  const std::array<std::chrono::nanoseconds, 3> latency{1ms, 1ms, 10ms};
  micro::Context context;
  std::array<int, 3> counts{};
  constexpr int picks = 6000;
  for (int i = 0; i < picks; ++i) {
    std::size_t index = selector->select_node("greeter", nodes, context, 1);
    ++counts[index];
    selector->report("greeter", nodes[index], micro::Outcome{true, 0, latency[index]});
  }
  // Each pair is drawn a third of the time; the slow node loses every pairing once measured.
  CHECK(counts[0] == doctest::Approx(picks / 2).epsilon(0.05));
  CHECK(counts[1] == doctest::Approx(picks / 2).epsilon(0.05));
  CHECK(counts[2] < picks / 100);
}

TEST_CASE("p2c: with equal latency, calls in flight spread evenly") {
  auto selector = load_selector("p2c", {{"slow_start", "0"}});
  auto nodes = three_nodes();
  // Nothing reported back: every pick stays in flight, and p2c takes the less busy of two.
  auto counts = pick_counts(*selector, "greeter", nodes, 3000);
  for (int count : counts) CHECK(count == doctest::Approx(1000).epsilon(0.05));
}

TEST_CASE("p2c: a new node warms up instead of being flooded") {
  auto selector = load_selector("p2c", {{"slow_start", "300ms"}});
  auto nodes = three_nodes();
  std::vector<micro::Node> old_nodes{nodes[0], nodes[1]};
  micro::Context context;
  auto serve = [&](const std::vector<micro::Node>& list, int picks) {
    std::vector<int> counts(list.size(), 0);
    for (int i = 0; i < picks; ++i) {
      std::size_t index = selector->select_node("greeter", list, context, 1);
      ++counts[index];
      selector->report("greeter", list[index], micro::Outcome{true, 0, 1ms});
    }
    return counts;
  };
  serve(old_nodes, 100);
  const auto warm = std::chrono::steady_clock::now() + 300ms;
  REQUIRE(test_support::wait_until([&] { return std::chrono::steady_clock::now() >= warm; }, 5s));
  auto early = serve(nodes, 3000);  // node 2 just appeared
  CHECK(early[2] < 3000 / 3 / 2);   // well under its fair share
  const auto later = std::chrono::steady_clock::now() + 300ms;
  REQUIRE(test_support::wait_until([&] { return std::chrono::steady_clock::now() >= later; }, 5s));
  auto warmed = serve(nodes, 3000);
  CHECK(warmed[2] == doctest::Approx(1000).epsilon(0.1));
}

TEST_CASE("hash: a key always goes to the same node, in any selector instance") {
  auto first = load_selector("hash", {{"key", "user-id"}});
  auto second = load_selector("hash", {{"key", "user-id"}});
  auto nodes = nodes_named(5);
  for (int user = 0; user < 500; ++user) {
    auto context = keyed("user-id", "user-" + std::to_string(user));
    std::size_t pick = first->select_node("greeter", nodes, context, 1);
    CHECK(first->select_node("greeter", nodes, context, 1) == pick);
    CHECK(second->select_node("greeter", nodes, context, 1) == pick);
    // A retry goes elsewhere.
    CHECK(first->select_node("greeter", nodes, context, 2) != pick);
  }
}

TEST_CASE("hash: keys spread evenly; a call without the key gets any node") {
  auto selector = load_selector("hash", {{"key", "user-id"}});
  auto nodes = three_nodes();
  std::array<int, 3> counts{};
  for (int user = 0; user < 30000; ++user) {
    auto context = keyed("user-id", std::to_string(user));
    ++counts[selector->select_node("greeter", nodes, context, 1)];
  }
  for (int count : counts) CHECK(count == doctest::Approx(10000).epsilon(0.05));
  auto unkeyed = pick_counts(*selector, "greeter", nodes, 3000);
  for (int count : unkeyed) CHECK(count > 800);
}

TEST_CASE("hash: removing or adding one of N nodes moves about 1/N of the keys, no other") {
  auto selector = load_selector("hash", {{"key", "user-id"}});
  auto ten = nodes_named(11);
  auto eleven = ten;
  ten.pop_back();
  auto nine = ten;
  nine.erase(nine.begin() + 3);
  constexpr int keys = 20000;
  auto owner = [&](const std::vector<micro::Node>& nodes, int user) {
    auto context = keyed("user-id", "u" + std::to_string(user));
    return nodes[selector->select_node("greeter", nodes, context, 1)].id;
  };
  int moved_on_removal = 0, moved_on_addition = 0;
  for (int user = 0; user < keys; ++user) {
    std::string with_ten = owner(ten, user);
    std::string with_nine = owner(nine, user);
    std::string with_eleven = owner(eleven, user);
    if (with_nine != with_ten) {
      ++moved_on_removal;
      CHECK(with_ten == "node-3");  // only the removed node's keys move
    }
    if (with_eleven != with_ten) {
      ++moved_on_addition;
      CHECK(with_eleven == "node-10");  // only to the new node
    }
  }
  CHECK(moved_on_removal == doctest::Approx(keys / 10.0).epsilon(0.1));
  CHECK(moved_on_addition == doctest::Approx(keys / 11.0).epsilon(0.1));
}
