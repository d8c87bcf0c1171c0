// wrappers/trace — the OTLP/HTTP exporter (see otlp_http.hpp): Beast client, gzip, retries.
#include "otlp_http.hpp"

#include <algorithm>
#include <condition_variable>
#include <ctime>
#include <iomanip>
#include <iostream>
#include <mutex>
#include <random>
#include <sstream>
#include <system_error>

#include <poll.h>
#include <zlib.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <micro/error.hpp>

#include "otlp_json.hpp"
#include "otlp_protobuf.hpp"

namespace micro::trace::sdk {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Clock = std::chrono::steady_clock;

[[noreturn]] void bad_setting(const std::string& detail) {
  throw Exception(Error("micro.trace", ErrorCode::bad_request, "trace exporter: " + detail));
}

// Responses are only looked at for their status; a huge body is not worth the memory.
constexpr std::uint64_t response_body_limit = 1 << 20;

// Backoff between attempts (OpenTelemetry SDKs' usual figures): 1 s, ×1.5 each time, at
// most 5 s, each wait drawn from [½, 1] of that so many exporters do not retry in step.
constexpr std::chrono::milliseconds initial_backoff{1000};
constexpr std::chrono::milliseconds max_backoff{5000};

bool retryable_status(int status) {
  return status == 429 || status == 502 || status == 503 || status == 504;
}

class OtlpHttpExporter final : public SpanExporter {
 public:
  OtlpHttpExporter(const ExporterSettings& settings, Resource resource, InstrumentationScope scope,
                   std::shared_ptr<ExporterStatistics> statistics)
      : settings_(settings),
        client_(parse_http_url(settings.endpoint)),
        resource_(std::move(resource)),
        scope_(std::move(scope)),
        statistics_(std::move(statistics)),
        random_(std::random_device{}()) {
    headers_ = settings.headers;
    headers_["Content-Type"] =
        settings.protocol == "http/json" ? "application/json" : "application/x-protobuf";
    if (settings.compression == "gzip") headers_["Content-Encoding"] = "gzip";
  }

  ExportResult export_spans(std::span<const SpanData> spans) override {
    if (stopped()) return ExportResult::failure;
    if (spans.empty()) return ExportResult::success;
    // Encoded into a buffer kept from the last batch: its capacity is reused.
    if (settings_.protocol == "http/json")
      body_ = encode_otlp_json(spans, resource_, scope_);
    else
      encode_otlp_protobuf(spans, resource_, scope_, body_);
    std::string compressed;
    const std::string* body = &body_;
    if (settings_.compression == "gzip") {
      compressed = gzip_compress(body_);
      body = &compressed;
    }

    const auto deadline = Clock::now() + settings_.timeout;
    auto backoff = initial_backoff;
    std::string problem;
    bool retryable = false;
    for (int attempt = 1;; ++attempt) {
      std::optional<std::chrono::milliseconds> wait;
      try {
        HttpResponse response = client_.post(*body, headers_, deadline);
        if (response.status >= 200 && response.status < 300) {
          // A partial success names rejected spans in the body; nothing to do about them.
          statistics_->exported += spans.size();
          report_recovery();
          return ExportResult::success;
        }
        problem = "HTTP " + std::to_string(response.status);
        retryable = retryable_status(response.status);
        if (!retryable) break;  // 400 and friends: sending the same bytes again will not help
        if (!response.retry_after.empty()) {
          wait = parse_retry_after(response.retry_after, std::chrono::system_clock::now());
        }
      } catch (const std::exception& error) {
        problem = error.what();
        retryable = true;
      }
      if (!wait) wait = jittered(backoff);
      backoff = std::min(std::chrono::duration_cast<std::chrono::milliseconds>(backoff * 1.5),
                         max_backoff);
      if (attempt >= settings_.max_attempts) break;
      // A wait that outlasts the deadline would only end in a timed-out attempt.
      if (Clock::now() + *wait >= deadline) break;
      if (!sleep_for(*wait)) break;
      ++statistics_->retries;
    }
    ++statistics_->failed_exports;
    statistics_->dropped_on_failure += spans.size();
    report_failure(problem, spans.size());
    // The spans are counted as dropped here: the caller must not queue them again.
    return retryable ? ExportResult::failure_retryable : ExportResult::failure;
  }

  void shutdown(std::chrono::milliseconds) override {
    std::lock_guard lock(mutex_);
    stopped_ = true;
    wake_.notify_all();
  }

 private:
  bool stopped() {
    std::lock_guard lock(mutex_);
    return stopped_;
  }

  std::chrono::milliseconds jittered(std::chrono::milliseconds base) {
    std::uniform_int_distribution<std::int64_t> draw(base.count() / 2, base.count());
    return std::chrono::milliseconds(draw(random_));
  }

  // False when shutdown interrupted the wait.
  bool sleep_for(std::chrono::milliseconds wait) {
    std::unique_lock lock(mutex_);
    return !wake_.wait_for(lock, wait, [this] { return stopped_; });
  }

  // One line when exports start failing and one when they recover, not one per batch.
  void report_failure(const std::string& problem, std::size_t count) {
    if (failing_) return;
    failing_ = true;
    std::cerr << "micro trace: export to " << settings_.endpoint << " failed (" << problem
              << "); dropped " << count << " spans, further failures are counted silently\n";
  }
  void report_recovery() {
    if (!failing_) return;
    failing_ = false;
    std::cerr << "micro trace: export to " << settings_.endpoint << " works again\n";
  }

  ExporterSettings settings_;
  HttpClient client_;
  std::string body_;  // reused between batches
  Resource resource_;
  InstrumentationScope scope_;
  std::shared_ptr<ExporterStatistics> statistics_;
  std::map<std::string, std::string> headers_;
  std::mt19937_64 random_;
  bool failing_ = false;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopped_ = false;
};

}  // namespace

HttpUrl parse_http_url(std::string_view url) {
  constexpr std::string_view http_scheme = "http://";
  if (url.starts_with("https://")) {
    bad_setting("endpoint \"" + std::string(url) +
                "\": https is not supported yet (no TLS); use an http:// endpoint");
  }
  if (!url.starts_with(http_scheme)) {
    bad_setting("endpoint \"" + std::string(url) + "\" is not an http:// URL");
  }
  std::string_view rest = url.substr(http_scheme.size());
  auto slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  HttpUrl out;
  out.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (out.target.front() == '?') out.target.insert(0, "/");
  if (authority.empty() || authority.find('@') != std::string_view::npos) {
    bad_setting("endpoint \"" + std::string(url) + "\" has no usable host");
  }
  std::string_view host = authority, port = "80";
  if (authority.front() == '[') {  // [::1]:4318
    auto close = authority.find(']');
    if (close == std::string_view::npos) {
      bad_setting("endpoint \"" + std::string(url) + "\" has an unclosed IPv6 address");
    }
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') bad_setting("endpoint \"" + std::string(url) + "\" is malformed");
      port = after.substr(1);
    }
  } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  bool port_ok = !port.empty() && port.size() <= 5 &&
                 std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!port_ok || std::stoi(std::string(port)) > 65535 || host.empty()) {
    bad_setting("endpoint \"" + std::string(url) + "\" has a malformed host or port");
  }
  out.host = std::string(host);
  out.port = std::string(port);
  return out;
}

std::string gzip_compress(std::string_view data) {
  z_stream stream{};
  // windowBits 15 + 16 asks zlib for the gzip wrapper instead of zlib's own.
  if (deflateInit2(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    throw std::runtime_error("gzip: deflateInit2 failed");
  }
  std::string out;
  out.resize(deflateBound(&stream, data.size()) + 32);
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  int result = deflate(&stream, Z_FINISH);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  if (result != Z_STREAM_END) throw std::runtime_error("gzip: deflate did not finish");
  return out;
}

std::optional<std::chrono::milliseconds> parse_retry_after(
    std::string_view value, std::chrono::system_clock::time_point now) {
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
  if (value.empty()) return std::nullopt;
  if (std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    if (value.size() > 9) return std::nullopt;
    return std::chrono::seconds(std::stoll(std::string(value)));
  }
  // IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT", the form HTTP/1.1 senders must use.
  std::tm parts{};
  std::istringstream input{std::string(value)};
  input.imbue(std::locale::classic());
  input >> std::get_time(&parts, "%a, %d %b %Y %H:%M:%S GMT");
  if (input.fail()) return std::nullopt;
  auto when = std::chrono::system_clock::from_time_t(timegm(&parts));
  if (when <= now) return std::chrono::milliseconds(0);
  return std::chrono::ceil<std::chrono::milliseconds>(when - now);
}

// One kept-alive connection and the io_context its asynchronous operations run on:
// only asynchronous operations honour the stream's expiry, and this thread runs them, so
// each exchange is synchronous for the caller.
struct HttpClient::Connection {
  asio::io_context io;
  asio::ip::tcp::resolver resolver{io};
  beast::tcp_stream stream{io};
  beast::flat_buffer buffer;
  bool open = false;

  // False when the peer closed the idle connection (or sent something unasked for).
  bool still_usable() {
    if (!open) return false;
    pollfd descriptor{stream.socket().native_handle(), POLLIN | POLLRDHUP, 0};
    return ::poll(&descriptor, 1, 0) == 0;
  }

  void close() {
    boost::system::error_code ignored;
    stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    stream.close();
    buffer.clear();
    open = false;
  }

  // Connects when needed, sends, reads the response; the error, or success with `out` set.
  boost::system::error_code exchange(const HttpUrl& url, std::string_view body,
                                     const std::map<std::string, std::string>& headers,
                                     Clock::time_point deadline, HttpResponse& out,
                                     std::uint64_t& connections_opened) {
    http::request<http::span_body<const char>> request{http::verb::post, url.target, 11};
    request.set(http::field::host, url.host + ":" + url.port);
    request.set(http::field::user_agent, "micro-cpp-otlp/0.1");
    for (const auto& [name, value] : headers) request.set(name, value);
    request.body() = boost::beast::span<const char>(body.data(), body.size());
    request.prepare_payload();
    http::response_parser<http::string_body> parser;
    parser.body_limit(response_body_limit);

    auto remaining = [&] {
      return std::max(Clock::duration::zero(), deadline - Clock::now());
    };
    boost::system::error_code failure;
    bool done = false;
    auto send = [&] {
      stream.expires_after(remaining());
      http::async_write(stream, request, [&](auto error, auto) {
        if (error) return void(failure = error);
        http::async_read(stream, buffer, parser, [&](auto error, auto) {
          failure = error;
          done = !error;
        });
      });
    };
    io.restart();
    if (open) {
      send();
    } else {
      resolver.async_resolve(url.host, url.port, [&](auto error, auto results) {
        if (error) return void(failure = error);
        stream.expires_after(remaining());
        stream.async_connect(results, [&](auto error, auto) {
          if (error) return void(failure = error);
          open = true;
          ++connections_opened;
          send();
        });
      });
    }
    io.run_for(remaining());
    if (!done && !failure) {  // the resolver is not covered by the stream's expiry
      resolver.cancel();
      stream.close();
      io.restart();
      io.run();
      failure = beast::error::timeout;
    }
    if (failure) {
      close();
      return failure;
    }
    auto& response = parser.get();
    out.status = static_cast<int>(response.result_int());
    if (auto found = response.find(http::field::retry_after); found != response.end()) {
      out.retry_after = std::string(found->value());
    }
    out.body = std::move(response.body());
    if (!response.keep_alive()) close();
    return {};
  }
};

HttpClient::HttpClient(HttpUrl url) : url_(std::move(url)) {}
HttpClient::~HttpClient() = default;

HttpResponse HttpClient::post(std::string_view body,
                              const std::map<std::string, std::string>& headers,
                              Clock::time_point deadline) {
  if (!connection_) connection_ = std::make_unique<Connection>();
  bool reusing = connection_->still_usable();
  if (connection_->open && !reusing) connection_->close();
  HttpResponse response;
  auto failure =
      connection_->exchange(url_, body, headers, deadline, response, connections_opened_);
  // A kept-alive connection may be closed by the peer just as it is reused: one more try
  // on a fresh connection is part of using keep-alive, not a retry.
  if (failure && reusing && failure != beast::error::timeout && Clock::now() < deadline) {
    response = {};
    failure = connection_->exchange(url_, body, headers, deadline, response, connections_opened_);
  }
  if (failure) {
    throw std::system_error(failure, "POST http://" + url_.host + ":" + url_.port + url_.target);
  }
  return response;
}

HttpResponse http_post(const HttpUrl& url, const std::string& body,
                       const std::map<std::string, std::string>& headers,
                       Clock::time_point deadline) {
  HttpClient client(url);
  return client.post(body, headers, deadline);
}

std::unique_ptr<SpanExporter> make_otlp_http_exporter(
    const ExporterSettings& settings, const Resource& resource, const InstrumentationScope& scope,
    std::shared_ptr<ExporterStatistics> statistics) {
  return std::make_unique<OtlpHttpExporter>(settings, resource, scope, std::move(statistics));
}

}  // namespace micro::trace::sdk
