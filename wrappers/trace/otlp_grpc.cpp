// wrappers/trace — the OTLP/gRPC exporter (see otlp_grpc.hpp): the grpc transport plugin on a
// runtime of its own (one thread: the exporter is called from the batch worker and waits), the
// response and status-details decoding, and the retry loop.
#include "otlp_grpc.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <future>
#include <mutex>

#include <micro/error.hpp>
#include <micro/log.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/random.hpp>
#include <micro/runtime.hpp>
#include <micro/transport.hpp>

#include "otlp_http.hpp"
#include "otlp_protobuf.hpp"

namespace micro::trace::sdk {

namespace {

using Clock = std::chrono::steady_clock;

// The collector's service: the path is /opentelemetry.proto.collector.trace.v1.TraceService/Export.
constexpr const char* trace_service_package = "opentelemetry.proto.collector.trace.v1";
constexpr const char* export_endpoint = "TraceService.Export";

// The gRPC status codes the retry rules name.
constexpr int status_cancelled = 1, status_deadline_exceeded = 4, status_resource_exhausted = 8,
              status_aborted = 10, status_out_of_range = 11, status_unavailable = 14,
              status_data_loss = 15;

// Backoff between attempts, as the OTLP/HTTP exporter's: 1 s, ×1.5 each time, at most 5 s,
// each wait drawn from [½, 1] of that.
constexpr std::chrono::milliseconds initial_backoff{1000};
constexpr std::chrono::milliseconds max_backoff{5000};
// A server's RetryInfo is honoured up to this (a bad value must not park the worker for hours;
// the export timeout bounds it anyway).
constexpr std::chrono::milliseconds max_retry_delay{60000};

// Just enough of the protobuf wire format to read the few fields we need, skipping the rest.
class ProtoReader {
 public:
  explicit ProtoReader(std::string_view bytes) : rest_(bytes) {}
  // The next field's number and wire type; false at the end or on malformed input (ok()).
  bool next(std::uint32_t& field, std::uint32_t& type) {
    if (rest_.empty() || !ok_) return false;
    std::uint64_t tag = 0;
    if (!varint(tag) || tag >> 3 == 0 || tag >> 3 > 0x1fffffff) return ok_ = false;
    field = static_cast<std::uint32_t>(tag >> 3);
    type = static_cast<std::uint32_t>(tag & 7);
    return true;
  }
  bool varint(std::uint64_t& value) {
    value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (rest_.empty()) return ok_ = false;
      auto byte = static_cast<unsigned char>(rest_.front());
      rest_.remove_prefix(1);
      value |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return true;
    }
    return ok_ = false;
  }
  bool bytes(std::string_view& value) {
    std::uint64_t size = 0;
    if (!varint(size) || size > rest_.size()) return ok_ = false;
    value = rest_.substr(0, static_cast<std::size_t>(size));
    rest_.remove_prefix(static_cast<std::size_t>(size));
    return true;
  }
  bool skip(std::uint32_t type) {
    std::uint64_t ignored = 0;
    std::string_view skipped;
    switch (type) {
      case 0:
        return varint(ignored);
      case 1:
        return advance(8);
      case 2:
        return bytes(skipped);
      case 5:
        return advance(4);
      default:
        return ok_ = false;  // groups (3, 4) are not in these messages
    }
  }
  bool ok() const { return ok_; }

 private:
  bool advance(std::size_t count) {
    if (rest_.size() < count) return ok_ = false;
    rest_.remove_prefix(count);
    return true;
  }
  std::string_view rest_;
  bool ok_ = true;
};

// google.protobuf.Duration {int64 seconds = 1; int32 nanos = 2;} as milliseconds, rounded up.
std::optional<std::chrono::milliseconds> read_duration(std::string_view bytes) {
  ProtoReader reader(bytes);
  std::uint64_t seconds = 0, nanos = 0;
  std::uint32_t field = 0, type = 0;
  while (reader.next(field, type)) {
    if (field == 1 && type == 0) {
      if (!reader.varint(seconds)) break;
    } else if (field == 2 && type == 0) {
      if (!reader.varint(nanos)) break;
    } else if (!reader.skip(type)) {
      break;
    }
  }
  const auto signed_seconds = static_cast<std::int64_t>(seconds);
  const auto signed_nanos = static_cast<std::int32_t>(static_cast<std::uint32_t>(nanos));
  if (!reader.ok() || signed_seconds < 0 || signed_nanos < 0 || signed_nanos > 999999999)
    return std::nullopt;
  if (signed_seconds >= max_retry_delay.count() / 1000) return max_retry_delay;
  return std::chrono::milliseconds(signed_seconds * 1000 + (signed_nanos + 999999) / 1000000);
}

std::chrono::milliseconds jittered(std::chrono::milliseconds base) {
  // Uniform in [base/2, base]: retries of many exporters do not arrive in lockstep.
  auto half = static_cast<std::uint64_t>(base.count() / 2);
  return std::chrono::milliseconds(base.count() / 2 +
                                   static_cast<std::int64_t>(micro::thread_random() % (half + 1)));
}

std::string lowercase(std::string text) {
  for (char& c : text)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return text;
}

// The grpc transport's options for the endpoint: TLS when it is https (verified against tls_ca
// or the system store, the client certificate when given).
micro::PluginOptions transport_options(const micro::http::Url& url,
                                       const ExporterSettings& settings) {
  micro::PluginOptions options;
  if (settings.compression == "gzip") options.emplace_back("compression", "gzip");
  if (!url.https) return options;
  options.emplace_back("tls", "true");
  if (!settings.tls.ca_file.empty()) options.emplace_back("tls_ca", settings.tls.ca_file);
  if (!settings.tls.cert_file.empty()) options.emplace_back("tls_cert", settings.tls.cert_file);
  if (!settings.tls.key_file.empty()) options.emplace_back("tls_key", settings.tls.key_file);
  return options;
}

class OtlpGrpcExporter final : public SpanExporter {
 public:
  OtlpGrpcExporter(const ExporterSettings& settings, Resource resource, InstrumentationScope scope,
                   std::shared_ptr<ExporterStatistics> statistics)
      : settings_(settings),
        url_(parse_endpoint(settings.endpoint)),
        runtime_(1),
        resource_(std::move(resource)),
        scope_(std::move(scope)),
        statistics_(std::move(statistics)) {
    transport_ = micro::PluginLoader::instance().create<micro::Transport>(
        "grpc", "", transport_options(url_, settings), runtime_.executor());
    request_ = std::make_shared<micro::Request>();
    request_->service = trace_service_package;
    request_->endpoint = export_endpoint;
    request_->content_type = "application/protobuf";  // application/grpc on the wire
    // gRPC metadata names are lowercase (HTTP/2 demands it).
    for (const auto& [name, value] : settings.headers)
      request_->context.metadata().set(lowercase(name), value);
  }

  ~OtlpGrpcExporter() override {
    transport_->close();
    transport_.reset();
    runtime_.stop();
  }

  ExportResult export_spans(std::span<const SpanData> spans) override {
    if (stopped()) return ExportResult::failure;
    if (spans.empty()) return ExportResult::success;
    // Encoded into the request's body, whose capacity is reused from the last batch.
    encode_otlp_protobuf(spans, resource_, scope_, request_->body);

    const auto deadline = Clock::now() + settings_.timeout;
    request_->context.set_deadline(deadline);  // sent as grpc-timeout
    auto backoff = initial_backoff;
    std::string problem;
    bool retryable = false;
    for (int attempt = 1;; ++attempt) {
      micro::Response response = call(deadline);
      if (!response.error) {
        account_success(spans.size(), parse_partial_success(response.body));
        return ExportResult::success;
      }
      // The status the server sent (the transport keeps it beside the micro code, which merges
      // some statuses), or the one our own failure maps to (503 unreachable → UNAVAILABLE).
      int status = micro::grpc_status_for(*response.error);
      if (const std::string* sent = response.metadata.find("grpc-status"))
        status = std::atoi(sent->c_str());
      RetryHint hint;
      if (const std::string* details = response.metadata.find("grpc-status-details-bin"))
        hint = parse_retry_hint(*details);
      problem = "gRPC status " + std::to_string(status) + ": " + response.error->detail;
      retryable = otlp_grpc_retryable(status, hint);
      if (!retryable) break;  // sending the same spans again will not help
      auto wait = hint.delay ? *hint.delay : jittered(backoff);
      backoff = std::min(std::chrono::duration_cast<std::chrono::milliseconds>(backoff * 1.5),
                         max_backoff);
      if (attempt >= settings_.max_attempts) break;
      // A wait that outlasts the deadline would only end in a timed-out attempt.
      if (Clock::now() + wait >= deadline) break;
      if (!sleep_for(wait)) break;
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
  // One Export call; the transport ends it by the deadline (408), so the wait is bounded.
  micro::Response call(Clock::time_point deadline) {
    auto promise = std::make_shared<std::promise<micro::Response>>();
    auto answer = promise->get_future();
    transport_->async_call(url_.authority(), request_, [promise](micro::Response&& response) {
      promise->set_value(std::move(response));
    });
    // A margin past the deadline: the transport's own timer answers first.
    if (answer.wait_until(deadline + std::chrono::seconds(2)) != std::future_status::ready) {
      // The transport still holds the request: later exports fill a copy of their own.
      request_ = std::make_shared<micro::Request>(*request_);
      return micro::Response::failure(
          micro::timeout_error("micro.trace", "no answer from " + url_.authority()));
    }
    return answer.get();
  }

  void account_success(std::size_t count, const std::optional<PartialSuccess>& partial) {
    // A partial success is final: the spans it rejected are not sent again (the spec says so).
    std::size_t rejected = 0;
    if (partial && partial->rejected_spans > 0)
      rejected = std::min(count, static_cast<std::size_t>(partial->rejected_spans));
    statistics_->exported += count - rejected;
    statistics_->dropped_on_failure += rejected;
    if (partial && (rejected > 0 || !partial->error_message.empty())) {
      if (!partially_rejected_)
        micro::log::warn("trace", "export to " + settings_.endpoint + ": the collector rejected " +
                                      std::to_string(partial->rejected_spans) + " spans (" +
                                      partial->error_message +
                                      "); further partial successes are counted silently");
      partially_rejected_ = true;
    }
    report_recovery();
  }

  bool stopped() {
    std::lock_guard lock(mutex_);
    return stopped_;
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
  micro::Runtime runtime_;  // before transport_: the transport runs on it
  std::shared_ptr<micro::Transport> transport_;
  std::shared_ptr<micro::Request> request_;  // the same head for every export; body replaced
  Resource resource_;
  InstrumentationScope scope_;
  std::shared_ptr<ExporterStatistics> statistics_;
  bool failing_ = false;
  bool partially_rejected_ = false;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopped_ = false;
};

}  // namespace

RetryHint parse_retry_hint(std::string_view status_details) {
  // google.rpc.Status {int32 code = 1; string message = 2; repeated google.protobuf.Any
  // details = 3;}, Any {string type_url = 1; bytes value = 2;},
  // google.rpc.RetryInfo {google.protobuf.Duration retry_delay = 1;}.
  RetryHint hint;
  ProtoReader status(status_details);
  std::uint32_t field = 0, type = 0;
  while (status.next(field, type)) {
    if (field != 3 || type != 2) {
      if (!status.skip(type)) break;
      continue;
    }
    std::string_view any;
    if (!status.bytes(any)) break;
    ProtoReader detail(any);
    std::string_view type_url, value;
    bool has_value = false;
    while (detail.next(field, type)) {
      if (field == 1 && type == 2) {
        if (!detail.bytes(type_url)) break;
      } else if (field == 2 && type == 2) {
        if (!detail.bytes(value)) break;
        has_value = true;
      } else if (!detail.skip(type)) {
        break;
      }
    }
    constexpr std::string_view retry_info = "/google.rpc.RetryInfo";
    if (!detail.ok() || type_url.size() < retry_info.size() ||
        type_url.substr(type_url.size() - retry_info.size()) != retry_info)
      continue;
    hint.retry_info = true;
    if (!has_value) continue;
    ProtoReader info(value);
    while (info.next(field, type)) {
      if (field == 1 && type == 2) {
        std::string_view duration;
        if (!info.bytes(duration)) break;
        hint.delay = read_duration(duration);
      } else if (!info.skip(type)) {
        break;
      }
    }
  }
  if (!status.ok()) return {};
  return hint;
}

bool otlp_grpc_retryable(int status, const RetryHint& hint) {
  switch (status) {
    case status_cancelled:
    case status_deadline_exceeded:
    case status_aborted:
    case status_out_of_range:
    case status_unavailable:
    case status_data_loss:
      return true;
    case status_resource_exhausted:
      return hint.retry_info;  // the server says recovery is possible
    default:
      return false;
  }
}

std::optional<PartialSuccess> parse_partial_success(std::string_view response) {
  // ExportTraceServiceResponse {ExportTracePartialSuccess partial_success = 1;},
  // ExportTracePartialSuccess {int64 rejected_spans = 1; string error_message = 2;}.
  ProtoReader reader(response);
  std::optional<PartialSuccess> partial;
  std::uint32_t field = 0, type = 0;
  while (reader.next(field, type)) {
    if (field != 1 || type != 2) {
      if (!reader.skip(type)) break;
      continue;
    }
    std::string_view bytes;
    if (!reader.bytes(bytes)) break;
    if (!partial) partial.emplace();
    ProtoReader inner(bytes);
    while (inner.next(field, type)) {
      if (field == 1 && type == 0) {
        std::uint64_t rejected = 0;
        if (!inner.varint(rejected)) break;
        partial->rejected_spans = static_cast<std::int64_t>(rejected);
      } else if (field == 2 && type == 2) {
        std::string_view message;
        if (!inner.bytes(message)) break;
        partial->error_message = std::string(message);
      } else if (!inner.skip(type)) {
        break;
      }
    }
    if (!inner.ok()) return std::nullopt;
  }
  if (!reader.ok()) return std::nullopt;
  return partial;
}

std::unique_ptr<SpanExporter> make_otlp_grpc_exporter(
    const ExporterSettings& settings, const Resource& resource, const InstrumentationScope& scope,
    std::shared_ptr<ExporterStatistics> statistics) {
  return std::make_unique<OtlpGrpcExporter>(settings, resource, scope, std::move(statistics));
}

}  // namespace micro::trace::sdk
