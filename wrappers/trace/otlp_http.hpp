// wrappers/trace — the OTLP/HTTP exporter: a small synchronous HTTP/1.1 client (Boost.Beast)
// that POSTs encoded batches over a kept-alive connection, gzip, and the retry policy
// (429/502/503/504 and connection failures, exponential backoff with jitter, Retry-After honoured,
// bounded by the timeout).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "exporters.hpp"

namespace micro::trace::sdk {

// "http://host:port/path" split up. Throws micro::Exception (400) for anything else; https
// is refused with a message saying TLS is not supported yet.
struct HttpUrl {
  std::string host;
  std::string port;    // "80" when the URL has none
  std::string target;  // path and query, "/" when empty
};
HttpUrl parse_http_url(std::string_view url);

// gzip (RFC 1952) of `data`, for Content-Encoding: gzip.
std::string gzip_compress(std::string_view data);

// How long a Retry-After value asks to wait: delay-seconds, or an HTTP-date relative to
// `now`. nullopt when malformed; a date in the past is zero.
std::optional<std::chrono::milliseconds> parse_retry_after(
    std::string_view value, std::chrono::system_clock::time_point now);

struct HttpResponse {
  int status = 0;
  std::string retry_after;  // the header, "" when absent
  std::string body;
};

// An HTTP/1.1 client for one endpoint that keeps its connection alive between POSTs (the
// address is resolved once per connection, not per request). Used by one thread at a time.
class HttpClient {
 public:
  explicit HttpClient(HttpUrl url);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // One POST with a deadline covering connect, write and read. A kept-alive connection the
  // peer has closed meanwhile is replaced once, transparently. Throws std::system_error on
  // connection failures and timeouts.
  HttpResponse post(std::string_view body, const std::map<std::string, std::string>& headers,
                    std::chrono::steady_clock::time_point deadline);

  std::uint64_t connections_opened() const noexcept { return connections_opened_; }

 private:
  struct Connection;
  HttpUrl url_;
  std::unique_ptr<Connection> connection_;
  std::uint64_t connections_opened_ = 0;
};

// One POST on a fresh connection (HttpClient without the reuse).
HttpResponse http_post(const HttpUrl& url, const std::string& body,
                       const std::map<std::string, std::string>& headers,
                       std::chrono::steady_clock::time_point deadline);

std::unique_ptr<SpanExporter> make_otlp_http_exporter(
    const ExporterSettings& settings, const Resource& resource, const InstrumentationScope& scope,
    std::shared_ptr<ExporterStatistics> statistics);

}  // namespace micro::trace::sdk
