// Broker conformance: the broker chosen with --broker=<name> (an entry of the table in
// brokers_under_test.hpp; default memory) must pass these cases against its real server:
// delivery counts (broadcast vs queue groups), headers, wildcards, unsubscribe, drain, handler
// errors, topic syntax errors, at-least-once delivery (or its refusal), a server restart with
// "delivered + refused = published", and trace context with PRODUCER/CONSUMER spans. Then
// memory-specific cases (run with --broker=memory only): exact round robin, no executor.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <micro/broker.hpp>
#include <micro/error.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/runtime.hpp>
#include <micro/trace.hpp>
#include <micro/wrapper.hpp>

#include "broker/broker_test_support.hpp"
#include "broker/brokers_under_test.hpp"
#include "broker/recording_tracer.hpp"
#include "trace_wrappers.hpp"

using namespace std::chrono_literals;

using broker_test::BrokerUnderTest;
using broker_test::Counter;
using broker_test::message_on;
using broker_test::wait_until;

namespace {

// The broker under test, chosen in main.
const BrokerUnderTest* selected = nullptr;

// Its server, started on first use and kept for the whole program; null when it needs none.
broker_test::TestServer* server() {
  static std::unique_ptr<broker_test::TestServer> instance =
      selected->launch ? selected->launch() : nullptr;
  return instance.get();
}

std::shared_ptr<micro::Broker> make_broker(const broker_test::Options& extra = {},
                                           boost::asio::any_io_executor executor = {}) {
  broker_test::Options options = selected->options;
  options.insert(options.end(), extra.begin(), extra.end());
  return micro::PluginLoader::instance().create<micro::Broker>(
      selected->plugin, server() ? server()->address() : "", options, executor);
}

struct BrokerFixture {
  explicit BrokerFixture(const broker_test::Options& extra = {}) {
    broker = make_broker(extra, runtime.executor());
    broker->connect();
  }
  ~BrokerFixture() {
    broker->disconnect();
    broker.reset();
    runtime.stop();
  }

  micro::Runtime runtime{4};
  std::shared_ptr<micro::Broker> broker;
};

// Runs `body` with a fresh connected broker of the kind under test.
void for_each_broker(const std::function<void(micro::Broker&)>& body) {
  CAPTURE(selected->name);
  BrokerFixture fixture;
  body(*fixture.broker);
}

}  // namespace

TEST_CASE("broker conformance: every plain subscriber gets every message") {
  for_each_broker([](micro::Broker& broker) {
    constexpr int messages = 1000;
    std::array<Counter, 3> counters;
    std::vector<std::shared_ptr<micro::Subscription>> subscriptions;
    for (auto& counter : counters)
      subscriptions.push_back(broker.subscribe("orders.created", counter.handler()));
    CHECK(subscriptions[0]->topic() == "orders.created");
    CHECK(subscriptions[0]->queue().empty());

    for (int i = 0; i < messages; ++i)
      broker.publish(message_on("orders.created", std::to_string(i)));
    for (auto& counter : counters)
      CHECK(wait_until([&] { return counter.count.load() == messages; }));
    broker.disconnect();  // drains: nothing more may arrive
    for (auto& counter : counters) CHECK(counter.count.load() == messages);
  });
}

TEST_CASE("broker conformance: a queue group splits messages across its members") {
  for_each_broker([](micro::Broker& broker) {
    constexpr int messages = 3000;
    std::array<Counter, 3> members;
    std::vector<std::shared_ptr<micro::Subscription>> subscriptions;
    for (auto& member : members)
      subscriptions.push_back(
          broker.subscribe("jobs", member.handler(), micro::SubscribeOptions{"workers"}));
    CHECK(subscriptions[0]->queue() == "workers");

    for (int i = 0; i < messages; ++i) broker.publish(message_on("jobs", std::to_string(i)));
    auto total = [&] {
      int sum = 0;
      for (auto& member : members) sum += member.count.load();
      return sum;
    };
    CHECK(wait_until([&] { return total() == messages; }));
    broker.disconnect();
    CHECK(total() == messages);  // exactly once each, none delivered twice
    for (auto& member : members) CHECK(member.count.load() > 0);
  });
}

TEST_CASE("broker conformance: queue groups and plain subscribers mixed on one topic") {
  for_each_broker([](micro::Broker& broker) {
    constexpr int messages = 600;
    Counter plain_one, plain_two;
    std::array<Counter, 3> workers;
    std::array<Counter, 2> auditors;
    std::vector<std::shared_ptr<micro::Subscription>> subscriptions;
    subscriptions.push_back(broker.subscribe("events", plain_one.handler()));
    subscriptions.push_back(broker.subscribe("events", plain_two.handler()));
    for (auto& worker : workers)
      subscriptions.push_back(
          broker.subscribe("events", worker.handler(), micro::SubscribeOptions{"workers"}));
    for (auto& auditor : auditors)
      subscriptions.push_back(
          broker.subscribe("events", auditor.handler(), micro::SubscribeOptions{"audit"}));

    for (int i = 0; i < messages; ++i) broker.publish(message_on("events", "x"));
    auto sum = [](auto& counters) {
      int total = 0;
      for (auto& counter : counters) total += counter.count.load();
      return total;
    };
    CHECK(wait_until([&] {
      return plain_one.count.load() == messages && plain_two.count.load() == messages &&
             sum(workers) == messages && sum(auditors) == messages;
    }));
    broker.disconnect();
    CHECK(plain_one.count.load() == messages);
    CHECK(plain_two.count.load() == messages);
    CHECK(sum(workers) == messages);
    CHECK(sum(auditors) == messages);
    for (auto& worker : workers) CHECK(worker.count.load() > 0);
    for (auto& auditor : auditors) CHECK(auditor.count.load() > 0);
  });
}

TEST_CASE("broker conformance: topic, headers and body round-trip, header case kept") {
  for_each_broker([](micro::Broker& broker) {
    std::mutex mutex;
    std::vector<micro::Message> received;
    auto subscription = broker.subscribe("greetings", [&](micro::Message& message) {
      std::lock_guard lock(mutex);
      received.push_back(message);
    });
    micro::Message message = message_on("greetings", std::string("hello\0world\xff", 12));
    message.headers.set("X-Request-Id", "req-42");
    message.headers.set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    message.headers.set("Content-Type", "application/json");
    broker.publish(message);

    REQUIRE(wait_until([&] {
      std::lock_guard lock(mutex);
      return received.size() == 1;
    }));
    std::lock_guard lock(mutex);
    const micro::Message& got = received[0];
    CHECK(got.topic == "greetings");
    CHECK(got.body == message.body);
    CHECK(got.body.size() == 12);
    CHECK(got.headers.size() == 3);
    std::set<std::string> keys;
    for (const auto& [key, value] : got.headers) keys.insert(key);
    CHECK(keys == std::set<std::string>{"X-Request-Id", "traceparent", "Content-Type"});
    CHECK(got.headers.get("x-request-id") == "req-42");
    CHECK(got.headers.get("TRACEPARENT") == message.headers.get("traceparent"));
  });
}

TEST_CASE("broker conformance: a handler changing its message does not affect others") {
  for_each_broker([](micro::Broker& broker) {
    std::mutex mutex;
    std::vector<std::string> bodies;
    auto record = [&](micro::Message& message) {
      std::lock_guard lock(mutex);
      bodies.push_back(message.body);
      message.body = "changed";
      message.headers.set("mutated", "yes");
    };
    auto first = broker.subscribe("shared", record);
    auto second = broker.subscribe("shared", record);
    auto third = broker.subscribe("shared", record);
    micro::Message message = message_on("shared", "original");
    broker.publish(message);
    CHECK(message.body == "original");  // publish leaves the caller's message alone
    REQUIRE(wait_until([&] {
      std::lock_guard lock(mutex);
      return bodies.size() == 3;
    }));
    std::lock_guard lock(mutex);
    for (const auto& body : bodies) CHECK(body == "original");
  });
}

TEST_CASE("broker conformance: unsubscribe stops delivery") {
  for_each_broker([](micro::Broker& broker) {
    Counter leaving, staying;
    auto leaving_subscription = broker.subscribe("news", leaving.handler());
    auto staying_subscription = broker.subscribe("news", staying.handler());
    for (int i = 0; i < 10; ++i) broker.publish(message_on("news", "a"));
    REQUIRE(wait_until([&] { return leaving.count.load() == 10 && staying.count.load() == 10; }));

    leaving_subscription->unsubscribe();
    leaving_subscription->unsubscribe();  // idempotent
    for (int i = 0; i < 10; ++i) broker.publish(message_on("news", "b"));
    CHECK(wait_until([&] { return staying.count.load() == 20; }));
    broker.disconnect();
    CHECK(leaving.count.load() == 10);
    CHECK(staying.count.load() == 20);
  });
}

TEST_CASE("broker conformance: after unsubscribe returns, the handler is not called again") {
  for_each_broker([](micro::Broker& broker) {
    std::atomic<bool> unsubscribed{false};
    std::atomic<int> late_calls{0};
    std::atomic<int> calls{0};
    auto subscription = broker.subscribe("busy", [&](micro::Message&) {
      if (unsubscribed.load()) late_calls.fetch_add(1);
      calls.fetch_add(1);
      std::this_thread::sleep_for(100us);  // keeps deliveries queued while we unsubscribe
    });
    for (int i = 0; i < 500; ++i) broker.publish(message_on("busy", "x"));
    REQUIRE(wait_until([&] { return calls.load() > 10; }));
    subscription->unsubscribe();
    unsubscribed.store(true);
    broker.disconnect();  // lets every queued delivery run (or be skipped)
    CHECK(late_calls.load() == 0);
    CHECK(calls.load() < 500);
  });
}

TEST_CASE("broker conformance: a handler may unsubscribe itself") {
  for_each_broker([](micro::Broker& broker) {
    std::atomic<int> calls{0};
    std::shared_ptr<micro::Subscription> subscription;
    std::mutex mutex;
    std::unique_lock lock(mutex);
    subscription = broker.subscribe("once", [&](micro::Message&) {
      calls.fetch_add(1);
      std::lock_guard inner(mutex);
      subscription->unsubscribe();
    });
    lock.unlock();
    for (int i = 0; i < 20; ++i) broker.publish(message_on("once", "x"));
    CHECK(wait_until([&] { return calls.load() >= 1; }));
    broker.disconnect();
    CHECK(calls.load() == 1);
  });
}

TEST_CASE("broker conformance: handler exceptions are reported and the subscription goes on") {
  for_each_broker([](micro::Broker& broker) {
    std::mutex mutex;
    std::vector<std::pair<std::string, std::string>> errors;  // (body, what)
    broker.set_error_handler([&](const micro::Message& message, std::string_view what) {
      std::lock_guard lock(mutex);
      errors.emplace_back(message.body, std::string(what));
    });
    std::atomic<int> calls{0};
    auto subscription = broker.subscribe("flaky", [&](micro::Message& message) {
      calls.fetch_add(1);
      int number = std::stoi(message.body);
      if (number % 2 == 1) throw std::runtime_error("odd message " + message.body);
    });
    for (int i = 0; i < 10; ++i) broker.publish(message_on("flaky", std::to_string(i)));
    CHECK(wait_until([&] {
      std::lock_guard lock(mutex);
      return calls.load() == 10 && errors.size() == 5;
    }));
    std::lock_guard lock(mutex);
    std::sort(errors.begin(), errors.end());
    REQUIRE(errors.size() == 5);
    CHECK(errors[0] == std::pair<std::string, std::string>{"1", "odd message 1"});
    CHECK(errors[4] == std::pair<std::string, std::string>{"9", "odd message 9"});
  });
}

TEST_CASE("broker conformance: disconnect drains messages already accepted") {
  for_each_broker([](micro::Broker& broker) {
    constexpr int messages = 200;
    std::atomic<int> handled{0};
    auto slow = broker.subscribe("slow", [&](micro::Message&) {
      std::this_thread::sleep_for(200us);  // the work a real handler would do
      handled.fetch_add(1);
    });
    auto other = broker.subscribe("slow", [&](micro::Message&) { handled.fetch_add(1); });
    for (int i = 0; i < messages; ++i) broker.publish(message_on("slow", "x"));
    broker.disconnect();
    // No waiting here: disconnect itself returns only once every accepted one is done.
    CHECK(handled.load() == 2 * messages);
  });
}

TEST_CASE("broker conformance: publish when not connected fails with 503") {
  for_each_broker([](micro::Broker& broker) {
    Counter counter;
    auto subscription = broker.subscribe("topic", counter.handler());
    broker.disconnect();
    try {
      broker.publish(message_on("topic", "late"));
      FAIL("publish after disconnect was accepted");
    } catch (const micro::Exception& error) {
      CHECK(error.error().code == 503);
      CHECK(error.error().status == "Service Unavailable");
    }
    // Connecting again brings publishing (and the existing subscription) back.
    broker.connect();
    broker.publish(message_on("topic", "again"));
    CHECK(wait_until([&] { return counter.count.load() == 1; }));
  });
}

TEST_CASE("broker conformance: each subscription sees messages in publish order") {
  for_each_broker([](micro::Broker& broker) {
    constexpr int per_publisher = 5000;
    constexpr int publishers = 2;
    std::mutex mutex;
    std::map<std::string, std::vector<int>> first_seen, second_seen;
    auto recorder = [&mutex](std::map<std::string, std::vector<int>>& seen) {
      return [&mutex, &seen](micro::Message& message) {
        std::lock_guard lock(mutex);
        seen[message.headers.get("publisher")].push_back(std::stoi(message.body));
      };
    };
    auto first = broker.subscribe("ordered", recorder(first_seen));
    auto second = broker.subscribe("ordered", recorder(second_seen));
    std::vector<std::thread> threads;
    for (int p = 0; p < publishers; ++p) {
      threads.emplace_back([&broker, p] {
        for (int i = 0; i < per_publisher; ++i) {
          micro::Message message = message_on("ordered", std::to_string(i));
          message.headers.set("publisher", std::to_string(p));
          broker.publish(message);
        }
      });
    }
    for (auto& thread : threads) thread.join();
    broker.disconnect();
    std::lock_guard lock(mutex);
    for (auto* seen : {&first_seen, &second_seen}) {
      REQUIRE(seen->size() == publishers);
      for (const auto& [publisher, sequence] : *seen) {
        CAPTURE(publisher);
        REQUIRE(sequence.size() == per_publisher);
        CHECK(std::is_sorted(sequence.begin(), sequence.end()));
        CHECK(std::adjacent_find(sequence.begin(), sequence.end()) == sequence.end());
      }
    }
  });
}

TEST_CASE("broker conformance: wildcards '*' (one token) and '>' (the rest)") {
  for_each_broker([](micro::Broker& broker) {
    if (!selected->wildcards) {
      // A broker whose system has no wildcards refuses them rather than match literally.
      for (const char* pattern : {"orders.*", "orders.>"}) {
        CAPTURE(pattern);
        try {
          broker.subscribe(pattern, [](micro::Message&) {});
          FAIL("a wildcard subscription was accepted");
        } catch (const micro::Exception& error) {
          CHECK(error.error().code == 400);
        }
      }
      return;
    }
    Counter one_token, rest, exact;
    auto a = broker.subscribe("orders.*", one_token.handler());
    auto b = broker.subscribe("orders.>", rest.handler());
    auto c = broker.subscribe("orders.created", exact.handler());
    broker.publish(message_on("orders.created", "1"));     // all three
    broker.publish(message_on("orders.eu.created", "2"));  // only '>'
    broker.publish(message_on("orders", "3"));             // none: both need one more token
    broker.publish(message_on("payments.created", "4"));   // none
    broker.disconnect();
    CHECK(one_token.count.load() == 1);
    CHECK(rest.count.load() == 2);
    CHECK(exact.count.load() == 1);
  });
}

TEST_CASE("broker conformance: bad topics are refused with 400") {
  for_each_broker([](micro::Broker& broker) {
    auto refused = [&](const std::function<void()>& action) {
      try {
        action();
      } catch (const micro::Exception& error) {
        return error.error().code == 400;
      }
      return false;
    };
    auto ignore = [](micro::Message&) {
    };
    CHECK(refused([&] { broker.subscribe("", ignore); }));
    CHECK(refused([&] { broker.subscribe("a..b", ignore); }));
    CHECK(refused([&] { broker.subscribe("a.>.b", ignore); }));
    CHECK(refused([&] { broker.publish(message_on("", "x")); }));
    CHECK(refused([&] { broker.publish(message_on("orders.*", "x")); }));
  });
}

// ---- acknowledgement, reconnection, trace context ----

TEST_CASE("broker conformance: at_least_once redelivers what a handler threw on, or is refused") {
  for_each_broker([](micro::Broker& broker) {
    micro::SubscribeOptions acked;
    acked.delivery = micro::Delivery::at_least_once;
    if (!selected->at_least_once) {
      for (const std::string queue : {"", "acked-workers"}) {
        CAPTURE(queue);
        acked.queue = queue;
        try {
          broker.subscribe(
              "acked", [](micro::Message&) {}, acked);
          FAIL("at_least_once was accepted by a broker that does not offer it");
        } catch (const micro::Exception& error) {
          CHECK(error.error().code == 400);
          CHECK(error.error().detail ==
                "broker " + selected->plugin +
                    " cannot deliver at_least_once (it has no acknowledgement); it offers "
                    "at_most_once");
        }
      }
      return;
    }
    // Every odd message fails on its first delivery: it is reported, then delivered again.
    // A plain subscriber, and a queue group of two (where the retry may go to either member).
    constexpr int messages = 40;
    std::mutex mutex;
    std::map<std::string, std::map<std::string, int>> attempts;  // subscriber → body → calls
    std::map<std::string, std::set<std::string>> handled;        // subscriber → bodies
    std::atomic<int> reported{0};
    broker.set_error_handler([&](const micro::Message& message, std::string_view what) {
      CHECK(what == "first delivery of " + message.body);
      reported.fetch_add(1);
    });
    auto handler_of = [&](std::string subscriber) {
      return [&, subscriber](micro::Message& message) {
        std::lock_guard lock(mutex);
        int attempt = ++attempts[subscriber][message.body];
        if (attempt == 1 && std::stoi(message.body) % 2 == 1)
          throw std::runtime_error("first delivery of " + message.body);
        handled[subscriber].insert(message.body);
      };
    };
    auto plain = broker.subscribe("acked", handler_of("plain"), acked);
    acked.queue = "acked-workers";
    auto member_one = broker.subscribe("acked", handler_of("group"), acked);
    auto member_two = broker.subscribe("acked", handler_of("group"), acked);
    for (int i = 0; i < messages; ++i) broker.publish(message_on("acked", std::to_string(i)));
    CHECK(wait_until([&] {
      std::lock_guard lock(mutex);
      return handled["plain"].size() == messages && handled["group"].size() == messages &&
             reported.load() == messages;  // half of them, twice (plain and group)
    }));
    broker.disconnect();
    std::lock_guard lock(mutex);
    for (const std::string subscriber : {"plain", "group"}) {
      CAPTURE(subscriber);
      CHECK(handled[subscriber].size() == messages);
      for (int i = 0; i < messages; ++i) {
        CAPTURE(i);
        // Redelivered once after the throw; delivered once otherwise (no failure, no duplicate).
        CHECK(attempts[subscriber][std::to_string(i)] == (i % 2 == 1 ? 2 : 1));
      }
    }
    CHECK(reported.load() == messages);
  });
}

TEST_CASE("broker conformance: a server restart: subscriptions come back, none lost unseen") {
  if (!server()) {
    MESSAGE(selected->name << " has no server to restart");
    return;
  }
  CAPTURE(selected->name);
  broker_test::StderrCapture log;  // the broker's "lost the server" line is awaited
  BrokerFixture fixture(selected->reconnect_options);
  micro::Broker& broker = *fixture.broker;

  std::mutex mutex;
  std::vector<int> delivered;
  auto subscription = broker.subscribe("stream", [&](micro::Message& message) {
    std::lock_guard lock(mutex);
    delivered.push_back(std::stoi(message.body));
  });
  auto delivered_count = [&] {
    std::lock_guard lock(mutex);
    return delivered.size();
  };

  std::atomic<int> published{0}, accepted{0}, refused{0}, during_outage{0};
  std::atomic<bool> pause{false}, paused{false}, finish{false}, outage{false};
  std::atomic<int> first_after_restart{-1};
  std::atomic<bool> restarted{false};
  std::thread publisher([&] {
    while (!finish.load()) {
      if (pause.load()) {
        paused.store(true);
        while (pause.load()) std::this_thread::sleep_for(100us);
        paused.store(false);
      }
      int id = published.load();
      if (restarted.load() && first_after_restart.load() < 0) first_after_restart.store(id);
      if (outage.load()) during_outage.fetch_add(1);
      try {
        broker.publish(message_on("stream", std::to_string(id)));
        accepted.fetch_add(1);
      } catch (const micro::Exception& error) {
        CHECK(error.error().code == 503);
        refused.fetch_add(1);
      }
      published.fetch_add(1);
      std::this_thread::sleep_for(50us);  // a steady stream, not a burst
    }
  });
  struct JoinOnExit {
    std::atomic<bool>& finish;
    std::atomic<bool>& pause;
    std::thread& thread;
    ~JoinOnExit() {
      pause.store(false);
      finish.store(true);
      if (thread.joinable()) thread.join();
    }
  } join_on_exit{finish, pause, publisher};

  REQUIRE(wait_until([&] { return delivered_count() >= 300; }, 30s));
  // Messages inside a socket when the server goes cannot be accounted for by an at-most-once
  // broker, so the stop happens with nothing in flight; everything after it is a stream again.
  pause.store(true);
  REQUIRE(wait_until([&] { return paused.load(); }));
  REQUIRE(wait_until([&] { return delivered_count() == static_cast<std::size_t>(accepted.load()); },
                     30s));
  server()->stop();
  REQUIRE(wait_until([&] { return log.occurrences(selected->lost_server_log) >= 1; }, 30s));
  outage.store(true);
  pause.store(false);

  // The outage: publishes are held (up to the broker's buffer) or refused with 503.
  REQUIRE(wait_until([&] { return during_outage.load() >= 300; }, 30s));
  server()->start();
  outage.store(false);
  restarted.store(true);
  // The subscription came back by itself: messages published after the restart arrive.
  REQUIRE(wait_until(
      [&] {
        int first = first_after_restart.load();
        std::lock_guard lock(mutex);
        return first >= 0 && !delivered.empty() && delivered.back() > first + 200;
      },
      60s));
  finish.store(true);
  publisher.join();
  broker.disconnect();  // drains the last ones

  std::lock_guard lock(mutex);
  MESSAGE(selected->name << ": published " << published.load() << ", delivered " << delivered.size()
                         << ", refused " << refused.load());
  CHECK(static_cast<int>(delivered.size()) + refused.load() == published.load());
  CHECK(static_cast<int>(delivered.size()) == accepted.load());
  CHECK(std::is_sorted(delivered.begin(), delivered.end()));  // in order, none twice
  CHECK(std::adjacent_find(delivered.begin(), delivered.end()) == delivered.end());
}

TEST_CASE("broker conformance: trace context crosses the broker; PRODUCER and CONSUMER spans") {
  for_each_broker([](micro::Broker& broker) {
    auto tracer = std::make_shared<broker_test::RecordingTracer>();
    micro::trace::set_tracer(tracer);
    struct Uninstall {
      ~Uninstall() { micro::trace::set_tracer(nullptr); }
    } uninstall;
    // The trace wrappers as a service built with broker=<plugin> applies them.
    micro::WrapperScope scope{"conformance", "1.0.0", "", selected->plugin};
    micro::WrapperSet trace = micro::trace::sdk::make_trace_wrappers(scope);
    micro::PublishFunction publish =
        trace.publish([&](micro::Context&, micro::Message& message) { broker.publish(message); });
    std::mutex mutex;
    std::vector<micro::Message> received;
    micro::SubscriberFunction consume =
        trace.subscriber([&](micro::Context&, micro::Message& message) {
          std::lock_guard lock(mutex);
          received.push_back(message);
        });
    auto subscription = broker.subscribe("traced.orders", [&](micro::Message& message) {
      micro::Context context;
      consume(context, message);
    });

    micro::Context context;
    micro::Message message = message_on("traced.orders", "payload");
    publish(context, message);
    REQUIRE(wait_until([&] { return tracer->finished().size() == 2; }));
    std::vector<broker_test::RecordedSpan> spans = tracer->finished();
    auto find = [&](micro::trace::SpanKind kind) {
      for (const auto& span : spans)
        if (span.kind == kind) return span;
      FAIL("no span of that kind");
      return broker_test::RecordedSpan{};
    };
    broker_test::RecordedSpan producer = find(micro::trace::SpanKind::producer);
    broker_test::RecordedSpan consumer = find(micro::trace::SpanKind::consumer);
    CHECK(producer.name == "traced.orders publish");
    CHECK(consumer.name == "traced.orders process");
    for (const auto* span : {&producer, &consumer}) {
      CHECK(span->text("messaging.system") == selected->messaging_system);
      CHECK(span->text("messaging.destination.name") == "traced.orders");
    }
    // The consumer continues the producer's trace, as its child and linked to it.
    CHECK(consumer.context.trace_id == producer.context.trace_id);
    CHECK(consumer.parent.span_id == producer.context.span_id);
    CHECK(consumer.parent.remote);
    REQUIRE(consumer.links.size() == 1);
    CHECK(consumer.links[0].context.span_id == producer.context.span_id);
    std::lock_guard lock(mutex);
    REQUIRE(received.size() == 1);
    CHECK(received[0].headers.get("traceparent") ==
          micro::trace::format_traceparent(producer.context));
    CHECK(received[0].body == "payload");
  });
}

// ---- memory-specific (run with --broker=memory only) ----

namespace {
std::string refusal_detail(const std::function<void()>& action) {
  try {
    action();
  } catch (const micro::Exception& error) {
    return error.error().detail;
  }
  return "(accepted)";
}
}  // namespace

TEST_CASE("broker conformance: topic errors say what is wrong, with the same texts") {
  for_each_broker([](micro::Broker& broker) {
    auto ignore = [](micro::Message&) {
    };
    CHECK(refusal_detail([&] { broker.subscribe("", ignore); }) == "topic is empty");
    CHECK(refusal_detail([&] { broker.subscribe("a..b", ignore); }) ==
          "topic 'a..b' has an empty token");
    CHECK(refusal_detail([&] { broker.subscribe("orders.", ignore); }) ==
          "topic 'orders.' has an empty token");
    CHECK(refusal_detail([&] { broker.subscribe("a.>.b", ignore); }) ==
          "topic 'a.>.b': '>' must be the last token");
    CHECK(refusal_detail([&] { broker.subscribe("orders new", ignore); }) ==
          "topic 'orders new' contains whitespace");
    CHECK(refusal_detail([&] { broker.subscribe("a", micro::MessageHandler{}); }) ==
          "handler is empty");
    CHECK(refusal_detail([&] { broker.publish(message_on("orders.*", "x")); }) ==
          "cannot publish to 'orders.*': it contains a wildcard");
    CHECK(refusal_detail([&] { broker.publish(message_on("orders\tnew", "x")); }) ==
          "topic 'orders\tnew' contains whitespace");
    broker.disconnect();
    CHECK(refusal_detail([&] { broker.publish(message_on("orders", "x")); }) ==
          "broker is not connected");
  });
}

TEST_CASE("memory broker: a queue group rotates exactly over its members") {
  BrokerFixture fixture;
  micro::Broker& broker = *fixture.broker;
  std::array<Counter, 3> members;
  std::vector<std::shared_ptr<micro::Subscription>> subscriptions;
  for (auto& member : members)
    subscriptions.push_back(
        broker.subscribe("jobs", member.handler(), micro::SubscribeOptions{"workers"}));
  for (int i = 0; i < 300; ++i) broker.publish(message_on("jobs", "x"));
  broker.disconnect();
  for (auto& member : members) CHECK(member.count.load() == 100);
}

TEST_CASE("memory broker: the default error handler keeps the subscription going") {
  BrokerFixture fixture;
  micro::Broker& broker = *fixture.broker;
  std::atomic<int> calls{0};
  auto subscription = broker.subscribe("throws", [&](micro::Message&) {
    calls.fetch_add(1);
    throw 42;  // not even a std::exception
  });
  broker.publish(message_on("throws", "1"));
  broker.publish(message_on("throws", "2"));
  broker.disconnect();
  CHECK(calls.load() == 2);
}

TEST_CASE("memory broker: works without a runtime executor") {
  auto broker = micro::PluginLoader::instance().create<micro::Broker>(
      "memory", "", {}, boost::asio::any_io_executor{});
  broker->connect();
  Counter counter;
  auto subscription = broker->subscribe("solo", counter.handler());
  for (int i = 0; i < 100; ++i) broker->publish(message_on("solo", "x"));
  broker->disconnect();
  CHECK(counter.count.load() == 100);
}

TEST_CASE("memory broker: reused delivery slots never leak an earlier message's content") {
  // Queue slots are written over by later messages: vary headers and body sizes (some over
  // the per-slot storage kept, 2 KiB), let the handler change and move what it got, and check
  // every delivery is exactly what was published. Two bursts, so the second starts after the
  // subscription went idle and gave back what the first left.
  BrokerFixture fixture;
  micro::Broker& broker = *fixture.broker;
  auto expected_of = [](int index) {
    micro::Message message;
    message.topic = "slots";
    if (index % 3 == 0) message.headers.set("Index", std::to_string(index));
    if (index % 7 == 0) message.headers.set("Extra", std::string(index % 50, 'h'));
    std::size_t length = index % 11 == 0 ? 5000 : static_cast<std::size_t>(index % 300);
    message.body = std::string(length, static_cast<char>('a' + index % 26));
    return message;
  };
  auto describe = [](const micro::Message& message) {
    std::string text = message.topic + "|";
    for (const auto& [key, value] : message.headers) text += key + "=" + value + ";";
    return text + "|" + message.body;
  };
  std::mutex mutex;
  std::vector<std::string> received;
  auto subscription = broker.subscribe("slots", [&](micro::Message& message) {
    std::string text = describe(message);
    {
      std::lock_guard lock(mutex);
      received.push_back(std::move(text));
    }
    // Change and take what was delivered, as a handler may.
    message.headers.set("Changed", "by handler");
    std::string taken = std::move(message.body);
    message.topic += ".changed";
  });
  constexpr int per_burst = 6000;
  for (int burst = 0; burst < 2; ++burst) {
    for (int index = burst * per_burst; index < (burst + 1) * per_burst; ++index)
      broker.publish(expected_of(index));
    REQUIRE(wait_until([&] {
      std::lock_guard lock(mutex);
      return received.size() == static_cast<std::size_t>((burst + 1) * per_burst);
    }));
  }
  std::lock_guard lock(mutex);
  int mismatches = 0;
  for (int index = 0; index < 2 * per_burst; ++index) {
    if (received[index] == describe(expected_of(index))) continue;
    if (++mismatches <= 3) CHECK(received[index] == describe(expected_of(index)));
  }
  CHECK(mismatches == 0);
}

// `broker_test [--broker=<name>] [doctest options]`: runs the conformance cases on that broker
// (see brokers_under_test.hpp); the memory-specific cases run only for memory.
int main(int argc, char** argv) {
  std::string name = "memory";
  std::vector<char*> arguments;
  for (int i = 0; i < argc; ++i) {
    constexpr std::string_view flag = "--broker=";
    if (i > 0 && std::string_view(argv[i]).starts_with(flag))
      name = std::string(argv[i] + flag.size());
    else
      arguments.push_back(argv[i]);
  }
  try {
    selected = &broker_test::broker_under_test(name);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "broker_test: %s\n", error.what());
    return 2;
  }
  doctest::Context context;
  context.applyCommandLine(static_cast<int>(arguments.size()), arguments.data());
  if (selected->name != "memory") context.addFilter("test-case-exclude", "memory broker:*");
  return context.run();
}
