// `micro api`: an HTTP/1.1 gateway that lets plain HTTP callers (curl, browsers, any
// OpenTelemetry-instrumented client) call micro services with JSON.
//
//   POST /<service>/<Endpoint>           JSON body → the call → 200 with the JSON answer
//   POST /<service>/<Service>/<Method>   the same, Go-Micro api style (endpoint Service.Method)
//   GET  /                               the registered services
//   GET  /<service>                      one service: versions, endpoints with schemas, nodes
//   GET  /health                         liveness
//   OPTIONS …                            CORS preflight for the allowed origins
//
// Calls go through the normal client pipeline of the Microservice given (registry cache,
// selector, retries, call wrappers, any transport). Failures answer with the error's code as
// the HTTP status and Go-Micro's error JSON {id, code, detail, status} as the body. The W3C
// trace context of the HTTP request (traceparent, tracestate, baggage) is continued: the
// gateway's SERVER span is its child and the call carries it on. docs/design.md, "micro api",
// explains the routes and the error mapping.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <micro/http_server.hpp>
#include <micro/service.hpp>

namespace micro::gateway {

struct GatewayOptions {
  std::string address = "127.0.0.1:8080";
  // Each call's budget, retries included. Zero: the client's (client_request_timeout).
  std::chrono::milliseconds timeout{0};
  // The most a caller's Timeout header may ask for.
  std::chrono::milliseconds max_timeout{std::chrono::minutes(1)};
  // Origins browsers may call from ("https://app.example.com", or "*" for any); none by
  // default, so no page elsewhere can use a visitor's browser to reach the services.
  std::vector<std::string> cors_origins;
  // How long stop() waits for calls in flight.
  std::chrono::milliseconds drain_timeout{std::chrono::seconds(10)};
  http::ServerOptions http;  // limits: body_limit (413), header_limit (431), read timeouts
};

struct GatewayStatistics {
  std::uint64_t requests = 0;  // answered by the gateway (the HTTP server's own refusals apart)
  std::uint64_t calls = 0;     // handed to the client pipeline
  std::uint64_t failed = 0;    // answered with a status of 400 or more
  std::uint64_t in_flight = 0;
};

// Parses `micro api`'s own flags (--address, --timeout, --max_timeout, --cors_origins,
// --max_body; '-' or '_' alike, "--flag=value" or "--flag value"), on top of what `config`
// says (client_request_timeout, drain_timeout). Throws std::invalid_argument naming the flag.
GatewayOptions parse_gateway_flags(const std::vector<std::string>& arguments, const Config& config);

// Threading contract: start() and stop() from one controlling thread; requests are handled
// on the runtime's I/O threads and never block them (registry listings run on the blocking
// executor). The Microservice must outlive the Gateway.
class Gateway {
 public:
  Gateway(Microservice& service, GatewayOptions options);
  ~Gateway();  // stop()
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Listens on options.address. Throws micro::Exception when the address cannot be used.
  void start();
  // The bound address, "host:port".
  std::string address() const;
  // Stops accepting, waits for calls in flight up to drain_timeout, closes every connection.
  // Returns how many requests were still unanswered (0 when drained).
  std::size_t stop();

  GatewayStatistics statistics() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace micro::gateway
