// RegistryCache over the memory registry: hits stay in memory, concurrent misses share one
// fetch, entries expire after the TTL, the backend's watch keeps entries current, and stale
// entries are served while the backend fails. No Runtime: a thread_pool is the blocking executor.
#include <doctest/doctest.h>

#include <atomic>
#include <future>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include <micro/error.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/registry_cache.hpp>

#include "registry/registry_test_support.hpp"

using namespace registry_test;

namespace {

// Wraps a real registry, counting get_service calls; can be made to fail (503) or to hold
// every get_service until released.
class CountingRegistry final : public micro::Registry {
 public:
  explicit CountingRegistry(std::shared_ptr<micro::Registry> inner) : inner_(std::move(inner)) {}

  void register_service(const micro::Service& service,
                        const micro::RegisterOptions& options) override {
    inner_->register_service(service, options);
  }
  void deregister_service(const micro::Service& service) override {
    inner_->deregister_service(service);
  }
  std::vector<micro::Service> get_service(std::string_view name) override {
    get_calls.fetch_add(1);
    {
      std::unique_lock lock(gate_mutex_);
      gate_changed_.wait(lock, [&] { return gate_open_; });
    }
    if (failing.load()) {
      throw micro::Exception(micro::unavailable("test.backend", "backend is down"));
    }
    return inner_->get_service(name);
  }
  std::vector<micro::Service> list_services() override { return inner_->list_services(); }
  std::unique_ptr<micro::Watch> watch(
      const micro::WatchOptions& options,
      std::function<void(const micro::WatchEvent&)> on_event) override {
    return inner_->watch(options, std::move(on_event));
  }

  void close_gate() {
    std::lock_guard lock(gate_mutex_);
    gate_open_ = false;
  }
  void open_gate() {
    {
      std::lock_guard lock(gate_mutex_);
      gate_open_ = true;
    }
    gate_changed_.notify_all();
  }

  std::atomic<int> get_calls{0};
  std::atomic<bool> failing{false};

 private:
  std::shared_ptr<micro::Registry> inner_;
  std::mutex gate_mutex_;
  std::condition_variable gate_changed_;
  bool gate_open_ = true;
};

struct CacheFixture {
  explicit CacheFixture(std::chrono::milliseconds ttl = std::chrono::minutes(1),
                        std::size_t pool_threads = 4)
      : pool(pool_threads) {
    auto memory = micro::PluginLoader::instance().create<micro::Registry>(
        "memory", "", {}, io_context.get_executor());
    backend = std::make_shared<CountingRegistry>(memory);
    cache = std::make_unique<micro::RegistryCache>(backend, pool.get_executor(),
                                                   micro::RegistryCacheOptions{ttl});
  }
  ~CacheFixture() {
    backend->open_gate();
    cache.reset();
    pool.join();
  }

  // async_get_service as a future, for tests that want to wait on it.
  std::future<std::pair<micro::ServiceSnapshot, std::optional<micro::Error>>> async_get(
      const std::string& name) {
    auto promise = std::make_shared<
        std::promise<std::pair<micro::ServiceSnapshot, std::optional<micro::Error>>>>();
    auto future = promise->get_future();
    cache->async_get_service(
        name, [promise](micro::ServiceSnapshot snapshot, std::optional<micro::Error> error) {
          promise->set_value({std::move(snapshot), std::move(error)});
        });
    return future;
  }

  std::size_t cached_node_count(const std::string& name) {
    std::size_t count = 0;
    for (const auto& service : cache->get_service(name)) count += service.nodes.size();
    return count;
  }

  boost::asio::io_context io_context;
  boost::asio::thread_pool pool;
  std::shared_ptr<CountingRegistry> backend;
  std::unique_ptr<micro::RegistryCache> cache;
};

}  // namespace

TEST_CASE("cache: hits are answered from memory without reaching the backend") {
  CacheFixture fixture;
  fixture.cache->register_service(make_service("greeter", "1", {"g-1"}), {});
  for (int call = 0; call < 10; ++call) {
    auto found = fixture.cache->get_service("greeter");
    REQUIRE(found.size() == 1);
    CHECK(node_ids(found[0]) == std::vector<std::string>{"g-1"});
  }
  CHECK(fixture.backend->get_calls.load() == 1);
  auto statistics = fixture.cache->statistics();
  CHECK(statistics.misses == 1);
  CHECK(statistics.fetches == 1);
  CHECK(statistics.hits == 9);

  // An asynchronous hit completes before async_get_service returns.
  bool completed = false;
  fixture.cache->async_get_service(
      "greeter", [&](micro::ServiceSnapshot snapshot, std::optional<micro::Error> error) {
        CHECK_FALSE(error);
        REQUIRE(snapshot);
        CHECK(snapshot->size() == 1);
        completed = true;
      });
  CHECK(completed);
  CHECK(fixture.backend->get_calls.load() == 1);
}

TEST_CASE("cache: cached_service answers fresh hits only and never fetches") {
  CacheFixture fixture(100ms);
  fixture.cache->register_service(make_service("greeter", "1", {"g-1"}), {});
  auto now = std::chrono::steady_clock::now();
  CHECK_FALSE(fixture.cache->cached_service("greeter", now));  // nothing cached yet
  CHECK(fixture.backend->get_calls.load() == 0);
  CHECK(fixture.cache->statistics().misses == 0);

  fixture.cache->get_service("greeter");
  now = std::chrono::steady_clock::now();
  auto snapshot = fixture.cache->cached_service("greeter", now);
  REQUIRE(snapshot);
  CHECK(node_ids(snapshot->at(0)) == std::vector<std::string>{"g-1"});
  CHECK(fixture.cache->statistics().hits == 1);
  // Judged at the time given: past the TTL it is not fresh, and nothing is fetched for it.
  CHECK_FALSE(fixture.cache->cached_service("greeter", now + 100ms));
  CHECK_FALSE(fixture.cache->cached_service("other", now));
  CHECK(fixture.backend->get_calls.load() == 1);
  CHECK(fixture.cache->statistics().hits == 1);
}

TEST_CASE("cache: concurrent misses share one fetch") {
  CacheFixture fixture;
  fixture.cache->register_service(make_service("greeter", "1", {"g-1", "g-2"}), {});
  fixture.backend->close_gate();
  constexpr int waiter_count = 8;
  std::vector<std::future<std::pair<micro::ServiceSnapshot, std::optional<micro::Error>>>> results;
  for (int waiter = 0; waiter < waiter_count; ++waiter) {
    results.push_back(fixture.async_get("greeter"));
  }
  // Every lookup has missed and joined before the one fetch may finish.
  REQUIRE(wait_until([&] { return fixture.cache->statistics().misses == waiter_count; }));
  fixture.backend->open_gate();

  micro::ServiceSnapshot first;
  for (auto& result : results) {
    REQUIRE(result.wait_for(5s) == std::future_status::ready);
    auto [snapshot, error] = result.get();
    CHECK_FALSE(error);
    REQUIRE(snapshot);
    CHECK(snapshot->at(0).nodes.size() == 2);
    if (!first) first = snapshot;
    CHECK(snapshot == first);  // one snapshot shared by every waiter
  }
  CHECK(fixture.backend->get_calls.load() == 1);
  CHECK(fixture.cache->statistics().fetches == 1);
}

TEST_CASE("cache: an entry older than the TTL is fetched again") {
  CacheFixture fixture(100ms);
  fixture.cache->register_service(make_service("greeter", "1", {"g-1"}), {});
  fixture.cache->get_service("greeter");
  CHECK(fixture.backend->get_calls.load() == 1);
  // Asking repeatedly, the backend is reached again once the entry has aged out.
  CHECK(wait_until([&] {
    fixture.cache->get_service("greeter");
    return fixture.backend->get_calls.load() == 2;
  }));
  CHECK(fixture.cache->statistics().fetches == 2);
}

TEST_CASE("cache: the backend's watch keeps a cached entry current") {
  CacheFixture fixture;
  fixture.cache->register_service(make_service("greeter", "1", {"g-1"}), {});
  CHECK(fixture.cached_node_count("greeter") == 1);

  fixture.cache->register_service(make_service("greeter", "1", {"g-2"}), {});
  CHECK(wait_until([&] { return fixture.cached_node_count("greeter") == 2; }));

  auto changed = make_service("greeter", "1", {"g-1"});
  changed.nodes[0].address = "127.0.0.1:50000";
  fixture.cache->register_service(changed, {});
  CHECK(wait_until([&] {
    auto found = fixture.cache->get_service("greeter");
    for (const auto& node : found.at(0).nodes) {
      if (node.id == "g-1") return node.address == "127.0.0.1:50000";
    }
    return false;
  }));

  fixture.cache->deregister_service(make_service("greeter", "1", {"g-2"}));
  CHECK(wait_until([&] { return fixture.cached_node_count("greeter") == 1; }));
  // All of that came from watch events, not fetches.
  CHECK(fixture.backend->get_calls.load() == 1);
  CHECK(fixture.cache->statistics().watch_events >= 3);

  // The last node gone, the entry goes, and the next lookup asks the backend: 404.
  fixture.cache->deregister_service(changed);
  CHECK(wait_until([&] {
    try {
      fixture.cache->get_service("greeter");
      return false;
    } catch (const micro::Exception& exception) {
      return exception.error().code == 404;
    }
  }));
  CHECK(fixture.backend->get_calls.load() >= 2);
}

TEST_CASE("cache: stale entries are served while the backend fails") {
  CacheFixture fixture(50ms);
  fixture.cache->register_service(make_service("greeter", "1", {"g-1"}), {});
  CHECK(fixture.cached_node_count("greeter") == 1);
  fixture.backend->failing = true;

  // Once the entry ages out, lookups reach the failing backend and still get the nodes.
  CHECK(wait_until([&] {
    CHECK(fixture.cached_node_count("greeter") == 1);
    return fixture.cache->statistics().stale_served >= 1;
  }));
  auto [snapshot, error] = fixture.async_get("greeter").get();
  CHECK_FALSE(error);
  REQUIRE(snapshot);
  CHECK(snapshot->at(0).nodes.at(0).id == "g-1");

  // Back up: fresh data again.
  fixture.backend->failing = false;
  fixture.cache->register_service(make_service("greeter", "1", {"g-2"}), {});
  CHECK(wait_until([&] { return fixture.cached_node_count("greeter") == 2; }));
}

TEST_CASE("cache: a failing backend with nothing cached is an error") {
  CacheFixture fixture;
  fixture.backend->failing = true;
  auto [snapshot, error] = fixture.async_get("greeter").get();
  CHECK_FALSE(snapshot);
  REQUIRE(error);
  CHECK(error->code == 503);
  CHECK(error->detail == "backend is down");
  CHECK_THROWS_AS(fixture.cache->get_service("greeter"), micro::Exception);
  CHECK(fixture.cache->statistics().stale_served == 0);
}

TEST_CASE("cache: an unknown service is a 404 and is not cached") {
  CacheFixture fixture;
  auto [snapshot, error] = fixture.async_get("nobody").get();
  CHECK_FALSE(snapshot);
  REQUIRE(error);
  CHECK(error->code == 404);
  fixture.cache->register_service(make_service("nobody", "1", {"n-1"}), {});
  CHECK(fixture.cached_node_count("nobody") == 1);
}

TEST_CASE("cache: clear() forgets every entry") {
  CacheFixture fixture;
  fixture.cache->register_service(make_service("greeter", "1", {"g-1"}), {});
  fixture.cache->get_service("greeter");
  fixture.cache->clear();
  fixture.cache->get_service("greeter");
  CHECK(fixture.backend->get_calls.load() == 2);
}

TEST_CASE("cache: a blocking lookup made on the blocking executor itself does not deadlock") {
  CacheFixture fixture(std::chrono::minutes(1), 1);
  fixture.cache->register_service(make_service("greeter", "1", {"g-1"}), {});
  std::promise<std::size_t> result;
  boost::asio::post(fixture.pool, [&] {
    try {
      result.set_value(fixture.cached_node_count("greeter"));
    } catch (...) {
      result.set_exception(std::current_exception());
    }
  });
  auto future = result.get_future();
  REQUIRE(future.wait_for(5s) == std::future_status::ready);
  CHECK(future.get() == 1);
}

TEST_CASE("cache: waiters are answered even if the cache is destroyed mid-fetch") {
  CacheFixture fixture;
  fixture.cache->register_service(make_service("greeter", "1", {"g-1"}), {});
  fixture.backend->close_gate();
  auto pending = fixture.async_get("greeter");
  REQUIRE(wait_until([&] { return fixture.backend->get_calls.load() == 1; }));
  fixture.cache.reset();
  fixture.backend->open_gate();
  REQUIRE(pending.wait_for(5s) == std::future_status::ready);
  auto [snapshot, error] = pending.get();
  CHECK_FALSE(error);
  REQUIRE(snapshot);
  CHECK(snapshot->at(0).nodes.size() == 1);
}

TEST_CASE("cache: register, deregister, list and watch pass through to the backend") {
  CacheFixture fixture;
  EventRecorder recorder;
  auto watch = fixture.cache->watch({}, recorder.callback());
  fixture.cache->register_service(make_service("greeter", "1", {"g-1"}), {});
  CHECK(recorder.wait_for(1));
  CHECK(fixture.cache->list_services().size() == 1);
  CHECK(fixture.backend->list_services().size() == 1);
  CHECK(fixture.cache->backend() == fixture.backend);
  watch->stop();
}
