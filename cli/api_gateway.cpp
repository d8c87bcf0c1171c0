// `micro api` (see api_gateway.hpp): routing of HTTP requests to calls, the error mapping,
// header → metadata, W3C trace context continuation, CORS, and a draining stop.
#include "api_gateway.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

#include <boost/asio/post.hpp>

#include <nlohmann/json.hpp>

#include <micro/codec.hpp>
#include <micro/error.hpp>
#include <micro/http_tracing.hpp>
#include <micro/log.hpp>
#include <micro/plugin.hpp>
#include <micro/text.hpp>
#include <micro/trace.hpp>

namespace micro::gateway {

namespace {

constexpr const char* gateway_id = "micro.api";
constexpr std::string_view json_content_type_value = "application/json";
constexpr std::string_view routes_help =
    "expected POST /<service>/<Endpoint>, POST /<service>/<Service>/<Method>, GET /<service>, "
    "GET / or GET /health";

// ---- Routes ------------------------------------------------------------------------------

enum class RouteKind { root, health, service, call, unknown };

struct Route {
  RouteKind kind = RouteKind::unknown;
  std::string service;
  std::string endpoint;
  std::string_view pattern;  // http.route: the template that matched
  std::string_view allow;    // the methods the route answers
};

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// One path segment with its %XX escapes decoded; nullopt for a broken escape.
std::optional<std::string> decode_segment(std::string_view segment) {
  if (segment.find('%') == std::string_view::npos) return std::string(segment);
  std::string decoded;
  decoded.reserve(segment.size());
  for (std::size_t i = 0; i < segment.size(); ++i) {
    if (segment[i] != '%') {
      decoded += segment[i];
      continue;
    }
    int high = i + 1 < segment.size() ? hex_value(segment[i + 1]) : -1;
    int low = i + 2 < segment.size() ? hex_value(segment[i + 2]) : -1;
    if (high < 0 || low < 0) return std::nullopt;
    decoded += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return decoded;
}

// The path of a request target: without query and fragment.
std::string_view path_of(std::string_view target) {
  return target.substr(0, target.find_first_of("?#"));
}

// Routes a path. Throws micro::Exception (400) for a target that is not a path or a broken
// escape, naming it.
Route route_of(std::string_view path) {
  if (path.empty() || path.front() != '/')
    throw Exception(bad_request(gateway_id, "request target '" + std::string(path) +
                                                "' is not a path; " + std::string(routes_help)));
  std::string_view rest = path.substr(1);
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);  // "/greeter/" is "/greeter"
  std::string_view segments[4];
  std::size_t count = 0;
  while (!rest.empty()) {
    if (count == 4) return Route{};
    std::size_t slash = rest.find('/');
    segments[count++] = rest.substr(0, slash);
    if (segments[count - 1].empty()) return Route{};  // "//": no route has an empty segment
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    if (slash != std::string_view::npos && rest.empty()) return Route{};
  }
  auto decoded = [&](std::size_t index) {
    auto segment = decode_segment(segments[index]);
    if (!segment)
      throw Exception(bad_request(
          gateway_id, "broken %-escape in path segment '" + std::string(segments[index]) + "'"));
    return std::move(*segment);
  };
  Route route;
  switch (count) {
    case 0:
      route.kind = RouteKind::root;
      route.pattern = "/";
      route.allow = "GET, OPTIONS";
      break;
    case 1:
      route.service = decoded(0);
      route.kind = route.service == "health" ? RouteKind::health : RouteKind::service;
      route.pattern = route.kind == RouteKind::health ? "/health" : "/{service}";
      route.allow = "GET, OPTIONS";
      break;
    case 2:
      route.kind = RouteKind::call;
      route.service = decoded(0);
      route.endpoint = decoded(1);
      route.pattern = "/{service}/{endpoint}";
      route.allow = "POST, OPTIONS";
      break;
    case 3:
      route.kind = RouteKind::call;
      route.service = decoded(0);
      route.endpoint = decoded(1);
      route.endpoint += '.';
      route.endpoint += decoded(2);
      route.pattern = "/{service}/{service_type}/{method}";
      route.allow = "POST, OPTIONS";
      break;
    default:
      break;
  }
  return route;
}

// ---- Headers → metadata ------------------------------------------------------------------

// Whether `name` is one of the comma-separated tokens of `list`.
bool in_token_list(std::string_view list, std::string_view name) {
  while (!list.empty()) {
    std::size_t comma = list.find(',');
    std::string_view token = list.substr(0, comma);
    while (!token.empty() && (token.front() == ' ' || token.front() == '\t'))
      token.remove_prefix(1);
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
    if (iequals(token, name)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

// Fields that stay with the HTTP hop: hop-by-hop ones (RFC 9110 §7.6.1, plus those the
// Connection field names), those describing this message's framing and encoding, and the
// ones the gateway reads itself (trace context, Timeout).
bool stays_with_the_hop(std::string_view name, std::string_view connection) {
  static constexpr std::string_view dropped[] = {"connection",
                                                 "keep-alive",
                                                 "proxy-connection",
                                                 "proxy-authenticate",
                                                 "proxy-authorization",
                                                 "te",
                                                 "trailer",
                                                 "transfer-encoding",
                                                 "upgrade",
                                                 "host",
                                                 "content-length",
                                                 "content-type",
                                                 "expect",
                                                 "accept-encoding",
                                                 "traceparent",
                                                 "tracestate",
                                                 "baggage",
                                                 "timeout"};
  for (std::string_view drop : dropped)
    if (iequals(name, drop)) return true;
  return !connection.empty() && in_token_list(connection, name);
}

void copy_headers(const http::ServerRequest& request, Metadata& metadata) {
  std::string_view connection = request.header("Connection");
  for (const auto& field : request.headers) {
    if (stays_with_the_hop(field.name, connection)) continue;
    if (const std::string* existing = metadata.find(field.name)) {
      // A repeated field is one list (RFC 9110 §5.3), as metadata has one value per key.
      metadata.set(field.name, *existing + "," + field.value);
    } else {
      metadata.set(field.name, field.value);
    }
  }
}

// Whether a service's metadata entry can be an HTTP field as it is: a token name and a value
// without control characters (no CR/LF to split the answer with).
bool is_field(std::string_view name, std::string_view value) noexcept {
  if (name.empty()) return false;
  for (char c : name) {
    auto byte = static_cast<unsigned char>(c);
    if (byte <= 0x20 || byte >= 0x7f ||
        std::string_view("\"(),/:;<=>?@[\\]{}").find(c) != std::string_view::npos)
      return false;
  }
  for (char c : value) {
    auto byte = static_cast<unsigned char>(c);
    if ((byte < 0x20 && c != '\t') || byte == 0x7f) return false;
  }
  return true;
}

// The Timeout header: decimal nanoseconds as Go-Micro sends it, or a duration like "2s".
std::optional<std::chrono::milliseconds> parse_timeout(std::string_view text) {
  if (!text.empty() &&
      std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    if (text.size() > 18) return std::nullopt;  // beyond any sensible deadline, and int64
    std::int64_t nanoseconds = std::stoll(std::string(text));
    if (nanoseconds <= 0) return std::nullopt;
    return std::chrono::ceil<std::chrono::milliseconds>(std::chrono::nanoseconds(nanoseconds));
  }
  auto duration = parse_duration(text);
  if (!duration || duration->count() <= 0) return std::nullopt;
  return duration;
}

// "host:port" → host and port ("[::1]:80" too); port 0 when there is none.
std::pair<std::string_view, std::int64_t> split_address(std::string_view address) {
  std::string_view host = address;
  std::string_view port;
  if (!address.empty() && address.front() == '[') {
    std::size_t close = address.find(']');
    if (close != std::string_view::npos) {
      host = address.substr(1, close - 1);
      if (close + 1 < address.size() && address[close + 1] == ':') port = address.substr(close + 2);
    }
  } else if (std::size_t colon = address.rfind(':');
             colon != std::string_view::npos && address.find(':') == colon) {
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
  }
  std::int64_t number = 0;
  for (char c : port) {
    if (c < '0' || c > '9' || number > 65535) return {host, 0};
    number = number * 10 + (c - '0');
  }
  return {host, number};
}

void add_address(std::vector<trace::Attribute>& attributes, std::string_view address,
                 const char* address_key, const char* port_key) {
  if (address.empty()) return;
  auto [host, port] = split_address(address);
  attributes.emplace_back(address_key, std::string(host));
  if (port > 0) attributes.emplace_back(port_key, port);
}

Error gateway_error(int code, std::string detail) {
  return Error(gateway_id, code, std::move(detail));
}

bool is_standard_method(std::string_view method) noexcept {
  static constexpr std::string_view methods[] = {"GET",     "POST",    "PUT",   "DELETE", "HEAD",
                                                 "OPTIONS", "CONNECT", "TRACE", "PATCH"};
  return std::find(std::begin(methods), std::end(methods), method) != std::end(methods);
}

// The HTTP status for an error: its code when it is one, else 500.
int status_of(const Error& error) noexcept {
  return error.code >= 400 && error.code <= 599 ? error.code : 500;
}

std::string_view strip_nlohmann_prefix(std::string_view what) {
  // "[json.exception.parse_error.101] parse error at line 1, column 7: …" → "parse error at …"
  if (!what.empty() && what.front() == '[') {
    std::size_t close = what.find("] ");
    if (close != std::string_view::npos) what.remove_prefix(close + 2);
  }
  return what;
}

}  // namespace

// ---- The gateway -------------------------------------------------------------------------

struct Gateway::State : std::enable_shared_from_this<Gateway::State> {
  Microservice& service;
  GatewayOptions options;
  std::chrono::milliseconds timeout;
  std::unique_ptr<http::Server> server;
  std::string bound_address;

  std::atomic<std::uint64_t> requests{0}, calls{0}, failed{0}, in_flight{0};
  std::atomic<bool> stopping{false};
  std::mutex drain_mutex;
  std::condition_variable drained;

  State(Microservice& service_, GatewayOptions options_)
      : service(service_),
        options(std::move(options_)),
        timeout(options.timeout.count() > 0 ? options.timeout
                                            : service.client().options().timeout) {}

  // One request from its arrival to its answer.
  struct Pending {
    std::shared_ptr<State> gateway;
    http::ExchangePtr exchange;
    std::shared_ptr<trace::Span> span;  // the SERVER span; null when tracing is off
    Route route;
  };
  using PendingPtr = std::shared_ptr<Pending>;

  // The allowed origin to answer with ("*" or the origin itself), or "" when `origin` may not
  // call.
  std::string_view allowed_origin(std::string_view origin) const noexcept {
    if (origin.empty()) return {};
    for (const auto& allowed : options.cors_origins) {
      if (allowed == "*") return "*";
      if (allowed == origin) return origin;
    }
    return {};
  }

  // Answers and ends the span; `description` says why a 5xx failed (the error's detail).
  void finish(Pending& pending, int status, std::string body, http::Fields headers = {},
              std::string_view description = {}) {
    const http::ServerRequest& request = pending.exchange->request();
    http::ServerResponse response;
    response.status = status;
    response.headers = std::move(headers);
    if (!body.empty() || status != 204)
      response.headers.push_back({"Content-Type", std::string(json_content_type_value)});
    if (std::string_view origin = allowed_origin(request.header("Origin")); !origin.empty()) {
      response.headers.push_back({"Access-Control-Allow-Origin", std::string(origin)});
      response.headers.push_back({"Vary", "Origin"});
    }
    response.body = std::move(body);
    if (status >= 400) failed.fetch_add(1, std::memory_order_relaxed);
    if (pending.span) {
      trace::Span& span = *pending.span;
      span.set_attribute("http.response.status_code", static_cast<std::int64_t>(status));
      // HTTP server conventions: 4xx are the caller's, only 5xx make the span an error.
      if (status >= 500) {
        std::string code = std::to_string(status);
        span.set_status(trace::StatusCode::error,
                        description.empty() ? std::string_view(code) : description);
        span.set_attribute("error.type", std::move(code));
      }
      span.end();  // before the answer leaves, so the caller never sees it unfinished
    }
    pending.exchange->respond(std::move(response));
    requests.fetch_add(1, std::memory_order_relaxed);
  }

  void fail(Pending& pending, const Error& error, http::Fields headers = {}) {
    finish(pending, status_of(error), error.to_json(), std::move(headers), error.detail);
  }

  // ---- W3C Trace Context ----

  // Starts the SERVER span as the child of the request's traceparent (every traceparent
  // field joined with ',', so a duplicated one is invalid and the trace restarts, as the spec
  // asks), makes it the context's active span and puts it into the metadata; without a tracer
  // the request's own valid context and baggage pass on unchanged.
  void continue_trace(Pending& pending, Context& context) {
    const http::ServerRequest& request = pending.exchange->request();
    // The W3C rules for HTTP fields (repeats joined, so a second traceparent is invalid;
    // tracestate only with a valid traceparent) live once, in <micro/http_tracing.hpp>.
    std::optional<trace::SpanContext> remote = http::extract_trace_context(request.headers);
    if (std::string baggage = request.joined_header("baggage"); !baggage.empty()) {
      std::string error;
      trace::Baggage parsed = trace::parse_baggage(baggage, &error);
      if (!parsed.empty())  // whole when valid; within the limits when they cut it
        context.metadata().set("baggage",
                               error.empty() ? std::move(baggage) : trace::format_baggage(parsed));
    }

    trace::Tracer& tracer = trace::tracer();
    if (!tracer.enabled()) {
      if (remote) trace::inject(*remote, context.metadata());
      return;
    }
    thread_local trace::StartOptions start;  // reused: the attribute vector keeps its capacity
    start.kind = trace::SpanKind::server;
    start.parent = remote ? &*remote : nullptr;
    start.attributes.clear();
    // HTTP semantic conventions: a method outside the standard set is "_OTHER" (span "HTTP"),
    // so a caller cannot mint span names and attribute values at will.
    const bool known = is_standard_method(request.method);
    std::string name(known ? std::string_view(request.method) : std::string_view("HTTP"));
    if (pending.route.kind != RouteKind::unknown) {
      name += ' ';
      name += pending.route.pattern;
    }
    if (tracer.may_record(start.parent)) {
      auto& attributes = start.attributes;
      std::string_view path = path_of(request.target);
      attributes.emplace_back("http.request.method",
                              known ? request.method : std::string("_OTHER"));
      if (!known) attributes.emplace_back("http.request.method_original", request.method);
      attributes.emplace_back("url.path", std::string(path));
      attributes.emplace_back("url.scheme", std::string("http"));
      if (pending.route.kind != RouteKind::unknown)
        attributes.emplace_back("http.route", std::string(pending.route.pattern));
      std::string_view host = request.header("Host");
      add_address(attributes, host.empty() ? std::string_view(request.local) : host,
                  "server.address", "server.port");
      add_address(attributes, request.remote, "client.address", "client.port");
      attributes.emplace_back("network.protocol.version",
                              std::string(request.version == 10 ? "1.0" : "1.1"));
      if (std::string_view agent = request.header("User-Agent"); !agent.empty())
        attributes.emplace_back("user_agent.original", std::string(agent));
    }
    pending.span = tracer.start_span(name, context, start);
    start.attributes.clear();
    context.set_span(pending.span);
    // The call's client span becomes the child (the trace wrapper reads the active span); the
    // metadata carries it too, for a pipeline without the trace wrapper.
    trace::inject(pending.span->context(), context.metadata());
  }

  // ---- Requests ----

  void handle(http::ExchangePtr exchange) {
    auto pending = std::make_shared<Pending>();
    pending->gateway = shared_from_this();
    pending->exchange = std::move(exchange);
    const http::ServerRequest& request = pending->exchange->request();
    Context context;
    try {
      pending->route = route_of(path_of(request.target));
    } catch (const Exception& e) {
      continue_trace(*pending, context);
      fail(*pending, e.error());
      return;
    }
    continue_trace(*pending, context);
    try {
      dispatch(pending, std::move(context));
    } catch (const Exception& e) {
      fail(*pending, e.error());
    } catch (const std::exception& e) {
      fail(*pending, internal_error(gateway_id, e.what()));
    }
  }

  void dispatch(const PendingPtr& pending, Context&& context) {
    const http::ServerRequest& request = pending->exchange->request();
    const Route& route = pending->route;
    if (route.kind == RouteKind::unknown) {
      fail(*pending, not_found(gateway_id, "no route for " + request.method + " " +
                                               std::string(path_of(request.target)) + "; " +
                                               std::string(routes_help)));
      return;
    }
    if (request.method == "OPTIONS") {
      answer_options(*pending);
      return;
    }
    const bool wants_get = route.kind != RouteKind::call;
    if (request.method != (wants_get ? "GET" : "POST")) {
      fail(*pending,
           gateway_error(
               405, request.method + " " + std::string(path_of(request.target)) +
                        " is not served; " +
                        (wants_get ? "this path answers GET" : "calls are POST with a JSON body")),
           {{"Allow", std::string(route.allow)}});
      return;
    }
    switch (route.kind) {
      case RouteKind::health:
        finish(*pending, 200, R"({"status":"ok"})");
        return;
      case RouteKind::root:
        list_services(pending);
        return;
      case RouteKind::service:
        describe_service(pending);
        return;
      default:
        start_call(pending, std::move(context));
        return;
    }
  }

  // A CORS preflight from an allowed origin gets the methods and headers it asked about; a
  // plain OPTIONS gets Allow.
  void answer_options(Pending& pending) {
    const http::ServerRequest& request = pending.exchange->request();
    std::string_view origin = request.header("Origin");
    http::Fields headers{{"Allow", std::string(pending.route.allow)}};
    if (origin.empty() || request.header("Access-Control-Request-Method").empty()) {
      finish(pending, 204, {}, std::move(headers));
      return;
    }
    if (allowed_origin(origin).empty()) {
      fail(pending, Error(gateway_id, 403,
                          "origin '" + std::string(origin) +
                              "' may not call this gateway; allow it with --cors_origins"));
      return;
    }
    headers.push_back({"Access-Control-Allow-Methods", std::string(pending.route.allow)});
    if (std::string asked = request.joined_header("Access-Control-Request-Headers"); !asked.empty())
      headers.push_back({"Access-Control-Allow-Headers", std::move(asked)});
    headers.push_back({"Access-Control-Max-Age", "600"});
    finish(pending, 204, {}, std::move(headers));
  }

  // Registry listings may block on I/O: they run on the blocking executor.
  template <class Work>
  void off_the_io_thread(const PendingPtr& pending, Work work) {
    boost::asio::post(service.runtime().blocking_executor(), [pending, work = std::move(work)] {
      try {
        work();
      } catch (const Exception& e) {
        pending->gateway->fail(*pending, e.error());
      } catch (const std::exception& e) {
        pending->gateway->fail(*pending, internal_error(gateway_id, e.what()));
      }
    });
  }

  void list_services(const PendingPtr& pending) {
    off_the_io_thread(pending, [pending] {
      auto services = pending->gateway->service.registry().list_services();
      std::sort(services.begin(), services.end(), [](const Service& a, const Service& b) {
        return a.name != b.name ? a.name < b.name : a.version < b.version;
      });
      pending->gateway->finish(*pending, 200, nlohmann::json(services).dump());
    });
  }

  void describe_service(const PendingPtr& pending) {
    with_service(pending, [pending](const ServiceSnapshot& snapshot) {
      pending->gateway->finish(*pending, 200, nlohmann::json(*snapshot).dump());
    });
  }

  // Runs `then` with the service's registration: from the cache when it is fresh, else after
  // one lookup; an unknown service is a 404 naming the closest registered one.
  template <class Then>
  void with_service(const PendingPtr& pending, Then then) {
    const std::string& name = pending->route.service;
    if (ServiceSnapshot snapshot =
            service.registry().cached_service(name, std::chrono::steady_clock::now())) {
      then(snapshot);
      return;
    }
    service.registry().async_get_service(
        name, [pending, then = std::move(then)](ServiceSnapshot snapshot,
                                                std::optional<Error> error) mutable {
          State& gateway = *pending->gateway;
          try {
            if (!error && snapshot && !snapshot->empty()) {
              then(snapshot);
            } else if (error && error->code != 404) {
              gateway.fail(*pending, *error);
            } else {
              gateway.unknown_service(pending);
            }
          } catch (const Exception& e) {
            gateway.fail(*pending, e.error());
          } catch (const std::exception& e) {
            gateway.fail(*pending, internal_error(gateway_id, e.what()));
          }
        });
  }

  void unknown_service(const PendingPtr& pending) {
    off_the_io_thread(pending, [pending] {
      const std::string& name = pending->route.service;
      std::vector<std::string> names;
      for (const auto& registered : pending->gateway->service.registry().list_services())
        names.push_back(registered.name);
      if (std::find(names.begin(), names.end(), name) != names.end()) {
        pending->gateway->fail(
            *pending, unavailable(gateway_id, "service " + name + " has no running nodes"));
        return;
      }
      pending->gateway->fail(
          *pending, not_found(gateway_id, "no service '" + name + "'" + did_you_mean(name, names) +
                                              "; GET / lists the services"));
    });
  }

  // Checks the body and the Timeout header, then the endpoint against the registry (when the
  // service lists its endpoints), then calls.
  void start_call(const PendingPtr& pending, Context&& context) {
    const http::ServerRequest& request = pending->exchange->request();
    // The body is JSON whatever Content-Type says: curl -d sends form-urlencoded.
    if (!request.body.empty() && !nlohmann::json::accept(request.body)) {
      std::string detail = "the request body is not JSON";
      try {
        nlohmann::json parsed = nlohmann::json::parse(request.body);  // only for the position
        (void)parsed;
      } catch (const nlohmann::json::parse_error& e) {
        detail += ": ";
        detail += strip_nlohmann_prefix(e.what());
      }
      fail(*pending, bad_request(gateway_id, std::move(detail)));
      return;
    }
    std::chrono::milliseconds call_timeout = timeout;
    if (std::string_view header = request.header("Timeout"); !header.empty()) {
      auto asked = parse_timeout(header);
      if (!asked) {
        fail(*pending, bad_request(gateway_id, "bad Timeout header '" + std::string(header) +
                                                   "'; expected decimal nanoseconds (as "
                                                   "Go-Micro sends it) or a duration like 2s"));
        return;
      }
      call_timeout = std::min(*asked, options.max_timeout);
    }
    with_service(pending, [pending, context = std::move(context),
                           call_timeout](const ServiceSnapshot& snapshot) mutable {
      pending->gateway->call(pending, std::move(context), call_timeout, *snapshot);
    });
  }

  void call(const PendingPtr& pending, Context&& context, std::chrono::milliseconds call_timeout,
            const std::vector<Service>& versions) {
    const http::ServerRequest& request = pending->exchange->request();
    const Route& route = pending->route;
    bool listed = false, found = false;
    for (const auto& version : versions) {
      listed = listed || !version.endpoints.empty();
      for (const auto& endpoint : version.endpoints)
        found = found || endpoint.name == route.endpoint;
    }
    if (listed && !found) {
      std::vector<std::string> names;
      for (const auto& version : versions)
        for (const auto& endpoint : version.endpoints)
          if (std::find(names.begin(), names.end(), endpoint.name) == names.end())
            names.push_back(endpoint.name);
      std::string list;
      for (const auto& name : names) list += (list.empty() ? "" : ", ") + name;
      fail(*pending,
           not_found(gateway_id, "service " + route.service + " has no endpoint '" +
                                     route.endpoint + "'" + did_you_mean(route.endpoint, names) +
                                     "; it has: " + list));
      return;
    }
    if (pending->span && pending->span->recording()) {
      std::string name(request.method);
      name.append(" /").append(route.service).append("/").append(route.endpoint);
      pending->span->update_name(name);
    }

    Request call_request;
    // The route's names are not needed again: they move on too.
    call_request.service = std::move(pending->route.service);
    call_request.endpoint = std::move(pending->route.endpoint);
    call_request.content_type = json_content_type_value;
    // The body moves on: the HTTP server does not look at the request again.
    std::string& body = pending->exchange->request().body;
    call_request.body = body.empty() ? std::string("{}") : std::move(body);
    call_request.context = std::move(context);
    copy_headers(request, call_request.context.metadata());
    // The budget counts from the request's arrival: time queued in the gateway is spent too.
    auto received = request.received == std::chrono::steady_clock::time_point{}
                        ? std::chrono::steady_clock::now()
                        : request.received;
    call_request.context.set_deadline(received + call_timeout);
    // A caller that goes away cancels its call: the service stops working for nobody.
    pending->exchange->on_abandoned(
        [cancellation = call_request.context.cancellation()] { cancellation->cancel(); });

    CallOptions call_options;
    call_options.timeout = call_timeout;
    calls.fetch_add(1, std::memory_order_relaxed);
    in_flight.fetch_add(1, std::memory_order_acq_rel);
    service.client().async_call(std::move(call_request), call_options,
                                [pending](Response&& response) {
                                  pending->gateway->answer_call(*pending, std::move(response));
                                });
  }

  void answer_call(Pending& pending, Response&& response) {
    struct Done {  // the in-flight count drops once the answer is handed over, whatever happens
      State& state;
      ~Done() {
        if (state.in_flight.fetch_sub(1, std::memory_order_acq_rel) == 1 &&
            state.stopping.load(std::memory_order_acquire)) {
          std::lock_guard lock(state.drain_mutex);
          state.drained.notify_all();
        }
      }
    } done{*this};
    if (response.error) {
      fail(pending, *response.error);
      return;
    }
    http::Fields headers;
    for (const auto& [key, value] : response.metadata)
      if (is_field(key, value) && !stays_with_the_hop(key, {})) headers.push_back({key, value});
    std::string_view type = response.content_type;
    if (type.empty() || type.starts_with(json_content_type_value)) {
      finish(pending, 200, std::move(response.body), std::move(headers));
      return;
    }
    // A service may answer in another codec; HTTP callers get JSON.
    try {
      finish(pending, 200, codec_for(type).decode(response.body).dump(), std::move(headers));
    } catch (const Exception& e) {
      fail(pending, Error(gateway_id, ErrorCode::bad_gateway,
                          "the service's answer in " + std::string(type) +
                              " cannot be read as JSON: " + e.error().detail));
    }
  }
};

Gateway::Gateway(Microservice& service, GatewayOptions options)
    : state_(std::make_shared<State>(service, std::move(options))) {}

Gateway::~Gateway() {
  try {
    stop();
  } catch (const std::exception& e) {
    log::error("api", std::string("stop failed: ") + e.what());
  }
}

void Gateway::start() {
  if (state_->server) return;
  std::weak_ptr<State> weak = state_;
  http::ServerOptions http_options = state_->options.http;
  // The HTTP server's own refusals (413, 431, 400, 408) in the same error JSON as the rest.
  http_options.refusal = [](int status, std::string message) {
    http::ServerResponse response;
    response.status = status;
    response.headers.push_back({"Content-Type", std::string(json_content_type_value)});
    response.body = gateway_error(status, std::move(message)).to_json();
    return response;
  };
  state_->server = std::make_unique<http::Server>(
      state_->service.runtime().executor(), std::move(http_options),
      [weak](http::ExchangePtr exchange) {
        if (auto self = weak.lock()) {
          self->handle(std::move(exchange));
        } else {
          exchange->respond(
              {503, {}, Error(gateway_id, ErrorCode::unavailable, "gateway gone").to_json()});
        }
      });
  state_->server->listen(state_->options.address);
  state_->bound_address = state_->server->address();
}

std::string Gateway::address() const {
  return state_->bound_address;
}

std::size_t Gateway::stop() {
  if (!state_->server) return 0;
  State& state = *state_;
  state.stopping.store(true, std::memory_order_release);
  state.server->stop_accepting();
  std::size_t unfinished = 0;
  {
    std::unique_lock lock(state.drain_mutex);
    state.drained.wait_for(lock, state.options.drain_timeout,
                           [&] { return state.in_flight.load(std::memory_order_acquire) == 0; });
    unfinished = state.in_flight.load(std::memory_order_acquire);
  }
  state.server->close();
  // close() only starts the flush of the answers given; the runtime is stopped right after
  // this returns, which would cut a last answer still being written. Wait (bounded, as the
  // flush is) for the connections to finish.
  const auto flush_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (state.server->statistics().connections_open > 0 &&
         std::chrono::steady_clock::now() < flush_deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  state.server.reset();
  return unfinished;
}

GatewayStatistics Gateway::statistics() const {
  GatewayStatistics statistics;
  statistics.requests = state_->requests.load(std::memory_order_relaxed);
  statistics.calls = state_->calls.load(std::memory_order_relaxed);
  statistics.failed = state_->failed.load(std::memory_order_relaxed);
  statistics.in_flight = state_->in_flight.load(std::memory_order_relaxed);
  return statistics;
}

// ---- Flags -------------------------------------------------------------------------------

GatewayOptions parse_gateway_flags(const std::vector<std::string>& arguments,
                                   const Config& config) {
  GatewayOptions options;
  options.timeout = config.client_request_timeout;
  options.drain_timeout = config.drain_timeout;
  static const std::vector<std::string> known = {"address", "timeout", "max_timeout",
                                                 "cors_origins", "max_body"};
  for (std::size_t index = 0; index < arguments.size(); ++index) {
    std::string_view argument = arguments[index];
    if (!argument.starts_with("--"))
      throw std::invalid_argument("micro api takes no argument '" + std::string(argument) +
                                  "'; flags: --address, --timeout, --max_timeout, "
                                  "--cors_origins, --max_body");
    std::string_view body = argument.substr(2);
    std::size_t equals = body.find('=');
    std::string name(body.substr(0, equals));
    std::replace(name.begin(), name.end(), '-', '_');
    std::string value;
    if (equals != std::string_view::npos) {
      value = body.substr(equals + 1);
    } else if (index + 1 < arguments.size() && !arguments[index + 1].starts_with("--")) {
      value = arguments[++index];
    } else {
      throw std::invalid_argument("flag --" + name + " has no value; expected --" + name +
                                  "=VALUE");
    }
    auto duration = [&]() {
      auto parsed = parse_duration(value);
      if (!parsed || parsed->count() <= 0)
        throw std::invalid_argument("bad duration '" + value + "' for --" + name +
                                    "; expected a duration like 30s, 250ms or 5m");
      return *parsed;
    };
    if (name == "address") {
      if (value.find(':') == std::string::npos)
        throw std::invalid_argument("bad address '" + value +
                                    "' for --address; expected host:port like 127.0.0.1:8080");
      options.address = value;
    } else if (name == "timeout") {
      options.timeout = duration();
    } else if (name == "max_timeout") {
      options.max_timeout = duration();
    } else if (name == "cors_origins") {
      options.cors_origins.clear();
      std::string_view list = value;
      while (!list.empty()) {
        std::size_t comma = list.find(',');
        std::string_view origin = list.substr(0, comma);
        if (!origin.empty()) options.cors_origins.emplace_back(origin);
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
      }
    } else if (name == "max_body") {
      std::size_t bytes = 0;
      std::size_t used = 0;
      try {
        bytes = std::stoull(value, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != value.size() || bytes == 0)
        throw std::invalid_argument("bad byte count '" + value +
                                    "' for --max_body; expected a positive whole number");
      options.http.body_limit = bytes;
    } else {
      throw std::invalid_argument("unknown flag --" + name +
                                  " for micro api; expected one of --address, --timeout, "
                                  "--max_timeout, --cors_origins, --max_body" +
                                  did_you_mean(name, known));
    }
  }
  return options;
}

}  // namespace micro::gateway
