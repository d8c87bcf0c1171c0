// wrappers/trace — the recording SDK behind <micro/trace.hpp>: a Tracer that makes ids,
// asks the sampler, and starts either a recording span (attributes, events, links and
// status under span limits, sensitive keys redacted, handed to the processor once on end)
// or a non-recording one that only carries its SpanContext so propagation continues.
// Also the SDK's self-telemetry counters.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <micro/trace.hpp>

#include "batch_processor.hpp"
#include "samplers.hpp"
#include "span_data.hpp"

namespace micro::trace::sdk {

// Spec defaults; OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT, OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT,
// OTEL_SPAN_EVENT_COUNT_LIMIT and OTEL_SPAN_LINK_COUNT_LIMIT override them. The attribute
// limits apply to the attributes of events and links too.
struct SpanLimits {
  static constexpr std::size_t unlimited = std::numeric_limits<std::size_t>::max();
  std::size_t attribute_count = 128;
  std::size_t attribute_value_length = unlimited;  // bytes, cut at a UTF-8 boundary
  std::size_t event_count = 128;
  std::size_t link_count = 128;

  // Throws micro::Exception 400 naming a variable that is not a non-negative integer.
  static SpanLimits from_environment();
};

// Decides which attribute keys are sensitive: a key containing any pattern, compared
// case-insensitively, has its value replaced by "[REDACTED]".
class Redactor {
 public:
  static constexpr std::string_view redacted = "[REDACTED]";
  // password, passwd, secret, token, api_key, apikey, authorization, auth_token,
  // credit_card, card_number, cookie, session
  static const std::vector<std::string>& default_patterns();
  // "password,pin , ssn" → {"password","pin","ssn"}; "" or "none" → {} (redact nothing).
  static std::vector<std::string> parse(std::string_view comma_list);

  Redactor() : Redactor(default_patterns()) {}
  explicit Redactor(const std::vector<std::string>& patterns);
  // Copies share the patterns and so the identity below; no move (a moved-from redactor
  // would keep its identity but lose its patterns).
  Redactor(const Redactor&) = default;
  Redactor& operator=(const Redactor&) = default;

  // Answers from a small per-thread cache of recently seen keys (found by the key's
  // address and length, confirmed by its bytes) before scanning: keys are nearly always
  // string literals, so each call site scans once.
  bool sensitive(std::string_view key) const noexcept;
  // The scan itself, uncached.
  bool scan(std::string_view key) const noexcept;

 private:
  bool may_start_at(unsigned char first, unsigned char second) const noexcept {
    unsigned index = (first << 8) | second;
    return (bigrams_[index >> 6] >> (index & 63)) & 1;
  }

  std::vector<std::string> patterns_;  // lowercase, sorted so equal first characters are adjacent
  // Per first byte of the key (either case), the range of patterns_ starting with it.
  std::array<std::pair<std::uint8_t, std::uint8_t>, 256> by_first_character_{};
  // One bit per pair of raw bytes (either case) that begins some pattern (a one-character
  // pattern sets its character followed by anything, end included as 0): nearly every key
  // position is rejected with one bit test.
  std::array<std::uint64_t, 65536 / 64> bigrams_{};
  std::size_t shortest_ = 0;
  std::uint64_t identity_ = 0;  // unique per pattern set, for the per-thread cache
};

// Applies the value-length limit in place: strings, and each string of a string array.
void truncate_value(AttributeValue& value, std::size_t limit) noexcept;

// Fresh random ids from a fast per-thread generator (never all zero).
TraceId random_trace_id() noexcept;
SpanId random_span_id() noexcept;

// The SDK's self-telemetry, process-wide.
struct Statistics {
  std::uint64_t spans_started = 0;  // recording (sampled) spans started
  std::uint64_t spans_ended = 0;    // recording spans ended
  std::uint64_t spans_exported = 0;
  std::uint64_t spans_dropped = 0;        // the queue was full, or the SDK shut down
  std::uint64_t spans_export_failed = 0;  // spans in batches the exporter failed
  std::uint64_t export_failures = 0;      // failed batches
};
Statistics statistics() noexcept;
// "spans started=… ended=… exported=… dropped=… export_failed=… export_failures=…"
std::string format_statistics(const Statistics& statistics);

// What recording spans share with their tracer; spans keep it alive past the tracer.
struct SdkCore {
  std::shared_ptr<SpanProcessor> processor;
  SpanLimits limits;
  Redactor redactor;
};

class SdkTracer final : public Tracer {
 public:
  SdkTracer(std::shared_ptr<Sampler> sampler, std::shared_ptr<SpanProcessor> processor,
            SpanLimits limits = {}, Redactor redactor = {});

  // Parent: none when options.root; else options.parent; else the context's span; else a
  // new root (random trace id, W3C random flag set). Unsampled spans do not record but
  // carry a valid SpanContext with the sampled flag clear.
  std::shared_ptr<Span> start_span(std::string_view name, const Context& context,
                                   const StartOptions& options = default_start_options) override;
  bool enabled() const noexcept override { return true; }
  bool may_record(const SpanContext* parent) const noexcept override;

  const Sampler& sampler() const noexcept { return *sampler_; }
  const std::shared_ptr<SpanProcessor>& processor() const noexcept { return core_->processor; }

 private:
  std::shared_ptr<Sampler> sampler_;
  Sampler::Shortcut shortcut_;  // the sampler's, cached
  std::shared_ptr<const SdkCore> core_;
};

}  // namespace micro::trace::sdk
