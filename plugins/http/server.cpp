// plugins/http/server.cpp — Go-Micro-format requests in (POST / with the Micro-* headers, Timeout
// and metadata headers), ServerCalls to the core's handler, answers out (200 with the body, or
// with Micro-Error); the client's connection going away cancels its calls.
#include "server.hpp"

#include <micro/http_server.hpp>
#include <micro/log.hpp>

#include "wire.hpp"

namespace micro::http_transport {

namespace {

// One call between its request arriving and its answer being handed to the HTTP server.
class HttpServerCall final : public ServerCall {
 public:
  HttpServerCall(http::ExchangePtr exchange_, std::size_t max_body_)
      : exchange(std::move(exchange_)), max_body(max_body_) {}

  const http::ExchangePtr exchange;
  const std::size_t max_body;
  std::string id;  // Micro-Id, echoed

 private:
  void send(Response&& response) override {
    http::ServerResponse answer;
    answer.headers.reserve(3 + response.metadata.size());
    if (!id.empty()) answer.headers.push_back({std::string(header_id), id});
    if (!response.error && response.body.size() > max_body) {
      response =
          Response::failure(Error(server_error_id, 413,
                                  "http: response body of " + std::to_string(response.body.size()) +
                                      " bytes exceeds max_body " + std::to_string(max_body)));
    }
    if (response.error) {
      answer.headers.push_back({std::string(header_error), response.error->to_json()});
    } else {
      if (!response.content_type.empty()) {
        answer.headers.push_back({"Content-Type", std::move(response.content_type)});
      }
      answer.body = std::move(response.body);
    }
    for (const auto& [key, value] : response.metadata) {
      if (is_call_header(key)) continue;
      if (!is_header_name(key) || !is_header_value(value)) {
        log::debug("transport http", "response metadata \"" + key.substr(0, 60) +
                                         "\" cannot be sent as an HTTP header; dropped");
        continue;
      }
      answer.headers.push_back({key, value});
    }
    exchange->respond(std::move(answer));
  }
};

void refuse(const http::ExchangePtr& exchange, int status, std::string detail) {
  exchange->respond(error_response(Error(server_error_id, status, "http: " + std::move(detail))));
}

// A request as Go-Micro's http transport sends it, made into a call for `handler`.
void serve(const CallHandler& handler, std::size_t max_body, const http::ExchangePtr& exchange) {
  auto& incoming = exchange->request();
  if (incoming.method != "POST") {
    auto answer = error_response(
        Error(server_error_id, 405,
              "http: method " + incoming.method + " is not allowed; calls are POST /"),
        405);
    answer.headers.push_back({"Allow", "POST"});
    exchange->respond(std::move(answer));
    return;
  }
  const std::string_view path =
      std::string_view(incoming.target).substr(0, incoming.target.find('?'));
  if (path != "/") {
    exchange->respond(error_response(
        Error(server_error_id, 404,
              "http: no such path \"" + incoming.target.substr(0, 200) +
                  "\"; calls are POST / with the Micro-Service and Micro-Endpoint headers "
                  "(micro api serves POST /<service>/<endpoint>)"),
        404));
    return;
  }
  const auto& headers = incoming.headers;
  const std::string_view service = micro_header(headers, header_service);
  if (service.empty())
    return refuse(exchange, 400, "missing header Micro-Service (the service called)");
  std::string_view endpoint = micro_header(headers, header_endpoint);
  if (endpoint.empty()) endpoint = micro_header(headers, header_method);
  if (endpoint.empty()) {
    return refuse(exchange, 400,
                  "missing header Micro-Endpoint (or Micro-Method): the endpoint called, e.g. "
                  "Greeter.Hello");
  }
  std::optional<std::uint64_t> timeout;
  if (incoming.count_header(header_timeout) > 1) {
    return refuse(exchange, 400, "header Timeout appears more than once");
  }
  const std::string_view timeout_text = http::find_field(headers, header_timeout);
  if (!timeout_text.empty()) {
    timeout = parse_timeout(timeout_text);
    if (!timeout) {
      return refuse(exchange, 400,
                    "header Timeout \"" + std::string(timeout_text.substr(0, 60)) +
                        "\" is not a whole number of nanoseconds");
    }
  }

  auto call = ServerCall::make<HttpServerCall>(exchange, max_body);
  Request& request = call->request();
  request.service = std::string(service);
  request.endpoint = std::string(endpoint);
  request.content_type = std::string(http::find_field(headers, "Content-Type"));
  call->id = std::string(micro_header(headers, header_id));
  // Re-based on our clock from when the head arrived; absurd budgets (over ~30 years) and 0
  // count as none.
  constexpr std::uint64_t longest = 1'000'000'000'000'000'000ULL;
  if (timeout && *timeout != 0 && *timeout <= longest) {
    request.context.set_deadline(
        incoming.received + std::chrono::duration_cast<Context::Clock::duration>(
                                std::chrono::nanoseconds(static_cast<std::int64_t>(*timeout))));
  }
  Metadata& metadata = request.context.metadata();
  headers_to_metadata(headers, metadata);
  // Go-Micro's servers tell handlers who is on each end of the socket.
  metadata.set("Local", incoming.local);
  metadata.set("Remote", incoming.remote);
  request.body = std::move(incoming.body);

  // The client's connection going away (its cancellation closes it) cancels the call.
  exchange->on_abandoned([weak = std::weak_ptr<HttpServerCall>(call)] {
    if (auto abandoned = weak.lock()) abandoned->cancel();
  });
  try {
    handler(call);
  } catch (const Exception& e) {
    call->respond(Response::failure(e.error()));
  } catch (const std::exception& e) {
    call->respond(Response::failure(internal_error(server_error_id, e.what())));
  }
}

}  // namespace

class HttpListener final : public Listener {
 public:
  HttpListener(std::unique_ptr<http::Server> server, std::shared_ptr<ListenerSet> listeners)
      : server_(std::move(server)), listeners_(std::move(listeners)) {
    std::lock_guard lock(listeners_->mutex_);
    listeners_->servers_.push_back(server_.get());
  }
  ~HttpListener() override {
    close();
    std::lock_guard lock(listeners_->mutex_);
    std::erase(listeners_->servers_, server_.get());
  }

  std::string address() const override { return server_->address(); }
  void stop_accepting() override { server_->stop_accepting(); }
  void close() override { server_->close(); }

 private:
  std::unique_ptr<http::Server> server_;
  std::shared_ptr<ListenerSet> listeners_;
};

std::uint64_t ListenerSet::connections_open() const {
  std::lock_guard lock(mutex_);
  std::uint64_t open = 0;
  for (const auto* server : servers_) open += server->statistics().connections_open;
  return open;
}

std::unique_ptr<Listener> make_listener(boost::asio::any_io_executor executor,
                                        const Settings& settings, std::string_view address,
                                        CallHandler handler,
                                        std::shared_ptr<ListenerSet> listeners) {
  http::ServerOptions options;
  options.header_limit = settings.max_header;
  options.body_limit = settings.max_body;
  options.header_timeout = settings.header_timeout;
  options.body_timeout = settings.body_timeout;
  options.idle_timeout = settings.idle_timeout;
  options.max_connections = settings.max_connections;
  options.connection_table_name = "http";
  // The HTTP server's own refusals (400, 408, 413, 431) in Go-Micro's error JSON.
  options.refusal = [](int status, std::string message) {
    return error_response(Error(server_error_id, status, "http: " + std::move(message)), status);
  };
  const std::size_t max_body = settings.max_body;
  auto server = std::make_unique<http::Server>(
      std::move(executor), std::move(options),
      [handler = std::move(handler), max_body](http::ExchangePtr exchange) {
        serve(handler, max_body, exchange);
      });
  server->listen(address);
  return std::make_unique<HttpListener>(std::move(server), std::move(listeners));
}

}  // namespace micro::http_transport
