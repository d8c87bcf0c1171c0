// plugins/grpc/server.cpp — the server side: accepts h2c connections, reads each gRPC call's
// headers (path, content type, grpc-timeout, metadata), hands it to the CallHandler as a
// unary ServerCall (our client's unary calls) or a StreamCall (streams, and every call of a
// peer that does not say), and writes the answer as headers, one or more messages and
// trailers — or trailers-only for an error that comes before any message.
#include "server.hpp"

#include <atomic>
#include <future>
#include <mutex>
#include <set>
#include <unordered_map>

#include <boost/asio/ip/tcp.hpp>

#include <micro/base64.hpp>
#include <micro/log.hpp>

#include "session.hpp"

namespace micro::grpc {

namespace {

class ServerConnection;

// A call's state on the connection (strand), beside the ServerCall the handler holds.
class ServerStream final : public H2Stream {
 public:
  using H2Stream::H2Stream;

  // From the request headers.
  std::string method, path, content_type, timeout, encoding, call_kind, key_case;
  Metadata metadata;
  std::string header_problem;  // the first bad header, answered before any handler runs
  bool dispatched = false;
  bool unary = false;
  int health = 0;                   // the standard health service, answered here: 1 Check, 2 Watch
  bool watching = false;            // a Watch that has its request and sent its first status
  std::optional<std::string> body;  // the unary call's one message
  bool headers_sent = false;
  bool send_closed = false;
  bool peer_accepts_gzip = false;  // grpc-accept-encoding names gzip
  bool bad_encoding = false;       // refused for its grpc-encoding: say what we accept
  std::weak_ptr<ServerCall> call;
  std::string request_type;  // the call's micro content type, for the answer's
};

void set_error_trailers(const Error& error, HeaderList& headers) {
  headers.emplace_back("grpc-status", std::to_string(grpc_status_for(error)));
  headers.emplace_back("grpc-message", percent_encode(error.detail));
  std::string encoded = base64::encode(error.to_json());
  while (!encoded.empty() && encoded.back() == '=') encoded.pop_back();
  headers.emplace_back("micro-error-bin", std::move(encoded));
}

std::vector<nghttp2_nv> to_nv(HeaderList& headers) {
  std::vector<nghttp2_nv> nva;
  nva.reserve(headers.size());
  for (auto& [name, value] : headers)
    nva.push_back({reinterpret_cast<std::uint8_t*>(name.data()),
                   reinterpret_cast<std::uint8_t*>(value.data()), name.size(), value.size(),
                   NGHTTP2_NV_FLAG_NONE});
  return nva;
}

class ListenerState;

class ServerConnection final : public H2Connection {
 public:
  ServerConnection(Strand strand, Settings settings, std::shared_ptr<ListenerState> listener);

  // Strand: the handler's answer (unary or a stream's end).
  void answer(const std::shared_ptr<ServerStream>& stream, Response response);
  // Strand: one message of a stream.
  void write(const std::shared_ptr<ServerStream>& stream, std::string message,
             StreamWriteHandler done);
  // Strand: the listener stopped accepting: Watch streams of the health service hear
  // NOT_SERVING.
  void notify_health();

 protected:
  int on_begin_headers(std::int32_t stream_id) override;
  int on_header(std::int32_t stream_id, std::string_view name, std::string_view value,
                bool trailer) override;
  void on_headers_done(std::int32_t stream_id, bool end_stream, bool trailer) override;
  void on_message(H2Stream& stream, std::string message, std::size_t wire) override;
  void on_bad_message(H2Stream& stream, Error error) override;
  void on_remote_end(H2Stream& stream) override;
  void on_stream_closed(H2StreamPtr stream, std::uint32_t error_code) override;
  void on_goaway(std::int32_t) override {}
  void lost(const std::string& reason) override;
  std::string_view encoding_of(H2Stream& stream) override {
    return static_cast<ServerStream&>(stream).encoding;
  }

 private:
  std::shared_ptr<ServerStream> find(std::int32_t id) {
    auto found = streams.find(id);
    return found == streams.end() ? nullptr : std::static_pointer_cast<ServerStream>(found->second);
  }
  void dispatch(const std::shared_ptr<ServerStream>& stream);
  // Ends a call that never reached a handler with `error`, as trailers-only.
  void refuse(const std::shared_ptr<ServerStream>& stream, Error error,
              const char* http_status = "200");
  void choose_encoding(ServerStream& stream, HeaderList& headers);
  void submit_headers(ServerStream& stream, HeaderList& headers, bool with_data);
  // Ends the call with `status`; a successful answer keeps a pending write (it goes out
  // before the trailers).
  void end_call(ServerStream& stream, Response status, bool cancel_handler);

  std::shared_ptr<ListenerState> listener_;
  void answer_health(const std::shared_ptr<ServerStream>& stream);
  std::vector<std::weak_ptr<ServerStream>> health_watchers_;
  // Unary calls waiting for their message and END_STREAM before the handler runs.
  std::unordered_map<std::int32_t, std::shared_ptr<ServerCall>> pending_unary_;
};

// ---- the calls the handler holds ---------------------------------------------------------

class UnaryCall final : public ServerCall {
 public:
  explicit UnaryCall(std::shared_ptr<ServerStream> stream) : stream_(std::move(stream)) {}

 protected:
  void send(Response&& response) override {
    auto connection = std::static_pointer_cast<ServerConnection>(stream_->connection());
    connection->start_operation(
        [connection, stream = stream_, response = std::move(response)]() mutable {
          connection->answer(stream, std::move(response));
        });
  }

 private:
  std::shared_ptr<ServerStream> stream_;
};

class StreamingCall final : public StreamCall {
 public:
  // `may_be_unary`: the peer did not say it opened a stream (only our client does).
  StreamingCall(std::shared_ptr<ServerStream> stream, bool may_be_unary)
      : stream_(std::move(stream)) {
    may_be_unary_ = may_be_unary;
  }

  void async_read(StreamReadHandler done) override {
    auto& connection = stream_->connection();
    connection->start_operation(
        [stream = stream_, done = std::move(done)]() mutable { stream->do_read(std::move(done)); });
  }
  void async_write(std::string message, StreamWriteHandler done) override {
    auto connection = std::static_pointer_cast<ServerConnection>(stream_->connection());
    connection->start_operation([connection, stream = stream_, message = std::move(message),
                                 done = std::move(done)]() mutable {
      connection->write(stream, std::move(message), std::move(done));
    });
  }
  void close_send() override {
    stream_->connection()->start_operation([stream = stream_] { stream->send_closed = true; });
  }
  bool ended() const override { return stream_->is_ended(); }
  Response status() const override { return stream_->final_status(); }
  void on_end(ResponseHandler done) override { stream_->add_on_end(std::move(done)); }

 protected:
  void send(Response&& response) override {
    auto connection = std::static_pointer_cast<ServerConnection>(stream_->connection());
    connection->start_operation(
        [connection, stream = stream_, response = std::move(response)]() mutable {
          connection->answer(stream, std::move(response));
        });
  }

 private:
  std::shared_ptr<ServerStream> stream_;
};

// ---- the listener ------------------------------------------------------------------------

class ListenerState : public std::enable_shared_from_this<ListenerState> {
 public:
  ListenerState(IoExecutor executor, Settings settings, CallHandler handler)
      : executor(executor),
        settings(settings),
        handler(std::move(handler)),
        acceptor(asio::make_strand(executor)) {}

  void accept() {
    auto connection = std::make_shared<ServerConnection>(asio::make_strand(executor), settings,
                                                         shared_from_this());
    acceptor.async_accept(connection->socket(), [self = shared_from_this(), connection](
                                                    const boost::system::error_code& error) {
      if (error) {
        if (error == asio::error::operation_aborted || !self->acceptor.is_open()) return;
        log::warn("grpc", "accept failed: " + error.message());
        self->accept();
        return;
      }
      boost::system::error_code ignored;
      connection->socket().set_option(asio::ip::tcp::no_delay(true), ignored);
      connection->count_open();
      {
        std::lock_guard lock(self->mutex);
        self->connections.insert(connection);
      }
      if (self->settings.server_tls) {
        connection->on_strand([connection, tls = self->settings.server_tls] {
          connection->handshake_tls(
              *tls, true, "", [connection](std::optional<std::string> problem) {
                if (problem) {
                  log::warn("grpc", "connection from a client refused: " + *problem);
                  connection->abort(*problem);
                  return;
                }
                connection->start();
              });
        });
      } else {
        connection->on_strand([connection] { connection->start(); });
      }
      self->accept();
    });
  }

  // Runs the handler; one that throws is answered with its error (500 for anything but a
  // micro::Exception), not lost.
  void invoke(std::shared_ptr<ServerCall> call) {
    std::shared_ptr<ServerCall> raw = call;
    try {
      handler(std::move(call));
    } catch (const Exception& e) {
      raw->respond(Response::failure(e.error()));
    } catch (const std::exception& e) {
      raw->respond(Response::failure(Error(server_error_id, 500, e.what())));
    }
  }

  void forget(const std::shared_ptr<H2Connection>& connection) {
    std::lock_guard lock(mutex);
    connections.erase(connection);
  }

  void set_served(std::string service, std::vector<std::string> endpoints) {
    std::lock_guard lock(mutex);
    served_service = std::move(service);
    served_endpoints = std::move(endpoints);
    served_known = true;
  }

  // Whether the health service's `name` is served here: "" (the server as a whole), the
  // micro service's name, the health service itself, or a gRPC service "<package>.<Service>"
  // (or "<Service>") with an endpoint "<Service>.<Method>" — the package is not matched, as
  // routing does not match it. Every name is, until the Server said what it serves.
  bool serves(std::string_view name) {
    if (name.empty() || name == "grpc.health.v1.Health") return true;
    std::lock_guard lock(mutex);
    if (!served_known || name == served_service) return true;
    auto dot = name.rfind('.');
    std::string prefix(dot == std::string_view::npos ? name : name.substr(dot + 1));
    prefix += '.';
    for (const auto& endpoint : served_endpoints)
      if (endpoint.size() > prefix.size() && endpoint.compare(0, prefix.size(), prefix) == 0)
        return true;
    return false;
  }

  IoExecutor executor;
  Settings settings;
  CallHandler handler;
  Acceptor acceptor;
  std::atomic<bool> serving{true};  // the health service's answer: SERVING until stop_accepting
  std::string address;
  std::mutex mutex;
  std::set<std::shared_ptr<H2Connection>> connections;
  // What the Server serves (Listener::set_served), for the health service; under `mutex`.
  bool served_known = false;
  std::string served_service;
  std::vector<std::string> served_endpoints;
};

class GrpcListener final : public Listener {
 public:
  explicit GrpcListener(std::shared_ptr<ListenerState> state) : state_(std::move(state)) {}
  ~GrpcListener() override { close(); }

  std::string address() const override { return state_->address; }

  void set_served(std::string service, std::vector<std::string> endpoints) override {
    state_->set_served(std::move(service), std::move(endpoints));
  }

  void stop_accepting() override {
    if (state_->serving.exchange(false)) {
      std::lock_guard lock(state_->mutex);
      for (const auto& connection : state_->connections) {
        auto server = std::static_pointer_cast<ServerConnection>(connection);
        server->on_strand([server] { server->notify_health(); });
      }
    }
    std::promise<void> stopped;
    asio::post(state_->acceptor.get_executor(), [&] {
      boost::system::error_code ignored;
      state_->acceptor.close(ignored);
      stopped.set_value();
    });
    stopped.get_future().wait();
  }

  void close() override {
    if (closed_.exchange(true)) return;
    stop_accepting();
    std::set<std::shared_ptr<H2Connection>> connections;
    {
      std::lock_guard lock(state_->mutex);
      connections = state_->connections;
    }
    // GOAWAY, the answers already given, then the socket; calls still open are cancelled.
    for (const auto& connection : connections) {
      connection->on_strand([connection] { connection->shut_down(NGHTTP2_NO_ERROR); });
    }
  }

 private:
  std::shared_ptr<ListenerState> state_;
  std::atomic<bool> closed_{false};
};

// ---- ServerConnection --------------------------------------------------------------------

ServerConnection::ServerConnection(Strand strand, Settings settings,
                                   std::shared_ptr<ListenerState> listener)
    : H2Connection(strand, settings, true), listener_(std::move(listener)) {}

int ServerConnection::on_begin_headers(std::int32_t stream_id) {
  auto stream = std::make_shared<ServerStream>(shared_from_this(), settings_.max_message);
  stream->id = stream_id;
  add_stream(stream_id, std::move(stream));
  return 0;
}

int ServerConnection::on_header(std::int32_t stream_id, std::string_view name,
                                std::string_view value, bool trailer) {
  auto stream = find(stream_id);
  if (!stream || trailer) return 0;  // request trailers carry nothing for us
  if (name == ":method") {
    stream->method = value;
  } else if (name == ":path") {
    stream->path = value;
  } else if (name == "content-type") {
    stream->content_type = value;
  } else if (name == "grpc-timeout") {
    stream->timeout = value;
  } else if (name == "grpc-encoding") {
    stream->encoding = value;
  } else if (name == "grpc-accept-encoding") {
    stream->peer_accepts_gzip = stream->peer_accepts_gzip || accepts_gzip(value);
  } else if (name == "micro-call") {
    stream->call_kind = value;
  } else if (name == "micro-key-case") {
    stream->key_case = value;
  } else if (name == "traceparent" || name == "tracestate" || name == "baggage" ||
             !reserved_header(name)) {
    std::string problem;
    if (!add_metadata(stream->metadata, name, value, problem) && stream->header_problem.empty())
      stream->header_problem = "grpc: " + problem;
  }
  return 0;
}

void ServerConnection::on_headers_done(std::int32_t stream_id, bool end_stream, bool trailer) {
  auto stream = find(stream_id);
  if (!stream) return;
  if (!trailer && !stream->dispatched && !stream->is_ended()) {
    if (stream->method != "POST") {
      refuse(stream, Error(server_error_id, 400,
                           "grpc: method " + stream->method + " on " + stream->path +
                               "; gRPC calls are POST"));
      return;
    }
    auto type = micro_content_type(stream->content_type);
    if (!type) {
      refuse(stream,
             Error(server_error_id, 400,
                   "grpc: content-type \"" + stream->content_type + "\" on " + stream->path +
                       " is not application/grpc[+codec]"),
             "415");
      return;
    }
    if (!stream->header_problem.empty()) {
      refuse(stream, Error(server_error_id, 400, stream->header_problem));
      return;
    }
    std::string service, endpoint;
    if (!parse_path(stream->path, service, endpoint)) {
      refuse(stream,
             Error(server_error_id, 501,
                   "grpc: path \"" + stream->path + "\" is not /<package>.<Service>/<Method>"));
      return;
    }
    std::optional<std::chrono::nanoseconds> timeout;
    if (!stream->timeout.empty()) {
      std::string problem;
      timeout = parse_timeout(stream->timeout, problem);
      if (!timeout) {
        refuse(stream, Error(server_error_id, 400, "grpc: " + problem));
        return;
      }
    }
    if (!stream->encoding.empty() && stream->encoding != "identity" && stream->encoding != "gzip") {
      stream->bad_encoding = true;
      refuse(stream, Error(server_error_id, 501,
                           "grpc: grpc-encoding \"" + stream->encoding +
                               "\" is not accepted; gzip and identity are"));
      return;
    }
    if (stream->path == "/grpc.health.v1.Health/Check" ||
        stream->path == "/grpc.health.v1.Health/Watch") {
      stream->health = stream->path.back() == 'k' ? 1 : 2;
      stream->unary = stream->health == 1;
      stream->dispatched = true;
      stream->request_type = "application/protobuf";
      if (end_stream) on_remote_end(*stream);
      return;
    }
    stream->unary = stream->call_kind == "unary";
    if (!stream->key_case.empty()) restore_key_case(stream->metadata, stream->key_case);

    std::shared_ptr<ServerCall> call;
    if (stream->unary)
      call = ServerCall::make<UnaryCall>(stream);
    else
      call = ServerCall::make<StreamingCall>(stream, stream->call_kind != "stream");
    Request& request = call->request();
    request.service = std::move(service);
    request.endpoint = std::move(endpoint);
    request.content_type = std::move(*type);
    request.context.metadata() = std::move(stream->metadata);
    if (timeout)
      request.context.set_timeout(std::chrono::duration_cast<Context::Clock::duration>(*timeout));
    stream->call = call;
    stream->request_type = request.content_type;
    stream->dispatched = true;
    if (!stream->unary) {
      // The handler holds the call from here; the connection keeps a weak reference.
      listener_->invoke(std::move(call));
    } else {
      pending_unary_.emplace(stream->id, std::move(call));
    }
  }
  if (end_stream) on_remote_end(*stream);
}

void ServerConnection::on_message(H2Stream& base, std::string message, std::size_t wire) {
  auto& stream = static_cast<ServerStream&>(base);
  if (stream.health == 2) {
    // Watch: its one request names the service; anything after it is ignored.
    if (stream.watching) return;
    stream.body = std::move(message);
    if (auto shared = find(stream.id)) answer_health(shared);
    return;
  }
  if (stream.unary) {
    if (stream.body) {
      on_bad_message(
          stream, Error(server_error_id, 400,
                        "grpc: a unary call to " + stream.path + " carried more than one message"));
      return;
    }
    stream.body = std::move(message);
    return;
  }
  stream.deliver_message(std::move(message), wire);
}

void ServerConnection::on_bad_message(H2Stream& base, Error error) {
  auto stream = find(base.id);
  if (!stream) return;
  if (!stream->unary && stream->dispatched) {
    // The handler is running: it is cancelled, and the client gets the error.
    answer(stream, Response::failure(error));
    if (auto call = stream->call.lock()) call->cancel();
    return;
  }
  pending_unary_.erase(stream->id);
  refuse(stream, std::move(error));
}

void ServerConnection::on_remote_end(H2Stream& base) {
  auto stream = find(base.id);
  if (!stream || stream->is_ended()) return;
  stream->peer_done = true;
  if (stream->health == 1) {
    answer_health(stream);
    return;
  }
  if (stream->health == 2 && !stream->watching) {
    refuse(stream, Error(server_error_id, 400,
                         "grpc: a call to " + stream->path + " carried no HealthCheckRequest"));
    return;
  }
  if (stream->unary) {
    auto found = pending_unary_.find(stream->id);
    if (found == pending_unary_.end()) return;
    auto call = std::move(found->second);
    pending_unary_.erase(found);
    if (!stream->body) {
      refuse(stream, Error(server_error_id, 400,
                           "grpc: a unary call to " + stream->path + " carried no message"));
      return;
    }
    call->request().body = std::move(*stream->body);
    stream->body.reset();
    listener_->invoke(std::move(call));
    return;
  }
  if (stream->pending_read && stream->inbox.empty()) {
    auto done = std::move(*stream->pending_read);
    stream->pending_read.reset();
    asio::post(strand_, [done = std::move(done)] { done(std::nullopt); });
  }
}

// grpc.health.v1.HealthCheckRequest{service}: the service (field 1) of a protobuf message;
// other fields are skipped. nullopt, with `problem`, for bytes that are not such a message.
std::optional<std::string> health_service_name(std::string_view bytes, std::string& problem) {
  std::string name;
  std::size_t at = 0;
  auto varint = [&](std::uint64_t& value) {
    value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (at >= bytes.size()) return false;
      auto byte = static_cast<std::uint8_t>(bytes[at++]);
      value |= std::uint64_t(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;
  };
  while (at < bytes.size()) {
    std::uint64_t key = 0, value = 0;
    std::size_t field_at = at;
    if (!varint(key)) {
      problem = "bad field key at byte " + std::to_string(field_at);
      return std::nullopt;
    }
    std::size_t skip = 0;
    switch (key & 7) {
      case 0:
        if (!varint(value)) {
          problem = "bad varint at byte " + std::to_string(field_at);
          return std::nullopt;
        }
        break;
      case 1:
        skip = 8;
        break;
      case 2:
        if (!varint(value) || value > bytes.size() - at) {
          problem = "field at byte " + std::to_string(field_at) + " runs past the message";
          return std::nullopt;
        }
        if ((key >> 3) == 1) name.assign(bytes.substr(at, value));
        skip = value;
        break;
      case 5:
        skip = 4;
        break;
      default:
        problem =
            "unknown wire type " + std::to_string(key & 7) + " at byte " + std::to_string(field_at);
        return std::nullopt;
    }
    if (skip > bytes.size() - at) {
      problem = "field at byte " + std::to_string(field_at) + " runs past the message";
      return std::nullopt;
    }
    at += skip;
  }
  return name;
}

// grpc.health.v1.HealthCheckResponse{status}: field 1, varint, SERVING = 1, NOT_SERVING = 2,
// SERVICE_UNKNOWN = 3 (Watch only: Check answers an unknown name with NOT_FOUND, as the
// health protocol asks).
void ServerConnection::answer_health(const std::shared_ptr<ServerStream>& stream) {
  std::string problem;
  auto name = health_service_name(stream->body.value_or(""), problem);
  stream->body.reset();
  if (!name) {
    refuse(stream, Error(server_error_id, 400,
                         "grpc: " + stream->path + ": not a HealthCheckRequest: " + problem));
    return;
  }
  bool known = listener_->serves(*name);
  if (stream->health == 1 && !known) {
    refuse(stream, Error(server_error_id, 404,
                         "grpc: health: service \"" + *name + "\" is not served here"));
    return;
  }
  char status = !known ? '\x03' : listener_->serving.load() ? '\x01' : '\x02';
  std::string message = {'\x08', status};
  if (stream->health == 1) {
    micro::Response response;
    response.body = std::move(message);
    answer(stream, std::move(response));
    return;
  }
  stream->watching = true;
  // An unknown name stays SERVICE_UNKNOWN (this server's names never change while it runs).
  if (known) health_watchers_.push_back(stream);
  write(stream, std::move(message), [](std::optional<Error>) {});
}

void ServerConnection::notify_health() {
  for (auto& weak : health_watchers_) {
    auto stream = weak.lock();
    if (!stream || stream->is_ended() || stream->id < 0) continue;
    if (stream->on_drained) {
      // The first status is still going out: this one follows it.
      auto first = std::move(stream->on_drained);
      stream->on_drained = nullptr;
      append_message(stream->out, std::string{'\x08', '\x02'}, stream->send_gzip);
      stream->on_drained = std::move(first);
      resume(*stream);
    } else {
      write(stream, std::string{'\x08', '\x02'}, [](std::optional<Error>) {});
    }
  }
  health_watchers_.clear();
  flush();
}

void ServerConnection::on_stream_closed(H2StreamPtr base, std::uint32_t error_code) {
  auto stream = std::static_pointer_cast<ServerStream>(base);
  pending_unary_.erase(stream->id);
  stream->id = -1;
  if (!stream->is_ended()) {
    Error error = error_code == NGHTTP2_CANCEL || error_code == NGHTTP2_NO_ERROR
                      ? cancelled_error(client_error_id)
                      : unavailable(client_error_id,
                                    "grpc: the client reset the stream (HTTP/2 "
                                    "error " +
                                        std::to_string(error_code) + ")");
    end_call(*stream, Response::failure(std::move(error)), true);
  }
}

void ServerConnection::lost(const std::string& reason) {
  auto open = take_streams();
  pending_unary_.clear();
  for (auto& [id, base] : open) {
    auto stream = std::static_pointer_cast<ServerStream>(base);
    stream->id = -1;
    if (!stream->is_ended())
      end_call(*stream,
               Response::failure(unavailable(client_error_id, "grpc: connection lost: " + reason)),
               true);
  }
  listener_->forget(shared_from_this());
}

void ServerConnection::end_call(ServerStream& stream, Response status, bool cancel_handler) {
  bool answered = !cancel_handler && !status.error;
  if (!stream.claim_end(std::move(status))) return;
  stream.settle_end(answered);
  if (cancel_handler) {
    if (auto call = stream.call.lock()) call->cancel();
  }
}

// The answer's messages go out gzip-compressed when this server is told to compress
// (compression=gzip) and the caller said it accepts gzip.
void ServerConnection::choose_encoding(ServerStream& stream, HeaderList& headers) {
  if (!settings_.gzip || !stream.peer_accepts_gzip) return;
  stream.send_gzip = true;
  headers.emplace_back("grpc-encoding", "gzip");
}

void ServerConnection::submit_headers(ServerStream& stream, HeaderList& headers, bool with_data) {
  auto nva = to_nv(headers);
  if (with_data) {
    auto provider = this->provider(stream);
    nghttp2_submit_response(session(), stream.id, nva.data(), nva.size(), &provider);
  } else {
    nghttp2_submit_response(session(), stream.id, nva.data(), nva.size(), nullptr);
  }
  stream.headers_sent = true;
}

void ServerConnection::refuse(const std::shared_ptr<ServerStream>& stream, Error error,
                              const char* http_status) {
  if (stream->is_ended() || stream->id < 0) return;
  HeaderList headers = {{":status", http_status}, {"content-type", "application/grpc"}};
  if (stream->bad_encoding) headers.emplace_back("grpc-accept-encoding", "identity,gzip");
  set_error_trailers(error, headers);
  submit_headers(*stream, headers, false);
  end_call(*stream, Response::failure(std::move(error)), false);
  flush();
}

void ServerConnection::answer(const std::shared_ptr<ServerStream>& stream, Response response) {
  if (stream->is_ended() || stream->id < 0 || closed()) return;
  if (!response.error && stream->unary && response.body.size() > settings_.max_message) {
    response = Response::failure(Error(server_error_id, 413,
                                       "grpc: response of " + std::to_string(response.body.size()) +
                                           " bytes exceeds max_message " +
                                           std::to_string(settings_.max_message)));
  }
  std::string type = grpc_content_type(response.content_type.empty() ? stream->request_type
                                                                     : response.content_type);
  if (!stream->headers_sent && (response.error || !stream->unary)) {
    // Trailers-only: the status (and metadata) in the one HEADERS frame that ends the stream.
    HeaderList headers = {{":status", "200"}, {"content-type", type}};
    if (response.error)
      set_error_trailers(*response.error, headers);
    else
      headers.emplace_back("grpc-status", "0");
    append_metadata(response.metadata, headers);
    submit_headers(*stream, headers, false);
  } else {
    HeaderList trailers;
    if (response.error)
      set_error_trailers(*response.error, trailers);
    else
      trailers.emplace_back("grpc-status", "0");
    if (stream->unary) {
      HeaderList headers = {{":status", "200"}, {"content-type", type}};
      choose_encoding(*stream, headers);
      append_metadata(response.metadata, headers);
      append_message(stream->out, response.body, stream->send_gzip);
      stream->out_eof = true;
      stream->trailers = std::move(trailers);
      submit_headers(*stream, headers, true);
    } else {
      append_metadata(response.metadata, trailers);
      stream->out_eof = true;
      stream->trailers = std::move(trailers);
      resume(*stream);
    }
  }
  Response status = std::move(response);
  status.body.clear();
  end_call(*stream, std::move(status), false);
  flush();
}

void ServerConnection::write(const std::shared_ptr<ServerStream>& stream, std::string message,
                             StreamWriteHandler done) {
  auto fail = [&](Error error) {
    asio::post(strand_, [done = std::move(done), error = std::move(error)]() mutable {
      done(std::move(error));
    });
  };
  if (stream->is_ended() || stream->id < 0) {
    Response status = stream->final_status();
    fail(status.error ? *status.error : Error(server_error_id, 499, "grpc: the stream has ended"));
    return;
  }
  if (stream->send_closed) {
    fail(Error(server_error_id, 400, "grpc: write after close_send"));
    return;
  }
  if (stream->on_drained) {
    fail(Error(server_error_id, 400, "grpc: a write is already pending on this stream"));
    return;
  }
  if (message.size() > settings_.max_message) {
    Error error(server_error_id, 413,
                "grpc: stream message of " + std::to_string(message.size()) +
                    " bytes exceeds max_message " + std::to_string(settings_.max_message));
    fail(error);
    return;
  }
  HeaderList headers;
  if (!stream->headers_sent) {
    headers = {{":status", "200"}, {"content-type", grpc_content_type(stream->request_type)}};
    choose_encoding(*stream, headers);  // before the first message is framed
  }
  stream->queue_write(message, [done]() mutable { done(std::nullopt); });
  if (!stream->headers_sent) {
    submit_headers(*stream, headers, true);
  } else {
    resume(*stream);
  }
  flush();
}

}  // namespace

std::unique_ptr<Listener> make_listener(const asio::any_io_executor& executor,
                                        const Settings& settings, std::string_view address,
                                        CallHandler handler) {
  auto parts = split_address(address);
  if (!parts)
    throw Exception(
        bad_request(server_error_id,
                    "grpc: cannot listen on \"" + std::string(address) + "\": expected host:port"));
  auto state = std::make_shared<ListenerState>(io_executor(executor), settings, std::move(handler));
  boost::system::error_code error;
  auto host = parts->host.empty() ? asio::ip::address_v4::any()
                                  : asio::ip::make_address(parts->host, error);
  if (error)
    throw Exception(
        bad_request(server_error_id,
                    "grpc: cannot listen on \"" + std::string(address) + "\": " + error.message()));
  asio::ip::tcp::endpoint endpoint(host, parts->port);
  state->acceptor.open(endpoint.protocol(), error);
  if (!error) state->acceptor.set_option(asio::socket_base::reuse_address(true), error);
  if (!error) state->acceptor.bind(endpoint, error);
  if (!error) state->acceptor.listen(asio::socket_base::max_listen_connections, error);
  if (error)
    throw Exception(
        unavailable(server_error_id,
                    "grpc: cannot listen on \"" + std::string(address) + "\": " + error.message()));
  state->address = endpoint_text(state->acceptor.local_endpoint());
  state->accept();
  return std::make_unique<GrpcListener>(std::move(state));
}

}  // namespace micro::grpc
