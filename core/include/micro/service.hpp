// micro/service.hpp — a whole service in one object: runtime, plugins from the config,
// server, client and broker, and a run() that stops gracefully on SIGTERM/SIGINT.
//
//   int main(int argc, char** argv) {
//     auto config = micro::Config::load(argc, argv, "selector=roundrobin");
//     micro::Microservice service("greeter", config);
//     service.handle("Greeter.Hello", [](micro::Context&, const HelloRequest& request) {
//       return HelloResponse{"Hello " + request.name};
//     });
//     service.run();
//   }
#pragma once

#include <memory>
#include <string>

#include <micro/admin.hpp>
#include <micro/broker.hpp>
#include <micro/client.hpp>
#include <micro/config.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/registry.hpp>
#include <micro/registry_cache.hpp>
#include <micro/runtime.hpp>
#include <micro/selector.hpp>
#include <micro/server.hpp>
#include <micro/transport.hpp>
#include <micro/wrapper.hpp>

namespace micro {

// Named Microservice because micro::Service is the registry's description of a service.
class Microservice {
 public:
  // Loads every plugin the config names (throws micro::Exception / ConfigError when one
  // cannot be loaded). `name` may be empty for a client-only program.
  Microservice(std::string name, Config config = {},
               PluginLoader& loader = PluginLoader::instance());
  ~Microservice();  // stops gracefully if running
  Microservice(const Microservice&) = delete;
  Microservice& operator=(const Microservice&) = delete;

  const Config& config() const noexcept;
  Runtime& runtime() noexcept;
  Server& server();
  Client& client();
  Broker& broker();
  RegistryCache& registry();
  Selector& selector();
  Transport& transport();

  // Shorthands for server().handle / handle_stream / subscribe.
  template <class... Args>
  void handle(Args&&... args) {
    server().handle(std::forward<Args>(args)...);
  }
  template <class... Args>
  void handle_stream(Args&&... args) {
    server().handle_stream(std::forward<Args>(args)...);
  }
  void subscribe(std::string topic, SubscriberFunction handler, std::string queue = {});

  // A check of this service's health for /health/ready (readiness) or for both probes
  // (liveness), run on the admin thread at each probe; add before start(). Without the
  // `admin` key there is no endpoint and checks are kept but never asked.
  void add_health_check(std::string name, admin::Probe probe, admin::CheckFunction check);
  // The admin endpoint's bound "host:port" ("" when `admin` is not set). It is bound when the
  // service is built, and advertised in the node metadata as admin=host:port.
  std::string admin_address() const;

  // Starts the server (listen, subscribe, register) and connects the broker.
  void start();
  // Blocks until SIGTERM or SIGINT (or stop() from another thread), then stops gracefully.
  void run();
  // Graceful stop: readiness flips to 503 first, then after shutdown_delay the server
  // deregisters and drains (see Server::stop); safe to call more than once and from a
  // signal-free thread.
  void stop();

 private:
  void configure_admin();
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace micro
