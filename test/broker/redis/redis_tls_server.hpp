// test/broker/redis/redis_tls_server.hpp — redis-server serving TLS only (rediss://) for tests:
// RedisTlsServer with given certificates; RedisTlsTestServer makes its own
// (test/support/test_certificates.hpp, so doctest tests only) and puts the CA and the client
// certificate where the conformance table's options (brokers_under_test.hpp) say.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "broker/redis/server_process.hpp"
#include "support/test_certificates.hpp"

namespace micro_test {

// redis-server with TLS only (`--port 0 --tls-port N`): `certificate`/`key` are the server's,
// `ca` the CA client certificates must chain to; `auth_clients`: `yes` (a client certificate is
// required), `optional` or `no`.
class RedisTlsServer : public ServerProcess {
 public:
  RedisTlsServer(std::string certificate, std::string key, std::string ca,
                 std::string auth_clients = "optional", std::vector<std::string> extra = {})
      : ServerProcess(
            "redis-tls", free_loopback_ports(1)[0],
            [this, certificate, key, ca, auth_clients, extra](const std::string& directory) {
              std::vector<std::string> arguments = {"redis-server",
                                                    "--port",
                                                    "0",
                                                    "--tls-port",
                                                    std::to_string(this->port()),
                                                    "--bind",
                                                    "127.0.0.1",
                                                    "--tls-cert-file",
                                                    certificate,
                                                    "--tls-key-file",
                                                    key,
                                                    "--tls-ca-cert-file",
                                                    ca,
                                                    "--tls-auth-clients",
                                                    auth_clients,
                                                    "--save",
                                                    "",
                                                    "--appendonly",
                                                    "no",
                                                    "--dir",
                                                    directory,
                                                    "--protected-mode",
                                                    "no"};
              arguments.insert(arguments.end(), extra.begin(), extra.end());
              return arguments;
            }) {
    start();
  }
  // What the broker is given: TLS by the scheme.
  std::string address() const { return "rediss://127.0.0.1:" + std::to_string(port()); }
};

// Where RedisTlsTestServer puts the CA and the client certificate, fixed per test process so the
// conformance table (brokers_under_test.hpp) can name them in its options before any exist:
// <directory>/ca.pem, client.pem, client.key.
inline std::string redis_tls_test_directory() {
  return (std::filesystem::temp_directory_path() /
          ("micro-redis-tls-" + std::to_string(::getpid())))
      .string();
}

// Certificates made for this run (a server certificate for IP 127.0.0.1 only), the CA and the
// client's copied to redis_tls_test_directory(), and a TLS redis-server using them. For the
// conformance suite's restart case it stops and starts like the plain one.
class RedisTlsTestServer {
 public:
  RedisTlsTestServer()
      : certificates_("micro-redis-tls"),
        directory_(prepare_directory(certificates_)),
        server_(certificates_.path("server.pem"), certificates_.path("server.key"),
                certificates_.path("ca.pem")) {}
  ~RedisTlsTestServer() {
    server_.stop();
    std::error_code ignored;
    std::filesystem::remove_all(directory_, ignored);
  }
  std::string address() const { return server_.address(); }
  void stop() { server_.stop(); }
  void start() { server_.start(); }

 private:
  static std::string prepare_directory(const TestCertificates& certificates) {
    std::string directory = redis_tls_test_directory();
    std::filesystem::create_directories(directory);
    for (const char* name : {"ca.pem", "client.pem", "client.key"})
      std::filesystem::copy_file(certificates.path(name), directory + "/" + name,
                                 std::filesystem::copy_options::overwrite_existing);
    return directory;
  }

  TestCertificates certificates_;
  std::string directory_;
  RedisTlsServer server_;
};

}  // namespace micro_test
