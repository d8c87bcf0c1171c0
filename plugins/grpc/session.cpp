// plugins/grpc/session.cpp — the HTTP/2 connection and per-call stream state (session.hpp).
#include "session.hpp"

#include <micro/gzip.hpp>

#include <algorithm>
#include <cstring>

#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/write.hpp>

namespace micro::grpc {

namespace {
// Bytes of frames taken from nghttp2 and not yet written, at most (then nghttp2 keeps the
// rest, and the streams' writers wait).
constexpr std::size_t max_pending = 1024 * 1024;
}  // namespace

// ---- H2Stream ----------------------------------------------------------------------------

void H2Stream::deliver_message(std::string message, std::size_t wire) {
  if (pending_read && inbox.empty()) {
    auto done = std::move(*pending_read);
    pending_read.reset();
    connection_->complete_soon([done = std::move(done), message = std::move(message)]() mutable {
      done(std::move(message));
    });
    return;  // taken at once: its window goes back now
  }
  inbox.emplace_back(std::move(message), wire);
  inbox_wire += wire;
}

void H2Stream::do_read(StreamReadHandler done) {
  if (!inbox.empty()) {
    auto message = std::move(inbox.front().first);
    inbox_wire -= inbox.front().second;
    inbox.pop_front();
    settle_window();
    connection_->flush();
    connection_->complete_soon([done = std::move(done), message = std::move(message)]() mutable {
      done(std::move(message));
    });
    return;
  }
  if (peer_done || pending_read || is_ended()) {
    connection_->complete_soon([done = std::move(done)] { done(std::nullopt); });
    return;
  }
  pending_read = std::move(done);
}

void H2Stream::queue_write(std::string_view message, std::function<void()> done) {
  append_message(out, message, send_gzip);
  on_drained = std::move(done);
}

void H2Stream::settle_window() {
  if (ungranted <= inbox_wire || id < 0) return;
  std::size_t grant = ungranted - inbox_wire;
  ungranted = inbox_wire;
  nghttp2_session_consume_stream(connection_->session(), id, grant);
}

bool H2Stream::claim_end(Response status) {
  std::lock_guard lock(end_mutex_);
  if (ended_) return false;
  ended_ = true;
  ended_flag_.store(true, std::memory_order_release);
  status_ = std::move(status);
  return true;
}

bool H2Stream::is_ended() const {
  return ended_flag_.load(std::memory_order_acquire);
}

Response H2Stream::final_status() const {
  std::lock_guard lock(end_mutex_);
  return status_;
}

void H2Stream::add_on_end(ResponseHandler done) {
  std::unique_lock lock(end_mutex_);
  if (settled_) {
    Response status = status_;
    lock.unlock();
    done(std::move(status));
    return;
  }
  on_end_.push_back(std::move(done));
}

void H2Stream::settle_end(bool keep_pending_write) {
  std::vector<ResponseHandler> callbacks;
  Response status;
  {
    std::lock_guard lock(end_mutex_);
    if (settled_ || !ended_) return;
    settled_ = true;
    callbacks.swap(on_end_);
    status = status_;
  }
  peer_done = true;
  if (on_drained && !keep_pending_write) {
    // A write not taken yet fails with the end (its bytes are dropped).
    out.clear();
    out_offset = 0;
    auto done = std::move(on_drained);
    on_drained = nullptr;
    connection_->complete_soon(std::move(done));
  }
  if (pending_read) {
    auto done = std::move(*pending_read);
    pending_read.reset();
    connection_->complete_soon([done = std::move(done)] { done(std::nullopt); });
  }
  for (auto& callback : callbacks) callback(Response(status));
}

// ---- H2Connection ------------------------------------------------------------------------

H2Connection::H2Connection(Strand strand, Settings settings, bool server)
    : strand_(strand), socket_(strand), settings_(settings), server_(server) {
  read_buffer_.resize(64 * 1024);
  // A server connection is made before its accept completes: it counts once accepted.
  if (!server_) count_open();
}

void H2Connection::count_open() {
  if (counted_) return;
  counted_ = true;
  (server_ ? settings_.counts->server : settings_.counts->client)
      .fetch_add(1, std::memory_order_relaxed);
  // A server connection is accepted by now and knows its addresses; a client learns them in
  // start(), once connected.
  record_ =
      connection_table().open("grpc", server_ ? ConnectionSide::server : ConnectionSide::client);
  if (server_) note_addresses();
}

void H2Connection::note_addresses() {
  boost::system::error_code ignored;
  auto peer = socket_.remote_endpoint(ignored);
  auto local = socket_.local_endpoint(ignored);
  record_->set_addresses(endpoint_text(peer), endpoint_text(local));
}

void H2Connection::add_stream(std::int32_t id, H2StreamPtr stream) {
  streams.emplace(id, std::move(stream));
  record_->call_started();
}

std::unordered_map<std::int32_t, H2StreamPtr> H2Connection::take_streams() {
  auto open = std::move(streams);
  streams.clear();
  for (std::size_t i = 0; i < open.size(); ++i) record_->call_ended();
  return open;
}

H2Connection::~H2Connection() {
  if (session_) nghttp2_session_del(session_);
  if (counted_)
    (server_ ? settings_.counts->server : settings_.counts->client)
        .fetch_sub(1, std::memory_order_relaxed);
}

void H2Connection::start() {
  if (!server_) note_addresses();
  nghttp2_session_callbacks* callbacks = nullptr;
  nghttp2_session_callbacks_new(&callbacks);
  nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, begin_headers_callback);
  nghttp2_session_callbacks_set_on_header_callback(callbacks, header_callback);
  nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, frame_recv_callback);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, data_chunk_callback);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, stream_close_callback);
  nghttp2_option* option = nullptr;
  nghttp2_option_new(&option);
  // We grant the window back as readers take messages (the backpressure of streams).
  nghttp2_option_set_no_auto_window_update(option, 1);
  nghttp2_option_set_peer_max_concurrent_streams(option, settings_.max_concurrent_streams);
  if (server_)
    nghttp2_session_server_new2(&session_, callbacks, this, option);
  else
    nghttp2_session_client_new2(&session_, callbacks, this, option);
  nghttp2_option_del(option);
  nghttp2_session_callbacks_del(callbacks);

  nghttp2_settings_entry entries[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, settings_.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, settings_.stream_window},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, entries, 2);
  // The connection's window is granted back on receipt (the streams' bound the memory); a
  // large one keeps many streams moving at once.
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, 16 * 1024 * 1024);
  flush();
  read_more();
}

void H2Connection::handshake_tls(asio::ssl::context& context, bool server, const std::string& host,
                                 std::function<void(std::optional<std::string>)> done) {
  tls_ = std::make_unique<asio::ssl::stream<Socket&>>(socket_, context);
  if (!server) {
    static const unsigned char h2[] = {2, 'h', '2'};
    SSL_set_alpn_protos(tls_->native_handle(), h2, sizeof h2);
    boost::system::error_code not_an_ip;
    asio::ip::make_address(host, not_an_ip);
    if (not_an_ip) SSL_set_tlsext_host_name(tls_->native_handle(), host.c_str());
    tls_->set_verify_mode(asio::ssl::verify_peer);
    tls_->set_verify_callback(asio::ssl::host_name_verification(host));
  }
  tls_->async_handshake(
      server ? asio::ssl::stream_base::server : asio::ssl::stream_base::client,
      [self = shared_from_this(), done = std::move(done)](const boost::system::error_code& error) {
        if (error) {
          done("TLS handshake failed: " + error.message());
          return;
        }
        const unsigned char* protocol = nullptr;
        unsigned int length = 0;
        SSL_get0_alpn_selected(self->tls_->native_handle(), &protocol, &length);
        if (length != 2 || std::memcmp(protocol, "h2", 2) != 0) {
          done("the peer did not agree to HTTP/2 by ALPN (h2)");
          return;
        }
        done(std::nullopt);
      });
}

void H2Connection::read_more() {
  auto on_read = [self = shared_from_this()](const boost::system::error_code& error,
                                             std::size_t size) {
    if (self->closed_) return;
    if (error) {
      self->abort(error == asio::error::eof ? "closed by the peer" : error.message());
      return;
    }
    self->record_->add_in(size);
    self->in_session_ = true;
    ssize_t used = nghttp2_session_mem_recv(self->session_, self->read_buffer_.data(), size);
    self->in_session_ = false;
    if (used < 0) {
      self->flush();  // nghttp2 may have queued a GOAWAY saying why
      self->abort(std::string("bad HTTP/2 from the peer: ") +
                  nghttp2_strerror(static_cast<int>(used)));
      return;
    }
    self->flush();
    if (!self->closed_) self->read_more();
  };
  if (tls_)
    tls_->async_read_some(asio::buffer(read_buffer_), std::move(on_read));
  else
    socket_.async_read_some(asio::buffer(read_buffer_), std::move(on_read));
}

void H2Connection::flush() {
  // Called again from a callback of the loop below (a stream closed while sending): the loop
  // itself goes on taking frames until nghttp2 has none, so there is nothing to do here.
  if (closed_ || !session_ || in_send_) return;
  // nghttp2's frames are taken into `pending_` even while a write is in flight (up to a bound):
  // a stream writer whose message nghttp2 took hears so at once and queues its next, and
  // everything taken meanwhile leaves in the next write. Waiting for the socket write first
  // would cost one write round trip per message on a single busy stream.
  in_send_ = true;
  ssize_t failed = 0;
  while (pending_.size() < max_pending) {
    const std::uint8_t* data = nullptr;
    ssize_t size = nghttp2_session_mem_send(session_, &data);
    if (size < 0) {
      failed = size;
      break;
    }
    if (size == 0) break;
    pending_.append(reinterpret_cast<const char*>(data), static_cast<std::size_t>(size));
  }
  in_send_ = false;
  if (failed < 0) {
    abort(std::string("HTTP/2 send failed: ") + nghttp2_strerror(static_cast<int>(failed)));
    return;
  }
  if (writing_ || draining_) return;  // on_written, or the end of drain(), flushes again
  if (pending_.empty()) {
    if (shutting_down_)
      abort("closed by this side");
    else if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_))
      abort("the session ended");
    return;
  }
  writing_ = true;
  sending_.swap(pending_);
  pending_.clear();
  auto on_written = [self = shared_from_this()](const boost::system::error_code& error,
                                                std::size_t bytes) {
    self->record_->add_out(bytes);
    self->writing_ = false;
    self->sending_.clear();
    if (self->closed_) return;
    if (error) {
      self->abort(error.message());
      return;
    }
    self->flush();
  };
  if (tls_)
    asio::async_write(*tls_, asio::buffer(sending_), std::move(on_written));
  else
    asio::async_write(socket_, asio::buffer(sending_), std::move(on_written));
}

void H2Connection::complete_soon(std::function<void()> completion) {
  ready_.push_back(std::move(completion));
  if (draining_ || drain_posted_) return;
  drain_posted_ = true;
  asio::defer(strand_, [self = shared_from_this()] { self->drain(); });
}

void H2Connection::drain() {
  drain_posted_ = false;
  draining_ = true;
  // Bounded, so a writer that never waits (its next write completes at once) lets the socket
  // and the other streams have their turn.
  for (int budget = 256; budget > 0 && !ready_.empty(); --budget) {
    auto completion = std::move(ready_.front());
    ready_.pop_front();
    completion();
  }
  draining_ = false;
  if (!ready_.empty()) {
    drain_posted_ = true;
    asio::defer(strand_, [self = shared_from_this()] { self->drain(); });
  }
  flush();
}

nghttp2_data_provider H2Connection::provider(H2Stream& stream) {
  nghttp2_data_provider provider{};
  provider.source.ptr = &stream;
  provider.read_callback = read_data_callback;
  return provider;
}

void H2Connection::resume(H2Stream& stream) {
  if (stream.deferred && stream.id > 0) {
    stream.deferred = false;
    nghttp2_session_resume_data(session_, stream.id);
  }
}

void H2Connection::shut_down(std::uint32_t error_code) {
  if (closed_ || shutting_down_) return;
  if (session_) {
    nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(session_), error_code, nullptr,
                          0);
  }
  shutting_down_ = true;
  shutdown_timer_.emplace(strand_, std::chrono::seconds(1));
  shutdown_timer_->async_wait([self = shared_from_this()](const boost::system::error_code& error) {
    if (!error) self->abort("closed");
  });
  flush();
}

void H2Connection::abort(const std::string& reason) {
  if (closed_) return;
  close_socket();
  lost(reason);
}

void H2Connection::close_socket() {
  if (closed_) return;
  closed_ = true;
  boost::system::error_code ignored;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  if (shutdown_timer_) shutdown_timer_->cancel();
}

void H2Connection::receive_data(H2Stream& stream, const std::uint8_t* data, std::size_t size) {
  while (size > 0 && !stream.is_ended()) {
    std::size_t used = 0;
    auto result = stream.deframer_.feed(data, size, used);
    data += used;
    size -= used;
    if (result == Deframer::Result::more) break;
    if (result == Deframer::Result::too_large) {
      on_bad_message(
          stream, Error(server_ ? server_error_id : client_error_id, 413,
                        "grpc: message of " + std::to_string(stream.deframer_.length()) +
                            " bytes exceeds max_message " + std::to_string(settings_.max_message)));
      return;
    }
    if (result == Deframer::Result::bad_flag) {
      on_bad_message(stream, Error(server_ ? server_error_id : client_error_id, 500,
                                   "grpc: message has a compressed flag other than 0 or 1"));
      return;
    }
    std::size_t wire = stream.deframer_.length() + prefix_size;
    std::string message = stream.deframer_.take();
    if (stream.deframer_.compressed()) {
      std::string_view encoding = encoding_of(stream);
      if (encoding != "gzip") {
        on_bad_message(stream, Error(server_ ? server_error_id : client_error_id, 500,
                                     "grpc: compressed message without a grpc-encoding this side "
                                     "accepts (got \"" +
                                         std::string(encoding) + "\"; gzip is)"));
        return;
      }
      std::string problem;
      auto inflated = micro::gzip::decompress(message, settings_.max_message, problem);
      if (!inflated) {
        int code = problem.find("limit") != std::string::npos ? 413 : 500;
        on_bad_message(
            stream, Error(server_ ? server_error_id : client_error_id, code, "grpc: " + problem));
        return;
      }
      message = std::move(*inflated);
    }
    on_message(stream, std::move(message), wire);
  }
}

int H2Connection::begin_headers_callback(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* self = static_cast<H2Connection*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  if (self->server_ && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
    return self->on_begin_headers(frame->hd.stream_id);
  return 0;
}

int H2Connection::header_callback(nghttp2_session*, const nghttp2_frame* frame,
                                  const std::uint8_t* name, std::size_t name_size,
                                  const std::uint8_t* value, std::size_t value_size, std::uint8_t,
                                  void* user) {
  auto* self = static_cast<H2Connection*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  bool trailer = frame->headers.cat == NGHTTP2_HCAT_HEADERS;
  return self->on_header(
      frame->hd.stream_id, std::string_view(reinterpret_cast<const char*>(name), name_size),
      std::string_view(reinterpret_cast<const char*>(value), value_size), trailer);
}

int H2Connection::frame_recv_callback(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* self = static_cast<H2Connection*>(user);
  bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
      self->on_headers_done(frame->hd.stream_id, end_stream,
                            frame->headers.cat == NGHTTP2_HCAT_HEADERS);
      break;
    case NGHTTP2_DATA:
      if (end_stream) {
        auto found = self->streams.find(frame->hd.stream_id);
        if (found != self->streams.end()) self->on_remote_end(*found->second);
      }
      break;
    case NGHTTP2_GOAWAY:
      self->on_goaway(frame->goaway.last_stream_id);
      break;
    default:
      break;
  }
  return 0;
}

int H2Connection::data_chunk_callback(nghttp2_session* session, std::uint8_t,
                                      std::int32_t stream_id, const std::uint8_t* data,
                                      std::size_t size, void* user) {
  auto* self = static_cast<H2Connection*>(user);
  // The connection's window goes back at once; the stream's as its reader takes messages.
  nghttp2_session_consume_connection(session, size);
  auto found = self->streams.find(stream_id);
  if (found == self->streams.end()) return 0;
  H2StreamPtr stream = found->second;  // on_message may end it
  stream->ungranted += size;
  self->receive_data(*stream, data, size);
  stream->settle_window();
  return 0;
}

int H2Connection::stream_close_callback(nghttp2_session*, std::int32_t stream_id,
                                        std::uint32_t error_code, void* user) {
  auto* self = static_cast<H2Connection*>(user);
  auto found = self->streams.find(stream_id);
  if (found == self->streams.end()) return 0;
  H2StreamPtr stream = std::move(found->second);
  self->streams.erase(found);
  self->record_->call_ended();
  self->on_stream_closed(std::move(stream), error_code);
  return 0;
}

ssize_t H2Connection::read_data_callback(nghttp2_session* session, std::int32_t stream_id,
                                         std::uint8_t* buffer, std::size_t length,
                                         std::uint32_t* flags, nghttp2_data_source* source,
                                         void* user) {
  auto* self = static_cast<H2Connection*>(user);
  auto* stream = static_cast<H2Stream*>(source->ptr);
  std::size_t left = stream->out.size() - stream->out_offset;
  if (left == 0) {
    if (!stream->out_eof) {
      stream->deferred = true;
      return NGHTTP2_ERR_DEFERRED;
    }
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (stream->trailers) {
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      std::vector<nghttp2_nv> nva;
      for (auto& [name, value] : *stream->trailers)
        nva.push_back({reinterpret_cast<std::uint8_t*>(name.data()),
                       reinterpret_cast<std::uint8_t*>(value.data()), name.size(), value.size(),
                       NGHTTP2_NV_FLAG_NONE});
      nghttp2_submit_trailer(session, stream_id, nva.data(), nva.size());
      stream->trailers.reset();
    }
    return 0;
  }
  std::size_t size = std::min(left, length);
  std::memcpy(buffer, stream->out.data() + stream->out_offset, size);
  stream->out_offset += size;
  if (stream->out_offset == stream->out.size()) {
    stream->out.clear();
    stream->out_offset = 0;
    if (stream->on_drained) {
      auto done = std::move(stream->on_drained);
      stream->on_drained = nullptr;
      self->complete_soon(std::move(done));
    }
    if (stream->out_eof) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      if (stream->trailers) {
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        std::vector<nghttp2_nv> nva;
        for (auto& [name, value] : *stream->trailers)
          nva.push_back({reinterpret_cast<std::uint8_t*>(name.data()),
                         reinterpret_cast<std::uint8_t*>(value.data()), name.size(), value.size(),
                         NGHTTP2_NV_FLAG_NONE});
        nghttp2_submit_trailer(session, stream_id, nva.data(), nva.size());
        stream->trailers.reset();
      }
    }
  }
  return static_cast<ssize_t>(size);
}

}  // namespace micro::grpc
