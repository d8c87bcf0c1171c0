// lease_keeper.cpp — the process-wide keep-alive stream over etcd's JSON gateway: one chunked
// POST /v3/lease/keepalive held open, one `{"ID":"…"}` chunk per due lease, answers matched by
// lease ID; opened with the first lease, closed with the last, moved to the next endpoint when
// it breaks. See README.md for why the stream is "primed" with padding before it answers.
#include "lease_keeper.hpp"

#include <algorithm>
#include <atomic>

#include <micro/error.hpp>

namespace micro::etcd {

using std::chrono::milliseconds;
using namespace std::chrono_literals;

namespace {

struct Counters {
  std::atomic<std::uint64_t> streams_opened{0};
  std::atomic<std::uint64_t> streams_open{0};
  std::atomic<std::uint64_t> keepalives_sent{0};
  std::atomic<std::uint64_t> answers{0};
  std::atomic<std::uint64_t> leases_lost{0};
  std::atomic<std::uint64_t> priming_bytes{0};
  std::atomic<std::uint64_t> batches_sent{0};
};

Counters& counters() {
  static Counters process_counters;
  return process_counters;
}

// etcd's gateway is a Go net/http server: before it writes the first byte of an HTTP/1.1
// response it reads and throws away up to 256 KiB of the request body the handler has not read
// yet, so a stream whose body stays open gets no answer until that much was sent. Whitespace
// between JSON messages is what the gateway's decoder skips; it is sent in pieces of this size
// until the response header arrives (about 600 KiB on loopback: the decoder reads some of it).
constexpr std::size_t padding_piece = 64 * 1024;
constexpr std::size_t padding_limit = 16 * 1024 * 1024;

}  // namespace

KeepAliveStatistics keepalive_statistics() {
  auto& counts = counters();
  return {counts.streams_opened.load(), counts.streams_open.load(), counts.keepalives_sent.load(),
          counts.answers.load(),        counts.leases_lost.load(),  counts.priming_bytes.load(),
          counts.batches_sent.load()};
}

std::shared_ptr<LeaseKeeper> LeaseKeeper::shared_for(const std::string& identity,
                                                     const ClientOptions& options, bool batched) {
  static std::mutex keepers_mutex;
  static std::map<std::string, std::weak_ptr<LeaseKeeper>> keepers;
  std::lock_guard lock(keepers_mutex);
  std::erase_if(keepers, [](const auto& item) { return item.second.expired(); });
  auto& slot = keepers[identity];
  if (auto existing = slot.lock()) return existing;
  auto keeper = std::make_shared<LeaseKeeper>(options, batched);
  slot = keeper;
  return keeper;
}

LeaseKeeper::LeaseKeeper(const ClientOptions& options, bool batched)
    : client_(options), batched_(batched) {}

LeaseKeeper::~LeaseKeeper() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    if (session_) session_->wake();
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void LeaseKeeper::add(const void* owner, std::int64_t lease, std::int64_t ttl_seconds,
                      Clock::time_point keep_until, Listener listener) {
  std::lock_guard lock(mutex_);
  auto& entry = leases_[lease];
  entry.owner = owner;
  entry.ttl_seconds = std::max<std::int64_t>(1, ttl_seconds);
  entry.next_due = Clock::now() + milliseconds(entry.ttl_seconds * 1000 / 3);
  entry.keep_until = keep_until;
  entry.listener = std::move(listener);
  // The thread (and with it the stream) starts with the first lease.
  if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
  if (session_) session_->wake();
  wake_.notify_all();
}

void LeaseKeeper::extend(std::int64_t lease, Clock::time_point keep_until) {
  std::lock_guard lock(mutex_);
  auto found = leases_.find(lease);
  if (found == leases_.end()) return;
  found->second.keep_until = std::max(found->second.keep_until, keep_until);
  if (session_) session_->wake();
}

void LeaseKeeper::remove(std::int64_t lease) {
  std::lock_guard lock(mutex_);
  leases_.erase(lease);
  if (session_) session_->wake();
}

void LeaseKeeper::forget_owner(const void* owner) {
  // Taking the listener mutex first waits for a listener of this owner that is running now.
  std::lock_guard listening(listener_mutex_);
  std::lock_guard lock(mutex_);
  std::erase_if(leases_, [&](const auto& item) { return item.second.owner == owner; });
  if (session_) session_->wake();
}

void LeaseKeeper::run() {
  std::unique_lock lock(mutex_);
  milliseconds backoff = 50ms;
  while (!stopping_) {
    if (leases_.empty()) {
      wake_.wait(lock, [&] { return stopping_ || !leases_.empty(); });
      continue;
    }
    lock.unlock();
    const auto started = Clock::now();
    const bool finished = batched_ || started < batched_until_ ? send_batches() : follow_stream();
    lock.lock();
    if (finished) {
      backoff = 50ms;
      continue;
    }
    // A stream that lived a while was healthy: the next endpoint is tried at once.
    if (Clock::now() - started > 2s) backoff = 50ms;
    wake_.wait_for(lock, backoff, [&] { return stopping_; });
    backoff = std::min<milliseconds>(backoff * 2, 1s);
  }
}

std::string LeaseKeeper::handle_answer(const nlohmann::json& message,
                                       std::map<std::int64_t, Clock::time_point>& in_flight) {
  if (!message.is_object()) return "etcd sent a keep-alive answer that is not an object";
  if (const auto error = gateway_error(message)) {
    // The token expired: log in again before the next stream (whose head carries it).
    if (error->code == grpc_unauthenticated) {
      try {
        client_.authenticate();
      } catch (const std::exception&) {
      }
    }
    return "etcd ended the keep-alive stream: " + message.dump();
  }
  const auto& result = message.contains("result") ? message["result"] : message;
  const std::int64_t lease = json_int64(result, "ID");
  if (lease == 0) return {};  // the answer to the stream's opening message
  in_flight.erase(lease);
  const std::int64_t ttl = json_int64(result, "TTL");
  std::lock_guard listening(listener_mutex_);
  Listener listener;
  {
    std::lock_guard lock(mutex_);
    auto found = leases_.find(lease);
    if (found == leases_.end()) return {};  // removed meanwhile
    ++counters().answers;
    if (ttl > 0) {
      found->second.ttl_seconds = ttl;
      found->second.next_due = Clock::now() + milliseconds(ttl * 1000 / 3);
      listener = found->second.listener;
    } else {
      // etcd no longer knows the lease (expired, revoked, cluster rebuilt): its owner
      // re-registers under a new one.
      ++counters().leases_lost;
      listener = std::move(found->second.listener);
      leases_.erase(found);
    }
  }
  if (listener) listener(lease, ttl);
  return {};
}

std::optional<std::vector<std::int64_t>> LeaseKeeper::due_leases(
    const std::map<std::int64_t, Clock::time_point>& in_flight, Clock::time_point& next_wake) {
  std::vector<std::int64_t> due;
  const auto now = Clock::now();
  std::lock_guard lock(mutex_);
  // The stream closes with the last lease (and when the keeper stops).
  if (stopping_ || leases_.empty()) return std::nullopt;
  for (auto& [lease, entry] : leases_) {
    // Keep-alives pause while the owner stopped refreshing (the node then expires).
    if (entry.keep_until <= now || in_flight.contains(lease)) continue;
    // A lease falling due within a sixth of its TTL (half its keep-alive interval) goes now
    // with the others: early by that much is harmless, and leases granted moments apart then
    // share their requests (one batch per interval) instead of each waking the keeper alone.
    if (entry.next_due <= now + milliseconds(entry.ttl_seconds * 1000 / 6)) {
      due.push_back(lease);
    } else {
      next_wake = std::min(next_wake, entry.next_due);
    }
  }
  return due;
}

bool LeaseKeeper::send_batches() {
  const std::map<std::int64_t, Clock::time_point> none_in_flight;
  while (true) {
    auto next_wake = Clock::now() + 1s;
    const auto due = due_leases(none_in_flight, next_wake);
    if (!due) return true;
    if (!due->empty()) {
      std::string body;
      for (const auto lease : *due) body += "{\"ID\":\"" + std::to_string(lease) + "\"}\n";
      try {
        // call_raw fails over across endpoints itself, within request_timeout; the HTTP client
        // keeps the connection alive between batches.
        std::string answer = client_.call_raw("/v3/lease/keepalive", body);
        ++counters().batches_sent;
        counters().keepalives_sent += due->size();
        answer += '\n';
        std::map<std::int64_t, Clock::time_point> answered;
        for (const auto& message : take_json_lines(answer)) {
          const auto error = handle_answer(message, answered);
          if (!error.empty()) return false;
        }
      } catch (const std::exception&) {
        return false;
      }
    }
    std::unique_lock lock(mutex_);
    wake_.wait_until(lock, next_wake, [&] { return stopping_; });
  }
}

namespace {

[[noreturn]] void stream_broke(const std::string& why) {
  throw micro::Exception(micro::unavailable("micro.registry.etcd", why));
}

}  // namespace

void LeaseKeeper::take_answers(StreamSession& session, Clock::time_point until,
                               std::map<std::int64_t, Clock::time_point>& in_flight) {
  auto update = session.wait(until);
  for (const auto& message : update.messages) {
    const auto broken = handle_answer(message, in_flight);
    if (!broken.empty()) stream_broke(broken);
  }
  if (update.ended) stream_broke(update.why);
}

bool LeaseKeeper::prime(StreamSession& session,
                        std::map<std::int64_t, Clock::time_point>& in_flight) {
  const auto& options = client_.options();
  static const std::string padding(padding_piece, ' ');
  // A server that answers at once is given a moment first and needs no padding.
  auto update = session.wait(Clock::now() + 20ms);
  const auto priming_deadline = Clock::now() + options.request_timeout;
  std::size_t padded = 0;
  while (true) {
    for (const auto& message : update.messages) {
      const auto broken = handle_answer(message, in_flight);
      if (!broken.empty()) stream_broke(broken);
    }
    if (update.status != 0) break;
    if (update.ended) stream_broke(update.why);
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return false;
    }
    if (Clock::now() > priming_deadline || padded >= padding_limit) {
      // A member without a leader answers nothing either; but when stream after stream (on
      // the next endpoints) gets no answer, the servers (or a proxy before them) hold
      // answers until the request ends: batch for a while instead, then try again.
      if (++priming_failures_ >= 3) {
        priming_failures_ = 0;
        batched_until_ = Clock::now() + 60s;
      }
      stream_broke("etcd at " + session.endpoint_text() +
                   " did not start answering the keep-alive stream after " +
                   std::to_string(padded / 1024) + " KiB");
    }
    session.send(padding);
    padded += padding.size();
    counters().priming_bytes += padding.size();
    update = session.wait(Clock::now());  // only what is there already
  }
  priming_failures_ = 0;
  if (update.status != 200) {
    if (update.status == 401) client_.authenticate();
    stream_broke("etcd at " + session.endpoint_text() + " answered the keep-alive stream with " +
                 std::to_string(update.status));
  }
  return true;
}

bool LeaseKeeper::keep_alive_due(StreamSession& session,
                                 std::map<std::int64_t, Clock::time_point>& in_flight,
                                 Clock::time_point& next_wake) {
  const auto due = due_leases(in_flight, next_wake);
  if (!due) return false;
  for (const auto lease : *due) {
    session.send("{\"ID\":\"" + std::to_string(lease) + "\"}\n");
    in_flight[lease] = Clock::now();
    ++counters().keepalives_sent;
  }
  const auto timeout = client_.options().request_timeout;
  const auto now = Clock::now();
  for (const auto& [lease, sent] : in_flight) {
    // The member stopped answering without closing the connection (lost its leader, hung).
    if (now - sent > timeout) {
      stream_broke("etcd at " + session.endpoint_text() + " did not answer a keep-alive within " +
                   std::to_string(timeout.count()) + "ms");
    }
    next_wake = std::min(next_wake, sent + timeout);
  }
  return true;
}

bool LeaseKeeper::follow_stream() {
  StreamSession session(client_, "/v3/lease/keepalive", true);
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return true;
    session_ = &session;
  }
  struct Unpublish {
    LeaseKeeper& keeper;
    bool counted = false;
    ~Unpublish() {
      std::lock_guard lock(keeper.mutex_);
      keeper.session_ = nullptr;
      if (counted) --counters().streams_open;
    }
  } unpublish{*this};

  std::map<std::int64_t, Clock::time_point> in_flight;  // lease → when its ID was sent
  try {
    // Open with a lease ID nobody holds (etcd answers it with TTL 0), then pad until the
    // gateway starts answering (see padding_piece).
    session.open("{\"ID\":\"0\"}\n");
    ++counters().streams_opened;
    ++counters().streams_open;
    unpublish.counted = true;
    if (!prime(session, in_flight)) return true;
    while (true) {
      auto next_wake = Clock::now() + 1s;
      if (!keep_alive_due(session, in_flight, next_wake)) break;
      take_answers(session, next_wake, in_flight);
    }
    // Nothing left to keep alive: end the request body, which ends etcd's stream.
    session.finish();
    return true;
  } catch (const std::exception&) {
    client_.endpoint_failed(session.endpoint());
    return false;
  }
}

}  // namespace micro::etcd

// For tests and benchmarks: the process-wide keep-alive counts.
extern "C" __attribute__((visibility("default"))) void micro_registry_etcd_keepalive_statistics(
    micro::etcd::KeepAliveStatistics* statistics) {
  *statistics = micro::etcd::keepalive_statistics();
}
