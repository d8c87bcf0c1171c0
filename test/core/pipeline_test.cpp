// The client pipeline and the server router over real plugins (memory registry, tcp
// transport, roundrobin selector): typed calls, errors, retries, deadlines, selector
// feedback, coroutines and a graceful stop that loses no request.
#include <doctest/doctest.h>

#include <atomic>
#include <future>
#include <mutex>
#include <thread>
#include <utility>  // before Boost 1.74's awaitable.hpp, which uses std::exchange without it

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include <micro/client.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/runtime.hpp>
#include <micro/server.hpp>

#include "support/wait.hpp"

using namespace std::chrono_literals;

namespace {

struct Echo {
  std::string text;
  int delay_ms = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Echo, text, delay_ms)

// A real selector plugin with every report recorded, to see feedback arrive.
class RecordingSelector : public micro::Selector {
 public:
  explicit RecordingSelector(std::shared_ptr<micro::Selector> inner) : inner_(std::move(inner)) {}
  std::size_t select_node(std::string_view service, std::span<const micro::Node> nodes,
                          const micro::Context& context, int attempt) override {
    return inner_->select_node(service, nodes, context, attempt);
  }
  void report(std::string_view service, const micro::Node& node,
              const micro::Outcome& outcome) override {
    {
      std::lock_guard lock(mutex_);
      reports_.push_back({node.address, outcome});
    }
    inner_->report(service, node, outcome);
  }
  std::vector<std::pair<std::string, micro::Outcome>> reports() {
    std::lock_guard lock(mutex_);
    return reports_;
  }

 private:
  std::shared_ptr<micro::Selector> inner_;
  std::mutex mutex_;
  std::vector<std::pair<std::string, micro::Outcome>> reports_;
};

struct Fixture {
  micro::Runtime runtime{4};
  micro::PluginLoader& loader = micro::PluginLoader::instance();
  std::shared_ptr<micro::Registry> registry =
      loader.create<micro::Registry>("memory", "", {}, runtime.executor());
  std::shared_ptr<micro::Transport> transport =
      loader.create<micro::Transport>("tcp", "", {}, runtime.executor());
  std::shared_ptr<RecordingSelector> selector = std::make_shared<RecordingSelector>(
      loader.create<micro::Selector>("roundrobin", "", {}, runtime.executor()));
  std::shared_ptr<micro::RegistryCache> cache =
      std::make_shared<micro::RegistryCache>(registry, runtime.blocking_executor());
  std::vector<std::unique_ptr<micro::Server>> servers;

  ~Fixture() {
    for (auto& server : servers) server->stop();
    transport->close();
  }

  // A server of "echo" whose Echo.Call answers after delay_ms on a timer (not blocking a thread).
  micro::Server& add_server(
      std::function<void(const micro::RequestPtr&, micro::ResponseHandler)> extra = {},
      std::chrono::milliseconds drain = 5s) {
    micro::ServerOptions options;
    options.name = "echo";
    options.drain_timeout = drain;
    auto server = std::make_unique<micro::Server>(options, transport, registry, nullptr,
                                                  micro::WrapperChains{});
    auto executor = runtime.executor();
    server->handle(
        "Echo.Call", [executor](const micro::RequestPtr& request, micro::ResponseHandler respond) {
          auto echo = nlohmann::json::parse(request->body).get<Echo>();
          auto timer = std::make_shared<boost::asio::steady_timer>(executor);
          timer->expires_after(std::chrono::milliseconds(echo.delay_ms));
          timer->async_wait([timer, body = request->body, respond](boost::system::error_code) {
            micro::Response response;
            response.content_type = "application/json";
            response.body = body;
            respond(std::move(response));
          });
        });
    server->handle("Echo.Typed", [](micro::Context& context, const Echo& echo) {
      if (echo.text == "bad") throw micro::Exception(micro::bad_request("echo", "bad text"));
      if (echo.text == "boom") throw std::runtime_error("exploded");
      return Echo{echo.text + " from " + context.metadata().get("Who", "nobody"), 0};
    });
    if (extra) server->handle("Echo.Extra", extra);
    server->start();
    servers.push_back(std::move(server));
    return *servers.back();
  }

  micro::Client make_client(micro::ClientOptions options = {}) {
    return micro::Client(options, transport, cache, selector, nullptr, micro::WrapperChains{},
                         runtime.executor());
  }
};

}  // namespace

TEST_CASE("typed call through the whole pipeline, metadata travels") {
  Fixture fixture;
  fixture.add_server();
  auto client = fixture.make_client();
  micro::Context context;
  context.metadata().set("Who", "the test");
  auto echo = client.call<Echo>("echo", "Echo.Typed", Echo{"hi", 0}, {}, context);
  CHECK(echo.text == "hi from the test");
  CHECK(client.statistics().attempts == 1);
}

TEST_CASE("handler errors come back with their code and are not retried") {
  Fixture fixture;
  fixture.add_server();
  auto client = fixture.make_client();
  try {
    client.call<Echo>("echo", "Echo.Typed", Echo{"bad", 0});
    FAIL("expected an error");
  } catch (const micro::Exception& e) {
    CHECK(e.error().code == 400);
    CHECK(e.error().detail == "bad text");
  }
  try {
    client.call<Echo>("echo", "Echo.Typed", Echo{"boom", 0});
    FAIL("expected an error");
  } catch (const micro::Exception& e) {
    CHECK(e.error().code == 500);
    CHECK(e.error().detail == "exploded");
  }
  CHECK(client.statistics().attempts == 2);  // one attempt each
}

TEST_CASE("unknown endpoint and unknown service") {
  Fixture fixture;
  fixture.add_server();
  auto client = fixture.make_client();
  try {
    client.call<Echo>("echo", "Echo.Missing", Echo{"x", 0});
    FAIL("expected an error");
  } catch (const micro::Exception& e) {
    CHECK(e.error().code == 404);
    CHECK(e.error().detail ==
          "service echo has no endpoint 'Echo.Missing'; it has: Echo.Call, Echo.Typed");
  }
  try {
    client.call<Echo>("nobody", "Nobody.Call", Echo{"x", 0});
    FAIL("expected an error");
  } catch (const micro::Exception& e) {
    CHECK(e.error().code == 503);
    CHECK(e.error().detail.find("nobody") != std::string::npos);
  }
}

TEST_CASE("a 503 from one node is retried on the next, and the selector hears of both") {
  Fixture fixture;
  auto& failing = fixture.add_server([](const micro::RequestPtr&, micro::ResponseHandler respond) {
    respond(micro::Response::failure(micro::unavailable("echo", "overloaded")));
  });
  auto& healthy =
      fixture.add_server([](const micro::RequestPtr& request, micro::ResponseHandler respond) {
        micro::Response response;
        response.content_type = "application/json";
        response.body = request->body;
        respond(std::move(response));
      });
  auto client = fixture.make_client();
  for (int i = 0; i < 10; ++i)
    CHECK(client.call<Echo>("echo", "Echo.Extra", Echo{"x", 0}).text == "x");
  auto reports = fixture.selector->reports();
  int failed_reports = 0, ok_reports = 0;
  for (const auto& [address, outcome] : reports) {
    if (address == failing.address()) {
      CHECK_FALSE(outcome.ok);
      CHECK(outcome.code == 503);
      ++failed_reports;
    } else {
      CHECK(address == healthy.address());
      CHECK(outcome.ok);
      CHECK(outcome.latency > 0ns);
      ++ok_reports;
    }
  }
  CHECK(ok_reports == 10);
  CHECK(failed_reports >= 1);  // round robin sends some first attempts to the failing node
  CHECK(client.statistics().retries == static_cast<std::uint64_t>(failed_reports));
}

TEST_CASE("a call past its deadline gets 408 in about its timeout") {
  Fixture fixture;
  fixture.add_server();
  auto client = fixture.make_client();
  micro::CallOptions options;
  options.timeout = 150ms;
  auto started = std::chrono::steady_clock::now();
  try {
    client.call<Echo>("echo", "Echo.Call", Echo{"slow", 2000}, options);
    FAIL("expected a timeout");
  } catch (const micro::Exception& e) {
    CHECK(e.error().code == 408);
  }
  CHECK(std::chrono::steady_clock::now() - started < 1500ms);
}

TEST_CASE("the deadline travels to the server") {
  Fixture fixture;
  std::promise<std::chrono::milliseconds> seen;
  fixture.add_server([&seen](const micro::RequestPtr& request, micro::ResponseHandler respond) {
    seen.set_value(
        std::chrono::duration_cast<std::chrono::milliseconds>(request->context.remaining()));
    respond(micro::Response{});
  });
  auto client = fixture.make_client();
  micro::CallOptions options;
  options.timeout = 3s;
  client.call(client.make_request("echo", "Echo.Extra", Echo{"x", 0}), options);
  auto remaining = seen.get_future().get();
  CHECK(remaining <= 3s);
  CHECK(remaining > 2s);
}

TEST_CASE("co_await a call with use_awaitable") {
  Fixture fixture;
  fixture.add_server();
  auto client = fixture.make_client();
  auto result = boost::asio::co_spawn(
      fixture.runtime.executor(),
      [&]() -> boost::asio::awaitable<std::string> {
        // No temporaries with destructors inside the co_await expression: g++ 12 destroys
        // them twice (GCC bug 100611 and kin), so the request and options are named first.
        micro::CallOptions options;
        micro::Request request = client.make_request("echo", "Echo.Typed", Echo{"co", 0});
        auto response =
            co_await client.async_call(std::move(request), options, boost::asio::use_awaitable);
        co_return micro::Client::decode_response<Echo>(response).text;
      },
      boost::asio::use_future);
  REQUIRE(result.wait_for(10s) == std::future_status::ready);
  CHECK(result.get() == "co from nobody");
}

TEST_CASE("graceful stop finishes every in-flight call, then refuses and deregisters") {
  Fixture fixture;
  auto& server = fixture.add_server();
  auto client = fixture.make_client();
  constexpr int calls = 50;
  std::atomic<int> ok{0}, failed{0}, done{0};
  std::promise<void> all_done;
  for (int i = 0; i < calls; ++i) {
    client.async_call(client.make_request("echo", "Echo.Call", Echo{"slow", 300}),
                      [&](micro::Response&& response) {
                        (response.error ? failed : ok)++;
                        if (++done == calls) all_done.set_value();
                      });
  }
  // Stop once every call is being handled, so the drain has real work to finish.
  REQUIRE(test_support::wait_until([&] { return server.statistics().in_flight >= calls; }, 5s));
  REQUIRE(server.statistics().in_flight == calls);
  CHECK(server.stop() == 0);
  REQUIRE(all_done.get_future().wait_for(10s) == std::future_status::ready);
  CHECK(ok == calls);
  CHECK(failed == 0);
  CHECK(server.statistics().handled == calls);
  CHECK_THROWS_AS(fixture.registry->get_service("echo"), micro::Exception);
}

TEST_CASE("the server refuses work whose deadline passed while a wrapper held it") {
  Fixture fixture;
  // A handler wrapper that holds each request for 300 ms (as a rate limiter might).
  micro::WrapperChains wrappers;
  auto executor = fixture.runtime.executor();
  wrappers.add_handler([executor](micro::HandlerFunction next) -> micro::HandlerFunction {
    return [executor, next](const micro::RequestPtr& request, micro::ResponseHandler respond) {
      auto timer = std::make_shared<boost::asio::steady_timer>(executor, 300ms);
      timer->async_wait(
          [timer, next, request, respond](boost::system::error_code) { next(request, respond); });
    };
  });
  micro::ServerOptions options;
  options.name = "echo";
  micro::Server server(options, fixture.transport, fixture.registry, nullptr, wrappers);
  std::atomic<int> handled{0};
  server.handle("Echo.Held", [&](const micro::RequestPtr&, micro::ResponseHandler respond) {
    ++handled;
    respond(micro::Response{});
  });
  server.start();
  auto client = fixture.make_client();
  micro::CallOptions budget;
  budget.timeout = 100ms;
  budget.retries = 0;
  auto response = client
                      .async_call(client.make_request("echo", "Echo.Held", Echo{"b", 0}), budget,
                                  boost::asio::use_future)
                      .get();
  REQUIRE(response.error);
  CHECK(response.error->code == 408);
  // When the wrapper lets go, the server sees the deadline passed and skips the handler.
  CHECK(test_support::wait_until([&] { return server.statistics().refused != 0; }, 5s));
  CHECK(server.statistics().refused == 1);
  CHECK(handled == 0);
  server.stop();
}
