// wrappers/trace — the OTLP/HTTP exporter (see otlp_http.hpp): endpoint and TLS settings, gzip,
// Retry-After, and the exporter with its retry policy.
#include "otlp_http.hpp"

#include <algorithm>
#include <condition_variable>
#include <ctime>
#include <iomanip>
#include <mutex>
#include <sstream>

#include <micro/error.hpp>
#include <micro/gzip.hpp>
#include <micro/log.hpp>
#include <micro/random.hpp>

#include "otlp_json.hpp"
#include "otlp_protobuf.hpp"

namespace micro::trace::sdk {

namespace {

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

micro::http::ClientOptions http_options(const micro::http::Url& url,
                                        const ExporterSettings& settings) {
  micro::http::ClientOptions options;
  if (url.https) options.tls = make_exporter_tls(settings);
  return options;
}

class OtlpHttpExporter final : public SpanExporter {
 public:
  OtlpHttpExporter(const ExporterSettings& settings, Resource resource, InstrumentationScope scope,
                   std::shared_ptr<ExporterStatistics> statistics)
      : settings_(settings),
        url_(parse_endpoint(settings.endpoint)),
        client_(http_options(url_, settings)),
        resource_(std::move(resource)),
        scope_(std::move(scope)),
        statistics_(std::move(statistics)) {
    for (const auto& [name, value] : settings.headers) headers_.push_back({name, value});
    headers_.push_back({"Content-Type", settings.protocol == "http/json"
                                            ? "application/json"
                                            : "application/x-protobuf"});
    if (settings.compression == "gzip") headers_.push_back({"Content-Encoding", "gzip"});
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
      compressed = micro::gzip::compress(body_);
      body = &compressed;
    }

    const auto deadline = Clock::now() + settings_.timeout;
    auto backoff = initial_backoff;
    std::string problem;
    bool retryable = false;
    for (int attempt = 1;; ++attempt) {
      std::optional<std::chrono::milliseconds> wait;
      try {
        const auto response = post(*body, deadline);
        if (response.status >= 200 && response.status < 300) {
          // A partial success names rejected spans in the body; nothing to do about them.
          statistics_->exported += spans.size();
          report_recovery();
          return ExportResult::success;
        }
        problem = "HTTP " + std::to_string(response.status);
        retryable = retryable_status(response.status);
        if (!retryable) break;  // 400 and friends: sending the same bytes again will not help
        if (const auto retry_after = response.header("Retry-After"); !retry_after.empty()) {
          wait = parse_retry_after(retry_after, std::chrono::system_clock::now());
        }
      } catch (const micro::Exception& error) {
        // Connection failures and timeouts (the HTTP client's 503 and 408).
        problem = error.error().detail;
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
  // One POST; the deadline covers connecting, sending and the answer.
  micro::http::Response post(const std::string& body, Clock::time_point deadline) {
    micro::http::Request request{.method = "POST", .url = url_, .headers = headers_, .body = body};
    micro::http::RequestOptions options;
    options.deadline = deadline;
    options.body_limit = response_body_limit;
    return client_.request(std::move(request), options);
  }

  bool stopped() {
    std::lock_guard lock(mutex_);
    return stopped_;
  }

  std::chrono::milliseconds jittered(std::chrono::milliseconds base) {
    // Uniform in [base/2, base]: retries of many exporters do not arrive in lockstep.
    auto half = static_cast<std::uint64_t>(base.count() / 2);
    return std::chrono::milliseconds(
        base.count() / 2 + static_cast<std::int64_t>(micro::thread_random() % (half + 1)));
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
    micro::log::warn("trace", "export to " + settings_.endpoint + " failed (" + problem +
                                  "); dropped " + std::to_string(count) +
                                  " spans, further failures are counted silently");
  }
  void report_recovery() {
    if (!failing_) return;
    failing_ = false;
    micro::log::info("trace", "export to " + settings_.endpoint + " works again");
  }

  ExporterSettings settings_;
  micro::http::Url url_;
  micro::http::BlockingClient client_;
  std::string body_;  // reused between batches
  Resource resource_;
  InstrumentationScope scope_;
  std::shared_ptr<ExporterStatistics> statistics_;
  micro::http::Fields headers_;
  bool failing_ = false;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopped_ = false;
};

}  // namespace

micro::http::Url parse_endpoint(std::string_view url) {
  std::string problem;
  auto parsed = micro::http::try_parse_url(url, &problem);
  if (!parsed) bad_setting("endpoint \"" + std::string(url) + "\": " + problem);
  return std::move(*parsed);
}

std::shared_ptr<const micro::http::TlsContext> make_exporter_tls(const ExporterSettings& settings) {
  try {
    return micro::http::make_tls_context(settings.tls);
  } catch (const Exception& error) {
    bad_setting(error.error().detail);
  }
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

std::unique_ptr<SpanExporter> make_otlp_http_exporter(
    const ExporterSettings& settings, const Resource& resource, const InstrumentationScope& scope,
    std::shared_ptr<ExporterStatistics> statistics) {
  return std::make_unique<OtlpHttpExporter>(settings, resource, scope, std::move(statistics));
}

}  // namespace micro::trace::sdk
