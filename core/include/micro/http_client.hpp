// micro/http_client.hpp — the one HTTP/1.1 client of micro-cpp (Boost.Beast, OpenSSL), for
// plugins and services: etcd's registry, the OTLP exporter, the http transport, the gateway.
//
// - URLs: http:// and https://, parsed once into a Url (errors are 400s naming the bad part).
// - One keep-alive pool per Client and origin (scheme, host, port): idle connections are reused;
//   one the peer closed meanwhile is replaced, once, without the caller seeing it.
// - TLS: a CA file or the system store, a client certificate and key, SNI, host-name check.
// - Deadlines cover connecting, writing and reading; a deadline that passes is a 408.
// - Streaming both ways: a response body read piece by piece; a request body sent in chunks while
//   the response is read (full duplex).
// - Errors are micro::Exception: 503 naming host:port and what failed, 408 for a deadline, 400
//   for a request that cannot be sent.
//
// Threading contract: the core (Client, Stream) is asynchronous on the executor it is given (the
// runtime's I/O threads); every async operation takes its completion token last, Asio style, and
// completes with `void(std::exception_ptr, T)` (callbacks, use_future and use_awaitable all
// work; the latter two rethrow the error). A Client may be used from any thread. Completions run
// on the token's associated executor, by default the client's. BlockingClient puts a Client on a
// private I/O thread for callers with threads of their own (blocking calls must not run on that
// thread, i.e. not inside a completion of its Client).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

namespace micro::http {

using Clock = std::chrono::steady_clock;
inline constexpr Clock::time_point no_deadline = Clock::time_point::max();

// ---- URLs --------------------------------------------------------------------------------------

struct Url {
  bool https = false;
  std::string host;          // without the brackets of an IPv6 address
  std::string port;          // "80" or "443" when the URL names none
  std::string target = "/";  // path and query

  // "host:port" ("[::1]:4318" for IPv6): the Host header, and how messages name a peer.
  std::string authority() const;
  // "https://host:port": what the pool keys connections by.
  std::string origin() const;
  // The whole URL again.
  std::string text() const { return origin() + target; }
};

// Parses "http://host[:port][/target]" or "https://…". Throws micro::Exception (400, id
// "micro.http") naming the part that is wrong: the scheme, the host, the port.
Url parse_url(std::string_view text);
// The same without the exception: nullopt, and what is wrong in `problem` ("port \"x\" is not a
// number from 1 to 65535"), for callers that put the problem into messages of their own.
std::optional<Url> try_parse_url(std::string_view text, std::string* problem = nullptr);

// ---- TLS ---------------------------------------------------------------------------------------

struct TlsOptions {
  std::string ca_file;  // PEM bundle the server certificate must chain to; "" → the system store
  std::string cert_file;  // client certificate chain (PEM), with key_file
  std::string key_file;   // its private key (PEM)
  // How messages name each file: the option or variable the user set it with.
  std::string ca_name = "tls_ca";
  std::string cert_name = "tls_cert";
  std::string key_name = "tls_key";
};

// A client TLS configuration, immutable once made; share one between clients.
class TlsContext;

// Loads the files (the server is always verified; SNI and the host-name check follow each URL's
// host). Throws micro::Exception (400) naming the file that cannot be used and why.
std::shared_ptr<const TlsContext> make_tls_context(const TlsOptions& options);

// ---- Messages ----------------------------------------------------------------------------------

struct Field {
  std::string name;
  std::string value;
};
using Fields = std::vector<Field>;

// The value of the first field named `name` (case-insensitive), "" when there is none.
std::string_view find_field(const Fields& fields, std::string_view name);

struct Request {
  std::string method = "POST";
  Url url;         // where to, and the target (path and query)
  Fields headers;  // Host, Content-Length and Transfer-Encoding are set by the client
  std::string body;
};

struct Response {
  int status = 0;
  std::string reason;
  Fields headers;
  std::string body;  // empty for a streamed response: its body is read with Stream
  bool keep_alive = true;

  std::string_view header(std::string_view name) const { return find_field(headers, name); }
};

// Ends the operations it is given to, from any thread: they fail with a 503 saying they were
// cancelled. A cancel() before an operation starts ends it as soon as it starts.
class Cancellation {
 public:
  void cancel();
  bool cancelled() const;

  // For the client: runs `hook` on cancel() (at once if cancelled already).
  void on_cancel(std::function<void()> hook);

 private:
  mutable std::mutex mutex_;
  bool cancelled_ = false;
  std::vector<std::function<void()>> hooks_;
};

struct RequestOptions {
  // Connecting, sending the request and reading the response (a round trip) or its head (a
  // stream) must end by then.
  Clock::time_point deadline = no_deadline;
  // When not zero, a new connection must be made (resolved, connected, TLS) within this too;
  // when it is that bound that runs out, the error is a 503 (the peer is unreachable), not a 408.
  std::chrono::milliseconds connect_timeout{0};
  std::shared_ptr<Cancellation> cancellation;
  std::size_t body_limit = 64 * 1024 * 1024;  // round trips: a longer body is refused (413)
};

struct ClientOptions {
  // For https URLs; nullptr: the system CA store (loaded on first use).
  std::shared_ptr<const TlsContext> tls;
  std::size_t max_idle_per_origin = 8;
  std::string user_agent = "micro-cpp";
  // When not empty, the transport name the pool's connections are listed under in
  // micro::connection_table() (the admin endpoint's /connections), as http::ServerOptions'
  // connection_table_name does for a server; "" (etcd, OTLP, the gateway): not listed.
  std::string connection_table_name;
};

// Counts for tests and diagnostics.
struct ClientStatistics {
  std::uint64_t connections_opened = 0;
  std::uint64_t connections_reused = 0;  // a request sent on a kept-alive connection
  std::uint64_t stale_replaced = 0;      // kept-alive connections found dead and replaced
  std::uint64_t connections_open = 0;    // connections alive now (in use or idle in the pool)
};

namespace detail {
struct StreamState;
struct Pool;

// Starts `start(callback)` for any completion token: the callback, called once from any thread,
// completes the token's handler on its associated executor (`fallback` when it has none).
template <class Signature, class Token, class Start>
auto initiate(const boost::asio::any_io_executor& fallback, Token&& token, Start&& start) {
  return boost::asio::async_initiate<Token, Signature>(
      [fallback](auto handler, auto start) {
        // std::function needs a copyable callable; Asio handlers may be move-only.
        auto shared = std::make_shared<decltype(handler)>(std::move(handler));
        auto executor = boost::asio::get_associated_executor(*shared, fallback);
        start([shared, executor](auto&&... results) {
          boost::asio::dispatch(
              executor, [shared, ... results = std::forward<decltype(results)>(results)]() mutable {
                std::move (*shared)(std::move(results)...);
              });
        });
      },
      token, std::forward<Start>(start));
}
}  // namespace detail

// ---- Streams -----------------------------------------------------------------------------------

// One exchange whose bodies stream: made by Client::async_open (request body sent whole) or
// Client::async_open_duplex (request body sent in chunks while the response is read). One read
// and one write may be outstanding at a time. Dropping the last reference cancels the exchange;
// a response read to its end gives the connection back to the pool.
class Stream {
 public:
  using HeadCallback = std::function<void(std::exception_ptr, Response)>;
  using DataCallback = std::function<void(std::exception_ptr, std::string)>;
  using DoneCallback = std::function<void(std::exception_ptr)>;

  explicit Stream(std::shared_ptr<detail::StreamState> state);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Reads the response's status and headers: void(std::exception_ptr, Response).
  template <class Token>
  auto async_read_head(Clock::time_point deadline, Token&& token) {
    return detail::initiate<void(std::exception_ptr, Response)>(
        executor(), token, [this, deadline](HeadCallback done) { read_head(deadline, done); });
  }
  // Reads the next piece of the response body: void(std::exception_ptr, std::string); an empty
  // piece means the body ended. A deadline that passes ends the stream (408).
  template <class Token>
  auto async_read_some(Clock::time_point deadline, Token&& token) {
    return detail::initiate<void(std::exception_ptr, std::string)>(
        executor(), token, [this, deadline](DataCallback done) { read_some(deadline, done); });
  }
  // Duplex only: sends `data` as one chunk of the request body: void(std::exception_ptr).
  template <class Token>
  auto async_write(std::string data, Clock::time_point deadline, Token&& token) {
    return detail::initiate<void(std::exception_ptr)>(
        executor(), token, [this, data = std::move(data), deadline](DoneCallback done) mutable {
          write(std::move(data), deadline, done);
        });
  }
  // Duplex only: ends the request body: void(std::exception_ptr).
  template <class Token>
  auto async_finish(Clock::time_point deadline, Token&& token) {
    return detail::initiate<void(std::exception_ptr)>(
        executor(), token, [this, deadline](DoneCallback done) { finish(deadline, done); });
  }

  // From any thread: ends the exchange; outstanding operations fail with a 503 "cancelled".
  void cancel();

  // "POST https://host:port/target", for messages.
  const std::string& description() const;

 private:
  boost::asio::any_io_executor executor() const;
  void read_head(Clock::time_point deadline, HeadCallback done);
  void read_some(Clock::time_point deadline, DataCallback done);
  void write(std::string data, Clock::time_point deadline, DoneCallback done);
  void finish(Clock::time_point deadline, DoneCallback done);

  std::shared_ptr<detail::StreamState> state_;
};

// ---- Client ------------------------------------------------------------------------------------

class Client {
 public:
  using ResponseCallback = std::function<void(std::exception_ptr, Response)>;
  using StreamCallback = std::function<void(std::exception_ptr, std::shared_ptr<Stream>)>;

  explicit Client(boost::asio::any_io_executor executor, ClientOptions options = {});
  // Closes idle connections and cancels the exchanges still going (their handlers still run,
  // with a 503 "cancelled").
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends `request` and reads the whole response: void(std::exception_ptr, Response).
  // A non-2xx status is a Response, not an error.
  template <class Token>
  auto async_request(Request request, const RequestOptions& options, Token&& token) {
    return detail::initiate<void(std::exception_ptr, Response)>(
        executor_, token,
        [this, request = std::move(request), options](ResponseCallback done) mutable {
          request_erased(std::move(request), options, std::move(done));
        });
  }

  // Sends `request` whole and hands back the exchange, for reading a streamed response:
  // void(std::exception_ptr, std::shared_ptr<Stream>).
  template <class Token>
  auto async_open(Request request, const RequestOptions& options, Token&& token) {
    return detail::initiate<void(std::exception_ptr, std::shared_ptr<Stream>)>(
        executor_, token,
        [this, request = std::move(request), options](StreamCallback done) mutable {
          open_erased(std::move(request), options, false, std::move(done));
        });
  }

  // Sends the head of `request` announcing a chunked body (and `request.body`, when not empty,
  // as its first chunk); the body stays open for Stream::async_write until async_finish.
  template <class Token>
  auto async_open_duplex(Request request, const RequestOptions& options, Token&& token) {
    return detail::initiate<void(std::exception_ptr, std::shared_ptr<Stream>)>(
        executor_, token,
        [this, request = std::move(request), options](StreamCallback done) mutable {
          open_erased(std::move(request), options, true, std::move(done));
        });
  }

  const boost::asio::any_io_executor& executor() const noexcept { return executor_; }
  ClientStatistics statistics() const;

 private:
  // The type-erased core behind the templates.
  void request_erased(Request request, RequestOptions options, ResponseCallback done);
  void open_erased(Request request, RequestOptions options, bool duplex, StreamCallback done);

  boost::asio::any_io_executor executor_;
  std::shared_ptr<detail::Pool> pool_;
};

// ---- Blocking convenience ----------------------------------------------------------------------

// A Client on a private I/O thread, for callers that block on their own threads (etcd's registry,
// the OTLP exporter's worker). Streams it opens are the Client's; wait on them with
// boost::asio::use_future (e.g. stream->async_read_some(deadline, use_future).get()).
class BlockingClient {
 public:
  explicit BlockingClient(ClientOptions options = {});
  // Cancels what is still going (as ~Client), then joins the thread.
  ~BlockingClient();
  BlockingClient(const BlockingClient&) = delete;
  BlockingClient& operator=(const BlockingClient&) = delete;

  // Round trip; throws micro::Exception.
  Response request(Request request, const RequestOptions& options = {});
  std::shared_ptr<Stream> open(Request request, const RequestOptions& options = {});
  std::shared_ptr<Stream> open_duplex(Request request, const RequestOptions& options = {});

  Client& client() noexcept { return *client_; }
  ClientStatistics statistics() const { return client_->statistics(); }

 private:
  boost::asio::io_context io_context_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::unique_ptr<Client> client_;
  std::thread thread_;
};

}  // namespace micro::http
