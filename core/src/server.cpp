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

namespace micro {

namespace {

struct EndpointEntry {
  HandlerFunction raw;
  HandlerFunction wrapped;  // raw inside the handler wrappers, built at start()
  EndpointOptions options;
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

  std::atomic<std::uint64_t> handled{0}, failed{0}, refused{0}, in_flight{0};
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
  state_->endpoints[endpoint] = EndpointEntry{std::move(handler), {}, std::move(options)};
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

  try {
    if (!state.subscribers.empty() && !state.broker)
      throw Exception(bad_request(state.options.name, "subscribers need a broker"));
    for (const auto& subscriber : state.subscribers) {
      SubscriberFunction wrapped = state.wrappers.wrap_subscriber(subscriber.handler);
      state.subscriptions.push_back(state.broker->subscribe(
          subscriber.topic,
          [wrapped](Message& message) {
            Context context;
            context.metadata() = message.headers;
            wrapped(context, message);
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
  return statistics;
}

}  // namespace micro
