// micro/transport.hpp — how request bytes travel between a client and a server node.
//
// A transport plugin ("tcp"; "http" and "grpc" are coming) provides both sides: it listens for
// requests and hands each to a RequestHandler, and it makes calls to a node's address. Routing,
// wrappers, node selection and retries are the core's (Server, Client); a transport only moves one
// request and its one response, honouring the deadline.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <micro/context.hpp>
#include <micro/error.hpp>
#include <micro/plugin.hpp>

namespace micro {

// One request, on either side. On the server, `context` holds the metadata and deadline
// the client sent (the deadline arrives as a relative timeout and is re-based on the
// server's clock).
struct Request {
  std::string service;
  std::string endpoint;  // "Greeter.Hello"
  std::string content_type;
  std::string body;
  Context context;
};

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

// Receives the one response of a request. Called exactly once.
using ResponseHandler = std::function<void(Response&& response)>;

// Server side: called on an I/O thread per incoming request. `request` stays valid until
// `respond` has been called; `respond` may be called later from any thread.
using RequestHandler = std::function<void(Request& request, ResponseHandler respond)>;

class Listener {
 public:
  virtual ~Listener() = default;
  // The bound address, "host:port" with the real port when 0 was asked for.
  virtual std::string address() const = 0;
  // Stops accepting new connections; requests on open connections keep being delivered.
  virtual void stop_accepting() = 0;
  // Closes every connection, after writing the responses already handed to it (bounded,
  // about a second), so a drained server's last answers reach their clients.
  virtual void close() = 0;
};

// Threading contract: listen and async_call may be called from any thread; handlers and
// completions run on the executor the transport was created with.
class Transport : public PluginObject {
 public:
  static constexpr PluginKind plugin_kind = PluginKind::transport;

  // Listens on "host:port" ("127.0.0.1:0" picks a free port). Throws micro::Exception.
  virtual std::unique_ptr<Listener> listen(std::string_view address, RequestHandler handler) = 0;
  // Sends `request` to the node at `address`. `request` must stay valid until `done` runs.
  // Errors arrive as Response::error: 408 when request.context's deadline passes, 503 when
  // the node cannot be reached or the connection drops mid-call, 400/413 for frames refused.
  virtual void async_call(std::string_view address, Request& request, ResponseHandler done) = 0;
  // Closes pooled client connections; pending calls complete with 503.
  virtual void close() = 0;
};

}  // namespace micro
