// Metrics: sharded atomic cells found through a per-thread cache, and the Prometheus text and
// OpenMetrics expositions (https://prometheus.io/docs/instrumenting/exposition_formats/,
// OpenMetrics 1.0).
#include <micro/metrics.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <functional>
#include <list>
#include <stdexcept>
#include <unordered_map>

namespace micro::metrics {

namespace {

bool name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool name_char(char c) {
  return name_start(c) || (c >= '0' && c <= '9');
}

// Appends `text` with invalid UTF-8 replaced by U+FFFD: one bad byte in a label value would
// otherwise make Prometheus reject the whole scrape.
void append_utf8(std::string& out, std::string_view text, bool label_value) {
  for (std::size_t i = 0; i < text.size();) {
    auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x80) {
      char c = text[i++];
      if (c == '\\')
        out += "\\\\";
      else if (c == '\n')
        out += "\\n";
      else if (c == '"' && label_value)
        out += "\\\"";
      else
        out += c;
      continue;
    }
    std::size_t length = byte >= 0xF0 && byte <= 0xF4 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC2 ? 2 : 0;
    if (byte > 0xF4) length = 0;
    bool ok = length > 0 && i + length <= text.size();
    for (std::size_t k = 1; ok && k < length; ++k)
      ok = (static_cast<unsigned char>(text[i + k]) & 0xC0) == 0x80;
    if (ok && length == 3) {  // no overlong forms, no surrogates
      auto second = static_cast<unsigned char>(text[i + 1]);
      ok = !(byte == 0xE0 && second < 0xA0) && !(byte == 0xED && second >= 0xA0);
    }
    if (ok && length == 4) {
      auto second = static_cast<unsigned char>(text[i + 1]);
      ok = !(byte == 0xF0 && second < 0x90) && !(byte == 0xF4 && second >= 0x90);
    }
    if (!ok) {
      out += "\xEF\xBF\xBD";
      ++i;
      continue;
    }
    out.append(text.substr(i, length));
    i += length;
  }
}

std::atomic<std::uint64_t> next_serial{1};

struct CacheEntry {
  std::uint64_t serial;
  std::vector<std::string> values;
  void* cell;
};
constexpr std::size_t cache_limit = 8192;

std::size_t hash_of(std::uint64_t serial, const std::string_view* values, std::size_t count) {
  std::size_t hash = std::hash<std::uint64_t>{}(serial);
  for (std::size_t i = 0; i < count; ++i)
    hash ^= std::hash<std::string_view>{}(values[i]) + 0x9e3779b97f4a7c15ULL + (hash << 6) +
            (hash >> 2);
  return hash;
}

std::string type_name(Type type) {
  switch (type) {
    case Type::counter:
      return "counter";
    case Type::gauge:
      return "gauge";
    case Type::histogram:
      return "histogram";
  }
  return "untyped";
}

// "1.0" rather than "1" for bucket bounds in OpenMetrics (its canonical form).
std::string format_bound(double bound, Format format) {
  std::string text = format_value(bound);
  if (format == Format::openmetrics && std::isfinite(bound) &&
      text.find_first_of(".eE") == std::string::npos)
    text += ".0";
  return text;
}

void append_labels(std::string& out, const std::vector<std::string>& names,
                   const std::vector<std::string>& values, std::string_view extra_name = {},
                   std::string_view extra_value = {}) {
  if (names.empty() && extra_name.empty()) return;
  out += '{';
  bool first = true;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (!first) out += ',';
    first = false;
    out += names[i];
    out += "=\"";
    append_utf8(out, values[i], true);
    out += '"';
  }
  if (!extra_name.empty()) {
    if (!first) out += ',';
    out += extra_name;
    out += "=\"";
    out += extra_value;
    out += '"';
  }
  out += '}';
}

void append_header(std::string& out, std::string_view name, std::string_view help, Type type,
                   Format format) {
  std::string family(name);
  // OpenMetrics names a counter family without its _total suffix.
  if (format == Format::openmetrics && type == Type::counter && family.ends_with("_total"))
    family.resize(family.size() - 6);
  out += "# HELP ";
  out += family;
  out += ' ';
  append_utf8(out, help, format == Format::openmetrics);
  out += "\n# TYPE ";
  out += family;
  out += ' ';
  out += type_name(type);
  out += '\n';
}

// One collected family: what collectors reported under one name.
struct Collected {
  std::string help;
  Type type = Type::gauge;
  std::vector<std::pair<Labels, double>> samples;
};

class GatheringCollector final : public Collector {
 public:
  std::map<std::string, Collected, std::less<>> families;

  void gauge(std::string_view name, std::string_view help, const Labels& labels,
             double value) override {
    add(name, help, Type::gauge, labels, value);
  }
  void counter(std::string_view name, std::string_view help, const Labels& labels,
               double value) override {
    if (!name.ends_with("_total")) return;
    add(name, help, Type::counter, labels, value);
  }

 private:
  void add(std::string_view name, std::string_view help, Type type, const Labels& labels,
           double value) {
    if (!valid_metric_name(name)) return;
    for (const auto& label : labels)
      if (!valid_label_name(label.first)) return;
    auto [entry, inserted] = families.try_emplace(std::string(name));
    if (inserted) {
      entry->second.help = std::string(help);
      entry->second.type = type;
    } else if (entry->second.type != type) {
      return;  // one name, one type: the first report decides
    }
    entry->second.samples.emplace_back(labels, value);
  }
};

}  // namespace

bool valid_metric_name(std::string_view name) noexcept {
  if (name.empty() || !(name_start(name[0]) || name[0] == ':')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return name_char(c) || c == ':'; });
}

bool valid_label_name(std::string_view name) noexcept {
  if (name.empty() || !name_start(name[0]) || name.starts_with("__")) return false;
  return std::all_of(name.begin(), name.end(), name_char);
}

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  append_utf8(out, value, true);
  return out;
}

std::string format_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[32];
  auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, result.ptr);
}

std::vector<double> default_buckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

namespace detail {
std::size_t this_thread_shard() noexcept {
  static std::atomic<std::size_t> next{0};
  thread_local std::size_t shard = next.fetch_add(1, std::memory_order_relaxed) % shard_count;
  return shard;
}
}  // namespace detail

std::uint64_t CounterCell::value() const noexcept {
  std::uint64_t total = 0;
  for (const auto& shard : shards_) total += shard.value.load(std::memory_order_relaxed);
  return total;
}

HistogramCell::HistogramCell(std::shared_ptr<const std::vector<double>> bounds)
    : bounds_(std::move(bounds)) {
  std::size_t buckets = bounds_->size() + 1;
  for (auto& shard : shards_) {
    shard.counts = std::make_unique<std::atomic<std::uint64_t>[]>(buckets);
    for (std::size_t i = 0; i < buckets; ++i) shard.counts[i].store(0);
  }
  exemplars_ = std::make_unique<ExemplarSlot[]>(buckets);
}

std::size_t HistogramCell::bucket_of(double value) const noexcept {
  // The first bound >= value: a bucket counts observations less than or equal to its bound.
  return static_cast<std::size_t>(std::lower_bound(bounds_->begin(), bounds_->end(), value) -
                                  bounds_->begin());
}

void HistogramCell::observe(double value) noexcept {
  if (std::isnan(value)) return;
  auto& shard = shards_[detail::this_thread_shard()];
  shard.counts[bucket_of(value)].fetch_add(1, std::memory_order_relaxed);
  shard.sum.fetch_add(value, std::memory_order_relaxed);
}

void HistogramCell::observe(double value, std::string_view trace_id, std::string_view span_id) {
  observe(value);
  if (std::isnan(value) || trace_id.size() != 32 || trace_id == "00000000000000000000000000000000")
    return;
  auto& slot = exemplars_[bucket_of(value)];
  if (slot.busy.test_and_set(std::memory_order_acquire)) return;
  slot.exemplar.trace_id.assign(trace_id);
  slot.exemplar.span_id.assign(span_id);
  slot.exemplar.value = value;
  slot.exemplar.timestamp =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  slot.busy.clear(std::memory_order_release);
}

HistogramSnapshot HistogramCell::snapshot() const {
  HistogramSnapshot snapshot;
  snapshot.counts.assign(bounds_->size() + 1, 0);
  for (const auto& shard : shards_) {
    for (std::size_t i = 0; i < snapshot.counts.size(); ++i)
      snapshot.counts[i] += shard.counts[i].load(std::memory_order_relaxed);
    snapshot.sum += shard.sum.load(std::memory_order_relaxed);
  }
  for (auto count : snapshot.counts) snapshot.count += count;
  return snapshot;
}

std::vector<Exemplar> HistogramCell::exemplars() const {
  std::vector<Exemplar> result(bounds_->size() + 1);
  for (std::size_t i = 0; i < result.size(); ++i) {
    auto& slot = exemplars_[i];
    while (slot.busy.test_and_set(std::memory_order_acquire)) {
    }
    result[i] = slot.exemplar;
    slot.busy.clear(std::memory_order_release);
  }
  return result;
}

FamilyBase::FamilyBase(std::string name, std::string help, Type type,
                       std::vector<std::string> labels)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      labels_(std::move(labels)),
      serial_(next_serial.fetch_add(1)) {}

void* FamilyBase::find_or_make(const std::string_view* values, std::size_t count) {
  if (count != labels_.size())
    throw std::invalid_argument("metric '" + name_ + "' has " + std::to_string(labels_.size()) +
                                " label(s), given " + std::to_string(count) + " value(s)");
  thread_local std::unordered_multimap<std::size_t, CacheEntry> cache;
  std::size_t hash = hash_of(serial_, values, count);
  auto [begin, end] = cache.equal_range(hash);
  for (auto it = begin; it != end; ++it) {
    const CacheEntry& entry = it->second;
    if (entry.serial == serial_ &&
        std::equal(entry.values.begin(), entry.values.end(), values, values + count))
      return entry.cell;
  }
  std::vector<std::string> key(values, values + count);
  void* cell;
  {
    std::lock_guard lock(mutex_);
    auto found = cells_.find(key);
    if (found == cells_.end()) found = cells_.emplace(key, make_cell()).first;
    cell = found->second.get();
  }
  if (cache.size() >= cache_limit) cache.clear();
  cache.emplace(hash, CacheEntry{serial_, std::move(key), cell});
  return cell;
}

std::vector<std::pair<std::vector<std::string>, const void*>> FamilyBase::cells() const {
  std::lock_guard lock(mutex_);
  std::vector<std::pair<std::vector<std::string>, const void*>> result;
  result.reserve(cells_.size());
  for (const auto& [values, cell] : cells_) result.emplace_back(values, cell.get());
  return result;
}

Histogram::Histogram(std::string name, std::string help, std::vector<std::string> labels,
                     std::vector<double> bounds)
    : Family<HistogramCell>(std::move(name), std::move(help), Type::histogram, std::move(labels)),
      bounds_(std::make_shared<const std::vector<double>>(std::move(bounds))) {}

std::shared_ptr<void> Histogram::make_cell() const {
  return std::make_shared<HistogramCell>(bounds_);
}

std::vector<std::pair<std::vector<std::string>, HistogramSnapshot>> Histogram::snapshots() const {
  std::vector<std::pair<std::vector<std::string>, HistogramSnapshot>> result;
  for (auto& [values, cell] : cells())
    result.emplace_back(values, static_cast<const HistogramCell*>(cell)->snapshot());
  return result;
}

namespace {
template <class Cell>
class SimpleFamily final : public Family<Cell> {
 public:
  using Family<Cell>::Family;

 private:
  std::shared_ptr<void> make_cell() const override { return std::make_shared<Cell>(); }
};
}  // namespace

Registration& Registration::operator=(Registration&& other) noexcept {
  if (this != &other) {
    reset();
    remove_ = std::move(other.remove_);
    other.remove_ = nullptr;
  }
  return *this;
}

void Registration::reset() {
  if (remove_) {
    auto remove = std::move(remove_);
    remove_ = nullptr;
    remove();
  }
}

std::string_view content_type(Format format) noexcept {
  return format == Format::openmetrics
             ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
             : "text/plain; version=0.0.4; charset=utf-8";
}

Format negotiate(std::string_view accept) {
  // Each comma-separated media range; OpenMetrics only when it is named and not refused (q=0).
  std::size_t start = 0;
  while (start <= accept.size()) {
    std::size_t comma = accept.find(',', start);
    std::string_view range = accept.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    std::size_t semicolon = range.find(';');
    std::string_view type = range.substr(0, semicolon);
    while (!type.empty() && type.front() == ' ') type.remove_prefix(1);
    while (!type.empty() && type.back() == ' ') type.remove_suffix(1);
    if (type == "application/openmetrics-text") {
      bool refused = false;
      std::string_view parameters =
          semicolon == std::string_view::npos ? std::string_view{} : range.substr(semicolon);
      std::size_t q = parameters.find("q=");
      if (q != std::string_view::npos) {
        std::string_view number = parameters.substr(q + 2);
        refused =
            number.starts_with("0") && number.find_first_of("123456789") == std::string_view::npos;
      }
      if (!refused) return Format::openmetrics;
    }
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return Format::prometheus_text;
}

struct Registry::State {
  mutable std::mutex mutex;
  std::map<std::string, std::unique_ptr<FamilyBase>, std::less<>> families;
  std::list<std::pair<std::uint64_t, CollectFunction>> collectors;
  std::uint64_t next_collector = 1;
};

Registry::Registry() : state_(std::make_shared<State>()) {}
Registry::~Registry() = default;

namespace {

void check_names(std::string_view name, const std::vector<std::string>& labels) {
  if (!valid_metric_name(name))
    throw std::invalid_argument("bad metric name '" + std::string(name) +
                                "'; expected [a-zA-Z_:][a-zA-Z0-9_:]*");
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (!valid_label_name(labels[i]) || labels[i] == "le")
      throw std::invalid_argument("bad label name '" + labels[i] + "' of metric '" +
                                  std::string(name) +
                                  "'; expected [a-zA-Z_][a-zA-Z0-9_]*, not starting with "
                                  "'__', and not 'le'");
    for (std::size_t j = 0; j < i; ++j)
      if (labels[j] == labels[i])
        throw std::invalid_argument("label '" + labels[i] + "' given twice for metric '" +
                                    std::string(name) + "'");
  }
}

template <class Made>
Made& find_or_add(std::mutex& mutex,
                  std::map<std::string, std::unique_ptr<FamilyBase>, std::less<>>& families,
                  const std::string& name, Type type, const std::vector<std::string>& labels,
                  const std::function<std::unique_ptr<Made>()>& make,
                  const std::function<bool(const Made&)>& same = {}) {
  std::lock_guard lock(mutex);
  auto found = families.find(name);
  if (found != families.end()) {
    auto* existing = dynamic_cast<Made*>(found->second.get());
    if (!existing || found->second->type() != type || found->second->label_names() != labels ||
        (same && !same(*existing)))
      throw std::invalid_argument("metric '" + name +
                                  "' exists already with another type, labels or buckets");
    return *existing;
  }
  auto made = make();
  Made& result = *made;
  families.emplace(name, std::move(made));
  return result;
}

}  // namespace

Counter& Registry::counter(std::string name, std::string help, std::vector<std::string> labels) {
  check_names(name, labels);
  if (!name.ends_with("_total"))
    throw std::invalid_argument("counter '" + name + "' must end in _total");
  return find_or_add<Counter>(state_->mutex, state_->families, name, Type::counter, labels, [&] {
    return std::make_unique<SimpleFamily<CounterCell>>(name, help, Type::counter, labels);
  });
}

Gauge& Registry::gauge(std::string name, std::string help, std::vector<std::string> labels) {
  check_names(name, labels);
  return find_or_add<Gauge>(state_->mutex, state_->families, name, Type::gauge, labels, [&] {
    return std::make_unique<SimpleFamily<GaugeCell>>(name, help, Type::gauge, labels);
  });
}

Histogram& Registry::histogram(std::string name, std::string help, std::vector<std::string> labels,
                               std::vector<double> bounds) {
  check_names(name, labels);
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
      throw std::invalid_argument("bucket bounds of histogram '" + name +
                                  "' must be finite and strictly increasing (+Inf is implied); "
                                  "bound " +
                                  std::to_string(i + 1) + " is " + format_value(bounds[i]));
  }
  return find_or_add<Histogram>(
      state_->mutex, state_->families, name, Type::histogram, labels,
      [&] { return std::make_unique<Histogram>(name, help, labels, bounds); },
      [&](const Histogram& existing) { return existing.bounds() == bounds; });
}

const FamilyBase* Registry::find(std::string_view name) const {
  std::lock_guard lock(state_->mutex);
  auto found = state_->families.find(name);
  return found == state_->families.end() ? nullptr : found->second.get();
}

Registration Registry::add_collector(CollectFunction collect) {
  std::uint64_t id;
  {
    std::lock_guard lock(state_->mutex);
    id = state_->next_collector++;
    state_->collectors.emplace_back(id, std::move(collect));
  }
  std::weak_ptr<State> weak = state_;
  return Registration([weak, id] {
    if (auto state = weak.lock()) {
      std::lock_guard lock(state->mutex);
      state->collectors.remove_if([id](const auto& entry) { return entry.first == id; });
    }
  });
}

namespace {

void expose_family(std::string& out, const FamilyBase& family,
                   const std::vector<std::pair<std::vector<std::string>, const void*>>& cells,
                   Format format) {
  append_header(out, family.name(), family.help(), family.type(), format);
  const auto& names = family.label_names();
  for (const auto& [values, cell] : cells) {
    if (family.type() == Type::counter) {
      out += family.name();
      append_labels(out, names, values);
      out += ' ';
      out += std::to_string(static_cast<const CounterCell*>(cell)->value());
      out += '\n';
    } else if (family.type() == Type::gauge) {
      out += family.name();
      append_labels(out, names, values);
      out += ' ';
      out += format_value(static_cast<const GaugeCell*>(cell)->value());
      out += '\n';
    } else {
      const auto* histogram = static_cast<const HistogramCell*>(cell);
      HistogramSnapshot snapshot = histogram->snapshot();
      std::vector<Exemplar> exemplars;
      if (format == Format::openmetrics) exemplars = histogram->exemplars();
      const auto& bounds = histogram->bounds();
      std::uint64_t cumulative = 0;
      for (std::size_t i = 0; i < snapshot.counts.size(); ++i) {
        cumulative += snapshot.counts[i];
        std::string bound = i < bounds.size() ? format_bound(bounds[i], format) : "+Inf";
        out += family.name();
        out += "_bucket";
        append_labels(out, names, values, "le", bound);
        out += ' ';
        out += std::to_string(cumulative);
        if (!exemplars.empty() && !exemplars[i].trace_id.empty()) {
          out += " # {trace_id=\"" + exemplars[i].trace_id + "\",span_id=\"" +
                 exemplars[i].span_id + "\"} " + format_value(exemplars[i].value) + ' ';
          char stamp[32];
          std::snprintf(stamp, sizeof stamp, "%.3f", exemplars[i].timestamp);
          out += stamp;
        }
        out += '\n';
      }
      out += family.name();
      out += "_sum";
      append_labels(out, names, values);
      out += ' ' + format_value(snapshot.sum) + '\n';
      out += family.name();
      out += "_count";
      append_labels(out, names, values);
      out += ' ' + std::to_string(snapshot.count) + '\n';
    }
  }
}

void expose_collected(std::string& out, const std::string& name, const Collected& collected,
                      Format format) {
  append_header(out, name, collected.help, collected.type, format);
  for (const auto& [labels, value] : collected.samples) {
    out += name;
    if (!labels.empty()) {
      out += '{';
      for (std::size_t i = 0; i < labels.size(); ++i) {
        if (i > 0) out += ',';
        out += labels[i].first + "=\"";
        append_utf8(out, labels[i].second, true);
        out += '"';
      }
      out += '}';
    }
    out += ' ' + format_value(value) + '\n';
  }
}

}  // namespace

std::string Registry::expose(Format format) const {
  std::vector<CollectFunction> collectors;
  std::vector<const FamilyBase*> families;
  {
    std::lock_guard lock(state_->mutex);
    for (const auto& entry : state_->collectors) collectors.push_back(entry.second);
    for (const auto& [name, family] : state_->families) families.push_back(family.get());
  }
  GatheringCollector gathered;
  for (const auto& collect : collectors) collect(gathered);

  // Families and collected names interleaved in name order; a family wins a clash.
  std::string out;
  auto collected = gathered.families.begin();
  auto flush_collected_before = [&](std::string_view name) {
    while (collected != gathered.families.end() && (name.empty() || collected->first < name)) {
      expose_collected(out, collected->first, collected->second, format);
      ++collected;
    }
  };
  for (const FamilyBase* family : families) {
    flush_collected_before(family->name());
    if (collected != gathered.families.end() && collected->first == family->name()) ++collected;
    expose_family(out, *family, family->cells(), format);
  }
  flush_collected_before({});
  if (format == Format::openmetrics) out += "# EOF\n";
  return out;
}

Registry& default_registry() {
  // Never destroyed: plugins and threads may still count while the process exits.
  static Registry* registry = new Registry();
  return *registry;
}

}  // namespace micro::metrics
