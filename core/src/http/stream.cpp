// http/stream.cpp — one exchange: the response head, its body piece by piece (any framing:
// Content-Length, chunked or until close, Beast's buffer_body decodes it), the chunks of a duplex
// request body, and the public Stream handle that forwards to it on the connection's strand.
#include "stream.hpp"

#include <limits>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/chunk_encode.hpp>
#include <boost/beast/http/read.hpp>

namespace micro::http {

namespace detail {

namespace {

constexpr std::size_t piece_size = 16 * 1024;
constexpr std::uint32_t header_limit = 64 * 1024;

Response head_of(const http::response_parser<http::buffer_body>& parser) {
  const auto& message = parser.get();
  Response head;
  head.status = static_cast<int>(message.result_int());
  head.reason = std::string(message.reason());
  for (const auto& field : message) {
    head.headers.push_back({std::string(field.name_string()), std::string(field.value())});
  }
  head.keep_alive = message.keep_alive();
  return head;
}

}  // namespace

StreamState::StreamState(std::shared_ptr<Connection> connection_, std::weak_ptr<Pool> pool_,
                         std::string description_, bool duplex_, bool reused_, bool head_request)
    : strand(connection_->strand()),
      connection(std::move(connection_)),
      pool(std::move(pool_)),
      description(std::move(description_)),
      duplex(duplex_),
      reused(reused_) {
  // Streams may be endless; round trips apply their own limit. (Not boost::none: Boost 1.74
  // compares a Content-Length against an absent limit as "longer".)
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  parser.header_limit(header_limit);
  // The answer to HEAD announces a body it does not carry.
  if (head_request) parser.skip(true);
  record_ = connection->record();
}

StreamState::~StreamState() {
  call_ended();
}

void StreamState::call_started() {
  if (!record_ || in_call_) return;
  in_call_ = true;
  record_->call_started();
}

void StreamState::call_ended() noexcept {
  if (!in_call_) return;
  in_call_ = false;
  record_->call_ended();
}

std::exception_ptr StreamState::fail(Step step, const beast::error_code& error) {
  if (!broken) {
    last_error = error;
    const std::string authority = connection ? connection->origin().authority() : "the server";
    broken = failure(description, step, authority, error, cancelled);
  }
  if (connection) connection->close();
  connection.reset();
  call_ended();
  return broken;
}

std::exception_ptr StreamState::fail(std::exception_ptr cause) {
  if (!broken) broken = std::move(cause);
  if (connection) connection->close();
  connection.reset();
  call_ended();
  return broken;
}

void StreamState::cancel() {
  if (!connection) return;  // ended, or back in the pool
  cancelled = true;
  fail(Step::read_body, asio::error::operation_aborted);
}

void StreamState::read_head(Clock::time_point deadline, Stream::HeadCallback done) {
  if (broken) return done(broken, {});
  if (!connection) return done(failure(description, 503, "the exchange has ended"), {});
  connection->expire_at(deadline);
  connection->with_stream([&](auto& stream) {
    http::async_read_header(
        stream, connection->buffer(), parser,
        // The operation holds the connection: a cancel() meanwhile drops the exchange's share,
        // and the read still uses the connection's buffer (and stream) until it completes.
        [self = shared_from_this(), keep = connection, done = std::move(done)](
            beast::error_code error, std::size_t bytes) {
          self->count_in(bytes);
          if (error) return done(self->fail(Step::read_head, error), {});
          self->release_if_finished();
          done(nullptr, head_of(self->parser));
        });
  });
}

void StreamState::read_some(Clock::time_point deadline, Stream::DataCallback done) {
  if (broken) return done(broken, {});
  if (parser.is_done()) return done(nullptr, {});  // the end, told again
  read_piece(deadline, std::move(done));
}

void StreamState::read_piece(Clock::time_point deadline, Stream::DataCallback done) {
  if (broken) return done(broken, {});
  piece_.resize(piece_size);
  parser.get().body().data = piece_.data();
  parser.get().body().size = piece_.size();
  connection->expire_at(deadline);
  connection->with_stream([&](auto& stream) {
    http::async_read_some(
        stream, connection->buffer(), parser,
        [self = shared_from_this(), keep = connection, deadline, done = std::move(done)](
            beast::error_code error, std::size_t bytes) mutable {
          self->count_in(bytes);
          // need_buffer only says the piece is full.
          if (error == http::error::need_buffer) error = {};
          if (error) return done(self->fail(Step::read_body, error), {});
          const std::size_t filled = self->piece_.size() - self->parser.get().body().size;
          if (filled == 0 && !self->parser.is_done()) {
            // Framing only (a chunk header): read on, a piece is never empty
            // before the end.
            return self->read_piece(deadline, std::move(done));
          }
          self->piece_.resize(filled);
          self->release_if_finished();
          done(nullptr, std::move(self->piece_));
        });
  });
}

void StreamState::write(std::string data, Clock::time_point deadline, Stream::DoneCallback done) {
  if (broken) return done(broken);
  if (!duplex || request_done) {
    return done(failure(description, 400,
                        duplex ? "the request body has ended already"
                               : "only a duplex stream sends its request body in chunks"));
  }
  if (!connection) return done(failure(description, 503, "the exchange has ended"));
  const bool last = data.empty();
  chunk_ = std::move(data);
  connection->expire_at(deadline);
  auto on_written = [self = shared_from_this(), keep = connection, last, done = std::move(done)](
                        beast::error_code error, std::size_t bytes) {
    self->count_out(bytes);
    if (error) return done(self->fail(Step::write, error));
    if (last) self->request_sent();
    done(nullptr);
  };
  connection->with_stream([&](auto& stream) {
    if (last) {
      asio::async_write(stream, http::make_chunk_last(), std::move(on_written));
    } else {
      asio::async_write(stream, http::make_chunk(asio::buffer(chunk_)), std::move(on_written));
    }
  });
}

void StreamState::request_sent() {
  request_done = true;
  release_if_finished();
}

void StreamState::release_if_finished() {
  // The response read to its end after the whole request: the call is over, whatever becomes
  // of the connection.
  if (request_done && parser.is_done()) call_ended();
  if (!connection || !request_done || !parser.is_done() || !parser.keep_alive()) return;
  auto owner = pool.lock();
  if (!owner) return;
  connection->expire_at(no_deadline);
  owner->give_back(std::move(connection));
  connection.reset();
}

}  // namespace detail

// ---- the public handle -------------------------------------------------------------------------

Stream::Stream(std::shared_ptr<detail::StreamState> state) : state_(std::move(state)) {}

Stream::~Stream() {
  cancel();
}

void Stream::cancel() {
  boost::asio::dispatch(state_->strand, [state = state_] { state->cancel(); });
}

const std::string& Stream::description() const {
  return state_->description;
}

boost::asio::any_io_executor Stream::executor() const {
  return state_->strand.get_inner_executor();
}

void Stream::read_head(Clock::time_point deadline, HeadCallback done) {
  boost::asio::dispatch(state_->strand, [state = state_, deadline, done = std::move(done)] {
    state->read_head(deadline, done);
  });
}

void Stream::read_some(Clock::time_point deadline, DataCallback done) {
  boost::asio::dispatch(state_->strand, [state = state_, deadline, done = std::move(done)] {
    state->read_some(deadline, done);
  });
}

void Stream::write(std::string data, Clock::time_point deadline, DoneCallback done) {
  if (data.empty()) {
    // An empty chunk would end the body: sending nothing needs no write.
    return boost::asio::post(state_->strand, [done = std::move(done)] { done(nullptr); });
  }
  boost::asio::dispatch(state_->strand, [state = state_, data = std::move(data), deadline,
                                         done = std::move(done)]() mutable {
    state->write(std::move(data), deadline, done);
  });
}

void Stream::finish(Clock::time_point deadline, DoneCallback done) {
  boost::asio::dispatch(state_->strand, [state = state_, deadline, done = std::move(done)] {
    state->write({}, deadline, done);
  });
}

}  // namespace micro::http
