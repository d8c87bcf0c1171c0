// The registry conformance suite: every registry plugin, loaded through the PluginLoader, must
// pass every test here. Adding a registry is one line in registries_under_test().
// MICRO_CONFORMANCE_REGISTRIES ("memory,file", "etcd") picks the plugins one run covers; a run
// whose plugins need a server that is not installed (etcd) exits 77, which meson reports as
// SKIPPED.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include <atomic>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>

#include <boost/asio/io_context.hpp>

#include <micro/error.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/registry.hpp>

#include "registry/etcd/etcd_fixture.hpp"
#include "registry/registry_test_support.hpp"

using namespace registry_test;
using micro::WatchAction;

namespace {

// What one test needs to create the registry: an address, options, and whatever must live as
// long as the registry (a temporary directory).
struct RegistrySetup {
  std::string address;
  std::vector<std::pair<std::string, std::string>> options;
  std::shared_ptr<void> keep_alive;
};

struct RegistryUnderTest {
  std::string plugin;
  std::function<RegistrySetup()> setup;
};

// The plugins this run covers: MICRO_CONFORMANCE_REGISTRIES, or all.
bool selected(const std::string& plugin) {
  const char* list = std::getenv("MICRO_CONFORMANCE_REGISTRIES");
  if (list == nullptr || *list == '\0') return true;
  const std::string names = std::string(",") + list + ",";
  return names.find("," + plugin + ",") != std::string::npos;
}

bool etcd_installed() {
  return ::access(etcd_test::etcd_binary(), X_OK) == 0;
}

const std::vector<RegistryUnderTest>& registries_under_test() {
  static const std::vector<RegistryUnderTest> registries = [] {
    std::vector<RegistryUnderTest> all = {
        {"memory",
         [] {
           return RegistrySetup{};
         }},
        {"file",
         [] {
           auto directory = std::make_shared<TemporaryDirectory>();
           return RegistrySetup{
               "", {{"dir", directory->path().string()}, {"poll", "20ms"}}, directory};
         }},
        {"etcd",
         [] {
           auto server = etcd_test::shared_server();
           return RegistrySetup{
               server->address(), {{"prefix", etcd_test::unique_prefix()}}, server};
         }},
    };
    std::erase_if(all, [](const RegistryUnderTest& registry) {
      return !selected(registry.plugin) || (registry.plugin == "etcd" && !etcd_installed());
    });
    return all;
  }();
  return registries;
}

// One registry made for one test, through the loader as an application would make it.
struct LoadedRegistry {
  explicit LoadedRegistry(const RegistryUnderTest& under_test) : setup(under_test.setup()) {
    registry = micro::PluginLoader::instance().create<micro::Registry>(
        under_test.plugin, setup.address, setup.options, io_context.get_executor());
  }

  // A second registry over the same backing store (same address and options), as another
  // process of the same deployment would have.
  std::shared_ptr<micro::Registry> another(const RegistryUnderTest& under_test) {
    return micro::PluginLoader::instance().create<micro::Registry>(
        under_test.plugin, setup.address, setup.options, io_context.get_executor());
  }

  boost::asio::io_context io_context;
  RegistrySetup setup;
  std::shared_ptr<micro::Registry> registry;  // destroyed before `setup` releases its dir
};

template <class Body>
void for_each_registry(Body body) {
  for (const auto& under_test : registries_under_test()) {
    INFO("registry plugin: " << under_test.plugin);
    LoadedRegistry loaded(under_test);
    REQUIRE(loaded.registry != nullptr);
    body(*loaded.registry, under_test);
  }
}

// The error code get_service throws with, or nothing when it did not throw.
std::optional<int> get_error_code(micro::Registry& registry, const std::string& name) {
  try {
    registry.get_service(name);
  } catch (const micro::Exception& exception) {
    return exception.error().code;
  }
  return std::nullopt;
}

bool has_node(micro::Registry& registry, const std::string& service, const std::string& id) {
  try {
    for (const auto& version : registry.get_service(service)) {
      for (const auto& node : version.nodes) {
        if (node.id == id) return true;
      }
    }
  } catch (const micro::Exception&) {
  }
  return false;
}

}  // namespace

TEST_CASE("registry: a registered node is found by get_service") {
  for_each_registry([](micro::Registry& registry, const RegistryUnderTest&) {
    auto service = make_service("greeter", "1.0.0", {"greeter-1"});
    registry.register_service(service, {});
    auto found = registry.get_service("greeter");
    REQUIRE(found.size() == 1);
    CHECK(found[0].name == "greeter");
    CHECK(found[0].version == "1.0.0");
    REQUIRE(found[0].nodes.size() == 1);
    CHECK(found[0].nodes[0] == service.nodes[0]);
  });
}

TEST_CASE("registry: two nodes of one service are grouped into one service") {
  for_each_registry([](micro::Registry& registry, const RegistryUnderTest&) {
    registry.register_service(make_service("greeter", "1.0.0", {"greeter-1"}), {});
    registry.register_service(make_service("greeter", "1.0.0", {"greeter-2"}), {});
    auto found = registry.get_service("greeter");
    REQUIRE(found.size() == 1);
    CHECK(node_ids(found[0]) == std::vector<std::string>{"greeter-1", "greeter-2"});
  });
}

TEST_CASE("registry: two versions of a service come back as two services") {
  for_each_registry([](micro::Registry& registry, const RegistryUnderTest&) {
    registry.register_service(make_service("greeter", "1.0.0", {"greeter-a"}), {});
    registry.register_service(make_service("greeter", "2.0.0", {"greeter-b", "greeter-c"}), {});
    auto found = registry.get_service("greeter");
    REQUIRE(found.size() == 2);
    std::sort(found.begin(), found.end(),
              [](const auto& left, const auto& right) { return left.version < right.version; });
    CHECK(found[0].version == "1.0.0");
    CHECK(node_ids(found[0]) == std::vector<std::string>{"greeter-a"});
    CHECK(found[1].version == "2.0.0");
    CHECK(node_ids(found[1]) == std::vector<std::string>{"greeter-b", "greeter-c"});
  });
}

TEST_CASE("registry: deregistering one node leaves the other") {
  for_each_registry([](micro::Registry& registry, const RegistryUnderTest&) {
    registry.register_service(make_service("greeter", "1.0.0", {"greeter-1", "greeter-2"}), {});
    registry.deregister_service(make_service("greeter", "1.0.0", {"greeter-1"}));
    auto found = registry.get_service("greeter");
    REQUIRE(found.size() == 1);
    CHECK(node_ids(found[0]) == std::vector<std::string>{"greeter-2"});

    // The last node gone, the service is gone.
    registry.deregister_service(make_service("greeter", "1.0.0", {"greeter-2"}));
    CHECK(get_error_code(registry, "greeter") == 404);
    // Deregistering what is not there is harmless.
    CHECK_NOTHROW(registry.deregister_service(make_service("greeter", "1.0.0", {"greeter-2"})));
  });
}

TEST_CASE("registry: list_services names every live service and version") {
  for_each_registry([](micro::Registry& registry, const RegistryUnderTest&) {
    CHECK(registry.list_services().empty());
    registry.register_service(make_service("alpha", "1", {"alpha-1"}), {});
    registry.register_service(make_service("beta", "1", {"beta-1"}), {});
    registry.register_service(make_service("beta", "2", {"beta-2", "beta-3"}), {});

    auto listed = [&] {
      std::set<std::pair<std::string, std::string>> names;
      for (const auto& service : registry.list_services())
        names.insert({service.name, service.version});
      return names;
    };
    CHECK(listed() == std::set<std::pair<std::string, std::string>>{
                          {"alpha", "1"}, {"beta", "1"}, {"beta", "2"}});
    CHECK(registry.list_services().size() == 3);  // one entry per version, not per node

    registry.deregister_service(make_service("alpha", "1", {"alpha-1"}));
    CHECK(listed() == std::set<std::pair<std::string, std::string>>{{"beta", "1"}, {"beta", "2"}});
  });
}

TEST_CASE("registry: get_service of an unknown service throws a 404 micro::Exception") {
  for_each_registry([](micro::Registry& registry, const RegistryUnderTest&) {
    try {
      registry.get_service("nobody");
      FAIL("get_service of an unknown service returned");
    } catch (const micro::Exception& exception) {
      CHECK(exception.error().code == 404);
      CHECK(exception.error().status == "Not Found");
      CHECK(exception.error().detail.find("nobody") != std::string::npos);
    }
  });
}

TEST_CASE("registry: registering without a name or without nodes is a 400") {
  for_each_registry([](micro::Registry& registry, const RegistryUnderTest&) {
    auto code_of = [&](const micro::Service& service) -> std::optional<int> {
      try {
        registry.register_service(service, {});
      } catch (const micro::Exception& exception) {
        return exception.error().code;
      }
      return std::nullopt;
    };
    CHECK(code_of(make_service("", "1", {"a"})) == 400);
    CHECK(code_of(make_service("greeter", "1", {})) == 400);
    CHECK(code_of(make_service("greeter", "1", {""})) == 400);
    CHECK(get_error_code(registry, "greeter") == 404);
  });
}

TEST_CASE("registry: a node not refreshed within its TTL disappears") {
  for_each_registry([](micro::Registry& registry, const RegistryUnderTest&) {
    EventRecorder recorder;
    auto watch = registry.watch({}, recorder.callback());
    registry.register_service(make_service("greeter", "1", {"short-lived"}), {.ttl = 300ms});
    registry.register_service(make_service("greeter", "1", {"permanent"}), {});
    CHECK(has_node(registry, "greeter", "short-lived"));

    CHECK(wait_until([&] { return !has_node(registry, "greeter", "short-lived"); }));
    CHECK(has_node(registry, "greeter", "permanent"));
    // Watchers hear about the expiry as a delete of that node.
    CHECK(recorder.wait_for_event([](const micro::WatchEvent& event) {
      return is_event(event, WatchAction::remove, "greeter", "short-lived");
    }));
    watch->stop();
  });
}

TEST_CASE("registry: re-registering refreshes the TTL") {
  for_each_registry([](micro::Registry& registry, const RegistryUnderTest&) {
    EventRecorder recorder;
    auto watch = registry.watch({}, recorder.callback());
    const auto service = make_service("greeter", "1", {"heartbeat"});
    const micro::RegisterOptions options{.ttl = 500ms};
    registry.register_service(service, options);
    // Heartbeats every 50ms for three TTLs. Presence is checked just before each heartbeat,
    // when the node is oldest: it must never have lapsed.
    const auto until = std::chrono::steady_clock::now() + 1500ms;
    bool always_present = true;
    while (std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(50ms);  // the heartbeat period, not a wait for a result
      always_present = always_present && has_node(registry, "greeter", "heartbeat");
      registry.register_service(service, options);
    }
    CHECK(always_present);
    // Heartbeats stopped: the node goes, and that is the only delete watchers saw.
    CHECK(wait_until([&] { return !has_node(registry, "greeter", "heartbeat"); }));
    REQUIRE(recorder.wait_for_event(
        [](const micro::WatchEvent& event) { return event.action == WatchAction::remove; }));
    auto events = recorder.events();
    CHECK(std::count_if(events.begin(), events.end(), [](const micro::WatchEvent& event) {
            return event.action == WatchAction::remove;
          }) == 1);
    CHECK(std::count_if(events.begin(), events.end(), [](const micro::WatchEvent& event) {
            return event.action == WatchAction::update;
          }) == 0);
    watch->stop();
  });
}

TEST_CASE("registry: a watch sees create, update and delete in order, with the node") {
  for_each_registry([](micro::Registry& registry, const RegistryUnderTest&) {
    EventRecorder recorder;
    auto watch = registry.watch({}, recorder.callback());

    auto service = make_service("greeter", "1", {"greeter-1"});
    registry.register_service(service, {});
    REQUIRE(recorder.wait_for(1));

    service.nodes[0].metadata["zone"] = "b";
    registry.register_service(service, {});
    REQUIRE(recorder.wait_for(2));

    // A heartbeat (same node again) is not a change. A change to another service marks the
    // point by which a spurious event would have arrived.
    registry.register_service(service, {});
    registry.register_service(make_service("marker", "1", {"marker-1"}), {});
    REQUIRE(recorder.wait_for(3));

    registry.deregister_service(service);
    REQUIRE(recorder.wait_for(4));

    auto events = recorder.events();
    REQUIRE(events.size() == 4);
    CHECK(is_event(events[0], WatchAction::create, "greeter", "greeter-1"));
    CHECK(events[0].service.version == "1");
    CHECK(events[0].service.nodes[0].address == service.nodes[0].address);
    CHECK(is_event(events[1], WatchAction::update, "greeter", "greeter-1"));
    CHECK(events[1].service.nodes[0].metadata.at("zone") == "b");
    CHECK(is_event(events[2], WatchAction::create, "marker", "marker-1"));
    CHECK(is_event(events[3], WatchAction::remove, "greeter", "greeter-1"));
    CHECK(to_string(events[3].action) == "delete");
    watch->stop();
  });
}

TEST_CASE("registry: a watch filtered by service sees only that service") {
  for_each_registry([](micro::Registry& registry, const RegistryUnderTest&) {
    EventRecorder recorder;
    auto watch = registry.watch({.service = "alpha"}, recorder.callback());
    registry.register_service(make_service("beta", "1", {"beta-1"}), {});
    registry.register_service(make_service("alpha", "1", {"alpha-1"}), {});
    REQUIRE(recorder.wait_for_event([](const micro::WatchEvent& event) {
      return is_event(event, WatchAction::create, "alpha", "alpha-1");
    }));
    registry.deregister_service(make_service("beta", "1", {"beta-1"}));
    registry.deregister_service(make_service("alpha", "1", {"alpha-1"}));
    REQUIRE(recorder.wait_for(2));
    for (const auto& event : recorder.events()) CHECK(event.service.name == "alpha");
    CHECK(recorder.events().size() == 2);
    watch->stop();
  });
}

TEST_CASE("registry: after stop() a watch calls back no more") {
  for_each_registry([](micro::Registry& registry, const RegistryUnderTest&) {
    EventRecorder stopped_recorder;
    EventRecorder running_recorder;
    auto stopped_watch = registry.watch({}, stopped_recorder.callback());
    auto running_watch = registry.watch({}, running_recorder.callback());

    registry.register_service(make_service("greeter", "1", {"greeter-1"}), {});
    REQUIRE(stopped_recorder.wait_for(1));
    stopped_watch->stop();

    registry.register_service(make_service("greeter", "1", {"greeter-2"}), {});
    // The running watch seeing greeter-2 is the point by which the stopped one would have.
    REQUIRE(running_recorder.wait_for_event([](const micro::WatchEvent& event) {
      return is_event(event, WatchAction::create, "greeter", "greeter-2");
    }));
    CHECK(stopped_recorder.events().size() == 1);
    stopped_watch.reset();  // destroying a stopped watch is fine too
    running_watch->stop();
  });
}

TEST_CASE("registry: stop() waits for a callback in progress; after it returns none runs") {
  for_each_registry([](micro::Registry& registry, const RegistryUnderTest&) {
    Gate gate;
    std::atomic<int> calls{0};
    std::atomic<bool> callback_finished{false};
    auto watch = registry.watch({}, [&](const micro::WatchEvent&) {
      if (calls.fetch_add(1) == 0) gate.arrive_and_wait();  // the first one blocks
      callback_finished.store(true);
    });
    registry.register_service(make_service("greeter", "1", {"greeter-1"}), {});
    REQUIRE(gate.wait_arrived());

    std::atomic<bool> stop_returned{false};
    std::atomic<bool> finished_when_stop_returned{false};
    std::thread stopper([&] {
      watch->stop();
      finished_when_stop_returned.store(callback_finished.load());
      stop_returned.store(true);
    });
    // The callback is held: stop() must not return meanwhile (this wait is expected to run out).
    CHECK_FALSE(wait_until([&] { return stop_returned.load(); }, 300ms));
    gate.open();
    stopper.join();
    CHECK(finished_when_stop_returned.load());

    EventRecorder marker;
    auto marker_watch = registry.watch({}, marker.callback());
    registry.register_service(make_service("greeter", "1", {"greeter-2"}), {});
    // The marker seeing greeter-2 is the point by which the stopped watch would have.
    REQUIRE(marker.wait_for_event([](const micro::WatchEvent& event) {
      return is_event(event, WatchAction::create, "greeter", "greeter-2");
    }));
    CHECK(calls.load() == 1);
    marker_watch->stop();
  });
}

TEST_CASE("registry: a watch may stop itself from inside its callback") {
  for_each_registry([](micro::Registry& registry, const RegistryUnderTest&) {
    std::atomic<int> calls{0};
    std::atomic<bool> stop_returned_inside{false};
    std::unique_ptr<micro::Watch> watch;
    std::mutex watch_mutex;
    {
      std::lock_guard lock(watch_mutex);
      watch = registry.watch({}, [&](const micro::WatchEvent&) {
        calls.fetch_add(1);
        std::lock_guard inner(watch_mutex);
        watch->stop();  // returns at once: this callback is the last
        stop_returned_inside.store(true);
      });
    }
    EventRecorder marker;
    auto marker_watch = registry.watch({}, marker.callback());
    registry.register_service(make_service("greeter", "1", {"greeter-1"}), {});
    REQUIRE(marker.wait_for(1));
    REQUIRE(wait_until([&] { return stop_returned_inside.load(); }));
    registry.register_service(make_service("greeter", "1", {"greeter-2"}), {});
    REQUIRE(marker.wait_for(2));
    CHECK(calls.load() == 1);
    {
      std::lock_guard lock(watch_mutex);
      watch->stop();  // again, from outside: fine
      watch.reset();
    }
    marker_watch->stop();
  });
}

TEST_CASE("registry: a watch may be destroyed from inside its callback") {
  for_each_registry([](micro::Registry& registry, const RegistryUnderTest&) {
    std::atomic<int> calls{0};
    std::unique_ptr<micro::Watch> watch;
    std::mutex watch_mutex;
    {
      std::lock_guard lock(watch_mutex);
      watch = registry.watch({}, [&](const micro::WatchEvent&) {
        calls.fetch_add(1);
        std::lock_guard inner(watch_mutex);
        watch.reset();
      });
    }
    EventRecorder marker;
    auto marker_watch = registry.watch({}, marker.callback());
    registry.register_service(make_service("greeter", "1", {"greeter-1"}), {});
    REQUIRE(marker.wait_for(1));
    REQUIRE(wait_until([&] {
      std::lock_guard lock(watch_mutex);
      return watch == nullptr;
    }));
    registry.register_service(make_service("greeter", "1", {"greeter-2"}), {});
    REQUIRE(marker.wait_for(2));
    CHECK(calls.load() == 1);
    marker_watch->stop();
  });
}

TEST_CASE("registry: stop() twice, and destroying a watch without stop(), are fine") {
  for_each_registry([](micro::Registry& registry, const RegistryUnderTest&) {
    EventRecorder twice_recorder;
    EventRecorder destroyed_recorder;
    auto twice = registry.watch({}, twice_recorder.callback());
    auto destroyed = registry.watch({}, destroyed_recorder.callback());
    registry.register_service(make_service("greeter", "1", {"greeter-1"}), {});
    REQUIRE(twice_recorder.wait_for(1));
    REQUIRE(destroyed_recorder.wait_for(1));
    twice->stop();
    twice->stop();
    destroyed.reset();  // never stopped: destroying it stops it

    EventRecorder marker;
    auto marker_watch = registry.watch({}, marker.callback());
    registry.register_service(make_service("greeter", "1", {"greeter-2"}), {});
    REQUIRE(marker.wait_for_event([](const micro::WatchEvent& event) {
      return is_event(event, WatchAction::create, "greeter", "greeter-2");
    }));
    CHECK(twice_recorder.events().size() == 1);
    CHECK(destroyed_recorder.events().size() == 1);
    twice.reset();
    marker_watch.reset();
  });
}

TEST_CASE("registry: a callback that throws is ignored and the watch goes on") {
  for_each_registry([](micro::Registry& registry, const RegistryUnderTest&) {
    EventRecorder recorder;
    auto record = recorder.callback();
    auto watch = registry.watch({}, [&](const micro::WatchEvent& event) {
      record(event);
      throw std::runtime_error("callback failed");
    });
    registry.register_service(make_service("greeter", "1", {"greeter-1"}), {});
    REQUIRE(recorder.wait_for(1));
    registry.register_service(make_service("greeter", "1", {"greeter-2"}), {});
    CHECK(recorder.wait_for_event([](const micro::WatchEvent& event) {
      return is_event(event, WatchAction::create, "greeter", "greeter-2");
    }));
    watch->stop();
  });
}

TEST_CASE("registry: many threads registering at once all land") {
  for_each_registry([](micro::Registry& registry, const RegistryUnderTest&) {
    constexpr int thread_count = 8;
    constexpr int nodes_per_thread = 15;
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int thread_index = 0; thread_index < thread_count; ++thread_index) {
      threads.emplace_back([&, thread_index] {
        for (int node = 0; node < nodes_per_thread; ++node) {
          auto id = "node-" + std::to_string(thread_index) + "-" + std::to_string(node);
          try {
            registry.register_service(make_service("crowded", "1", {id}), {});
            registry.get_service("crowded");  // readers alongside writers
            registry.list_services();
          } catch (const std::exception&) {
            failures.fetch_add(1);
          }
        }
      });
    }
    for (auto& thread : threads) thread.join();
    CHECK(failures.load() == 0);
    auto found = registry.get_service("crowded");
    REQUIRE(found.size() == 1);
    CHECK(found[0].nodes.size() == thread_count * nodes_per_thread);

    threads.clear();
    for (int thread_index = 0; thread_index < thread_count; ++thread_index) {
      threads.emplace_back([&, thread_index] {
        for (int node = 0; node < nodes_per_thread; ++node) {
          auto id = "node-" + std::to_string(thread_index) + "-" + std::to_string(node);
          registry.deregister_service(make_service("crowded", "1", {id}));
        }
      });
    }
    for (auto& thread : threads) thread.join();
    CHECK(get_error_code(registry, "crowded") == 404);
  });
}

TEST_CASE("registry: metadata and endpoints round-trip") {
  for_each_registry([](micro::Registry& registry, const RegistryUnderTest&) {
    micro::Service service = make_service("greeter", "1.2.3", {"greeter-1"});
    service.metadata = {{"team", "edge"}, {"empty", ""}, {"unicode", "grüße ✓"}};
    service.nodes[0].metadata = {{"protocol", "tcp"}, {"transport", "tcp"}, {"registry", "x"}};
    micro::Value request{"HelloRequest", "HelloRequest", {{"name", "string", {}}}};
    micro::Value response{"HelloResponse",
                          "HelloResponse",
                          {{"greeting", "string", {}}, {"meta", "Meta", {{"count", "int32", {}}}}}};
    service.endpoints = {{"Greeter.Hello", request, response, {{"stream", "false"}}},
                         {"Greeter.Stream", {}, {}, {{"stream", "true"}}}};
    registry.register_service(service, {});
    auto found = registry.get_service("greeter");
    REQUIRE(found.size() == 1);
    CHECK(found[0] == service);
  });
}

TEST_CASE("registry: a second registry instance over the same backing store agrees") {
  for (const auto& under_test : registries_under_test()) {
    if (under_test.plugin == "memory") continue;  // in-process: each instance is its own world
    INFO("registry plugin: " << under_test.plugin);
    LoadedRegistry loaded(under_test);
    auto other = loaded.another(under_test);
    EventRecorder recorder;
    auto watch = other->watch({}, recorder.callback());
    loaded.registry->register_service(make_service("shared", "1", {"shared-1"}), {});
    CHECK(has_node(*other, "shared", "shared-1"));
    CHECK(recorder.wait_for_event([](const micro::WatchEvent& event) {
      return is_event(event, WatchAction::create, "shared", "shared-1");
    }));
    watch->stop();
  }
}

int main(int argc, char** argv) {
  if (selected("etcd") && !selected("memory") && !etcd_installed()) {
    std::printf(
        "SKIPPED: etcd is not installed (%s not found; Debian: apt install etcd-server, "
        "or set ETCD_BINARY)\n",
        etcd_test::etcd_binary());
    return 77;  // meson: skipped
  }
  doctest::Context context(argc, argv);
  return context.run();
}
