// wrappers/trace — the batch span processor: a bounded multi-producer queue of span data
// pointers (Vyukov's sequence-numbered ring: a push is one CAS, never a lock) drained by
// one worker thread that exports in batches, and the free list the span data returns to.
#include "batch_processor.hpp"

#include <pthread.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <micro/error.hpp>
#include <micro/log.hpp>

namespace micro::trace::sdk {

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void fail(std::string detail) {
  throw Exception(bad_request("micro.wrapper.trace", std::move(detail)));
}

// A positive integer from an environment variable, or nullopt when unset or empty.
std::optional<std::int64_t> environment_integer(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  char* end = nullptr;
  errno = 0;
  long long number = std::strtoll(value, &end, 10);
  if (errno != 0 || *end != '\0' || end == value || number <= 0)
    fail(std::string("trace: ") + name + ": \"" + value + "\" is not a positive integer");
  return number;
}

std::int64_t positive_option(const PluginArguments& arguments, const char* name) {
  std::int64_t value = arguments.get_int(name);
  if (value <= 0)
    fail(std::string("trace: option ") + name + ": " + std::to_string(value) +
         " is not a positive integer");
  return value;
}

std::chrono::milliseconds positive_duration(const PluginArguments& arguments, const char* name) {
  auto value = arguments.get_duration(name);
  if (value.count() <= 0)
    fail(std::string("trace: option ") + name + ": \"" + arguments.get_string(name) +
         "\" is not a positive duration");
  return value;
}

// Vyukov's bounded MPMC queue over preallocated slots (finished spans; free span data).
template <class T>
class BoundedQueue {
 public:
  explicit BoundedQueue(std::size_t capacity) : slots_(capacity) {
    for (std::size_t index = 0; index < capacity; ++index)
      slots_[index].sequence.store(index, std::memory_order_relaxed);
  }

  // False when full; `span` is left untouched then. `position` receives the slot's number.
  bool push(T& item, std::size_t& pushed_at) noexcept {
    std::size_t position = enqueue_.load(std::memory_order_relaxed);
    for (;;) {
      Slot& slot = slots_[position % slots_.size()];
      std::size_t sequence = slot.sequence.load(std::memory_order_acquire);
      auto difference = static_cast<std::ptrdiff_t>(sequence - position);
      if (difference == 0) {
        if (enqueue_.compare_exchange_weak(position, position + 1, std::memory_order_relaxed)) {
          slot.data = std::move(item);
          slot.sequence.store(position + 1, std::memory_order_release);
          pushed_at = position;
          return true;
        }
      } else if (difference < 0) {
        return false;
      } else {
        position = enqueue_.load(std::memory_order_relaxed);
      }
    }
  }

  bool pop(T& out) noexcept {
    std::size_t position = dequeue_.load(std::memory_order_relaxed);
    for (;;) {
      Slot& slot = slots_[position % slots_.size()];
      std::size_t sequence = slot.sequence.load(std::memory_order_acquire);
      auto difference = static_cast<std::ptrdiff_t>(sequence - (position + 1));
      if (difference == 0) {
        if (dequeue_.compare_exchange_weak(position, position + 1, std::memory_order_relaxed)) {
          // Moving out leaves the slot's strings and vectors empty, owning no memory.
          out = std::move(slot.data);
          slot.sequence.store(position + slots_.size(), std::memory_order_release);
          return true;
        }
      } else if (difference < 0) {
        return false;
      } else {
        position = dequeue_.load(std::memory_order_relaxed);
      }
    }
  }

  std::size_t size() const noexcept {
    std::size_t tail = enqueue_.load(std::memory_order_relaxed);
    std::size_t head = dequeue_.load(std::memory_order_relaxed);
    return tail > head ? tail - head : 0;
  }

 private:
  struct Slot {
    std::atomic<std::size_t> sequence{0};
    T data;
  };
  std::vector<Slot> slots_;
  alignas(64) std::atomic<std::size_t> enqueue_{0};
  alignas(64) std::atomic<std::size_t> dequeue_{0};
};

// One thread's span counts. Only the owning thread writes them (load + store, no locked
// instruction); readers sum them under the registry's mutex.
struct ThreadSpanCounts {
  std::atomic<std::uint64_t> started{0}, ended{0}, dropped{0};
  ThreadSpanCounts* next = nullptr;
  ThreadSpanCounts* previous = nullptr;
  bool registered = false;
  bool exited = false;  // the thread is exiting: count into the shared totals
};

struct CountRegistry {
  std::mutex mutex;
  ThreadSpanCounts* head = nullptr;
};

CountRegistry& count_registry() {
  static CountRegistry registry;
  return registry;
}

ThreadSpanCounts& local_counts() noexcept {
  thread_local ThreadSpanCounts counts;  // constant-initialised, trivially destructible
  return counts;
}

// Folds the thread's counts into the shared totals when it exits.
struct ThreadCountsRetirer {
  ~ThreadCountsRetirer() {
    auto& counts = local_counts();
    auto& registry = count_registry();
    std::lock_guard lock(registry.mutex);
    auto& totals = sdk_counters();
    totals.spans_started.fetch_add(counts.started.load(std::memory_order_relaxed));
    totals.spans_ended.fetch_add(counts.ended.load(std::memory_order_relaxed));
    totals.spans_dropped.fetch_add(counts.dropped.load(std::memory_order_relaxed));
    if (counts.previous != nullptr)
      counts.previous->next = counts.next;
    else
      registry.head = counts.next;
    if (counts.next != nullptr) counts.next->previous = counts.previous;
    counts.exited = true;
  }
};

void register_local_counts(ThreadSpanCounts& counts) noexcept {
  auto& registry = count_registry();
  std::lock_guard lock(registry.mutex);
  counts.registered = true;
  counts.next = registry.head;
  if (registry.head != nullptr) registry.head->previous = &counts;
  registry.head = &counts;
  thread_local ThreadCountsRetirer retirer;
  (void)retirer;
}

void bump(std::atomic<std::uint64_t> ThreadSpanCounts::*field,
          std::atomic<std::uint64_t> SdkCounters::*total) noexcept {
  auto& counts = local_counts();
  if (!counts.registered) [[unlikely]]
    register_local_counts(counts);
  if (counts.exited) [[unlikely]] {
    (sdk_counters().*total).fetch_add(1, std::memory_order_relaxed);
    return;
  }
  auto& counter = counts.*field;
  counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

}  // namespace

SdkCounters& sdk_counters() noexcept {
  static SdkCounters counters;
  return counters;
}

void count_span_started() noexcept {
  bump(&ThreadSpanCounts::started, &SdkCounters::spans_started);
}
void count_span_ended() noexcept {
  bump(&ThreadSpanCounts::ended, &SdkCounters::spans_ended);
}
void count_span_dropped() noexcept {
  bump(&ThreadSpanCounts::dropped, &SdkCounters::spans_dropped);
}

SpanCounts span_counts() noexcept {
  auto& registry = count_registry();
  std::lock_guard lock(registry.mutex);
  auto& totals = sdk_counters();
  SpanCounts result{totals.spans_started.load(std::memory_order_relaxed),
                    totals.spans_ended.load(std::memory_order_relaxed),
                    totals.spans_dropped.load(std::memory_order_relaxed)};
  for (auto* counts = registry.head; counts != nullptr; counts = counts->next) {
    result.started += counts->started.load(std::memory_order_relaxed);
    result.ended += counts->ended.load(std::memory_order_relaxed);
    result.dropped += counts->dropped.load(std::memory_order_relaxed);
  }
  return result;
}

BatchSettings BatchSettings::from(const PluginArguments& arguments) {
  BatchSettings settings;
  if (arguments.has("max_queue_size"))
    settings.max_queue_size =
        static_cast<std::size_t>(positive_option(arguments, "max_queue_size"));
  else if (auto value = environment_integer("OTEL_BSP_MAX_QUEUE_SIZE"))
    settings.max_queue_size = static_cast<std::size_t>(*value);

  if (arguments.has("max_export_batch_size"))
    settings.max_export_batch_size =
        static_cast<std::size_t>(positive_option(arguments, "max_export_batch_size"));
  else if (auto value = environment_integer("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"))
    settings.max_export_batch_size = static_cast<std::size_t>(*value);

  if (arguments.has("schedule_delay"))
    settings.schedule_delay = positive_duration(arguments, "schedule_delay");
  else if (auto value = environment_integer("OTEL_BSP_SCHEDULE_DELAY"))
    settings.schedule_delay = std::chrono::milliseconds(*value);

  if (arguments.has("export_timeout"))
    settings.export_timeout = positive_duration(arguments, "export_timeout");
  else if (auto value = environment_integer("OTEL_BSP_EXPORT_TIMEOUT"))
    settings.export_timeout = std::chrono::milliseconds(*value);

  // The spec requires batch <= queue; a larger batch could never fill.
  if (settings.max_export_batch_size > settings.max_queue_size)
    settings.max_export_batch_size = settings.max_queue_size;
  return settings;
}

void clear_span_data(SpanData& data) noexcept {
  // Kept capacity is bounded: a span with unusually many attributes or a long name does
  // not pin that memory in the pool.
  constexpr std::size_t max_kept_attributes = 32, max_kept_text = 256;
  data.context = SpanContext{};
  data.parent_span_id = SpanId{};
  data.parent_remote = false;
  data.local_root = SpanId{};
  if (data.name.capacity() > max_kept_text) data.name = std::string();
  data.name.clear();
  data.kind = SpanKind::internal;
  data.start_time = data.end_time = {};
  if (data.attributes.capacity() > max_kept_attributes) data.attributes = {};
  data.attributes.clear();
  data.events = {};
  data.links = {};
  data.status = StatusCode::unset;
  if (data.status_message.capacity() > max_kept_text) data.status_message = std::string();
  data.status_message.clear();
  data.dropped_attributes = data.dropped_events = data.dropped_links = 0;
}

struct BatchProcessor::State {
  State(std::unique_ptr<SpanExporter> exporter_, BatchSettings settings_)
      : settings(settings_),
        exporter(std::move(exporter_)),
        queue(settings_.max_queue_size),
        free_data(std::max<std::size_t>(settings_.max_queue_size, min_free_data)) {}

  ~State() {
    SpanData* data = nullptr;
    while (queue.pop(data)) delete data;
    while (free_data.pop(data)) delete data;
  }

  static constexpr std::size_t min_free_data = 64;

  BatchSettings settings;
  std::unique_ptr<SpanExporter> exporter;
  BoundedQueue<SpanData*> queue;
  // Span data for new spans (cleared when taken), owned by this state: the ending thread
  // neither allocates nor frees, and strings and attribute vectors keep their capacity.
  BoundedQueue<SpanData*> free_data;

  // Back to the free list, or freed when the list is full (a burst of live spans).
  void recycle(SpanData* data) noexcept {
    std::size_t position = 0;
    if (!free_data.push(data, position)) delete data;
  }
  std::atomic<bool> closed{false};        // no more spans accepted
  std::atomic<bool> wake_pending{false};  // a producer already signalled a full batch

  std::mutex mutex;
  std::condition_variable wake;  // to the worker
  std::condition_variable done;  // from the worker: flush completed, or finished
  bool stop = false;
  bool finished = false;
  std::uint64_t flush_requested = 0;
  std::uint64_t flush_completed = 0;

  // Exports queued spans: only full batches, or everything when `all`.
  void export_queued(bool all, std::vector<SpanData>& batch) {
    auto& counters = sdk_counters();
    for (;;) {
      if (!all && queue.size() < settings.max_export_batch_size) return;
      // Copied into the batch, whose entries reuse their own capacity, so the worker only
      // reads the node: its cache lines stay shared rather than migrating back and forth
      // between the worker's core and the ending thread's. The next span to take the node
      // clears it.
      std::size_t count = 0;
      SpanData* data = nullptr;
      while (count < settings.max_export_batch_size && queue.pop(data)) {
        if (count == batch.size()) batch.emplace_back();
        batch[count] = *data;
        recycle(data);
        ++count;
      }
      if (count == 0) return;
      ExportResult result = ExportResult::failure;
      try {
        result = exporter->export_spans(std::span<const SpanData>(batch.data(), count));
      } catch (const std::exception& error) {
        micro::log::error("trace", std::string("exporter threw: ") + error.what());
      } catch (...) {
        micro::log::error("trace", "exporter threw");
      }
      if (result == ExportResult::success) {
        counters.spans_exported.fetch_add(count, std::memory_order_relaxed);
      } else {
        counters.export_failures.fetch_add(1, std::memory_order_relaxed);
        counters.spans_export_failed.fetch_add(count, std::memory_order_relaxed);
      }
    }
  }

  void run() {
    pthread_setname_np(pthread_self(), "micro-trace-bsp");
    std::vector<SpanData> batch;
    batch.reserve(settings.max_export_batch_size);
    auto deadline = Clock::now() + settings.schedule_delay;
    std::unique_lock lock(mutex);
    for (;;) {
      // Cleared only now, after the previous export: a producer that signalled while the
      // worker was busy exporting must not leave the flag set, or no later producer would
      // wake the worker again until the schedule delay ran out.
      wake_pending.store(false, std::memory_order_relaxed);
      wake.wait_until(lock, deadline, [&] {
        return stop || flush_requested != flush_completed ||
               queue.size() >= settings.max_export_batch_size;
      });
      bool stopping = stop;
      std::uint64_t flush_target = flush_requested;
      bool timer = Clock::now() >= deadline;
      lock.unlock();

      bool all = stopping || timer || flush_target != flush_completed;
      export_queued(all, batch);
      if (timer) deadline = Clock::now() + settings.schedule_delay;

      if (stopping) {
        auto remaining =
            std::chrono::duration_cast<std::chrono::milliseconds>(stop_deadline - Clock::now());
        try {
          exporter->shutdown(std::max(remaining, std::chrono::milliseconds(0)));
        } catch (...) {
        }
      }
      lock.lock();
      flush_completed = flush_target;
      if (stopping) {
        finished = true;
        done.notify_all();
        return;
      }
      done.notify_all();
    }
  }

  Clock::time_point stop_deadline;  // set before stop, read by the worker after it sees stop
};

BatchProcessor::BatchProcessor(std::unique_ptr<SpanExporter> exporter, BatchSettings settings)
    : state_(std::make_shared<State>(std::move(exporter), settings)) {
  // The worker holds the state too, so a worker stuck in an exporter past shutdown can
  // finish later without touching freed memory.
  worker_ = std::thread([state = state_] { state->run(); });
}

BatchProcessor::~BatchProcessor() {
  shutdown();
}

const BatchSettings& BatchProcessor::settings() const noexcept {
  return state_->settings;
}
std::size_t BatchProcessor::queued() const noexcept {
  return state_->queue.size();
}

void BatchProcessor::on_end(SpanData&& span) noexcept {
  SpanData* data = nullptr;
  try {
    data = acquire_span_data();
  } catch (...) {
    count_span_dropped();
    return;
  }
  *data = std::move(span);
  end_span(data);
}

SpanData* BatchProcessor::acquire_span_data() {
  SpanData* data = nullptr;
  if (state_->free_data.pop(data)) {
    clear_span_data(*data);  // it still holds the span it carried last
    return data;
  }
  return new SpanData;
}

void BatchProcessor::release_span_data(SpanData* data) noexcept {
  state_->recycle(data);
}

void BatchProcessor::end_span(SpanData* data) noexcept {
  State& state = *state_;
  std::size_t position = 0;
  if (state.closed.load(std::memory_order_relaxed) || !state.queue.push(data, position)) {
    count_span_dropped();
    state.recycle(data);
    return;
  }
  // Every batch_size-th span wakes the worker (which checks whether a batch is really
  // full), so the hot path never reads the worker's side of the queue. The lock pairs with
  // the worker's predicate check so the signal cannot fall between its check and its wait.
  if ((position + 1) % state.settings.max_export_batch_size == 0 &&
      !state.wake_pending.exchange(true, std::memory_order_relaxed)) {
    std::lock_guard lock(state.mutex);
    state.wake.notify_one();
  }
}

bool BatchProcessor::force_flush(std::chrono::milliseconds timeout) {
  State& state = *state_;
  std::unique_lock lock(state.mutex);
  if (state.finished || state.stop) return state.finished;
  std::uint64_t target = ++state.flush_requested;
  state.wake.notify_one();
  return state.done.wait_for(lock, timeout,
                             [&] { return state.finished || state.flush_completed >= target; });
}

bool BatchProcessor::shutdown() {
  std::lock_guard shutdown_lock(shutdown_mutex_);  // one caller joins the worker
  State& state = *state_;
  std::unique_lock lock(state.mutex);
  if (state.stop && !worker_.joinable()) return state.finished;  // reported the first time
  if (!state.stop) {
    state.closed.store(true, std::memory_order_relaxed);
    state.stop_deadline = Clock::now() + state.settings.export_timeout;
    state.stop = true;
    state.wake.notify_one();
  }
  bool finished = state.done.wait_until(lock, state.stop_deadline, [&] { return state.finished; });
  lock.unlock();
  if (worker_.joinable()) {
    if (finished)
      worker_.join();
    else
      worker_.detach();
  }
  if (!finished)
    micro::log::warn("trace", "exporter did not finish within export_timeout (" +
                                  std::to_string(state.settings.export_timeout.count()) +
                                  " ms); leaving it to finish in the background");
  return finished;
}

}  // namespace micro::trace::sdk
