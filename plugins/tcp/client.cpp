// plugins/tcp/client.cpp — client connections: connect with a timeout, many calls in flight
// matched to responses by request id, one deadline timer per connection over a min-heap of the
// calls' deadlines, and clear 503s when a connection cannot be made or is lost.
#include "client.hpp"

#include <algorithm>
#include <unordered_map>

#include <boost/asio/connect.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "framed_connection.hpp"
#include "stream.hpp"

namespace micro::tcp {

using asio::ip::tcp;
using Clock = Context::Clock;

namespace {
std::string calls_pending(std::size_t count) {
  return std::to_string(count) + (count == 1 ? " call pending" : " calls pending");
}
}  // namespace

// The client's end of one stream. Its connection holds it (by id) until it ends; it holds its
// connection for the frames it sends.
class TcpClientStream final : public MessageStream,
                              public StreamEnd,
                              public std::enable_shared_from_this<TcpClientStream> {
 public:
  TcpClientStream(std::shared_ptr<ClientConnection> connection, Strand strand,
                  std::uint64_t stream_id, Request head, std::uint32_t window,
                  std::uint32_t max_frame)
      : StreamEnd(strand, stream_id, window, max_frame, client_error_id),
        connection_(std::move(connection)),
        head_(std::move(head)),
        deadline_timer_(strand) {}

  Request& request() override { return head_; }
  void async_read(StreamReadHandler done) override { start_read(std::move(done)); }
  void async_write(std::string message, StreamWriteHandler done) override {
    start_write(std::move(message), std::move(done));
  }
  void close_send() override { start_close_send(); }
  // The client's end is a cancel: the server is told, the stream ends here with `status`.
  bool finish(Response&& status) override {
    if (!claim_end(std::move(status))) return false;
    on_strand([this] { teardown(false, true); });
    return true;
  }
  bool ended() const override { return is_ended(); }
  Response status() const override { return final_status(); }
  void on_end(ResponseHandler done) override { add_on_end(std::move(done)); }

  // Strand: arms the deadline and watches the head's cancellation.
  void start_watching();
  // Strand: the server's end frame.
  void on_end_frame(Response status) {
    if (claim_end(std::move(status))) teardown(true, false);
  }
  // Strand: the connection is gone (or never came up).
  void on_lost(const Error& error) {
    if (claim_end(Response::failure(error))) teardown(false, false);
  }
  // Strand: the server broke the protocol on this stream; it is told with a cancel.
  void abort(Error error) override {
    if (claim_end(Response::failure(std::move(error)))) teardown(false, true);
  }

 private:
  void emit_message(std::string_view message) override;
  void emit_window(std::uint32_t increment) override;
  void emit_close_send() override;
  std::shared_ptr<void> keep_alive() override { return shared_from_this(); }
  void teardown(bool keep_inbox, bool tell_server);

  std::shared_ptr<ClientConnection> connection_;
  Request head_;
  Timer deadline_timer_;
  std::shared_ptr<CancellationState> cancellation_;
  std::uint64_t cancel_id_ = 0;
};

class ClientConnection final : public FramedConnection {
 public:
  ClientConnection(IoExecutor executor, std::string address, HostPort target,
                   std::shared_ptr<const Settings> settings, std::weak_ptr<ClientPools> pools)
      : FramedConnection(asio::make_strand(executor), FrameType::response, settings->max_frame),
        address_(std::move(address)),
        target_(std::move(target)),
        settings_(std::move(settings)),
        pools_(std::move(pools)),
        resolver_(strand_),
        connect_timer_(strand_),
        deadline_timer_(strand_) {
    settings_->counts->client.fetch_add(1, std::memory_order_relaxed);
    record_ = connection_table().open("tcp", ConnectionSide::client);
  }
  ~ClientConnection() override {
    settings_->counts->client.fetch_sub(1, std::memory_order_relaxed);
  }

  // False once the connection failed, closed, or the server announced it will close:
  // the pool then replaces it.
  bool usable() const noexcept { return usable_.load(std::memory_order_acquire); }

  void submit(OutgoingCall call) {
    // A completion on this connection starting the next call: no handler to wrap and queue.
    if (strand_.running_in_this_thread()) {
      accept_call(std::move(call));
      return;
    }
    asio::dispatch(strand_, [self = shared(), call = std::move(call)]() mutable {
      self->accept_call(std::move(call));
    });
  }

  void submit_stream(std::uint64_t stream_id, std::shared_ptr<const Request> head,
                     std::uint64_t timeout_nanoseconds, std::uint32_t window,
                     OpenStreamHandler done) {
    asio::dispatch(strand_, [self = shared(), stream_id, head = std::move(head),
                             timeout_nanoseconds, window, done = std::move(done)]() mutable {
      self->accept_stream(stream_id, std::move(head), timeout_nanoseconds, window, std::move(done));
    });
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
  void forget_stream(std::uint64_t stream_id) { streams_.erase(stream_id); }
  const std::string& address() const noexcept { return address_; }
  bool socket_closed_public() const noexcept { return socket_closed(); }

  // Any thread: closes and fails every pending call with 503.
  void close(std::string reason) {
    asio::dispatch(strand_, [self = shared(), reason = std::move(reason)] {
      self->closed_by_transport_ = true;
      self->shut("tcp: connection to " + self->address_ + " closed with " +
                 calls_pending(self->pending_.size()) + " (" + reason + ")");
    });
  }

 private:
  // idle until the first call arrives on the strand, so no call can land behind a connect
  // failure it did not see.
  enum class State { idle, connecting, open, closed };

  struct PendingCall {
    ResponseHandler done;
    // Set when the call's context can be cancelled: the callback to forget once it ends.
    std::shared_ptr<CancellationState> cancellation;
    std::uint64_t cancel_id = 0;
  };
  using PendingMap = std::unordered_map<std::uint64_t, PendingCall>;

  // One entry per call with a deadline. Entries of calls answered meanwhile stay until they
  // reach the top or the heap is rebuilt: cheaper than finding them on every response.
  struct DeadlineEntry {
    Clock::time_point deadline;
    std::uint64_t request_id;
    // std::push_heap keeps the largest on top; this order puts the earliest there.
    bool operator<(const DeadlineEntry& other) const noexcept { return deadline > other.deadline; }
  };
  // Map nodes kept for reuse, so a steady stream of calls allocates no node per call.
  static constexpr std::size_t spare_nodes_kept = 64;

  std::shared_ptr<ClientConnection> shared() {
    return std::static_pointer_cast<ClientConnection>(shared_from_this());
  }

  void begin_connect() {
    state_ = State::connecting;
    connect_timer_.expires_after(settings_->connect_timeout);
    connect_timer_.async_wait([self = shared()](const boost::system::error_code& error) {
      self->on_connect_timeout(error);
    });
    boost::system::error_code error;
    auto ip = asio::ip::make_address(target_.host, error);
    if (!error) {
      socket_.async_connect(
          tcp::endpoint(ip, target_.port),
          [self = shared()](const boost::system::error_code& e) { self->on_connected(e); });
      return;
    }
    resolver_.async_resolve(
        target_.host, std::to_string(target_.port),
        [self = shared()](const boost::system::error_code& e, tcp::resolver::results_type results) {
          if (e) {
            self->on_connected(e);
            return;
          }
          asio::async_connect(self->socket_, results,
                              [self](const boost::system::error_code& e2, const tcp::endpoint&) {
                                self->on_connected(e2);
                              });
        });
  }

  void on_connect_timeout(const boost::system::error_code& error) {
    if (error || state_ != State::connecting) return;
    connect_timed_out_ = true;
    resolver_.cancel();
    boost::system::error_code ignored;
    socket_.close(ignored);  // completes the connect with operation_aborted
  }

  void on_connected(const boost::system::error_code& error) {
    if (state_ != State::connecting) return;
    connect_timer_.cancel();
    if (error) {
      std::string detail = connect_timed_out_
                               ? "tcp: connecting to " + address_ + " timed out after " +
                                     std::to_string(settings_->connect_timeout.count()) + "ms"
                               : "tcp: cannot connect to " + address_ + ": " + error.message();
      shut(detail);
      return;
    }
    if (settings_->nodelay) {
      boost::system::error_code ignored;
      socket_.set_option(tcp::no_delay(true), ignored);
    }
    state_ = State::open;
    was_open_ = true;
    {
      boost::system::error_code ignored;
      auto peer = socket_.remote_endpoint(ignored);
      auto local = socket_.local_endpoint(ignored);
      record_->set_addresses(endpoint_text(peer), endpoint_text(local));
    }
    start_reading();
    start_writing();
    auto opening = std::move(opening_);
    opening_.clear();
    for (auto& [stream, done] : opening) {
      asio::post(strand_, [stream = std::move(stream), done = std::move(done)]() mutable {
        done(std::move(stream), std::nullopt);
      });
    }
  }

  void accept_stream(std::uint64_t stream_id, std::shared_ptr<const Request> head,
                     std::uint64_t timeout_nanoseconds, std::uint32_t window,
                     OpenStreamHandler done) {
    if (state_ == State::closed) {
      Error error = unavailable(
          client_error_id,
          close_detail_.empty() ? "tcp: connection to " + address_ + " is closed" : close_detail_);
      asio::post(strand_, [done = std::move(done), error = std::move(error)]() mutable {
        done(nullptr, std::move(error));
      });
      return;
    }
    if (state_ == State::idle) begin_connect();
    auto stream =
        std::make_shared<TcpClientStream>(shared(), strand_, stream_id, *head, window, max_frame_);
    std::string frame = take_buffer();
    encode_stream_open(frame, stream_id, *head, timeout_nanoseconds);
    send_frame(std::move(frame));
    if (std::uint32_t grant = window > initial_stream_window ? window - initial_stream_window : 0) {
      std::string update = take_buffer();
      encode_stream_window(update, stream_id, grant);
      send_frame(std::move(update));
    }
    streams_.emplace(stream_id, stream);
    stream->start_watching();
    if (state_ == State::open) {
      asio::post(strand_,
                 [stream, done = std::move(done)]() mutable { done(stream, std::nullopt); });
      return;
    }
    opening_.push_back({std::move(stream), std::move(done)});
  }

  // Frames of streams; ids no stream has (ended here meanwhile) are dropped.
  void on_stream_frame(const FrameHeader& header, std::string_view frame) {
    auto found = streams_.find(header.request_id);
    if (found == streams_.end()) return;
    auto stream = found->second;
    switch (header.type) {
      case FrameType::stream_message:
        if (auto error = stream->receive_message(frame.substr(header_size)))
          stream->abort(std::move(*error));
        return;
      case FrameType::stream_end: {
        Response status;
        if (auto problem = decode_response(frame, status)) {
          stream->abort(bad_request(client_error_id, "tcp: malformed stream end frame from " +
                                                         address_ + ": " + *problem));
          return;
        }
        stream->on_end_frame(std::move(status));
        return;
      }
      case FrameType::stream_window: {
        std::uint32_t increment = 0;
        std::optional<Error> error;
        if (auto problem = decode_stream_window(frame, increment))
          error = bad_request(client_error_id, "tcp: malformed stream window frame from " +
                                                   address_ + ": " + *problem);
        else
          error = stream->receive_window(increment);
        if (error) stream->abort(std::move(*error));
        return;
      }
      default:
        return;
    }
  }

  bool skip_oversize(const FrameHeader& header, const HeaderProblem& problem) override {
    if (header.type != FrameType::stream_message) return false;
    auto found = streams_.find(header.request_id);
    if (found != streams_.end()) {
      auto stream = found->second;
      stream->abort(Error(client_error_id, 413,
                          "tcp: stream " + std::to_string(header.request_id) + " from " + address_ +
                              ": " + problem.what));
    }
    return true;
  }

  void accept_call(OutgoingCall call) {
    if (state_ == State::closed) {
      // A live connection that dropped between being picked and now: a fresh connection
      // of the pool can still carry the call, once. One that never connected reports why.
      auto pools = pools_.lock();
      if (pools && was_open_ && !closed_by_transport_ && !call.resubmitted) {
        call.resubmitted = true;
        std::string problem;
        if (auto other = pools->pick(address_, problem)) {
          other->submit(std::move(call));
          return;
        }
      }
      complete(call.done,
               unavailable(client_error_id, close_detail_.empty()
                                                ? "tcp: connection to " + address_ + " is closed"
                                                : close_detail_));
      return;
    }
    if (state_ == State::idle) begin_connect();
    if (call.frame.empty()) {
      call.frame = take_buffer();
      encode_request(call.frame, call.request_id, *call.request, call.timeout_nanoseconds);
    }
    // A context that never had cancellation costs a null check here and nothing else.
    auto cancellation = call.request->context.existing_cancellation();
    call.request.reset();  // encoded: the transport's share of the request ends here
    add_pending(call.request_id, std::move(call.done));
    if (call.deadline) add_deadline(*call.deadline, call.request_id);
    send_frame(std::move(call.frame));
    if (cancellation) watch_cancellation(call.request_id, std::move(cancellation));
  }

  // Registered after the request frame is queued, so a cancel frame always follows it. The
  // callback runs on the cancelling thread and posts (never runs inline), so it cannot land
  // inside this function.
  void watch_cancellation(std::uint64_t request_id,
                          std::shared_ptr<CancellationState> cancellation) {
    std::uint64_t id = cancellation->on_cancel([weak = weak_from_this(), request_id] {
      if (auto self = std::static_pointer_cast<ClientConnection>(weak.lock()))
        asio::post(self->strand_, [self, request_id] { self->cancel_call(request_id); });
    });
    auto entry = pending_.find(request_id);
    if (entry == pending_.end()) {
      cancellation->forget(id);
      return;
    }
    entry->second.cancellation = std::move(cancellation);
    entry->second.cancel_id = id;
  }

  // The caller cancelled: the call completes with 499 now, and the server is told so that it
  // can cancel the handler; the connection and its other calls go on.
  void cancel_call(std::uint64_t request_id) {
    auto entry = pending_.find(request_id);
    if (entry == pending_.end()) return;  // answered or timed out meanwhile
    ResponseHandler done = take_pending(entry);
    std::string frame = take_buffer();
    encode_cancel(frame, request_id);
    send_frame(std::move(frame));
    complete(done, cancelled_error(client_error_id));
  }

  void add_pending(std::uint64_t request_id, ResponseHandler done) {
    record_->call_started();
    if (spare_nodes_.empty()) {
      pending_.try_emplace(request_id, PendingCall{std::move(done), nullptr, 0});
      return;
    }
    auto node = std::move(spare_nodes_.back());
    spare_nodes_.pop_back();
    node.key() = request_id;
    node.mapped().done = std::move(done);
    pending_.insert(std::move(node));
  }

  // Removes the call `entry` points at and returns its completion.
  ResponseHandler take_pending(PendingMap::iterator entry) {
    record_->call_ended();
    auto node = pending_.extract(entry);
    PendingCall& call = node.mapped();
    ResponseHandler done = std::move(call.done);
    if (call.cancellation) {
      call.cancellation->forget(call.cancel_id);
      call.cancellation.reset();
    }
    if (spare_nodes_.size() < spare_nodes_kept) spare_nodes_.push_back(std::move(node));
    return done;
  }

  void add_deadline(Clock::time_point deadline, std::uint64_t request_id) {
    // Drop the entries of answered calls once they outnumber the live ones.
    if (deadlines_.size() >= 2 * pending_.size() + 64) {
      std::erase_if(deadlines_, [&](const DeadlineEntry& entry) {
        return !pending_.contains(entry.request_id);
      });
      std::make_heap(deadlines_.begin(), deadlines_.end());
    }
    deadlines_.push_back({deadline, request_id});
    std::push_heap(deadlines_.begin(), deadlines_.end());
    if (!deadline_armed_ || deadline < armed_deadline_) arm_deadline_timer(deadline);
  }

  void arm_deadline_timer(Clock::time_point deadline) {
    deadline_armed_ = true;
    armed_deadline_ = deadline;
    // Re-arming cancels the previous wait, whose handler then sees operation_aborted.
    deadline_timer_.expires_at(deadline);
    deadline_timer_.async_wait(
        [self = shared()](const boost::system::error_code& error) { self->on_deadline(error); });
  }

  // Completes every call whose deadline has passed with 408, then waits for the next one.
  void on_deadline(const boost::system::error_code& error) {
    if (error || state_ == State::closed) return;
    deadline_armed_ = false;
    auto now = Clock::now();
    while (!deadlines_.empty()) {
      const DeadlineEntry& top = deadlines_.front();
      auto entry = pending_.find(top.request_id);
      if (entry != pending_.end() && top.deadline > now) break;  // the next live deadline
      std::pop_heap(deadlines_.begin(), deadlines_.end());
      deadlines_.pop_back();
      if (entry == pending_.end()) continue;       // answered meanwhile
      ResponseHandler done = take_pending(entry);  // a late response for this id is ignored
      complete(done, timeout_error(client_error_id,
                                   "tcp: deadline passed waiting for the response "
                                   "from " +
                                       address_));
      if (state_ == State::closed) return;  // the completion closed the transport
    }
    // A completion above may have submitted a call (and armed the timer for it) meanwhile.
    if (!deadlines_.empty() && (!deadline_armed_ || deadlines_.front().deadline < armed_deadline_))
      arm_deadline_timer(deadlines_.front().deadline);
  }

  void on_frame(const FrameHeader& header, std::string_view frame) override {
    if (header.type != FrameType::response) {
      on_stream_frame(header, frame);
      return;
    }
    if (header.flags & flag_closing) usable_.store(false, std::memory_order_release);
    if (header.request_id == 0 && (header.flags & flag_closing)) {
      // The server refused the stream as a whole: every call here shares its answer.
      Response response;
      Error error = unavailable(client_error_id, "tcp: " + address_ + " closed the connection");
      if (!decode_response(frame, response) && response.error) error = *response.error;
      fail_all(error);
      close_socket();
      return;
    }
    auto entry = pending_.find(header.request_id);
    if (entry == pending_.end()) return;  // late: its deadline already completed it
    ResponseHandler done = take_pending(entry);
    Response response;
    if (auto problem = decode_response(frame, response)) {
      complete(done, bad_request(client_error_id, "tcp: malformed response frame from " + address_ +
                                                      ": " + *problem));
      return;
    }
    try {
      done(std::move(response));
    } catch (...) {
      // A completion must not throw; swallowing keeps this connection's other calls going.
    }
  }

  void on_header_problem(const FrameHeader& header, const HeaderProblem& problem) override {
    if (problem.too_large) {
      auto entry = pending_.find(header.request_id);
      if (entry != pending_.end()) {
        ResponseHandler done = take_pending(entry);
        complete(done, Error(client_error_id, 413,
                             "tcp: response from " + address_ + ": " + problem.what));
      }
      shut("tcp: connection to " + address_ + " closed with " + calls_pending(pending_.size()) +
           " after an oversize response");
      return;
    }
    fail_all(bad_request(client_error_id,
                         "tcp: malformed response frame from " + address_ + ": " + problem.what));
    close_socket();
  }

  void on_disconnect(const boost::system::error_code& error) override {
    std::string detail =
        "tcp: connection to " + address_ + " closed with " + calls_pending(pending_.size());
    if (!streams_.empty())
      detail += " and " + std::to_string(streams_.size()) +
                (streams_.size() == 1 ? " stream open" : " streams open");
    if (error != asio::error::eof) detail += " (" + error.message() + ")";
    shut(detail);
  }

  void on_closed() override {
    usable_.store(false, std::memory_order_release);
    state_ = State::closed;
    connect_timer_.cancel();
    deadline_timer_.cancel();
    deadline_armed_ = false;
    resolver_.cancel();
  }

  // Closes and completes every pending call with a 503 saying `detail`.
  void shut(const std::string& detail) {
    if (close_detail_.empty()) close_detail_ = detail;
    close_socket();
    fail_all(unavailable(client_error_id, detail));
  }

  void fail_all(const Error& error) {
    usable_.store(false, std::memory_order_release);
    auto calls = std::move(pending_);
    pending_.clear();
    deadlines_.clear();
    for (auto& [id, call] : calls) {
      if (call.cancellation) call.cancellation->forget(call.cancel_id);
      complete(call.done, error);
    }
    // Streams not yet open fail to open (the core may try another node); open ones end.
    auto opening = std::move(opening_);
    opening_.clear();
    for (auto& [stream, done] : opening) {
      stream->on_lost(error);
      asio::post(strand_, [done = std::move(done), error]() mutable { done(nullptr, error); });
    }
    auto streams = std::move(streams_);
    streams_.clear();
    for (auto& [id, stream] : streams) stream->on_lost(error);
  }

  static void complete(ResponseHandler& done, Error error) {
    try {
      done(Response::failure(std::move(error)));
    } catch (...) {
      // As in on_frame: a throwing completion must not take the connection down.
    }
  }

  std::string address_;
  HostPort target_;
  std::shared_ptr<const Settings> settings_;
  std::weak_ptr<ClientPools> pools_;
  Resolver resolver_;
  Timer connect_timer_;
  Timer deadline_timer_;
  PendingMap pending_;
  std::vector<PendingMap::node_type> spare_nodes_;
  std::unordered_map<std::uint64_t, std::shared_ptr<TcpClientStream>> streams_;
  // Streams whose open completes once the connection is up.
  std::vector<std::pair<std::shared_ptr<TcpClientStream>, OpenStreamHandler>> opening_;
  std::vector<DeadlineEntry> deadlines_;  // a min-heap by deadline
  Clock::time_point armed_deadline_;      // what deadline_timer_ waits for, when armed
  bool deadline_armed_ = false;
  std::atomic<bool> usable_{true};
  State state_ = State::idle;
  std::string close_detail_;  // why it closed, for calls that arrive afterwards
  bool was_open_ = false;
  bool connect_timed_out_ = false;
  bool closed_by_transport_ = false;
};

std::shared_ptr<ClientConnection> ClientPools::pick(std::string_view address,
                                                    std::string& problem) {
  std::shared_ptr<ClientConnection> chosen;
  {
    std::lock_guard lock(mutex_);
    auto found = pools_.find(address);
    if (found == pools_.end()) {
      if (!split_address(address)) {
        problem = "tcp: cannot call \"" + std::string(address) + "\": expected host:port";
        return nullptr;
      }
      found = pools_.emplace(std::string(address), Pool{}).first;
      found->second.connections.resize(settings_->pool_size);
    }
    Pool& pool = found->second;
    auto& slot = pool.connections[pool.next++ % pool.connections.size()];
    if (!slot || !slot->usable()) {
      slot = std::make_shared<ClientConnection>(
          executor_, std::string(address), *split_address(address), settings_, weak_from_this());
    }
    chosen = slot;
  }
  return chosen;
}

void ClientPools::close_all() {
  std::map<std::string, Pool, std::less<>> pools;
  {
    std::lock_guard lock(mutex_);
    pools.swap(pools_);
  }
  for (auto& [address, pool] : pools)
    for (auto& connection : pool.connections)
      if (connection) connection->close("transport closed");
}

void submit_call(const std::shared_ptr<ClientConnection>& connection, OutgoingCall call) {
  connection->submit(std::move(call));
}

void submit_stream(const std::shared_ptr<ClientConnection>& connection, std::uint64_t stream_id,
                   std::shared_ptr<const Request> head, std::uint64_t timeout_nanoseconds,
                   std::uint32_t stream_window, OpenStreamHandler done) {
  connection->submit_stream(stream_id, std::move(head), timeout_nanoseconds, stream_window,
                            std::move(done));
}

void TcpClientStream::start_watching() {
  Context& context = head_.context;
  if (context.has_deadline()) {
    deadline_timer_.expires_at(context.deadline());
    deadline_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& error) {
      if (error) return;
      if (self->claim_end(Response::failure(
              timeout_error(client_error_id, "tcp: stream deadline passed (" + self->head_.service +
                                                 "." + self->head_.endpoint + " at " +
                                                 self->connection_->address() + ")"))))
        self->teardown(false, true);
    });
  }
  if (auto cancellation = context.existing_cancellation()) {
    std::weak_ptr<TcpClientStream> weak = weak_from_this();
    cancel_id_ = cancellation->on_cancel([weak] {
      if (auto self = weak.lock())
        self->finish(Response::failure(cancelled_error(client_error_id, "stream cancelled")));
    });
    cancellation_ = std::move(cancellation);
  }
}

void TcpClientStream::teardown(bool keep_inbox, bool tell_server) {
  if (tell_server && !connection_->socket_closed_public()) {
    std::string frame = connection_->stream_buffer();
    encode_cancel(frame, stream_id());
    connection_->send_stream_frame(std::move(frame));
  }
  deadline_timer_.cancel();
  if (cancellation_) {
    cancellation_->forget(cancel_id_);
    cancellation_.reset();
  }
  auto keep = shared_from_this();  // the connection's share goes next
  connection_->forget_stream(stream_id());
  settle_end(keep_inbox);
}

void TcpClientStream::emit_message(std::string_view message) {
  connection_->send_stream_message(stream_id(), message);
}

void TcpClientStream::emit_window(std::uint32_t increment) {
  connection_->send_stream_window(stream_id(), increment);
}

void TcpClientStream::emit_close_send() {
  std::string frame = connection_->stream_buffer();
  encode_stream_close_send(frame, stream_id());
  connection_->send_stream_frame(std::move(frame));
}

}  // namespace micro::tcp
