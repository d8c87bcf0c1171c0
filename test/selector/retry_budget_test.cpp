// The client's retry budget over real plugins (memory registry, tcp transport, roundrobin):
// against a backend that always answers 503, retries add at most the budget's share of the
// calls plus its reserve, and the refused retries are counted; a healthy backend is not
// touched by it.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include <micro/client.hpp>
#include <micro/config.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/runtime.hpp>
#include <micro/server.hpp>

using namespace std::chrono_literals;

namespace {

struct Backend {
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
  std::vector<std::unique_ptr<micro::Server>> servers;

  // Two nodes of "flaky" whose Flaky.Call answers 503 (or succeeds, when `healthy`).
  explicit Backend(bool healthy) {
    for (int i = 0; i < 2; ++i) {
      micro::ServerOptions options;
      options.name = "flaky";
      auto server = std::make_unique<micro::Server>(options, transport, registry, nullptr,
                                                    micro::WrapperChains{});
      server->handle("Flaky.Call", [healthy](const micro::RequestPtr& request,
                                             micro::ResponseHandler respond) {
        if (!healthy) {
          respond(micro::Response::failure(micro::unavailable("flaky", "always overloaded")));
          return;
        }
        micro::Response response;
        response.content_type = "application/json";
        response.body = request->body;
        respond(std::move(response));
      });
      server->start();
      servers.push_back(std::move(server));
    }
  }
  ~Backend() {
    for (auto& server : servers) server->stop();
    transport->close();
  }

  micro::Client client(int retries, int budget_percent) {
    micro::ClientOptions options;
    options.retries = retries;
    options.retry_budget_percent = budget_percent;
    options.backoff = 1ms;
    options.max_backoff = 1ms;
    return micro::Client(options, transport, cache, selector, nullptr, micro::WrapperChains{},
                         runtime.executor());
  }

  // `calls` blocking calls; how many failed.
  static int make_calls(micro::Client& client, int calls) {
    int failed = 0;
    for (int i = 0; i < calls; ++i) {
      micro::Request request;
      request.service = "flaky";
      request.endpoint = "Flaky.Call";
      request.body = "{}";
      try {
        client.call(std::move(request));
      } catch (const micro::Exception& error) {
        CHECK(error.error().code == 503);
        ++failed;
      }
    }
    return failed;
  }
};

}  // namespace

TEST_CASE("retry budget: against an always failing backend retries stay within 20 % + reserve") {
  Backend backend(false);
  auto client = backend.client(3, 20);  // without a budget: three retries per call
  constexpr int calls = 500;
  CHECK(Backend::make_calls(client, calls) == calls);
  auto statistics = client.statistics();
  CAPTURE(statistics.retries);
  CAPTURE(statistics.retries_over_budget);
  CHECK(statistics.calls == calls);
  CHECK(statistics.retries <= calls / 5 + 10);
  CHECK(statistics.retries >= calls / 5);  // the budget is used, not wasted
  CHECK(statistics.attempts == calls + statistics.retries);
  CHECK(statistics.retries_over_budget > 0);  // at most one refusal per call: it ends the call
  CHECK(statistics.retries_over_budget <= calls);
  CHECK(statistics.failures == calls);
}

TEST_CASE("retry budget: 100 % lets every call retry once") {
  Backend backend(false);
  auto client = backend.client(1, 100);
  constexpr int calls = 200;
  CHECK(Backend::make_calls(client, calls) == calls);
  auto statistics = client.statistics();
  CHECK(statistics.retries == calls);
  CHECK(statistics.retries_over_budget == 0);
}

TEST_CASE("retry budget: a healthy backend neither retries nor is refused") {
  Backend backend(true);
  auto client = backend.client(3, 20);
  CHECK(Backend::make_calls(client, 200) == 0);
  auto statistics = client.statistics();
  CHECK(statistics.retries == 0);
  CHECK(statistics.retries_over_budget == 0);
  CHECK(statistics.attempts == 200);
}

TEST_CASE("retry budget: client_retry_budget in the config fills ClientOptions") {
  auto config = micro::Config::parse("client_retry_budget=35");
  CHECK(config.client_options().retry_budget_percent == 35);
  CHECK(micro::Config::parse("").client_options().retry_budget_percent == 20);
  CHECK_THROWS_WITH(micro::Config::parse("client_retry_budget=101"),
                    doctest::Contains("a whole number from 0 to 100"));
}
