// test/wrappers/resilience_support.hpp — what the breaker, ratelimit and auth tests share:
// wrapper plugins loaded through the loader, captured log lines, a real server and client
// (tcp transport, memory registry) with chosen wrappers, and blocking calls through a chain.
#pragma once

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <micro/client.hpp>
#include <micro/log.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/runtime.hpp>
#include <micro/server.hpp>
#include <micro/wrapper.hpp>

#include "support/wait.hpp"

namespace resilience_test {

using Options = std::vector<std::pair<std::string, std::string>>;

inline std::shared_ptr<micro::Wrapper> load_wrapper(const std::string& name, const Options& options,
                                                    const boost::asio::any_io_executor& executor) {
  return micro::PluginLoader::instance().create<micro::Wrapper>(name, "", options, executor);
}

// Every log line written while it lives ("<component>: <message>"), at info and above.
class CapturedLog {
 public:
  CapturedLog() {
    previous_level_ = micro::log::level();
    micro::log::set_level(micro::log::Level::info);
    previous_ = micro::log::set_sink(
        [this](micro::log::Level, std::string_view component, std::string_view message) {
          std::lock_guard lock(mutex_);
          lines_.push_back(std::string(component) + ": " + std::string(message));
        });
  }
  ~CapturedLog() {
    micro::log::set_sink(std::move(previous_));
    micro::log::set_level(previous_level_);
  }
  std::vector<std::string> lines() const {
    std::lock_guard lock(mutex_);
    return lines_;
  }
  // Lines containing every one of `parts`.
  std::size_t count(const std::vector<std::string>& parts) const {
    std::size_t found = 0;
    for (const auto& line : lines()) {
      bool all = true;
      for (const auto& part : parts) all = all && line.find(part) != std::string::npos;
      if (all) ++found;
    }
    return found;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> lines_;
  micro::log::Sink previous_;
  micro::log::Level previous_level_;
};

inline micro::RequestPtr request_for(std::string service, std::string endpoint) {
  auto request = std::make_shared<micro::Request>();
  request->service = std::move(service);
  request->endpoint = std::move(endpoint);
  request->content_type = "application/json";
  request->body = "{}";
  return request;
}

// Runs `function(request, done)` and waits (bounded) for its answer.
template <class Function>
micro::Response answer_of(const Function& function, micro::RequestPtr request) {
  auto promise = std::make_shared<std::promise<micro::Response>>();
  auto future = promise->get_future();
  function(std::move(request),
           [promise](micro::Response&& response) { promise->set_value(std::move(response)); });
  REQUIRE(future.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  return future.get();
}

// A server "flaky" and a client over real plugins; wrappers for each side given apart.
struct Services {
  micro::Runtime runtime{2};
  micro::PluginLoader& loader = micro::PluginLoader::instance();
  std::shared_ptr<micro::Registry> registry =
      loader.create<micro::Registry>("memory", "", {}, runtime.executor());
  std::shared_ptr<micro::Transport> transport =
      loader.create<micro::Transport>("tcp", "", {}, runtime.executor());
  std::shared_ptr<micro::Selector> selector =
      loader.create<micro::Selector>("roundrobin", "", {}, runtime.executor());
  std::shared_ptr<micro::RegistryCache> cache =
      std::make_shared<micro::RegistryCache>(registry, runtime.blocking_executor());
  std::unique_ptr<micro::Server> server;
  std::unique_ptr<micro::Client> client;

  // `setup` registers the handlers before the server starts.
  Services(micro::WrapperChains server_chains, micro::WrapperChains client_chains,
           const std::function<void(micro::Server&)>& setup, int retries = 0) {
    micro::ServerOptions options;
    options.name = "flaky";
    server = std::make_unique<micro::Server>(options, transport, registry, nullptr,
                                             std::move(server_chains));
    setup(*server);
    server->start();
    micro::ClientOptions client_options;
    client_options.retries = retries;
    client = std::make_unique<micro::Client>(client_options, transport, cache, selector, nullptr,
                                             std::move(client_chains), runtime.executor());
  }
  ~Services() {
    client.reset();
    server->stop();
    server.reset();
    transport->close();
  }

  micro::Response call(const std::string& endpoint, micro::Context context = {}) {
    micro::Request request;
    request.service = "flaky";
    request.endpoint = endpoint;
    request.content_type = "application/json";
    request.body = "{}";
    request.context = std::move(context);
    std::promise<micro::Response> promise;
    auto future = promise.get_future();
    client->async_call(
        std::move(request), micro::CallOptions{},
        [&promise](micro::Response&& response) { promise.set_value(std::move(response)); });
    REQUIRE(future.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
    return future.get();
  }
};

}  // namespace resilience_test
