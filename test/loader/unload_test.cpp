// The unload policy in practice: one plugin of every kind is loaded through the default
// loader, used (register, listen, call, publish, deliver, wrap), dropped — objects first in
// one round, the loader first in another — and the process must then exit cleanly: no
// handler, thread or thread-local left behind may run code that was unmapped.
#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>

#include <micro/plugin_loader.hpp>
#include <micro/service.hpp>

namespace {

struct Ping {
  std::string text;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Ping, text)

constexpr const char* every_kind =
    "registry=memory broker=memory selector=roundrobin transport=tcp "
    "wrappers=trace?exporter=none&sampler=always_on,log?stream=stdout,metrics?stream=stdout";

}  // namespace

TEST_CASE("every plugin kind loads, works and is dropped; the process then exits cleanly") {
  for (int round = 0; round < 2; ++round) {
    CAPTURE(round);
    micro::Microservice service("unload", micro::Config::parse(every_kind));
    service.handle("Unload.Ping", [](micro::Context&, const Ping& ping) { return ping; });
    std::mutex mutex;
    std::condition_variable changed;
    int delivered = 0;
    service.subscribe("unload.events", [&](micro::Context&, micro::Message&) {
      std::lock_guard lock(mutex);
      ++delivered;
      changed.notify_all();
    });
    service.start();
    auto answer = service.client().call<Ping>("unload", "Unload.Ping", Ping{"hello"});
    CHECK(answer.text == "hello");
    service.client().publish("unload.events", Ping{"event"});
    {
      std::unique_lock lock(mutex);
      CHECK(changed.wait_for(lock, std::chrono::seconds(10), [&] { return delivered == 1; }));
    }
    service.stop();
  }
}

TEST_CASE("objects outliving their loader, and a loader outliving its objects") {
  std::shared_ptr<micro::Registry> registry;
  std::shared_ptr<micro::Selector> selector;
  {
    micro::PluginLoader loader;
    registry = loader.create<micro::Registry>("file", "", {{"poll", "10ms"}});
    selector = loader.create<micro::Selector>("random");
    auto broker = loader.create<micro::Broker>("memory");
    broker->connect();
    broker->disconnect();
  }  // the broker is gone before the loader, the registry and selector after it
  CHECK(registry->list_services().empty());
  micro::Node node{"n1", "127.0.0.1:1", {}};
  CHECK(selector->select_node("s", std::span<const micro::Node>(&node, 1), micro::Context{}, 1) ==
        0);
  registry.reset();
  selector.reset();
}
