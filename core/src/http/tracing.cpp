// http/tracing.cpp — W3C Trace Context in HTTP headers (extract, inject) and TracedClient: a
// CLIENT span per exchange with the OpenTelemetry HTTP client conventions (span name = method;
// http.request.method, url.full, server.address, server.port, http.response.status_code,
// error.type), the context carried in the request, the context's deadline and cancellation.
#include <micro/http_tracing.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <micro/error.hpp>

namespace micro::http {

namespace {

constexpr std::string_view traceparent_name = "traceparent";
constexpr std::string_view tracestate_name = "tracestate";
constexpr std::string_view baggage_name = "baggage";

// Every field named `name` (any case) joined with ',' (RFC 9110 §5.3).
std::string joined_fields(const Fields& headers, std::string_view name) {
  std::string joined;
  bool first = true;
  for (const Field& field : headers) {
    if (!iequals(field.name, name)) continue;
    if (!first) joined += ',';
    joined += field.value;
    first = false;
  }
  return joined;
}

bool has_field(const Fields& headers, std::string_view name) {
  for (const Field& field : headers)
    if (iequals(field.name, name)) return true;
  return false;
}

// Replaces every field named `name` (any case) by one, lowercase-named.
void replace_field(Fields& headers, std::string_view name, std::string value) {
  std::erase_if(headers, [name](const Field& field) { return iequals(field.name, name); });
  headers.push_back({std::string(name), std::move(value)});
}

// The methods the HTTP conventions know; others are reported as "_OTHER".
bool known_method(std::string_view method) {
  static constexpr std::array<std::string_view, 9> known{
      "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"};
  for (std::string_view candidate : known)
    if (method == candidate) return true;
  return false;
}

// url.full with the values of the query keys the conventions call sensitive replaced by
// "REDACTED" (signatures and access keys in pre-signed URLs).
std::string full_url(const Url& url) {
  std::string text = url.text();
  std::size_t query = text.find('?');
  if (query == std::string::npos) return text;
  static constexpr std::array<std::string_view, 4> sensitive{"AWSAccessKeyId", "Signature", "sig",
                                                             "X-Goog-Signature"};
  std::string redacted = text.substr(0, query + 1);
  std::string_view rest = std::string_view(text).substr(query + 1);
  std::size_t fragment = rest.find('#');
  std::string_view tail = fragment == std::string_view::npos ? "" : rest.substr(fragment);
  rest = rest.substr(0, fragment);
  bool first = true;
  while (true) {
    std::size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    std::size_t equals = pair.find('=');
    std::string_view key = pair.substr(0, equals);
    if (!first) redacted += '&';
    first = false;
    bool secret = equals != std::string_view::npos;
    if (secret) {
      secret = false;
      for (std::string_view candidate : sensitive) secret = secret || key == candidate;
    }
    redacted += secret ? std::string(key) + "=REDACTED" : std::string(pair);
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return redacted += tail;
}

void add_start_attributes(std::vector<trace::Attribute>& attributes, const Request& request) {
  if (known_method(request.method)) {
    attributes.emplace_back("http.request.method", request.method);
  } else {
    attributes.emplace_back("http.request.method", std::string("_OTHER"));
    attributes.emplace_back("http.request.method_original", request.method);
  }
  attributes.emplace_back("url.full", full_url(request.url));
  attributes.emplace_back("server.address", request.url.host);
  std::int64_t port = 0;
  for (char c : request.url.port) port = port * 10 + (c - '0');  // parse_url checked it
  attributes.emplace_back("server.port", port);
  attributes.emplace_back("network.protocol.version", std::string("1.1"));
}

// error.type for an exchange that failed before a response: a low-cardinality class.
std::string failure_type(std::int32_t code) {
  switch (code) {
    case 400:
      return "invalid_request";  // the request could not be sent as given
    case 408:
      return "timeout";
    case 499:
      return "cancelled";
    case 502:
      return "invalid_response";  // malformed, or a body over the limit
    default:
      return "connection_error";  // 503: unreachable, refused, lost
  }
}

// The span's end: status code, or the failure, then end().
void end_span(trace::Span& span, const std::exception_ptr& error, const Response& response) {
  if (span.recording()) {
    if (error) {
      try {
        std::rethrow_exception(error);
      } catch (const Exception& e) {
        span.set_attribute("error.type", failure_type(e.error().code));
        span.set_status(trace::StatusCode::error, e.error().detail);
      } catch (const std::exception& e) {
        span.set_attribute("error.type", std::string("exception"));
        span.set_status(trace::StatusCode::error, e.what());
      }
    } else {
      span.set_attribute("http.response.status_code", static_cast<std::int64_t>(response.status));
      // Client spans: 4xx and 5xx are errors; the code says which, so no description.
      if (response.status >= 400) {
        span.set_attribute("error.type", std::to_string(response.status));
        span.set_status(trace::StatusCode::error);
      }
    }
  }
  span.end();
}

// Tracing off: the context's own traceparent and tracestate go on unchanged, as a proxy's do
// (the spec forbids changing tracestate when traceparent is not changed).
void pass_through(const Metadata& metadata, Fields& headers) {
  const std::string* traceparent = metadata.find(traceparent_name);
  if (traceparent == nullptr || !trace::parse_traceparent(*traceparent)) return;
  replace_field(headers, traceparent_name, *traceparent);
  const std::string* tracestate = metadata.find(tracestate_name);
  if (tracestate != nullptr && !tracestate->empty())
    replace_field(headers, tracestate_name, *tracestate);
  else
    std::erase_if(headers, [](const Field& field) { return iequals(field.name, tracestate_name); });
}

// The context's baggage, unless the request brings its own; re-encoded, so a malformed
// header is not passed on.
void forward_baggage(const Metadata& metadata, Fields& headers) {
  const std::string* baggage = metadata.find(baggage_name);
  if (baggage == nullptr || has_field(headers, baggage_name)) return;
  std::string encoded = trace::format_baggage(trace::parse_baggage(*baggage));
  if (!encoded.empty()) headers.push_back({std::string(baggage_name), std::move(encoded)});
}

}  // namespace

std::optional<trace::SpanContext> extract_trace_context(const Fields& headers) {
  return trace::extract(joined_fields(headers, traceparent_name),
                        joined_fields(headers, tracestate_name));
}

void inject_trace_context(const trace::SpanContext& context, Fields& headers) {
  if (!context.valid()) return;
  replace_field(headers, traceparent_name, trace::format_traceparent(context));
  if (context.trace_state.empty())
    std::erase_if(headers, [](const Field& field) { return iequals(field.name, tracestate_name); });
  else
    replace_field(headers, tracestate_name, context.trace_state);
}

TracedClient::TracedClient(boost::asio::any_io_executor executor, ClientOptions options)
    : owned_(std::make_unique<Client>(std::move(executor), std::move(options))),
      client_(owned_.get()) {}

void TracedClient::request_erased(const Context& context, Request request, RequestOptions options,
                                  Client::ResponseCallback done) {
  trace::Tracer& tracer = trace::tracer();
  std::shared_ptr<trace::Span> span;
  if (tracer.enabled()) {
    // The parent: the context's active span, else a traceparent its metadata carries (a
    // context built by hand, or a handler's without the server wrapper).
    const trace::SpanContext* parent = nullptr;
    std::optional<trace::SpanContext> upstream;
    if (context.span() && context.span()->context().valid()) {
      parent = &context.span()->context();
    } else if ((upstream = trace::extract(context.metadata()))) {
      parent = &*upstream;
    }
    trace::StartOptions start;
    start.kind = trace::SpanKind::client;
    start.parent = upstream ? &*upstream : nullptr;
    if (tracer.may_record(parent)) add_start_attributes(start.attributes, request);
    span = tracer.start_span(
        known_method(request.method) ? std::string_view(request.method) : std::string_view("HTTP"),
        context, start);
  }
  if (span && span->context().valid())
    inject_trace_context(span->context(), request.headers);
  else
    pass_through(context.metadata(), request.headers);
  forward_baggage(context.metadata(), request.headers);

  if (options.deadline == no_deadline && context.has_deadline())
    options.deadline = context.deadline();
  // The context's cancellation reaches the exchange through an http::Cancellation of its own;
  // a context that never had a cancellation state gets none (nothing allocated).
  std::shared_ptr<CancellationState> cancelled_by;
  std::uint64_t registration = 0;
  if (!options.cancellation) {
    cancelled_by = context.existing_cancellation();
    if (cancelled_by) {
      auto cancellation = std::make_shared<Cancellation>();
      options.cancellation = cancellation;
      registration = cancelled_by->on_cancel([cancellation] { cancellation->cancel(); });
    }
  }
  std::string description = request.method + " " + request.url.text();
  client_->async_request(
      std::move(request), options,
      [span = std::move(span), cancelled_by = std::move(cancelled_by), registration,
       description = std::move(description),
       done = std::move(done)](std::exception_ptr error, Response response) mutable {
        if (cancelled_by) {
          cancelled_by->forget(registration);
          // The client says 503 "cancelled"; the caller asked for it, which is a 499.
          if (error && cancelled_by->cancelled())
            error = std::make_exception_ptr(
                Exception(cancelled_error("micro.http", description + ": cancelled")));
        }
        if (span) end_span(*span, error, response);
        done(std::move(error), std::move(response));
      });
}

}  // namespace micro::http
