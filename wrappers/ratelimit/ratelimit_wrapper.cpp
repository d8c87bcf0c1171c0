// wrappers/ratelimit — a token bucket and a concurrency limit per endpoint, on the handler
// chain (server side: requests this service handles) and/or the client chain (calls it makes).
//
// The bucket is GCRA (the "virtual scheduling" form of a token bucket): one atomic holds the
// theoretical arrival time of the next call, and taking a token is one compare-and-swap, so the
// hot path takes no lock. Waiting for a token reserves it first (the CAS moves the time on) and
// then sleeps on a timer until it is due, so waiting calls come out at the rate too.
// The concurrency limit is one atomic counter; calls waiting for a slot queue under a mutex
// that only the slow path (a full limit) touches.
// Over a limit a call either waits (at most `wait`, and never past its deadline) or is refused
// with 429 and, for the rate, a Retry-After metadata entry (whole seconds).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <micro/error.hpp>
#include <micro/log.hpp>
#include <micro/plugin.hpp>
#include <micro/text.hpp>
#include <micro/wrapper.hpp>

namespace {

using Clock = std::chrono::steady_clock;

// Bucket time in sixteenths of a nanosecond since the plugin's epoch: fine enough that the
// interval of a rate up to 1e8/s is within 1 % of exact, and an int64 lasts 18 years.
constexpr std::int64_t ticks_per_nanosecond = 16;
const Clock::time_point epoch = Clock::now();

std::int64_t ticks_at(Clock::time_point time) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(time - epoch).count() *
         ticks_per_nanosecond;
}
Clock::duration duration_of(std::int64_t ticks) {
  return std::chrono::duration_cast<Clock::duration>(
      std::chrono::nanoseconds(ticks / ticks_per_nanosecond));
}

std::string rate_text(double rate) {
  char text[32];
  std::snprintf(text, sizeof text, "%g/s", rate);
  return text;
}
std::string seconds_text(Clock::duration duration) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3fs",
                std::max(0.0, std::chrono::duration<double>(duration).count()));
  return text;
}

class TokenBucket {
 public:
  TokenBucket(double rate, std::int64_t burst)
      : interval_(std::max<std::int64_t>(
            1, std::llround(1e9 * static_cast<double>(ticks_per_nanosecond) / rate))),
        burst_span_(interval_ * burst) {}

  struct Take {
    bool granted = false;
    Clock::duration wait{0};         // granted: how long until the token is due
    Clock::duration retry_after{0};  // refused: when one would be free
  };

  // Takes a token, or reserves one due within `max_wait`.
  Take take(Clock::time_point now, Clock::duration max_wait) {
    std::int64_t now_ticks = ticks_at(now);
    std::int64_t max_wait_ticks =
        std::chrono::duration_cast<std::chrono::nanoseconds>(max_wait).count() *
        ticks_per_nanosecond;
    std::int64_t arrival = next_arrival_.load(std::memory_order_relaxed);
    for (;;) {
      std::int64_t next = std::max(arrival, now_ticks) + interval_;
      std::int64_t wait = next - burst_span_ - now_ticks;
      if (wait > max_wait_ticks) return {false, {}, duration_of(wait)};
      if (next_arrival_.compare_exchange_weak(arrival, next, std::memory_order_relaxed))
        return {true, duration_of(std::max<std::int64_t>(0, wait)), {}};
    }
  }

 private:
  const std::int64_t interval_;    // ticks between tokens
  const std::int64_t burst_span_;  // ticks of tokens the bucket holds
  std::atomic<std::int64_t> next_arrival_{std::numeric_limits<std::int64_t>::min() / 2};
};

// At most `limit` in flight; over it, callers queue (bounded in time by their own timers).
class ConcurrencyLimit {
 public:
  struct Waiter {
    std::atomic<bool> settled{false};
    std::function<void()> start;  // runs with the slot held
  };
  using WaiterPtr = std::shared_ptr<Waiter>;

  explicit ConcurrencyLimit(std::int64_t limit) : limit_(limit) {}

  bool try_acquire() {
    if (in_flight_.fetch_add(1, std::memory_order_acq_rel) < limit_) return true;
    in_flight_.fetch_sub(1, std::memory_order_acq_rel);
    return false;
  }

  // Queues `waiter` unless a slot is free now (then returns true and queues nothing).
  bool acquire_or_queue(const WaiterPtr& waiter) {
    std::lock_guard lock(mutex_);
    waiting_.fetch_add(1);  // before trying: a release after a failed try sees it
    if (try_acquire()) {
      waiting_.fetch_sub(1);
      return true;
    }
    queue_.push_back(waiter);
    return false;
  }

  // Takes a waiter out of the queue (its time ran out); false if it was already started.
  bool withdraw(const WaiterPtr& waiter) {
    std::lock_guard lock(mutex_);
    auto found = std::find(queue_.begin(), queue_.end(), waiter);
    if (found == queue_.end()) return false;
    queue_.erase(found);
    waiting_.fetch_sub(1);
    return true;
  }

  void release() {
    in_flight_.fetch_sub(1, std::memory_order_acq_rel);
    if (waiting_.load() == 0) return;
    std::unique_lock lock(mutex_);
    while (!queue_.empty() && try_acquire()) {
      WaiterPtr waiter = std::move(queue_.front());
      queue_.pop_front();
      waiting_.fetch_sub(1);
      if (waiter->settled.exchange(true)) {
        release_locked();  // its timer won the race: hand the slot on
        continue;
      }
      lock.unlock();
      waiter->start();
      waiter->start = nullptr;  // it held the waiting call alive; now the call holds itself
      lock.lock();
    }
  }

  std::int64_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }
  std::int64_t limit() const { return limit_; }

 private:
  void release_locked() { in_flight_.fetch_sub(1, std::memory_order_acq_rel); }

  const std::int64_t limit_;
  std::atomic<std::int64_t> in_flight_{0};
  std::atomic<std::int64_t> waiting_{0};
  std::mutex mutex_;
  std::deque<WaiterPtr> queue_;
};

// The limits of one endpoint (server side) or one service's endpoint (client side).
struct Limits {
  Limits(std::string name, double rate, std::int64_t burst, std::int64_t concurrency)
      : name(std::move(name)), concurrency(concurrency > 0 ? concurrency : 0) {
    if (rate > 0) bucket.emplace(rate, burst);
  }
  std::string name;
  std::optional<TokenBucket> bucket;
  ConcurrencyLimit concurrency;
  std::atomic<Clock::rep> last_used{0};
};

struct Settings {
  double rate;  // per second; 0: no bucket
  std::int64_t burst;
  std::int64_t concurrency;  // 0: no limit
  Clock::duration wait;
  Clock::duration idle;
  std::size_t max_keys;
};

// Limits by key. Known keys take a read lock; entries idle for `idle` (their bucket full
// again, nothing in flight) are dropped when new ones are made.
class LimitTable {
 public:
  explicit LimitTable(const Settings& settings) : settings_(settings) {}

  std::shared_ptr<Limits> find(std::string_view key, Clock::time_point now) {
    {
      std::shared_lock lock(mutex_);
      auto found = table_.find(key);
      if (found != table_.end()) {
        found->second->last_used.store(now.time_since_epoch().count(), std::memory_order_relaxed);
        return found->second;
      }
    }
    std::unique_lock lock(mutex_);
    if (table_.size() >= settings_.max_keys) sweep(now);
    auto& slot = table_[std::string(key)];
    if (!slot)
      slot = std::make_shared<Limits>(std::string(key), settings_.rate, settings_.burst,
                                      settings_.concurrency);
    slot->last_used.store(now.time_since_epoch().count(), std::memory_order_relaxed);
    return slot;
  }

 private:
  void sweep(Clock::time_point now) {
    auto before = (now - settings_.idle).time_since_epoch().count();
    std::erase_if(table_, [&](const auto& entry) {
      return entry.second->last_used.load() <= before && entry.second.use_count() == 1 &&
             entry.second->concurrency.in_flight() == 0;
    });
    if (table_.size() >= settings_.max_keys)
      micro::log::warn("wrapper ratelimit", "more than " + std::to_string(settings_.max_keys) +
                                                " endpoints limited at once; raise max_keys");
  }

  const Settings& settings_;
  std::shared_mutex mutex_;
  micro::StringMap<std::shared_ptr<Limits>> table_;
};

struct Limiter {
  Settings settings;
  std::string error_id;
  boost::asio::any_io_executor executor;
  LimitTable table{settings};
};

micro::Response too_many(const Limiter& limiter, std::string detail,
                         std::optional<Clock::duration> retry_after) {
  auto response = micro::Response::failure(
      micro::Error(limiter.error_id, micro::ErrorCode::too_many_requests, std::move(detail)));
  if (retry_after) {
    auto seconds = std::max<std::int64_t>(
        1,
        static_cast<std::int64_t>(std::ceil(std::chrono::duration<double>(*retry_after).count())));
    response.metadata.set("Retry-After", std::to_string(seconds));
  }
  return response;
}

// Starts the call once it may go (holding its slot, when slots are counted).
using Proceed = std::function<void()>;

// Runs `call(done')` holding a slot of `limits`; done' gives the slot back, then runs `done`.
template <class Call>
void run_holding(const std::shared_ptr<Limits>& limits, Call& call, micro::ResponseHandler done) {
  auto released = std::make_shared<std::atomic<bool>>(false);
  auto release = [limits, released] {
    if (!released->exchange(true)) limits->concurrency.release();
  };
  try {
    call([release, done = std::move(done)](micro::Response&& response) {
      release();
      done(std::move(response));
    });
  } catch (...) {
    release();
    throw;
  }
}

std::string rate_refusal(const Limiter& limiter, const Limits& limits, Clock::duration after) {
  return "rate limit of " + rate_text(limiter.settings.rate) + " for " + limits.name +
         " exceeded; a call is allowed again in " + seconds_text(after);
}

std::string concurrency_refusal(const Limits& limits, Clock::duration waited) {
  return "concurrency limit of " + std::to_string(limits.concurrency.limit()) +
         " calls in flight for " + limits.name + " reached" +
         (waited > Clock::duration::zero() ? " (waited " + seconds_text(waited) + ")"
                                           : std::string());
}

// The client side answers refusals on the executor (never inside async_call); the server
// side answers at once.
void refuse(const Limiter& limiter, bool later, micro::ResponseHandler done,
            micro::Response&& response) {
  if (!later) {
    done(std::move(response));
    return;
  }
  boost::asio::post(limiter.executor,
                    [done = std::move(done), response = std::move(response)]() mutable {
                      done(std::move(response));
                    });
}

// The slow path of one call: waiting for a reserved token to fall due and/or for a slot.
class Admission : public std::enable_shared_from_this<Admission> {
 public:
  Admission(std::shared_ptr<Limiter> limiter, std::shared_ptr<Limits> limits,
            Clock::time_point give_up, Proceed proceed, micro::ResponseHandler done)
      : limiter_(std::move(limiter)),
        limits_(std::move(limits)),
        started_(Clock::now()),
        give_up_(give_up),
        timer_(limiter_->executor),
        proceed_(std::move(proceed)),
        done_(std::move(done)) {}

  // The token is reserved for `due`.
  void wait_for_token(Clock::time_point due, bool counted) {
    timer_.expires_at(due);
    timer_.async_wait([self = shared_from_this(), counted](boost::system::error_code) {
      if (!counted || self->limits_->concurrency.try_acquire()) {
        self->proceed_();
        return;
      }
      self->wait_for_slot();
    });
  }

  void wait_for_slot() {
    waiter_ = std::make_shared<ConcurrencyLimit::Waiter>();
    waiter_->start = [self = shared_from_this()] {
      self->timer_.cancel();
      boost::asio::post(self->limiter_->executor, [self] { self->proceed_(); });
    };
    if (limits_->concurrency.acquire_or_queue(waiter_)) {
      waiter_->start = nullptr;
      proceed_();
      return;
    }
    std::weak_ptr<Admission> weak = weak_from_this();
    timer_.expires_at(give_up_);
    timer_.async_wait([weak](boost::system::error_code error) {
      auto self = weak.lock();
      if (!self || error) return;
      if (self->waiter_->settled.exchange(true)) return;  // started meanwhile
      self->limits_->concurrency.withdraw(self->waiter_);
      self->waiter_->start = nullptr;  // breaks the cycle Admission → waiter → Admission
      refuse(*self->limiter_, true, std::move(self->done_),
             too_many(*self->limiter_,
                      concurrency_refusal(*self->limits_, Clock::now() - self->started_),
                      std::nullopt));
    });
  }

 private:
  std::shared_ptr<Limiter> limiter_;
  std::shared_ptr<Limits> limits_;
  Clock::time_point started_, give_up_;
  boost::asio::steady_timer timer_;
  Proceed proceed_;
  micro::ResponseHandler done_;
  ConcurrencyLimit::WaiterPtr waiter_;
};

// How long a call may wait: the option, cut to what its deadline leaves.
Clock::duration max_wait_for(const Settings& settings, const micro::Context& context) {
  if (settings.wait <= Clock::duration::zero()) return Clock::duration::zero();
  if (!context.has_deadline()) return settings.wait;
  return std::clamp<Clock::duration>(context.remaining(), Clock::duration::zero(), settings.wait);
}

// Runs `call(done')` within the limits of `key`, where done' frees the slot and runs `done`;
// or answers `done` with 429.
template <class Call>
void limited(const std::shared_ptr<Limiter>& limiter, bool client_side, std::string_view key,
             const micro::RequestPtr& request, micro::ResponseHandler done, Call call) {
  auto now = Clock::now();
  auto limits = limiter->table.find(key, now);
  Clock::duration max_wait = max_wait_for(limiter->settings, request->context);
  std::optional<Clock::time_point> token_due;
  if (limits->bucket) {
    auto take = limits->bucket->take(now, max_wait);
    if (!take.granted) {
      refuse(
          *limiter, client_side, std::move(done),
          too_many(*limiter, rate_refusal(*limiter, *limits, take.retry_after), take.retry_after));
      return;
    }
    if (take.wait > Clock::duration::zero()) token_due = now + take.wait;
  }
  bool counted = limits->concurrency.limit() > 0;
  if (!counted && !token_due) {  // a token at once, no slots to count: no allocation
    call(std::move(done));
    return;
  }
  if (!token_due && limits->concurrency.try_acquire()) {
    run_holding(limits, call, std::move(done));
    return;
  }
  if (!token_due && max_wait <= Clock::duration::zero()) {
    refuse(*limiter, client_side, std::move(done),
           too_many(*limiter, concurrency_refusal(*limits, {}), std::nullopt));
    return;
  }
  auto proceed = [limits, counted, call = std::move(call), done]() mutable {
    if (counted)
      run_holding(limits, call, std::move(done));
    else
      call(std::move(done));
  };
  auto admission = std::make_shared<Admission>(limiter, limits, now + max_wait, std::move(proceed),
                                               std::move(done));
  if (token_due)
    admission->wait_for_token(*token_due, counted);
  else
    admission->wait_for_slot();
}

class RateLimitWrapper final : public micro::Wrapper {
 public:
  explicit RateLimitWrapper(const micro::PluginArguments& arguments)
      : limiter_(std::make_shared<Limiter>()) {
    double rate = arguments.get_double("rate");
    std::int64_t burst = arguments.get_int("burst");
    if (burst == 0) burst = std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(rate)));
    limiter_->settings = Settings{rate,
                                  burst,
                                  arguments.get_int("concurrency"),
                                  arguments.get_duration("wait"),
                                  arguments.get_duration("idle"),
                                  static_cast<std::size_t>(arguments.get_int("max_keys"))};
    limiter_->error_id = arguments.error_id();
    limiter_->executor = arguments.executor();
    std::string side = arguments.get_string("side");
    if (side != "server" && side != "client" && side != "both")
      throw micro::Exception(micro::bad_request(
          limiter_->error_id, "option side: '" + side + "' is not server, client or both"));
    server_ = side != "client";
    client_ = side != "server";
    if (rate == 0 && limiter_->settings.concurrency == 0)
      throw micro::Exception(micro::bad_request(
          limiter_->error_id,
          "nothing to limit: rate=0 and concurrency=0; set rate=<calls per second> or "
          "concurrency=<calls in flight>"));
  }

  micro::WrapperSet wrappers(const micro::WrapperScope&) override {
    micro::WrapperSet set;
    auto limiter = limiter_;
    if (server_) {
      set.handler = [limiter](micro::HandlerFunction next) {
        // Shared, so a call still waiting when the chain is gone finds it.
        auto shared = std::make_shared<const micro::HandlerFunction>(std::move(next));
        return micro::HandlerFunction(
            [limiter, shared](const micro::RequestPtr& request, micro::ResponseHandler respond) {
              limited(limiter, false, request->endpoint, request, std::move(respond),
                      [shared, request](micro::ResponseHandler done) {
                        (*shared)(request, std::move(done));
                      });
            });
      };
    }
    if (client_) {
      set.client = [limiter](micro::ClientFunction next) {
        auto shared = std::make_shared<const micro::ClientFunction>(std::move(next));
        return micro::ClientFunction([limiter, shared](const micro::RequestPtr& request,
                                                       const micro::CallOptions& options,
                                                       micro::ResponseHandler done) {
          thread_local std::string key;
          key.assign(request->service).push_back(' ');
          key.append(request->endpoint);
          limited(limiter, true, key, request, std::move(done),
                  [shared, request, options](micro::ResponseHandler done) {
                    (*shared)(request, options, std::move(done));
                  });
        });
      };
    }
    return set;
  }

 private:
  std::shared_ptr<Limiter> limiter_;
  bool server_ = true, client_ = false;
};

const micro::PluginOption options[] = {
    {"rate", "double", "100", "calls per second per endpoint (0: no rate limit)", "0", "1e12"},
    {"burst", "int", "0", "calls the bucket holds (0: one second's worth of the rate)", "0"},
    {"concurrency", "int", "0", "calls in flight per endpoint (0: no limit)", "0"},
    {"wait", "duration", "0",
     "over a limit, wait this long at most (never past the deadline); "
     "0: refuse at once with 429",
     "0", "1h"},
    {"side", "string", "server", "server (handled requests), client (calls made) or both"},
    {"idle", "duration", "1m", "an endpoint's state unused this long may be dropped", "1s"},
    {"max_keys", "int", "10000", "endpoints tracked before idle ones are dropped", "1"},
};

}  // namespace

MICRO_PLUGIN(wrapper, ratelimit, "token bucket and concurrency limit per endpoint (429)", options,
             [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new RateLimitWrapper(arguments);
             })
