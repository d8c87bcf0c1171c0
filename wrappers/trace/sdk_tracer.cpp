// wrappers/trace — the recording tracer and its spans, span limits, redaction, id
// generation and the statistics snapshot.
//
// Cost notes: span objects come from a per-thread free list (allocate_shared with a pooling
// allocator), so an unsampled span allocates nothing once the pool is warm; a recording
// span guards its fields with a one-byte spinlock, since it is nearly always touched by one
// thread at a time, and writes into span data lent by the processor (pooled, handed back
// by pointer at end).
#include "sdk_tracer.hpp"

#include <pthread.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <random>
#include <thread>
#include <tuple>
#include <utility>

#include <micro/admin.hpp>
#include <micro/error.hpp>
#include <micro/random.hpp>

namespace micro::trace::sdk {

namespace {

// A finished span as the admin endpoint's /traces page shows it.
micro::admin::SpanRecord admin_record(const SpanData& span) {
  static constexpr const char* kinds[] = {"unspecified", "internal", "server",
                                          "client",      "producer", "consumer"};
  static constexpr const char* statuses[] = {"unset", "ok", "error"};
  auto seconds = [](std::chrono::system_clock::duration d) {
    return std::chrono::duration<double>(d).count();
  };
  micro::admin::SpanRecord record;
  record.trace_id = span.context.trace_id.to_hex();
  record.span_id = span.context.span_id.to_hex();
  if (span.parent_span_id.valid()) record.parent_span_id = span.parent_span_id.to_hex();
  record.name = span.name;
  auto kind = static_cast<std::size_t>(span.kind);
  record.kind = kind < std::size(kinds) ? kinds[kind] : "internal";
  auto status = static_cast<std::size_t>(span.status);
  record.status = status < std::size(statuses) ? statuses[status] : "unset";
  record.start = seconds(span.start_time.time_since_epoch());
  record.duration = seconds(span.end_time - span.start_time);
  return record;
}

// ---- ids: micro::Wyrand per thread (inlined here: three draws per span), reseeded after fork ----

thread_local micro::Wyrand id_generator;  // trivially constructible: no TLS guard

// One 8-byte store: writing byte by byte and then reading the id back as a word (as the
// callers' return does) stalls on store-to-load forwarding, which cost more than the
// generator itself.
void store_big_endian(std::uint8_t* out, std::uint64_t value) noexcept {
  if constexpr (std::endian::native == std::endian::little) value = __builtin_bswap64(value);
  std::memcpy(out, &value, sizeof value);
}

// A new span's ids as 64-bit words in memory order, kept in registers until they are
// written, 8 bytes at a time, into the span object itself. Copying a freshly built
// SpanContext instead reads its 16-byte trace id right after it was written as two 8-byte
// halves, which defeats store-to-load forwarding (a stall of ~15 cycles per copy).
struct IdWords {
  std::uint64_t trace_high = 0, trace_low = 0, span = 0;
};

std::uint64_t load_word(const std::uint8_t* bytes) noexcept {
  std::uint64_t word;
  std::memcpy(&word, bytes, sizeof word);
  return word;
}

void store_word(std::uint8_t* bytes, std::uint64_t word) noexcept {
  std::memcpy(bytes, &word, sizeof word);
}

// The span's context, written in place.
void fill_context(SpanContext& context, const IdWords& ids, std::uint8_t flags,
                  const std::string* trace_state) {
  store_word(context.trace_id.bytes.data(), ids.trace_high);
  store_word(context.trace_id.bytes.data() + 8, ids.trace_low);
  store_word(context.span_id.bytes.data(), ids.span);
  context.flags = flags;
  if (trace_state != nullptr) context.trace_state = *trace_state;
}

// ---- the span clock: wall time from the CPU's time-stamp counter ----
//
// clock_gettime through the vDSO costs ~20 ns here, a sampled span reads the clock twice,
// and rdtsc costs a few. Each thread keeps an anchor (a TSC reading and the wall time
// taken with it) and extrapolates from it at a process-wide rate, re-anchoring every
// ~50 ms so clock steps and drift show up within that. The rate is measured between the
// process's first reading and each later anchor, so it only gets more exact with time.
// Used only where the kernel itself trusts the TSC (it is the current clocksource);
// elsewhere, and until the rate is known (the first 20 ms), system_clock::now().

#if defined(__x86_64__)
static_assert(std::is_same_v<std::chrono::system_clock::duration, std::chrono::nanoseconds>);

struct ClockAnchor {
  std::uint64_t ticks = 0;
  std::int64_t nanoseconds = 0;
};

struct ClockCalibration {
  bool usable = false;
  ClockAnchor origin;
  std::atomic<double> nanoseconds_per_tick{0};
  std::atomic<std::uint64_t> reanchor_ticks{0};  // ~50 ms worth
};

ClockCalibration& clock_calibration() {
  static ClockCalibration calibration;
  static std::once_flag once;
  std::call_once(once, [] {
    std::FILE* file =
        std::fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
    if (file != nullptr) {
      char name[32] = {};
      calibration.usable = std::fgets(name, sizeof name, file) != nullptr &&
                           std::string_view(name).starts_with("tsc");
      std::fclose(file);
    }
    calibration.origin.ticks = __rdtsc();
    calibration.origin.nanoseconds = std::chrono::system_clock::now().time_since_epoch().count();
  });
  return calibration;
}

std::chrono::system_clock::time_point span_clock_now() noexcept {
  thread_local ClockAnchor anchor;  // trivially destructible: no TLS guard
  std::uint64_t ticks = __rdtsc();
  auto& calibration = clock_calibration();
  double rate = calibration.nanoseconds_per_tick.load(std::memory_order_relaxed);
  if (rate > 0 && ticks - anchor.ticks < calibration.reanchor_ticks.load(std::memory_order_relaxed))
      [[likely]] {
    auto offset = static_cast<std::int64_t>(static_cast<double>(ticks - anchor.ticks) * rate);
    return std::chrono::system_clock::time_point(
        std::chrono::system_clock::duration(anchor.nanoseconds + offset));
  }
  auto now = std::chrono::system_clock::now();
  if (!calibration.usable) return now;
  ticks = __rdtsc();
  anchor.ticks = ticks;
  anchor.nanoseconds = now.time_since_epoch().count();
  auto elapsed = anchor.nanoseconds - calibration.origin.nanoseconds;
  if (elapsed >= 20'000'000 && ticks > calibration.origin.ticks) {
    double measured =
        static_cast<double>(elapsed) / static_cast<double>(ticks - calibration.origin.ticks);
    calibration.nanoseconds_per_tick.store(measured, std::memory_order_relaxed);
    calibration.reanchor_ticks.store(static_cast<std::uint64_t>(50'000'000 / measured),
                                     std::memory_order_relaxed);
  }
  return now;
}
#else
std::chrono::system_clock::time_point span_clock_now() noexcept {
  return std::chrono::system_clock::now();
}
#endif

// ---- a per-thread pool of fixed-size blocks for span objects ----

template <std::size_t Size>
struct BlockPool {
  struct Node {
    Node* next;
  };
  static constexpr std::size_t capacity = 1024;
  Node* head = nullptr;
  std::size_t count = 0;
  bool registered = false;  // the cleaner below is armed
  bool dead = false;        // the thread is exiting: free directly

  static BlockPool& local() noexcept {
    thread_local BlockPool pool;  // trivially destructible: no TLS guard on access
    return pool;
  }

  // Frees the blocks when the thread exits.
  struct Cleaner {
    ~Cleaner() {
      auto& pool = local();
      while (pool.head != nullptr) {
        Node* node = pool.head;
        pool.head = node->next;
        ::operator delete(node);
      }
      pool.count = 0;
      pool.dead = true;
    }
  };
};

template <class T>
struct PoolAllocator {
  using value_type = T;
  PoolAllocator() = default;
  template <class U>
  PoolAllocator(const PoolAllocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__);
    if (n == 1) {
      auto& pool = BlockPool<sizeof(T)>::local();
      if (pool.head != nullptr) {
        auto* node = pool.head;
        pool.head = node->next;
        --pool.count;
        return reinterpret_cast<T*>(node);
      }
    }
    return static_cast<T*>(::operator new(n * sizeof(T)));
  }

  void deallocate(T* pointer, std::size_t n) noexcept {
    using Pool = BlockPool<sizeof(T)>;
    if (n == 1) {
      auto& pool = Pool::local();
      if (!pool.dead && pool.count < Pool::capacity) {
        if (!pool.registered) {
          pool.registered = true;
          thread_local typename Pool::Cleaner cleaner;
          (void)cleaner;
        }
        auto* node = reinterpret_cast<typename Pool::Node*>(pointer);
        node->next = pool.head;
        pool.head = node;
        ++pool.count;
        return;
      }
    }
    ::operator delete(pointer);
  }

  friend bool operator==(const PoolAllocator&, const PoolAllocator&) noexcept { return true; }
};

// ---- spans ----

class SpinLock {
 public:
  void lock() noexcept {
    while (locked_.exchange(true, std::memory_order_acquire))
      while (locked_.load(std::memory_order_relaxed)) std::this_thread::yield();
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

// An unsampled span: a fresh context (it still propagates), nothing recorded.
class UnsampledSpan final : public NonRecordingSpan {
 public:
  UnsampledSpan(const IdWords& ids, std::uint8_t flags, const std::string* trace_state) {
    fill_context(context_, ids, flags, trace_state);
  }
};

// Adds or replaces an attribute within limits; returns false when dropped.
bool put_attribute(std::vector<Attribute>& attributes, std::string_view key, AttributeValue&& value,
                   const SdkCore& core) {
  if (core.redactor.sensitive(key)) {
    value = std::string(Redactor::redacted);
  } else if (core.limits.attribute_value_length != SpanLimits::unlimited) {
    truncate_value(value, core.limits.attribute_value_length);
  }
  for (auto& [name, existing] : attributes)
    if (name == key) {
      existing = std::move(value);
      return true;
    }
  if (attributes.size() >= core.limits.attribute_count) return false;
  // Built in place: no temporary key string to move.
  attributes.emplace_back(std::piecewise_construct, std::forward_as_tuple(key),
                          std::forward_as_tuple(std::move(value)));
  return true;
}

// Copies a list of attributes through the limits; returns how many were dropped.
std::uint32_t limited_attributes(std::vector<Attribute>& out, std::vector<Attribute> in,
                                 const SdkCore& core) {
  std::uint32_t dropped = 0;
  out.reserve(std::min(in.size(), core.limits.attribute_count));
  for (auto& [key, value] : in)
    if (!put_attribute(out, key, std::move(value), core)) ++dropped;
  return dropped;
}

class RecordingSpan final : public Span {
 public:
  // `local_root` (sampler=deferred): the local root's id, or null when this span is one.
  RecordingSpan(std::shared_ptr<const SdkCore> core, const IdWords& ids, std::uint8_t flags,
                const SpanContext* parent, std::string_view name, const StartOptions& options,
                const SpanId* local_root = nullptr, bool deferred = false)
      : core_(std::move(core)), data_(core_->processor->acquire_span_data()) {
    try {
      start(ids, flags, parent, name, options);
      if (deferred) {
        local_root_ = local_root != nullptr ? *local_root : context_.span_id;
        data_->local_root = local_root_;
      }
    } catch (...) {
      core_->processor->release_span_data(data_);  // no destructor runs for a failed constructor
      throw;
    }
  }

  ~RecordingSpan() override {
    // Never ended: the data goes back unexported.
    if (!ended_.load(std::memory_order_relaxed)) core_->processor->release_span_data(data_);
  }
  RecordingSpan(const RecordingSpan&) = delete;
  RecordingSpan& operator=(const RecordingSpan&) = delete;

  const SpanContext& context() const noexcept override { return context_; }
  bool recording() const noexcept override { return !ended_.load(std::memory_order_relaxed); }
  // sampler=deferred: the local root of this span's local trace (kept past end(), for
  // children started later).
  const SpanId& local_root() const noexcept { return local_root_; }

  void set_attribute(std::string_view key, AttributeValue value) override {
    std::lock_guard lock(lock_);
    if (ended_.load(std::memory_order_relaxed)) return;
    if (!put_attribute(data_->attributes, key, std::move(value), *core_))
      ++data_->dropped_attributes;
  }

  void add_event(std::string_view name, std::vector<Attribute> attributes) override {
    auto now = span_clock_now();
    std::lock_guard lock(lock_);
    if (ended_.load(std::memory_order_relaxed)) return;
    if (data_->events.size() >= core_->limits.event_count) {
      ++data_->dropped_events;
      return;
    }
    Event event;
    event.name.assign(name);
    event.time = now;
    event.dropped_attributes = limited_attributes(event.attributes, std::move(attributes), *core_);
    data_->events.push_back(std::move(event));
  }

  void add_link(const SpanContext& context, std::vector<Attribute> attributes) override {
    std::lock_guard lock(lock_);
    if (ended_.load(std::memory_order_relaxed)) return;
    add_link_locked(context, std::move(attributes));
  }

  void set_status(StatusCode code, std::string_view description) override {
    std::lock_guard lock(lock_);
    if (ended_.load(std::memory_order_relaxed)) return;
    // Per spec: UNSET is ignored, OK is final, a description goes only with ERROR.
    if (code == StatusCode::unset || data_->status == StatusCode::ok) return;
    data_->status = code;
    if (code == StatusCode::error)
      data_->status_message.assign(description);
    else
      data_->status_message.clear();
  }

  void update_name(std::string_view name) override {
    std::lock_guard lock(lock_);
    if (ended_.load(std::memory_order_relaxed)) return;
    data_->name.assign(name);
  }

  void end(std::chrono::system_clock::time_point end_time) override {
    auto now = end_time == std::chrono::system_clock::time_point{} ? span_clock_now() : end_time;
    {
      std::lock_guard lock(lock_);
      // Under the lock a load and a store suffice (no second locked instruction).
      if (ended_.load(std::memory_order_relaxed)) return;
      ended_.store(true, std::memory_order_relaxed);
      data_->end_time = now;
      data_->context = context_;
    }
    // Every mutator checks ended_ under the lock, so data_ is this thread's alone now;
    // the processor takes it by pointer.
    count_span_ended();
    // The admin endpoint's /traces page shows the last spans ended here (a relaxed load per
    // span when no admin server runs).
    if (auto& ring = micro::admin::recent_spans(); ring.enabled())
      ring.record(admin_record(*data_));
    core_->processor->end_span(data_);
  }

 private:
  void start(const IdWords& ids, std::uint8_t flags, const SpanContext* parent,
             std::string_view name, const StartOptions& options) {
    fill_context(context_, ids, flags, parent != nullptr ? &parent->trace_state : nullptr);
    data_->name.assign(name);
    data_->kind = options.kind;
    if (parent != nullptr) {
      data_->parent_span_id = parent->span_id;
      data_->parent_remote = parent->remote;
    }
    data_->start_time = options.start_time == std::chrono::system_clock::time_point{}
                            ? span_clock_now()
                            : options.start_time;
    // Room for the start attributes plus the handful instrumentation adds later (pooled
    // span data usually has it already).
    data_->attributes.reserve(
        std::min(options.attributes.size() + 8, core_->limits.attribute_count));
    for (const auto& [key, value] : options.attributes)
      if (!put_attribute(data_->attributes, key, AttributeValue(value), *core_))
        ++data_->dropped_attributes;
    for (const auto& link : options.links) add_link_locked(link.context, link.attributes);
  }

  void add_link_locked(const SpanContext& context, std::vector<Attribute> attributes) {
    if (data_->links.size() >= core_->limits.link_count) {
      ++data_->dropped_links;
      return;
    }
    LinkData link;
    link.context = context;
    link.dropped_attributes = limited_attributes(link.attributes, std::move(attributes), *core_);
    data_->links.push_back(std::move(link));
  }

  std::shared_ptr<const SdkCore> core_;
  SpanContext context_;  // outlives end(): children and propagation still read it
  SpanId local_root_;
  SpinLock lock_;
  std::atomic<bool> ended_{false};
  SpanData* data_;  // lent by the processor; given back by end() or the destructor
};

char ascii_lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
}

std::size_t environment_limit(const char* name, std::size_t fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  char* end = nullptr;
  errno = 0;
  long long number = std::strtoll(value, &end, 10);
  if (errno != 0 || *end != '\0' || end == value || number < 0)
    throw Exception(bad_request(
        "micro.wrapper.trace",
        std::string("trace: ") + name + ": \"" + value + "\" is not a non-negative integer"));
  return static_cast<std::size_t>(number);
}

}  // namespace

// ---- limits, redaction, truncation ----

namespace {

std::atomic<std::uint64_t> next_redactor_identity{1};

// One thread's recently seen keys and their verdicts, direct-mapped by the key's address.
// An entry is trusted only when redactor, length and bytes all match, so a reused buffer
// holding another key just misses.
struct RedactionCache {
  struct Entry {
    std::uint64_t redactor = 0;  // identity; 0: empty
    const char* address = nullptr;
    std::uint32_t size = 0;
    bool sensitive = false;
    char bytes[43];
  };
  static_assert(sizeof(Entry) == 64);
  static constexpr std::size_t entries = 64;
  Entry table[entries];
};

thread_local RedactionCache redaction_cache;  // trivially constructible and destructible

}  // namespace

SpanLimits SpanLimits::from_environment() {
  SpanLimits limits;
  limits.attribute_count = environment_limit("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", 128);
  limits.attribute_value_length =
      environment_limit("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", SpanLimits::unlimited);
  limits.event_count = environment_limit("OTEL_SPAN_EVENT_COUNT_LIMIT", 128);
  limits.link_count = environment_limit("OTEL_SPAN_LINK_COUNT_LIMIT", 128);
  return limits;
}

const std::vector<std::string>& Redactor::default_patterns() {
  static const std::vector<std::string> patterns{
      "password",      "passwd",     "secret",      "token",       "api_key", "apikey",
      "authorization", "auth_token", "credit_card", "card_number", "cookie",  "session"};
  return patterns;
}

std::vector<std::string> Redactor::parse(std::string_view comma_list) {
  std::vector<std::string> patterns;
  while (!comma_list.empty()) {
    auto end = comma_list.find(',');
    std::string_view item = comma_list.substr(0, end);
    comma_list = end == std::string_view::npos ? std::string_view{} : comma_list.substr(end + 1);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (!item.empty()) patterns.emplace_back(item);
  }
  if (patterns.size() == 1 && patterns.front() == "none") patterns.clear();
  return patterns;
}

Redactor::Redactor(const std::vector<std::string>& patterns)
    : identity_(next_redactor_identity.fetch_add(1, std::memory_order_relaxed)) {
  for (const auto& pattern : patterns) {
    if (pattern.empty()) continue;
    std::string lower;
    for (char c : pattern) lower += ascii_lower(c);
    patterns_.push_back(std::move(lower));
  }
  std::sort(patterns_.begin(), patterns_.end());
  patterns_.erase(std::unique(patterns_.begin(), patterns_.end()), patterns_.end());
  if (patterns_.size() > 255) patterns_.resize(255);  // the ranges are bytes
  shortest_ = patterns_.empty() ? 0 : patterns_.front().size();
  for (std::size_t index = 0; index < patterns_.size(); ++index) {
    unsigned char first = static_cast<unsigned char>(patterns_[index].front());
    auto& range = by_first_character_[first];
    if (range.first == range.second) range.first = static_cast<std::uint8_t>(index);
    range.second = static_cast<std::uint8_t>(index + 1);
    shortest_ = std::min(shortest_, patterns_[index].size());
  }
  // The table is indexed by the key's raw byte, so the scan needs no case folding: an
  // upper-case letter shares its lower-case twin's range.
  for (unsigned character = 'A'; character <= 'Z'; ++character)
    by_first_character_[character] = by_first_character_[character + 32];
  auto set_bigram = [this](unsigned first, unsigned second) {
    unsigned index = (first << 8) | second;
    bigrams_[index >> 6] |= std::uint64_t{1} << (index & 63);
  };
  auto both_cases = [](unsigned character) {
    return std::array<unsigned, 2>{
        character, character >= 'a' && character <= 'z' ? character - 32 : character};
  };
  for (const auto& pattern : patterns_) {
    for (unsigned first : both_cases(static_cast<unsigned char>(pattern[0]))) {
      if (pattern.size() == 1) {
        for (unsigned second = 0; second < 256; ++second) set_bigram(first, second);
        continue;
      }
      for (unsigned second : both_cases(static_cast<unsigned char>(pattern[1])))
        set_bigram(first, second);
    }
  }
}

bool Redactor::sensitive(std::string_view key) const noexcept {
  if (patterns_.empty() || key.size() < shortest_) return false;
  using Entry = RedactionCache::Entry;
  if (key.size() > sizeof(Entry::bytes)) return scan(key);
  auto address = reinterpret_cast<std::uintptr_t>(key.data());
  auto& entry =
      redaction_cache
          .table[((address >> 3) ^ (address >> 9) ^ key.size()) % RedactionCache::entries];
  if (entry.redactor == identity_ && entry.address == key.data() && entry.size == key.size() &&
      std::memcmp(entry.bytes, key.data(), key.size()) == 0) [[likely]]
    return entry.sensitive;
  bool verdict = scan(key);
  entry.redactor = identity_;
  entry.address = key.data();
  entry.size = static_cast<std::uint32_t>(key.size());
  entry.sensitive = verdict;
  std::memcpy(entry.bytes, key.data(), key.size());
  return verdict;
}

bool Redactor::scan(std::string_view key) const noexcept {
  if (patterns_.empty() || key.size() < shortest_) return false;
  std::size_t last = key.size() - shortest_;
  for (std::size_t position = 0; position <= last; ++position) {
    unsigned char first = static_cast<unsigned char>(key[position]);
    unsigned char second =
        position + 1 < key.size() ? static_cast<unsigned char>(key[position + 1]) : 0;
    if (!may_start_at(first, second)) [[likely]]
      continue;
    auto range = by_first_character_[first];
    for (std::size_t candidate = range.first; candidate < range.second; ++candidate) {
      const std::string& pattern = patterns_[candidate];
      if (key.size() - position < pattern.size()) continue;
      std::size_t index = 1;
      while (index < pattern.size() && ascii_lower(key[position + index]) == pattern[index])
        ++index;
      if (index == pattern.size()) return true;
    }
  }
  return false;
}

namespace {
void truncate_string(std::string& text, std::size_t limit) noexcept {
  if (text.size() <= limit) return;
  std::size_t cut = limit;
  // Back off so a multi-byte UTF-8 sequence is not split (continuation bytes are 10xxxxxx).
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  text.resize(cut);
}
}  // namespace

void truncate_value(AttributeValue& value, std::size_t limit) noexcept {
  if (auto* text = std::get_if<std::string>(&value)) {
    truncate_string(*text, limit);
  } else if (auto* texts = std::get_if<std::vector<std::string>>(&value)) {
    for (auto& item : *texts) truncate_string(item, limit);
  }
}

// ---- ids ----

TraceId random_trace_id() noexcept {
  id_generator.check_seed();
  TraceId id;
  std::uint64_t high = 0, low = 0;
  while ((high | low) == 0) {
    high = id_generator.next();
    low = id_generator.next();
  }
  store_big_endian(id.bytes.data(), high);
  store_big_endian(id.bytes.data() + 8, low);
  return id;
}

SpanId random_span_id() noexcept {
  id_generator.check_seed();
  SpanId id;
  std::uint64_t value = 0;
  while (value == 0) value = id_generator.next();
  store_big_endian(id.bytes.data(), value);
  return id;
}

// ---- statistics ----

Statistics statistics() noexcept {
  auto& counters = sdk_counters();
  auto counts = span_counts();
  Statistics result;
  result.spans_started = counts.started;
  result.spans_ended = counts.ended;
  result.spans_exported = counters.spans_exported.load(std::memory_order_relaxed);
  result.spans_dropped = counts.dropped;
  result.spans_export_failed = counters.spans_export_failed.load(std::memory_order_relaxed);
  result.export_failures = counters.export_failures.load(std::memory_order_relaxed);
  return result;
}

std::string format_statistics(const Statistics& statistics) {
  return "spans started=" + std::to_string(statistics.spans_started) +
         " ended=" + std::to_string(statistics.spans_ended) +
         " exported=" + std::to_string(statistics.spans_exported) +
         " dropped=" + std::to_string(statistics.spans_dropped) +
         " export_failed=" + std::to_string(statistics.spans_export_failed) +
         " export_failures=" + std::to_string(statistics.export_failures);
}

// ---- the tracer ----

SdkTracer::SdkTracer(std::shared_ptr<Sampler> sampler, std::shared_ptr<SpanProcessor> processor,
                     SpanLimits limits, Redactor redactor)
    : sampler_(std::move(sampler)),
      shortcut_(sampler_->shortcut()),
      core_(std::make_shared<const SdkCore>(
          SdkCore{std::move(processor), limits, std::move(redactor)})) {}

std::shared_ptr<Span> SdkTracer::start_span(std::string_view name, const Context& context,
                                            const StartOptions& options) {
  const SpanContext* parent = nullptr;
  if (!options.root) {
    if (options.parent != nullptr && options.parent->valid()) {
      parent = options.parent;
    } else if (const auto& active = context.span()) {
      const SpanContext& active_context = active->context();
      if (active_context.valid()) parent = &active_context;
    }
  }

  IdWords ids;
  std::uint8_t flags;
  id_generator.check_seed();
  if (parent != nullptr) {
    ids.trace_high = load_word(parent->trace_id.bytes.data());
    ids.trace_low = load_word(parent->trace_id.bytes.data() + 8);
    flags = parent->flags & flag_random;  // the trace id's randomness carries on
  } else {
    while ((ids.trace_high | ids.trace_low) == 0) {
      ids.trace_high = id_generator.next();
      ids.trace_low = id_generator.next();
    }
    flags = flag_random;
  }
  while (ids.span == 0) ids.span = id_generator.next();

  // Deferred: every span records; the flag sent on is the parent's, or for a new trace the
  // ratio decision, and the DeferredProcessor keeps or drops the local trace at its root's end.
  if (shortcut_.deferred) {
    bool flagged;
    if (parent != nullptr) {
      flagged = parent->sampled();
    } else {
      TraceId trace_id;
      store_word(trace_id.bytes.data(), ids.trace_high);
      store_word(trace_id.bytes.data() + 8, ids.trace_low);
      flagged = trace_id_ratio_decision(trace_id, shortcut_.deferred_ratio);
    }
    // The local root: this span when it has no parent or a remote one; else its parent's
    // local root when the parent is the context's span from this tracer; else (a local parent
    // given by hand) the parent itself.
    const SpanId* local_root = nullptr;
    if (parent != nullptr && !parent->remote) {
      local_root = &parent->span_id;
      if (const auto& active = context.span(); active && parent == &active->context())
        if (auto* recording = dynamic_cast<const RecordingSpan*>(active.get()))
          local_root = &recording->local_root();
    }
    count_span_started();
    return std::allocate_shared<RecordingSpan>(
        PoolAllocator<RecordingSpan>{}, core_, ids,
        static_cast<std::uint8_t>(flags | (flagged ? flag_sampled : 0)), parent, name, options,
        local_root, /*deferred=*/true);
  }

  // The built-in samplers decide here, without a virtual call or building parameters.
  bool sampled;
  if (parent != nullptr && shortcut_.follows_parent) {
    sampled = parent->sampled();
  } else if (shortcut_.root == Sampler::Shortcut::Root::always_on) {
    sampled = true;
  } else if (shortcut_.root == Sampler::Shortcut::Root::always_off) {
    sampled = false;
  } else {
    TraceId trace_id;  // what the sampler sees
    store_word(trace_id.bytes.data(), ids.trace_high);
    store_word(trace_id.bytes.data() + 8, ids.trace_low);
    SamplingParameters parameters{parent, trace_id, name, options.kind,
                                  std::span<const Attribute>(options.attributes)};
    sampled = sampler_->should_sample(parameters);
  }
  if (!sampled)
    return std::allocate_shared<UnsampledSpan>(PoolAllocator<UnsampledSpan>{}, ids, flags,
                                               parent != nullptr ? &parent->trace_state : nullptr);

  count_span_started();
  return std::allocate_shared<RecordingSpan>(PoolAllocator<RecordingSpan>{}, core_, ids,
                                             static_cast<std::uint8_t>(flags | flag_sampled),
                                             parent, name, options);
}

bool SdkTracer::may_record(const SpanContext* parent) const noexcept {
  // The same order start_span decides in; samplers that must see the span (ratio, rules)
  // are "unsure".
  if (shortcut_.deferred) return true;
  if (parent != nullptr && parent->valid() && shortcut_.follows_parent) return parent->sampled();
  return shortcut_.root != Sampler::Shortcut::Root::always_off;
}

}  // namespace micro::trace::sdk
