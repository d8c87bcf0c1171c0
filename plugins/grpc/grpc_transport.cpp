// plugins/grpc/grpc_transport.cpp — the grpc transport plugin: option checking, the
// micro::Transport tying the client pools and listeners together, and the loader's entry point.
#include <chrono>

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>

#include <micro/plugin.hpp>
#include <micro/transport.hpp>

#include "client.hpp"
#include "server.hpp"
#include "wire.hpp"

namespace micro::grpc {

namespace {

// Ranges are the descriptor's (grpc_options): the loader has checked them.
Settings read_settings(const PluginArguments& arguments) {
  Settings settings;
  settings.max_message = static_cast<std::uint32_t>(arguments.get_int("max_message"));
  settings.pool_size = static_cast<std::size_t>(arguments.get_int("pool_size"));
  settings.connect_timeout = arguments.get_duration("connect_timeout");
  settings.stream_window = static_cast<std::uint32_t>(arguments.get_int("stream_window"));
  settings.max_concurrent_streams =
      static_cast<std::uint32_t>(arguments.get_int("max_concurrent_streams"));
  std::string compression = arguments.get_string("compression");
  if (compression != "identity" && compression != "gzip")
    throw Exception(bad_request("micro.transport", "grpc: compression \"" + compression +
                                                       "\" is not one of identity, gzip"));
  settings.gzip = compression == "gzip";
  std::string cert = arguments.get_string("tls_cert"), key = arguments.get_string("tls_key"),
              ca = arguments.get_string("tls_ca");
  if (cert.empty() != key.empty())
    throw Exception(
        bad_request("micro.transport", "grpc: tls_cert and tls_key go together; got only " +
                                           std::string(cert.empty() ? "tls_key" : "tls_cert")));
  auto load = [](const char* option, const std::string& file, auto&& use) {
    boost::system::error_code error;
    use(error);
    if (error)
      throw Exception(bad_request("micro.transport", std::string("grpc: cannot use ") + option +
                                                         " \"" + file + "\": " + error.message()));
  };
  if (!cert.empty()) {
    auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
    context->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                         asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                         asio::ssl::context::no_tlsv1_1);
    load("tls_cert", cert, [&](auto& error) { context->use_certificate_chain_file(cert, error); });
    load("tls_key", key,
         [&](auto& error) { context->use_private_key_file(key, asio::ssl::context::pem, error); });
    // ALPN: h2 or nothing (gRPC runs on HTTP/2 only).
    SSL_CTX_set_alpn_select_cb(
        context->native_handle(),
        [](SSL*, const unsigned char** out, unsigned char* out_length, const unsigned char* in,
           unsigned int in_length, void*) -> int {
          return nghttp2_select_next_protocol(const_cast<unsigned char**>(out), out_length, in,
                                              in_length) == 1
                     ? SSL_TLSEXT_ERR_OK
                     : SSL_TLSEXT_ERR_ALERT_FATAL;
        },
        nullptr);
    settings.server_tls = std::move(context);
  }
  if (arguments.get_bool("tls") || !ca.empty()) {
    auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
    context->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                         asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                         asio::ssl::context::no_tlsv1_1);
    if (ca.empty())
      load("the system's CA store", "",
           [&](auto& error) { context->set_default_verify_paths(error); });
    else
      load("tls_ca", ca, [&](auto& error) { context->load_verify_file(ca, error); });
    if (!cert.empty()) {  // our certificate for servers that ask for one (mutual TLS)
      load("tls_cert", cert,
           [&](auto& error) { context->use_certificate_chain_file(cert, error); });
      load("tls_key", key, [&](auto& error) {
        context->use_private_key_file(key, asio::ssl::context::pem, error);
      });
    }
    settings.client_tls = std::move(context);
  }
  return settings;
}

class GrpcTransport final : public Transport {
 public:
  explicit GrpcTransport(const PluginArguments& arguments)
      : executor_(arguments.executor()),
        settings_(read_settings(arguments)),
        pools_(io_executor(executor_), settings_) {}

  ~GrpcTransport() override { close(); }

  std::unique_ptr<Listener> listen(std::string_view address, CallHandler handler) override {
    return make_listener(executor_, settings_, address, std::move(handler));
  }

  void async_call(std::string_view address, std::shared_ptr<const Request> request,
                  ResponseHandler done) override {
    if (auto error = check(address, *request, "call", "the call to", true)) {
      fail(std::move(done), std::move(*error));
      return;
    }
    pools_.call(address, std::move(request), std::move(done));
  }

  void open_stream(std::string_view address, std::shared_ptr<const Request> head,
                   OpenStreamHandler done) override {
    if (auto error = check(address, *head, "stream", "the stream to", false)) {
      asio::post(executor_, [done = std::move(done), error = std::move(*error)]() mutable {
        done(nullptr, std::move(error));
      });
      return;
    }
    pools_.open(address, std::move(head), std::move(done));
  }

  std::string transport_name() const override { return "grpc"; }
  TransportStatistics statistics() const override {
    return {settings_.counts->server.load(std::memory_order_relaxed),
            settings_.counts->client.load(std::memory_order_relaxed)};
  }
  void close() override { pools_.close_all(); }

  // Real gRPC on the wire: any gRPC client can call the node.
  std::map<std::string, std::string> node_metadata() const override {
    return {{"protocol", "grpc"}, {"transport", "grpc"}};
  }

 private:
  // What is refused before anything is sent.
  std::optional<Error> check(std::string_view address, const Request& request, const char* what,
                             const char* sent_phrase, bool with_body) {
    if (request.context.cancelled())
      return cancelled_error(client_error_id, std::string(what) + " cancelled");
    if (request.context.expired())
      return timeout_error(client_error_id, std::string("grpc: deadline passed before ") +
                                                sent_phrase + " " + std::string(address) +
                                                " was sent");
    if (!split_address(address))
      return bad_request(client_error_id,
                         "grpc: cannot call \"" + std::string(address) + "\": expected host:port");
    if (with_body && request.body.size() > settings_.max_message)
      return Error(client_error_id, 413,
                   "grpc: request of " + std::to_string(request.body.size()) +
                       " bytes exceeds max_message " + std::to_string(settings_.max_message) +
                       "; not sent to " + std::string(address));
    return std::nullopt;
  }

  void fail(ResponseHandler done, Error error) {
    asio::post(executor_, [done = std::move(done), error = std::move(error)]() mutable {
      done(Response::failure(std::move(error)));
    });
  }

  asio::any_io_executor executor_;
  Settings settings_;
  ClientPools pools_;
};

const PluginOption grpc_options[] = {
    {"max_message", "int", "4194304",
     "largest message sent or accepted, in bytes (gRPC's default 4 MiB; refused with "
     "RESOURCE_EXHAUSTED / 413 before allocating)",
     "16", "2147483647"},
    {"pool_size", "int", "1",
     "HTTP/2 connections kept per node address; calls are spread across them", "1", "64"},
    {"connect_timeout", "duration", "5s", "how long connecting may take before calls fail with 503",
     "1ms"},
    {"stream_window", "int", "262144",
     "HTTP/2 stream window this side grants: bytes a slow reader buffers before the writer waits",
     "65535", "1073741823"},
    {"max_concurrent_streams", "int", "1000",
     "HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: calls and streams at once per connection", "1",
     "2147483647"},
    {"compression", "string", "identity",
     "gzip: messages sent are gzip-compressed (grpc-encoding: gzip; a server's answers only to "
     "callers whose grpc-accept-encoding names gzip); identity: sent as they are"},
    {"tls", "bool", "false",
     "dial servers over TLS (ALPN h2), verified against the system's CA store or tls_ca"},
    {"tls_ca", "string", "", "CA bundle (PEM) servers' certificates must chain to; implies tls"},
    {"tls_cert", "string", "",
     "certificate chain (PEM): listeners serve TLS with it (and the client presents it)"},
    {"tls_key", "string", "", "the private key (PEM) of tls_cert"},
};

}  // namespace

}  // namespace micro::grpc

MICRO_PLUGIN(transport, grpc,
             "gRPC over HTTP/2 (h2c, nghttp2): stock gRPC clients and servers interoperate",
             micro::grpc::grpc_options,
             [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new micro::grpc::GrpcTransport(arguments);
             })
