// micro/http_server.hpp — the one HTTP/1.1 server of micro-cpp (Boost.Beast), for the http
// transport, the `micro api` gateway and the operator endpoints that come after them.
//
// - Persistent connections (HTTP/1.1 keep-alive; HTTP/1.0 closes unless asked), pipelined
//   requests answered in the order they arrived.
// - Limits enforced before allocating: a head larger than header_limit is a 431, a declared or
//   chunked body larger than body_limit a 413 (from the Content-Length or the chunk size, while
//   the body is still unsent), both answered and the connection closed without reading the
//   rest. Slow senders are bounded: the head must arrive within header_timeout and
//   the body within body_timeout of it; an idle kept-alive connection closes after idle_timeout.
// - Answers are complete (Exchange::respond, Content-Length) or streamed
//   (Exchange::respond_streaming: chunked, written as it comes, bounded per stream by
//   stream_buffer_limit); a pipelined answer behind a stream waits for its last chunk.
// - Malformed requests get a 400 naming what the parser refused, then the connection closes.
// - The server's own answers (400, 408, 413, 431, and a 500 for a handler that throws) are
//   formatted by ServerOptions::refusal, so each user answers in its own error format.
// - A client that closes its side (EOF) is taken as gone, as Go's net/http does: its unanswered
//   exchanges are abandoned.
//
// Threading contract: connections run on strands of the executor the server is given (an
// io_context's, i.e. the runtime's I/O threads); the handler is called on a connection's strand
// for each request and may answer from any thread, at any later time, exactly once. Answering
// inline, on that strand, costs no thread hop; answers given on other threads are posted to it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <boost/asio/any_io_executor.hpp>

#include <micro/http_client.hpp>  // Field, Fields, find_field

namespace micro::http {

// One request as it arrived: header names keep their case, duplicates stay separate entries.
struct ServerRequest {
  std::string method;
  std::string target;
  unsigned version = 11;  // 10 or 11
  Fields headers;
  std::string body;
  std::string remote;  // the peer, "host:port"
  std::string local;   // this end of the connection, "host:port"
  bool keep_alive = true;
  std::chrono::steady_clock::time_point received;  // when its head was complete

  // The first field named `name` (case-insensitive), "" when absent.
  std::string_view header(std::string_view name) const { return find_field(headers, name); }
  // Every field named `name` joined with "," (RFC 9110 §5.3 list combining), "" when absent.
  std::string joined_header(std::string_view name) const;
  // How many fields are named `name` (W3C Trace Context drops a duplicated traceparent).
  std::size_t count_header(std::string_view name) const;
};

struct ServerResponse {
  int status = 200;
  // The server sets Content-Length, Connection, Date and Server (any given are dropped), and
  // drops fields HTTP cannot carry (a name that is no token, a value with control characters).
  Fields headers;
  std::string body;
};

struct ServerOptions {
  std::size_t header_limit = 16 * 1024;      // request line and headers, bytes
  std::size_t body_limit = 4 * 1024 * 1024;  // bytes; a larger body is refused with 413
  std::chrono::milliseconds header_timeout{std::chrono::seconds(10)};
  std::chrono::milliseconds body_timeout{std::chrono::seconds(30)};
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(60)};
  // An answer must be taken by the client within this, or the connection is closed.
  std::chrono::milliseconds write_timeout{std::chrono::seconds(30)};
  // A streamed answer's bytes written but not yet taken by the client, per stream: a write past
  // it is refused (ResponseWriter::write returns false), so a slow reader costs no more.
  std::size_t stream_buffer_limit = 1024 * 1024;
  std::size_t max_connections = 10000;      // further connections are accepted and closed at once
  std::string server_header = "micro-cpp";  // the Server header; "" sends none
  // Formats the server's own answers: status 400, 408, 413, 431 (or 500 when the handler throws)
  // and a message saying what was wrong ("request body of 10485760 bytes exceeds the limit of
  // 4194304 bytes"). Empty: a text/plain body holding the message. Called on a connection's
  // strand; must not throw (a throw falls back to the text/plain answer).
  std::function<ServerResponse(int status, std::string message)> refusal;
  // The transport name its connections are listed under in micro::connection_table() (the
  // admin endpoint's /connections rows); "" (the admin server's own): not listed.
  std::string connection_table_name;
};

// A streamed answer's body, sent as it is written: chunked (Transfer-Encoding: chunked; the
// connection stays kept alive), or up to the close for an HTTP/1.0 client. The answers behind it
// on a pipelined connection wait until it finishes. Any thread; dropping the last share of an
// unfinished writer finishes it.
class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;
  // Queues `chunk` (empty ones are skipped). False, writing nothing, once the stream is
  // finished or abandoned, or when the chunk would take the bytes the client has not taken yet
  // past ServerOptions::stream_buffer_limit (a chunk is always taken when nothing is buffered):
  // wait for on_drained and write again, or give up.
  virtual bool write(std::string_view chunk) = 0;
  // Ends the body (the last chunk). False when finished or abandoned already.
  virtual bool finish() = 0;
  // Bytes written and not yet taken by the client.
  virtual std::size_t buffered() const = 0;
  // Neither finished nor abandoned.
  virtual bool open() const = 0;
  // Runs `hook` once when nothing is buffered any more (at once if nothing is), on the
  // connection's strand or the caller's thread. Not run when the stream is abandoned.
  virtual void on_drained(std::function<void()> hook) = 0;
};

using ResponseWriterPtr = std::shared_ptr<ResponseWriter>;

// One request being answered. The handler keeps a share for as long as it needs; that share
// keeps the connection. Dropping the last share unanswered makes the server answer 500 ("the
// request was dropped without an answer"), so the answers behind it are not held up. Answer or
// drop exchanges while the executor still exists.
class Exchange {
 public:
  virtual ~Exchange() = default;
  virtual const ServerRequest& request() const noexcept = 0;
  // The same, for moving parts out (the body, the headers) instead of copying them; the server
  // does not look at the request again once the handler has it.
  virtual ServerRequest& request() noexcept = 0;
  // Answers; only the first answer counts (false for later ones, and when the connection is gone
  // already). Any thread.
  virtual bool respond(ServerResponse&& response) = 0;
  // Answers with `head` (status and headers; its body is ignored) and a body streamed through
  // the writer returned. Counts as the answer: null when answered already or gone. Any thread.
  virtual ResponseWriterPtr respond_streaming(ServerResponse&& head) = 0;
  // Runs `hook` once when the connection goes away before the answer (a streamed one: its
  // last chunk) was written (at once if it
  // is gone already): the peer closed, a timeout, the server closed.
  virtual void on_abandoned(std::function<void()> hook) = 0;
};

using ExchangePtr = std::shared_ptr<Exchange>;
using RequestHandler = std::function<void(ExchangePtr exchange)>;

struct ServerStatistics {
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_open = 0;
  std::uint64_t requests = 0;             // handed to the handler
  std::uint64_t refused = 0;              // answered by the server itself: 400, 413, 431, timeouts
  std::uint64_t connections_refused = 0;  // closed at once: max_connections reached
};

class Server {
 public:
  Server(boost::asio::any_io_executor executor, ServerOptions options, RequestHandler handler);
  ~Server();  // close()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds "host:port" ("127.0.0.1:0" picks a free port) and starts accepting. Throws
  // micro::Exception naming the address and why it cannot be used: 400 when it is malformed,
  // 500 when it cannot be resolved or bound.
  void listen(std::string_view address);
  // The bound address, "host:port" with the real port.
  std::string address() const;
  // Stops accepting (asynchronously: a connection racing it may still be accepted and served);
  // open connections keep being served.
  void stop_accepting();
  // Stops reading requests, abandons the exchanges not yet answered, writes the answers already
  // given (bounded, about a second), then closes every connection. Returns at once; the
  // connections finish on the executor. Idempotent; the destructor calls it.
  void close();
  ServerStatistics statistics() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace micro::http
