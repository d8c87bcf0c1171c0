// plugins/tcp/client.hpp — the calling side of the tcp transport: a pool of multiplexed
// connections per node address.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <micro/transport.hpp>

#include "common.hpp"

namespace micro::tcp {

class ClientConnection;

// One call on its way. The frame is encoded on the connection's strand, into a buffer the
// connection reuses; the call holds its share of the request until then. Its id is unique per
// transport, so the call can move to another connection of the pool if its first one closed.
struct OutgoingCall {
  std::uint64_t request_id = 0;
  std::shared_ptr<const Request> request;
  std::uint64_t timeout_nanoseconds = 0;
  std::string frame;  // empty until encoded
  ResponseHandler done;
  std::optional<Context::Clock::time_point> deadline;
  bool resubmitted = false;
};

// The connections of one transport, `pool_size` per address, used round-robin.
class ClientPools : public std::enable_shared_from_this<ClientPools> {
 public:
  ClientPools(IoExecutor executor, std::shared_ptr<const Settings> settings)
      : executor_(executor), settings_(std::move(settings)) {}

  // A connection to `address` (it connects on its first call), or nullptr with `problem` set when
  // the address is not host:port.
  std::shared_ptr<ClientConnection> pick(std::string_view address, std::string& problem);
  std::uint64_t next_request_id() noexcept {
    return next_request_id_.fetch_add(1, std::memory_order_relaxed);
  }
  // Closes every connection; their pending calls complete with 503.
  void close_all();

 private:
  struct Pool {
    std::vector<std::shared_ptr<ClientConnection>> connections;
    std::size_t next = 0;
  };

  IoExecutor executor_;
  std::shared_ptr<const Settings> settings_;
  std::atomic<std::uint64_t> next_request_id_{1};
  std::mutex mutex_;  // guards `pools_`; never held across I/O
  std::map<std::string, Pool, std::less<>> pools_;
};

// Queues `call` on `connection` (any thread).
void submit_call(const std::shared_ptr<ClientConnection>& connection, OutgoingCall call);

// Opens a stream with id `stream_id` on `connection` (any thread); `done` runs on the
// connection's strand, never inside this call.
void submit_stream(const std::shared_ptr<ClientConnection>& connection, std::uint64_t stream_id,
                   std::shared_ptr<const Request> head, std::uint64_t timeout_nanoseconds,
                   std::uint32_t stream_window, OpenStreamHandler done);

}  // namespace micro::tcp
