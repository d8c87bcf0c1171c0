// Redis broker over TLS (rediss://) against a real redis-server serving TLS only, certificates
// made for the run (test/support/test_certificates.hpp: a server certificate for IP 127.0.0.1
// only): publish and receive with tls_ca, with a client certificate when the server demands
// one; a certificate from another CA, the wrong host name, a missing client certificate and a
// plain server fail with 503s naming the address and the cause; bad files are 400s; a
// subscription comes back after a server restart through the TLS relay.
#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <micro/broker.hpp>
#include <micro/error.hpp>
#include <micro/plugin_loader.hpp>

#include "broker/broker_test_support.hpp"
#include "broker/redis/redis_server.hpp"
#include "broker/redis/redis_tls_server.hpp"

using namespace std::chrono_literals;
using Options = std::vector<std::pair<std::string, std::string>>;

using broker_test::message_on;
using broker_test::wait_until;

namespace {

std::shared_ptr<micro::Broker> make_broker(const std::string& address, const Options& options) {
  return micro::PluginLoader::instance().create<micro::Broker>("redis", address, options,
                                                               boost::asio::any_io_executor{});
}

std::pair<int, std::string> failure_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const micro::Exception& error) {
    return {error.error().code, error.error().detail};
  }
  return {0, "(accepted)"};
}

struct Inbox {
  std::mutex mutex;
  std::vector<std::string> bodies;
  micro::MessageHandler handler() {
    return [this](micro::Message& message) {
      std::lock_guard lock(mutex);
      bodies.push_back(message.body);
    };
  }
  std::size_t size() {
    std::lock_guard lock(mutex);
    return bodies.size();
  }
};

// Publishes one message and waits for it, in the given mode.
void round_trip(const std::string& address, Options options, const std::string& mode) {
  options.emplace_back("mode", mode);
  auto broker = make_broker(address, options);
  broker->connect();
  Inbox inbox;
  auto subscription = broker->subscribe("secure.orders", inbox.handler());
  broker->publish(message_on("secure.orders", "over tls " + mode));
  REQUIRE(wait_until([&] { return inbox.size() == 1; }));
  CHECK(inbox.bodies[0] == "over tls " + mode);
  subscription->unsubscribe();
  broker->disconnect();
}

}  // namespace

TEST_CASE("redis over TLS: tls_ca trusts the server; pubsub and streams; hostname checked") {
  micro_test::TestCertificates certificates("micro-redis-tls");
  micro_test::RedisTlsServer server(certificates.path("server.pem"),
                                    certificates.path("server.key"), certificates.path("ca.pem"));
  const std::string ca = certificates.path("ca.pem");
  for (const char* mode : {"pubsub", "streams"}) {
    CAPTURE(mode);
    round_trip(server.address(), {{"tls_ca", ca}}, mode);
  }
  // tls=true with a plain address and the CA is the same.
  round_trip("127.0.0.1:" + std::to_string(server.port()), {{"tls", "true"}, {"tls_ca", ca}},
             "pubsub");

  // A certificate from a CA not in tls_ca.
  auto other_ca = failure_of([&] {
    make_broker(server.address(), {{"tls_ca", certificates.path("other-ca.pem")}})->connect();
  });
  CHECK(other_ca.first == 503);
  CHECK(other_ca.second.find("cannot connect to redis at " + server.address()) !=
        std::string::npos);
  CHECK(other_ca.second.find("the server's certificate was refused") != std::string::npos);
  CHECK(other_ca.second.find("not signed by a CA in tls_ca '" + certificates.path("other-ca.pem") +
                             "'") != std::string::npos);

  // The certificate names IP 127.0.0.1 only: "localhost" is the wrong name…
  const std::string by_name = "rediss://localhost:" + std::to_string(server.port());
  auto wrong_name = failure_of([&] { make_broker(by_name, {{"tls_ca", ca}})->connect(); });
  CHECK(wrong_name.first == 503);
  CHECK(wrong_name.second.find("cannot connect to redis at " + by_name) != std::string::npos);
  CHECK(wrong_name.second.find("hostname mismatch") != std::string::npos);
  CHECK(wrong_name.second.find("not issued for 'localhost'") != std::string::npos);
  // … unless only the chain is checked.
  round_trip(by_name, {{"tls_ca", ca}, {"tls_verify_hostname", "false"}}, "pubsub");
}

TEST_CASE("redis over TLS: a server demanding client certificates; a plain server") {
  micro_test::TestCertificates certificates("micro-redis-tls");
  micro_test::RedisTlsServer server(certificates.path("server.pem"),
                                    certificates.path("server.key"), certificates.path("ca.pem"),
                                    "yes");
  const std::string ca = certificates.path("ca.pem");
  round_trip(server.address(),
             {{"tls_ca", ca},
              {"tls_cert", certificates.path("client.pem")},
              {"tls_key", certificates.path("client.key")}},
             "streams");
  // Without one the server ends the connection (TLS 1.3: after the handshake, with an alert).
  auto no_certificate = failure_of([&] {
    make_broker(server.address(), {{"tls_ca", ca}})->connect();
  });
  CHECK(no_certificate.first == 503);
  CHECK(no_certificate.second.find(server.address()) != std::string::npos);
  CHECK(no_certificate.second.find("certificate required") != std::string::npos);

  // A server that does not speak TLS (redis waits for the end of a line that never comes).
  micro_test::RedisServer plain;
  const std::string address = "rediss://" + plain.address();
  auto not_tls = failure_of([&] {
    make_broker(address, {{"tls_ca", ca}, {"connect_timeout", "300ms"}})->connect();
  });
  CHECK(not_tls.first == 503);
  CHECK(not_tls.second.find("cannot connect to redis at " + address +
                            ": no TLS connection within connect_timeout (300 ms; does the server "
                            "speak TLS on this port?)") != std::string::npos);
}

TEST_CASE("redis over TLS: unusable files are refused with 400 naming the option and file") {
  micro_test::TestCertificates certificates("micro-redis-tls");
  auto missing = failure_of([&] { make_broker("rediss://127.0.0.1", {{"tls_ca", "/no/ca.pem"}}); });
  CHECK(missing.first == 400);
  CHECK(missing.second.find("tls_ca '/no/ca.pem': cannot read the file") != std::string::npos);
  auto not_pem = failure_of([&] {
    make_broker("rediss://127.0.0.1", {{"tls_ca", certificates.path("ca.srl")}});
  });
  CHECK(not_pem.first == 400);
  CHECK(not_pem.second.find("cannot read it as PEM CA certificates") != std::string::npos);
  auto wrong_key = failure_of([&] {
    make_broker("rediss://127.0.0.1", {{"tls_cert", certificates.path("client.pem")},
                                       {"tls_key", certificates.path("server.key")}});
  });
  CHECK(wrong_key.first == 400);
  CHECK(wrong_key.second.find("tls_key '" + certificates.path("server.key") + "'") !=
        std::string::npos);
}

TEST_CASE("redis over TLS: a subscription comes back after the server restarts") {
  micro_test::TestCertificates certificates("micro-redis-tls");
  micro_test::RedisTlsServer server(certificates.path("server.pem"),
                                    certificates.path("server.key"), certificates.path("ca.pem"));
  auto broker = make_broker(
      server.address(),
      {{"tls_ca", certificates.path("ca.pem")}, {"mode", "streams"}, {"reconnect_wait", "50ms"}});
  broker->connect();
  Inbox inbox;
  auto subscription = broker->subscribe("secure.restart", inbox.handler());
  broker->publish(message_on("secure.restart", "before"));
  REQUIRE(wait_until([&] { return inbox.size() == 1; }));
  server.stop();
  server.start();
  // The group is gone with the server's memory; the reader recreates it when it is back.
  REQUIRE(wait_until(
      [&] {
        if (failure_of([&] { broker->publish(message_on("secure.restart", "after")); }).first != 0)
          return false;
        return wait_until([&] { return inbox.size() >= 2; }, 500ms);
      },
      30s));
  subscription->unsubscribe();
  broker->disconnect();
}
