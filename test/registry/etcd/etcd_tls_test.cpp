// etcd registry over TLS against a real etcd that serves https only and demands client
// certificates: a CA, server and client certificates made with the openssl CLI at test time;
// register/get/watch with the client certificate; a wrong CA and a missing client certificate
// fail with errors naming the certificate problem; TLS option errors.
#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>

#include <micro/error.hpp>
#include <micro/plugin.hpp>
#include <micro/registry.hpp>

#include "registry/etcd/etcd_fixture.hpp"
#include "registry/registry_test_support.hpp"
#include "support/test_certificates.hpp"

using namespace registry_test;
using etcd_test::creation_error;
using etcd_test::EtcdCluster;
using etcd_test::make_registry;
using etcd_test::Options;
using micro::WatchAction;

namespace {

// The CA, server and client certificates of test/support; etcd members dial each other, so
// the server certificate serves as a client one too.
struct Certificates : micro_test::TestCertificates {
  Certificates() : TestCertificates("micro-test", "serverAuth,clientAuth") {}
  etcd_test::ServerTls server() const {
    return {path("ca.pem"), path("server.pem"), path("server.key")};
  }
};

Certificates& certificates() {
  static Certificates made;
  return made;
}

std::shared_ptr<EtcdCluster> tls_server() {
  static auto server = std::make_shared<EtcdCluster>(1, certificates().server());
  return server;
}

Options client_options(Options extra = {}) {
  Options options = {{"tls_ca", certificates().path("ca.pem")},
                     {"tls_cert", certificates().path("client.pem")},
                     {"tls_key", certificates().path("client.key")},
                     {"request_timeout", "1500ms"},
                     {"prefix", etcd_test::unique_prefix()}};
  for (auto& [name, value] : extra) {
    auto same = std::find_if(options.begin(), options.end(),
                             [&](const auto& option) { return option.first == name; });
    if (same != options.end()) {
      same->second = value;
    } else {
      options.emplace_back(name, value);
    }
  }
  return options;
}

// The error a registration fails with.
micro::Error registration_error(micro::Registry& registry) {
  try {
    registry.register_service(make_service("tls.greeter", "1.0", {"n1"}), {});
  } catch (const micro::Exception& exception) {
    return exception.error();
  }
  FAIL("registration succeeded");
  return {};
}

}  // namespace

TEST_CASE("etcd registry over TLS: register, get and watch with a client certificate") {
  auto server = tls_server();
  auto registry = make_registry(server->address(), client_options());
  EventRecorder recorder;
  auto watch = registry->watch({}, recorder.callback());

  registry->register_service(make_service("tls.greeter", "1.0", {"n1", "n2"}), {});
  const auto found = registry->get_service("tls.greeter");
  REQUIRE(found.size() == 1);
  CHECK(node_ids(found[0]) == std::vector<std::string>{"n1", "n2"});
  CHECK(recorder.wait_for_event(
      [](const auto& event) { return is_event(event, WatchAction::create, "tls.greeter", "n2"); }));

  registry->deregister_service(make_service("tls.greeter", "1.0", {"n1"}));
  CHECK(recorder.wait_for_event(
      [](const auto& event) { return is_event(event, WatchAction::remove, "tls.greeter", "n1"); }));
  CHECK(node_ids(registry->get_service("tls.greeter")[0]) == std::vector<std::string>{"n2"});

  // A TTL'd node stays while the keep-alive sender (its own TLS connection) renews its lease.
  micro::RegisterOptions with_ttl;
  with_ttl.ttl = 1s;
  registry->register_service(make_service("tls.ticker", "1.0", {"t1"}), with_ttl);
  const auto renewed_until = std::chrono::steady_clock::now() + 2500ms;
  while (std::chrono::steady_clock::now() < renewed_until) {
    registry->register_service(make_service("tls.ticker", "1.0", {"t1"}), with_ttl);
    std::this_thread::sleep_for(100ms);  // the owner's re-register interval
  }
  CHECK(registry->get_service("tls.ticker").size() == 1);
  watch->stop();
  registry->deregister_service(make_service("tls.greeter", "1.0", {"n2"}));
  registry->deregister_service(make_service("tls.ticker", "1.0", {"t1"}));
}

TEST_CASE("etcd registry over TLS: a server certificate from another CA is a 503 saying why") {
  auto server = tls_server();
  auto registry = make_registry(server->address(),
                                client_options({{"tls_ca", certificates().path("other-ca.pem")}}));
  const auto error = registration_error(*registry);
  CHECK(error.code == 503);
  INFO(error.detail);
  CHECK(error.detail.find("TLS handshake with 127.0.0.1:") != std::string::npos);
  CHECK(error.detail.find("server certificate rejected: unable to get local issuer certificate") !=
        std::string::npos);
}

TEST_CASE(
    "etcd registry over TLS: no client certificate when etcd demands one is a 503 saying so") {
  auto server = tls_server();
  Options options = {{"tls_ca", certificates().path("ca.pem")},
                     {"request_timeout", "1500ms"},
                     {"prefix", etcd_test::unique_prefix()}};
  auto registry = make_registry(server->address(), options);
  const auto error = registration_error(*registry);
  CHECK(error.code == 503);
  INFO(error.detail);
  CHECK((error.detail.find("alert bad certificate") != std::string::npos ||
         error.detail.find("alert certificate required") != std::string::npos));
  CHECK(error.detail.find("(etcd refused this client's TLS certificate: none given, or not "
                          "signed by a CA etcd trusts; see tls_cert and tls_key)") !=
        std::string::npos);
}

TEST_CASE("etcd registry: TLS options that cannot work are refused with what is wrong") {
  const auto ca = certificates().path("ca.pem");
  auto refused_with = [](const std::string& detail, const std::string& end) {
    INFO(detail);
    return detail.size() >= end.size() &&
           detail.compare(detail.size() - end.size(), end.size(), end) == 0;
  };
  CHECK(refused_with(
      creation_error("127.0.0.1:2379", {{"tls_cert", certificates().path("client.pem")}}),
      "tls_cert and tls_key go together: give both or neither"));
  CHECK(refused_with(creation_error("127.0.0.1:2379", {{"tls_ca", "/nonexistent/ca.pem"}}),
                     "cannot use tls_ca \"/nonexistent/ca.pem\": cannot open the file"));
  CHECK(refused_with(
      creation_error("127.0.0.1:2379", {{"tls_ca", ca},
                                        {"tls_cert", "/nonexistent/client.pem"},
                                        {"tls_key", certificates().path("client.key")}}),
      "cannot use tls_cert \"/nonexistent/client.pem\": cannot open the file"));
  CHECK(refused_with(
      creation_error("127.0.0.1:2379", {{"tls_cert", certificates().path("client.pem")},
                                        {"tls_key", certificates().path("server.key")}}),
      "cannot use tls_key \"" + certificates().path("server.key") + "\": key values mismatch"));
  // Good forms: https:// endpoints alone, tls=true with the system's CA store.
  CHECK(creation_error("https://127.0.0.1:2379,https://10.0.0.2:2379", {}) == "");
  CHECK(creation_error("127.0.0.1:2379", {{"tls", "true"}}) == "");
}
