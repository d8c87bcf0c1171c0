// plugins/tcp/stream.cpp — a stream end's messages and window (see stream.hpp, README.md).
#include "stream.hpp"

#include "frame.hpp"

namespace micro::tcp {

StreamEnd::StreamEnd(Strand strand, std::uint64_t stream_id, std::uint32_t receive_window,
                     std::uint32_t max_frame, const char* error_id)
    : strand_(std::move(strand)),
      error_id_(error_id),
      stream_id_(stream_id),
      receive_window_(std::max(receive_window, initial_stream_window)),
      max_frame_(max_frame),
      receive_left_(receive_window_) {}

std::uint32_t StreamEnd::initial_grant() const noexcept {
  return receive_window_ - initial_stream_window;
}

std::optional<Error> StreamEnd::receive_message(std::string_view body) {
  if (is_ended()) return std::nullopt;  // ended here meanwhile; the peer learns of it
  if (peer_closed_) {
    return bad_request(error_id_, "tcp: stream " + std::to_string(stream_id_) +
                                      ": message after the peer closed its side");
  }
  // The peer may send while its window is positive, overshooting it by one message at most.
  if (receive_left_ <= 0) {
    return bad_request(error_id_, "tcp: stream " + std::to_string(stream_id_) +
                                      ": window violation: message of " +
                                      std::to_string(body.size()) + " bytes with the window of " +
                                      std::to_string(receive_window_) + " bytes used up");
  }
  receive_left_ -= static_cast<std::int64_t>(body.size());
  if (pending_read_) {
    auto done = std::move(*pending_read_);
    pending_read_.reset();
    credit(body.size());
    done(std::string(body));
    return std::nullopt;
  }
  inbox_.emplace_back(body);
  return std::nullopt;
}

void StreamEnd::receive_close() {
  peer_closed_ = true;
  if (pending_read_ && inbox_.empty()) {
    auto done = std::move(*pending_read_);
    pending_read_.reset();
    done(std::nullopt);
  }
}

std::optional<Error> StreamEnd::receive_window(std::uint32_t increment) {
  send_window_ += increment;
  // A peer granting more than it could ever hold is not following the protocol.
  if (send_window_ > (std::int64_t{1} << 32)) {
    return bad_request(error_id_, "tcp: stream " + std::to_string(stream_id_) +
                                      ": window update of " + std::to_string(increment) +
                                      " bytes overflows the window");
  }
  if (pending_write_ && send_window_ > 0) {
    auto [message, done] = std::move(*pending_write_);
    pending_write_.reset();
    send_message(std::move(message));
    done(std::nullopt);
    if (close_send_wanted_ && !closed_send_) {
      closed_send_ = true;
      emit_close_send();
    }
  }
  return std::nullopt;
}

void StreamEnd::credit(std::size_t bytes) {
  pending_credit_ += bytes;
  // A quarter of the window at a time: few window frames, and a writer blocked on a full
  // window always gets one once the reader has read what it holds.
  if (pending_credit_ >= receive_window_ / 4 && !is_ended()) {
    std::string frame = frame_buffer();
    encode_stream_window(frame, stream_id_, static_cast<std::uint32_t>(pending_credit_));
    receive_left_ += static_cast<std::int64_t>(pending_credit_);
    pending_credit_ = 0;
    emit_frame(std::move(frame));
  }
}

void StreamEnd::send_message(std::string message) {
  send_window_ -= static_cast<std::int64_t>(message.size());
  std::string frame = frame_buffer();
  encode_stream_message(frame, stream_id_, message);
  emit_frame(std::move(frame));
}

void StreamEnd::do_read(StreamReadHandler done) {
  if (!inbox_.empty()) {
    std::string message = std::move(inbox_.front());
    inbox_.pop_front();
    credit(message.size());
    done(std::move(message));
    return;
  }
  if (peer_closed_ || settled_ || pending_read_) {
    done(std::nullopt);
    return;
  }
  pending_read_ = std::move(done);
}

void StreamEnd::do_write(std::string message, StreamWriteHandler done) {
  auto refuse = [&](std::string why) {
    done(Error(error_id_, 400, "tcp: stream " + std::to_string(stream_id_) + ": " + why));
  };
  if (is_ended()) {
    Response status = final_status();
    done(status.error
             ? *status.error
             : Error(error_id_, 400, "tcp: stream " + std::to_string(stream_id_) + " has ended"));
    return;
  }
  if (closed_send_ || close_send_wanted_) return refuse("write after close_send");
  if (pending_write_) return refuse("a write is already in progress (one at a time)");
  std::size_t size = stream_message_frame_size(message.size());
  if (size > max_frame_) {
    Error error(error_id_, 413,
                "tcp: stream " + std::to_string(stream_id_) + ": message of " +
                    std::to_string(message.size()) + " bytes exceeds max_frame " +
                    std::to_string(max_frame_));
    abort(error);
    done(std::move(error));
    return;
  }
  if (send_window_ > 0) {
    send_message(std::move(message));
    done(std::nullopt);
    return;
  }
  pending_write_.emplace(std::move(message), std::move(done));  // the slow reader holds us here
}

void StreamEnd::do_close_send() {
  if (closed_send_ || close_send_wanted_ || is_ended()) return;
  if (pending_write_) {
    close_send_wanted_ = true;
    return;
  }
  closed_send_ = true;
  emit_close_send();
}

bool StreamEnd::claim_end(Response status) {
  std::lock_guard lock(end_mutex_);
  if (ended_) return false;
  ended_ = true;
  status_ = std::move(status);
  return true;
}

void StreamEnd::settle_end(bool keep_inbox) {
  if (settled_) return;
  settled_ = true;
  Response status = final_status();
  if (!keep_inbox) inbox_.clear();
  if (pending_write_) {
    auto done = std::move(pending_write_->second);
    pending_write_.reset();
    done(status.error
             ? *status.error
             : Error(error_id_, 400, "tcp: stream " + std::to_string(stream_id_) + " has ended"));
  }
  if (pending_read_ && inbox_.empty()) {
    auto done = std::move(*pending_read_);
    pending_read_.reset();
    done(std::nullopt);
  }
  std::vector<ResponseHandler> callbacks;
  {
    std::lock_guard lock(end_mutex_);
    callbacks.swap(on_end_);
    callbacks_run_ = true;
  }
  for (auto& callback : callbacks) {
    Response copy = status;
    callback(std::move(copy));
  }
}

bool StreamEnd::is_ended() const {
  std::lock_guard lock(end_mutex_);
  return ended_;
}

Response StreamEnd::final_status() const {
  std::lock_guard lock(end_mutex_);
  return status_;
}

void StreamEnd::add_on_end(ResponseHandler done) {
  {
    std::lock_guard lock(end_mutex_);
    // Until settled, the callback waits; settle_end swaps the list out under this lock.
    if (!callbacks_run_) {
      on_end_.push_back(std::move(done));
      return;
    }
  }
  done(final_status());
}

}  // namespace micro::tcp
