// MQTT broker integration tests against real mosquitto processes, beyond the conformance
// suite: topic mapping and user properties on the wire (checked with bare libmosquitto),
// MQTT 3.1.1 (envelope, queue groups refused), shared subscriptions across brokers, QoS 0,
// persistent sessions keeping QoS 1 messages while a subscriber is away, Go-Micro's envelope,
// TLS with certificates made at test time, refused credentials and bad options, and a server
// restarted mid-stream with persistent sessions (every accepted QoS 1 message arrives).
#include <doctest/doctest.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include <micro/base64.hpp>
#include <micro/broker.hpp>
#include <micro/error.hpp>
#include <micro/plugin_loader.hpp>

#include "broker/broker_test_support.hpp"
#include "broker/mqtt/mosquitto_server.hpp"
#include "support/test_certificates.hpp"

using namespace std::chrono_literals;
using Options = std::vector<std::pair<std::string, std::string>>;

using broker_test::Counter;
using broker_test::message_on;
using broker_test::wait_until;

namespace {

std::shared_ptr<micro::Broker> make_broker(const std::string& address,
                                           const Options& options = {}) {
  return micro::PluginLoader::instance().create<micro::Broker>("mqtt", address, options,
                                                               boost::asio::any_io_executor{});
}

std::shared_ptr<micro::Broker> connected_broker(const std::string& address,
                                                const Options& options = {}) {
  auto broker = make_broker(address, options);
  broker->connect();
  return broker;
}

std::pair<int, std::string> failure_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const micro::Exception& error) {
    return {error.error().code, error.error().detail};
  }
  return {0, ""};
}

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

// A bare libmosquitto MQTT 5 client: what arrives (topic, payload, user properties).
class Bare {
 public:
  struct Received {
    std::string topic, payload;
    std::vector<std::pair<std::string, std::string>> properties;
  };

  explicit Bare(int port) {
    mosquitto_lib_init();
    handle_ = mosquitto_new(nullptr, true, this);
    REQUIRE(handle_);
    mosquitto_int_option(handle_, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_connect_v5_callback_set(
        handle_, [](mosquitto*, void* self, int rc, int, const mosquitto_property*) {
          static_cast<Bare*>(self)->connected_.store(rc == 0);
        });
    mosquitto_subscribe_v5_callback_set(
        handle_, [](mosquitto*, void* self, int, int, const int*, const mosquitto_property*) {
          static_cast<Bare*>(self)->subscribed_.fetch_add(1);
        });
    mosquitto_message_v5_callback_set(handle_, &Bare::on_message);
    REQUIRE(mosquitto_connect_bind_v5(handle_, "127.0.0.1", port, 30, nullptr, nullptr) ==
            MOSQ_ERR_SUCCESS);
    REQUIRE(mosquitto_loop_start(handle_) == MOSQ_ERR_SUCCESS);
    REQUIRE(wait_until([&] { return connected_.load(); }));
  }
  ~Bare() {
    mosquitto_disconnect(handle_);
    mosquitto_loop_stop(handle_, false);
    mosquitto_destroy(handle_);
  }
  void subscribe(const std::string& filter) {
    int before = subscribed_.load();
    REQUIRE(mosquitto_subscribe_v5(handle_, nullptr, filter.c_str(), 1, 0, nullptr) ==
            MOSQ_ERR_SUCCESS);
    REQUIRE(wait_until([&] { return subscribed_.load() > before; }));
  }
  void publish(const std::string& topic, const std::string& payload) {
    REQUIRE(mosquitto_publish_v5(handle_, nullptr, topic.c_str(), static_cast<int>(payload.size()),
                                 payload.data(), 1, false, nullptr) == MOSQ_ERR_SUCCESS);
  }
  std::vector<Received> received() {
    std::lock_guard lock(mutex_);
    return received_;
  }
  std::size_t count() {
    std::lock_guard lock(mutex_);
    return received_.size();
  }

 private:
  static void on_message(mosquitto*, void* self_pointer, const mosquitto_message* message,
                         const mosquitto_property* properties) {
    auto* self = static_cast<Bare*>(self_pointer);
    Received got{message->topic,
                 std::string(static_cast<const char*>(message->payload),
                             static_cast<std::size_t>(message->payloadlen)),
                 {}};
    bool skip = false;
    for (const mosquitto_property* property = properties;;) {
      char* name = nullptr;
      char* value = nullptr;
      property = mosquitto_property_read_string_pair(property, MQTT_PROP_USER_PROPERTY, &name,
                                                     &value, skip);
      if (!property) break;
      got.properties.emplace_back(name, value);
      std::free(name);
      std::free(value);
      skip = true;
    }
    std::lock_guard lock(self->mutex_);
    self->received_.push_back(std::move(got));
  }

  mosquitto* handle_ = nullptr;
  std::atomic<bool> connected_{false};
  std::atomic<int> subscribed_{0};
  std::mutex mutex_;
  std::vector<Received> received_;
};

}  // namespace

TEST_CASE("mqtt: topics map to MQTT levels, headers travel as MQTT 5 user properties") {
  micro_test::MosquittoServer server;
  auto broker = connected_broker(server.address());
  Bare bare(server.port());
  bare.subscribe("orders/#");
  micro::Message message = message_on("orders.eu.created", "payload");
  message.headers.set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  message.headers.set("X-Tenant", "acme");
  broker->publish(message);
  REQUIRE(wait_until([&] { return bare.count() == 1; }));
  Bare::Received got = bare.received()[0];
  CHECK(got.topic == "orders/eu/created");
  CHECK(got.payload == "payload");  // the body as is: no envelope on MQTT 5
  std::map<std::string, std::string> properties(got.properties.begin(), got.properties.end());
  CHECK(properties.at("traceparent") == message.headers.get("traceparent"));
  CHECK(properties.at("X-Tenant") == "acme");

  // The other way: a bare MQTT publish reaches a micro wildcard subscription, topic mapped.
  Inbox inbox;
  auto subscription = broker->subscribe("sensors.*.temperature", inbox.handler());
  bare.publish("sensors/kitchen/temperature", "21.5");
  bare.publish("sensors/kitchen/humidity", "40");
  REQUIRE(wait_until([&] { return inbox.size() == 1; }));
  CHECK(inbox.at(0).topic == "sensors.kitchen.temperature");
  CHECK(inbox.at(0).body == "21.5");
  // What MQTT cannot carry is refused before it reaches the server.
  CHECK(failure_of([&] { broker->publish(message_on("a+b", "x")); }).first == 400);
  CHECK(failure_of([&] { broker->publish(message_on("$SYS.x", "x")); }).first == 400);
}

TEST_CASE("mqtt: protocol=3.1.1 carries headers in an envelope and refuses queue groups") {
  micro_test::MosquittoServer server;
  auto broker = connected_broker(server.address(), {{"protocol", "3.1.1"}});
  Inbox inbox;
  auto subscription = broker->subscribe("v3.topic", inbox.handler());
  micro::Message message = message_on("v3.topic", "old protocol");
  message.headers.set("X-Request-Id", "r-1");
  broker->publish(message);
  REQUIRE(wait_until([&] { return inbox.size() == 1; }));
  CHECK(inbox.at(0).body == "old protocol");
  CHECK(inbox.at(0).headers.get("X-Request-Id") == "r-1");
  auto refused = failure_of(
      [&] { broker->subscribe("v3.topic", inbox.handler(), micro::SubscribeOptions{"workers"}); });
  CHECK(refused.first == 400);
  CHECK(refused.second.find("MQTT 3.1.1 has no shared subscriptions") != std::string::npos);
}

TEST_CASE("mqtt: a queue group is a shared subscription across brokers; each message once") {
  micro_test::MosquittoServer server;
  auto first = connected_broker(server.address());
  auto second = connected_broker(server.address());
  auto publisher = connected_broker(server.address());
  Counter one, two;
  auto a = first->subscribe("jobs.new", one.handler(), micro::SubscribeOptions{"workers"});
  auto b = second->subscribe("jobs.new", two.handler(), micro::SubscribeOptions{"workers"});
  // The server holds it as $share/workers/jobs/new: a bare shared member takes its turn too.
  Bare bare(server.port());
  bare.subscribe("$share/workers/jobs/new");
  constexpr int messages = 300;
  for (int i = 0; i < messages; ++i) publisher->publish(message_on("jobs.new", std::to_string(i)));
  auto total = [&] {
    return one.count.load() + two.count.load() + static_cast<int>(bare.count());
  };
  CHECK(wait_until([&] { return total() == messages; }));
  publisher->disconnect();
  first->disconnect();
  second->disconnect();
  CHECK(total() == messages);
  CHECK(one.count.load() > 0);
  CHECK(two.count.load() > 0);
  CHECK(bare.count() > 0);
}

TEST_CASE("mqtt: qos=0 delivers too") {
  micro_test::MosquittoServer server;
  auto broker = connected_broker(server.address(), {{"qos", "0"}});
  Counter counter;
  auto subscription = broker->subscribe("fast.lane", counter.handler());
  for (int i = 0; i < 200; ++i) broker->publish(message_on("fast.lane", "x"));
  broker->disconnect();  // drains
  CHECK(counter.count.load() == 200);
}

TEST_CASE("mqtt: a persistent session keeps QoS 1 messages while its subscriber is away") {
  micro_test::MosquittoServer server;
  Options persistent = {{"client_id", "billing-service"}, {"clean_session", "false"}};
  auto subscriber = connected_broker(server.address(), persistent);
  Counter counter;
  auto subscription = subscriber->subscribe("invoices.created", counter.handler(),
                                            micro::SubscribeOptions{"billing"});
  auto publisher = connected_broker(server.address());
  publisher->publish(message_on("invoices.created", "before"));
  REQUIRE(wait_until([&] { return counter.count.load() == 1; }));
  subscriber->disconnect();  // the session (and its subscription) stays on the server
  for (int i = 0; i < 50; ++i) publisher->publish(message_on("invoices.created", "while away"));
  publisher->disconnect();
  subscriber->connect();
  CHECK(wait_until([&] { return counter.count.load() == 51; }));
  CHECK(failure_of([&] {
          make_broker(server.address(), {{"clean_session", "false"}});
        }).first == 400);  // persistent sessions need a client id
}

TEST_CASE(
    "mqtt: encoding=gomicro sends Go-Micro's JSON envelope, raw topic with map_topics=false") {
  micro_test::MosquittoServer server;
  auto broker =
      connected_broker(server.address(), {{"encoding", "gomicro"}, {"map_topics", "false"}});
  Bare bare(server.port());
  bare.subscribe("go.micro.topic");
  micro::Message message = message_on("go.micro.topic", "hello");
  message.headers.set("X-Id", "9");
  broker->publish(message);
  REQUIRE(wait_until([&] { return bare.count() == 1; }));
  Bare::Received got = bare.received()[0];
  CHECK(got.topic == "go.micro.topic");
  nlohmann::json envelope = nlohmann::json::parse(got.payload);
  CHECK(envelope["Header"]["X-Id"] == "9");
  CHECK(envelope["Body"] == micro::base64::encode("hello"));
  // And a Go-Micro publisher's envelope is unwrapped on receipt.
  Inbox inbox;
  auto subscription = broker->subscribe("go.micro.in", inbox.handler());
  bare.publish("go.micro.in", envelope.dump());
  REQUIRE(wait_until([&] { return inbox.size() == 1; }));
  CHECK(inbox.at(0).body == "hello");
  CHECK(inbox.at(0).headers.get("X-Id") == "9");
}

TEST_CASE("mqtt over TLS: tls_ca trusts the server; another CA is refused saying TLS") {
  micro_test::TestCertificates certificates("micro-mqtt-tls");
  micro_test::MosquittoServer server({"cafile " + certificates.path("ca.pem"),
                                      "certfile " + certificates.path("server.pem"),
                                      "keyfile " + certificates.path("server.key")});
  auto broker =
      connected_broker("mqtts://" + server.address(), {{"tls_ca", certificates.path("ca.pem")}});
  Counter counter;
  auto subscription = broker->subscribe("secure.topic", counter.handler());
  broker->publish(message_on("secure.topic", "secret"));
  CHECK(wait_until([&] { return counter.count.load() == 1; }));

  auto wrong_ca = failure_of([&] {
    connected_broker(server.address(),
                     {{"tls_ca", certificates.path("other-ca.pem")}, {"connect_timeout", "2s"}});
  });
  CHECK(wrong_ca.first == 503);
  CHECK(wrong_ca.second.find("TLS") != std::string::npos);
  auto missing = failure_of([&] {
    make_broker(server.address(), {{"tls_ca", "/nonexistent.pem"}});
  });
  CHECK(missing.first == 400);
  CHECK(missing.second.find("tls_ca '/nonexistent.pem': cannot read the file") !=
        std::string::npos);
}

TEST_CASE("mqtt: refused credentials are 401; bad options 400; no server 503") {
  micro_test::MosquittoServer locked({"allow_anonymous false"});
  auto refused = failure_of([&] { connected_broker(locked.address()); });
  CHECK(refused.first == 401);
  CHECK(refused.second.find("refused the connection") != std::string::npos);
  CHECK(failure_of([&] { make_broker("", {{"protocol", "4.0"}}); }).first == 400);
  CHECK(failure_of([&] { make_broker("", {{"password", "p"}}); }).first == 400);
  int port = micro_test::free_loopback_ports(1)[0];
  auto absent = failure_of([&] { connected_broker("127.0.0.1:" + std::to_string(port)); });
  CHECK(absent.first == 503);
  micro::SubscribeOptions acked;
  acked.delivery = micro::Delivery::at_least_once;
  micro_test::MosquittoServer server;
  auto broker = connected_broker(server.address());
  CHECK(failure_of([&] {
          broker->subscribe(
              "t", [](micro::Message&) {}, acked);
        }).first == 400);
}

TEST_CASE(
    "mqtt: a server restarted mid-stream (persistence on): with QoS 1 and a persistent "
    "session every accepted message arrives; delivered + reported lost = published") {
  micro_test::MosquittoServer server(
      {"persistence true", "persistence_location %DIR%/", "max_queued_messages 0"});
  auto subscriber = connected_broker(server.address(), {{"client_id", "restart-subscriber"},
                                                        {"clean_session", "false"},
                                                        {"reconnect_wait", "100ms"}});
  auto publisher = connected_broker(server.address(), {{"client_id", "restart-publisher"},
                                                       {"clean_session", "false"},
                                                       {"reconnect_wait", "100ms"}});
  std::mutex mutex;
  std::set<int> delivered;
  auto subscription = subscriber->subscribe("ledger.entries", [&](micro::Message& message) {
    std::lock_guard lock(mutex);
    delivered.insert(std::stoi(message.body));
  });
  std::set<int> accepted, refused;
  std::atomic<bool> finish{false};
  std::atomic<int> published{0}, accepted_count{0};
  std::thread publishing([&] {
    for (int id = 0; !finish.load(); ++id) {
      try {
        publisher->publish(message_on("ledger.entries", std::to_string(id)));
        accepted.insert(id);
        accepted_count.fetch_add(1);
      } catch (const micro::Exception& error) {
        CHECK(error.error().code == 503);
        refused.insert(id);
      }
      published.store(id + 1);
      std::this_thread::sleep_for(200us);
    }
  });
  auto delivered_count = [&] {
    std::lock_guard lock(mutex);
    return delivered.size();
  };
  REQUIRE(wait_until([&] { return delivered_count() >= 200; }, 20s));
  server.stop();  // mid-stream; mosquitto saves its sessions on the way out
  int at_stop = published.load();
  REQUIRE(wait_until([&] { return published.load() >= at_stop + 200; }, 20s));
  server.start();
  // Publishing resumes once both clients are back (and the subscription with them).
  int accepted_at_restart = accepted_count.load();
  REQUIRE(wait_until([&] { return accepted_count.load() >= accepted_at_restart + 300; }, 30s));
  finish.store(true);
  publishing.join();
  publisher->disconnect();  // waits for the server's acknowledgements
  CHECK(wait_until([&] {
    std::lock_guard lock(mutex);
    for (int id : accepted)
      if (!delivered.contains(id)) return false;
    return true;
  }));
  subscriber->disconnect();
  std::lock_guard lock(mutex);
  int lost = 0;  // reported (refused) and never delivered
  for (int id : refused) lost += delivered.contains(id) ? 0 : 1;
  MESSAGE("published " << published.load() << ", accepted " << accepted.size() << ", refused "
                       << refused.size() << ", delivered " << delivered.size());
  CHECK(!refused.empty());
  CHECK(static_cast<int>(delivered.size()) + lost == published.load());
  for (int id : delivered) CHECK((accepted.contains(id) || refused.contains(id)));
}
