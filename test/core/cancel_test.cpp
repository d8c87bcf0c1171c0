// Cancellation through the whole pipeline over the tcp transport: a cancelled call ends at
// once with 499 whichever stage it is in (before it starts, waiting for the registry,
// backing off between attempts, in flight), the server's handler sees it (polling or a
// callback), and a call that never cancels pays nothing for it.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <future>
#include <mutex>
#include <new>
#include <thread>

#include <micro/client.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/runtime.hpp>
#include <micro/server.hpp>

#include "support/wait.hpp"

#include "support/allocation_counter.hpp"  // one per program: this file

using test_support::allocations;

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test_support::wait_until;

namespace {

struct Echo {
  std::string text;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Echo, text)

// A registry whose lookups block until released: a call waits in the registry stage.
class HeldRegistry final : public micro::Registry {
 public:
  explicit HeldRegistry(std::shared_ptr<micro::Registry> inner) : inner_(std::move(inner)) {}
  void release() {
    std::lock_guard lock(mutex_);
    released_ = true;
    changed_.notify_all();
  }
  int lookups() const { return lookups_.load(); }

  void register_service(const micro::Service& service,
                        const micro::RegisterOptions& options) override {
    inner_->register_service(service, options);
  }
  void deregister_service(const micro::Service& service) override {
    inner_->deregister_service(service);
  }
  std::vector<micro::Service> get_service(std::string_view name) override {
    ++lookups_;
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, 10s, [&] { return released_; });
    return inner_->get_service(name);
  }
  std::vector<micro::Service> list_services() override { return inner_->list_services(); }
  std::unique_ptr<micro::Watch> watch(
      const micro::WatchOptions& options,
      std::function<void(const micro::WatchEvent&)> on_event) override {
    return inner_->watch(options, std::move(on_event));
  }

 private:
  std::shared_ptr<micro::Registry> inner_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool released_ = false;
  std::atomic<int> lookups_{0};
};

// What the handlers of one test saw.
struct Seen {
  std::mutex mutex;
  std::condition_variable changed;
  int started = 0;
  int saw_cancellation = 0;

  void add(int Seen::*field) {
    std::lock_guard lock(mutex);
    ++(this->*field);
    changed.notify_all();
  }
  bool wait(int Seen::*field, int count, std::chrono::milliseconds limit = 5s) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, limit, [&] { return this->*field >= count; });
  }
};

struct Fixture {
  Seen seen;  // before the runtime, whose handlers may still reach it while it drains
  micro::Runtime runtime{4};
  micro::PluginLoader& loader = micro::PluginLoader::instance();
  std::shared_ptr<micro::Registry> memory =
      loader.create<micro::Registry>("memory", "", {}, runtime.executor());
  std::shared_ptr<HeldRegistry> held = std::make_shared<HeldRegistry>(memory);
  std::shared_ptr<micro::Transport> transport =
      loader.create<micro::Transport>("tcp", "", {}, runtime.executor());
  std::shared_ptr<micro::Selector> selector =
      loader.create<micro::Selector>("roundrobin", "", {}, runtime.executor());
  std::shared_ptr<micro::RegistryCache> cache =
      std::make_shared<micro::RegistryCache>(memory, runtime.blocking_executor());
  std::vector<std::thread> pollers;
  std::unique_ptr<micro::Server> server;

  Fixture() {
    micro::ServerOptions options;
    options.name = "echo";
    options.drain_timeout = 2s;
    server = std::make_unique<micro::Server>(options, transport, memory, nullptr,
                                             micro::WrapperChains{});
    server->handle("Echo.Call", [](micro::Context&, const Echo& echo) { return echo; });
    // Answers only once its context is cancelled, seen through a callback.
    server->handle("Hold.Callback",
                   [this](const micro::RequestPtr& request, micro::ResponseHandler respond) {
                     seen.add(&Seen::started);
                     request->context.cancellation()->on_cancel([this, respond] {
                       seen.add(&Seen::saw_cancellation);
                       respond(micro::Response::failure(micro::cancelled_error("echo")));
                     });
                   });
    // Blocks a thread of its own polling the context until it is cancelled.
    server->handle(
        "Hold.Poll", [this](const micro::RequestPtr& request, micro::ResponseHandler respond) {
          seen.add(&Seen::started);
          pollers.emplace_back([this, request, respond] {
            bool cancelled = wait_until([&] { return request->context.cancelled(); }, 10s);
            if (cancelled) seen.add(&Seen::saw_cancellation);
            respond(micro::Response{});
          });
        });
    server->handle("Flaky.Call", [this](const micro::RequestPtr&, micro::ResponseHandler respond) {
      seen.add(&Seen::started);
      respond(micro::Response::failure(micro::unavailable("echo", "try again later")));
    });
    server->start();
  }

  ~Fixture() {
    held->release();
    server->stop();
    for (auto& poller : pollers) poller.join();
    transport->close();
  }

  micro::Client make_client(micro::ClientOptions options = {},
                            std::shared_ptr<micro::Registry> registry = nullptr) {
    auto lookups = registry ? std::make_shared<micro::RegistryCache>(std::move(registry),
                                                                     runtime.blocking_executor())
                            : cache;
    return micro::Client(options, transport, lookups, selector, nullptr, micro::WrapperChains{},
                         runtime.executor());
  }

  static micro::Request request(std::string endpoint) {
    micro::Request request;
    request.service = "echo";
    request.endpoint = std::move(endpoint);
    request.content_type = "application/json";
    request.body = R"({"text":"x"})";
    return request;
  }
};

// Starts a call and returns its future response.
std::future<micro::Response> start(micro::Client& client, micro::Request request,
                                   micro::CallOptions options = {}) {
  auto promise = std::make_shared<std::promise<micro::Response>>();
  auto future = promise->get_future();
  client.async_call(std::move(request), options, [promise](micro::Response&& response) {
    promise->set_value(std::move(response));
  });
  return future;
}

void check_cancelled(const micro::Response& response) {
  REQUIRE(response.error);
  CHECK(response.error->code == 499);
  CHECK(response.error->id == "micro.client");
  CHECK(response.error->detail == "call cancelled");
  CHECK(response.error->status == "Client Closed Request");
}

}  // namespace

TEST_CASE("a call cancelled before it starts ends with 499 and sends nothing") {
  Fixture fixture;
  auto client = fixture.make_client();
  auto request = Fixture::request("Echo.Call");
  request.context.cancel();
  auto future = start(client, std::move(request));
  REQUIRE(future.wait_for(5s) == std::future_status::ready);
  check_cancelled(future.get());
  CHECK(client.statistics().attempts == 0);
  CHECK(fixture.server->statistics().handled == 0);
}

TEST_CASE("a call cancelled in flight ends at once; the handler's context is cancelled") {
  Fixture fixture;
  auto client = fixture.make_client();
  micro::CallOptions options;
  options.timeout = 30s;  // far beyond the test: only cancellation can end these calls
  for (const char* endpoint : {"Hold.Callback", "Hold.Poll"}) {
    CAPTURE(endpoint);
    int before;
    {
      std::lock_guard lock(fixture.seen.mutex);
      fixture.seen.started = 0;
      before = fixture.seen.saw_cancellation;
    }
    auto request = Fixture::request(endpoint);
    auto cancellation = request.context.cancellation();
    auto future = start(client, std::move(request), options);
    REQUIRE(fixture.seen.wait(&Seen::started, 1));
    auto cancelled_at = Clock::now();
    cancellation->cancel();
    REQUIRE(future.wait_for(5s) == std::future_status::ready);
    CHECK(Clock::now() - cancelled_at < 1s);
    check_cancelled(future.get());
    // The server learnt of it through the cancel frame, the connection staying open.
    CHECK(fixture.seen.wait(&Seen::saw_cancellation, before + 1));
  }
  auto echo = client.call<Echo>("echo", "Echo.Call", Echo{"still connected"});
  CHECK(echo.text == "still connected");
}

TEST_CASE("a call cancelled while backing off between attempts makes no further attempt") {
  Fixture fixture;
  micro::ClientOptions options;
  options.retries = 3;
  options.backoff = 5s;  // the first retry would wait this long
  options.max_backoff = 5s;
  options.timeout = 30s;
  auto client = fixture.make_client(options);
  auto request = Fixture::request("Flaky.Call");
  auto cancellation = request.context.cancellation();
  auto future = start(client, std::move(request));
  REQUIRE(fixture.seen.wait(&Seen::started, 1));
  REQUIRE(wait_until([&] { return client.statistics().retries == 1; }));  // backing off now
  auto cancelled_at = Clock::now();
  cancellation->cancel();
  REQUIRE(future.wait_for(5s) == std::future_status::ready);
  CHECK(Clock::now() - cancelled_at < 1s);
  check_cancelled(future.get());
  CHECK(client.statistics().attempts == 1);
  CHECK(fixture.seen.started == 1);
}

TEST_CASE("a call cancelled while waiting for the registry ends at once") {
  Fixture fixture;
  auto client = fixture.make_client({}, fixture.held);
  auto request = Fixture::request("Echo.Call");
  auto cancellation = request.context.cancellation();
  auto future = start(client, std::move(request));
  REQUIRE(wait_until([&] { return fixture.held->lookups() == 1; }));  // the lookup is held
  cancellation->cancel();
  REQUIRE(future.wait_for(1s) == std::future_status::ready);
  check_cancelled(future.get());
  CHECK(client.statistics().attempts == 0);
  fixture.held->release();
}

TEST_CASE("one cancellation ends every call made with copies of its context") {
  Fixture fixture;
  auto client = fixture.make_client();
  micro::Context context;
  auto cancellation = context.cancellation();
  std::vector<std::future<micro::Response>> futures;
  for (int i = 0; i < 3; ++i) {
    auto request = Fixture::request("Hold.Callback");
    request.context = context;
    futures.push_back(start(client, std::move(request)));
  }
  REQUIRE(fixture.seen.wait(&Seen::started, 3));
  context.cancel();
  for (auto& future : futures) {
    REQUIRE(future.wait_for(5s) == std::future_status::ready);
    check_cancelled(future.get());
  }
  CHECK(fixture.seen.wait(&Seen::saw_cancellation, 3));
}

TEST_CASE("a call that never cancels pays nothing for cancellation") {
  Fixture fixture;
  auto client = fixture.make_client();
  auto per_call = [&](bool cancellable) {
    constexpr int calls = 300;
    long before = allocations.load();
    for (int i = 0; i < calls; ++i) {
      micro::Context context;
      if (cancellable) context.cancellation();
      client.call<Echo>("echo", "Echo.Call", Echo{"hello"}, {}, std::move(context));
    }
    return double(allocations.load() - before) / calls;
  };
  for (int i = 0; i < 100; ++i) client.call<Echo>("echo", "Echo.Call", Echo{"warm"});
  double plain = per_call(false);
  double cancellable = per_call(true);
  // A cancellable call pays for its state and the callbacks that watch it (client and
  // transport: about four allocations); a plain one for none of it, and the server's side
  // borrows a state inside its call object.
  CHECK(plain + 1 <= cancellable);
  CHECK(cancellable - plain < 6);
}
