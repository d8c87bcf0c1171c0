// micro/http_tracing.hpp — W3C Trace Context over HTTP: reading it from request headers,
// writing it into them, and a trace-aware client for calling HTTP services from handlers.
//
//   micro::http::TracedClient http(service.runtime().executor());
//   service.handle("Orders.Place", [&](const micro::RequestPtr& request, auto respond) {
//     micro::http::Request call{"GET", micro::http::parse_url("http://stock/items/7"), {}, ""};
//     http.async_request(request->context, std::move(call), {},
//                        [request, respond](std::exception_ptr error, micro::http::Response r) {
//                          …respond(…);
//                        });
//   });
//
// The exchange is a CLIENT span under the context's active span (or under a traceparent in its
// metadata), named after the method with the OpenTelemetry HTTP client attributes; the request
// carries its traceparent/tracestate and the context's baggage, so the trace continues in the
// service called. With tracing off the context's headers pass through unchanged.
//
// Threading contract: as <micro/http_client.hpp>: any thread may call; the completion runs on
// the token's associated executor, by default the client's.
#pragma once

#include <exception>
#include <memory>
#include <optional>
#include <utility>

#include <micro/context.hpp>
#include <micro/http_client.hpp>
#include <micro/trace.hpp>

namespace micro::http {

// The remote parent in HTTP request headers (names in any case). Every traceparent field is
// joined with ',' and so is every tracestate field (RFC 9110 §5.3): a traceparent sent twice is
// invalid and the trace restarts; tracestate fields combine in order. nullopt when there is no
// valid traceparent, and then the tracestate is ignored.
std::optional<trace::SpanContext> extract_trace_context(const Fields& headers);
// Writes `context` as the traceparent field (and tracestate when it has one), lowercase names,
// replacing any such fields of any case; an invalid context leaves the headers as they are.
void inject_trace_context(const trace::SpanContext& context, Fields& headers);

// An HTTP client whose exchanges join the caller's trace (see the top of this file). It uses
// the Client it is given, or one of its own.
class TracedClient {
 public:
  // A Client of its own on `executor` (the runtime's I/O threads).
  explicit TracedClient(boost::asio::any_io_executor executor, ClientOptions options = {});
  // Uses `client` (its connection pool), which must outlive this object.
  explicit TracedClient(Client& client) noexcept : client_(&client) {}
  TracedClient(const TracedClient&) = delete;
  TracedClient& operator=(const TracedClient&) = delete;

  // Sends `request` as Client::async_request does: void(std::exception_ptr, Response), a non-2xx
  // status being a Response. When `options` set no deadline the context's applies, and when
  // they carry no cancellation cancelling the context ends the exchange (with a 499). The span
  // ends when the exchange does: http.response.status_code, and error.type with ERROR status
  // for a status of 400 or more or a failure ("timeout", "cancelled", "connection_error" …).
  template <class Token>
  auto async_request(const Context& context, Request request, RequestOptions options,
                     Token&& token) {
    return detail::initiate<void(std::exception_ptr, Response)>(
        client_->executor(), token,
        // The context is copied: a deferred token (use_awaitable) starts the exchange later.
        [this, context, request = std::move(request),
         options = std::move(options)](Client::ResponseCallback done) mutable {
          request_erased(context, std::move(request), std::move(options), std::move(done));
        });
  }

  Client& client() noexcept { return *client_; }

 private:
  // The type-erased core behind the template.
  void request_erased(const Context& context, Request request, RequestOptions options,
                      Client::ResponseCallback done);

  std::unique_ptr<Client> owned_;
  Client* client_;
};

}  // namespace micro::http
