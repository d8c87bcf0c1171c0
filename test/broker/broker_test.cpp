// Broker conformance: every broker plugin in `brokers_under_test` must pass these cases
// (memory, and nats against a real nats-server when its plugin is built), topic syntax
// errors included. Then memory-specific cases: exact round robin, no executor.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
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

#include "broker/broker_test_support.hpp"
#include "broker/nats/nats_server.hpp"

using namespace std::chrono_literals;

using broker_test::Counter;
using broker_test::message_on;
using broker_test::wait_until;

namespace {

// A broker plugin under test and how to reach it. A broker that needs a server (NATS)
// adds an entry here whose address points at a real server the test starts.
struct BrokerUnderTest {
  std::string name;
  std::string address;
  std::vector<std::pair<std::string, std::string>> options;
};

const std::vector<BrokerUnderTest> brokers_under_test =
    micro_test::with_nats_broker<BrokerUnderTest>({{"memory", "", {}}});

struct BrokerFixture {
  explicit BrokerFixture(const BrokerUnderTest& under_test) {
    broker = micro::PluginLoader::instance().create<micro::Broker>(
        under_test.name, under_test.address, under_test.options, runtime.executor());
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

// Runs `body` once per broker plugin, each with a fresh connected broker.
void for_each_broker(const std::function<void(micro::Broker&)>& body) {
  for (const BrokerUnderTest& under_test : brokers_under_test) {
    CAPTURE(under_test.name);
    BrokerFixture fixture(under_test);
    body(*fixture.broker);
  }
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

// ---- memory-specific ----

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
  BrokerFixture fixture({"memory", "", {}});
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
  BrokerFixture fixture({"memory", "", {}});
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
  BrokerFixture fixture({"memory", "", {}});
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
