// lease_keeper.hpp — the process-wide lease keep-alive stream: every registry object of a process
// that talks to the same etcd endpoints with the same credentials shares one LeaseKeeper, which
// holds one long-lived /v3/lease/keepalive stream (one chunk per due lease, answers matched by
// lease ID) and moves it to the next endpoint when it breaks.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "etcd_client.hpp"
#include "stream_session.hpp"

namespace micro::etcd {

// Process-wide counts, for tests and benchmarks (read through
// micro_registry_etcd_keepalive_statistics, exported by the plugin).
struct KeepAliveStatistics {
  std::uint64_t streams_opened = 0;   // keep-alive connections opened, ever
  std::uint64_t streams_open = 0;     // open right now
  std::uint64_t keepalives_sent = 0;  // lease IDs sent (one chunk each)
  std::uint64_t answers = 0;          // answers matched to a lease
  std::uint64_t leases_lost = 0;      // answers saying etcd no longer knows the lease
  std::uint64_t priming_bytes = 0;    // padding sent to open streams (see README)
  std::uint64_t batches_sent = 0;     // batched keep-alive requests (keepalive=batch)
};
KeepAliveStatistics keepalive_statistics();

class LeaseKeeper {
 public:
  using Clock = std::chrono::steady_clock;
  // What an owner hears about one of its leases: the TTL etcd granted again (seconds), or 0
  // when etcd no longer knows the lease (the owner re-registers). Runs on the keeper's thread;
  // must not call back into the keeper.
  using Listener = std::function<void(std::int64_t lease, std::int64_t ttl_seconds)>;

  // The keeper shared by every registry in this process whose `identity` (endpoints,
  // credentials, TLS files) is the same; made on first use, gone with its last owner.
  static std::shared_ptr<LeaseKeeper> shared_for(const std::string& identity,
                                                 const ClientOptions& options, bool batched);

  // `batched`: no stream; every interval, one POST carries all due leases of the process (for
  // servers or proxies that do not answer before the request body ends).
  LeaseKeeper(const ClientOptions& options, bool batched);
  ~LeaseKeeper();
  LeaseKeeper(const LeaseKeeper&) = delete;
  LeaseKeeper& operator=(const LeaseKeeper&) = delete;

  // Keeps `lease` (granted for `ttl_seconds`) alive until `keep_until`, telling `listener`
  // what etcd answers; `owner` groups leases for forget_owner().
  void add(const void* owner, std::int64_t lease, std::int64_t ttl_seconds,
           Clock::time_point keep_until, Listener listener);
  // The owner refreshed the registration: keep the lease alive until `keep_until`.
  void extend(std::int64_t lease, Clock::time_point keep_until);
  // Stops keeping `lease` alive (deregistered or replaced).
  void remove(std::int64_t lease);
  // Stops keeping any lease of `owner` alive and waits until no listener of it runs.
  void forget_owner(const void* owner);

 private:
  struct Entry {
    const void* owner = nullptr;
    std::int64_t ttl_seconds = 0;
    Clock::time_point next_due;
    Clock::time_point keep_until;
    Listener listener;
  };

  void run();
  // One stream from connect to its end: true when it ended because nothing is left to keep
  // alive (or the keeper stops), false when it broke (the next endpoint is tried).
  bool follow_stream();
  // The batched alternative, with the same meaning of the result.
  bool send_batches();
  // The leases due now (not in `in_flight`); `next_wake` becomes when the next one is due.
  // nullopt when nothing is left to keep alive or the keeper stops. Takes the mutex.
  std::optional<std::vector<std::int64_t>> due_leases(
      const std::map<std::int64_t, Clock::time_point>& in_flight, Clock::time_point& next_wake);
  // Handles one answer line; returns an error text when the stream reported a failure.
  std::string handle_answer(const nlohmann::json& message,
                            std::map<std::int64_t, Clock::time_point>& in_flight);
  // Sends padding until the gateway answers the stream's head (see lease_keeper.cpp). False when
  // the keeper stops meanwhile; throws when the stream broke or never started answering.
  bool prime(StreamSession& session, std::map<std::int64_t, Clock::time_point>& in_flight);
  // Takes what arrived on the stream (waiting until `until`); throws when it broke.
  void take_answers(StreamSession& session, Clock::time_point until,
                    std::map<std::int64_t, Clock::time_point>& in_flight);
  // Sends the due leases, checks for leases etcd did not answer; false when nothing is left.
  bool keep_alive_due(StreamSession& session, std::map<std::int64_t, Clock::time_point>& in_flight,
                      Clock::time_point& next_wake);

  Client client_;
  const bool batched_;
  // After a server would not answer a stream, batches are used until then.
  Clock::time_point batched_until_;
  int priming_failures_ = 0;  // streams in a row that never started answering
  std::mutex mutex_;          // guards everything below
  std::condition_variable wake_;
  bool stopping_ = false;
  std::map<std::int64_t, Entry> leases_;
  StreamSession* session_ = nullptr;  // the stream's, to wake it
  std::mutex listener_mutex_;         // held while a listener runs
  std::thread thread_;
};

}  // namespace micro::etcd
