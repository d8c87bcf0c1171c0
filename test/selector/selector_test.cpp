// Selector plugins (random, roundrobin) loaded through the plugin loader: how picks are
// distributed, how retries move on, how feedback changes picks, and concurrent use.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>

#include <micro/context.hpp>
#include <micro/error.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/registry.hpp>
#include <micro/selector.hpp>

using namespace std::chrono_literals;

namespace {

boost::asio::io_context& io_context() {
  static boost::asio::io_context context;
  return context;
}

std::shared_ptr<micro::Selector> load_selector(
    const char* name, const std::vector<std::pair<std::string, std::string>>& options = {}) {
  return micro::PluginLoader::instance().create<micro::Selector>(name, "", options,
                                                                 io_context().get_executor());
}

std::vector<micro::Node> three_nodes() {
  return {
      {"node-a", "127.0.0.1:1001", {}},
      {"node-b", "127.0.0.1:1002", {}},
      {"node-c", "127.0.0.1:1003", {}},
  };
}

const micro::Outcome failure{false, 503, 1ms};
const micro::Outcome success{true, 0, 1ms};

// Counts picks of `count` first attempts.
std::array<int, 3> pick_counts(micro::Selector& selector, std::string_view service,
                               const std::vector<micro::Node>& nodes, int count) {
  std::array<int, 3> counts{};
  micro::Context context;
  for (int i = 0; i < count; ++i) {
    std::size_t index = selector.select_node(service, nodes, context, 1);
    REQUIRE(index < nodes.size());
    ++counts[index];
  }
  return counts;
}

}  // namespace

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

TEST_CASE("random and roundrobin: a single node is always picked") {
  std::vector<micro::Node> one{{"only", "127.0.0.1:1", {}}};
  micro::Context context;
  for (const char* name : {"random", "roundrobin"}) {
    auto selector = load_selector(name);
    selector->report("greeter", one[0], failure);
    for (int attempt = 1; attempt <= 5; ++attempt)
      CHECK(selector->select_node("greeter", one, context, attempt) == 0);
  }
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

TEST_CASE("retries move to another node") {
  auto nodes = three_nodes();
  micro::Context context;

  SUBCASE("roundrobin: attempt 2 and 3 take the next nodes") {
    auto selector = load_selector("roundrobin");
    for (int call = 0; call < 30; ++call) {
      std::size_t first = selector->select_node("greeter", nodes, context, 1);
      std::size_t second = selector->select_node("greeter", nodes, context, 2);
      std::size_t third = selector->select_node("greeter", nodes, context, 3);
      CHECK(second == (first + 1) % 3);
      CHECK(third == (first + 2) % 3);
    }
  }

  SUBCASE("random: the retry after a reported failure avoids the failed node") {
    auto selector = load_selector("random");
    for (int call = 0; call < 200; ++call) {
      std::size_t first = selector->select_node("greeter", nodes, context, 1);
      selector->report("greeter", nodes[first], failure);
      std::size_t second = selector->select_node("greeter", nodes, context, 2);
      REQUIRE(second != first);
      // A success lifts the penalty, so the next call starts from three healthy nodes.
      selector->report("greeter", nodes[first], success);
      selector->report("greeter", nodes[second], success);
    }
  }

  SUBCASE("roundrobin: a retry after a failure skips the failed node even out of turn") {
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
    bool picked_again = false;
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!picked_again && std::chrono::steady_clock::now() < deadline) {
      picked_again = selector->select_node("greeter", nodes, context, 1) == 1;
      if (!picked_again) std::this_thread::sleep_for(1ms);
    }
    CHECK(picked_again);
  }

  SUBCASE("penalty=0 turns the avoidance off") {
    auto selector = load_selector("random", {{"penalty", "0"}});
    selector->report("greeter", nodes[1], failure);
    CHECK(pick_counts(*selector, "greeter", nodes, 3000)[1] > 800);
  }

  SUBCASE("nodes without an id are told apart by address") {
    auto selector = load_selector("random");
    std::vector<micro::Node> anonymous{{"", "127.0.0.1:1", {}}, {"", "127.0.0.1:2", {}}};
    micro::Context context;
    selector->report("greeter", anonymous[0], failure);
    for (int i = 0; i < 500; ++i)
      REQUIRE(selector->select_node("greeter", anonymous, context, 1) == 1);
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

TEST_CASE("selector options are checked by the loader") {
  try {
    load_selector("random", {{"penalty", "soon"}});
    FAIL("an ill-typed penalty was accepted");
  } catch (const micro::Exception& error) {
    CHECK(error.error().code == 400);
    CHECK(error.error().detail.find("option 'penalty' is duration, got 'soon'") !=
          std::string::npos);
  }
  try {
    load_selector("roundrobin", {{"weight", "2"}});
    FAIL("an unknown option was accepted");
  } catch (const micro::Exception& error) {
    CHECK(error.error().code == 400);
    CHECK(error.error().detail.find("has no option 'weight'") != std::string::npos);
  }
}

TEST_CASE("concurrent select and report from many threads") {
  auto nodes = three_nodes();
  constexpr int thread_count = 8;
  constexpr int calls_per_thread = 30000;

  SUBCASE("roundrobin keeps an exact split under contention") {
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

  SUBCASE("random stays in range with failures reported meanwhile") {
    auto selector = load_selector("random");
    std::atomic<int> out_of_range{0};
    std::atomic<int> picks{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < thread_count; ++t) {
      threads.emplace_back([&, t] {
        micro::Context context;
        std::string service = "service-" + std::to_string(t % 3);
        for (int i = 0; i < calls_per_thread; ++i) {
          std::size_t index = selector->select_node(service, nodes, context, 1 + i % 2);
          if (index >= 3) {
            out_of_range.fetch_add(1);
            continue;
          }
          picks.fetch_add(1);
          if (i % 50 == 0)
            selector->report(service, nodes[index], i % 100 == 0 ? failure : success);
        }
      });
    }
    for (auto& thread : threads) thread.join();
    CHECK(out_of_range.load() == 0);
    CHECK(picks.load() == thread_count * calls_per_thread);
  }
}
