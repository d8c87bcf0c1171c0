// plugins/tcp/stream.cpp — a stream end's messages and window (see stream.hpp, README.md).
#include "stream.hpp"

#include "frame.hpp"

namespace micro::tcp {

namespace {
// The stream whose completions this thread is running (on that stream's strand), if any.
thread_local StreamEnd* completing_stream = nullptr;
// Reads and writes a completion scope runs itself before posting the rest: a stream going
// through its window in one go does not hold the strand from the connection's other streams
// for long.
constexpr int started_rounds = 32;
}  // namespace

// Strand: while alive, reads and writes of `stream` started on this thread (by completions
// the scope calls) wait in started_read_/started_write_; finish() runs them once the
// completions have returned. Scopes nest: the outermost one runs them.
class StreamEnd::Completing {
 public:
  explicit Completing(StreamEnd& stream)
      : stream_(stream), previous_(completing_stream), outer_(previous_ != &stream) {
    completing_stream = &stream;
  }
  ~Completing() {
    if (!outer_) return;
    completing_stream = previous_;
    stream_.post_started();  // only when a completion threw
  }
  Completing(const Completing&) = delete;
  Completing& operator=(const Completing&) = delete;

  void finish() {
    if (outer_) stream_.run_started();
  }

 private:
  StreamEnd& stream_;
  StreamEnd* previous_;
  bool outer_;
};

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
  Completing scope(*this);
  auto error = take_message(body);
  scope.finish();
  return error;
}

std::optional<Error> StreamEnd::take_message(std::string_view body) {
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
    Completing scope(*this);
    auto done = std::move(*pending_read_);
    pending_read_.reset();
    done(std::nullopt);
    scope.finish();
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
    Completing scope(*this);
    auto [message, done] = std::move(*pending_write_);
    pending_write_.reset();
    send_message(std::move(message));
    done(std::nullopt);
    if (close_send_wanted_ && !closed_send_) {
      closed_send_ = true;
      emit_close_send();
    }
    scope.finish();
  }
  return std::nullopt;
}

void StreamEnd::credit(std::size_t bytes) {
  pending_credit_ += bytes;
  // A quarter of the window at a time: few window frames, and a writer blocked on a full
  // window always gets one once the reader has read what it holds.
  if (pending_credit_ >= receive_window_ / 4 && !is_ended()) {
    auto increment = static_cast<std::uint32_t>(pending_credit_);
    receive_left_ += static_cast<std::int64_t>(pending_credit_);
    pending_credit_ = 0;
    emit_window(increment);
  }
}

void StreamEnd::send_message(std::string message) {
  send_window_ -= static_cast<std::int64_t>(message.size());
  emit_message(message);
}

void StreamEnd::start_read(StreamReadHandler done) {
  // completing_stream is this stream only on its strand, so the started_ slots are ours.
  if (completing_stream == this && !started_read_ && !last_round_ &&
      posted_reads_.load(std::memory_order_relaxed) == 0) {
    started_read_.emplace(std::move(done));
    return;
  }
  post_read(std::move(done));
}

void StreamEnd::start_write(std::string message, StreamWriteHandler done) {
  if (completing_stream == this && !started_write_ && !last_round_ &&
      posted_sends_.load(std::memory_order_relaxed) == 0) {
    started_write_.emplace(std::move(message), std::move(done));
    return;
  }
  post_write(std::move(message), std::move(done));
}

void StreamEnd::start_close_send() {
  post_counted(false, true, [this] { do_close_send(); });
}

void StreamEnd::post_read(StreamReadHandler done) {
  post_counted(true, false, [this, done = std::move(done)]() mutable {
    Completing scope(*this);
    do_read(std::move(done));
    scope.finish();
  });
}

void StreamEnd::post_write(std::string message, StreamWriteHandler done) {
  post_counted(false, true, [this, message = std::move(message), done = std::move(done)]() mutable {
    Completing scope(*this);
    do_write(std::move(message), std::move(done));
    scope.finish();
  });
}

void StreamEnd::run_started() {
  for (int round = 1; started_read_ || started_write_; ++round) {
    // What the last round's completions start is queued on the strand: nothing started
    // earlier is left waiting here for it to overtake.
    if (round == started_rounds) last_round_ = true;
    if (started_write_) {
      auto [message, done] = std::move(*started_write_);
      started_write_.reset();
      do_write(std::move(message), std::move(done));
    }
    if (started_read_) {
      auto done = std::move(*started_read_);
      started_read_.reset();
      do_read(std::move(done));
    }
  }
  last_round_ = false;
}

void StreamEnd::post_started() {
  if (started_write_) {
    auto [message, done] = std::move(*started_write_);
    started_write_.reset();
    post_write(std::move(message), std::move(done));
  }
  if (started_read_) {
    auto done = std::move(*started_read_);
    started_read_.reset();
    post_read(std::move(done));
  }
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
  if (ended_.load(std::memory_order_relaxed)) return false;
  status_ = std::move(status);
  ended_.store(true, std::memory_order_release);
  return true;
}

void StreamEnd::settle_end(bool keep_inbox) {
  if (settled_) return;
  settled_ = true;
  Completing scope(*this);
  Response status = final_status();
  if (!keep_inbox) inbox_.clear();
  // The end's observers first: a reader that sees the end (nullopt) finds it observed, as
  // one reading out a kept inbox does.
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
  scope.finish();
}

bool StreamEnd::is_ended() const {
  return ended_.load(std::memory_order_acquire);
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
