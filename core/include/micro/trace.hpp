// micro/trace.hpp — the tracing API: spans, span contexts, W3C Trace Context and baggage.
//
// Libraries and application code use only this header. The global provider defaults to a
// no-op that allocates nothing and takes no lock; the trace wrapper plugin (wrappers/trace)
// installs the real SDK, which records spans and exports them over OTLP.
//
//   auto span = micro::trace::start_span("Database.Insert", context);
//   span->set_attribute("db.system", "postgresql");
//   …
//   span->end();
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <micro/context.hpp>

namespace micro::trace {

struct TraceId {
  std::array<std::uint8_t, 16> bytes{};
  bool valid() const noexcept;  // not all zero
  std::string to_hex() const;   // 32 lowercase hex digits
  // Exactly 32 lowercase hex digits; nullopt otherwise (uppercase is invalid per W3C).
  static std::optional<TraceId> from_hex(std::string_view hex) noexcept;
  friend bool operator==(const TraceId&, const TraceId&) = default;
};

struct SpanId {
  std::array<std::uint8_t, 8> bytes{};
  bool valid() const noexcept;
  std::string to_hex() const;  // 16 lowercase hex digits
  static std::optional<SpanId> from_hex(std::string_view hex) noexcept;
  friend bool operator==(const SpanId&, const SpanId&) = default;
};

inline constexpr std::uint8_t flag_sampled = 0x01;
inline constexpr std::uint8_t flag_random = 0x02;  // W3C Trace Context level 2

struct SpanContext {
  TraceId trace_id;
  SpanId span_id;
  std::uint8_t flags = 0;
  std::string trace_state;  // the validated tracestate header value, "" when none
  bool remote = false;      // extracted from a peer rather than started here

  bool valid() const noexcept { return trace_id.valid() && span_id.valid(); }
  bool sampled() const noexcept { return (flags & flag_sampled) != 0; }
  friend bool operator==(const SpanContext&, const SpanContext&) = default;
};

// Values are OTLP's: SPAN_KIND_INTERNAL = 1 … SPAN_KIND_CONSUMER = 5.
enum class SpanKind : std::uint8_t {
  internal = 1,
  server = 2,
  client = 3,
  producer = 4,
  consumer = 5
};
// OTLP's STATUS_CODE_UNSET = 0, OK = 1, ERROR = 2.
enum class StatusCode : std::uint8_t { unset = 0, ok = 1, error = 2 };

using AttributeValue =
    std::variant<bool, std::int64_t, double, std::string, std::vector<bool>,
                 std::vector<std::int64_t>, std::vector<double>, std::vector<std::string>>;
using Attribute = std::pair<std::string, AttributeValue>;

struct Link {
  SpanContext context;
  std::vector<Attribute> attributes;
};

struct StartOptions {
  SpanKind kind = SpanKind::internal;
  // The parent to use instead of the context's active span (a remote parent extracted from
  // metadata, say). Null: the context's span, or a new root when it has none.
  const SpanContext* parent = nullptr;
  bool root = false;  // ignore any parent: start a new trace
  std::vector<Link> links;
  // Known at start, so samplers can see them (rpc.service, messaging.destination.name…).
  std::vector<Attribute> attributes;
  std::chrono::system_clock::time_point start_time{};  // default: now
};

// Default options, shared: passing these costs nothing, while a defaulted `{}` argument
// builds and destroys a StartOptions (two vectors) at every call site.
inline constinit const StartOptions default_start_options{};

// One operation. Methods may be called from any thread; after end() they do nothing.
// A span that is not recording (unsampled, or tracing off) ignores attributes and events
// cheaply: instrumentation checks recording() before building expensive values.
class Span {
 public:
  virtual ~Span() = default;
  virtual const SpanContext& context() const noexcept = 0;
  virtual bool recording() const noexcept = 0;
  virtual void set_attribute(std::string_view key, AttributeValue value) = 0;
  virtual void add_event(std::string_view name, std::vector<Attribute> attributes = {}) = 0;
  virtual void add_link(const SpanContext& context, std::vector<Attribute> attributes = {}) = 0;
  // ERROR with a description, or OK; a description is kept only with ERROR.
  virtual void set_status(StatusCode code, std::string_view description = {}) = 0;
  virtual void update_name(std::string_view name) = 0;
  virtual void end(std::chrono::system_clock::time_point end_time = {}) = 0;
};

// A span that only carries its context: never records and ignores everything. The no-op
// tracer hands one out; SDKs derive from it for unsampled spans (which must still propagate).
class NonRecordingSpan : public Span {
 public:
  NonRecordingSpan() = default;
  explicit NonRecordingSpan(SpanContext context) : context_(std::move(context)) {}
  const SpanContext& context() const noexcept final { return context_; }
  bool recording() const noexcept final { return false; }
  void set_attribute(std::string_view, AttributeValue) final {}
  void add_event(std::string_view, std::vector<Attribute>) final {}
  void add_link(const SpanContext&, std::vector<Attribute>) final {}
  void set_status(StatusCode, std::string_view) final {}
  void update_name(std::string_view) final {}
  void end(std::chrono::system_clock::time_point) final {}

 protected:
  SpanContext context_;
};

class Tracer {
 public:
  virtual ~Tracer() = default;
  // Starts a span under `context`'s active span (or options.parent). Never returns null.
  virtual std::shared_ptr<Span> start_span(std::string_view name, const Context& context,
                                           const StartOptions& options = default_start_options) = 0;
  // False for the no-op: callers may skip work that only feeds spans.
  virtual bool enabled() const noexcept = 0;
  // False when a span started now under `parent` (nullptr: a new trace) is sure not to
  // record, e.g. its parent is unsampled and the sampler follows parents: instrumentation
  // then skips building start attributes nobody will read. True when unsure.
  virtual bool may_record(const SpanContext* parent) const noexcept {
    (void)parent;
    return enabled();
  }
};

// The process-wide tracer. Never null; a no-op until an SDK installs one.
Tracer& tracer() noexcept;
// Installs `tracer` (null: back to the no-op). The previous one stays alive for spans that
// hold it; callers keep their own shared_ptr as long as the SDK must live.
void set_tracer(std::shared_ptr<Tracer> tracer) noexcept;

// Shorthand for tracer().start_span(…).
inline std::shared_ptr<Span> start_span(std::string_view name, const Context& context,
                                        const StartOptions& options = default_start_options) {
  return tracer().start_span(name, context, options);
}

// ---- W3C Trace Context (https://www.w3.org/TR/trace-context/, level 2's random flag) ----

// The longest tracestate we pass on (the spec asks for at least 512). A longer list loses whole
// members until it fits: those over 128 characters first, right to left, then the right-most.
inline constexpr std::size_t tracestate_max_length = 512;

// Parses a traceparent value. Optional white space around it is ignored. Version 00: exactly
// 55 characters; a higher version (not ff) is read at the fixed offsets and may carry more
// after a '-'. Lowercase hex only; all-zero trace or span ids are invalid. On failure returns
// nullopt and, when `error` is given, says what was wrong and at which character.
std::optional<SpanContext> parse_traceparent(std::string_view value, std::string* error = nullptr);
// "00-<trace id>-<span id>-<flags>": version 00, flags other than sampled and random as zero.
std::string format_traceparent(const SpanContext& context);

// Validates and normalises a tracestate value (lists from several headers joined by ',').
// Returns "" when the header must be dropped: more than 32 members, a malformed member, or a
// duplicated key. Empty members (",,") and OWS around members are skipped as the spec allows.
// Keys are the level 1 grammar the W3C test suite checks: a simple key (a-z first, up to 256)
// or tenant@system (up to 241 @ up to 14). A list longer than tracestate_max_length is cut
// as said there; `error` then names the members dropped while the rest is returned.
std::string normalize_tracestate(std::string_view value, std::string* error = nullptr);

// W3C Baggage: "key1=value1;prop,key2=value2" with percent-encoded values.
using Baggage = std::vector<std::pair<std::string, std::string>>;
Baggage parse_baggage(std::string_view value, std::string* error = nullptr);
std::string format_baggage(const Baggage& baggage);

// Writes `context` as traceparent (and tracestate when set) into `metadata`, replacing what
// was there (keys matched case-insensitively).
void inject(const SpanContext& context, Metadata& metadata);
// Reads the remote parent from `metadata` (any key case, so Go's "Traceparent" works);
// nullopt when absent or invalid, and then its tracestate is ignored too. The result has
// remote = true and the normalised tracestate.
std::optional<SpanContext> extract(const Metadata& metadata);
// The same from HTTP field values: every traceparent field joined with ',' and every
// tracestate field likewise (RFC 9110 §5.3), "" for none. A traceparent sent twice is thereby
// invalid, as the spec wants: the trace restarts.
std::optional<SpanContext> extract(std::string_view traceparent, std::string_view tracestate);

}  // namespace micro::trace
