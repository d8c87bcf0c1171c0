// micro/server.hpp — the serving side: endpoint routing, handler wrappers, stream handlers,
// subscribers, registration with a TTL, and a graceful stop.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>  // before awaitable.hpp, which uses std::exchange without it

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <nlohmann/json.hpp>

#include <micro/broker.hpp>
#include <micro/codec.hpp>
#include <micro/error.hpp>
#include <micro/registry.hpp>
#include <micro/schema.hpp>
#include <micro/stream.hpp>
#include <micro/transport.hpp>
#include <micro/wrapper.hpp>

namespace micro {

struct ServerOptions {
  std::string name;  // the service name, "greeter"
  std::string version = "latest";
  std::string address = "127.0.0.1:0";  // where to listen; port 0 picks a free one
  std::string advertise;                // the address put into the registry; empty: the bound one
  MetadataMap metadata;                 // node metadata (protocol/transport/… are added)
  std::chrono::milliseconds register_ttl{std::chrono::seconds(30)};
  std::chrono::milliseconds register_interval{std::chrono::seconds(10)};
  std::chrono::milliseconds drain_timeout{std::chrono::seconds(10)};
  // Where typed stream handlers (coroutines) run and their streams complete. Microservice
  // sets the runtime's; a Server with typed stream handlers and none refuses to start.
  boost::asio::any_io_executor executor;
};

struct EndpointOptions {
  MetadataMap metadata;
  // The request's and response's shapes, put into the registry for `micro describe` and the
  // gateway. Typed handlers fill them from their C++ types (<micro/schema.hpp>) when left
  // empty; a raw handler's stay as given.
  Value request;
  Value response;
};

// Counters readable at any time.
struct ServerStatistics {
  std::uint64_t handled = 0;       // requests answered (any outcome)
  std::uint64_t failed = 0;        // answered with an error
  std::uint64_t refused = 0;       // refused: unknown endpoint, past deadline, stopping
  std::uint64_t in_flight = 0;     // being handled now (streams included)
  std::uint64_t streams = 0;       // streams handled (any outcome; also counted in handled)
  std::uint64_t streams_open = 0;  // streams being handled now
  // Messages the broker delivered to this server's subscribers, and those whose handler threw.
  std::uint64_t delivered = 0, delivery_failures = 0;
};

class Server {
 public:
  Server(ServerOptions options, std::shared_ptr<Transport> transport,
         std::shared_ptr<Registry> registry, std::shared_ptr<Broker> broker,
         WrapperChains wrappers);
  ~Server();  // stops if running
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Raw handler: bytes in, Response out; `respond` exactly once, from any thread. Register
  // before start(). The request's context is cancelled when the client cancels or goes away:
  // poll `request->context.cancelled()` or register `context.cancellation()->on_cancel(…)`.
  void handle(std::string endpoint, HandlerFunction handler, EndpointOptions options = {});

  // Typed handler: `Req` and `Resp` travel through message_codec (<micro/codec.hpp>): types
  // with nlohmann to_json/from_json in whatever codec the request's content type names,
  // protobuf messages as protobuf or its JSON mapping (<micro/protobuf.hpp>). Throw
  // micro::Exception to answer with a code; other exceptions become 500. The endpoint's request and
  // response schemas are schema_of<Req>() and schema_of<Resp>() unless `options` gives them.
  template <class Req, class Resp>
  void handle(std::string endpoint, std::function<Resp(Context&, const Req&)> function,
              EndpointOptions options = {});
  template <class Function>
  requires(!std::is_invocable_v<Function&, const RequestPtr&, ResponseHandler>) void handle(
      std::string endpoint, Function function, EndpointOptions options = {});

  // Raw stream handler: gets the stream (messages both ways, <micro/transport.hpp>) through
  // the handler_stream wrappers and ends it with stream->finish(status) exactly once, from
  // any thread. Register before start(). The endpoint is registered with metadata
  // "stream": "true" (Go-Micro's mark). The stream's context is cancelled when the client
  // cancels or goes away; its deadline is the whole stream's. A graceful stop lets open
  // streams run until drain_timeout, then ends them with 503.
  void handle_stream(std::string endpoint, StreamHandlerFunction handler,
                     EndpointOptions options = {});

  // Typed stream handler: a coroutine reading In and writing Out (both through
  // message_codec in the head's content type), run on ServerOptions::executor. One form
  // serves all three shapes: server-streaming (read one, write many), client-streaming (read
  // until nullopt, write one), bidirectional. Returning ends the stream with success; throwing
  // micro::Exception ends it with that error, other exceptions with 500. Schemas as for
  // typed unary handlers.
  template <class In, class Out>
  void handle_stream(
      std::string endpoint,
      std::function<boost::asio::awaitable<void>(Context&, ServerStream<In, Out>)> function,
      EndpointOptions options = {});
  template <class Function>
  requires(!std::is_invocable_v<Function&, const MessageStreamPtr&>) void handle_stream(
      std::string endpoint, Function function, EndpointOptions options = {});

  // Delivers messages on `topic` through the subscriber wrappers; queue: one member of the
  // group per message. Register before start().
  void subscribe(std::string topic, SubscriberFunction handler, std::string queue = {});

  // Listens, subscribes, registers, and re-registers every register_interval.
  void start();
  // Graceful stop: deregister, stop accepting, answer new requests with 503 (clients retry
  // elsewhere), wait for in-flight ones up to drain_timeout, unsubscribe, close.
  // Returns the number of requests still unfinished at the deadline (0 when drained).
  std::size_t stop();

  bool running() const noexcept;
  std::string address() const;   // the bound address once started
  Service registration() const;  // what is put into the registry
  const ServerOptions& options() const noexcept;
  ServerStatistics statistics() const;

 private:
  // Runs a typed stream handler: `run` spawns the coroutine for one stream.
  using StreamCoroutine = std::function<boost::asio::awaitable<void>(const MessageStreamPtr&,
                                                                     boost::asio::any_io_executor)>;
  void handle_typed_stream(std::string endpoint, StreamCoroutine coroutine,
                           EndpointOptions options);

  struct State;
  std::shared_ptr<State> state_;
};

namespace detail {

template <class T>
struct stream_handler_traits : stream_handler_traits<decltype(&T::operator())> {};
template <class C, class Send, class Receive>
struct stream_handler_traits<boost::asio::awaitable<void> (C::*)(
    Context&, TypedStream<Send, Receive>) const> {
  using in = Receive;
  using out = Send;
};
template <class C, class Send, class Receive>
struct stream_handler_traits<boost::asio::awaitable<void> (C::*)(Context&,
                                                                 TypedStream<Send, Receive>)> {
  using in = Receive;
  using out = Send;
};
template <class Send, class Receive>
struct stream_handler_traits<boost::asio::awaitable<void> (*)(Context&,
                                                              TypedStream<Send, Receive>)> {
  using in = Receive;
  using out = Send;
};

template <class T>
struct handler_traits : handler_traits<decltype(&T::operator())> {};
template <class C, class R, class Req>
struct handler_traits<R (C::*)(Context&, const Req&) const> {
  using request = Req;
  using response = R;
};
template <class C, class R, class Req>
struct handler_traits<R (C::*)(Context&, const Req&)> {
  using request = Req;
  using response = R;
};
template <class R, class Req>
struct handler_traits<R (*)(Context&, const Req&)> {
  using request = Req;
  using response = R;
};

// Decodes the request body into Req, runs the function, encodes Resp in the content type
// message_codec<Resp> answers the request's with.
template <class Req, class Resp>
HandlerFunction make_typed_handler(std::function<Resp(Context&, const Req&)> function) {
  return [function = std::move(function)](const RequestPtr& pointer, ResponseHandler respond) {
    Request& request = *pointer;
    Response response;
    try {
      std::optional<Req> typed_request;
      try {
        typed_request.emplace(message_codec<Req>::decode(request.content_type, request.body));
      } catch (const Exception&) {
        throw;  // the codec's own answer: an unknown content type, or malformed bytes
      } catch (const std::exception& e) {
        throw Exception(bad_request(request.service, std::string("cannot read the request of ") +
                                                         request.endpoint + ": " + e.what()));
      }
      Resp typed_response = function(request.context, *typed_request);
      response.content_type = message_codec<Resp>::content_type(request.content_type);
      message_codec<Resp>::encode(response.content_type, typed_response, response.body);
    } catch (const Exception& e) {
      response = Response::failure(e.error());
    } catch (const std::exception& e) {
      response = Response::failure(internal_error(request.service, e.what()));
    }
    respond(std::move(response));
  };
}

// A message codec may describe its type in the endpoint's metadata (`annotate(metadata, role)`,
// role "request" or "response"): protobuf's names the message, for reflection.
template <class T>
void annotate_endpoint(MetadataMap& metadata, std::string_view role) {
  if constexpr (requires { message_codec<T>::annotate(metadata, role); })
    message_codec<T>::annotate(metadata, role);
}

// Fills what the options leave empty with the types' schemas.
template <class Req, class Resp>
EndpointOptions&& with_schemas(EndpointOptions&& options) {
  if (options.request == Value{}) options.request = schema_of<Req>();
  if (options.response == Value{}) options.response = schema_of<Resp>();
  annotate_endpoint<Req>(options.metadata, "request");
  annotate_endpoint<Resp>(options.metadata, "response");
  return std::move(options);
}

}  // namespace detail

template <class Req, class Resp>
void Server::handle(std::string endpoint, std::function<Resp(Context&, const Req&)> function,
                    EndpointOptions options) {
  handle(std::move(endpoint), detail::make_typed_handler<Req, Resp>(std::move(function)),
         detail::with_schemas<Req, Resp>(std::move(options)));
}

template <class Function>
requires(!std::is_invocable_v<Function&, const RequestPtr&, ResponseHandler>) void Server::handle(
    std::string endpoint, Function function, EndpointOptions options) {
  using traits = detail::handler_traits<std::decay_t<Function>>;
  using Req = std::decay_t<typename traits::request>;
  using Resp = typename traits::response;
  handle(std::move(endpoint),
         detail::make_typed_handler<Req, Resp>(
             std::function<Resp(Context&, const Req&)>(std::move(function))),
         detail::with_schemas<Req, Resp>(std::move(options)));
}

namespace detail {
// The frame owns copies of the function and the stream: a coroutine the handler's lambda
// starts refers to that lambda, which must outlive it.
template <class In, class Out>
boost::asio::awaitable<void> run_typed_stream(
    std::function<boost::asio::awaitable<void>(Context&, ServerStream<In, Out>)> function,
    MessageStreamPtr stream, boost::asio::any_io_executor executor) {
  co_await function(stream->request().context,
                    ServerStream<In, Out>(Stream(stream, std::move(executor))));
}
}  // namespace detail

template <class In, class Out>
void Server::handle_stream(
    std::string endpoint,
    std::function<boost::asio::awaitable<void>(Context&, ServerStream<In, Out>)> function,
    EndpointOptions options) {
  handle_typed_stream(
      std::move(endpoint),
      [function = std::move(function)](const MessageStreamPtr& stream,
                                       boost::asio::any_io_executor executor) {
        return detail::run_typed_stream<In, Out>(function, stream, std::move(executor));
      },
      detail::with_schemas<In, Out>(std::move(options)));
}

template <class Function>
requires(!std::is_invocable_v<Function&, const MessageStreamPtr&>) void Server::handle_stream(
    std::string endpoint, Function function, EndpointOptions options) {
  using traits = detail::stream_handler_traits<std::decay_t<Function>>;
  using In = std::decay_t<typename traits::in>;
  using Out = std::decay_t<typename traits::out>;
  handle_stream<In, Out>(
      std::move(endpoint),
      std::function<boost::asio::awaitable<void>(Context&, ServerStream<In, Out>)>(
          std::move(function)),
      std::move(options));
}

}  // namespace micro
