// test/support/test_certificates.hpp — a throwaway certificate authority for TLS tests, made
// with the openssl CLI at test time: a CA, a server certificate for IP 127.0.0.1 only (so
// "localhost" is the wrong name), a client certificate, and another CA that signed nothing.
// The files live in a temporary directory removed when the object goes.
#pragma once

#include <doctest/doctest.h>

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "support/shell.hpp"

namespace micro_test {

// Runs the openssl CLI; fails the test with its output when it fails.
inline void openssl(const std::string& arguments) {
  const std::string output = run_command("openssl " + arguments + " 2>&1; echo rc=$?");
  INFO("openssl " << arguments << ": " << output);
  REQUIRE(output.find("rc=0") != std::string::npos);
}

class TestCertificates {
 public:
  // `server_usage`: the server certificate's extendedKeyUsage ("serverAuth", or
  // "serverAuth,clientAuth" for a server that also dials its peers, as etcd members do).
  explicit TestCertificates(const std::string& label = "micro-test",
                            const std::string& server_usage = "serverAuth")
      : label_(label) {
    std::string pattern = (std::filesystem::temp_directory_path() / (label + "-XXXXXX")).string();
    directory_ = ::mkdtemp(pattern.data());
    for (const std::string ca : {"ca", "other-ca"}) {
      openssl("req -x509 " + std::string(key_options) + " -days 2 -subj /CN=" + label + "-" + ca +
              " -keyout " + path(ca + ".key") + " -out " + path(ca + ".pem"));
    }
    make_signed("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=" + server_usage);
    make_signed("client", "extendedKeyUsage=clientAuth");
  }
  ~TestCertificates() {
    std::error_code ignored;
    std::filesystem::remove_all(directory_, ignored);
  }
  TestCertificates(const TestCertificates&) = delete;
  TestCertificates& operator=(const TestCertificates&) = delete;

  // "ca.pem", "server.pem", "server.key", "client.pem", "other-ca.pem", …
  std::string path(const std::string& name) const { return (directory_ / name).string(); }

 private:
  static constexpr const char* key_options =
      "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

  void make_signed(const std::string& name, const std::string& extensions) {
    std::ofstream(path(name + ".ext")) << extensions << "\n";
    openssl("req " + std::string(key_options) + " -subj /CN=" + label_ + "-" + name + " -keyout " +
            path(name + ".key") + " -out " + path(name + ".csr"));
    openssl("x509 -req -days 2 -in " + path(name + ".csr") + " -CA " + path("ca.pem") + " -CAkey " +
            path("ca.key") + " -CAcreateserial -CAserial " + path("ca.srl") + " -extfile " +
            path(name + ".ext") + " -out " + path(name + ".pem"));
  }

  std::string label_;
  std::filesystem::path directory_;
};

}  // namespace micro_test
