// wrappers/breaker — a circuit breaker per node and endpoint, on the call chain (one attempt
// on one node): closed → open → half-open → closed.
//
// Closed: every attempt goes through; outcomes are counted in a sliding window. The circuit
// opens when `consecutive` attempts in a row fail, or when at least `min_calls` attempts in
// the last `window` failed at a share of `ratio` or more. Open: attempts are answered 503 at
// once, without touching the network, until `open` has passed. Half-open: up to `probes`
// attempts go through; all of them succeeding closes the circuit, any failing opens it again.
// A failure is a 5xx or 408 answer (the node or the network is in trouble); 4xx answers are
// the caller's problem and count as successes; 499 (the caller cancelled) counts as nothing.
// Every state change is one info line through <micro/log.hpp>, with running totals.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>

#include <boost/asio/post.hpp>

#include <micro/error.hpp>
#include <micro/log.hpp>
#include <micro/plugin.hpp>
#include <micro/text.hpp>
#include <micro/wrapper.hpp>

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::string_view log_component = "wrapper breaker";
constexpr std::size_t bucket_count = 10;  // the window's resolution: a tenth of it

enum class State { closed, open, half_open };

std::string_view name_of(State state) {
  switch (state) {
    case State::closed:
      return "closed";
    case State::open:
      return "open";
    case State::half_open:
      return "half-open";
  }
  return "?";
}

std::string seconds_text(Clock::duration duration) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3fs",
                std::max(0.0, std::chrono::duration<double>(duration).count()));
  return text;
}

struct Settings {
  Clock::duration window;
  std::int64_t min_calls;
  double ratio;
  std::int64_t consecutive;  // 0: off
  Clock::duration open;
  std::int64_t probes;
  Clock::duration idle;
  std::size_t max_circuits;
};

// Totals over every circuit of one breaker object, written into each state-change line.
struct Totals {
  std::atomic<std::uint64_t> opened{0}, half_opened{0}, closed{0}, rejected{0};
  std::string text() const {
    return "opened=" + std::to_string(opened.load()) +
           " half_opened=" + std::to_string(half_opened.load()) +
           " closed=" + std::to_string(closed.load()) +
           " rejected=" + std::to_string(rejected.load());
  }
};

// What admit() decided for one attempt.
struct Admission {
  bool admitted = false;
  std::uint64_t generation = 0;  // the circuit state the attempt was admitted in
  std::string refusal;           // when refused: why, for the 503's detail
};

// One node + endpoint. A small mutex guards it: a handful of integer updates per attempt.
class Circuit {
 public:
  Circuit(std::string node, std::string endpoint, Clock::time_point now)
      : node_(std::move(node)), endpoint_(std::move(endpoint)) {
    touch(now);
  }

  void touch(Clock::time_point now) {
    last_used_.store(now.time_since_epoch().count(), std::memory_order_relaxed);
  }
  Clock::time_point last_used() const {
    return Clock::time_point(Clock::duration(last_used_.load(std::memory_order_relaxed)));
  }
  bool open() const {
    std::lock_guard lock(mutex_);
    return state_ != State::closed;
  }

  Admission admit(const Settings& settings, Totals& totals, Clock::time_point now) {
    std::lock_guard lock(mutex_);
    if (state_ == State::open && now >= open_until_) {
      change(State::half_open, "open for " + seconds_text(settings.open) + ", probing", totals);
    }
    switch (state_) {
      case State::closed:
        return {true, generation_, {}};
      case State::half_open:
        if (probes_started_ < settings.probes) {
          ++probes_started_;
          return {true, generation_, {}};
        }
        return {false, 0,
                "circuit half-open for node " + node_ + " endpoint " + endpoint_ + " (" +
                    std::to_string(settings.probes) +
                    " probe(s) in flight); more calls once they succeed"};
      case State::open:
        break;
    }
    return {false, 0,
            "circuit open for node " + node_ + " endpoint " + endpoint_ + " after " + reason_ +
                "; probes again in " + seconds_text(open_until_ - now)};
  }

  // An admitted attempt's outcome: nullopt for neither (cancelled).
  void record(std::optional<bool> failed, std::uint64_t generation, const Settings& settings,
              Totals& totals, Clock::time_point now) {
    std::lock_guard lock(mutex_);
    if (generation != generation_) return;  // admitted before the last change: stale news
    if (state_ == State::half_open) {
      if (!failed) {
        --probes_started_;  // a cancelled probe frees its place
      } else if (*failed) {
        open_circuit("a failed probe", settings, totals, now);
      } else if (++probe_successes_ >= settings.probes) {
        change(State::closed, std::to_string(probe_successes_) + " probe(s) succeeded", totals);
      }
      return;
    }
    if (state_ != State::closed || !failed) return;
    Bucket& bucket = bucket_for(settings, now);
    ++bucket.calls;
    if (*failed) {
      ++bucket.failures;
      ++consecutive_failures_;
    } else {
      consecutive_failures_ = 0;
    }
    if (!*failed) return;
    if (settings.consecutive > 0 && consecutive_failures_ >= settings.consecutive) {
      open_circuit(std::to_string(consecutive_failures_) + " consecutive failures", settings,
                   totals, now);
      return;
    }
    std::int64_t calls = 0, failures = 0;
    for (const Bucket& each : buckets_) {
      if (each.start + settings.window > now) {
        calls += each.calls;
        failures += each.failures;
      }
    }
    if (calls >= settings.min_calls &&
        static_cast<double>(failures) >= settings.ratio * static_cast<double>(calls)) {
      char reason[128];
      std::snprintf(reason, sizeof reason, "error ratio %.2f (%lld of %lld calls in %s)",
                    static_cast<double>(failures) / static_cast<double>(calls),
                    static_cast<long long>(failures), static_cast<long long>(calls),
                    seconds_text(settings.window).c_str());
      open_circuit(reason, settings, totals, now);
    }
  }

 private:
  struct Bucket {
    Clock::time_point start{};
    std::int64_t calls = 0, failures = 0;
  };

  // The bucket covering `now`, recycling the one whose time slot it reuses.
  Bucket& bucket_for(const Settings& settings, Clock::time_point now) {
    auto width = std::max<Clock::duration>(settings.window / bucket_count, Clock::duration(1));
    auto slot = now.time_since_epoch() / width;
    Bucket& bucket = buckets_[static_cast<std::size_t>(slot) % bucket_count];
    Clock::time_point start(slot * width);
    if (bucket.start != start) bucket = Bucket{start, 0, 0};
    return bucket;
  }

  void open_circuit(const std::string& reason, const Settings& settings, Totals& totals,
                    Clock::time_point now) {
    reason_ = reason;
    open_until_ = now + settings.open;
    change(State::open, reason + "; probes in " + seconds_text(settings.open), totals);
  }

  void change(State next, const std::string& why, Totals& totals) {
    State previous = state_;
    auto& counter = next == State::open        ? totals.opened
                    : next == State::half_open ? totals.half_opened
                                               : totals.closed;
    counter.fetch_add(1, std::memory_order_relaxed);
    state_ = next;
    ++generation_;
    probes_started_ = 0;
    probe_successes_ = 0;
    if (next != State::open) reason_.clear();
    if (next == State::closed) {
      consecutive_failures_ = 0;
      buckets_ = {};
    }
    micro::log::info(log_component, "node " + node_ + " endpoint " + endpoint_ + " " +
                                        std::string(name_of(previous)) + " -> " +
                                        std::string(name_of(next)) + ": " + why + " (" +
                                        totals.text() + ")");
  }

  const std::string node_, endpoint_;
  std::atomic<Clock::rep> last_used_{0};
  mutable std::mutex mutex_;
  State state_ = State::closed;
  std::uint64_t generation_ = 0;
  std::array<Bucket, bucket_count> buckets_{};
  std::int64_t consecutive_failures_ = 0;
  std::int64_t probes_started_ = 0, probe_successes_ = 0;
  Clock::time_point open_until_{};
  std::string reason_;
};

// Circuits by "<node id>\n<endpoint>". Known keys take a read lock; circuits unused for
// `idle` are dropped when new ones are made, and the table never holds more than
// `max_circuits` (the least recently used go first).
class CircuitTable {
 public:
  explicit CircuitTable(const Settings& settings) : settings_(settings) {}

  std::shared_ptr<Circuit> find(const micro::Node& node, std::string_view endpoint,
                                Clock::time_point now) {
    thread_local std::string key;
    key.assign(node.id).push_back('\n');
    key.append(endpoint);
    {
      std::shared_lock lock(mutex_);
      auto found = table_.find(std::string_view(key));
      if (found != table_.end()) {
        found->second->touch(now);
        return found->second;
      }
    }
    std::unique_lock lock(mutex_);
    auto& slot = table_[key];
    if (!slot) {
      std::string node_name =
          node.id == node.address ? node.id : node.id + " (" + node.address + ")";
      slot = std::make_shared<Circuit>(std::move(node_name), std::string(endpoint), now);
      auto circuit = slot;  // `slot` may move while evicting
      evict(now);
      return circuit;
    }
    slot->touch(now);
    return slot;
  }

 private:
  void evict(Clock::time_point now) {
    if (now >= next_sweep_ || table_.size() > settings_.max_circuits) {
      next_sweep_ = now + settings_.idle / 4;
      std::erase_if(table_, [&](const auto& entry) {
        return entry.second->last_used() + settings_.idle <= now && entry.second.use_count() == 1;
      });
    }
    while (table_.size() > settings_.max_circuits) {
      auto oldest = table_.begin();
      for (auto it = table_.begin(); it != table_.end(); ++it)
        if (it->second->last_used() < oldest->second->last_used()) oldest = it;
      table_.erase(oldest);
    }
  }

  const Settings& settings_;
  std::shared_mutex mutex_;
  micro::StringMap<std::shared_ptr<Circuit>> table_;
  Clock::time_point next_sweep_{};
};

// Shared by the wrapper object and every call in flight, so late answers find their circuit.
struct Breaker {
  Settings settings;
  std::string error_id;
  boost::asio::any_io_executor executor;
  Totals totals;
  CircuitTable circuits{settings};
};

std::optional<bool> failed(const micro::Response& response) {
  if (!response.error) return false;
  std::int32_t code = response.error->code;
  if (code == static_cast<std::int32_t>(micro::ErrorCode::cancelled)) return std::nullopt;
  return code >= 500 || code == static_cast<std::int32_t>(micro::ErrorCode::timeout);
}

class BreakerWrapper final : public micro::Wrapper {
 public:
  explicit BreakerWrapper(const micro::PluginArguments& arguments)
      : breaker_(std::make_shared<Breaker>()) {
    breaker_->settings = Settings{arguments.get_duration("window"),
                                  arguments.get_int("min_calls"),
                                  arguments.get_double("ratio"),
                                  arguments.get_int("consecutive"),
                                  arguments.get_duration("open"),
                                  arguments.get_int("probes"),
                                  arguments.get_duration("idle"),
                                  static_cast<std::size_t>(arguments.get_int("max_circuits"))};
    breaker_->error_id = arguments.error_id();
    breaker_->executor = arguments.executor();
  }

  ~BreakerWrapper() override {
    if (breaker_->totals.opened.load() > 0)
      micro::log::info(log_component, "totals: " + breaker_->totals.text());
  }

  micro::WrapperSet wrappers(const micro::WrapperScope&) override {
    micro::WrapperSet set;
    set.call = [breaker = breaker_](micro::CallFunction next) {
      return micro::CallFunction([breaker, next = std::move(next)](const micro::RequestPtr& request,
                                                                   const micro::Attempt& attempt,
                                                                   micro::ResponseHandler done) {
        auto now = Clock::now();
        auto circuit = breaker->circuits.find(attempt.node, request->endpoint, now);
        Admission admission = circuit->admit(breaker->settings, breaker->totals, now);
        if (!admission.admitted) {
          breaker->totals.rejected.fetch_add(1, std::memory_order_relaxed);
          // Answered on the executor, never inside the caller's async_call.
          boost::asio::post(breaker->executor,
                            [done = std::move(done),
                             error = micro::Error(breaker->error_id, micro::ErrorCode::unavailable,
                                                  std::move(admission.refusal))]() mutable {
                              done(micro::Response::failure(std::move(error)));
                            });
          return;
        }
        next(request, attempt,
             [breaker, circuit, generation = admission.generation,
              done = std::move(done)](micro::Response&& response) {
               circuit->record(failed(response), generation, breaker->settings, breaker->totals,
                               Clock::now());
               done(std::move(response));
             });
      });
    };
    return set;
  }

 private:
  std::shared_ptr<Breaker> breaker_;
};

const micro::PluginOption options[] = {
    {"consecutive", "int", "5", "consecutive failures that open the circuit (0: off)", "0"},
    {"ratio", "double", "0.5", "error ratio over the window that opens the circuit", "0.01", "1"},
    {"min_calls", "int", "20", "calls in the window before the ratio counts", "1"},
    {"window", "duration", "10s", "how far back the error ratio looks", "10ms", "1h"},
    {"open", "duration", "5s", "how long an open circuit refuses calls before probing", "1ms",
     "1h"},
    {"probes", "int", "3", "half-open: probe calls let through; all must succeed to close", "1",
     "1000"},
    {"idle", "duration", "5m", "a circuit unused this long is forgotten", "1s"},
    {"max_circuits", "int", "10000", "most node+endpoint circuits kept", "1"},
};

}  // namespace

MICRO_PLUGIN(wrapper, breaker, "circuit breaker per node and endpoint (503 while open)", options,
             [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new BreakerWrapper(arguments);
             })
