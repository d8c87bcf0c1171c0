// http/stream.hpp — internal to libmicro's HTTP client: the state of one exchange (a request
// sent, its response being read) and the pool of idle kept-alive connections it returns to.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>

#include "connection.hpp"

namespace micro::http::detail {

namespace http = beast::http;

struct StreamState;

// Idle connections by origin, shared by a Client and the exchanges it started (which may end
// after the Client is gone: they hold the pool weakly).
struct Pool {
  Pool(asio::any_io_executor executor, ClientOptions options);

  // An idle connection to `url`'s origin that is still usable, or nullptr. Counts the dead ones
  // it throws away.
  std::shared_ptr<Connection> take(const Url& url);
  // A new, unconnected connection (throws 400 when the system CA store cannot be loaded).
  std::shared_ptr<Connection> make(const Url& url);
  // An idle connection whose last response was read to its end, kept alive.
  void give_back(std::shared_ptr<Connection> connection);
  // An exchange starting: close_all() ends it if it is still going then.
  void track(const std::shared_ptr<StreamState>& state);
  // Closes the idle connections and cancels the exchanges still going (the Client is gone).
  void close_all();

  asio::any_io_executor executor;
  ClientOptions options;
  std::atomic<std::uint64_t> opened{0}, reused{0}, stale_replaced{0};
  // Connections of this pool alive now; each holds it and counts itself out when it goes
  // (it may outlive the pool).
  std::shared_ptr<std::atomic<std::uint64_t>> live =
      std::make_shared<std::atomic<std::uint64_t>>(0);

 private:
  std::mutex mutex_;
  bool closed_ = false;
  std::map<std::string, std::vector<std::shared_ptr<Connection>>> idle_;
  std::vector<std::weak_ptr<StreamState>> exchanges_;
  std::shared_ptr<const TlsContext> system_tls_;  // made on the first https URL without one
};

// One exchange on one connection. Every member function runs on the connection's strand.
struct StreamState : std::enable_shared_from_this<StreamState> {
  StreamState(std::shared_ptr<Connection> connection, std::weak_ptr<Pool> pool,
              std::string description, bool duplex, bool reused, bool head_request);
  ~StreamState();

  void read_head(Clock::time_point deadline, Stream::HeadCallback done);
  void read_some(Clock::time_point deadline, Stream::DataCallback done);
  // Sends one chunk of a duplex request body (an empty `data` is the last chunk).
  void write(std::string data, Clock::time_point deadline, Stream::DoneCallback done);
  // The request has been sent in full (a whole body, or the last chunk).
  void request_sent();
  // Ends the exchange and closes the connection, unless it went back to the pool.
  void cancel();
  // A failure of `step`: closes the connection, remembers the cause.
  std::exception_ptr fail(Step step, const beast::error_code& error);
  // The same for a failure already described (connecting).
  std::exception_ptr fail(std::exception_ptr cause);

  // The connection's row in micro::connection_table(), when it has one: a request begins (in
  // flight until its response is read to its end or the exchange ends), bytes went either way.
  void call_started();
  void count_in(std::size_t bytes) const noexcept {
    if (record_) record_->add_in(bytes);
  }
  void count_out(std::size_t bytes) const noexcept {
    if (record_) record_->add_out(bytes);
  }

  // Whether nothing of a response arrived (a kept-alive connection closed before answering).
  bool nothing_received() const { return !parser.got_some(); }

  const Strand strand;
  std::shared_ptr<Connection> connection;  // null once given back to the pool
  std::weak_ptr<Pool> pool;
  const std::string description;  // "POST http://host:port/target"
  const bool duplex;
  const bool reused;  // sent on a kept-alive connection
  bool request_done = false;
  bool cancelled = false;
  beast::error_code last_error;  // why the exchange failed, if it did
  std::exception_ptr broken;     // the failure every later operation reports
  http::response_parser<http::buffer_body> parser;

 private:
  void read_piece(Clock::time_point deadline, Stream::DataCallback done);
  // Gives the connection back once both directions ended cleanly and the peer keeps it alive.
  void release_if_finished();

  // Ends the call counted on the record (once).
  void call_ended() noexcept;

  // The row of the connection this exchange runs on (kept when the connection goes back to
  // the pool, so the last bytes still count); in_call_ while the call is counted in flight.
  std::shared_ptr<ConnectionRecord> record_;
  bool in_call_ = false;
  std::string piece_;  // what a body read fills
  std::string chunk_;  // the chunk being written
};

}  // namespace micro::http::detail
