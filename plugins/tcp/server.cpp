// plugins/tcp/server.cpp — accepting connections, turning request frames into
// micro::Request objects for the core's handler, and writing the response frames back.
#include "server.hpp"

#include <atomic>
#include <chrono>
#include <mutex>
#include <unordered_map>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "framed_connection.hpp"
#include "stream.hpp"

namespace micro::tcp {

namespace {

using asio::ip::tcp;

class ServerConnection;

// What every connection of one listener shares; outlives the Listener object so that
// connections still draining can reach the handler.
struct ListenerState {
  ListenerState(CallHandler handler_, Settings settings_)
      : handler(std::move(handler_)), settings(settings_) {}

  CallHandler handler;
  Settings settings;
  std::atomic<bool> closed{false};
  std::mutex mutex;  // guards `connections`; never held across I/O
  std::unordered_map<ServerConnection*, std::weak_ptr<ServerConnection>> connections;
};

// One call between its request frame arriving and its response being queued; the handler
// holds it. The connection tracks it (by request id) until then, to cancel it when a cancel
// frame names it or the connection goes away.
class TcpServerCall final : public ServerCall {
 public:
  TcpServerCall(std::shared_ptr<ServerConnection> connection_, std::uint64_t request_id_)
      : connection(std::move(connection_)), request_id(request_id_) {}

  const std::shared_ptr<ServerConnection> connection;
  const std::uint64_t request_id;
  // The client sent a cancel frame: it dropped the call, so no response is written.
  std::atomic<bool> dropped_by_client{false};

 private:
  void send(Response&& response) override;
};

// The server's end of one stream, held by its connection (by id) until it ends. The
// handler's answer (respond) is its end frame; a client cancel, a protocol violation or the
// connection going away end it here first (and cancel its context), and the answer is then
// dropped.
class TcpStreamCall final : public StreamCall,
                            public StreamEnd,
                            public std::enable_shared_from_this<TcpStreamCall> {
 public:
  TcpStreamCall(std::shared_ptr<ServerConnection> connection_, Strand strand,
                std::uint64_t stream_id, std::uint32_t window, std::uint32_t max_frame)
      : StreamEnd(strand, stream_id, window, max_frame, server_error_id),
        connection(std::move(connection_)) {}

  void async_read(StreamReadHandler done) override { start_read(std::move(done)); }
  void async_write(std::string message, StreamWriteHandler done) override {
    start_write(std::move(message), std::move(done));
  }
  void close_send() override {}  // the server's side closes with its answer
  bool finish(Response&& status) override {
    bool first_end = !is_ended();
    return respond(std::move(status)) && first_end;
  }
  bool ended() const override { return is_ended(); }
  Response status() const override { return final_status(); }
  void on_end(ResponseHandler done) override { add_on_end(std::move(done)); }

  // Strand: ends the stream here with `error`, tells the client (unless `tell` is false)
  // and cancels the handler's context.
  void end_here(Error error, bool tell_client);
  void abort(Error error) override { end_here(std::move(error), true); }
  std::uint32_t grant() const noexcept { return initial_grant(); }

  const std::shared_ptr<ServerConnection> connection;

 private:
  void send(Response&& response) override;
  void emit_message(std::string_view message) override;
  void emit_window(std::uint32_t increment) override;
  void emit_close_send() override {}
  std::shared_ptr<void> keep_alive() override { return shared_from_this(); }
};

class ServerConnection final : public FramedConnection {
 public:
  ServerConnection(Strand strand, Socket socket, std::shared_ptr<ListenerState> state)
      : FramedConnection(std::move(strand), std::move(socket), FrameType::request,
                         state->settings.max_frame),
        state_(std::move(state)) {
    boost::system::error_code error;
    auto remote = socket_.remote_endpoint(error);
    if (!error) remote_ = endpoint_text(remote);
    auto local = socket_.local_endpoint(error);
    if (!error) local_ = endpoint_text(local);
    socket_metadata_.set("Local", local_);
    socket_metadata_.set("Remote", remote_);
    state_->settings.counts->server.fetch_add(1, std::memory_order_relaxed);
    record_ = connection_table().open("tcp", ConnectionSide::server, remote_, local_);
  }
  ~ServerConnection() override {
    state_->settings.counts->server.fetch_sub(1, std::memory_order_relaxed);
  }

  void start() {
    asio::dispatch(strand_, [self = shared()] {
      self->start_writing();
      self->start_reading();
    });
  }

  // Any thread. Responses already handed over are written first (a graceful stop has just
  // drained its handlers and counts on them reaching the clients); the strand runs their
  // queued writes before this, and the linger after the flush is bounded.
  void close() {
    asio::dispatch(strand_, [self = shared()] { self->close_after_flush(); });
  }

  // Strand: what a stream sends and no longer needs.
  void send_stream_frame(std::string frame) { send_frame(std::move(frame)); }
  void send_stream_message(std::uint64_t stream_id, std::string_view message) {
    append_frame(stream_message_frame_size(message.size()),
                 [&](std::string& out) { append_stream_message(out, stream_id, message); });
  }
  void send_stream_window(std::uint64_t stream_id, std::uint32_t increment) {
    append_frame(window_frame_size,
                 [&](std::string& out) { append_stream_window(out, stream_id, increment); });
  }
  std::string stream_buffer() { return take_buffer(); }
  void forget_stream(std::uint64_t stream_id, const TcpStreamCall* key) {
    auto found = streams_.find(stream_id);
    if (found != streams_.end() && found->second.get() == key) streams_.erase(found);
  }
  // Strand: an end frame with `error` for a stream id (known or not).
  void send_stream_error(std::uint64_t stream_id, Error error) {
    Response status = Response::failure(std::move(error));
    std::string frame = take_buffer();
    encode_stream_end(frame, stream_id, status, status.error->to_json());
    send_frame(std::move(frame));
  }
  std::uint32_t max_frame() const noexcept { return max_frame_; }

  // Any thread: encodes here, so the strand only queues bytes.
  void send_response(TcpServerCall& call, Response&& response) {
    record_->call_ended();
    if (call.dropped_by_client.load(std::memory_order_acquire)) return;  // and untracked
    std::uint64_t request_id = call.request_id;
    std::string error_json;
    if (response.error) error_json = response.error->to_json();
    std::size_t size = response_frame_size(response, error_json);
    if (size > max_frame_) {
      response =
          Response::failure(Error(server_error_id, 413,
                                  "tcp: response of " + std::to_string(size) +
                                      " bytes exceeds max_frame " + std::to_string(max_frame_)));
      error_json = response.error->to_json();
    }
    // Handlers usually answer inline, on this strand: encode into a reused buffer and queue
    // without wrapping a handler.
    if (strand_.running_in_this_thread()) {
      untrack(request_id, &call);
      std::string frame = take_buffer();
      encode_response(frame, request_id, 0, response, error_json);
      send_frame(std::move(frame));
      return;
    }
    std::string frame;
    encode_response(frame, request_id, 0, response, error_json);
    asio::dispatch(strand_,
                   [self = shared(), frame = std::move(frame), request_id, key = &call]() mutable {
                     self->untrack(request_id, key);
                     self->send_frame(std::move(frame));
                   });
  }

 private:
  std::shared_ptr<ServerConnection> shared() {
    return std::static_pointer_cast<ServerConnection>(shared_from_this());
  }

  // A call being handled, by request id. `key` tells this call's entry from a later call
  // that reused the id (it is compared, never dereferenced).
  struct Tracked {
    const TcpServerCall* key = nullptr;
    std::weak_ptr<TcpServerCall> call;
  };
  using TrackedMap = std::unordered_map<std::uint64_t, Tracked>;
  // Map nodes kept for reuse, so a steady stream of calls allocates no node per call.
  static constexpr std::size_t spare_nodes_kept = 64;

  void track(const std::shared_ptr<TcpServerCall>& call) {
    if (spare_nodes_.empty()) {
      calls_.try_emplace(call->request_id, Tracked{call.get(), call});
      return;
    }
    auto node = std::move(spare_nodes_.back());
    spare_nodes_.pop_back();
    node.key() = call->request_id;
    node.mapped() = Tracked{call.get(), call};
    if (!calls_.insert(std::move(node)).inserted) return;  // an id already in flight: untracked
  }

  void untrack(std::uint64_t request_id, const TcpServerCall* key) {
    auto found = calls_.find(request_id);
    if (found == calls_.end() || found->second.key != key) return;
    auto node = calls_.extract(found);
    node.mapped().call.reset();
    if (spare_nodes_.size() < spare_nodes_kept) spare_nodes_.push_back(std::move(node));
  }

  // A cancel frame: the client dropped the call. Unknown ids (answered already) are ignored.
  void cancel_call(std::uint64_t request_id) {
    auto found = calls_.find(request_id);
    if (found == calls_.end()) return;
    auto call = found->second.call.lock();
    untrack(request_id, found->second.key);
    if (!call) return;
    call->dropped_by_client.store(true, std::memory_order_release);
    call->cancel();
  }

  // A stream's frames (and cancels, of calls or streams).
  void on_stream_frame(const FrameHeader& header, std::string_view frame) {
    std::uint64_t id = header.request_id;
    if (header.type == FrameType::stream_open) {
      open_stream(header, frame);
      return;
    }
    auto found = streams_.find(id);
    if (header.type == FrameType::cancel) {
      if (found == streams_.end()) {
        cancel_call(id);
        return;
      }
      auto stream = found->second;
      stream->end_here(cancelled_error(server_error_id, "the client cancelled the stream"), false);
      return;
    }
    if (found == streams_.end()) {
      // A stream that ended here meanwhile may still get frames in flight; the client drops
      // an end for an id it no longer has.
      if (header.type == FrameType::stream_message || header.type == FrameType::stream_close_send)
        send_stream_error(
            id, bad_request(server_error_id, "tcp: stream frame (type " +
                                                 std::to_string(static_cast<int>(header.type)) +
                                                 ") for unknown stream id " + std::to_string(id)));
      return;
    }
    auto stream = found->second;
    std::optional<Error> error;
    switch (header.type) {
      case FrameType::stream_message:
        error = stream->receive_message(frame.substr(header_size));
        break;
      case FrameType::stream_close_send:
        stream->receive_close();
        break;
      case FrameType::stream_window: {
        std::uint32_t increment = 0;
        if (auto problem = decode_stream_window(frame, increment))
          error = bad_request(server_error_id, "tcp: malformed stream window frame: " + *problem);
        else
          error = stream->receive_window(increment);
        break;
      }
      default:
        break;
    }
    if (error) stream->end_here(std::move(*error), true);
  }

  void open_stream(const FrameHeader& header, std::string_view frame) {
    std::uint64_t id = header.request_id;
    if (streams_.contains(id)) {
      send_stream_error(id, bad_request(server_error_id, "tcp: stream id " + std::to_string(id) +
                                                             " is already open"));
      return;
    }
    auto call = ServerCall::make<TcpStreamCall>(shared(), strand_, id,
                                                state_->settings.stream_window, max_frame_);
    Request& request = call->request();
    std::uint64_t timeout_nanoseconds = 0;
    if (auto problem = decode_request(frame, request, timeout_nanoseconds)) {
      send_stream_error(
          id, bad_request(server_error_id, "tcp: malformed stream open frame: " + *problem));
      return;
    }
    request.body.clear();
    prepare_request(request, timeout_nanoseconds);
    streams_.emplace(id, call);
    if (std::uint32_t grant = call->grant()) {
      std::string update = take_buffer();
      encode_stream_window(update, id, grant);
      send_frame(std::move(update));
    }
    try {
      state_->handler(call);
    } catch (const Exception& e) {
      call->respond(Response::failure(e.error()));
    } catch (const std::exception& e) {
      call->respond(Response::failure(internal_error(server_error_id, e.what())));
    }
  }

  bool skip_oversize(const FrameHeader& header, const HeaderProblem& problem) override {
    if (header.type != FrameType::stream_message) return false;
    auto found = streams_.find(header.request_id);
    if (found != streams_.end()) {
      auto stream = found->second;
      stream->end_here(
          Error(server_error_id, 413,
                "tcp: stream " + std::to_string(header.request_id) + ": " + problem.what),
          true);
    }
    return true;
  }

  // The deadline re-based on our clock, and the socket's ends in the metadata.
  void prepare_request(Request& request, std::uint64_t timeout_nanoseconds) {
    if (timeout_nanoseconds != 0) {
      // Re-based on our clock; absurd budgets (over ~30 years) count as none.
      constexpr std::uint64_t longest = 1'000'000'000'000'000'000ULL;
      if (timeout_nanoseconds <= longest) {
        request.context.set_deadline(
            Context::Clock::now() +
            std::chrono::duration_cast<Context::Clock::duration>(
                std::chrono::nanoseconds(static_cast<std::int64_t>(timeout_nanoseconds))));
      }
    }
    // Go-Micro's servers tell handlers who is on each end of the socket. Without metadata of
    // the client's own, one copy of the prepared pair costs one allocation instead of two.
    Metadata& metadata = request.context.metadata();
    if (metadata.empty()) {
      metadata = socket_metadata_;
    } else {
      metadata.set("Local", local_);
      metadata.set("Remote", remote_);
    }
  }

  void on_frame(const FrameHeader& header, std::string_view frame) override {
    if (state_->closed.load(std::memory_order_acquire)) return;
    if (header.type != FrameType::request) {
      on_stream_frame(header, frame);
      return;
    }
    auto call = ServerCall::make<TcpServerCall>(shared(), header.request_id);
    Request& request = call->request();
    std::uint64_t timeout_nanoseconds = 0;
    if (auto problem = decode_request(frame, request, timeout_nanoseconds)) {
      // The framing is intact, so only this request is refused; the connection goes on.
      send_error(header.request_id, 0,
                 bad_request(server_error_id, "tcp: malformed request frame: " + *problem));
      return;
    }
    prepare_request(request, timeout_nanoseconds);
    track(call);
    record_->call_started();
    try {
      state_->handler(call);
    } catch (const Exception& e) {
      call->respond(Response::failure(e.error()));
    } catch (const std::exception& e) {
      call->respond(Response::failure(internal_error(server_error_id, e.what())));
    }
  }

  void on_header_problem(const FrameHeader& header, const HeaderProblem& problem) override {
    // The stream cannot be followed past this header: answer if we can, then close.
    if (problem.too_large) {
      send_error(header.request_id, flag_closing,
                 Error(server_error_id, 413, "tcp: " + problem.what));
    } else {
      send_error(0, flag_closing,
                 bad_request(server_error_id, "tcp: malformed request frame: " + problem.what));
    }
    close_after_flush();
  }

  void on_disconnect(const boost::system::error_code&) override {}

  // The connection is gone (the client closed it, it failed, or the listener closed it):
  // every call still being handled is cancelled.
  void on_closed() override {
    {
      std::lock_guard lock(state_->mutex);
      state_->connections.erase(this);
    }
    TrackedMap calls;
    calls.swap(calls_);
    for (auto& [id, tracked] : calls)
      if (auto call = tracked.call.lock()) call->cancel();
    auto streams = std::move(streams_);
    streams_.clear();
    for (auto& [id, stream] : streams)
      stream->end_here(unavailable(server_error_id, "tcp: the client's connection closed"), false);
  }

  void send_error(std::uint64_t request_id, std::uint16_t flags, Error error) {
    Response response = Response::failure(std::move(error));
    std::string frame;
    encode_response(frame, request_id, flags, response, response.error->to_json());
    send_frame(std::move(frame));
  }

  std::shared_ptr<ListenerState> state_;
  std::string local_;
  std::string remote_;
  Metadata socket_metadata_;  // Local and Remote, as every request of this socket gets them
  TrackedMap calls_;
  std::vector<TrackedMap::node_type> spare_nodes_;
  std::unordered_map<std::uint64_t, std::shared_ptr<TcpStreamCall>> streams_;
};

void TcpServerCall::send(Response&& response) {
  connection->send_response(*this, std::move(response));
}

// The handler's answer: the stream's end frame, after every message written before it.
void TcpStreamCall::send(Response&& response) {
  response.body.clear();                        // a stream's end carries a status, not a body
  if (!claim_end(std::move(response))) return;  // ended here first: nothing is sent
  on_strand([this] {
    Response status = final_status();
    std::string error_json;
    if (status.error) error_json = status.error->to_json();
    std::uint32_t limit = connection->max_frame();
    if (response_frame_size(status, error_json) > limit) {
      status = Response::failure(Error(server_error_id, 413,
                                       "tcp: stream end of " +
                                           std::to_string(response_frame_size(status, error_json)) +
                                           " bytes exceeds max_frame " + std::to_string(limit)));
      error_json = status.error->to_json();
    }
    std::string frame = connection->stream_buffer();
    encode_stream_end(frame, stream_id(), status, error_json);
    connection->send_stream_frame(std::move(frame));
    connection->forget_stream(stream_id(), this);
    settle_end(false);
  });
}

void TcpStreamCall::end_here(Error error, bool tell_client) {
  if (!claim_end(Response::failure(error))) return;
  if (tell_client) connection->send_stream_error(stream_id(), error);
  cancel();  // the handler's context: it stops, and its answer is dropped
  auto keep = shared_from_this();
  connection->forget_stream(stream_id(), this);
  settle_end(false);
}

void TcpStreamCall::emit_message(std::string_view message) {
  connection->send_stream_message(stream_id(), message);
}

void TcpStreamCall::emit_window(std::uint32_t increment) {
  connection->send_stream_window(stream_id(), increment);
}

class AcceptLoop : public std::enable_shared_from_this<AcceptLoop> {
 public:
  AcceptLoop(IoExecutor executor, std::shared_ptr<ListenerState> state)
      : executor_(executor),
        strand_(asio::make_strand(executor)),
        acceptor_(strand_),
        retry_timer_(strand_),
        state_(std::move(state)) {}

  // Opens, binds and listens; returns the bound address. Throws micro::Exception.
  std::string open(const tcp::endpoint& endpoint, std::string_view asked) {
    boost::system::error_code error;
    acceptor_.open(endpoint.protocol(), error);
    if (!error) acceptor_.set_option(tcp::acceptor::reuse_address(true), error);
    if (!error) acceptor_.bind(endpoint, error);
    if (!error) acceptor_.listen(asio::socket_base::max_listen_connections, error);
    tcp::endpoint bound;
    if (!error) bound = acceptor_.local_endpoint(error);
    if (error) {
      throw Exception(internal_error(
          server_error_id, "tcp: cannot listen on " + std::string(asked) + ": " + error.message()));
    }
    return endpoint_text(bound);
  }

  void start() {
    asio::dispatch(strand_, [self = shared_from_this()] { self->accept(); });
  }

  // Any thread.
  void stop() {
    asio::dispatch(strand_, [self = shared_from_this()] {
      boost::system::error_code ignored;
      self->acceptor_.close(ignored);
      self->retry_timer_.cancel();
    });
  }

 private:
  void accept() {
    if (!acceptor_.is_open()) return;
    // Each connection gets its own strand: its reads, writes and responses never race.
    Strand connection_strand = asio::make_strand(executor_);
    acceptor_.async_accept(
        connection_strand, [self = shared_from_this(), connection_strand](
                               const boost::system::error_code& error, Socket socket) mutable {
          self->on_accept(error, std::move(connection_strand), std::move(socket));
        });
  }

  void on_accept(const boost::system::error_code& error, Strand connection_strand, Socket socket) {
    if (!acceptor_.is_open() || error == asio::error::operation_aborted) return;
    if (error) {
      // Out of descriptors and the like: back off briefly instead of spinning.
      retry_timer_.expires_after(std::chrono::milliseconds(50));
      retry_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
        if (!e) self->accept();
      });
      return;
    }
    if (!state_->closed.load(std::memory_order_acquire)) {
      if (state_->settings.nodelay) {
        boost::system::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
      }
      auto connection = std::make_shared<ServerConnection>(std::move(connection_strand),
                                                           std::move(socket), state_);
      {
        std::lock_guard lock(state_->mutex);
        state_->connections.emplace(connection.get(), connection);
      }
      connection->start();
    }
    accept();
  }

  IoExecutor executor_;
  Strand strand_;
  Acceptor acceptor_;
  Timer retry_timer_;
  std::shared_ptr<ListenerState> state_;
};

class TcpListener final : public Listener {
 public:
  TcpListener(std::shared_ptr<AcceptLoop> loop, std::shared_ptr<ListenerState> state,
              std::string address)
      : loop_(std::move(loop)), state_(std::move(state)), address_(std::move(address)) {}
  ~TcpListener() override { close(); }

  std::string address() const override { return address_; }

  void stop_accepting() override { loop_->stop(); }

  void close() override {
    state_->closed.store(true, std::memory_order_release);
    loop_->stop();
    std::vector<std::shared_ptr<ServerConnection>> open;
    {
      std::lock_guard lock(state_->mutex);
      for (auto& [pointer, weak] : state_->connections)
        if (auto connection = weak.lock()) open.push_back(std::move(connection));
    }
    for (auto& connection : open) connection->close();
  }

 private:
  std::shared_ptr<AcceptLoop> loop_;
  std::shared_ptr<ListenerState> state_;
  std::string address_;
};

}  // namespace

std::unique_ptr<Listener> make_listener(asio::any_io_executor executor, const Settings& settings,
                                        std::string_view address, CallHandler handler) {
  auto parts = split_address(address);
  if (!parts) {
    throw Exception(bad_request(server_error_id, "tcp: cannot listen on \"" + std::string(address) +
                                                     "\": expected host:port"));
  }
  tcp::endpoint endpoint;
  boost::system::error_code error;
  if (parts->host.empty()) {
    endpoint = tcp::endpoint(tcp::v4(), parts->port);
  } else if (auto ip = asio::ip::make_address(parts->host, error); !error) {
    endpoint = tcp::endpoint(ip, parts->port);
  } else {
    tcp::resolver resolver(executor);
    auto results = resolver.resolve(parts->host, std::to_string(parts->port), error);
    if (error || results.empty()) {
      throw Exception(bad_request(
          server_error_id,
          "tcp: cannot listen on \"" + std::string(address) + "\": " + error.message()));
    }
    endpoint = results.begin()->endpoint();
  }
  auto state = std::make_shared<ListenerState>(std::move(handler), settings);
  auto loop = std::make_shared<AcceptLoop>(io_executor(executor), state);
  std::string bound = loop->open(endpoint, address);
  loop->start();
  return std::make_unique<TcpListener>(std::move(loop), std::move(state), std::move(bound));
}

}  // namespace micro::tcp
