// etcd_client.hpp — a small etcd v3 client over the JSON gateway (HTTP/1.1 or HTTPS, Boost.Beast).
//
// Debian ships no C++ etcd client, so the registry talks to etcd's grpc-gateway: JSON bodies
// POSTed to /v3/..., keys and values base64-encoded, int64 fields as decimal strings. Every
// call is synchronous and bounded by a deadline; each connection owns a private io_context
// so that nothing here ever runs on the runtime's I/O threads.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <nlohmann/json.hpp>

namespace micro::etcd {

std::string base64_encode(std::string_view bytes);
// Throws std::invalid_argument on characters outside the standard alphabet.
std::string base64_decode(std::string_view text);

// The end of the key range holding every key that starts with `prefix` (etcd's range_end).
std::string prefix_range_end(std::string_view prefix);

// etcd's int64 fields arrive as JSON strings ("42"); absent fields mean 0.
std::int64_t json_int64(const nlohmann::json& object, const char* field);

struct EndpointAddress {
  std::string host;
  std::string port;
  bool https = false;  // written as https://host:port
  std::string text() const { return host + ":" + port; }
};

// Parses "127.0.0.1:2379,10.0.0.2:2379" (an optional http:// or https:// per endpoint is
// accepted). Throws micro::Exception (400) naming the bad part.
std::vector<EndpointAddress> parse_endpoints(std::string_view address);

// A transport failure (connect, write, read, timeout, or a member saying it cannot serve):
// the call may be retried on another endpoint.
class TransportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// etcd answered with an error it means (lease not found, permission denied, …).
class EtcdError : public std::runtime_error {
 public:
  EtcdError(int grpc_code, const std::string& message)
      : std::runtime_error(message), grpc_code_(grpc_code) {}
  int grpc_code() const noexcept { return grpc_code_; }

 private:
  int grpc_code_;
};

// One HTTP/1.1 keep-alive connection to one endpoint, with its own io_context so every
// operation can be bounded by a timeout; over TLS when given a TLS context (shared, read-only).
// Not thread-safe except cancel().
class HttpConnection {
 public:
  explicit HttpConnection(std::size_t endpoint_index,
                          std::shared_ptr<boost::asio::ssl::context> tls = nullptr);
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  std::size_t endpoint_index() const noexcept { return endpoint_index_; }

  void connect(const EndpointAddress& endpoint, std::chrono::milliseconds timeout);
  // Sends `request` and reads the whole response.
  boost::beast::http::response<boost::beast::http::string_body> round_trip(
      boost::beast::http::request<boost::beast::http::string_body>& request,
      std::chrono::milliseconds timeout);

  // Streaming: sends `request`, reads the response header, then hands every body byte to
  // `on_data` as it arrives until the response ends, the connection drops or cancel() is
  // called. Returns the HTTP status; throws TransportError when the connection failed.
  unsigned stream(boost::beast::http::request<boost::beast::http::string_body>& request,
                  std::chrono::milliseconds header_timeout,
                  const std::function<void(std::string_view)>& on_data);

  // Full duplex over one request whose chunked body stays open (the lease keep-alive stream).
  // All of these run on the caller's thread, which owns the connection.
  //
  // Sends the request line and headers, announcing a chunked body (bounded by `timeout`).
  void begin_chunked_request(boost::beast::http::request<boost::beast::http::empty_body>& request,
                             std::chrono::milliseconds timeout);
  // Sends one chunk of the body; an empty `data` ends the body. Bounded by `timeout`.
  void send_chunk(std::string_view data, std::chrono::milliseconds timeout);
  // Starts reading the response in the background: `on_header(status)` once, then `on_data`
  // for every body byte, then `on_end(why)` once when the response or the connection ended.
  // The callbacks run inside send_chunk() and run_for().
  void start_reading_response(std::function<void(unsigned)> on_header,
                              std::function<void(std::string_view)> on_data,
                              std::function<void(const std::string&)> on_end);
  // Runs the connection's handlers until `timeout` passed or wake() was called (0: only those
  // ready now).
  void run_for(std::chrono::milliseconds timeout);
  // From any thread: makes a run_for() in progress return.
  void wake();

  // From any thread: makes a blocking stream()/round_trip() return soon.
  void cancel();

 private:
  // Runs the private io_context until `done` is set by a completion handler.
  void run_until(const bool& done);
  // Starts `initiate(stream, handler)` on whichever stream this connection uses (plain or TLS)
  // and runs the loop until it completes: the one code path for both kinds of connection.
  template <class Initiate>
  boost::beast::error_code complete(Initiate&& initiate) {
    bool done = false;
    boost::beast::error_code result;
    auto on_done = [&](boost::beast::error_code error, auto&&...) {
      result = error;
      done = true;
    };
    with_stream([&](auto& stream) { initiate(stream, on_done); });
    run_until(done);
    return result;
  }
  // Sends a whole request (bounded by `timeout`); the first half of round_trip() and stream().
  void write_request(boost::beast::http::request<boost::beast::http::string_body>& request,
                     std::chrono::milliseconds timeout);
  // Reads the next piece of the duplex response (re-armed by its own handler).
  void read_response_piece();
  // TLS handshake (within the connect timeout), checking the certificate names `endpoint`.
  void handshake(const EndpointAddress& endpoint);
  // The TCP layer (under TLS or not): timeouts and closing act on it.
  boost::beast::tcp_stream& tcp() { return tls_stream_ ? tls_stream_->next_layer() : stream_; }
  // Calls `operation` with whichever stream this connection reads and writes.
  template <class Operation>
  void with_stream(Operation&& operation) {
    if (tls_stream_) {
      operation(*tls_stream_);
    } else {
      operation(stream_);
    }
  }

  std::size_t endpoint_index_;
  boost::asio::io_context io_context_;
  // Set by cancel(): the close it posts finds no socket while the connection is still being
  // made, so connect() checks this once the socket is open.
  std::atomic<bool> cancelled_{false};
  std::shared_ptr<boost::asio::ssl::context> tls_;
  boost::beast::tcp_stream stream_{io_context_};  // plain HTTP only
  std::unique_ptr<boost::beast::ssl_stream<boost::beast::tcp_stream>> tls_stream_;
  boost::beast::flat_buffer buffer_;

  // The duplex response being read, and what to tell about it.
  struct DuplexReader {
    boost::beast::http::response_parser<boost::beast::http::string_body> parser;
    std::function<void(unsigned)> on_header;
    std::function<void(std::string_view)> on_data;
    std::function<void(const std::string&)> on_end;
    // The parser keeps a reference to its chunk callback: it lives here.
    std::function<std::size_t(std::uint64_t, boost::beast::string_view, boost::beast::error_code&)>
        on_chunk;
    bool header_told = false;
    bool ended = false;
  };
  std::unique_ptr<DuplexReader> duplex_;
  bool woken_ = false;  // set by wake(), cleared by run_for()
};

struct ClientOptions {
  std::vector<EndpointAddress> endpoints;
  std::chrono::milliseconds dial_timeout{std::chrono::seconds(5)};
  std::chrono::milliseconds request_timeout{std::chrono::seconds(5)};
  std::string username;
  std::string password;
  // HTTPS for every endpoint when set: peer verification, CA and client certificate loaded.
  std::shared_ptr<boost::asio::ssl::context> tls;
};

// The TLS settings behind the tls/tls_ca/tls_cert/tls_key options.
struct TlsFiles {
  std::string ca;    // "" → the system's CA store
  std::string cert;  // client certificate chain (PEM), with key
  std::string key;   // its private key (PEM)
};
// A client TLS context that verifies the server against `files.ca` and presents the client
// certificate when given. Throws micro::Exception (400) naming the file that cannot be used.
std::shared_ptr<boost::asio::ssl::context> make_tls_context(const TlsFiles& files);

// Calls etcd's gateway with failover: a call goes to the preferred endpoint; when that one
// does not answer (or has no leader) the next endpoint becomes preferred and the call is
// retried there, until request_timeout passes. Thread-safe; idle connections are pooled.
class Client {
 public:
  explicit Client(ClientOptions options);

  // POSTs `body` to `path` ("/v3/kv/range") and returns the parsed JSON answer.
  // Throws micro::Exception 503 when no endpoint answered in time, EtcdError otherwise.
  nlohmann::json call(std::string_view path, const nlohmann::json& body);
  // Same, returning the raw body (streamed answers hold one JSON object per line).
  // `own_connection`, when given, is a connection the caller keeps across calls (the
  // keep-alive sender uses one) instead of one from the pool.
  std::string call_raw(std::string_view path, const std::string& body,
                       std::unique_ptr<HttpConnection>* own_connection = nullptr);

  // A request carrying the auth token (if any), for streaming calls made by the caller.
  boost::beast::http::request<boost::beast::http::string_body> make_request(
      std::string_view path, std::string body, const EndpointAddress& endpoint);
  // The same without a body: the header of a request whose body follows in chunks.
  boost::beast::http::request<boost::beast::http::empty_body> make_chunked_request(
      std::string_view path, const EndpointAddress& endpoint);
  // Refreshes the auth token after etcd rejected it (no-op without a username).
  void authenticate();

  const ClientOptions& options() const noexcept { return options_; }
  std::size_t preferred_endpoint() const noexcept { return preferred_.load(); }
  // Moves the preference past `failed` (only if nobody moved it already).
  void endpoint_failed(std::size_t failed);

 private:
  std::unique_ptr<HttpConnection> take_connection(std::size_t endpoint,
                                                  std::chrono::milliseconds timeout);
  void return_connection(std::unique_ptr<HttpConnection> connection);
  std::string token();

  ClientOptions options_;
  std::atomic<std::size_t> preferred_{0};
  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<HttpConnection>> idle_;
  std::mutex token_mutex_;
  std::string token_;
  bool token_valid_ = false;
};

// Splits a streamed body into its JSON messages (the gateway ends each with a newline).
// Consumes whole lines from `pending`, leaving an incomplete tail in place.
std::vector<nlohmann::json> take_json_lines(std::string& pending);

}  // namespace micro::etcd
