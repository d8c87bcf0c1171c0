// plugins/http/http_transport.cpp — the http transport plugin: its options, the
// micro::Transport tying the calling and serving sides together, and the entry point the loader
// finds.
#include <boost/asio/post.hpp>

#include <micro/plugin.hpp>
#include <micro/transport.hpp>

#include "client.hpp"
#include "server.hpp"
#include "settings.hpp"

namespace micro::http_transport {

namespace {

// Ranges are the descriptor's (http_options): the loader has checked them.
Settings read_settings(const PluginArguments& arguments) {
  Settings settings;
  settings.max_body = static_cast<std::size_t>(arguments.get_int("max_body"));
  settings.max_header = static_cast<std::size_t>(arguments.get_int("max_header"));
  settings.pool_size = static_cast<std::size_t>(arguments.get_int("pool_size"));
  settings.connect_timeout = arguments.get_duration("connect_timeout");
  settings.header_timeout = arguments.get_duration("header_timeout");
  settings.body_timeout = arguments.get_duration("body_timeout");
  settings.idle_timeout = arguments.get_duration("idle_timeout");
  settings.max_connections = static_cast<std::size_t>(arguments.get_int("max_connections"));
  return settings;
}

class HttpTransport final : public Transport {
 public:
  explicit HttpTransport(const PluginArguments& arguments)
      : executor_(arguments.executor()),
        settings_(read_settings(arguments)),
        caller_(executor_, settings_) {}

  ~HttpTransport() override { close(); }

  std::unique_ptr<Listener> listen(std::string_view address, CallHandler handler) override {
    return make_listener(executor_, settings_, address, std::move(handler), listeners_);
  }

  void async_call(std::string_view address, std::shared_ptr<const Request> request,
                  ResponseHandler done) override {
    caller_.async_call(address, std::move(request), std::move(done));
  }

  // Go-Micro's HTTP transport wire has no stream form here: opening one is refused with 501
  // (on the executor, as every completion), and the core does not retry it.
  void open_stream(std::string_view address, std::shared_ptr<const Request> request,
                   OpenStreamHandler done) override {
    Error error("micro.client", 501,
                "the http transport cannot stream (opening " + request->service + "." +
                    request->endpoint + " at " + std::string(address) +
                    "); use transport=tcp for streams");
    boost::asio::post(executor_, [done = std::move(done), error = std::move(error)]() mutable {
      done(nullptr, std::move(error));
    });
  }
  std::string transport_name() const override { return "http"; }

  void close() override { caller_.close(); }

  // Go-Micro clients pick their codec and transport by these.
  std::map<std::string, std::string> node_metadata() const override {
    return {{"protocol", "mucp"}, {"transport", "http"}};
  }

  TransportStatistics statistics() const override {
    return {listeners_->connections_open(), caller_.connections_open()};
  }

 private:
  boost::asio::any_io_executor executor_;
  const Settings settings_;
  Caller caller_;
  std::shared_ptr<ListenerSet> listeners_ = std::make_shared<ListenerSet>();
};

const PluginOption http_options[] = {
    {"max_body", "int", "4194304",
     "largest request or response body sent or accepted, in bytes (refused with 413)", "0",
     "4294967295"},
    {"max_header", "int", "16384",
     "largest request head (request line and headers) accepted, in bytes (refused with 431)",
     "1024", "1048576"},
    {"pool_size", "int", "64", "idle connections kept per node; more open while calls need them",
     "1", "4096"},
    {"connect_timeout", "duration", "5s",
     "how long connecting may take before the call fails with 503", "1ms"},
    {"header_timeout", "duration", "10s", "a request head must arrive within this (408)", "1ms"},
    {"body_timeout", "duration", "30s", "a request body must arrive within this of its head (408)",
     "1ms"},
    {"idle_timeout", "duration", "60s", "an idle kept-alive server connection closes after this",
     "1ms"},
    {"max_connections", "int", "10000",
     "server connections open at once; further ones are closed at once", "1", "1000000"},
};

}  // namespace

}  // namespace micro::http_transport

MICRO_PLUGIN(transport, http,
             "Go-Micro's RPC over HTTP/1.1: POST / with Micro-* headers, pooled keep-alive",
             micro::http_transport::http_options,
             [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new micro::http_transport::HttpTransport(arguments);
             })
