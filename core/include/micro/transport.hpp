// micro/transport.hpp — how calls travel between a client and a server node.
//
// A transport plugin ("tcp", "http"; "grpc" is coming) provides both sides: it listens
// for calls and hands each to a CallHandler as a ServerCall, and it makes calls to a node's
// address. Routing, wrappers, node selection and retries are the core's (Server, Client); a
// transport only moves one call — its request, its one response — honouring the deadline and
// cancellation. docs/design.md, "The transport contract", is the long form of the rules below.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

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

// The server's side of one call, made by the transport for each call that arrives and
// handed to the CallHandler; it owns the request. The handler answers it once, from any
// thread; the transport cancels its context when the client cancels or goes away. Streams
// will add reading and writing messages to the same object; their answer ends the stream.
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
  CancellationState cancellation_;  // before request_, which points at it
  Request request_;
  std::atomic<bool> answered_{false};
};

using ServerCallPtr = std::shared_ptr<ServerCall>;

// Server side: called on an I/O thread per incoming call.
using CallHandler = std::function<void(ServerCallPtr call)>;

class Listener {
 public:
  virtual ~Listener() = default;
  // The bound address, "host:port" with the real port when 0 was asked for.
  virtual std::string address() const = 0;
  // Stops accepting new connections; calls on open connections keep being delivered.
  virtual void stop_accepting() = 0;
  // Closes every connection, after writing the answers already handed to it (bounded,
  // about a second), so a drained server's last answers reach their clients. Calls still
  // unanswered are cancelled.
  virtual void close() = 0;
};

// Threading contract: listen and async_call may be called from any thread; handlers and
// completions run on the executor the transport was created with, never inside async_call.
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
  // Closes pooled client connections; pending calls complete with 503.
  virtual void close() = 0;
  // What a node served by this transport registers about its wire format; the Server merges
  // it into its node's metadata, over any keys of the same name ("protocol" and "transport":
  // Go-Micro clients pick their codec and transport by them). Any thread.
  virtual std::map<std::string, std::string> node_metadata() const { return {}; }
};

}  // namespace micro
