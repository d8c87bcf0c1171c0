// micro::WatchDelivery and micro::DeliveryWatch, the watch-stop semantics every registry shares:
// no callback after stop() returns, stop() from inside the callback returns at once, callbacks
// never overlap whichever threads deliver, a throwing callback is ignored. Every wait is bounded.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include <micro/registry.hpp>

#include "registry/registry_test_support.hpp"

using namespace registry_test;

namespace {

micro::WatchEvent event_for(const std::string& node_id) {
  return {micro::WatchAction::create, make_service("greeter", "1", {node_id})};
}

// Runs `body` on a thread and waits for it a bounded time: a deadlock (what these tests guard
// against) ends the program with a message instead of hanging it.
template <class Body>
void run_bounded(const char* what, Body body) {
  std::atomic<bool> done{false};
  std::thread thread([&] {
    body();
    done.store(true);
  });
  if (!wait_until([&] { return done.load(); }, 10s)) {
    std::fprintf(stderr, "deadlock: %s did not return within 10s\n", what);
    std::abort();
  }
  thread.join();
}

}  // namespace

TEST_CASE("watch delivery: delivers in order until stopped, then nothing") {
  std::vector<std::string> seen;
  micro::WatchDelivery delivery(
      [&](const micro::WatchEvent& event) { seen.push_back(event.service.nodes[0].id); });
  CHECK_FALSE(delivery.stopped());
  CHECK(delivery.deliver(event_for("a")));
  CHECK(delivery.deliver(event_for("b")));
  delivery.stop();
  CHECK(delivery.stopped());
  CHECK_FALSE(delivery.deliver(event_for("c")));
  CHECK(seen == std::vector<std::string>{"a", "b"});
}

TEST_CASE("watch delivery: a throwing callback is ignored and the next event still arrives") {
  int calls = 0;
  micro::WatchDelivery delivery([&](const micro::WatchEvent&) {
    ++calls;
    if (calls == 1) throw std::runtime_error("callback failed");
    if (calls == 2) throw 42;  // not even a std::exception
  });
  CHECK(delivery.deliver(event_for("a")));
  CHECK(delivery.deliver(event_for("b")));
  CHECK(delivery.deliver(event_for("c")));
  CHECK(calls == 3);
}

TEST_CASE("watch delivery: stop() from another thread waits for the callback in progress") {
  Gate gate;
  std::atomic<bool> callback_finished{false};
  auto delivery = std::make_shared<micro::WatchDelivery>([&](const micro::WatchEvent&) {
    gate.arrive_and_wait();
    callback_finished.store(true);
  });
  std::thread deliverer([&] { delivery->deliver(event_for("a")); });
  REQUIRE(gate.wait_arrived());

  std::atomic<bool> stop_returned{false};
  std::atomic<bool> finished_when_stop_returned{false};
  std::thread stopper([&] {
    delivery->stop();
    finished_when_stop_returned.store(callback_finished.load());
    stop_returned.store(true);
  });
  REQUIRE(wait_until([&] { return delivery->stopped(); }));
  // Held at the gate, the callback is still running: stop() must not return (this wait is
  // expected to run out).
  CHECK_FALSE(wait_until([&] { return stop_returned.load(); }, 200ms));
  gate.open();
  stopper.join();
  deliverer.join();
  CHECK(finished_when_stop_returned.load());
  CHECK_FALSE(delivery->deliver(event_for("b")));
}

TEST_CASE("watch delivery: stop() from inside the callback returns at once; it was the last") {
  int calls = 0;
  bool stop_returned_inside = false;
  std::shared_ptr<micro::WatchDelivery> delivery;
  delivery = std::make_shared<micro::WatchDelivery>([&](const micro::WatchEvent&) {
    ++calls;
    delivery->stop();
    delivery->stop();  // twice is fine too
    stop_returned_inside = true;
  });
  run_bounded("stop() inside the callback", [&] {
    CHECK_FALSE(delivery->deliver(event_for("a")));  // false: stopped during this delivery
    CHECK_FALSE(delivery->deliver(event_for("b")));
  });
  CHECK(stop_returned_inside);
  CHECK(calls == 1);
  run_bounded("stop() after stopping inside", [&] { delivery->stop(); });
}

TEST_CASE("watch delivery: many delivering threads never overlap, and stop() ends them all") {
  std::atomic<int> in_flight{0};
  std::atomic<int> most_in_flight{0};
  std::atomic<int> calls{0};
  micro::WatchDelivery delivery([&](const micro::WatchEvent&) {
    const int now = in_flight.fetch_add(1) + 1;
    int most = most_in_flight.load();
    while (now > most && !most_in_flight.compare_exchange_weak(most, now)) {
    }
    calls.fetch_add(1);
    std::this_thread::yield();  // widen the window an overlap would show in
    in_flight.fetch_sub(1);
  });

  constexpr int thread_count = 4;
  std::vector<std::thread> threads;
  for (int index = 0; index < thread_count; ++index) {
    threads.emplace_back([&, index] {
      const auto event = event_for("node-" + std::to_string(index));
      while (delivery.deliver(event)) {
      }
    });
  }
  REQUIRE(wait_until([&] { return calls.load() >= 500; }));
  delivery.stop();
  const int calls_at_stop = calls.load();
  for (auto& thread : threads) thread.join();  // each saw deliver() return false
  CHECK(calls.load() == calls_at_stop);
  CHECK(most_in_flight.load() == 1);
}

TEST_CASE("watch delivery: stop() from several threads at once, and again, is fine") {
  std::atomic<int> calls{0};
  micro::WatchDelivery delivery([&](const micro::WatchEvent&) { calls.fetch_add(1); });
  CHECK(delivery.deliver(event_for("a")));
  run_bounded("concurrent stop()", [&] {
    std::vector<std::thread> stoppers;
    for (int index = 0; index < 4; ++index) stoppers.emplace_back([&] { delivery.stop(); });
    for (auto& stopper : stoppers) stopper.join();
    delivery.stop();
  });
  CHECK_FALSE(delivery.deliver(event_for("b")));
  CHECK(calls.load() == 1);
}

TEST_CASE("watch delivery: a callback may stop another delivery served by the same thread") {
  // The memory registry delivers every watch from one thread.
  std::atomic<int> second_calls{0};
  micro::WatchDelivery second([&](const micro::WatchEvent&) { second_calls.fetch_add(1); });
  micro::WatchDelivery first([&](const micro::WatchEvent&) { second.stop(); });
  run_bounded("stopping another delivery from a callback", [&] {
    CHECK(first.deliver(event_for("a")));
    CHECK_FALSE(second.deliver(event_for("a")));
  });
  CHECK(second_calls.load() == 0);
}

TEST_CASE("delivery watch: stop() runs the hook once and joins the worker") {
  auto delivery = std::make_shared<micro::WatchDelivery>([](const micro::WatchEvent&) {});
  std::atomic<int> hook_calls{0};
  std::atomic<bool> worker_done{false};
  std::mutex mutex;
  std::condition_variable wake;
  std::thread worker([&, delivery] {
    std::unique_lock lock(mutex);
    wake.wait_for(lock, 10s, [&] { return delivery->stopped(); });
    worker_done.store(true);
  });
  micro::DeliveryWatch watch(
      delivery,
      [&] {
        hook_calls.fetch_add(1);
        { std::lock_guard lock(mutex); }
        wake.notify_all();
      },
      std::move(worker));
  run_bounded("DeliveryWatch::stop()", [&] { watch.stop(); });
  CHECK(delivery->stopped());
  CHECK(worker_done.load());  // joined before stop() returned
  CHECK(hook_calls.load() == 1);
  watch.stop();
  CHECK(hook_calls.load() == 1);
}

TEST_CASE("delivery watch: destroying it without stop() stops it") {
  auto delivery = std::make_shared<micro::WatchDelivery>([](const micro::WatchEvent&) {});
  int hook_calls = 0;
  {
    micro::DeliveryWatch watch(delivery, [&] { ++hook_calls; });
  }
  CHECK(delivery->stopped());
  CHECK(hook_calls == 1);
  CHECK_FALSE(delivery->deliver(event_for("a")));
}

TEST_CASE("delivery watch: stopped or destroyed from inside a callback on its own worker") {
  for (const bool destroy : {false, true}) {
    INFO("destroy inside the callback: " << destroy);
    std::unique_ptr<micro::Watch> watch;
    std::mutex watch_mutex;  // the worker starts before the Watch exists, as in a registry
    std::atomic<int> calls{0};
    std::atomic<int> hook_calls{0};
    std::atomic<bool> worker_done{false};
    auto delivery = std::make_shared<micro::WatchDelivery>([&](const micro::WatchEvent&) {
      calls.fetch_add(1);
      std::lock_guard lock(watch_mutex);
      if (destroy) {
        watch.reset();  // the worker is detached and ends by itself
      } else {
        watch->stop();  // must not join the thread it runs on
      }
    });
    {
      std::lock_guard lock(watch_mutex);
      std::thread worker([&, delivery] {
        while (delivery->deliver(event_for("a"))) {
        }
        worker_done.store(true);
      });
      watch = std::make_unique<micro::DeliveryWatch>(
          delivery, [&] { hook_calls.fetch_add(1); }, std::move(worker));
    }
    REQUIRE(wait_until([&] { return worker_done.load(); }));
    CHECK(calls.load() == 1);
    CHECK(hook_calls.load() == 1);
    std::lock_guard lock(watch_mutex);
    CHECK((watch == nullptr) == destroy);
    watch.reset();  // stopped inside: destroying it here joins the finished worker
    CHECK(hook_calls.load() == 1);
  }
}
