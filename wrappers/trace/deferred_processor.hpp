// wrappers/trace — deferred ("tail in process") sampling: a span processor in front of the
// batch processor that holds the spans of each local trace until its local root span ends
// (a span with no parent, or a remote one), then keeps them all or none. Local traces are told
// apart by trace id and local root (SpanData::local_root), so a trace that enters this
// process twice at once is decided twice, each part on its own spans. A local trace is
// kept when any of its spans failed (status ERROR, with keep_errors), any lasted at least
// `slower_than`, or its root's sampled flag is set (the traceidratio decision the tracer
// made for the trace, or the caller's flag). So an error deep in a call tree keeps the
// whole local tree, which no head sampler can do.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "batch_processor.hpp"
#include "span_data.hpp"

namespace micro::trace::sdk {

struct DeferredSettings {
  bool keep_errors = true;
  std::chrono::nanoseconds slower_than{0};  // 0: latency keeps nothing
  // Spans of undecided traces held at once; past it the oldest undecided trace is decided
  // with what it has (its root never ended, or ends much later).
  std::size_t max_buffered = 16384;
};

struct DeferredCounts {
  std::uint64_t traces_kept = 0, traces_discarded = 0;
  std::uint64_t spans_kept = 0, spans_discarded = 0;
  std::uint64_t traces_forced = 0;  // decided early, the buffer being full
};

class DeferredProcessor final : public SpanProcessor {
 public:
  DeferredProcessor(std::shared_ptr<SpanProcessor> next, DeferredSettings settings);
  ~DeferredProcessor() override;

  void on_end(SpanData&& span) noexcept override;
  // Flushes what was decided; undecided traces wait for their roots.
  bool force_flush(std::chrono::milliseconds timeout) override;
  // Decides every undecided trace with what it has, then shuts `next` down.
  bool shutdown() override;
  SpanData* acquire_span_data() override { return next_->acquire_span_data(); }
  void end_span(SpanData* data) noexcept override;
  void release_span_data(SpanData* data) noexcept override { next_->release_span_data(data); }

  DeferredCounts counts() const;

 private:
  // A local trace: the trace id and the local root's span id.
  struct LocalTrace {
    TraceId trace_id;
    SpanId root;
    friend bool operator==(const LocalTrace&, const LocalTrace&) = default;
  };
  // Mixed with a per-process random seed: trace ids can come from outside (traceparent), and
  // chosen ones must not make every lookup under the mutex walk one long chain.
  struct LocalTraceHash {
    std::size_t operator()(const LocalTrace& key) const noexcept;
  };
  static LocalTrace local_trace_of(const SpanData& span, bool& local_root) noexcept;
  struct Pending {
    std::vector<SpanData*> spans;
    bool keep = false;  // an error or a slow span seen
    std::uint64_t order = 0;
  };
  bool interesting(const SpanData& span) const noexcept;
  // Under mutex_: takes the trace's spans out and records the decision.
  std::vector<SpanData*> decide(const LocalTrace& key, Pending& pending, bool keep);
  void remember(const LocalTrace& key, bool keep);
  // Under mutex_: drops pending_order_ entries of decided traces (all of them, now and then,
  // so a trace that never ends cannot make the list grow without bound).
  void tidy_order();
  // Outside the mutex: hands kept spans on, gives discarded ones back.
  void settle(std::vector<SpanData*>& spans, bool keep) noexcept;

  std::shared_ptr<SpanProcessor> next_;
  DeferredSettings settings_;
  mutable std::mutex mutex_;
  std::unordered_map<LocalTrace, Pending, LocalTraceHash> pending_;
  std::deque<std::pair<std::uint64_t, LocalTrace>> pending_order_;  // oldest first (may be stale)
  std::uint64_t next_order_ = 0;
  std::size_t buffered_ = 0;
  // Recently decided traces, for spans that end after their local root (async work): a
  // fixed table by trace id hash, a newer trace overwriting an older one (no allocation).
  struct Decided {
    LocalTrace key;
    bool keep = false;
  };
  static constexpr std::size_t decided_slots = 4096;
  std::vector<Decided> decided_ = std::vector<Decided>(decided_slots);
  Decided* find_decided(const LocalTrace& key) noexcept;
  DeferredCounts counts_;
};

}  // namespace micro::trace::sdk
