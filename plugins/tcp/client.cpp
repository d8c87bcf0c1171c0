// plugins/tcp/client.cpp — client connections: connect with a timeout, many calls in flight
// matched to responses by request id, a deadline timer per call, and clear 503s when a
// connection cannot be made or is lost.
#include "client.hpp"

#include <unordered_map>

#include <boost/asio/connect.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/steady_timer.hpp>

#include "framed_connection.hpp"

namespace micro::tcp {

using asio::ip::tcp;

namespace {
std::string calls_pending(std::size_t count) {
  return std::to_string(count) + (count == 1 ? " call pending" : " calls pending");
}
}  // namespace

class ClientConnection final : public FramedConnection {
 public:
  ClientConnection(IoExecutor executor, std::string address, HostPort target,
                   std::shared_ptr<const Settings> settings, std::weak_ptr<ClientPools> pools)
      : FramedConnection(asio::make_strand(executor), FrameType::response, settings->max_frame),
        address_(std::move(address)),
        target_(std::move(target)),
        settings_(std::move(settings)),
        pools_(std::move(pools)),
        resolver_(strand_),
        connect_timer_(strand_) {}

  // False once the connection failed, closed, or the server announced it will close:
  // the pool then replaces it.
  bool usable() const noexcept { return usable_.load(std::memory_order_acquire); }

  void submit(OutgoingCall call) {
    asio::dispatch(strand_, [self = shared(), call = std::move(call)]() mutable {
      self->accept_call(std::move(call));
    });
  }

  // Any thread: closes and fails every pending call with 503.
  void close(std::string reason) {
    asio::dispatch(strand_, [self = shared(), reason = std::move(reason)] {
      self->closed_by_transport_ = true;
      self->shut("tcp: connection to " + self->address_ + " closed with " +
                 calls_pending(self->pending_.size()) + " (" + reason + ")");
    });
  }

 private:
  // idle until the first call arrives on the strand, so no call can land behind a connect
  // failure it did not see.
  enum class State { idle, connecting, open, closed };

  struct PendingCall {
    ResponseHandler done;
    std::optional<Timer> timer;  // armed only when the call has a deadline
  };

  std::shared_ptr<ClientConnection> shared() {
    return std::static_pointer_cast<ClientConnection>(shared_from_this());
  }

  void begin_connect() {
    state_ = State::connecting;
    connect_timer_.expires_after(settings_->connect_timeout);
    connect_timer_.async_wait([self = shared()](const boost::system::error_code& error) {
      self->on_connect_timeout(error);
    });
    boost::system::error_code error;
    auto ip = asio::ip::make_address(target_.host, error);
    if (!error) {
      socket_.async_connect(
          tcp::endpoint(ip, target_.port),
          [self = shared()](const boost::system::error_code& e) { self->on_connected(e); });
      return;
    }
    resolver_.async_resolve(
        target_.host, std::to_string(target_.port),
        [self = shared()](const boost::system::error_code& e, tcp::resolver::results_type results) {
          if (e) {
            self->on_connected(e);
            return;
          }
          asio::async_connect(self->socket_, results,
                              [self](const boost::system::error_code& e2, const tcp::endpoint&) {
                                self->on_connected(e2);
                              });
        });
  }

  void on_connect_timeout(const boost::system::error_code& error) {
    if (error || state_ != State::connecting) return;
    connect_timed_out_ = true;
    resolver_.cancel();
    boost::system::error_code ignored;
    socket_.close(ignored);  // completes the connect with operation_aborted
  }

  void on_connected(const boost::system::error_code& error) {
    if (state_ != State::connecting) return;
    connect_timer_.cancel();
    if (error) {
      std::string detail = connect_timed_out_
                               ? "tcp: connecting to " + address_ + " timed out after " +
                                     std::to_string(settings_->connect_timeout.count()) + "ms"
                               : "tcp: cannot connect to " + address_ + ": " + error.message();
      shut(detail);
      return;
    }
    if (settings_->nodelay) {
      boost::system::error_code ignored;
      socket_.set_option(tcp::no_delay(true), ignored);
    }
    state_ = State::open;
    was_open_ = true;
    start_reading();
    start_writing();
  }

  void accept_call(OutgoingCall call) {
    if (state_ == State::closed) {
      // A live connection that dropped between being picked and now: a fresh connection
      // of the pool can still carry the call, once. One that never connected reports why.
      auto pools = pools_.lock();
      if (pools && was_open_ && !closed_by_transport_ && !call.resubmitted) {
        call.resubmitted = true;
        std::string problem;
        if (auto other = pools->pick(address_, problem)) {
          other->submit(std::move(call));
          return;
        }
      }
      complete(call.done,
               unavailable(client_error_id, close_detail_.empty()
                                                ? "tcp: connection to " + address_ + " is closed"
                                                : close_detail_));
      return;
    }
    if (state_ == State::idle) begin_connect();
    auto [entry, inserted] = pending_.try_emplace(call.request_id);
    entry->second.done = std::move(call.done);
    if (call.deadline) {
      auto& timer = entry->second.timer.emplace(strand_, *call.deadline);
      timer.async_wait([self = shared(), id = call.request_id](const boost::system::error_code& e) {
        self->on_deadline(e, id);
      });
    }
    send_frame(std::move(call.frame));
  }

  void on_deadline(const boost::system::error_code& error, std::uint64_t request_id) {
    if (error) return;
    auto entry = pending_.find(request_id);
    if (entry == pending_.end()) return;  // answered meanwhile
    ResponseHandler done = std::move(entry->second.done);
    pending_.erase(entry);  // a late response for this id is ignored
    complete(done, timeout_error(client_error_id,
                                 "tcp: deadline passed waiting for the response "
                                 "from " +
                                     address_));
  }

  void on_frame(const FrameHeader& header, std::string_view frame) override {
    if (header.flags & flag_closing) usable_.store(false, std::memory_order_release);
    if (header.request_id == 0 && (header.flags & flag_closing)) {
      // The server refused the stream as a whole: every call here shares its answer.
      Response response;
      Error error = unavailable(client_error_id, "tcp: " + address_ + " closed the connection");
      if (!decode_response(frame, response) && response.error) error = *response.error;
      fail_all(error);
      close_socket();
      return;
    }
    auto entry = pending_.find(header.request_id);
    if (entry == pending_.end()) return;  // late: its deadline already completed it
    ResponseHandler done = std::move(entry->second.done);
    pending_.erase(entry);
    Response response;
    if (auto problem = decode_response(frame, response)) {
      complete(done, bad_request(client_error_id, "tcp: malformed response frame from " + address_ +
                                                      ": " + *problem));
      return;
    }
    try {
      done(std::move(response));
    } catch (...) {
      // A completion must not throw; swallowing keeps this connection's other calls going.
    }
  }

  void on_header_problem(const FrameHeader& header, const HeaderProblem& problem) override {
    if (problem.too_large) {
      auto entry = pending_.find(header.request_id);
      if (entry != pending_.end()) {
        ResponseHandler done = std::move(entry->second.done);
        pending_.erase(entry);
        complete(done, Error(client_error_id, 413,
                             "tcp: response from " + address_ + ": " + problem.what));
      }
      shut("tcp: connection to " + address_ + " closed with " + calls_pending(pending_.size()) +
           " after an oversize response");
      return;
    }
    fail_all(bad_request(client_error_id,
                         "tcp: malformed response frame from " + address_ + ": " + problem.what));
    close_socket();
  }

  void on_disconnect(const boost::system::error_code& error) override {
    std::string detail =
        "tcp: connection to " + address_ + " closed with " + calls_pending(pending_.size());
    if (error != asio::error::eof) detail += " (" + error.message() + ")";
    shut(detail);
  }

  void on_closed() override {
    usable_.store(false, std::memory_order_release);
    state_ = State::closed;
    connect_timer_.cancel();
    resolver_.cancel();
  }

  // Closes and completes every pending call with a 503 saying `detail`.
  void shut(const std::string& detail) {
    if (close_detail_.empty()) close_detail_ = detail;
    close_socket();
    fail_all(unavailable(client_error_id, detail));
  }

  void fail_all(const Error& error) {
    usable_.store(false, std::memory_order_release);
    auto calls = std::move(pending_);
    pending_.clear();
    for (auto& [id, call] : calls) complete(call.done, error);
  }

  static void complete(ResponseHandler& done, Error error) {
    try {
      done(Response::failure(std::move(error)));
    } catch (...) {
      // As in on_frame: a throwing completion must not take the connection down.
    }
  }

  std::string address_;
  HostPort target_;
  std::shared_ptr<const Settings> settings_;
  std::weak_ptr<ClientPools> pools_;
  Resolver resolver_;
  Timer connect_timer_;
  std::unordered_map<std::uint64_t, PendingCall> pending_;
  std::atomic<bool> usable_{true};
  State state_ = State::idle;
  std::string close_detail_;  // why it closed, for calls that arrive afterwards
  bool was_open_ = false;
  bool connect_timed_out_ = false;
  bool closed_by_transport_ = false;
};

std::shared_ptr<ClientConnection> ClientPools::pick(std::string_view address,
                                                    std::string& problem) {
  std::shared_ptr<ClientConnection> chosen;
  {
    std::lock_guard lock(mutex_);
    auto found = pools_.find(address);
    if (found == pools_.end()) {
      if (!split_address(address)) {
        problem = "tcp: cannot call \"" + std::string(address) + "\": expected host:port";
        return nullptr;
      }
      found = pools_.emplace(std::string(address), Pool{}).first;
      found->second.connections.resize(settings_->pool_size);
    }
    Pool& pool = found->second;
    auto& slot = pool.connections[pool.next++ % pool.connections.size()];
    if (!slot || !slot->usable()) {
      slot = std::make_shared<ClientConnection>(
          executor_, std::string(address), *split_address(address), settings_, weak_from_this());
    }
    chosen = slot;
  }
  return chosen;
}

void ClientPools::close_all() {
  std::map<std::string, Pool, std::less<>> pools;
  {
    std::lock_guard lock(mutex_);
    pools.swap(pools_);
  }
  for (auto& [address, pool] : pools)
    for (auto& connection : pool.connections)
      if (connection) connection->close("transport closed");
}

void submit_call(const std::shared_ptr<ClientConnection>& connection, OutgoingCall call) {
  connection->submit(std::move(call));
}

}  // namespace micro::tcp
