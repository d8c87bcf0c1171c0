// Microservice: assembles runtime, plugins named by the config, server, client and broker.
#include <micro/connection_table.hpp>
#include <micro/log.hpp>
#include <micro/metrics.hpp>
#include <micro/service.hpp>

#include <condition_variable>
#include <iostream>
#include <mutex>
#include <thread>

#include <boost/asio/signal_set.hpp>

namespace micro {

struct Microservice::State {
  Config config;
  std::string name;
  std::unique_ptr<Runtime> runtime;
  std::shared_ptr<Registry> registry_backend;
  std::shared_ptr<RegistryCache> registry;
  std::shared_ptr<Broker> broker;
  std::shared_ptr<Selector> selector;
  std::shared_ptr<Transport> transport;
  std::vector<std::shared_ptr<Wrapper>> wrapper_objects;
  WrapperChains wrappers;
  std::unique_ptr<Server> server;
  std::unique_ptr<Client> client;
  std::unique_ptr<admin::AdminServer> admin;
  std::vector<metrics::Registration> collectors;

  std::mutex mutex;
  std::condition_variable wake;
  bool stop_requested = false;
  bool started = false;
  std::atomic<bool> broker_connected = false;
};

namespace {

template <class T>
std::shared_ptr<T> load(PluginLoader& loader, const PluginChoice& choice,
                        boost::asio::any_io_executor executor) {
  try {
    return loader.create<T>(choice.name, choice.address, choice.options, std::move(executor));
  } catch (const Exception& e) {
    Error error = e.error();
    error.detail = std::string(to_string(T::plugin_kind)) + " '" + choice.name + "' (from " +
                   choice.origin + "): " + error.detail;
    throw Exception(std::move(error));
  }
}

}  // namespace

Microservice::Microservice(std::string name, Config config, PluginLoader& loader)
    : state_(std::make_unique<State>()) {
  auto& state = *state_;
  if (name.empty()) name = config.server_name;
  state.name = name;
  state.config = std::move(config);
  const Config& cfg = state.config;
  if (!cfg.log_level.empty()) {
    if (auto level = log::level_from_string(cfg.log_level)) log::set_level(*level);
  }
  state.runtime = std::make_unique<Runtime>(cfg.threads);
  auto executor = state.runtime->executor();

  state.registry_backend = load<Registry>(loader, cfg.registry, executor);
  state.registry =
      std::make_shared<RegistryCache>(state.registry_backend, state.runtime->blocking_executor());
  state.broker = load<Broker>(loader, cfg.broker, executor);
  state.selector = load<Selector>(loader, cfg.selector, executor);
  state.transport = load<Transport>(loader, cfg.transport, executor);

  WrapperScope scope{name, cfg.server_version, cfg.transport.name, cfg.broker.name};
  for (const auto& choice : cfg.wrappers) {
    auto wrapper = load<Wrapper>(loader, choice, executor);
    state.wrappers.add(wrapper->wrappers(scope));
    state.wrapper_objects.push_back(std::move(wrapper));
  }

  ClientOptions client_options = cfg.client_options();
  state.client = std::make_unique<Client>(client_options, state.transport, state.registry,
                                          state.selector, state.broker, state.wrappers, executor);

  // Bound before the server is built, so that the node metadata can advertise it; not ready
  // (draining) until start().
  if (!cfg.admin_address.empty()) {
    admin::AdminOptions options;
    options.address = cfg.admin_address;
    options.token = cfg.admin_token;
    state.admin = std::make_unique<admin::AdminServer>(options);
    state.admin->set_draining(true);
    state.admin->listen();
    log::info("service " + state.name, "admin listening on " + state.admin->address());
  }

  if (!name.empty()) {
    ServerOptions server_options = cfg.server_options();
    server_options.name = name;
    server_options.executor = executor;  // where typed stream handlers run
    server_options.metadata = {{"protocol", cfg.transport.name},
                               {"transport", cfg.transport.name},
                               {"broker", cfg.broker.name},
                               {"registry", cfg.registry.name},
                               {"server", "micro-cpp"}};
    if (state.admin) server_options.metadata["admin"] = state.admin->address();
    // Registrations go straight to the backend; the cache is for lookups.
    state.server = std::make_unique<Server>(server_options, state.transport, state.registry_backend,
                                            state.broker, state.wrappers);
  }
  if (state.admin) configure_admin();
}

// The admin endpoint's checks, pages and figures, once every part exists: they read this
// object's state on the admin thread (the admin server is closed before any of it goes).
void Microservice::configure_admin() {
  auto& state = *state_;
  State* self = state_.get();

  state.admin->add_check("listening", admin::Probe::readiness, [self]() -> admin::CheckResult {
    if (!self->server) return {true, "no server (a client-only program)"};
    if (!self->server->running()) return {false, "server not started"};
    return {true, "listening on " + self->server->address()};
  });
  state.admin->add_check("registered", admin::Probe::readiness, [self]() -> admin::CheckResult {
    if (!self->server) return {true, "nothing to register"};
    std::lock_guard lock(self->mutex);
    if (!self->started) return {false, "not registered (not started, or stopping)"};
    return {true, "registered with " + self->config.registry.name};
  });
  state.admin->add_check("broker", admin::Probe::readiness, [self]() -> admin::CheckResult {
    if (!self->broker_connected.load()) return {false, self->config.broker.name + " not connected"};
    return {true, self->config.broker.name + " connected"};
  });

  state.admin->set_summary([self] {
    nlohmann::json summary;
    summary["service"] = self->name.empty() ? std::string("(client)") : self->name;
    summary["version"] = self->config.server_version;
    if (self->server) {
      auto registration = self->server->registration();
      if (!registration.nodes.empty()) summary["node"] = registration.nodes.front().id;
      summary["address"] = self->server->address();
    }
    summary["config"] = admin::redact_secrets(self->config.to_string());
    nlohmann::json plugins = nlohmann::json::array();
    auto add = [&](std::string_view kind, const PluginChoice& choice) {
      std::string options;
      for (const auto& [key, value] : choice.options)
        options += (options.empty() ? "" : "&") + key + "=" + value;
      plugins.push_back({{"kind", kind},
                         {"name", choice.name},
                         {"address", admin::redact_secrets(choice.address)},
                         {"options", admin::redact_secrets(options)}});
    };
    add("registry", self->config.registry);
    add("broker", self->config.broker);
    add("selector", self->config.selector);
    add("transport", self->config.transport);
    for (const auto& wrapper : self->config.wrappers) add("wrapper", wrapper);
    summary["plugins"] = plugins.dump();
    return summary;
  });
  state.admin->set_page("/connections", [self] {
    nlohmann::json page;
    if (self->server) {
      auto statistics = self->server->statistics();
      page["server"] = {{"address", self->server->address()},
                        {"in_flight", statistics.in_flight},
                        {"handled", statistics.handled},
                        {"failed", statistics.failed},
                        {"refused", statistics.refused}};
    }
    auto client = self->client->statistics();
    page["client"] = {{"calls", client.calls},
                      {"attempts", client.attempts},
                      {"retries", client.retries},
                      {"failures", client.failures}};
    page["transport"] = self->config.transport.name;
    if (self->transport) {
      auto connections = self->transport->statistics();
      page["connections"] = {{"server", connections.server_connections},
                             {"client", connections.client_connections}};
    }
    page["broker"] = {{"name", self->config.broker.name},
                      {"connected", self->broker_connected.load()}};
    // One row per open connection of the process, as brpc's /connections lists them.
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& row : connection_table().rows())
      rows.push_back({{"transport", row.transport},
                      {"side", to_string(row.side)},
                      {"peer", row.peer},
                      {"local", row.local},
                      {"age_seconds", row.age_seconds},
                      {"in_flight", row.in_flight},
                      {"requests", row.requests},
                      {"bytes_in", row.bytes_in},
                      {"bytes_out", row.bytes_out}});
    page["rows"] = rows;
    return page;
  });
  state.admin->set_page("/registry", [self] {
    nlohmann::json page;
    auto statistics = self->registry->statistics();
    page["cache"] = {{"hits", statistics.hits},
                     {"misses", statistics.misses},
                     {"fetches", statistics.fetches},
                     {"stale_served", statistics.stale_served},
                     {"watch_events", statistics.watch_events}};
    // The admin thread may block: the services the registry knows, asked of it directly.
    try {
      nlohmann::json services = nlohmann::json::array();
      for (const auto& listed : self->registry->list_services()) {
        // Through the cache, as a call would see it (a miss fetches, on this thread).
        for (const auto& service : self->registry->get_service(listed.name)) {
          nlohmann::json entry = service;
          services.push_back(std::move(entry));
        }
      }
      page["services"] = std::move(services);
    } catch (const std::exception& e) {
      page["error"] = std::string("listing the registry failed: ") + e.what();
    }
    return page;
  });

  // Toolkit gauges and counters, read at scrape time.
  state.collectors.push_back(
      metrics::default_registry().add_collector([self](metrics::Collector& collector) {
        metrics::Labels service{{"service", self->name}};
        if (self->server) {
          auto statistics = self->server->statistics();
          collector.gauge("micro_server_in_flight", "requests being handled now", service,
                          static_cast<double>(statistics.in_flight));
          collector.counter("micro_server_handled_total", "requests answered, any outcome", service,
                            static_cast<double>(statistics.handled));
          collector.counter("micro_server_failed_total", "requests answered with an error", service,
                            static_cast<double>(statistics.failed));
          collector.counter("micro_server_refused_total",
                            "requests refused: unknown endpoint, past deadline, stopping", service,
                            static_cast<double>(statistics.refused));
        }
        auto client = self->client->statistics();
        collector.counter("micro_client_calls_total", "logical calls made", service,
                          static_cast<double>(client.calls));
        collector.counter("micro_client_attempts_total", "call attempts made", service,
                          static_cast<double>(client.attempts));
        collector.counter("micro_client_failures_total", "calls that failed", service,
                          static_cast<double>(client.failures));
        auto cache = self->registry->statistics();
        collector.counter("micro_registry_cache_hits_total", "lookups answered from the cache",
                          service, static_cast<double>(cache.hits));
        collector.counter("micro_registry_cache_misses_total", "lookups that had to fetch", service,
                          static_cast<double>(cache.misses));
        collector.counter("micro_registry_cache_stale_total",
                          "lookups answered stale while the registry failed", service,
                          static_cast<double>(cache.stale_served));
        collector.counter("micro_broker_published_total", "messages handed to the broker", service,
                          static_cast<double>(client.published));
        collector.counter("micro_broker_publish_failures_total",
                          "publishes the broker refused or failed", service,
                          static_cast<double>(client.publish_failures));
        collector.counter("micro_client_streams_total", "streams opened", service,
                          static_cast<double>(client.streams));
        if (self->server) {
          auto statistics = self->server->statistics();
          collector.counter("micro_broker_delivered_total",
                            "messages delivered to this service's subscribers", service,
                            static_cast<double>(statistics.delivered));
          collector.counter("micro_broker_delivery_failures_total",
                            "delivered messages whose subscriber threw", service,
                            static_cast<double>(statistics.delivery_failures));
          collector.gauge("micro_server_streams_open", "streams being handled now", service,
                          static_cast<double>(statistics.streams_open));
          collector.counter("micro_server_streams_total", "streams handled, any outcome", service,
                            static_cast<double>(statistics.streams));
        }
        if (self->transport) {
          auto connections = self->transport->statistics();
          metrics::Labels transport{{"service", self->name},
                                    {"transport", self->config.transport.name}};
          collector.gauge("micro_transport_server_connections", "accepted connections open now",
                          transport, static_cast<double>(connections.server_connections));
          collector.gauge("micro_transport_client_connections",
                          "outgoing connections open now (pooled, busy or idle)", transport,
                          static_cast<double>(connections.client_connections));
        }
        collector.gauge("micro_broker_connected", "1 while the broker is connected", service,
                        self->broker_connected.load() ? 1 : 0);
        collector.gauge("micro_ready", "1 while /health/ready answers 200 (not draining)", service,
                        self->admin->draining() ? 0 : 1);
      }));
}

Microservice::~Microservice() {
  try {
    stop();
  } catch (const std::exception& e) {
    log::error("service " + state_->name, std::string("stop failed: ") + e.what());
  }
  // No scrape may run while the objects its collectors read go away.
  if (state_->admin) state_->admin->close();
  state_->collectors.clear();
  // Objects made by plugins go before the runtime whose executor they hold.
  state_->client.reset();
  state_->server.reset();
  if (state_->transport) state_->transport->close();
  state_->runtime->stop();
}

const Config& Microservice::config() const noexcept {
  return state_->config;
}
Runtime& Microservice::runtime() noexcept {
  return *state_->runtime;
}
Client& Microservice::client() {
  return *state_->client;
}
Broker& Microservice::broker() {
  return *state_->broker;
}
RegistryCache& Microservice::registry() {
  return *state_->registry;
}
Selector& Microservice::selector() {
  return *state_->selector;
}
Transport& Microservice::transport() {
  return *state_->transport;
}

Server& Microservice::server() {
  if (!state_->server)
    throw Exception(bad_request("micro.service", "a service without a name has no server"));
  return *state_->server;
}

void Microservice::subscribe(std::string topic, SubscriberFunction handler, std::string queue) {
  server().subscribe(std::move(topic), std::move(handler), std::move(queue));
}

void Microservice::add_health_check(std::string name, admin::Probe probe,
                                    admin::CheckFunction check) {
  if (state_->admin) state_->admin->add_check(std::move(name), probe, std::move(check));
}

std::string Microservice::admin_address() const {
  return state_->admin ? state_->admin->address() : std::string();
}

void Microservice::start() {
  std::lock_guard lock(state_->mutex);
  if (state_->started) return;
  if (!state_->broker_connected) {
    state_->broker->connect();
    state_->broker_connected = true;
  }
  if (state_->server) state_->server->start();
  state_->started = true;
  state_->stop_requested = false;
  if (state_->admin) state_->admin->set_draining(false);
}

void Microservice::run() {
  start();
  boost::asio::signal_set signals(state_->runtime->io_context(), SIGINT, SIGTERM);
  signals.async_wait([this](boost::system::error_code error, int) {
    if (error) return;
    std::lock_guard lock(state_->mutex);
    state_->stop_requested = true;
    state_->wake.notify_all();
  });
  {
    std::unique_lock lock(state_->mutex);
    state_->wake.wait(lock, [&] { return state_->stop_requested; });
  }
  signals.cancel();
  stop();
}

void Microservice::stop() {
  std::unique_lock lock(state_->mutex);
  state_->stop_requested = true;
  state_->wake.notify_all();
  if (!state_->started) return;
  state_->started = false;
  lock.unlock();
  // Not ready first, so load balancers and probes stop sending before the listener closes.
  if (state_->admin) state_->admin->set_draining(true);
  if (state_->config.shutdown_delay.count() > 0)
    std::this_thread::sleep_for(state_->config.shutdown_delay);
  if (state_->server) {
    std::size_t unfinished = state_->server->stop();
    if (unfinished > 0)
      log::warn("service " + state_->name,
                std::to_string(unfinished) + " request(s) unfinished at the drain timeout");
  }
  if (state_->broker_connected) {
    state_->broker->disconnect();
    state_->broker_connected = false;
  }
}

}  // namespace micro
