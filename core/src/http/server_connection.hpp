// http/server_connection.hpp — internal to libmicro's HTTP server: what a server's connections
// share, one exchange (a request and its answer), and one connection reading requests with a
// parser on Beast's basic_parser and writing the answers back in order.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <micro/connection_table.hpp>

#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/basic_parser.hpp>

#include <micro/http_server.hpp>

namespace micro::http::detail {

namespace asio = boost::asio;
namespace beast = boost::beast;

// Concrete executor types, not any_io_executor: I/O objects on a type-erased strand copy it to
// the heap on every operation; a strand over the io_context's executor is never erased.
using IoExecutor = asio::io_context::executor_type;
using ServerStrand = asio::strand<IoExecutor>;
using ServerSocket = asio::basic_stream_socket<asio::ip::tcp, ServerStrand>;
using ServerTimer = asio::basic_waitable_timer<Clock, asio::wait_traits<Clock>, ServerStrand>;

class ServerConnection;

// What every connection of one server shares; outlives the Server object while connections
// drain.
struct ServerState {
  ServerState(IoExecutor executor_, ServerOptions options_, RequestHandler handler_)
      : executor(executor_), options(std::move(options_)), handler(std::move(handler_)) {}

  IoExecutor executor;
  const ServerOptions options;
  const RequestHandler handler;
  std::atomic<bool> closed{false};
  std::atomic<std::uint64_t> accepted{0}, open{0}, requests{0}, refused{0}, connections_refused{0};

  std::mutex mutex;  // guards `connections`; never held across I/O
  std::unordered_map<ServerConnection*, std::weak_ptr<ServerConnection>> connections;

  // The answer the server gives itself: the user's refusal format, else text/plain.
  ServerResponse refusal(int status, std::string message) const;
};

// Reads one request into a ServerRequest with Beast's parser (limits, framing, chunks), keeping
// the header names as they came and nothing but what the request holds.
class RequestParser final : public beast::http::basic_parser<true> {
 public:
  RequestParser(ServerRequest& request, const ServerOptions& options);

  // A refusal of our own (the parser's grammar was fine): its status and message.
  int problem_status = 0;
  std::string problem;
  bool expects_continue = false;  // Expect: 100-continue

 private:
  void on_request_impl(beast::http::verb method, beast::string_view method_string,
                       beast::string_view target, int version, beast::error_code& error) override;
  void on_response_impl(int, beast::string_view, int, beast::error_code&) override {}
  void on_field_impl(beast::http::field name, beast::string_view name_string,
                     beast::string_view value, beast::error_code& error) override;
  void on_header_impl(beast::error_code& error) override;
  void on_body_init_impl(const boost::optional<std::uint64_t>& length,
                         beast::error_code& error) override;
  std::size_t on_body_impl(beast::string_view body, beast::error_code& error) override;
  void on_chunk_header_impl(std::uint64_t, beast::string_view, beast::error_code&) override {}
  std::size_t on_chunk_body_impl(std::uint64_t, beast::string_view body,
                                 beast::error_code& error) override;
  void on_finish_impl(beast::error_code&) override {}

  ServerRequest& request_;
  bool has_host_ = false;
  bool has_transfer_encoding_ = false;
};

// One request and its answer. The connection queues it in arrival order; the handler holds a
// share, and while it is unanswered that share is what keeps the connection (the queue holds it
// weakly), so nothing forms a cycle when an io_context is torn down with requests in flight.
// Members marked "strand" are touched only on the connection's strand.
class ServerExchange final : public Exchange, public std::enable_shared_from_this<ServerExchange> {
 public:
  ServerExchange() = default;
  // An exchange dropped unanswered tells its connection, which answers 500 in its place.
  ~ServerExchange() override;

  const ServerRequest& request() const noexcept override { return request_; }
  ServerRequest& request() noexcept override { return request_; }
  bool respond(ServerResponse&& response) override;
  ResponseWriterPtr respond_streaming(ServerResponse&& head) override;
  void on_abandoned(std::function<void()> hook) override;

  // A streamed answer's body, from any thread (ResponseWriter forwards here).
  bool stream_write(std::string_view chunk);
  bool stream_finish();
  std::size_t stream_buffered() const;
  bool stream_open() const;
  void stream_on_drained(std::function<void()> hook);
  // Strand: takes what was written since the last take into `stream_sending`, the last chunk
  // too once finished (then `stream_ended`).
  void stream_take();
  // Strand: `stream_sending` was written.
  void stream_sent();

  // Strand, before the handler sees it: the connection its answer goes to.
  void attach(std::shared_ptr<ServerConnection> connection) noexcept {
    connection_ = std::move(connection);
  }
  // Strand: the connection went before the answer was written; runs the hook once.
  void abandon();
  // Strand: the answer was written; the hook will never run.
  void written();
  bool abandoned() const noexcept { return abandoned_.load(std::memory_order_acquire); }
  // Marks an answer the server made itself (a refusal) as given.
  void answer_now(ServerResponse&& response);

  ServerRequest request_;
  ServerResponse response_;       // strand: the answer, once `ready`
  bool ready = false;             // strand
  bool closes = false;            // strand: the connection closes after this answer
  bool head_only = false;         // strand: a HEAD request, answered without the body
  std::size_t wire_end = 0;       // strand: where its head ends in the connection's write buffer
  bool body_apart = false;        // strand: its body goes out as a buffer of its own
  bool streaming = false;         // strand: answered with respond_streaming
  bool stream_head_sent = false;  // strand
  bool stream_ended = false;      // strand: the last chunk is taken; once written, done
  bool stream_chunked = true;     // set before the handler: false for HTTP/1.0 (raw to the close)
  bool stream_no_body = false;    // set before the handler: HEAD; set on answer: 204, 304
  std::size_t stream_limit = 0;   // set before the handler
  std::string stream_sending;     // strand: chunks being written

 private:
  std::shared_ptr<ServerConnection> connection_;  // until answered
  std::atomic<bool> answered_{false};
  std::atomic<bool> abandoned_{false};
  std::mutex hook_mutex_;
  std::function<void()> hook_;
  bool finished_ = false;  // under hook_mutex_: abandoned or written

  mutable std::mutex stream_mutex_;
  std::string stream_pending_;       // framed chunks written, not yet taken by the strand
  std::size_t stream_buffered_ = 0;  // payload bytes written, not yet taken by the client
  std::size_t stream_pending_payload_ = 0, stream_sending_payload_ = 0;
  bool stream_finished_ = false;  // finish() was called
  bool stream_kicked_ = false;    // a take is posted or due
  std::function<void()> drained_hook_;
  // A streamed answer keeps its connection until finished (the writer's share keeps it).
  std::shared_ptr<ServerConnection> stream_connection_;
  void kick(std::shared_ptr<ServerConnection> connection);
};

class ServerConnection final : public std::enable_shared_from_this<ServerConnection> {
 public:
  ServerConnection(std::shared_ptr<ServerState> state, ServerSocket socket);

  // Starts reading requests.
  void start();
  // Any thread: stop reading, abandon what is unanswered, write what is answered (bounded,
  // about a second), then close.
  void close_gracefully();

  const ServerStrand& strand() const noexcept { return strand_; }
  // Strand: an exchange's answer.
  void on_answer(ServerExchange& exchange, ServerResponse&& response);
  // Strand: an exchange's streamed answer begins.
  void on_stream_start(ServerExchange& exchange, ServerResponse&& head);
  // Strand: a streamed answer has more to write.
  void on_stream_data();
  // Strand: the exchange `key` was dropped by its handler without an answer.
  void on_dropped(const ServerExchange* key);

 private:
  // Requests read ahead while earlier ones are being answered; reading pauses beyond that.
  static constexpr std::size_t pipeline_depth = 16;
  // One place in the order of answers: an exchange with its handler (held weakly: the
  // handler's share keeps it), then, once answered, the exchange itself until written.
  struct Slot {
    const ServerExchange* key = nullptr;  // compared, never dereferenced
    std::weak_ptr<ServerExchange> waiting;
    std::shared_ptr<ServerExchange> ready;
    bool abandoned = false;  // by this connection: no answer will come
  };
  // A ring of the answers not yet written, oldest first (room for a refusal past the depth).
  struct Queue {
    std::array<Slot, pipeline_depth + 1> slots;
    std::size_t head = 0, count = 0;
    bool empty() const noexcept { return count == 0; }
    std::size_t size() const noexcept { return count; }
    Slot& front() noexcept { return slots[head]; }
    Slot& at(std::size_t i) noexcept { return slots[(head + i) % slots.size()]; }
    void push(Slot slot) {
      slots[(head + count) % slots.size()] = std::move(slot);
      ++count;
    }
    Slot pop() {
      Slot slot = std::move(slots[head]);
      slots[head] = {};
      head = (head + 1) % slots.size();
      --count;
      return slot;
    }
  };

  void read();
  void on_read(const beast::error_code& error, std::size_t size);
  void parse();
  void begin_request();
  void head_complete();
  void complete_request();
  void refuse_parse(const beast::error_code& error);
  void refuse(int status, std::string message);
  void read_failed(const beast::error_code& error);

  void flush();
  void on_write(const beast::error_code& error);
  void write_continue();
  // Closes once reading has stopped and nothing more can be written.
  void settle();
  void linger();
  void close_now();
  void abandon_unanswered();
  // Whether the oldest answer can never come (its exchange abandoned or dropped).
  bool front_is_dead();

  // One timer, re-armed only when a deadline comes earlier than the one it waits for: moving
  // a deadline later (every request on a busy connection) costs nothing.
  void update_read_deadline();
  void arm();
  void on_timer(const beast::error_code& error);
  void on_read_timeout();

  std::shared_ptr<ServerState> state_;
  const ServerOptions& options_;
  ServerStrand strand_;
  ServerSocket socket_;
  ServerTimer timer_;
  std::string remote_, local_;
  std::shared_ptr<ConnectionRecord> record_;  // strand; null when not listed

  beast::flat_buffer input_;
  std::shared_ptr<ServerExchange> parsing_;  // the request being read
  std::optional<RequestParser> parser_;
  Clock::time_point request_started_{}, head_done_at_{};
  bool head_done_ = false;
  std::size_t head_bytes_ = 0;  // of the head being read, taken by the parser so far
  Queue queue_;

  std::string wire_;  // heads and small bodies of the answers being written
  std::vector<asio::const_buffer> buffers_;
  std::vector<std::shared_ptr<ServerExchange>> in_write_;

  bool reading_ = false;
  bool writing_ = false;
  bool in_parse_ = false;      // answers given inline are flushed after the parse loop
  bool read_stopped_ = false;  // no further requests are read
  bool peer_gone_ = false;     // the client closed its side
  bool lingering_ = false;     // our side shut down; discarding input until the client closes
  bool closed_ = false;

  Clock::time_point read_deadline_ = Clock::time_point::max();
  Clock::time_point write_deadline_ = Clock::time_point::max();
  Clock::time_point close_deadline_ = Clock::time_point::max();  // lingering, closing
  Clock::time_point armed_for_ = Clock::time_point::max();
};

}  // namespace micro::http::detail
