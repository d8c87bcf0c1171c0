// Server: endpoint routing, handler and subscriber wrappers, registration with a TTL kept
// alive by a refresh thread, and a graceful stop that loses no accepted request.
#include <micro/server.hpp>

#include <micro/log.hpp>
#include <micro/random.hpp>
#include <micro/text.hpp>

#include <atomic>
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <boost/asio/co_spawn.hpp>

namespace micro {

namespace {

struct EndpointEntry {
  HandlerFunction raw;
  HandlerFunction wrapped;  // raw inside the handler wrappers, built at start()
  EndpointOptions options;
  // A stream endpoint has these instead (raw or wrapped: the other pair is empty).
  StreamHandlerFunction stream_raw;
  StreamHandlerFunction stream_wrapped;  // inside the handler_stream wrappers, built at start()
  bool typed_stream = false;             // needs ServerOptions::executor
  bool is_stream() const noexcept { return static_cast<bool>(stream_raw); }
};

// The innermost handler: checks the deadline once more (wrappers may have queued the request
// until it passed) before the endpoint's own handler runs. A named type, so start() can tell
// whether any handler wrapper was put around it.
struct GuardedHandler {
  std::function<void()> count_refused;
  HandlerFunction raw;

  void operator()(const RequestPtr& request, ResponseHandler respond) const {
    if (request->context.expired()) {
      count_refused();
      respond(Response::failure(Error(request->service, ErrorCode::timeout,
                                      "deadline passed before " + request->endpoint + " started")));
      return;
    }
    raw(request, std::move(respond));
  }
};

struct SubscriberEntry {
  std::string topic;
  std::string queue;
  SubscriberFunction handler;
};

}  // namespace

struct Server::State : std::enable_shared_from_this<Server::State> {
  ServerOptions options;
  std::shared_ptr<Transport> transport;
  std::shared_ptr<Registry> registry;
  std::shared_ptr<Broker> broker;
  WrapperChains wrappers;

  std::string node_id;
  // Filled before start(), read-only afterwards: lookups need no lock.
  StringMap<EndpointEntry> endpoints;
  std::vector<SubscriberEntry> subscribers;
  std::vector<std::shared_ptr<Subscription>> subscriptions;
  std::unique_ptr<Listener> listener;
  std::string bound_address;

  std::mutex lifecycle_mutex;  // start/stop
  std::atomic<bool> running{false};
  std::atomic<bool> stopping{false};

  std::atomic<std::uint64_t> handled{0}, failed{0}, refused{0}, in_flight{0}, streams{0};
  std::atomic<std::uint64_t> delivered{0}, delivery_failures{0};
  // Streams being handled, so that a stop past its drain bound can end them with 503.
  std::mutex streams_mutex;
  std::unordered_map<const void*, std::weak_ptr<MessageStream>> open_streams;
  std::mutex drain_mutex;
  std::condition_variable drained;

  std::thread refresher;
  std::mutex refresher_mutex;
  std::condition_variable refresher_wake;
  bool refresher_stop = false;

  Service registration() const {
    Service service;
    service.name = options.name;
    service.version = options.version;
    for (const auto& [name, entry] : endpoints)
      service.endpoints.push_back(
          Endpoint{name, entry.options.request, entry.options.response, entry.options.metadata});
    std::sort(service.endpoints.begin(), service.endpoints.end(),
              [](const Endpoint& a, const Endpoint& b) { return a.name < b.name; });
    Node node;
    node.id = node_id;
    node.address = options.advertise.empty() ? bound_address : options.advertise;
    node.metadata = options.metadata;
    // The transport's facts about its wire format win: callers pick how to talk by them.
    if (transport) {
      for (auto& [key, value] : transport->node_metadata()) node.metadata[key] = std::move(value);
    }
    service.nodes.push_back(std::move(node));
    return service;
  }

  void register_now() {
    RegisterOptions register_options;
    register_options.ttl = options.register_ttl;
    registry->register_service(registration(), register_options);
  }

  void refresh_loop() {
    std::unique_lock lock(refresher_mutex);
    while (!refresher_stop) {
      refresher_wake.wait_for(lock, options.register_interval, [&] { return refresher_stop; });
      if (refresher_stop) break;
      lock.unlock();
      try {
        register_now();
      } catch (const std::exception& e) {
        // The next interval tries again; the TTL leaves room for a few misses.
        log::warn("server " + options.name, std::string("re-register failed: ") + e.what());
      }
      lock.lock();
    }
  }

  void finish_one(bool error) {
    handled.fetch_add(1, std::memory_order_relaxed);
    if (error) failed.fetch_add(1, std::memory_order_relaxed);
    if (in_flight.fetch_sub(1, std::memory_order_acq_rel) == 1 &&
        stopping.load(std::memory_order_acquire)) {
      std::lock_guard lock(drain_mutex);
      drained.notify_all();
    }
  }

  std::string endpoint_list() const {
    std::vector<std::string> names;
    for (const auto& [name, entry] : endpoints) names.push_back(name);
    std::sort(names.begin(), names.end());
    std::string list;
    for (const auto& name : names) list += (list.empty() ? "" : ", ") + name;
    return list.empty() ? "none" : list;
  }

  // One call's way back: the call answers once (a handler may throw after answering), and
  // the in-flight count drops with that answer. One allocation; the handler's
  // ResponseHandler shares it.
  struct Answer {
    Answer(std::shared_ptr<State> server_, ServerCallPtr call_)
        : server(std::move(server_)), call(std::move(call_)) {}

    void deliver(Response&& response) {
      bool error = response.error.has_value();
      if (call->respond(std::move(response))) server->finish_one(error);
    }

    std::shared_ptr<State> server;
    ServerCallPtr call;
  };

  // The core's innermost layer of a handled stream, right above the transport's: its first
  // end counts the stream down (as Answer does for a unary call), whoever ends it.
  class HandledStream final : public ForwardingStream {
   public:
    HandledStream(std::shared_ptr<State> server, std::shared_ptr<StreamCall> call)
        : ForwardingStream(call), server_(std::move(server)), call_(std::move(call)) {}

    bool finish(Response&& status) override {
      bool error = status.error.has_value();
      bool sent = inner_->finish(std::move(status));
      if (!counted_.exchange(true, std::memory_order_acq_rel)) {
        server_->forget_stream(this);
        server_->finish_one(error);
      }
      return sent;
    }
    // The drain bound passed: the handler's context is cancelled and the client gets 503.
    void end_unfinished(const std::string& service) {
      call_->cancel();
      finish(Response::failure(Error(service, ErrorCode::unavailable,
                                     "server stopped: stream " + call_->request().endpoint +
                                         " still open after the drain timeout")));
    }

   private:
    std::shared_ptr<State> server_;
    std::shared_ptr<StreamCall> call_;
    std::atomic<bool> counted_{false};
  };

  void forget_stream(const void* key) {
    std::lock_guard lock(streams_mutex);
    open_streams.erase(key);
  }

  void dispatch_stream(std::shared_ptr<StreamCall> call, const EndpointEntry& entry) {
    in_flight.fetch_add(1, std::memory_order_acq_rel);
    streams.fetch_add(1, std::memory_order_relaxed);
    auto stream = std::make_shared<HandledStream>(shared_from_this(), std::move(call));
    {
      std::lock_guard lock(streams_mutex);
      open_streams.emplace(stream.get(), stream);
    }
    MessageStreamPtr handed = stream;
    try {
      entry.stream_wrapped(handed);
    } catch (const Exception& e) {
      stream->finish(Response::failure(e.error()));
    } catch (const std::exception& e) {
      stream->finish(Response::failure(Error(options.name, ErrorCode::internal, e.what())));
    }
  }

  // A stream call that may be unary (StreamCall::may_be_unary: a transport whose wire cannot
  // tell the two apart) reaching a unary endpoint: its first message is the request; the
  // answer goes back as one message, then the status.
  void dispatch_unary_over_stream(std::shared_ptr<StreamCall> stream, const EndpointEntry& entry) {
    in_flight.fetch_add(1, std::memory_order_acq_rel);
    auto self = shared_from_this();
    const EndpointEntry* endpoint = &entry;  // endpoints are read-only while running
    stream->async_read([self, stream, endpoint](std::optional<std::string> message) {
      auto answer = [self, stream,
                     answered = std::make_shared<std::atomic<bool>>(false)](Response&& response) {
        if (answered->exchange(true)) return;
        bool error = response.error.has_value();
        if (error) {
          stream->finish(std::move(response));
          self->finish_one(true);
          return;
        }
        std::string body = std::move(response.body);
        response.body.clear();
        auto status = std::make_shared<Response>(std::move(response));
        stream->async_write(std::move(body), [stream, status](std::optional<Error>) {
          stream->finish(std::move(*status));  // a failed write: the stream has ended already
        });
        self->finish_one(false);
      };
      if (!message) {
        answer(Response::failure(bad_request(
            self->options.name,
            "unary endpoint " + stream->request().endpoint + " got no request message")));
        return;
      }
      stream->request().body = std::move(*message);
      RequestPtr shared_request(stream, &stream->request());
      try {
        endpoint->wrapped(shared_request, answer);
      } catch (const Exception& e) {
        answer(Response::failure(e.error()));
      } catch (const std::exception& e) {
        answer(Response::failure(Error(self->options.name, ErrorCode::internal, e.what())));
      }
    });
  }

  // Per call, on an I/O thread.
  void dispatch(ServerCallPtr call) {
    const std::string& id = options.name;
    Request& request = call->request();
    if (stopping.load(std::memory_order_acquire)) {
      refused.fetch_add(1, std::memory_order_relaxed);
      call->respond(
          Response::failure(Error(id, ErrorCode::unavailable, "server is shutting down")));
      return;
    }
    if (request.context.expired()) {
      refused.fetch_add(1, std::memory_order_relaxed);
      call->respond(Response::failure(Error(
          id, ErrorCode::timeout, "deadline passed before " + request.endpoint + " started")));
      return;
    }
    auto found = endpoints.find(std::string_view(request.endpoint));
    if (found == endpoints.end()) {
      refused.fetch_add(1, std::memory_order_relaxed);
      call->respond(
          Response::failure(Error(id, ErrorCode::not_found,
                                  "service " + options.name + " has no endpoint '" +
                                      request.endpoint + "'; it has: " + endpoint_list())));
      return;
    }
    if (call->is_stream() && !found->second.is_stream() && as_stream(call)->may_be_unary()) {
      dispatch_unary_over_stream(as_stream(call), found->second);
      return;
    }
    if (found->second.is_stream() != call->is_stream()) {
      refused.fetch_add(1, std::memory_order_relaxed);
      call->respond(Response::failure(
          Error(id, ErrorCode::bad_request,
                found->second.is_stream()
                    ? "endpoint " + request.endpoint + " of service " + options.name +
                          " is a stream: open a stream to it instead of calling it"
                    : "endpoint " + request.endpoint + " of service " + options.name +
                          " is not a stream: call it instead of opening a stream")));
      return;
    }
    if (call->is_stream()) {
      dispatch_stream(as_stream(call), found->second);
      return;
    }
    in_flight.fetch_add(1, std::memory_order_acq_rel);
    // The handlers' share of the request is a share of the call (no allocation).
    RequestPtr shared_request(call, &request);
    auto answer = std::make_shared<Answer>(shared_from_this(), std::move(call));
    try {
      found->second.wrapped(
          shared_request, [answer](Response&& response) { answer->deliver(std::move(response)); });
    } catch (const Exception& e) {
      answer->deliver(Response::failure(e.error()));
    } catch (const std::exception& e) {
      answer->deliver(Response::failure(Error(id, ErrorCode::internal, e.what())));
    }
  }
};

Server::Server(ServerOptions options, std::shared_ptr<Transport> transport,
               std::shared_ptr<Registry> registry, std::shared_ptr<Broker> broker,
               WrapperChains wrappers)
    : state_(std::make_shared<State>()) {
  if (options.name.empty()) throw Exception(bad_request("micro.server", "a server needs a name"));
  state_->options = std::move(options);
  state_->transport = std::move(transport);
  state_->registry = std::move(registry);
  state_->broker = std::move(broker);
  state_->wrappers = std::move(wrappers);
  state_->node_id = state_->options.name + "-" + random_hex(16);
}

Server::~Server() {
  if (running()) stop();
}

void Server::handle(std::string endpoint, HandlerFunction handler, EndpointOptions options) {
  if (running())
    throw Exception(Error("micro.server", ErrorCode::conflict,
                          "cannot add endpoint " + endpoint + " to a running server"));
  if (endpoint.empty() || !handler)
    throw Exception(bad_request("micro.server", "an endpoint needs a name and a handler"));
  EndpointEntry entry;
  entry.raw = std::move(handler);
  entry.options = std::move(options);
  state_->endpoints[endpoint] = std::move(entry);
}

void Server::handle_stream(std::string endpoint, StreamHandlerFunction handler,
                           EndpointOptions options) {
  if (running())
    throw Exception(Error("micro.server", ErrorCode::conflict,
                          "cannot add endpoint " + endpoint + " to a running server"));
  if (endpoint.empty() || !handler)
    throw Exception(bad_request("micro.server", "a stream endpoint needs a name and a handler"));
  // Go-Micro marks stream endpoints so in its registry entries.
  options.metadata["stream"] = "true";
  EndpointEntry entry;
  entry.stream_raw = std::move(handler);
  entry.options = std::move(options);
  state_->endpoints[endpoint] = std::move(entry);
}

void Server::handle_typed_stream(std::string endpoint, StreamCoroutine coroutine,
                                 EndpointOptions options) {
  std::weak_ptr<State> weak = state_;
  std::string name = endpoint;
  handle_stream(
      std::move(endpoint),
      [weak, coroutine = std::move(coroutine), name](const MessageStreamPtr& stream) {
        auto state = weak.lock();
        if (!state) {
          stream->finish(
              Response::failure(Error("micro.server", ErrorCode::unavailable, "server gone")));
          return;
        }
        auto executor = state->options.executor;
        std::string id = state->options.name;
        boost::asio::co_spawn(executor, coroutine(stream, executor),
                              [stream, id](std::exception_ptr failure) {
                                Response status;
                                if (failure) {
                                  try {
                                    std::rethrow_exception(failure);
                                  } catch (const Exception& e) {
                                    status = Response::failure(e.error());
                                  } catch (const std::exception& e) {
                                    status = Response::failure(internal_error(id, e.what()));
                                  }
                                }
                                stream->finish(std::move(status));
                              });
      },
      std::move(options));
  state_->endpoints[name].typed_stream = true;
}

void Server::subscribe(std::string topic, SubscriberFunction handler, std::string queue) {
  if (running())
    throw Exception(Error("micro.server", ErrorCode::conflict,
                          "cannot subscribe to " + topic + " on a running server"));
  state_->subscribers.push_back({std::move(topic), std::move(queue), std::move(handler)});
}

void Server::start() {
  std::lock_guard lock(state_->lifecycle_mutex);
  if (state_->running) return;
  auto& state = *state_;
  state.stopping = false;
  std::weak_ptr<State> weak = state_;
  for (auto& [name, entry] : state.endpoints) {
    if (entry.is_stream()) {
      if (entry.typed_stream && !state.options.executor)
        throw Exception(bad_request(
            state.options.name, "stream endpoint " + name +
                                    " has a typed handler, which needs ServerOptions::executor"));
      entry.stream_wrapped = state.wrappers.wrap_handler_stream(entry.stream_raw);
      continue;
    }
    // Checked again innermost: wrappers may have queued the request (rate limits, auth
    // round trips) until its deadline passed, and then the work is not worth starting.
    GuardedHandler guarded{[weak] {
                             if (auto self = weak.lock())
                               self->refused.fetch_add(1, std::memory_order_relaxed);
                           },
                           entry.raw};
    entry.wrapped = state.wrappers.wrap_handler(std::move(guarded));
    // With no handler wrapper nothing runs between dispatch's own deadline check and the
    // handler, so the second check (a clock read per request) is left out.
    if (entry.wrapped.target<GuardedHandler>() != nullptr) entry.wrapped = entry.raw;
  }

  state.listener = state.transport->listen(state.options.address, [weak](ServerCallPtr call) {
    if (auto self = weak.lock())
      self->dispatch(std::move(call));
    else
      call->respond(
          Response::failure(Error("micro.server", ErrorCode::unavailable, "server gone")));
  });
  state.bound_address = state.listener->address();
  {
    std::vector<std::string> names;
    names.reserve(state.endpoints.size());
    for (const auto& [name, entry] : state.endpoints) names.push_back(name);
    state.listener->set_served(state.options.name, std::move(names));
  }

  try {
    if (!state.subscribers.empty() && !state.broker)
      throw Exception(bad_request(state.options.name, "subscribers need a broker"));
    for (const auto& subscriber : state.subscribers) {
      SubscriberFunction wrapped = state.wrappers.wrap_subscriber(subscriber.handler);
      state.subscriptions.push_back(state.broker->subscribe(
          subscriber.topic,
          [wrapped, weak](Message& message) {
            Context context;
            context.metadata() = message.headers;
            auto self = weak.lock();
            if (self) self->delivered.fetch_add(1, std::memory_order_relaxed);
            try {
              wrapped(context, message);
            } catch (...) {
              if (self) self->delivery_failures.fetch_add(1, std::memory_order_relaxed);
              throw;
            }
          },
          SubscribeOptions{subscriber.queue}));
    }
    if (state.registry) state.register_now();
  } catch (...) {
    for (auto& subscription : state.subscriptions) subscription->unsubscribe();
    state.subscriptions.clear();
    state.listener->close();
    state.listener.reset();
    throw;
  }

  state.refresher_stop = false;
  if (state.registry && state.options.register_interval.count() > 0)
    state.refresher = std::thread([self = state_] { self->refresh_loop(); });
  state.running = true;
}

std::size_t Server::stop() {
  std::lock_guard lock(state_->lifecycle_mutex);
  auto& state = *state_;
  if (!state.running) return 0;
  state.stopping.store(true, std::memory_order_release);

  // 1. Leave the registry first, so clients stop picking this node.
  {
    std::lock_guard refresher_lock(state.refresher_mutex);
    state.refresher_stop = true;
    state.refresher_wake.notify_all();
  }
  if (state.refresher.joinable()) state.refresher.join();
  if (state.registry) {
    try {
      state.registry->deregister_service(state.registration());
    } catch (const std::exception& e) {
      log::warn("server " + state.options.name, std::string("deregister failed: ") + e.what());
    }
  }
  // 2. No new connections; requests arriving on open ones are refused with 503 (retried
  //    elsewhere by clients). 3. Wait for what is in flight, up to the drain timeout.
  state.listener->stop_accepting();
  std::size_t unfinished = 0;
  {
    std::unique_lock drain_lock(state.drain_mutex);
    state.drained.wait_for(drain_lock, state.options.drain_timeout,
                           [&] { return state.in_flight.load(std::memory_order_acquire) == 0; });
    unfinished = state.in_flight.load(std::memory_order_acquire);
  }
  // Streams still open past the drain bound end with 503 (their answers are written before
  // the connections close below).
  std::vector<std::shared_ptr<MessageStream>> open_streams;
  {
    std::lock_guard streams_lock(state.streams_mutex);
    for (auto& [key, weak] : state.open_streams)
      if (auto stream = weak.lock()) open_streams.push_back(std::move(stream));
  }
  for (auto& stream : open_streams)
    static_cast<State::HandledStream&>(*stream).end_unfinished(state.options.name);
  // 4. Stop deliveries, then close the connections.
  for (auto& subscription : state.subscriptions) subscription->unsubscribe();
  state.subscriptions.clear();
  state.listener->close();
  state.listener.reset();
  state.running = false;
  return unfinished;
}

bool Server::running() const noexcept {
  return state_->running.load();
}

std::string Server::address() const {
  return state_->bound_address;
}

Service Server::registration() const {
  return state_->registration();
}

const ServerOptions& Server::options() const noexcept {
  return state_->options;
}

ServerStatistics Server::statistics() const {
  ServerStatistics statistics;
  statistics.handled = state_->handled.load(std::memory_order_relaxed);
  statistics.failed = state_->failed.load(std::memory_order_relaxed);
  statistics.refused = state_->refused.load(std::memory_order_relaxed);
  statistics.in_flight = state_->in_flight.load(std::memory_order_relaxed);
  statistics.streams = state_->streams.load(std::memory_order_relaxed);
  statistics.delivered = state_->delivered.load(std::memory_order_relaxed);
  statistics.delivery_failures = state_->delivery_failures.load(std::memory_order_relaxed);
  {
    std::lock_guard lock(state_->streams_mutex);
    statistics.streams_open = state_->open_streams.size();
  }
  return statistics;
}

}  // namespace micro
