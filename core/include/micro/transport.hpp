// micro/transport.hpp — how calls travel between a client and a server node.
//
// A transport plugin ("tcp", "http"; "grpc" is coming) provides both sides: it listens
// for calls and hands each to a CallHandler as a ServerCall, and it makes calls to a node's
// address. Routing, wrappers, node selection and retries are the core's (Server, Client); a
// transport only moves one call — its request, its one response, or a stream's messages and
// final status — honouring the deadline and cancellation. docs/design.md, "The transport
// contract" and "Streams", is the long form of the rules below.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <micro/context.hpp>
#include <micro/error.hpp>
#include <micro/plugin.hpp>

namespace micro {

// What opens every call, on either side: who is called, how the body is encoded, and the
// context (metadata, deadline, cancellation). A unary call's one message is `body`; a stream
// (the streaming issue) opens with the same head and carries its messages apart. On the
// server, `context` holds the metadata and deadline the client sent (the deadline arrives
// as a relative timeout and is re-based on the server's clock).
struct Request {
  std::string service;
  std::string endpoint;  // "Greeter.Hello"
  std::string content_type;
  std::string body;
  Context context;
};

// A call owns its request; whoever needs it later keeps a share instead of a reference.
using RequestPtr = std::shared_ptr<Request>;

// How a call ends: for a unary call its one response; for a stream its final status.
struct Response {
  std::string content_type;
  std::string body;
  Metadata metadata;
  std::optional<Error> error;  // set: the call failed, body is empty

  static Response failure(Error error) {
    Response response;
    response.error = std::move(error);
    return response;
  }
};

// Receives the end of a call. Called exactly once.
using ResponseHandler = std::function<void(Response&& response)>;

using StreamReadHandler = std::function<void(std::optional<std::string> message)>;
using StreamWriteHandler = std::function<void(std::optional<Error> error)>;

// One end of an open stream, client or server side: messages both ways, flow-controlled by
// the transport (a per-stream window, so a slow reader holds the writer back instead of
// growing memory), then one end with a final status. Methods may be called from any thread;
// at most one read and one write are outstanding at a time (a second one completes with an
// error / nullopt). Completions run on the transport's executor, never inside the call.
class MessageStream {
 public:
  virtual ~MessageStream() = default;

  // The head the stream opened with: on the server as received (its context carries the
  // client's metadata, deadline and cancellation), on the client as sent.
  virtual Request& request() = 0;

  // The next message, or nullopt when the peer sends no more: it closed its send side, or the
  // stream ended (then ended() is true and status() says how). Messages already received are
  // still delivered, in order, after the end arrived.
  virtual void async_read(StreamReadHandler done) = 0;
  // Sends one message. Completes once the transport has taken it: when the peer's window
  // admits it (this is where a slow reader holds a fast writer), or with the error that
  // ended the stream (the message is dropped). Messages arrive in the order written.
  virtual void async_write(std::string message, StreamWriteHandler done) = 0;
  // This side sends no more messages (the client's half-close; the peer's reads then see
  // nullopt). Writes after it fail. The server's final answer closes its side as well.
  virtual void close_send() = 0;

  // Ends the stream with `status`. On the server this is the handler's final answer (success
  // or error, with trailing metadata); reads and writes then fail. On the client it is a
  // cancel: the transport tells the server, and the stream ends with `status` locally. Only
  // the first end counts: returns false for any later one, and for an end that arrived from
  // the peer first.
  virtual bool finish(Response&& status) = 0;

  // The stream has ended (either side, any reason); status() is then final.
  virtual bool ended() const = 0;
  // The final status: its error is set for every end but a successful final answer.
  // Meaningful once ended().
  virtual Response status() const = 0;
  // Runs `done` once with the final status when the stream ends (at once, on this thread,
  // if it has already). Wrappers use it to end spans and count outcomes.
  virtual void on_end(ResponseHandler done) = 0;
};

using MessageStreamPtr = std::shared_ptr<MessageStream>;

// Client side: the result of opening a stream; exactly one of the two is set.
using OpenStreamHandler = std::function<void(MessageStreamPtr stream, std::optional<Error> error)>;

// The server's side of one call, made by the transport for each call that arrives and
// handed to the CallHandler; it owns the request. The handler answers it once, from any
// thread; the transport cancels its context when the client cancels or goes away. A stream
// arrives as a StreamCall (below): the same object, with messages; its answer ends the stream.
class ServerCall {
 public:
  virtual ~ServerCall() = default;
  ServerCall(const ServerCall&) = delete;
  ServerCall& operator=(const ServerCall&) = delete;

  Request& request() noexcept { return request_; }
  const Request& request() const noexcept { return request_; }
  Context& context() noexcept { return request_.context; }

  // Answers the call. Only the first answer counts: returns false (and drops `response`)
  // for any later one. Any thread.
  bool respond(Response&& response) {
    if (answered_.exchange(true, std::memory_order_acq_rel)) return false;
    send(std::move(response));
    return true;
  }
  bool answered() const noexcept { return answered_.load(std::memory_order_acquire); }

  // A StreamCall: the client opened a stream, not a unary call (the core routes it to the
  // endpoint's stream handler).
  bool is_stream() const noexcept { return is_stream_; }

  // Transport side: the client cancelled or its connection went away. Cancels the handler's
  // context (callbacks run on this thread); an answer given afterwards need not be sent.
  void cancel() { cancellation_.cancel(); }
  bool cancelled() const noexcept { return cancellation_.cancelled(); }

  // Makes a call object; the only way to make one, so that copies of its context can share it.
  template <class Call, class... Args>
  static std::shared_ptr<Call> make(Args&&... args) {
    auto call = std::make_shared<Call>(std::forward<Args>(args)...);
    call->cancellation_.owner_ = call;
    return call;
  }

 protected:
  // The context borrows the cancellation state below: nothing is allocated per call for it.
  ServerCall() { request_.context.borrow_cancellation(cancellation_); }
  // Delivers the answer (called at most once).
  virtual void send(Response&& response) = 0;

 private:
  friend class StreamCall;
  CancellationState cancellation_;  // before request_, which points at it
  Request request_;
  std::atomic<bool> answered_{false};
  bool is_stream_ = false;
};

using ServerCallPtr = std::shared_ptr<ServerCall>;

// The server's side of a stream. The transport implements the message half of
// MessageStream; respond() (= finish()) is the final answer that ends the stream: the status
// and trailing metadata reach the client after every message written before it. When the
// client cancels or goes away the context is cancelled, pending reads see nullopt and writes
// fail; the handler still answers (the answer is then not sent).
class StreamCall : public ServerCall, public MessageStream {
 public:
  Request& request() override { return ServerCall::request(); }
  bool finish(Response&& status) override { return respond(std::move(status)); }
  // Set by a transport whose wire cannot tell a unary call from a stream (gRPC: every call
  // is a stream, and a third-party client does not say which it makes): the core then serves
  // a unary endpoint from the stream — its first message is the request, the answer goes
  // back as one message, then the status — instead of refusing it.
  bool may_be_unary() const noexcept { return may_be_unary_; }

 protected:
  StreamCall() { is_stream_ = true; }
  bool may_be_unary_ = false;
};

// Returns the stream half of a call, or nullptr for a unary call.
inline std::shared_ptr<StreamCall> as_stream(const ServerCallPtr& call) noexcept {
  return call && call->is_stream() ? std::static_pointer_cast<StreamCall>(call) : nullptr;
}

// Server side: called on an I/O thread per incoming call.
using CallHandler = std::function<void(ServerCallPtr call)>;

class Listener {
 public:
  virtual ~Listener() = default;
  // The bound address, "host:port" with the real port when 0 was asked for.
  virtual std::string address() const = 0;
  // Stops accepting new connections; calls on open connections keep being delivered.
  virtual void stop_accepting() = 0;
  // What the Server behind this listener serves, told once right after listen(): its name
  // and its endpoints' names. A protocol that answers questions about services uses it
  // (gRPC's health service answers NOT_FOUND for a name not served); others ignore it.
  virtual void set_served(std::string service, std::vector<std::string> endpoints) {
    (void)service;
    (void)endpoints;
  }
  // Closes every connection, after writing the answers already handed to it (bounded,
  // about a second), so a drained server's last answers reach their clients. Calls still
  // unanswered are cancelled.
  virtual void close() = 0;
};

// Threading contract: listen and async_call may be called from any thread; handlers and
// completions run on the executor the transport was created with, never inside async_call.
// What a transport has open now (the Transport::statistics() answer).
struct TransportStatistics {
  std::uint64_t server_connections = 0;  // accepted connections open now, all listeners
  std::uint64_t client_connections = 0;  // outgoing connections open now (pooled, busy or idle)
};

class Transport : public PluginObject {
 public:
  static constexpr PluginKind plugin_kind = PluginKind::transport;

  // Listens on "host:port" ("127.0.0.1:0" picks a free port). Throws micro::Exception.
  virtual std::unique_ptr<Listener> listen(std::string_view address, CallHandler handler) = 0;
  // Sends `request` to the node at `address` and completes `done` exactly once. The
  // transport holds its share of the request only until it completes: the caller may change
  // the request for its next attempt once `done` has run. Errors arrive as Response::error:
  // 408 when request.context's deadline passes, 499 when it is cancelled (the call is
  // dropped and the server told), 503 when the node cannot be reached or the connection
  // drops mid-call, 400/413 for frames refused.
  virtual void async_call(std::string_view address, std::shared_ptr<const Request> request,
                          ResponseHandler done) = 0;
  // Opens a stream to the node at `address` with `request` as its head (its body is
  // ignored: messages travel apart). `done` runs once, on the executor, never inside
  // open_stream: with the open stream as soon as the transport has sent the head (the server
  // may still refuse it: that arrives as the stream's end, e.g. 404), or with an error when
  // nothing was sent (503 unreachable, 408 deadline passed, 499 cancelled; the core may retry
  // those on another node). The deadline and cancellation of request.context apply to the
  // whole stream: 408 / 499 end it, and the server is told. A transport that cannot stream
  // keeps this default, which completes at once (inside the call; the core's client posts)
  // with 501 naming `transport_name()`.
  virtual void open_stream(std::string_view address, std::shared_ptr<const Request> request,
                           OpenStreamHandler done);
  // Closes pooled client connections; pending calls and open streams complete with 503.
  virtual void close() = 0;
  // The plugin's name ("tcp"), for errors such as the default open_stream's 501.
  virtual std::string transport_name() const { return {}; }
  // What a node served by this transport registers about its wire format; the Server merges
  // it into its node's metadata, over any keys of the same name ("protocol" and "transport":
  // Go-Micro clients pick their codec and transport by them). Any thread.
  virtual std::map<std::string, std::string> node_metadata() const { return {}; }
  // Connections open now, for the operator's metrics and /connections. Any thread; cheap
  // (relaxed loads). A transport that does not count them reports zeros.
  virtual TransportStatistics statistics() const { return {}; }
};

}  // namespace micro
