// plugins/tcp/framed_connection.hpp — one TCP socket carrying frames, shared by both sides:
// the read loop (length checked before any allocation, many frames parsed per read) and
// the write queue (frames queued while a write is in flight go out together in one
// gather write). Everything here runs on the connection's strand.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <micro/connection_table.hpp>

#include "common.hpp"
#include "frame.hpp"

namespace micro::tcp {

class FramedConnection : public std::enable_shared_from_this<FramedConnection> {
 public:
  virtual ~FramedConnection() = default;
  FramedConnection(const FramedConnection&) = delete;
  FramedConnection& operator=(const FramedConnection&) = delete;

  const Strand& strand() const noexcept { return strand_; }

 protected:
  // `incoming` is the frame type this side reads (requests on a server).
  FramedConnection(Strand strand, Socket socket, FrameType incoming, std::uint32_t max_frame);
  FramedConnection(Strand strand, FrameType incoming, std::uint32_t max_frame);

  // Begins the read loop.
  void start_reading();
  // Lets queued frames go out (a client queues while still connecting).
  void start_writing();
  // Queues a whole frame; frames queued while a frame batch is being read, or while a
  // write is in flight, are coalesced into the next write.
  void send_frame(std::string frame);
  // Queues a small frame that `append(std::string& out)` appends to `out`, `bytes` long:
  // frames queued together share one buffer, so a stream's messages cost a copy each and no
  // allocation, and go out as one contiguous write.
  template <class Append>
  void append_frame(std::size_t bytes, Append append) {
    if (closed_) return;
    append(buffer_for(bytes));
    if (!in_batch_) flush();
  }
  // An empty string keeping the capacity of a frame already written, to encode the next
  // frame into without allocating (strand only).
  std::string take_buffer();
  // Stops reading, and closes once every queued frame is written: the send side is shut,
  // then whatever the peer still sends is read and dropped for a moment, so that closing
  // with unread bytes does not reset the connection before the peer reads our last frame.
  void close_after_flush();
  // Closes now; queued frames are dropped. Calls on_closed once.
  void close_socket();
  bool socket_closed() const noexcept { return closed_; }

  // A whole, well-framed frame (header included). May send or close.
  virtual void on_frame(const FrameHeader& header, std::string_view frame) = 0;
  // The header at the read position was refused; reading has stopped. `header.request_id`
  // is meaningful only when `problem.too_large`.
  virtual void on_header_problem(const FrameHeader& header, const HeaderProblem& problem) = 0;
  // An oversize frame (`problem.too_large`) that only concerns one stream: return true to
  // have its bytes read and dropped (never buffered) and go on reading; false stops reading
  // and on_header_problem follows.
  virtual bool skip_oversize(const FrameHeader&, const HeaderProblem&) { return false; }
  // The peer closed or the socket failed; the socket is already closed.
  virtual void on_disconnect(const boost::system::error_code& error) = 0;
  // After the socket is closed, for whatever reason.
  virtual void on_closed() {}

  Strand strand_;
  Socket socket_;
  // This connection's row in /connections; bytes are counted here, calls by each side.
  std::shared_ptr<ConnectionRecord> record_;
  std::uint32_t max_frame_;

 private:
  void read_more();
  void on_read(const boost::system::error_code& error, std::size_t bytes);
  void flush();
  void on_written(const boost::system::error_code& error);
  void fail(const boost::system::error_code& error);
  void make_room();
  std::string& buffer_for(std::size_t bytes);
  void linger();
  void discard_more();

  FrameType incoming_;
  // The read buffer: bytes [read_begin_, read_end_) are received and not yet consumed;
  // `wanted_` is how many bytes the frame being assembled needs in total.
  std::unique_ptr<char[]> read_buffer_;
  std::size_t read_capacity_ = 0;
  std::size_t read_begin_ = 0;
  std::size_t read_end_ = 0;
  std::size_t wanted_ = header_size;
  std::size_t skip_left_ = 0;  // bytes of an oversize frame still to drop

  std::vector<std::string> queued_;         // waiting for the next write
  std::vector<std::string> writing_;        // owned by the write in flight
  std::vector<std::string> spare_buffers_;  // written frames' storage, for take_buffer()
  std::vector<asio::const_buffer> write_buffers_;
  Timer linger_timer_;

  bool reading_stopped_ = false;
  bool in_batch_ = false;  // parsing frames of one read: hold writes until the batch ends
  bool writable_ = false;
  bool write_in_flight_ = false;
  bool close_when_flushed_ = false;
  bool lingering_ = false;
  bool closed_ = false;
};

}  // namespace micro::tcp
