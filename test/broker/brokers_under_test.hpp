// test/broker/brokers_under_test.hpp — the one table of brokers the conformance suite
// (broker_test.cpp) runs on, and how each one's server is started.
//
// broker_test runs one broker per invocation: `broker_test --broker=<name>` (default memory).
// Each entry is registered as its own meson test, `broker conformance <name>`, so a broker's
// test starts only its own server.
//
// Adding a broker:
//   1. an entry in `brokers_under_test()` below: its name (the --broker value), the plugin it
//      loads and the options it is loaded with, what it offers, and its launcher;
//   2. the launcher: a function returning a std::unique_ptr<TestServer> that has started the
//      server on a free loopback port (and stops it in its destructor), from a header in the
//      broker's own test folder (test/broker/<broker>/<broker>_server.hpp) included here;
//   3. its name in `conformance_brokers` in test/broker/meson.build, guarded by whether the
//      plugin is built (e.g. rabbitmq_dep.found()).
#pragma once

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "broker/mqtt/mosquitto_server.hpp"
#include "broker/nats/nats_server.hpp"
#include "broker/rabbitmq/rabbitmq_server.hpp"
#include "broker/redis/redis_server.hpp"
#include "broker/redis/redis_tls_server.hpp"

namespace broker_test {

using Options = std::vector<std::pair<std::string, std::string>>;

// A server a broker under test talks to. The conformance suite stops and starts it again (same
// address) to check reconnection; the destructor stops it for good.
class TestServer {
 public:
  virtual ~TestServer() = default;
  // What the plugin is given as its address, e.g. "127.0.0.1:4222".
  virtual std::string address() const = 0;
  // An orderly shutdown (the server closes its clients), waited for.
  virtual void stop() = 0;
  // Starts it again on the same address and returns once it accepts clients.
  virtual void start() = 0;
};

// A TestServer over any server class with address(), stop() and start().
template <class Server>
class LaunchedServer : public TestServer {
 public:
  template <class... Arguments>
  explicit LaunchedServer(Arguments&&... arguments)
      : server_(std::forward<Arguments>(arguments)...) {}
  std::string address() const override { return server_.address(); }
  void stop() override { server_.stop(); }
  void start() override { server_.start(); }
  Server& server() { return server_; }

 private:
  Server server_;
};

struct BrokerUnderTest {
  std::string name{};    // --broker=<name>, and the meson test's "broker conformance <name>"
  std::string plugin{};  // the broker plugin it loads
  Options options{};     // the plugin's options in every case
  // Added for the server-restart case: reconnect quickly, and forever.
  Options reconnect_options{};
  // Whether it offers micro::Delivery::at_least_once (if not, it must refuse it with 400).
  bool at_least_once = false;
  // Whether '*' and '>' work in subscriptions (if not, they must be refused with 400).
  bool wildcards = true;
  // The value of messaging.system on its spans (OpenTelemetry's name for the system).
  std::string messaging_system{};
  // A line the broker logs on stderr when it loses its server: the restart case waits for it
  // before publishing into the outage.
  std::string lost_server_log{};
  // Starts its server; empty for a broker that needs none.
  std::function<std::unique_ptr<TestServer>()> launch{};
};

inline const std::vector<BrokerUnderTest>& brokers_under_test() {
  static const std::vector<BrokerUnderTest> table = {
      {
          .name = "memory",
          .plugin = "memory",
          .messaging_system = "memory",
      },
      {
          .name = "nats",
          .plugin = "nats",
          // A small buffer: a long outage overflows it and publishes are refused (counted).
          .reconnect_options = {{"reconnect_wait", "50ms"},
                                {"max_reconnects", "-1"},
                                {"reconnect_buffer", "4096"}},
          .messaging_system = "nats",
          .lost_server_log = "disconnected from",
          .launch = [] { return std::make_unique<LaunchedServer<micro_test::NatsServer>>(); },
      },
      {
          .name = "rabbitmq",
          .plugin = "rabbitmq",
          .reconnect_options = {{"reconnect_wait", "100ms"}},
          .at_least_once = true,
          .messaging_system = "rabbitmq",
          .lost_server_log = "lost the connection to",
          .launch = [] { return std::make_unique<LaunchedServer<micro_test::RabbitServer>>(); },
      },
      {
          .name = "redis",
          .plugin = "redis",
          .options = {{"mode", "pubsub"}},
          .reconnect_options = {{"reconnect_wait", "50ms"}},
          .messaging_system = "redis",
          .lost_server_log = "connection lost",
          .launch = [] { return std::make_unique<LaunchedServer<micro_test::RedisServer>>(); },
      },
      {
          .name = "redis-streams",
          .plugin = "redis",
          // Short retry and claim times: the at_least_once case waits for redeliveries.
          .options = {{"mode", "streams"}, {"retry_wait", "100ms"}},
          .reconnect_options = {{"reconnect_wait", "50ms"}},
          .at_least_once = true,
          .wildcards = false,
          .messaging_system = "redis",
          .lost_server_log = "connection lost",
          .launch = [] { return std::make_unique<LaunchedServer<micro_test::RedisServer>>(); },
      },
      // The same over TLS (rediss://, the plugin's TLS relay): a server certificate for
      // 127.0.0.1 made for the run; streams also with a client certificate.
      {
          .name = "redis-tls",
          .plugin = "redis",
          .options = {{"mode", "pubsub"},
                      {"tls_ca", micro_test::redis_tls_test_directory() + "/ca.pem"}},
          .reconnect_options = {{"reconnect_wait", "50ms"}},
          .messaging_system = "redis",
          .lost_server_log = "connection lost",
          .launch =
              [] { return std::make_unique<LaunchedServer<micro_test::RedisTlsTestServer>>(); },
      },
      {
          .name = "redis-streams-tls",
          .plugin = "redis",
          .options = {{"mode", "streams"},
                      {"retry_wait", "100ms"},
                      {"tls_ca", micro_test::redis_tls_test_directory() + "/ca.pem"},
                      {"tls_cert", micro_test::redis_tls_test_directory() + "/client.pem"},
                      {"tls_key", micro_test::redis_tls_test_directory() + "/client.key"}},
          .reconnect_options = {{"reconnect_wait", "50ms"}},
          .at_least_once = true,
          .wildcards = false,
          .messaging_system = "redis",
          .lost_server_log = "connection lost",
          .launch =
              [] { return std::make_unique<LaunchedServer<micro_test::RedisTlsTestServer>>(); },
      },
      {
          .name = "mqtt",
          .plugin = "mqtt",
          .options = {{"protocol", "5"}, {"qos", "1"}},
          .reconnect_options = {{"reconnect_wait", "100ms"}},
          .messaging_system = "mqtt",
          .lost_server_log = "connection lost",
          // mosquitto drops QoS 1 messages beyond max_queued_messages (default 1000) queued for
          // a client that is behind, silently; the bursts here (10000 messages) need room, as
          // broker/mqtt/README.md tells servers to give.
          .launch =
              [] {
                return std::make_unique<LaunchedServer<micro_test::MosquittoServer>>(
                    std::vector<std::string>{"max_queued_messages 0"});
              },
      },
  };
  return table;
}

// The entry named `name`; throws naming the known ones otherwise.
inline const BrokerUnderTest& broker_under_test(const std::string& name) {
  std::string known;
  for (const auto& entry : brokers_under_test()) {
    if (entry.name == name) return entry;
    known += (known.empty() ? "" : ", ") + entry.name;
  }
  throw std::invalid_argument("--broker=" + name + ": no such broker under test; known: " + known);
}

}  // namespace broker_test
