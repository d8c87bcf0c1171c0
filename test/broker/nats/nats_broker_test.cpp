// NATS broker integration tests against real nats-server processes: delivery counts (plain
// vs queue), headers, the Go-Micro envelope (checked on the wire with the bare NATS C client
// too), authentication, bad options, a server restarted during a stream of publishes, and a
// three-server cluster losing a member. The plugin is used only through the loader.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nats/nats.h>
#include <nlohmann/json.hpp>

#include <micro/broker.hpp>
#include <micro/error.hpp>
#include <micro/plugin_loader.hpp>

#include "broker/broker_test_support.hpp"
#include "broker/nats/nats_server.hpp"

using namespace std::chrono_literals;
using Options = std::vector<std::pair<std::string, std::string>>;

using broker_test::Counter;
using broker_test::message_on;
using broker_test::StderrCapture;
using broker_test::wait_until;

namespace {

std::shared_ptr<micro::Broker> make_broker(const std::string& address,
                                           const Options& options = {}) {
  auto broker = micro::PluginLoader::instance().create<micro::Broker>(
      "nats", address, options, boost::asio::any_io_executor{});
  return broker;
}

std::shared_ptr<micro::Broker> connected_broker(const std::string& address,
                                                const Options& options = {}) {
  auto broker = make_broker(address, options);
  broker->connect();
  return broker;
}

// Collects delivered messages, thread-safely.
struct Inbox {
  std::mutex mutex;
  std::vector<micro::Message> messages;
  micro::MessageHandler handler() {
    return [this](micro::Message& message) {
      std::lock_guard lock(mutex);
      messages.push_back(message);
    };
  }
  std::size_t size() {
    std::lock_guard lock(mutex);
    return messages.size();
  }
  micro::Message at(std::size_t index) {
    std::lock_guard lock(mutex);
    return messages.at(index);
  }
};

// The error a factory or call raised: code and detail, or code 0 when nothing was thrown.
std::pair<int, std::string> failure_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const micro::Exception& error) {
    return {error.error().code, error.error().detail};
  }
  return {0, "(accepted)"};
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

const Options fast_reconnect = {{"reconnect_wait", "50ms"}, {"max_reconnects", "-1"}};

}  // namespace

TEST_CASE("nats broker: malformed addresses and options are refused with the reason") {
  auto detail_of = [](const std::string& address, const Options& options = {}) {
    auto [code, detail] = failure_of([&] { make_broker(address, options); });
    CHECK(code == 400);
    return detail;
  };
  CHECK(ends_with(detail_of("127.0.0.1:4222,,127.0.0.1:4223"),
                  "address '127.0.0.1:4222,,127.0.0.1:4223': entry 2 is empty"));
  CHECK(ends_with(detail_of("127.0.0.1:x42"),
                  "address entry '127.0.0.1:x42': port 'x42' is not a number from 1 to 65535"));
  CHECK(ends_with(detail_of("127.0.0.1:70000"),
                  "address entry '127.0.0.1:70000': port '70000' is not a number from 1 to 65535"));
  CHECK(ends_with(detail_of("127.0.0.1:"),
                  "address entry '127.0.0.1:': port '' is not a number from 1 to 65535"));
  CHECK(ends_with(detail_of(":4222"), "address entry ':4222': host is empty"));
  CHECK(ends_with(detail_of("", {{"encoding", "xml"}}),
                  "option encoding: expected native or gomicro, got 'xml'"));
  CHECK(ends_with(detail_of("", {{"password", "secret"}}), "option password needs option user"));
  CHECK(ends_with(detail_of("", {{"user", "a"}, {"token", "t"}}),
                  "options token and user cannot be used together"));
  CHECK(ends_with(detail_of("", {{"tls_cert", "/c.pem"}}),
                  "options tls_cert and tls_key go together"));
  // Ranges are the descriptor's, checked by the loader with one message for every plugin.
  CHECK(ends_with(detail_of("", {{"max_reconnects", "-2"}}),
                  "broker plugin 'nats': option 'max_reconnects' is -2, below its minimum -1; "
                  "expected a whole number from -1 to 2147483647"));
  CHECK(ends_with(detail_of("", {{"reconnect_buffer", "-1"}}),
                  "option 'reconnect_buffer' is -1, below its minimum 0; expected a whole number "
                  "from 0 to 2147483647"));
  CHECK(ends_with(detail_of("", {{"drain_timeout", "0s"}}),
                  "option 'drain_timeout' is 0s, below its minimum 1ms; expected a duration of "
                  "at least 1ms"));
  // Well-formed variants are accepted (nothing connects until connect()).
  CHECK(failure_of([] { make_broker("nats://a:1, tls://b ,[::1]:4223"); }).first == 0);
}

TEST_CASE("nats broker: connecting where no server listens fails with 503 naming the URL") {
  int port = micro_test::free_loopback_ports(1)[0];
  auto broker = make_broker("127.0.0.1:" + std::to_string(port), {{"connect_timeout", "500ms"}});
  auto [code, detail] = failure_of([&] { broker->connect(); });
  CHECK(code == 503);
  CHECK(detail.find("cannot connect to nats://127.0.0.1:" + std::to_string(port)) == 0);
  // Not connected: publish says so.
  auto refused = failure_of([&] { broker->publish(message_on("a", "b")); });
  CHECK(refused == std::pair<int, std::string>{503, "broker is not connected"});
}

TEST_CASE("nats broker: broadcast vs queue delivery across separate connections") {
  micro_test::NatsServer server;
  // Receivers first: they must outlive the brokers, whose delivery threads call them until
  // the brokers are gone.
  Counter plain_first, plain_second;
  std::array<Counter, 4> workers;
  // Three connections, as three processes would have.
  auto first = connected_broker(server.address());
  auto second = connected_broker(server.address());
  auto publisher = connected_broker(server.address());
  std::vector<std::shared_ptr<micro::Subscription>> subscriptions;
  subscriptions.push_back(first->subscribe("orders.created", plain_first.handler()));
  subscriptions.push_back(second->subscribe("orders.created", plain_second.handler()));
  for (int i = 0; i < 4; ++i)
    subscriptions.push_back((i % 2 ? first : second)
                                ->subscribe("orders.created", workers[i].handler(),
                                            micro::SubscribeOptions{"workers"}));

  constexpr int messages = 2000;
  for (int i = 0; i < messages; ++i) publisher->publish(message_on("orders.created", "x"));
  auto workers_total = [&] {
    int total = 0;
    for (auto& worker : workers) total += worker.count.load();
    return total;
  };
  CHECK(wait_until([&] {
    return plain_first.count.load() == messages && plain_second.count.load() == messages &&
           workers_total() == messages;
  }));
  publisher->disconnect();
  first->disconnect();
  second->disconnect();
  CHECK(plain_first.count.load() == messages);
  CHECK(plain_second.count.load() == messages);
  CHECK(workers_total() == messages);  // each exactly once within the group
  for (auto& worker : workers) CHECK(worker.count.load() > 0);
}

TEST_CASE("nats broker: headers and binary body round-trip between connections, case kept") {
  micro_test::NatsServer server;
  Inbox inbox;  // outlives the brokers, whose delivery threads write to it
  auto receiver = connected_broker(server.address());
  auto sender = connected_broker(server.address());
  auto subscription = receiver->subscribe("greetings.*", inbox.handler());

  micro::Message message = message_on("greetings.eu", std::string("hi\0there\xff\r\n", 12));
  message.headers.set("X-Request-Id", "req-42");
  message.headers.set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  message.headers.set("Content-Type", "application/json");
  message.headers.set("lower-case-key", "value with spaces");
  sender->publish(message);
  REQUIRE(wait_until([&] { return inbox.size() == 1; }));
  micro::Message got = inbox.at(0);
  CHECK(got.topic == "greetings.eu");
  CHECK(got.body == message.body);
  std::set<std::string> keys;
  for (const auto& [key, value] : got.headers) keys.insert(key);
  CHECK(keys ==
        std::set<std::string>{"X-Request-Id", "traceparent", "Content-Type", "lower-case-key"});
  CHECK(got.headers.get("traceparent") == message.headers.get("traceparent"));
  CHECK(got.headers.get("lower-case-key") == "value with spaces");

  // A native message without headers whose body is JSON stays as it is.
  sender->publish(message_on("greetings.json", R"({"Header":{"a":"b"},"Body":"aGk=","x":1})"));
  REQUIRE(wait_until([&] { return inbox.size() == 2; }));
  CHECK(inbox.at(1).body == R"({"Header":{"a":"b"},"Body":"aGk=","x":1})");
  CHECK(inbox.at(1).headers.empty());
}

// A bare NATS C connection, to see (and produce) exactly what a Go-Micro peer would.
struct BareConnection {
  explicit BareConnection(const std::string& address) {
    std::string url = "nats://" + address;
    REQUIRE(natsConnection_ConnectTo(&connection, url.c_str()) == NATS_OK);
  }
  ~BareConnection() { natsConnection_Destroy(connection); }
  natsConnection* connection = nullptr;
};

TEST_CASE("nats broker: Go-Micro envelope on the wire and round-trip in both directions") {
  micro_test::NatsServer server;
  // The inboxes outlive the brokers: a native publish also reaches the native subscriber,
  // possibly after the test stopped waiting, on a delivery thread that runs until the
  // brokers are gone (a use-after-free ASan found here once corrupted later tests' heap).
  Inbox native_inbox, gomicro_inbox;
  auto gomicro = connected_broker(server.address(), {{"encoding", "gomicro"}});
  auto native = connected_broker(server.address());
  BareConnection bare(server.address());
  natsSubscription* wire = nullptr;
  REQUIRE(natsConnection_SubscribeSync(&wire, bare.connection, "envelope.test") == NATS_OK);
  REQUIRE(natsConnection_Flush(bare.connection) == NATS_OK);
  auto native_subscription = native->subscribe("envelope.test", native_inbox.handler());
  auto gomicro_subscription = gomicro->subscribe("envelope.test", gomicro_inbox.handler());

  SUBCASE("gomicro publisher: a JSON envelope, decoded by both kinds of subscriber") {
    micro::Message message = message_on("envelope.test", std::string("bin\0ary", 7));
    message.headers.set("X-Tenant", "acme");
    gomicro->publish(message);

    natsMsg* raw = nullptr;
    REQUIRE(natsSubscription_NextMsg(&raw, wire, 5000) == NATS_OK);
    const char** keys = nullptr;
    int key_count = 0;
    CHECK(natsMsgHeader_Keys(raw, &keys, &key_count) == NATS_NOT_FOUND);  // no NATS headers
    auto envelope = nlohmann::json::parse(
        std::string(natsMsg_GetData(raw), static_cast<std::size_t>(natsMsg_GetDataLength(raw))));
    natsMsg_Destroy(raw);
    CHECK(envelope["Body"] == "YmluAGFyeQ==");  // base64 of "bin\0ary"
    CHECK(envelope["Header"]["X-Tenant"] == "acme");
    CHECK(envelope["Header"]["Micro-Topic"] == "envelope.test");
    CHECK(envelope["Header"]["Content-Type"] == "application/octet-stream");
    std::string id = envelope["Header"]["Micro-Id"];
    CHECK(id.size() == 36);
    CHECK(id[14] == '4');

    REQUIRE(wait_until([&] { return native_inbox.size() == 1 && gomicro_inbox.size() == 1; }));
    for (Inbox* inbox : {&native_inbox, &gomicro_inbox}) {
      micro::Message got = inbox->at(0);
      CHECK(got.body == message.body);
      CHECK(got.headers.get("X-Tenant") == "acme");
      CHECK(got.headers.get("Micro-Topic") == "envelope.test");
      CHECK(got.headers.get("Micro-Id") == id);
      CHECK(got.headers.size() == 4);
    }
  }

  SUBCASE("a Go-Micro service's envelope (bare client) reaches both; native reaches gomicro") {
    std::string envelope =
        R"({"Header":{"Micro-Topic":"envelope.test","Micro-Id":"1b4e28ba-2fa1-11d2-883f-0016d3cca427","Content-Type":"application/json"},"Body":"eyJuYW1lIjoiZ28ifQ=="})";
    REQUIRE(natsConnection_Publish(bare.connection, "envelope.test", envelope.data(),
                                   static_cast<int>(envelope.size())) == NATS_OK);
    REQUIRE(wait_until([&] { return native_inbox.size() == 1 && gomicro_inbox.size() == 1; }));
    for (Inbox* inbox : {&native_inbox, &gomicro_inbox}) {
      micro::Message got = inbox->at(0);
      CHECK(got.body == R"({"name":"go"})");
      CHECK(got.headers.get("Content-Type") == "application/json");
      CHECK(got.headers.get("Micro-Id") == "1b4e28ba-2fa1-11d2-883f-0016d3cca427");
    }

    micro::Message message = message_on("envelope.test", "plain");
    message.headers.set("Trace-Key", "t1");
    native->publish(message);
    REQUIRE(wait_until([&] { return gomicro_inbox.size() == 2; }));
    CHECK(gomicro_inbox.at(1).body == "plain");
    CHECK(gomicro_inbox.at(1).headers == message.headers);
  }
  natsSubscription_Destroy(wire);
}

TEST_CASE("nats broker: user/password and token authentication") {
  SUBCASE("user and password") {
    micro_test::NatsServer server({"--user", "alice", "--pass", "s3cret"});
    auto good = make_broker(server.address(), {{"user", "alice"}, {"password", "s3cret"}});
    CHECK_NOTHROW(good->connect());
    auto bad = make_broker(server.address(), {{"user", "alice"}, {"password", "wrong"}});
    auto [code, detail] = failure_of([&] { bad->connect(); });
    CHECK(code == 401);
    CHECK(detail.find("cannot connect to nats://" + server.address()) == 0);
    good->disconnect();
  }
  SUBCASE("token") {
    micro_test::NatsServer server({"--auth", "tok123"});
    auto good = make_broker(server.address(), {{"token", "tok123"}});
    CHECK_NOTHROW(good->connect());
    auto none = make_broker(server.address());
    CHECK(failure_of([&] { none->connect(); }).first == 401);
    good->disconnect();
  }
}

TEST_CASE("nats broker: server stopped and restarted during a stream: counts add up") {
  micro_test::NatsServer server;
  StderrCapture log;
  // A small reconnect buffer, so the outage overflows it and some publishes are refused.
  Options options = fast_reconnect;
  options.emplace_back("reconnect_buffer", "4096");
  auto broker = connected_broker(server.address(), options);

  std::mutex mutex;
  std::vector<int> delivered;
  auto subscription = broker->subscribe("stream", [&](micro::Message& message) {
    std::lock_guard lock(mutex);
    delivered.push_back(std::stoi(message.body));
  });
  auto delivered_count = [&] {
    std::lock_guard lock(mutex);
    return delivered.size();
  };

  std::atomic<int> published{0}, accepted{0}, refused{0};
  std::atomic<bool> pause{false}, paused{false}, finish{false};
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
      try {
        broker->publish(message_on("stream", std::to_string(id)));
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

  REQUIRE(wait_until([&] { return delivered_count() >= 500; }));
  // Messages already in a socket when a server dies cannot be accounted for by core NATS, so
  // the stop happens with nothing in flight; everything after it is a stream again.
  pause.store(true);
  REQUIRE(wait_until([&] { return paused.load(); }));
  REQUIRE(
      wait_until([&] { return delivered_count() == static_cast<std::size_t>(accepted.load()); }));
  server.stop();
  REQUIRE(wait_until([&] { return log.occurrences("disconnected from") == 1; }));
  pause.store(false);

  // The outage: publishes are buffered until the buffer is full, then refused.
  REQUIRE(wait_until([&] { return refused.load() >= 100; }));
  server.start();
  restarted.store(true);
  REQUIRE(wait_until([&] { return log.occurrences("reconnected to") == 1; }));
  // The subscription resumed by itself: messages published after the restart arrive.
  REQUIRE(wait_until([&] {
    int first = first_after_restart.load();
    std::lock_guard lock(mutex);
    return first >= 0 && !delivered.empty() && delivered.back() > first + 200;
  }));
  finish.store(true);
  publisher.join();
  broker->disconnect();  // drains the last ones

  std::lock_guard lock(mutex);
  MESSAGE("published " << published.load() << ", delivered " << delivered.size() << ", refused "
                       << refused.load());
  CHECK(static_cast<int>(delivered.size()) + refused.load() == published.load());
  CHECK(static_cast<int>(delivered.size()) == accepted.load());
  CHECK(std::is_sorted(delivered.begin(), delivered.end()));  // in order, none twice
  CHECK(std::adjacent_find(delivered.begin(), delivered.end()) == delivered.end());
  CHECK(refused.load() >= 100);
}

TEST_CASE("nats broker: 3-server cluster, the server in use is killed, clients move on") {
  micro_test::NatsCluster cluster;
  StderrCapture log;
  // Servers tried in the order given, so both clients start on server 0: the one killed.
  Options options = fast_reconnect;
  options.emplace_back("randomize", "false");
  auto subscriber = connected_broker(cluster.addresses(), options);
  auto publisher = connected_broker(cluster.addresses(), options);
  std::mutex mutex;
  std::set<std::string> received;
  auto subscription = subscriber->subscribe("cluster.>", [&](micro::Message& message) {
    std::lock_guard lock(mutex);
    received.insert(message.body);
  });
  auto has = [&](const std::string& body) {
    std::lock_guard lock(mutex);
    return received.count(body) > 0;
  };
  // Delivers `count` messages tagged `tag`; probes first, since interest may take a moment to
  // travel between servers after a move.
  auto deliver_batch = [&](const std::string& tag, int count) {
    int probe = 0;
    REQUIRE(wait_until([&] {
      std::string body = tag + "-probe-" + std::to_string(probe++);
      publisher->publish(message_on("cluster.probe", body));
      return wait_until([&] { return has(body); }, 20ms);
    }));
    for (int i = 0; i < count; ++i)
      publisher->publish(message_on("cluster.data", tag + "-" + std::to_string(i)));
    CHECK(wait_until([&] {
      for (int i = 0; i < count; ++i)
        if (!has(tag + "-" + std::to_string(i))) return false;
      return true;
    }));
  };

  deliver_batch("before", 100);
  cluster.server(0).kill();
  REQUIRE(wait_until([&] { return log.occurrences("reconnected to") == 2; }));
  std::string text = log.text();
  CHECK(text.find("reconnected to nats://" + cluster.server(0).address()) == std::string::npos);
  deliver_batch("after", 100);
  publisher->disconnect();
  subscriber->disconnect();
}

TEST_CASE("nats broker: reconnect_buffer=0 refuses publishes while the server is away") {
  micro_test::NatsServer server;
  StderrCapture log;
  Options options = fast_reconnect;
  options.emplace_back("reconnect_buffer", "0");
  auto broker = connected_broker(server.address(), options);
  server.stop();
  REQUIRE(wait_until([&] { return log.occurrences("disconnected from") == 1; }));
  auto [code, detail] = failure_of([&] { broker->publish(message_on("t", "x")); });
  CHECK(code == 503);
  CHECK(detail == "not connected to a NATS server and reconnect_buffer is 0; message 't' not sent");
  server.start();
  REQUIRE(wait_until([&] { return log.occurrences("reconnected to") == 1; }));
  CHECK(failure_of([&] { broker->publish(message_on("t", "x")); }).first == 0);
  broker->disconnect();
}

TEST_CASE("nats broker: after max_reconnects the connection closes and publish says 503") {
  micro_test::NatsServer server;
  StderrCapture log;
  auto broker =
      connected_broker(server.address(), {{"reconnect_wait", "20ms"}, {"max_reconnects", "2"}});
  server.stop();
  REQUIRE(wait_until([&] { return log.occurrences("connection closed") == 1; }));
  auto [code, detail] = failure_of([&] { broker->publish(message_on("t", "x")); });
  CHECK(code == 503);
  CHECK(detail.find("publish to 't' failed: ") == 0);
  broker->disconnect();  // still fine
}
