// etcd_client.hpp — a small etcd v3 client over the JSON gateway, on libmicro's HTTP client.
//
// Debian ships no C++ etcd client, so the registry talks to etcd's grpc-gateway: JSON bodies
// POSTed to /v3/..., keys and values base64-encoded, int64 fields as decimal strings. What is
// etcd's lives here: endpoints and failover between them, the auth token, the gateway's error
// form. HTTP itself (connections, TLS, deadlines, streaming) is <micro/http_client.hpp>'s, run
// on its private I/O thread so nothing here runs on the runtime's I/O threads.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <micro/http_client.hpp>

namespace micro::etcd {

// The end of the key range holding every key that starts with `prefix` (etcd's range_end).
std::string prefix_range_end(std::string_view prefix);

// etcd's int64 fields arrive as JSON strings ("42"); absent fields mean 0.
std::int64_t json_int64(const nlohmann::json& object, const char* field);

// Parses "127.0.0.1:2379,10.0.0.2:2379" (an optional http:// or https:// per endpoint is
// accepted) into origins (target "/"). Throws micro::Exception (400) naming the bad part.
std::vector<micro::http::Url> parse_endpoints(std::string_view address);

// gRPC status codes the gateway reports.
constexpr int grpc_deadline_exceeded = 4;
constexpr int grpc_unavailable = 14;
constexpr int grpc_unauthenticated = 16;  // the auth token expired or is not known: log in again

// An error the gateway reported: in an answer ({"code":16,"message":…}) or inside a stream
// ({"error":{"grpc_code":16,"message":…}}).
struct GatewayError {
  int code = 0;  // the gRPC status code
  std::string message;
};
std::optional<GatewayError> gateway_error(const nlohmann::json& message);

// etcd answered with an error it means (lease not found, permission denied, …).
class EtcdError : public std::runtime_error {
 public:
  EtcdError(int grpc_code, const std::string& message)
      : std::runtime_error(message), grpc_code_(grpc_code) {}
  int grpc_code() const noexcept { return grpc_code_; }

 private:
  int grpc_code_;
};

struct ClientOptions {
  std::vector<micro::http::Url> endpoints;
  std::chrono::milliseconds dial_timeout{std::chrono::seconds(5)};
  std::chrono::milliseconds request_timeout{std::chrono::seconds(5)};
  std::string username;
  std::string password;
  // HTTPS for every endpoint when set.
  std::shared_ptr<const micro::http::TlsContext> tls;
};

// Adds what to do about it to a TLS alert about our certificate: with TLS 1.3 etcd refuses a
// client certificate only after the handshake, on the first read.
std::string explain_tls_refusal(std::string detail);

// Calls etcd's gateway with failover: a call goes to the preferred endpoint; when that one
// does not answer (or has no leader) the next endpoint becomes preferred and the call is
// retried there, until request_timeout passes. Thread-safe; connections are pooled.
class Client {
 public:
  explicit Client(ClientOptions options);

  // POSTs `body` to `path` ("/v3/kv/range") and returns the parsed JSON answer.
  // Throws micro::Exception 503 when no endpoint answered in time, EtcdError otherwise.
  nlohmann::json call(std::string_view path, const nlohmann::json& body);
  // Same, returning the raw body (streamed answers hold one JSON object per line).
  std::string call_raw(std::string_view path, const std::string& body);

  // A request to endpoint `endpoint` carrying the auth token (if any), for streams.
  micro::http::Request make_request(std::size_t endpoint, std::string_view path, std::string body);
  // Logs in again after etcd said the token is no good (no-op without a username).
  void authenticate();

  const ClientOptions& options() const noexcept { return options_; }
  micro::http::BlockingClient& http() noexcept { return http_; }
  std::size_t preferred_endpoint() const noexcept { return preferred_.load(); }
  // Moves the preference past `failed` (only if nobody moved it already).
  void endpoint_failed(std::size_t failed);

 private:
  std::string token();
  // One attempt: done by `deadline`, connecting within dial_timeout.
  micro::http::RequestOptions attempt_options(std::chrono::steady_clock::time_point deadline) const;

  ClientOptions options_;
  micro::http::BlockingClient http_;
  std::atomic<std::size_t> preferred_{0};
  std::mutex token_mutex_;
  std::string token_;
  bool token_valid_ = false;
};

// Splits a streamed body into its JSON messages (the gateway ends each with a newline).
// Consumes whole lines from `pending`, leaving an incomplete tail in place. Throws
// micro::Exception (502) for a line that is not JSON.
std::vector<nlohmann::json> take_json_lines(std::string& pending);

}  // namespace micro::etcd
