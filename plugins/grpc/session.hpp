// plugins/grpc/session.hpp — one HTTP/2 connection driven by Asio: an nghttp2 session fed from
// the socket and flushed to it on the connection's strand, and the state of one gRPC call on
// it (H2Stream): outgoing message bytes pulled by nghttp2 within the peer's window, incoming
// bytes split into messages, the window we grant back as the reader takes them, the reader's
// inbox and the call's end. Everything but the end runs on the strand.
#pragma once

#include <nghttp2/nghttp2.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <boost/asio/defer.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/stream.hpp>

#include <micro/connection_table.hpp>
#include <micro/transport.hpp>

#include "wire.hpp"

namespace micro::grpc {

class H2Connection;

class H2Stream {
 protected:
  std::shared_ptr<H2Connection> connection_;

 public:
  H2Stream(std::shared_ptr<H2Connection> connection, std::uint32_t max_message)
      : connection_(std::move(connection)), deframer_(max_message) {}
  virtual ~H2Stream() = default;
  H2Stream(const H2Stream&) = delete;
  H2Stream& operator=(const H2Stream&) = delete;

  std::int32_t id = -1;

  // ---- outgoing (strand) ----
  std::string out;  // framed messages not yet taken by nghttp2
  std::size_t out_offset = 0;
  bool out_eof = false;                // nothing follows `out` (then trailers, on the server)
  bool deferred = false;               // nghttp2 waits for data: resume on the next write
  bool send_gzip = false;              // messages go out gzip-compressed (grpc-encoding: gzip)
  std::optional<HeaderList> trailers;  // sent once `out` is drained (server)
  std::function<void()> on_drained;    // the pending write, completed once `out` is taken

  // ---- incoming (strand) ----
  Deframer deframer_;
  std::deque<std::pair<std::string, std::size_t>> inbox;  // message, bytes it took on the wire
  std::size_t inbox_wire = 0;  // wire bytes in the inbox: the window not granted back yet
  std::size_t ungranted = 0;   // received, not yet granted back to the peer
  std::optional<StreamReadHandler> pending_read;
  bool peer_done = false;  // no more messages will come

  // Puts a received message in the inbox or hands it to the waiting read.
  void deliver_message(std::string message, std::size_t wire);
  // The application's read and write (strand).
  void do_read(StreamReadHandler done);
  // Queues a framed message; `done` runs when nghttp2 has taken it.
  void queue_write(std::string_view message, std::function<void()> done);
  // Grants back what is received but not waiting in the inbox (strand).
  void settle_window();

  // ---- the end (any thread) ----
  bool claim_end(Response status);
  bool is_ended() const;
  Response final_status() const;
  void add_on_end(ResponseHandler done);
  // Strand, after a claim: fails the pending write (unless `keep_pending_write`: a server's
  // final answer goes out after it), ends the pending read, runs on_end.
  void settle_end(bool keep_pending_write = false);

  const std::shared_ptr<H2Connection>& connection() const noexcept { return connection_; }

 private:
  mutable std::mutex end_mutex_;
  // The end, claimed once under end_mutex_ and mirrored here so the per-message checks
  // (is_ended) take no lock.
  std::atomic<bool> ended_flag_{false};
  bool ended_ = false;
  bool settled_ = false;
  Response status_;
  std::vector<ResponseHandler> on_end_;
};

using H2StreamPtr = std::shared_ptr<H2Stream>;

class H2Connection : public std::enable_shared_from_this<H2Connection> {
 public:
  H2Connection(Strand strand, Settings settings, bool server);
  virtual ~H2Connection();
  // Counts this connection in the transport's open connections until it is destroyed (once).
  void count_open();
  // Fills the row's peer and local addresses from the socket.
  void note_addresses();
  H2Connection(const H2Connection&) = delete;
  H2Connection& operator=(const H2Connection&) = delete;

  Strand& strand() noexcept { return strand_; }
  Socket& socket() noexcept { return socket_; }
  nghttp2_session* session() noexcept { return session_; }
  const Settings& settings() const noexcept { return settings_; }

  // Strand: creates the nghttp2 session, sends our SETTINGS, starts reading.
  void start();
  // Strand, before start(): the connection speaks TLS over its socket; `done` runs after the
  // handshake with an error, or none when the peer agreed to h2 by ALPN. `host` (client)
  // is checked against the server's certificate and sent as SNI when it is a name.
  void handshake_tls(asio::ssl::context& context, bool server, const std::string& host,
                     std::function<void(std::optional<std::string> problem)> done);
  bool tls() const noexcept { return tls_ != nullptr; }
  // Strand: hands everything nghttp2 has to send to the socket (one write at a time).
  void flush();
  // Strand: runs `completion` (a stream read's or write's) soon, in the connection's
  // completion loop: never inside the current call, and with the others ready now, so that an
  // echo or a writer loop over many messages runs in one strand turn and its frames leave in
  // one socket write (a write per message would cost a send syscall each).
  void complete_soon(std::function<void()> completion);
  // Strand: a data provider reading `stream.out`, for a submit call.
  nghttp2_data_provider provider(H2Stream& stream);
  // Strand: nghttp2 may pull more of `stream.out` (after a write or the end was queued).
  void resume(H2Stream& stream);
  // Strand: GOAWAY, flush, then close the socket (bounded by a second).
  void shut_down(std::uint32_t error_code);
  // Strand: closes the socket now; lost() runs once.
  void abort(const std::string& reason);
  bool closed() const noexcept { return closed_; }

  std::unordered_map<std::int32_t, H2StreamPtr> streams;
  // Strand: a call's stream joins `streams` (counted in flight on the connection's row until
  // it closes); take_streams() empties the map when the connection is lost.
  void add_stream(std::int32_t id, H2StreamPtr stream);
  std::unordered_map<std::int32_t, H2StreamPtr> take_streams();

  // Runs `work` on the strand, never inside this call. From the strand itself it is deferred
  // (a continuation: this thread runs it next, no wake-up of another); from anywhere else it
  // is posted, so a caller that blocks afterwards never holds it up.
  template <class Work>
  void on_strand(Work work) {
    auto job = [self = shared_from_this(), work = std::move(work)]() mutable {
      work();
    };
    if (strand_.running_in_this_thread())
      asio::defer(strand_, std::move(job));
    else
      asio::post(strand_, std::move(job));
  }
  // An application's stream operation: run now when the caller is already on the strand
  // (in drain(), or a handler of its own) outside nghttp2's callbacks (a completion reading or
  // writing the next message, the usual loop), else on the strand. Its completion is posted either
  // way, never run inside the call.
  template <class Work>
  void start_operation(Work work) {
    if (!in_session_ && !in_send_ && strand_.running_in_this_thread())
      work();
    else
      on_strand(std::move(work));
  }

 protected:
  // Role hooks, on the strand.
  virtual int on_begin_headers(std::int32_t stream_id) = 0;
  virtual int on_header(std::int32_t stream_id, std::string_view name, std::string_view value,
                        bool trailer) = 0;
  virtual void on_headers_done(std::int32_t stream_id, bool end_stream, bool trailer) = 0;
  virtual void on_message(H2Stream& stream, std::string message, std::size_t wire) = 0;
  // A message the stream cannot take (too large, bad flag, bad gzip).
  virtual void on_bad_message(H2Stream& stream, Error error) = 0;
  virtual void on_remote_end(H2Stream& stream) = 0;
  virtual void on_stream_closed(H2StreamPtr stream, std::uint32_t error_code) = 0;
  virtual void on_goaway(std::int32_t last_stream_id) = 0;
  // The connection is gone (read/write error, peer closed, abort): `reason` says why.
  virtual void lost(const std::string& reason) = 0;
  // The stream's grpc-encoding, for a compressed message ("" when none).
  virtual std::string_view encoding_of(H2Stream& stream) = 0;

  Strand strand_;
  Socket socket_;
  Settings settings_;

 private:
  static int begin_headers_callback(nghttp2_session*, const nghttp2_frame*, void*);
  static int header_callback(nghttp2_session*, const nghttp2_frame*, const std::uint8_t*,
                             std::size_t, const std::uint8_t*, std::size_t, std::uint8_t, void*);
  static int frame_recv_callback(nghttp2_session*, const nghttp2_frame*, void*);
  static int data_chunk_callback(nghttp2_session*, std::uint8_t, std::int32_t, const std::uint8_t*,
                                 std::size_t, void*);
  static int stream_close_callback(nghttp2_session*, std::int32_t, std::uint32_t, void*);
  static ssize_t read_data_callback(nghttp2_session*, std::int32_t, std::uint8_t*, std::size_t,
                                    std::uint32_t*, nghttp2_data_source*, void*);
  void read_more();
  void receive_data(H2Stream& stream, const std::uint8_t* data, std::size_t size);
  void close_socket();

  bool server_;
  bool counted_ = false;
  // The connection's row in micro::connection_table() (/connections), from count_open() on.
  std::shared_ptr<ConnectionRecord> record_;
  std::unique_ptr<asio::ssl::stream<Socket&>> tls_;
  nghttp2_session* session_ = nullptr;
  std::vector<std::uint8_t> read_buffer_;
  std::string pending_, sending_;
  bool writing_ = false;
  bool in_session_ = false;  // inside nghttp2_session_mem_recv (its callbacks run)
  bool in_send_ = false;     // inside flush()'s nghttp2_session_mem_send loop (ditto)
  std::deque<std::function<void()>> ready_;  // complete_soon's queue
  bool draining_ = false, drain_posted_ = false;
  void drain();
  bool closed_ = false;
  bool shutting_down_ = false;
  std::optional<Timer> shutdown_timer_;
};

}  // namespace micro::grpc
