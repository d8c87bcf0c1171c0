// micro/metrics.hpp — counters, gauges and histograms with labels, and their exposition in the
// Prometheus text format (0.0.4) and OpenMetrics 1.0 (with exemplars).
//
//   auto& requests = micro::metrics::default_registry().counter(
//       "micro_requests_total", "requests handled", {"service", "endpoint", "status"});
//   requests.with({"greeter", "Greeter.Hello", "success"}).add();
//
// Recording is lock-free: a cell (one label set) is found through a per-thread cache (no lock
// once a thread has seen it) and its numbers are atomics sharded by thread, so threads counting
// the same cell do not fight over one cache line. Only the first use of a label set on a thread
// takes the family's lock. Cells live as long as their family; families as long as their
// registry (the default registry lives as long as the process).
//
// Plugins that have numbers of their own (open connections, cache hits, spans exported) add a
// collector: a function called at scrape time, on the scraping thread, that reports current
// values. The registration removes it when destroyed, so a plugin unloads cleanly.
//
// Threading contract: every member may be called from any thread; collectors are called with no
// registry lock held and must not add or remove collectors from inside.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace micro::metrics {

// [a-zA-Z_:][a-zA-Z0-9_:]* — the Prometheus metric name grammar.
bool valid_metric_name(std::string_view name) noexcept;
// [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" (reserved for Prometheus itself).
bool valid_label_name(std::string_view name) noexcept;
// A label value as it goes between the quotes: backslash, double quote and line feed escaped.
std::string escape_label_value(std::string_view value);
// A sample value: shortest round-trip decimal, "+Inf", "-Inf", "NaN".
std::string format_value(double value);

// The buckets Prometheus' client libraries use by default, in seconds.
std::vector<double> default_buckets();

inline constexpr std::size_t shard_count = 8;

namespace detail {
std::size_t this_thread_shard() noexcept;
struct alignas(64) PaddedCount {
  std::atomic<std::uint64_t> value{0};
};
}  // namespace detail

class CounterCell {
 public:
  void add(std::uint64_t amount = 1) noexcept {
    shards_[detail::this_thread_shard()].value.fetch_add(amount, std::memory_order_relaxed);
  }
  std::uint64_t value() const noexcept;

 private:
  std::array<detail::PaddedCount, shard_count> shards_;
};

class GaugeCell {
 public:
  void set(double value) noexcept { value_.store(value, std::memory_order_relaxed); }
  void add(double amount) noexcept { value_.fetch_add(amount, std::memory_order_relaxed); }
  double value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// One observation kept beside a bucket, linking it to a trace.
struct Exemplar {
  std::string trace_id;  // 32 hex digits
  std::string span_id;   // 16 hex digits
  double value = 0;
  double timestamp = 0;  // seconds since the epoch
};

// The numbers of one histogram cell, read at once (counts are per bucket, not cumulative; the
// last one is +Inf's).
struct HistogramSnapshot {
  std::vector<std::uint64_t> counts;
  double sum = 0;
  std::uint64_t count = 0;
};

class HistogramCell {
 public:
  explicit HistogramCell(std::shared_ptr<const std::vector<double>> bounds);
  void observe(double value) noexcept;
  // Observes and, when trace_id is a valid trace, keeps it as the bucket's exemplar (the latest
  // wins; skipped rather than waited for if another thread is writing that bucket's exemplar).
  void observe(double value, std::string_view trace_id, std::string_view span_id);
  HistogramSnapshot snapshot() const;
  std::vector<Exemplar> exemplars() const;  // one per bucket, trace_id "" where none
  const std::vector<double>& bounds() const noexcept { return *bounds_; }

 private:
  std::size_t bucket_of(double value) const noexcept;
  struct alignas(64) Shard {
    std::unique_ptr<std::atomic<std::uint64_t>[]> counts;
    std::atomic<double> sum{0};
  };
  struct ExemplarSlot {
    mutable std::atomic_flag busy;
    Exemplar exemplar;
  };
  std::shared_ptr<const std::vector<double>> bounds_;
  std::array<Shard, shard_count> shards_;
  std::unique_ptr<ExemplarSlot[]> exemplars_;
};

enum class Type { counter, gauge, histogram };

// Cells of one metric, one per label set. `with` takes the label values in the order of the
// family's label names and throws std::invalid_argument when their number differs.
class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, Type type, std::vector<std::string> labels);
  virtual ~FamilyBase() = default;
  const std::string& name() const noexcept { return name_; }
  const std::string& help() const noexcept { return help_; }
  Type type() const noexcept { return type_; }
  const std::vector<std::string>& label_names() const noexcept { return labels_; }

 protected:
  void* find_or_make(const std::string_view* values, std::size_t count);
  virtual std::shared_ptr<void> make_cell() const = 0;
  // Every cell with its label values, sorted by them.
  std::vector<std::pair<std::vector<std::string>, const void*>> cells() const;
  friend class Registry;

 private:
  std::string name_, help_;
  Type type_;
  std::vector<std::string> labels_;
  std::uint64_t serial_;  // never reused: a per-thread cache entry of a gone family never matches
  mutable std::mutex mutex_;
  std::map<std::vector<std::string>, std::shared_ptr<void>, std::less<>> cells_;
};

template <class Cell>
class Family : public FamilyBase {
 public:
  using FamilyBase::FamilyBase;
  Cell& with(std::initializer_list<std::string_view> values) {
    return *static_cast<Cell*>(find_or_make(values.begin(), values.size()));
  }
  Cell& with(const std::vector<std::string_view>& values) {
    return *static_cast<Cell*>(find_or_make(values.data(), values.size()));
  }
};

using Counter = Family<CounterCell>;
using Gauge = Family<GaugeCell>;

class Histogram : public Family<HistogramCell> {
 public:
  Histogram(std::string name, std::string help, std::vector<std::string> labels,
            std::vector<double> bounds);
  const std::vector<double>& bounds() const noexcept { return *bounds_; }
  // Every cell's label values and numbers (for windows over time, like the admin page's).
  std::vector<std::pair<std::vector<std::string>, HistogramSnapshot>> snapshots() const;

 private:
  std::shared_ptr<void> make_cell() const override;
  std::shared_ptr<const std::vector<double>> bounds_;
};

using Labels = std::vector<std::pair<std::string, std::string>>;

// What a collector reports at scrape time.
class Collector {
 public:
  virtual ~Collector() = default;
  virtual void gauge(std::string_view name, std::string_view help, const Labels& labels,
                     double value) = 0;
  // A counter's name ends in "_total".
  virtual void counter(std::string_view name, std::string_view help, const Labels& labels,
                       double value) = 0;
};

using CollectFunction = std::function<void(Collector& collector)>;

// Removes its collector when destroyed (or reset).
class Registration {
 public:
  Registration() = default;
  explicit Registration(std::function<void()> remove) : remove_(std::move(remove)) {}
  Registration(Registration&& other) noexcept : remove_(std::move(other.remove_)) {
    other.remove_ = nullptr;
  }
  Registration& operator=(Registration&& other) noexcept;
  ~Registration() { reset(); }
  void reset();

 private:
  std::function<void()> remove_;
};

enum class Format { prometheus_text, openmetrics };

// The Content-Type header of a format.
std::string_view content_type(Format format) noexcept;
// The format an Accept header asks for: OpenMetrics when it names application/openmetrics-text
// (with a q above 0), else the Prometheus text format.
Format negotiate(std::string_view accept);

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Adds a family, or returns the one of that name when type, label names (and buckets) match;
  // throws std::invalid_argument naming what is wrong otherwise (a bad name, a clash). A
  // counter's name must end in "_total". Bucket bounds must be finite and strictly increasing;
  // +Inf is implied.
  Counter& counter(std::string name, std::string help, std::vector<std::string> labels = {});
  Gauge& gauge(std::string name, std::string help, std::vector<std::string> labels = {});
  Histogram& histogram(std::string name, std::string help, std::vector<std::string> labels,
                       std::vector<double> bounds = default_buckets());
  // The family of that name, null when none.
  const FamilyBase* find(std::string_view name) const;

  [[nodiscard]] Registration add_collector(CollectFunction collect);

  // Every family and every collector's samples, sorted by name.
  std::string expose(Format format = Format::prometheus_text) const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

// The process's registry: what the admin endpoint's /metrics shows.
Registry& default_registry();

}  // namespace micro::metrics
