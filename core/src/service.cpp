// Microservice: assembles runtime, plugins named by the config, server, client and broker.
#include <micro/log.hpp>
#include <micro/service.hpp>

#include <condition_variable>
#include <iostream>
#include <mutex>

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

  std::mutex mutex;
  std::condition_variable wake;
  bool stop_requested = false;
  bool started = false;
  bool broker_connected = false;
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

  if (!name.empty()) {
    ServerOptions server_options = cfg.server_options();
    server_options.name = name;
    server_options.executor = executor;  // where typed stream handlers run
    server_options.metadata = {{"protocol", cfg.transport.name},
                               {"transport", cfg.transport.name},
                               {"broker", cfg.broker.name},
                               {"registry", cfg.registry.name},
                               {"server", "micro-cpp"}};
    // Registrations go straight to the backend; the cache is for lookups.
    state.server = std::make_unique<Server>(server_options, state.transport, state.registry_backend,
                                            state.broker, state.wrappers);
  }
}

Microservice::~Microservice() {
  try {
    stop();
  } catch (const std::exception& e) {
    log::error("service " + state_->name, std::string("stop failed: ") + e.what());
  }
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
