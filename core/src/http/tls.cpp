// http/tls.cpp — the client TLS context: peer verification against a CA file or the system
// store, an optional client certificate; errors name the file that cannot be used.
#include <fstream>

#include <micro/error.hpp>

#include "connection.hpp"

namespace micro::http {

namespace {

namespace ssl = boost::asio::ssl;

[[noreturn]] void refuse(const std::string& detail) {
  throw Exception(bad_request(detail::error_id, detail));
}

void refuse_file(const std::string& name, const std::string& path, const std::string& why) {
  refuse("cannot use " + name + " \"" + path + "\": " + why);
}

// OpenSSL reports a missing file as a bare "asio.ssl error": say it plainly first.
void check_readable(const std::string& name, const std::string& path) {
  if (!path.empty() && !std::ifstream(path).is_open()) {
    refuse_file(name, path, "cannot open the file");
  }
}

}  // namespace

std::shared_ptr<const TlsContext> make_tls_context(const TlsOptions& options) {
  check_readable(options.ca_name, options.ca_file);
  check_readable(options.cert_name, options.cert_file);
  check_readable(options.key_name, options.key_file);
  if (options.cert_file.empty() != options.key_file.empty()) {
    refuse(options.cert_name + " and " + options.key_name + " go together: give both or neither");
  }
  auto made = std::make_shared<TlsContext>();
  auto& context = made->ssl;
  context.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                      ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  context.set_verify_mode(ssl::verify_peer);
  boost::system::error_code error;
  if (options.ca_file.empty()) {
    context.set_default_verify_paths(error);
    if (error) refuse("cannot load the system CA store: " + error.message());
  } else {
    context.load_verify_file(options.ca_file, error);
    if (error) refuse_file(options.ca_name, options.ca_file, error.message());
  }
  if (!options.cert_file.empty()) {
    context.use_certificate_chain_file(options.cert_file, error);
    if (error) refuse_file(options.cert_name, options.cert_file, error.message());
    context.use_private_key_file(options.key_file, ssl::context::pem, error);
    if (error) refuse_file(options.key_name, options.key_file, error.message());
  }
  return made;
}

}  // namespace micro::http
