// etcd_client.cpp — endpoint parsing, the gateway's error form, and the failover client for
// etcd's JSON gateway (auth token, preferred member, retries within request_timeout).
#include "etcd_client.hpp"

#include <algorithm>
#include <charconv>
#include <limits>
#include <thread>

#include <micro/error.hpp>

namespace micro::etcd {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using namespace std::chrono_literals;

namespace {

constexpr const char* error_id = "micro.registry.etcd";

// The gateway's answers that mean "this member cannot serve now": try the next one.
bool member_cannot_serve(int code, const std::string& message) {
  return code == grpc_unavailable || code == grpc_deadline_exceeded ||
         message.find("no leader") != std::string::npos ||
         message.find("leader changed") != std::string::npos ||
         message.find("timed out") != std::string::npos;
}

micro::http::ClientOptions http_options(const ClientOptions& options) {
  micro::http::ClientOptions http;
  http.tls = options.tls;
  return http;
}

milliseconds remaining_until(Clock::time_point deadline) {
  return std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
}

// An HTTP failure (connect, TLS, deadline): the member did not answer.
bool is_transport_failure(const micro::Exception& error) {
  return error.error().id == "micro.http" && error.error().code != 400;
}

}  // namespace

std::string prefix_range_end(std::string_view prefix) {
  std::string end(prefix);
  // Drop trailing 0xFF bytes and increment the last remaining one (etcd's rule).
  while (!end.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(end.back());
    if (last < 0xFF) {
      ++last;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

std::int64_t json_int64(const nlohmann::json& object, const char* field) {
  if (!object.is_object()) return 0;
  auto found = object.find(field);
  if (found == object.end()) return 0;
  // A number past int64 (a float like 1e20, an unsigned above 2^63-1) reads as 0 like any
  // other garbage: converting it was undefined.
  if (found->is_number_unsigned()) {
    const auto value = found->get<std::uint64_t>();
    return value <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())
               ? static_cast<std::int64_t>(value)
               : 0;
  }
  if (found->is_number_integer()) return found->get<std::int64_t>();
  if (found->is_number_float()) {
    const double value = found->get<double>();
    return value > -9.2e18 && value < 9.2e18 ? static_cast<std::int64_t>(value) : 0;
  }
  if (found->is_string()) {
    const auto& text = found->get_ref<const std::string&>();
    std::int64_t value = 0;
    std::from_chars(text.data(), text.data() + text.size(), value);
    return value;
  }
  return 0;
}

std::vector<micro::http::Url> parse_endpoints(std::string_view address) {
  if (address.empty()) return {micro::http::parse_url("http://127.0.0.1:2379")};
  std::vector<micro::http::Url> endpoints;
  std::size_t start = 0;
  while (true) {
    const auto comma = address.find(',', start);
    const std::string_view item =
        address.substr(start, comma == std::string_view::npos ? address.npos : comma - start);
    auto refuse = [&](const std::string& problem) {
      throw micro::Exception(micro::bad_request(error_id, "bad endpoint \"" + std::string(item) +
                                                              "\" in \"" + std::string(address) +
                                                              "\": " + problem));
    };
    const bool has_scheme = item.starts_with("http://") || item.starts_with("https://");
    const auto authority = item.substr(has_scheme ? item.find("//") + 2 : 0);
    // etcd has no default port: a member is always host:port.
    const auto colon = authority.rfind(':');
    if (colon == std::string_view::npos || colon == 0) refuse("expected host:port");
    std::string problem;
    auto url = micro::http::try_parse_url(
        has_scheme ? std::string(item) : "http://" + std::string(item), &problem);
    if (!url) refuse(problem);
    if (url->target != "/") refuse("expected host:port, not a path (\"" + url->target + "\")");
    endpoints.push_back(std::move(*url));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return endpoints;
}

namespace {

// `object[field]` when it is a string, else `fallback`: a "message" that is a number threw
// nlohmann's type_error out of gateway_error (found by test/fuzz/etcd_gateway).
std::string string_field(const nlohmann::json& object, const char* field, std::string fallback) {
  const auto found = object.find(field);
  if (found == object.end()) return fallback;
  return found->is_string() ? found->get<std::string>() : found->dump();
}

}  // namespace

std::optional<GatewayError> gateway_error(const nlohmann::json& message) {
  if (!message.is_object() || !message.contains("error")) return std::nullopt;
  const auto& error = message["error"];
  if (error.is_object()) {  // inside a stream
    return GatewayError{static_cast<int>(json_int64(error, "grpc_code")),
                        string_field(error, "message", error.dump())};
  }
  return GatewayError{static_cast<int>(json_int64(message, "code")),
                      string_field(message, "message",
                                   error.is_string() ? error.get<std::string>() : error.dump())};
}

std::vector<nlohmann::json> take_json_lines(std::string& pending) {
  std::vector<nlohmann::json> messages;
  std::size_t start = 0;
  while (true) {
    const auto newline = pending.find('\n', start);
    if (newline == std::string::npos) break;
    std::string_view line(pending.data() + start, newline - start);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
    if (!line.empty()) {
      auto message = nlohmann::json::parse(line, nullptr, false);
      if (message.is_discarded()) {
        throw micro::Exception(
            micro::Error(error_id, micro::ErrorCode::bad_gateway,
                         "etcd sent a message that is not JSON: " + std::string(line)));
      }
      messages.push_back(std::move(message));
    }
    start = newline + 1;
  }
  pending.erase(0, start);
  return messages;
}

std::string explain_tls_refusal(std::string detail) {
  if (detail.find("alert bad certificate") != std::string::npos ||
      detail.find("alert certificate required") != std::string::npos ||
      detail.find("alert unknown ca") != std::string::npos) {
    detail +=
        " (etcd refused this client's TLS certificate: none given, or not signed by a CA etcd "
        "trusts; see tls_cert and tls_key)";
  }
  return detail;
}

// ---------------------------------------------------------------------------------------------
// Client

Client::Client(ClientOptions options)
    : options_(std::move(options)), http_(http_options(options_)) {
  if (options_.endpoints.empty()) options_.endpoints = parse_endpoints("");
  if (options_.tls) {
    for (auto& endpoint : options_.endpoints) {
      endpoint.https = true;
    }
  }
}

void Client::endpoint_failed(std::size_t failed) {
  std::size_t expected = failed;
  preferred_.compare_exchange_strong(expected, (failed + 1) % options_.endpoints.size());
}

micro::http::Request Client::make_request(std::size_t endpoint, std::string_view path,
                                          std::string body) {
  micro::http::Request request;
  request.url = options_.endpoints[endpoint];
  request.url.target = std::string(path);
  request.headers.push_back({"Content-Type", "application/json"});
  if (!options_.username.empty()) request.headers.push_back({"Authorization", token()});
  request.body = std::move(body);
  return request;
}

micro::http::RequestOptions Client::attempt_options(Clock::time_point deadline) const {
  micro::http::RequestOptions options;
  options.deadline = deadline;
  options.connect_timeout = options_.dial_timeout;
  return options;
}

std::string Client::token() {
  {
    std::lock_guard lock(token_mutex_);
    if (token_valid_) return token_;
  }
  authenticate();
  std::lock_guard lock(token_mutex_);
  return token_;
}

void Client::authenticate() {
  if (options_.username.empty()) return;
  {
    std::lock_guard lock(token_mutex_);
    token_valid_ = false;
  }
  const nlohmann::json credentials = {{"name", options_.username}, {"password", options_.password}};
  const auto deadline = Clock::now() + options_.request_timeout;
  std::string last_error = "no endpoint tried";
  while (remaining_until(deadline).count() > 0) {
    const std::size_t endpoint = preferred_.load() % options_.endpoints.size();
    micro::http::Request request;
    request.url = options_.endpoints[endpoint];
    request.url.target = "/v3/auth/authenticate";
    request.headers.push_back({"Content-Type", "application/json"});
    request.body = credentials.dump();
    try {
      const auto response = http_.request(std::move(request), attempt_options(deadline));
      auto answer = nlohmann::json::parse(response.body, nullptr, false);
      if (response.status == 200 && answer.contains("token")) {
        std::lock_guard lock(token_mutex_);
        token_ = answer["token"].get<std::string>();
        token_valid_ = true;
        return;
      }
      const auto error = gateway_error(answer).value_or(GatewayError{0, response.body});
      if (!member_cannot_serve(error.code, error.message)) {
        throw micro::Exception(
            micro::Error(error_id, micro::ErrorCode::unauthorized,
                         "etcd refused user " + options_.username + ": " + error.message));
      }
      last_error = error.message;
    } catch (const micro::Exception& error) {
      if (!is_transport_failure(error)) throw;
      last_error = explain_tls_refusal(error.error().detail);
    }
    endpoint_failed(endpoint);
  }
  throw micro::Exception(
      micro::unavailable(error_id, "cannot authenticate to etcd: " + last_error));
}

std::string Client::call_raw(std::string_view path, const std::string& body) {
  const auto deadline = Clock::now() + options_.request_timeout;
  std::string last_error = "request timeout too short";
  bool reauthenticated = false;
  std::size_t failures = 0;
  while (remaining_until(deadline).count() > 0) {
    const std::size_t endpoint = preferred_.load() % options_.endpoints.size();
    try {
      auto request = make_request(endpoint, path, body);
      // One attempt gets a third of the budget: a member that lost its leader holds requests
      // until its own timeout, while another member may answer as soon as a leader is elected.
      const auto attempt = std::min(remaining_until(deadline),
                                    std::max<milliseconds>(options_.request_timeout / 3, 200ms));
      auto response = http_.request(std::move(request), attempt_options(Clock::now() + attempt));
      if (response.status == 200) return std::move(response.body);
      const auto answer = nlohmann::json::parse(response.body, nullptr, false);
      const auto error = gateway_error(answer).value_or(GatewayError{0, response.body});
      // The token expired (or etcd restarted and forgot it): log in again, once per call.
      if (error.code == grpc_unauthenticated && !options_.username.empty() && !reauthenticated) {
        reauthenticated = true;
        authenticate();
        continue;
      }
      if (!member_cannot_serve(error.code, error.message)) {
        throw EtcdError(error.code, error.message);
      }
      last_error = options_.endpoints[endpoint].authority() + ": " + error.message;
    } catch (const micro::Exception& error) {
      if (!is_transport_failure(error)) throw;
      last_error = explain_tls_refusal(error.error().detail);
    }
    endpoint_failed(endpoint);
    // After a full round of endpoints failed, back off a little (a leader election takes a
    // moment), but never past the deadline.
    if (++failures % options_.endpoints.size() == 0) {
      const auto pause = std::min<milliseconds>(
          milliseconds(25 * std::min<std::size_t>(failures, 20)), remaining_until(deadline));
      if (pause.count() > 0) std::this_thread::sleep_for(pause);
    }
  }
  throw micro::Exception(micro::unavailable(
      error_id, "no etcd endpoint answered " + std::string(path) + " within " +
                    std::to_string(options_.request_timeout.count()) + "ms: " + last_error));
}

nlohmann::json Client::call(std::string_view path, const nlohmann::json& body) {
  const auto text = call_raw(path, body.dump());
  auto answer = nlohmann::json::parse(text, nullptr, false);
  if (answer.is_discarded()) {
    throw micro::Exception(micro::Error(error_id, micro::ErrorCode::bad_gateway,
                                        "etcd answered with non-JSON: " + text));
  }
  return answer;
}

}  // namespace micro::etcd
