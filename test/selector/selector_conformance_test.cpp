// The selector conformance suite: every selector plugin, loaded through the PluginLoader, must
// pass every test here (the contract in <micro/selector.hpp>). Adding a selector is one name in
// selectors_under_test(); what only one selector promises (roundrobin's order, random's
// uniformity) stays in selector_test.cpp.
#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include <micro/context.hpp>
#include <micro/error.hpp>
#include <micro/selector.hpp>

#include "selector/selector_test_support.hpp"
#include "support/wait.hpp"

using namespace selector_test;

namespace {

const std::vector<std::string>& selectors_under_test() {
  static const std::vector<std::string> names = {"random", "roundrobin", "weighted", "p2c", "hash"};
  return names;
}

template <class Body>
void for_each_selector(Body body) {
  for (const auto& name : selectors_under_test()) {
    INFO("selector plugin: " << name);
    auto selector = load_selector(name);
    REQUIRE(selector != nullptr);
    body(*selector, name);
  }
}

}  // namespace

TEST_CASE("selector: every pick is an index into the nodes given, whatever their number") {
  for_each_selector([](micro::Selector& selector, const std::string&) {
    micro::Context context;
    // The node list changes from call to call (a watch moved nodes in and out).
    for (std::size_t size : {5u, 1u, 2u, 7u, 3u, 1u, 4u}) {
      auto nodes = nodes_named(size);
      for (int attempt = 1; attempt <= 4; ++attempt) {
        for (int call = 0; call < 50; ++call) {
          REQUIRE(selector.select_node("greeter", nodes, context, attempt) < size);
        }
      }
    }
  });
}

TEST_CASE("selector: a single node is always picked, even after it failed") {
  for_each_selector([](micro::Selector& selector, const std::string&) {
    auto one = nodes_named(1);
    micro::Context context;
    selector.report("greeter", one[0], failure);
    for (int attempt = 1; attempt <= 5; ++attempt)
      CHECK(selector.select_node("greeter", one, context, attempt) == 0);
  });
}

TEST_CASE("selector: an empty node list is refused with a clear error") {
  for_each_selector([](micro::Selector& selector, const std::string& name) {
    micro::Context context;
    std::vector<micro::Node> none;
    try {
      selector.select_node("greeter", none, context, 1);
      FAIL("an empty node list was given a pick");
    } catch (const micro::Exception& error) {
      CHECK(error.error().code == 503);
      CHECK(error.error().id == "micro.selector." + name);
      CHECK(error.error().detail ==
            "no nodes to select from for service 'greeter'; expected at least one node (the "
            "client answers 503 before asking a selector)");
    }
    // The selector is still usable afterwards.
    auto nodes = three_nodes();
    CHECK(selector.select_node("greeter", nodes, context, 1) < nodes.size());
  });
}

TEST_CASE("selector: first attempts spread over every node") {
  for_each_selector([](micro::Selector& selector, const std::string&) {
    auto nodes = three_nodes();
    auto counts = pick_counts(selector, "greeter", nodes, 3000);
    // A fair share is 1000; every selector gives each healthy node a good part of it.
    for (int count : counts) CHECK(count > 800);
  });
}

TEST_CASE("selector: feedback of any kind is accepted and picks stay valid") {
  for_each_selector([](micro::Selector& selector, const std::string&) {
    auto nodes = three_nodes();
    micro::Context context;
    const micro::Outcome timeout{false, 408, 5s};
    const micro::Outcome not_found{false, 404, 0ms};
    const micro::Node stranger{"gone", "127.0.0.1:9", {}};
    const micro::Node anonymous{"", "127.0.0.1:10", {}};
    for (const auto& outcome : {failure, success, timeout, not_found}) {
      for (const auto& node : nodes) selector.report("greeter", node, outcome);
      selector.report("greeter", stranger, outcome);         // a node no longer in the list
      selector.report("greeter", anonymous, outcome);        // a node without an id
      selector.report("never-selected", nodes[0], outcome);  // a service not seen yet
      for (int attempt = 1; attempt <= 3; ++attempt)
        REQUIRE(selector.select_node("greeter", nodes, context, attempt) < nodes.size());
    }
  });
}

TEST_CASE("selector: a retry after a reported failure goes to another node") {
  for_each_selector([](micro::Selector& selector, const std::string&) {
    auto nodes = three_nodes();
    micro::Context context;
    for (int call = 0; call < 200; ++call) {
      std::size_t first = selector.select_node("greeter", nodes, context, 1);
      REQUIRE(first < nodes.size());
      selector.report("greeter", nodes[first], failure);
      std::size_t second = selector.select_node("greeter", nodes, context, 2);
      REQUIRE(second != first);
      // A success lifts the penalty, so the next call starts from three healthy nodes.
      selector.report("greeter", nodes[first], success);
    }
  });
}

TEST_CASE("selector: nodes without an id are told apart by address") {
  for_each_selector([](micro::Selector& selector, const std::string&) {
    std::vector<micro::Node> anonymous{{"", "127.0.0.1:1", {}}, {"", "127.0.0.1:2", {}}};
    micro::Context context;
    selector.report("greeter", anonymous[0], failure);
    for (int call = 0; call < 100; ++call)
      REQUIRE(selector.select_node("greeter", anonymous, context, 2) == 1);
  });
}

TEST_CASE("selector: one service's failures leave another service's picks alone") {
  for_each_selector([](micro::Selector& selector, const std::string&) {
    auto nodes = three_nodes();
    selector.report("greeter", nodes[1], failure);
    auto other = pick_counts(selector, "other", nodes, 3000);
    CHECK(other[1] > 800);
  });
}

TEST_CASE("selector: concurrent selects and reports from many threads") {
  for_each_selector([](micro::Selector& selector, const std::string&) {
    auto nodes = three_nodes();
    constexpr int thread_count = 8;
    constexpr int calls_per_thread = 20000;
    // Even threads call "steady" and report successes only (their picks must spread); odd
    // threads call their own services and report failures and successes meanwhile.
    std::array<std::atomic<int>, 3> steady_counts{};
    std::atomic<int> out_of_range{0};
    std::atomic<int> picks{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < thread_count; ++t) {
      threads.emplace_back([&, t] {
        micro::Context context;
        const bool steady = t % 2 == 0;
        const std::string service = steady ? "steady" : "churn-" + std::to_string(t % 3);
        for (int i = 0; i < calls_per_thread; ++i) {
          std::size_t index = selector.select_node(service, nodes, context, 1 + i % 2);
          if (index >= nodes.size()) {
            out_of_range.fetch_add(1);
            continue;
          }
          picks.fetch_add(1);
          if (steady) {
            steady_counts[index].fetch_add(1);
            if (i % 100 == 0) selector.report(service, nodes[index], success);
          } else if (i % 50 == 0) {
            selector.report(service, nodes[index], i % 100 == 0 ? failure : success);
          }
        }
      });
    }
    for (auto& thread : threads) thread.join();
    CHECK(out_of_range.load() == 0);
    CHECK(picks.load() == thread_count * calls_per_thread);
    // A fair share of the steady picks is a third; contention does not skew it far.
    constexpr int steady_picks = thread_count / 2 * calls_per_thread;
    for (auto& count : steady_counts) CHECK(count.load() > steady_picks / 4);
  });
}

TEST_CASE("selector: unknown options are refused by the loader, naming the option") {
  for (const auto& name : selectors_under_test()) {
    INFO("selector plugin: " << name);
    try {
      load_selector(name, {{"weight", "2"}});
      FAIL("an unknown option was accepted");
    } catch (const micro::Exception& error) {
      CHECK(error.error().code == 400);
      CHECK(error.error().detail.find("has no option 'weight'") != std::string::npos);
    }
  }
}

TEST_CASE("selector: an ejected node gets no picks until its probe, and a good probe re-admits") {
  for (const auto& name : selectors_under_test()) {
    INFO("selector plugin: " << name);
    auto selector = load_selector(name, {{"penalty", "0"},
                                         {"eject_consecutive", "2"},
                                         {"eject_error_percent", "0"},
                                         {"eject_base", "300ms"}});
    auto nodes = three_nodes();
    micro::Context context;
    selector->report("greeter", nodes[1], failure);
    selector->report("greeter", nodes[1], failure);
    auto ejected_at = std::chrono::steady_clock::now();
    auto counts = pick_counts(*selector, "greeter", nodes, 300);
    // Only meaningful if the picks took less than the ejection (a loaded machine may not).
    if (std::chrono::steady_clock::now() - ejected_at < 300ms) CHECK(counts[1] == 0);
    // After the period one pick carries the probe.
    REQUIRE(test_support::wait_until(
        [&] { return selector->select_node("greeter", nodes, context, 1) == 1; }, 5s));
    selector->report("greeter", nodes[1], success);
    auto after = pick_counts(*selector, "greeter", nodes, 3000);
    CHECK(after[1] > 800);
  }
}
