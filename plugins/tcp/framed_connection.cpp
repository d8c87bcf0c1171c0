// plugins/tcp/framed_connection.cpp — the read loop and write queue of one framed socket.
#include "framed_connection.hpp"

#include <algorithm>
#include <cstring>
#include <span>

#include <boost/asio/write.hpp>

namespace micro::tcp {

namespace {
// The buffer a connection starts with, and shrinks back to after an unusually large frame.
constexpr std::size_t initial_read_capacity = 16 * 1024;
constexpr std::size_t keep_read_capacity = 256 * 1024;
// How long a closing connection keeps reading (and dropping) what the peer still sends.
constexpr auto linger_time = std::chrono::seconds(1);
// Written frames kept for reuse: a few, and only small ones, so a burst of large frames does
// not stay allocated.
constexpr std::size_t spare_buffers_kept = 16;
constexpr std::size_t spare_buffer_largest = 64 * 1024;
// Frames appended to one queued buffer, at most (it grows to twice that at most, and is then
// still kept for reuse).
constexpr std::size_t appended_largest = 32 * 1024;
}  // namespace

FramedConnection::FramedConnection(Strand strand, Socket socket, FrameType incoming,
                                   std::uint32_t max_frame)
    : strand_(std::move(strand)),
      socket_(std::move(socket)),
      max_frame_(max_frame),
      incoming_(incoming),
      linger_timer_(strand_) {}

FramedConnection::FramedConnection(Strand strand, FrameType incoming, std::uint32_t max_frame)
    : strand_(strand),
      socket_(strand),
      max_frame_(max_frame),
      incoming_(incoming),
      linger_timer_(strand_) {}

void FramedConnection::start_reading() {
  if (closed_) return;
  read_more();
}

void FramedConnection::start_writing() {
  writable_ = true;
  flush();
}

void FramedConnection::make_room() {
  if (read_begin_ == read_end_) {
    read_begin_ = read_end_ = 0;
    // Give back what one large frame made us take.
    if (read_capacity_ > keep_read_capacity) {
      read_buffer_.reset();
      read_capacity_ = 0;
    }
  }
  std::size_t needed = std::max(wanted_, initial_read_capacity);
  bool little_room = read_capacity_ - read_end_ < initial_read_capacity / 4 && read_begin_ > 0;
  if (!read_buffer_ || read_capacity_ - read_begin_ < wanted_ || little_room) {
    std::size_t buffered = read_end_ - read_begin_;
    if (read_capacity_ < needed) {
      // Sized from a length already checked against max_frame, so a peer cannot make us
      // allocate more than that.
      auto bigger = std::make_unique_for_overwrite<char[]>(needed);
      if (buffered) std::memcpy(bigger.get(), read_buffer_.get() + read_begin_, buffered);
      read_buffer_ = std::move(bigger);
      read_capacity_ = needed;
    } else if (read_begin_ > 0) {
      std::memmove(read_buffer_.get(), read_buffer_.get() + read_begin_, buffered);
    }
    read_begin_ = 0;
    read_end_ = buffered;
  }
}

void FramedConnection::read_more() {
  make_room();
  socket_.async_read_some(
      asio::buffer(read_buffer_.get() + read_end_, read_capacity_ - read_end_),
      [self = shared_from_this()](const boost::system::error_code& error, std::size_t bytes) {
        self->on_read(error, bytes);
      });
}

void FramedConnection::on_read(const boost::system::error_code& error, std::size_t bytes) {
  if (closed_) return;
  if (error) {
    fail(error);
    return;
  }
  read_end_ += bytes;
  if (record_) record_->add_in(bytes);
  in_batch_ = true;
  while (!reading_stopped_ && !closed_) {
    std::size_t available = read_end_ - read_begin_;
    if (skip_left_ > 0) {
      std::size_t dropped = std::min(available, skip_left_);
      read_begin_ += dropped;
      skip_left_ -= dropped;
      if (skip_left_ > 0) break;
      continue;
    }
    if (available < header_size) {
      wanted_ = header_size;
      break;
    }
    FrameHeader header;
    if (auto problem =
            parse_header(read_buffer_.get() + read_begin_, incoming_, max_frame_, header)) {
      if (problem->too_large && skip_oversize(header, *problem)) {
        skip_left_ = header.length;
        continue;
      }
      reading_stopped_ = true;
      on_header_problem(header, *problem);
      break;
    }
    if (available < header.length) {
      wanted_ = header.length;
      break;
    }
    std::string_view frame(read_buffer_.get() + read_begin_, header.length);
    read_begin_ += header.length;
    wanted_ = header_size;
    on_frame(header, frame);
  }
  in_batch_ = false;
  if (closed_) return;
  flush();
  if (!reading_stopped_) read_more();
}

void FramedConnection::send_frame(std::string frame) {
  if (closed_) return;
  queued_.push_back(std::move(frame));
  if (!in_batch_) flush();
}

std::string& FramedConnection::buffer_for(std::size_t bytes) {
  if (queued_.empty() || queued_.back().size() + bytes > appended_largest)
    queued_.push_back(take_buffer());
  return queued_.back();
}

std::string FramedConnection::take_buffer() {
  if (spare_buffers_.empty()) return {};
  std::string buffer = std::move(spare_buffers_.back());
  spare_buffers_.pop_back();
  return buffer;
}

void FramedConnection::flush() {
  if (write_in_flight_ || !writable_ || closed_) return;
  if (queued_.empty()) {
    if (close_when_flushed_ && !lingering_) linger();
    return;
  }
  write_in_flight_ = true;
  writing_.swap(queued_);
  write_buffers_.clear();
  for (const auto& frame : writing_) write_buffers_.push_back(asio::buffer(frame));
  // A span is a cheap view of the buffers: asio copies the sequence object, not the vector.
  asio::async_write(
      socket_, std::span<const asio::const_buffer>(write_buffers_),
      [self = shared_from_this()](const boost::system::error_code& error, std::size_t bytes) {
        if (self->record_) self->record_->add_out(bytes);
        self->on_written(error);
      });
}

void FramedConnection::on_written(const boost::system::error_code& error) {
  write_in_flight_ = false;
  for (auto& frame : writing_) {
    if (spare_buffers_.size() >= spare_buffers_kept) break;
    if (frame.capacity() > spare_buffer_largest) continue;
    frame.clear();
    spare_buffers_.push_back(std::move(frame));
  }
  writing_.clear();
  if (closed_) return;
  if (error) {
    fail(error);
    return;
  }
  flush();
}

void FramedConnection::close_after_flush() {
  reading_stopped_ = true;
  close_when_flushed_ = true;
  if (!in_batch_) flush();
}

void FramedConnection::linger() {
  lingering_ = true;
  boost::system::error_code ignored;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  linger_timer_.expires_after(linger_time);
  linger_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& error) {
    if (!error) self->close_socket();
  });
  read_begin_ = read_end_ = 0;
  if (!read_buffer_) make_room();
  discard_more();
}

// Bytes read here are dropped: the point is only to see the peer's end of stream.
void FramedConnection::discard_more() {
  socket_.async_read_some(
      asio::buffer(read_buffer_.get(), read_capacity_),
      [self = shared_from_this()](const boost::system::error_code& error, std::size_t) {
        if (self->closed_) return;
        if (error) {
          self->close_socket();
          return;
        }
        self->discard_more();
      });
}

void FramedConnection::fail(const boost::system::error_code& error) {
  close_socket();
  on_disconnect(error);
}

void FramedConnection::close_socket() {
  if (closed_) return;
  closed_ = true;
  reading_stopped_ = true;
  boost::system::error_code ignored;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  linger_timer_.cancel();
  queued_.clear();
  on_closed();
}

}  // namespace micro::tcp
