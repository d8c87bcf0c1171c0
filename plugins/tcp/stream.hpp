// plugins/tcp/stream.hpp — one end of a tcp stream, shared by the client and server sides:
// the inbox of received messages, the pending read and write, and the per-stream window
// (README.md, "Streams"). Message state lives on the connection's strand; the end (claimed
// once, from any thread) is guarded by a mutex so status() can be read anywhere, and mirrored
// in an atomic flag so ended() and the per-message checks take no lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/post.hpp>

#include <micro/transport.hpp>

#include "common.hpp"
#include "frame.hpp"

namespace micro::tcp {

class StreamEnd {
 public:
  virtual ~StreamEnd() = default;
  StreamEnd(const StreamEnd&) = delete;
  StreamEnd& operator=(const StreamEnd&) = delete;

  std::uint64_t stream_id() const noexcept { return stream_id_; }

  // The peer's frames (strand only). A returned error is a protocol violation: the caller
  // ends the stream with it (and tells the peer).
  std::optional<Error> receive_message(std::string_view body);
  void receive_close();  // the peer sends no more messages
  std::optional<Error> receive_window(std::uint32_t increment);

  // Claims the end with `status` (any thread): false when the stream has already ended.
  // The claimer then calls settle_end() on the strand.
  bool claim_end(Response status);
  // Strand: fails the pending write, completes a pending read (nullopt; with `keep_inbox`
  // messages already received stay readable), runs the on_end callbacks.
  void settle_end(bool keep_inbox);

  bool is_ended() const;
  Response final_status() const;
  void add_on_end(ResponseHandler done);

 protected:
  StreamEnd(Strand strand, std::uint64_t stream_id, std::uint32_t receive_window,
            std::uint32_t max_frame, const char* error_id);

  // The application's read, write and close_send (any thread). Completions never run inside
  // the caller's call: the operation is posted to the strand, except when the caller is a
  // completion of this stream running on the strand (the usual "read the next one" loop) and
  // nothing queued there could be overtaken (see posted_reads_): then it runs right after
  // that completion returns, without a round trip through the strand's queue.
  void start_read(StreamReadHandler done);
  void start_write(std::string message, StreamWriteHandler done);
  void start_close_send();
  // The application's operations, run on the strand.
  void do_read(StreamReadHandler done);
  void do_write(std::string message, StreamWriteHandler done);
  void do_close_send();

  // Posts `work` (which may end the stream) to the strand, keeping the stream alive until it
  // ran. Reads and writes started later do not overtake it.
  template <class Work>
  void on_strand(Work work) {
    post_counted(true, true, std::move(work));
  }

  // The side's message and window frames out (strand only).
  virtual void emit_message(std::string_view message) = 0;
  virtual void emit_window(std::uint32_t increment) = 0;
  // The side's half-close (client: a close-send frame; server: nothing, its end closes).
  virtual void emit_close_send() = 0;
  // A write over max_frame or a message refused: the side ends the stream with `error` and
  // tells the peer (client: cancel; server: an end frame).
  virtual void abort(Error error) = 0;
  virtual std::shared_ptr<void> keep_alive() = 0;

  // The grant that tops the peer's view of our window up from the protocol's initial one to
  // ours (0 when ours is the initial one); sent right after the open.
  std::uint32_t initial_grant() const noexcept;

  Strand strand_;
  const char* error_id_;

 private:
  class Completing;

  std::optional<Error> take_message(std::string_view body);
  void credit(std::size_t bytes);
  void send_message(std::string message);
  // Strand, at the end of a completion scope: runs the reads and writes its completions
  // started, for a bounded number of rounds (then they are posted again).
  void run_started();
  // Posts what a completion that threw left started.
  void post_started();
  void post_read(StreamReadHandler done);
  void post_write(std::string message, StreamWriteHandler done);
  // Posts `work`, counted in posted_reads_ and/or posted_sends_ until it runs.
  template <class Work>
  void post_counted(bool reads, bool sends, Work work) {
    if (reads) posted_reads_.fetch_add(1, std::memory_order_relaxed);
    if (sends) posted_sends_.fetch_add(1, std::memory_order_relaxed);
    asio::post(strand_,
               [this, keep = keep_alive(), reads, sends, work = std::move(work)]() mutable {
                 if (reads) posted_reads_.fetch_sub(1, std::memory_order_relaxed);
                 if (sends) posted_sends_.fetch_sub(1, std::memory_order_relaxed);
                 work();
               });
  }

  const std::uint64_t stream_id_;
  const std::uint32_t receive_window_;
  const std::uint32_t max_frame_;

  // Strand only.
  std::deque<std::string> inbox_;
  std::optional<StreamReadHandler> pending_read_;
  std::optional<std::pair<std::string, StreamWriteHandler>> pending_write_;
  std::int64_t send_window_ = initial_stream_window;  // may go below 0 by one message
  std::int64_t receive_left_;                         // the peer's window, as we granted it
  std::size_t pending_credit_ = 0;                    // read, not yet granted back
  bool peer_closed_ = false;
  bool close_send_wanted_ = false;  // close once the pending write is out
  bool closed_send_ = false;
  bool settled_ = false;
  // Started by a completion of this stream, to run once it returns (Completing).
  std::optional<StreamReadHandler> started_read_;
  std::optional<std::pair<std::string, StreamWriteHandler>> started_write_;
  bool last_round_ = false;  // run_started's last round: starts are posted

  // Work queued on the strand that a read (posted_reads_: reads, ends) or a write
  // (posted_sends_: writes, close_send, ends) must not overtake; the directions are
  // independent, so a queued write does not hold a read back.
  std::atomic<std::uint32_t> posted_reads_{0};
  std::atomic<std::uint32_t> posted_sends_{0};
  mutable std::mutex end_mutex_;
  std::atomic<bool> ended_{false};  // written under end_mutex_, read anywhere
  bool callbacks_run_ = false;      // settle_end has taken on_end_
  Response status_;
  std::vector<ResponseHandler> on_end_;
};

}  // namespace micro::tcp
