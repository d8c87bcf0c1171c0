// NATS broker over TLS against a real nats-server serving TLS only: a CA, server and client
// certificates made with the openssl CLI in the test's temporary directory; publish and
// receive with tls_ca (and with client certificates when the server demands them); a server
// certificate from another CA, a missing CA file and a client without TLS fail with errors
// naming the problem.
#include <doctest/doctest.h>

#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <micro/broker.hpp>
#include <micro/error.hpp>
#include <micro/plugin_loader.hpp>

#include "broker/broker_test_support.hpp"
#include "broker/nats/nats_server.hpp"

using namespace std::chrono_literals;
using Options = std::vector<std::pair<std::string, std::string>>;

using broker_test::wait_until;

namespace {

// Certificates for a TLS nats-server on 127.0.0.1, made once per test program: ca.pem signs
// server.pem (IP 127.0.0.1) and client.pem; other-ca.pem signs nothing used here.
class Certificates {
 public:
  Certificates() {
    char pattern[] = "/tmp/micro-nats-tls-XXXXXX";
    if (!::mkdtemp(pattern)) throw std::runtime_error("cannot create a temporary directory");
    directory_ = pattern;
    const char* script = R"(set -e
key="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
for ca in ca other-ca; do
  openssl req -x509 $key -days 2 -subj /CN=micro-nats-$ca -keyout $ca.key -out $ca.pem
done
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
for name in server client; do
  openssl req $key -subj /CN=micro-nats-$name -keyout $name.key -out $name.csr
  openssl x509 -req -days 2 -in $name.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
    -extfile $name.ext -out $name.pem
done
)";
    std::ofstream(path("make-certificates.sh")) << script;
    std::string command = "cd " + directory_ + " && sh make-certificates.sh 2>&1; echo rc=$?";
    std::string output;
    if (FILE* pipe = ::popen(command.c_str(), "r")) {
      char buffer[4096];
      std::size_t read = 0;
      while ((read = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, read);
      ::pclose(pipe);
    }
    if (output.find("rc=0") == std::string::npos)
      throw std::runtime_error("making certificates failed:\n" + output);
  }
  ~Certificates() {
    std::error_code ignored;
    std::filesystem::remove_all(directory_, ignored);
  }
  Certificates(const Certificates&) = delete;
  Certificates& operator=(const Certificates&) = delete;

  std::string path(const std::string& name) const { return directory_ + "/" + name; }

 private:
  std::string directory_;
};

const Certificates& certificates() {
  static Certificates made;
  return made;
}

// nats-server arguments for TLS only; `verify_clients` also demands a client certificate.
std::vector<std::string> tls_server_arguments(bool verify_clients) {
  std::vector<std::string> arguments = {"--tls", "--tlscert", certificates().path("server.pem"),
                                        "--tlskey", certificates().path("server.key")};
  if (verify_clients) {
    arguments.insert(arguments.end(),
                     {"--tlsverify", "--tlscacert", certificates().path("ca.pem")});
  }
  return arguments;
}

std::shared_ptr<micro::Broker> make_broker(const std::string& address, const Options& options) {
  return micro::PluginLoader::instance().create<micro::Broker>("nats", address, options,
                                                               boost::asio::any_io_executor{});
}

// The error connect() fails with; fails the test case when it succeeds.
micro::Error connect_error(const std::string& address, const Options& options) {
  auto broker = make_broker(address, options);
  try {
    broker->connect();
  } catch (const micro::Exception& error) {
    return error.error();
  }
  FAIL("connect succeeded");
  return micro::Error("", 0, "");
}

// Publishes on one connection and receives on another, both with `options`; checks the body.
void check_round_trip(const std::string& address, const Options& options) {
  auto subscriber = make_broker(address, options);
  auto publisher = make_broker(address, options);
  subscriber->connect();
  publisher->connect();
  std::mutex mutex;
  std::vector<std::string> bodies;
  auto subscription = subscriber->subscribe("secure.greetings", [&](micro::Message& message) {
    std::lock_guard lock(mutex);
    bodies.push_back(message.body + " on " + message.topic);
  });
  micro::Message message;
  message.topic = "secure.greetings";
  message.headers.set("Trace", "abc");
  message.body = "hello over TLS";
  publisher->publish(message);
  CHECK(wait_until([&] {
    std::lock_guard lock(mutex);
    return !bodies.empty();
  }));
  subscription->unsubscribe();
  publisher->disconnect();
  subscriber->disconnect();
  std::lock_guard lock(mutex);
  REQUIRE(bodies.size() == 1);
  CHECK(bodies[0] == "hello over TLS on secure.greetings");
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("nats broker over TLS: tls_ca trusts the server; publish and receive") {
  micro_test::NatsServer server(tls_server_arguments(false));
  SUBCASE("nats:// address, TLS implied by tls_ca") {
    check_round_trip(server.address(), {{"tls_ca", certificates().path("ca.pem")}});
  }
  SUBCASE("tls:// address") {
    check_round_trip("tls://" + server.address(), {{"tls_ca", certificates().path("ca.pem")}});
  }
}

TEST_CASE("nats broker over TLS: a server certificate from another CA is refused, saying why") {
  micro_test::NatsServer server(tls_server_arguments(false));
  micro::Error error = connect_error(
      server.address(), {{"tls_ca", certificates().path("other-ca.pem")}, {"max_reconnects", "0"}});
  INFO(error.detail);
  CHECK(error.code == 503);
  CHECK(contains(error.detail,
                 "cannot connect to nats://127.0.0.1:" + std::to_string(server.port())));
  CHECK(contains(error.detail, "unable to get local issuer certificate"));
  CHECK(contains(error.detail,
                 "; the server's TLS certificate was not accepted: is it signed by a "
                 "CA in tls_ca (" +
                     certificates().path("other-ca.pem") +
                     ") and issued for the address connected to?"));
}

TEST_CASE("nats broker over TLS: a missing tls_ca file is refused naming the file") {
  micro_test::NatsServer server(tls_server_arguments(false));
  micro::Error error = connect_error(server.address(), {{"tls_ca", "/nonexistent/ca.pem"}});
  INFO(error.detail);
  CHECK(error.code == 400);
  CHECK(error.detail ==
        "tls_ca '/nonexistent/ca.pem': cannot read the file: No such file or directory");

  error = connect_error(server.address(), {{"tls_ca", certificates().path("ca.pem")},
                                           {"tls_cert", certificates().path("client.pem")},
                                           {"tls_key", "/nonexistent/client.key"}});
  CHECK(error.code == 400);
  CHECK(error.detail ==
        "tls_key '/nonexistent/client.key': cannot read the file: No such file or directory");

  // A key that does not belong to the certificate: the C client's reason, naming both files.
  error = connect_error(server.address(), {{"tls_ca", certificates().path("ca.pem")},
                                           {"tls_cert", certificates().path("client.pem")},
                                           {"tls_key", certificates().path("server.key")}});
  INFO(error.detail);
  CHECK(error.code == 400);
  CHECK(error.detail.starts_with("tls_cert '" + certificates().path("client.pem") +
                                 "' with tls_key '" + certificates().path("server.key") + "': "));
}

TEST_CASE("nats broker over TLS: a client without TLS is told the server requires it") {
  micro_test::NatsServer server(tls_server_arguments(false));
  micro::Error error = connect_error(server.address(), {{"max_reconnects", "0"}});
  INFO(error.detail);
  CHECK(error.code == 503);
  CHECK(contains(error.detail,
                 "; the server requires TLS: set tls_ca to the CA that signed its "
                 "certificate (or tls to true if this system's CAs trust it)"));
}

TEST_CASE("nats broker over TLS: client certificates when the server demands them") {
  micro_test::NatsServer server(tls_server_arguments(true));
  check_round_trip(server.address(), {{"tls_ca", certificates().path("ca.pem")},
                                      {"tls_cert", certificates().path("client.pem")},
                                      {"tls_key", certificates().path("client.key")}});

  micro::Error error = connect_error(
      server.address(), {{"tls_ca", certificates().path("ca.pem")}, {"max_reconnects", "0"}});
  INFO(error.detail);
  CHECK(error.code == 503);
  CHECK(contains(error.detail, "cannot connect to nats://127.0.0.1:"));
  CHECK(contains(error.detail,
                 "; the server closed the connection after TLS set-up: it may "
                 "demand a client certificate (none given, or not signed by a CA "
                 "the server trusts; see tls_cert and tls_key)"));
}
