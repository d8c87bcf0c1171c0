// http/connection.hpp — internal to libmicro's HTTP client: the TLS context behind TlsContext,
// how failures become micro::Exceptions, and one connection (plain or TLS) on its own strand.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <micro/connection_table.hpp>
#include <micro/http_client.hpp>

namespace micro::http {

// The OpenSSL context, shared read-only by every connection made with it (SSL_new on a shared
// SSL_CTX is thread-safe; the streams need it non-const).
class TlsContext {
 public:
  TlsContext() : ssl(boost::asio::ssl::context::tls_client) {}
  mutable boost::asio::ssl::context ssl;
};

namespace detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
using Strand = asio::strand<asio::any_io_executor>;

constexpr const char* error_id = "micro.http";

// Which step of an exchange failed, for messages.
enum class Step { resolve, connect, handshake, write, read_head, read_body };

// A failure of `step` on the way to `authority` as an exception whose detail starts with
// `description` ("POST http://host:port/target"): 408 for a deadline, 503 otherwise ("cancelled"
// when `cancelled`). `extra` is appended to the cause (a certificate verification result).
std::exception_ptr failure(const std::string& description, Step step, const std::string& authority,
                           const beast::error_code& error, bool cancelled,
                           const std::string& extra = {});
// Any other failure with a code of its own (400 for a request that cannot be sent).
std::exception_ptr failure(const std::string& description, int code, const std::string& detail);

// One connection to one origin. Every operation runs on the connection's strand; the owner of an
// operation keeps the connection alive (shared_ptr) until it completes.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  using Done = std::function<void(std::exception_ptr)>;

  Connection(asio::any_io_executor executor, Url origin, std::shared_ptr<const TlsContext> tls);

  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Counts this connection in `live` until it is destroyed (the pool's open-connection gauge).
  void count_in(std::shared_ptr<std::atomic<std::uint64_t>> live);
  // Lists this connection in micro::connection_table() under `record` until it is destroyed;
  // its addresses are filled in once connected.
  void report_to(std::shared_ptr<ConnectionRecord> record) { record_ = std::move(record); }
  // The connection's row, or nullptr when it is not listed (exchanges count calls and bytes).
  const std::shared_ptr<ConnectionRecord>& record() const noexcept { return record_; }

  const Strand& strand() const noexcept { return strand_; }
  const Url& origin() const noexcept { return origin_; }

  // Resolves, connects and (https) shakes hands by `deadline`. `cancelled` says, when it fails,
  // whether that was a cancel().
  void async_connect(Clock::time_point deadline, std::string description,
                     std::function<bool()> cancelled, Done done);

  // Calls `operation` with the stream requests and responses go over (plain or TLS).
  template <class Operation>
  void with_stream(Operation&& operation) {
    if (tls_stream_) {
      operation(*tls_stream_);
    } else {
      operation(plain_);
    }
  }
  // The TCP layer: its expiry bounds the next read and write; closing it ends them.
  beast::tcp_stream& tcp() { return tls_stream_ ? tls_stream_->next_layer() : plain_; }
  beast::flat_buffer& buffer() noexcept { return buffer_; }

  // Sets the expiry of the operations started next (never for no_deadline).
  void expire_at(Clock::time_point deadline);
  // Whether an idle kept-alive connection can still be used: the peer has neither closed it nor
  // sent anything unasked for. Only for idle connections (no operation pending).
  bool usable();
  // Ends pending operations and the connection. On the strand, or while idle.
  void close();

 private:
  void connect_to(const asio::ip::tcp::resolver::results_type& addresses,
                  Clock::time_point deadline, std::string description,
                  std::function<bool()> cancelled, Done done);
  void handshake(Clock::time_point deadline, std::string description,
                 std::function<bool()> cancelled, Done done);

  Strand strand_;
  Url origin_;
  std::shared_ptr<std::atomic<std::uint64_t>> live_;
  std::shared_ptr<ConnectionRecord> record_;
  std::shared_ptr<const TlsContext> tls_;
  beast::tcp_stream plain_;  // plain http only
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls_stream_;
  asio::ip::tcp::resolver resolver_;
  asio::steady_timer resolve_timer_;  // the resolver has no expiry of its own
  beast::flat_buffer buffer_;
  bool open_ = false;
};

}  // namespace detail
}  // namespace micro::http
