// wrappers/trace — span processors: what happens to a span when it ends. The batch
// processor queues finished spans (pointers to pooled span data) in a bounded lock-free
// queue (the ending thread never blocks; when full it drops and counts) and one worker
// thread hands them to the exporter in batches, when a batch is full or the schedule delay
// passes.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <micro/plugin.hpp>

#include "span_data.hpp"

namespace micro::trace::sdk {

// The SDK's self-telemetry, process-wide (one SDK is installed at a time). Each counter
// sits on its own cache line so threads counting different things do not contend.
// Started, ended and dropped are counted per thread (count_span_*) and summed on read
// (span_counts()); these three fields hold what exited threads counted.
struct SdkCounters {
  alignas(64) std::atomic<std::uint64_t> spans_started{0};  // recording spans started
  alignas(64) std::atomic<std::uint64_t> spans_ended{0};    // recording spans ended
  alignas(64) std::atomic<std::uint64_t> spans_exported{0};
  alignas(64) std::atomic<std::uint64_t> spans_dropped{0};        // queue full or shut down
  alignas(64) std::atomic<std::uint64_t> spans_export_failed{0};  // in batches that failed
  alignas(64) std::atomic<std::uint64_t> export_failures{0};      // failed batches
};
SdkCounters& sdk_counters() noexcept;

// The counts every span bumps, kept per thread: a plain add on the thread's own cache line
// instead of an atomic read-modify-write on a shared one.
void count_span_started() noexcept;
void count_span_ended() noexcept;
void count_span_dropped() noexcept;
struct SpanCounts {
  std::uint64_t started = 0, ended = 0, dropped = 0;
};
SpanCounts span_counts() noexcept;  // summed over all threads, live and exited

class SpanProcessor {
 public:
  virtual ~SpanProcessor() = default;
  // Takes a finished recording span. Must not block.
  virtual void on_end(SpanData&& span) noexcept = 0;
  // Exports everything ended so far; false if that did not finish within `timeout`.
  virtual bool force_flush(std::chrono::milliseconds timeout) = 0;
  // Flushes and stops; later spans are dropped. Idempotent.
  virtual bool shutdown() = 0;

  // A recording span's data lives in storage the processor lends: acquire_span_data at
  // start (cleared, default values), then exactly one of end_span (the span ended; the
  // processor owns the data again) or release_span_data (destroyed without ending). The
  // defaults allocate one SpanData per span and pass it to on_end.
  virtual SpanData* acquire_span_data() { return new SpanData; }
  virtual void end_span(SpanData* data) noexcept {
    on_end(std::move(*data));
    delete data;
  }
  virtual void release_span_data(SpanData* data) noexcept { delete data; }
};

// Empties `data` for reuse, keeping the capacity of its strings and attribute vector
// unless that grew unusually large.
void clear_span_data(SpanData& data) noexcept;

struct BatchSettings {
  std::size_t max_queue_size = 2048;
  std::size_t max_export_batch_size = 512;  // clamped to max_queue_size
  std::chrono::milliseconds schedule_delay{5000};
  std::chrono::milliseconds export_timeout{30000};  // bounds force_flush and shutdown

  // Options max_queue_size, max_export_batch_size, schedule_delay, export_timeout win over
  // OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE, OTEL_BSP_SCHEDULE_DELAY and
  // OTEL_BSP_EXPORT_TIMEOUT (milliseconds), which win over the defaults. Throws
  // micro::Exception 400 naming the option or variable that is malformed or not positive.
  static BatchSettings from(const PluginArguments& arguments);
};

class BatchProcessor final : public SpanProcessor {
 public:
  BatchProcessor(std::unique_ptr<SpanExporter> exporter, BatchSettings settings);
  ~BatchProcessor() override;  // shutdown()
  BatchProcessor(const BatchProcessor&) = delete;
  BatchProcessor& operator=(const BatchProcessor&) = delete;

  void on_end(SpanData&& span) noexcept override;
  bool force_flush(std::chrono::milliseconds timeout) override;
  // Flushes what is queued, then shuts the exporter down, all within export_timeout. If
  // the exporter is stuck beyond that, the worker is left to finish on its own (it owns
  // its state) and false is returned.
  bool shutdown() override;
  // Span data nodes circulate: taken from a free list at span start, queued by pointer at
  // end (nothing is moved on the ending thread), swapped into the export batch by the
  // worker, which clears them and puts them back on the free list.
  SpanData* acquire_span_data() override;
  void end_span(SpanData* data) noexcept override;
  void release_span_data(SpanData* data) noexcept override;

  const BatchSettings& settings() const noexcept;
  std::size_t queued() const noexcept;  // approximate

  struct State;

 private:
  std::shared_ptr<State> state_;
  std::mutex shutdown_mutex_;
  std::thread worker_;
};

}  // namespace micro::trace::sdk
