// plugins/grpc/client.cpp — the client side: connects (with a timeout) and keeps pool_size
// h2c connections per address; sends each call as HEADERS (path, content type, te, grpc-timeout,
// metadata) and its messages, and reads the answer's headers, messages and trailers into a
// Response (unary) or a MessageStream (streams). Deadlines and cancellation reset the stream
// with CANCEL; a lost connection or GOAWAY ends what it carried with 503.
#include "client.hpp"

#include <atomic>
#include <map>
#include <mutex>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <micro/base64.hpp>
#include <micro/log.hpp>

#include "session.hpp"

namespace micro::grpc {

namespace {

class ClientConnection;

std::string plural_calls(std::size_t count) {
  return std::to_string(count) + (count == 1 ? " call" : " calls");
}

// One call or stream on a connection.
class ClientCall final : public H2Stream,
                         public MessageStream,
                         public std::enable_shared_from_this<ClientCall> {
 public:
  ClientCall(std::shared_ptr<H2Connection> connection, std::uint32_t max_message,
             std::shared_ptr<const Request> request, std::string address)
      : H2Stream(std::move(connection), max_message),
        head_(std::move(request)),
        address_(std::move(address)) {
    if (head_) service_ = head_->service;
  }

  bool streaming = false;
  ResponseHandler done;      // unary
  OpenStreamHandler opened;  // stream

  // From the answer.
  int http_status = 0;
  std::string content_type, encoding, grpc_message, micro_error, key_case;
  std::optional<int> grpc_status;
  Metadata metadata;
  std::optional<std::string> body;
  std::string problem;  // a bad header from the server
  std::shared_ptr<CancellationState> cancellation;
  std::uint64_t cancellation_id = 0;
  bool send_closed = false;

  std::shared_ptr<const Request> head_;  // unary: released on completion
  Request own_;                          // a stream's head as sent (request())
  std::string service_;
  std::string address_;

  // ---- MessageStream (client side of a stream) ----
  Request& request() override { return own_; }
  void async_read(StreamReadHandler handler) override;
  void async_write(std::string message, StreamWriteHandler handler) override;
  void close_send() override;
  bool finish(Response&& status) override;
  bool ended() const override { return is_ended(); }
  Response status() const override { return final_status(); }
  void on_end(ResponseHandler handler) override { add_on_end(std::move(handler)); }

  // Strand: ends the call with `response` (first end wins); `reset` tells the server.
  void complete(Response response, bool reset);
  // Strand: the answer is all in (END_STREAM or the stream closed): the final Response.
  Response result() const;
};

class ClientConnection final : public H2Connection {
 public:
  ClientConnection(Strand strand, Settings settings, std::string address,
                   std::function<void(ClientConnection*)> forget)
      : H2Connection(strand, settings, false),
        address_(std::move(address)),
        forget_(std::move(forget)),
        resolver_(strand) {}

  const std::string& address() const noexcept { return address_; }
  std::atomic<bool> usable{true};  // not draining, not closed

  // Strand: runs `start` once connected, or fails the call with the connect error.
  void enqueue(std::shared_ptr<ClientCall> call);
  void begin(const std::shared_ptr<ClientCall>& call);
  void close_now(const std::string& why) {
    closing_reason_ = why;
    failed_connect_ =
        Error(client_error_id, 503, "grpc: connection to " + address_ + " closed (" + why + ")");
    if (!connected_) {
      fail_queued(*failed_connect_);
      return;
    }
    abort(why);
  }

 protected:
  int on_begin_headers(std::int32_t) override { return 0; }
  int on_header(std::int32_t stream_id, std::string_view name, std::string_view value,
                bool trailer) override;
  void on_headers_done(std::int32_t stream_id, bool end_stream, bool trailer) override;
  void on_message(H2Stream& stream, std::string message, std::size_t wire) override;
  void on_bad_message(H2Stream& stream, Error error) override;
  void on_remote_end(H2Stream& stream) override;
  void on_stream_closed(H2StreamPtr stream, std::uint32_t error_code) override;
  void on_goaway(std::int32_t) override {
    usable = false;
    forget_(this);
  }
  void lost(const std::string& reason) override;
  std::string_view encoding_of(H2Stream& stream) override {
    return static_cast<ClientCall&>(stream).encoding;
  }

 private:
  void connect();
  void ready();  // connected (and TLS agreed): the queued calls go
  void fail_queued(const Error& error);
  // Deadlines: a min-heap with one timer armed for the earliest (no timer per call). Entries
  // of calls that ended are dropped when they come up, or in a sweep when they pile up.
  void watch_deadline(const std::shared_ptr<ClientCall>& call, Context::Clock::time_point at);
  void arm_deadline_timer();
  void expire_deadlines();
  struct Deadline {
    Context::Clock::time_point at;
    std::weak_ptr<ClientCall> call;
    bool operator>(const Deadline& other) const noexcept { return at > other.at; }
  };
  std::shared_ptr<ClientCall> find(std::int32_t id) {
    auto found = streams.find(id);
    return found == streams.end() ? nullptr : std::static_pointer_cast<ClientCall>(found->second);
  }

  std::string address_;
  std::function<void(ClientConnection*)> forget_;
  Resolver resolver_;
  std::optional<Timer> connect_timer_;
  bool connecting_ = false;
  bool connected_ = false;
  std::optional<Error> failed_connect_;
  std::string closing_reason_;
  std::vector<std::shared_ptr<ClientCall>> queued_;
  std::vector<Deadline> deadlines_;  // a heap on std::greater: the earliest first
  std::optional<Timer> deadline_timer_;
  Context::Clock::time_point armed_for_ = Context::Clock::time_point::max();
};

void ClientConnection::watch_deadline(const std::shared_ptr<ClientCall>& call,
                                      Context::Clock::time_point at) {
  if (deadlines_.size() >= 1024 && deadlines_.size() > 4 * streams.size()) {
    std::erase_if(deadlines_, [](const Deadline& deadline) {
      auto call = deadline.call.lock();
      return !call || call->is_ended();
    });
    std::make_heap(deadlines_.begin(), deadlines_.end(), std::greater<>());
  }
  deadlines_.push_back({at, call});
  std::push_heap(deadlines_.begin(), deadlines_.end(), std::greater<>());
  if (at < armed_for_) arm_deadline_timer();
}

void ClientConnection::arm_deadline_timer() {
  if (deadlines_.empty()) return;
  if (!deadline_timer_) deadline_timer_.emplace(strand_);
  armed_for_ = deadlines_.front().at;
  deadline_timer_->expires_at(armed_for_);
  auto self = std::static_pointer_cast<ClientConnection>(shared_from_this());
  deadline_timer_->async_wait([self, armed = armed_for_](const boost::system::error_code& error) {
    if (error || armed != self->armed_for_) return;  // re-armed for an earlier one
    self->armed_for_ = Context::Clock::time_point::max();
    self->expire_deadlines();
  });
}

void ClientConnection::expire_deadlines() {
  auto now = Context::Clock::now();
  while (!deadlines_.empty() && deadlines_.front().at <= now) {
    std::pop_heap(deadlines_.begin(), deadlines_.end(), std::greater<>());
    auto call = deadlines_.back().call.lock();
    deadlines_.pop_back();
    if (!call || call->is_ended()) continue;
    call->complete(Response::failure(timeout_error(
                       client_error_id, "grpc: deadline passed waiting for the " +
                                            std::string(call->streaming ? "stream " : "response ") +
                                            "from " + call->address_)),
                   true);
  }
  if (!closed()) arm_deadline_timer();
}

// ---- ClientCall --------------------------------------------------------------------------

Response ClientCall::result() const {
  if (!problem.empty()) return Response::failure(Error(client_error_id, 500, problem));
  if (!grpc_status) {
    if (http_status != 0 && http_status != 200)
      return Response::failure(error_from_status(
          grpc_status_for_http(http_status),
          "grpc: HTTP status " + std::to_string(http_status) + " from " + address_, service_));
    return Response::failure(
        Error(client_error_id, 500, "grpc: " + address_ + " ended the call without grpc-status"));
  }
  Response response;
  response.metadata = metadata;
  if (!key_case.empty()) restore_key_case(response.metadata, key_case);
  if (*grpc_status != status_ok) {
    // The status as sent: Error codes merge some (ABORTED and ALREADY_EXISTS are both 409),
    // and OTLP's retry rules, for one, tell them apart.
    response.metadata.set("grpc-status", std::to_string(*grpc_status));
    if (!micro_error.empty()) {
      response.error = Error::from_json(micro_error);
    } else {
      response.error = error_from_status(*grpc_status, percent_decode(grpc_message), service_);
    }
    return response;
  }
  auto type = micro_content_type(content_type);
  response.content_type = type ? *type : content_type;
  if (!streaming) response.body = body.value_or(std::string());
  return response;
}

void ClientCall::complete(Response response, bool reset) {
  if (!claim_end(response)) return;
  auto* connection = static_cast<ClientConnection*>(connection_.get());
  if (reset && id > 0 && !connection->closed()) {
    nghttp2_submit_rst_stream(connection->session(), NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    connection->flush();
  }
  if (cancellation) {
    cancellation->forget(cancellation_id);
    cancellation.reset();
  }
  if (streaming) {
    settle_end();
    return;
  }
  settle_end();
  head_.reset();  // the caller may reuse its request once done has run
  if (done) {
    asio::post(connection_->strand(),
               [done = std::move(done), response = std::move(response)]() mutable {
                 done(std::move(response));
               });
    done = nullptr;
  }
}

void ClientCall::async_read(StreamReadHandler handler) {
  connection_->start_operation([self = shared_from_this(), handler = std::move(handler)]() mutable {
    self->do_read(std::move(handler));
  });
}

void ClientCall::async_write(std::string message, StreamWriteHandler handler) {
  connection_->start_operation([self = shared_from_this(), message = std::move(message),
                                handler = std::move(handler)]() mutable {
    auto fail = [&](Error error) {
      asio::post(self->connection_->strand(),
                 [handler = std::move(handler), error = std::move(error)]() mutable {
                   handler(std::move(error));
                 });
    };
    if (self->is_ended() || self->id < 0) {
      Response status = self->final_status();
      fail(status.error ? *status.error
                        : Error(client_error_id, 400, "grpc: the stream has ended"));
      return;
    }
    if (self->send_closed) {
      fail(Error(client_error_id, 400, "grpc: write after close_send"));
      return;
    }
    if (self->on_drained) {
      fail(Error(client_error_id, 400, "grpc: a write is already pending on this stream"));
      return;
    }
    if (message.size() > self->connection_->settings().max_message) {
      fail(Error(client_error_id, 413,
                 "grpc: stream message of " + std::to_string(message.size()) +
                     " bytes exceeds max_message " +
                     std::to_string(self->connection_->settings().max_message) + "; not sent to " +
                     self->address_));
      return;
    }
    self->queue_write(message, [handler = std::move(handler)]() mutable { handler(std::nullopt); });
    self->connection_->resume(*self);
    self->connection_->flush();
  });
}

void ClientCall::close_send() {
  connection_->start_operation([self = shared_from_this()] {
    if (self->send_closed) return;
    self->send_closed = true;
    self->out_eof = true;
    if (self->id > 0 && !self->is_ended()) {
      self->connection_->resume(*self);
      self->connection_->flush();
    }
  });
}

bool ClientCall::finish(Response&& status) {
  if (!claim_end(status)) return false;
  connection_->on_strand([self = shared_from_this()] {
    auto* connection = self->connection_.get();
    if (self->id > 0 && !connection->closed()) {
      nghttp2_submit_rst_stream(connection->session(), NGHTTP2_FLAG_NONE, self->id, NGHTTP2_CANCEL);
      connection->flush();
    }
    if (self->cancellation) {
      self->cancellation->forget(self->cancellation_id);
      self->cancellation.reset();
    }
    self->settle_end();
  });
  return true;
}

// ---- ClientConnection --------------------------------------------------------------------

void ClientConnection::enqueue(std::shared_ptr<ClientCall> call) {
  if (failed_connect_) {
    call->complete(Response::failure(*failed_connect_), false);
    if (call->opened) {
      auto opened = std::move(call->opened);
      asio::post(strand_, [opened = std::move(opened), error = *failed_connect_]() mutable {
        opened(nullptr, error);
      });
    }
    return;
  }
  if (connected_) {
    begin(call);
    return;
  }
  queued_.push_back(std::move(call));
  if (!connecting_) connect();
}

void ClientConnection::connect() {
  connecting_ = true;
  auto parts = split_address(address_);
  auto self = std::static_pointer_cast<ClientConnection>(shared_from_this());
  connect_timer_.emplace(strand_, settings_.connect_timeout);
  connect_timer_->async_wait([self](const boost::system::error_code& error) {
    if (error || self->connected_ || self->failed_connect_) return;
    self->failed_connect_ =
        Error(client_error_id, 503,
              "grpc: connecting to " + self->address_ + " timed out after " +
                  std::to_string(self->settings_.connect_timeout.count()) + "ms");
    boost::system::error_code ignored;
    self->resolver_.cancel();
    self->socket_.close(ignored);
    self->fail_queued(*self->failed_connect_);
  });
  resolver_.async_resolve(
      parts->host, std::to_string(parts->port),
      [self](const boost::system::error_code& error,
             asio::ip::tcp::resolver::results_type results) {
        if (self->failed_connect_) return;
        if (error) {
          self->failed_connect_ =
              Error(client_error_id, 503,
                    "grpc: cannot resolve " + self->address_ + ": " + error.message());
          self->fail_queued(*self->failed_connect_);
          return;
        }
        asio::async_connect(
            self->socket_, results,
            [self](const boost::system::error_code& error, const asio::ip::tcp::endpoint&) {
              if (self->failed_connect_) return;
              if (error) {
                self->failed_connect_ =
                    Error(client_error_id, 503,
                          "grpc: cannot connect to " + self->address_ + ": " + error.message());
                self->fail_queued(*self->failed_connect_);
                return;
              }
              boost::system::error_code ignored;
              self->socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
              if (!self->settings_.client_tls) {
                self->ready();
                return;
              }
              auto host = split_address(self->address_)->host;
              self->handshake_tls(
                  *self->settings_.client_tls, false, host,
                  [self](std::optional<std::string> problem) {
                    if (self->failed_connect_) return;
                    if (problem) {
                      self->failed_connect_ =
                          Error(client_error_id, 503,
                                "grpc: cannot connect to " + self->address_ + ": " + *problem);
                      boost::system::error_code ignored;
                      self->socket_.close(ignored);
                      self->fail_queued(*self->failed_connect_);
                      return;
                    }
                    self->ready();
                  });
            });
      });
}

void ClientConnection::ready() {
  if (connect_timer_) connect_timer_->cancel();
  connected_ = true;
  start();
  auto queued = std::move(queued_);
  queued_.clear();
  for (auto& call : queued) begin(call);
  flush();
}

void ClientConnection::fail_queued(const Error& error) {
  usable = false;
  forget_(this);
  auto queued = std::move(queued_);
  queued_.clear();
  for (auto& call : queued) {
    if (call->opened) {
      auto opened = std::move(call->opened);
      call->claim_end(Response::failure(error));
      call->settle_end();
      asio::post(strand_,
                 [opened = std::move(opened), error]() mutable { opened(nullptr, error); });
    } else {
      call->complete(Response::failure(error), false);
    }
  }
}

void ClientConnection::begin(const std::shared_ptr<ClientCall>& call) {
  if (closed()) {
    Error error(client_error_id, 503, "grpc: connection to " + address_ + " closed");
    if (call->opened) {
      auto opened = std::move(call->opened);
      asio::post(strand_,
                 [opened = std::move(opened), error]() mutable { opened(nullptr, error); });
    } else {
      call->complete(Response::failure(error), false);
    }
    return;
  }
  const Request& request = call->streaming ? call->own_ : *call->head_;
  if (request.context.cancelled()) {
    Error error =
        cancelled_error(client_error_id, call->streaming ? "stream cancelled" : "call cancelled");
    if (call->opened) {
      auto opened = std::move(call->opened);
      asio::post(strand_,
                 [opened = std::move(opened), error]() mutable { opened(nullptr, error); });
    } else {
      call->complete(Response::failure(error), false);
    }
    return;
  }
  HeaderList headers;
  headers.reserve(12 + request.context.metadata().size());
  headers = {{":method", "POST"},
             {":scheme", tls() ? "https" : "http"},
             {":path", path_for(request.service, request.endpoint)},
             {":authority", address_},
             {"content-type", grpc_content_type(request.content_type)},
             {"te", "trailers"},
             {"user-agent", "micro-cpp-grpc"},
             {"micro-call", call->streaming ? "stream" : "unary"},
             {"grpc-accept-encoding", "identity,gzip"}};
  if (settings().gzip) {
    headers.emplace_back("grpc-encoding", "gzip");
    call->send_gzip = true;
  }
  if (request.context.has_deadline()) {
    auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(request.context.deadline() -
                                                                     Context::Clock::now());
    headers.emplace_back("grpc-timeout",
                         encode_timeout(std::max(left, std::chrono::nanoseconds(1))));
  }
  append_metadata(request.context.metadata(), headers);
  std::vector<nghttp2_nv> nva;
  nva.reserve(headers.size());
  for (auto& [name, value] : headers)
    nva.push_back({reinterpret_cast<std::uint8_t*>(name.data()),
                   reinterpret_cast<std::uint8_t*>(value.data()), name.size(), value.size(),
                   NGHTTP2_NV_FLAG_NONE});
  if (!call->streaming) {
    append_message(call->out, request.body, call->send_gzip);
    call->out_eof = true;
  }
  auto provider = this->provider(*call);
  std::int32_t id =
      nghttp2_submit_request(session(), nullptr, nva.data(), nva.size(), &provider, nullptr);
  if (id < 0) {
    Error error(
        client_error_id, 503,
        std::string("grpc: cannot open a stream to ") + address_ + ": " + nghttp2_strerror(id));
    if (call->opened) {
      auto opened = std::move(call->opened);
      asio::post(strand_,
                 [opened = std::move(opened), error]() mutable { opened(nullptr, error); });
    } else {
      call->complete(Response::failure(error), false);
    }
    return;
  }
  call->id = id;
  add_stream(id, call);
  if (request.context.has_deadline()) watch_deadline(call, request.context.deadline());
  if (auto cancellation = request.context.existing_cancellation()) {
    std::weak_ptr<ClientCall> weak = call;
    call->cancellation = cancellation;
    call->cancellation_id = cancellation->on_cancel([weak] {
      auto call = weak.lock();
      if (!call) return;
      call->connection()->on_strand([call] {
        call->complete(
            Response::failure(cancelled_error(
                client_error_id, call->streaming ? "stream cancelled" : "call cancelled")),
            true);
      });
    });
  }
  if (call->opened) {
    auto opened = std::move(call->opened);
    MessageStreamPtr stream = call;
    asio::post(strand_,
               [opened = std::move(opened), stream]() mutable { opened(stream, std::nullopt); });
  }
  flush();
}

int ClientConnection::on_header(std::int32_t stream_id, std::string_view name,
                                std::string_view value, bool) {
  auto call = find(stream_id);
  if (!call) return 0;
  if (name == ":status") {
    call->http_status = std::atoi(std::string(value).c_str());
  } else if (name == "content-type") {
    call->content_type = value;
  } else if (name == "grpc-status") {
    int status = 0;
    for (char c : value) {
      if (c < '0' || c > '9') {
        call->problem = "grpc: grpc-status \"" + std::string(value) + "\" from " + call->address_ +
                        " is not a number";
        return 0;
      }
      status = status * 10 + (c - '0');
    }
    call->grpc_status = status;
  } else if (name == "grpc-message") {
    call->grpc_message = value;
  } else if (name == "grpc-encoding") {
    call->encoding = value;
  } else if (name == "micro-key-case") {
    if (!call->key_case.empty()) call->key_case += ',';
    call->key_case += value;
  } else if (name == "micro-error-bin") {
    std::string padded(value);
    while (padded.size() % 4 != 0) padded.push_back('=');
    if (auto decoded = base64::try_decode(padded)) call->micro_error = std::move(*decoded);
  } else {
    std::string problem;
    if (!add_metadata(call->metadata, name, value, problem) && call->problem.empty())
      call->problem = "grpc: from " + call->address_ + ": " + problem;
  }
  return 0;
}

void ClientConnection::on_headers_done(std::int32_t stream_id, bool end_stream, bool) {
  auto call = find(stream_id);
  if (call && end_stream) on_remote_end(*call);
}

void ClientConnection::on_message(H2Stream& base, std::string message, std::size_t wire) {
  auto& call = static_cast<ClientCall&>(base);
  if (call.streaming) {
    call.deliver_message(std::move(message), wire);
    return;
  }
  if (call.body) {
    auto self = find(call.id);
    if (self)
      self->complete(
          Response::failure(Error(
              client_error_id, 500,
              "grpc: " + call.address_ + " answered a unary call with more than one message")),
          true);
    return;
  }
  call.body = std::move(message);
}

void ClientConnection::on_bad_message(H2Stream& base, Error error) {
  auto call = find(base.id);
  if (!call) return;
  error.detail = "grpc: response from " + call->address_ + ": " + error.detail.substr(6);
  call->complete(Response::failure(std::move(error)), true);
}

void ClientConnection::on_remote_end(H2Stream& base) {
  auto call = find(base.id);
  if (!call || call->is_ended()) return;
  call->peer_done = true;
  if (call->streaming && (!call->inbox.empty())) {
    // Messages already received stay readable after the end.
  }
  call->complete(call->result(), false);
}

void ClientConnection::on_stream_closed(H2StreamPtr base, std::uint32_t error_code) {
  auto call = std::static_pointer_cast<ClientCall>(base);
  if (!call->is_ended()) {
    Error error;
    if (error_code == NGHTTP2_REFUSED_STREAM)
      error = unavailable(client_error_id, "grpc: " + address_ +
                                               " refused the stream (it is going "
                                               "away); the call was not processed");
    else if (error_code == NGHTTP2_CANCEL)
      error = cancelled_error(client_error_id, "grpc: " + address_ + " cancelled the call");
    else if (error_code != NGHTTP2_NO_ERROR)
      error =
          unavailable(client_error_id, "grpc: " + address_ + " reset the stream (HTTP/2 error " +
                                           std::to_string(error_code) + ")");
    if (error_code != NGHTTP2_NO_ERROR)
      call->complete(Response::failure(std::move(error)), false);
    else
      call->complete(call->result(), false);
  }
  call->id = -1;
}

void ClientConnection::lost(const std::string& reason) {
  usable = false;
  forget_(this);
  if (deadline_timer_) deadline_timer_->cancel();
  deadlines_.clear();
  auto open = take_streams();
  std::string why = closing_reason_.empty() ? reason : closing_reason_;
  Error error(client_error_id, 503,
              "grpc: connection to " + address_ + " closed with " + plural_calls(open.size()) +
                  " pending (" + why + ")");
  for (auto& [id, base] : open) {
    auto call = std::static_pointer_cast<ClientCall>(base);
    call->id = -1;
    call->complete(Response::failure(error), false);
  }
  if (!queued_.empty()) fail_queued(error);
}

}  // namespace

// ---- ClientPools -------------------------------------------------------------------------

struct ClientPools::State : std::enable_shared_from_this<ClientPools::State> {
  State(IoExecutor executor, Settings settings) : executor(executor), settings(settings) {}
  IoExecutor executor;
  Settings settings;
  std::mutex mutex;
  std::map<std::string, std::vector<std::shared_ptr<ClientConnection>>, std::less<>> pools;
  std::atomic<std::uint64_t> next{0};

  std::shared_ptr<ClientConnection> pick(std::string_view address) {
    std::lock_guard lock(mutex);
    auto& pool = pools[std::string(address)];
    std::erase_if(pool, [](const auto& connection) { return !connection->usable.load(); });
    if (pool.size() < settings.pool_size) {
      std::weak_ptr<State> weak = shared_from_this();
      auto connection =
          std::make_shared<ClientConnection>(asio::make_strand(executor), settings,
                                             std::string(address), [weak](ClientConnection* gone) {
                                               if (auto state = weak.lock()) state->forget(gone);
                                             });
      pool.push_back(connection);
      return connection;
    }
    return pool[next.fetch_add(1, std::memory_order_relaxed) % pool.size()];
  }

  void forget(ClientConnection* gone) {
    std::lock_guard lock(mutex);
    auto found = pools.find(gone->address());
    if (found == pools.end()) return;
    std::erase_if(found->second,
                  [gone](const auto& connection) { return connection.get() == gone; });
  }
};

ClientPools::ClientPools(IoExecutor executor, Settings settings)
    : state_(std::make_shared<State>(executor, settings)) {}

ClientPools::~ClientPools() {
  close_all();
}

void ClientPools::call(std::string_view address, std::shared_ptr<const Request> request,
                       ResponseHandler done) {
  auto connection = state_->pick(address);
  auto call = std::make_shared<ClientCall>(connection, state_->settings.max_message,
                                           std::move(request), std::string(address));
  call->done = std::move(done);
  connection->on_strand([connection, call] { connection->enqueue(call); });
}

void ClientPools::open(std::string_view address, std::shared_ptr<const Request> head,
                       OpenStreamHandler done) {
  auto connection = state_->pick(address);
  auto call = std::make_shared<ClientCall>(connection, state_->settings.max_message,
                                           std::move(head), std::string(address));
  call->own_ = *call->head_;  // a stream keeps its own copy of the head
  call->own_.body.clear();
  call->head_.reset();
  call->streaming = true;
  call->opened = std::move(done);
  connection->on_strand([connection, call] { connection->enqueue(call); });
}

void ClientPools::close_all() {
  std::vector<std::shared_ptr<ClientConnection>> all;
  {
    std::lock_guard lock(state_->mutex);
    for (auto& [address, pool] : state_->pools)
      for (auto& connection : pool) all.push_back(connection);
    state_->pools.clear();
  }
  for (auto& connection : all) {
    connection->usable = false;
    connection->on_strand([connection] { connection->close_now("transport closed"); });
  }
}

}  // namespace micro::grpc
