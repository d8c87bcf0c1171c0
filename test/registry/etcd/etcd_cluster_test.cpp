// The etcd registry on a 3-member etcd cluster (loopback): a member is killed while services
// register, look up and watch. Nothing registered may be lost, lookups keep answering, leases
// keep being renewed through the survivors, and watches resume where they left off.
#include <doctest/doctest.h>

#include <atomic>
#include <set>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include <micro/error.hpp>
#include <micro/plugin.hpp>
#include <micro/registry.hpp>

#include "registry/etcd/etcd_fixture.hpp"
#include "registry/registry_test_support.hpp"

using namespace registry_test;
using etcd_test::EtcdCluster;
using etcd_test::make_registry;
using etcd_test::node_count;
using micro::WatchAction;

namespace {

// The index of the member etcd reports as leader (or of a follower when `leader` is false).
std::size_t find_member(EtcdCluster& cluster, bool leader) {
  for (std::size_t index = 0; index < cluster.size(); ++index) {
    const auto output = etcd_test::run_command(
        "ETCDCTL_API=3 etcdctl --endpoints=" + cluster.member(index).client_endpoint() +
        " --command-timeout=5s endpoint status -w json 2>/dev/null");
    auto json = nlohmann::json::parse(output, nullptr, false);
    if (!json.is_array() || json.empty()) continue;
    const auto& status = json[0]["Status"];
    const bool is_leader = status["header"]["member_id"] == status["leader"];
    if (is_leader == leader) return index;
  }
  FAIL("no member has the role asked for");
  return 0;
}

// The cluster's endpoints with member `first` first (a registry prefers its first endpoint).
std::string address_starting_with(EtcdCluster& cluster, std::size_t first) {
  std::string address = cluster.member(first).client_endpoint();
  for (std::size_t index = 0; index < cluster.size(); ++index) {
    if (index != first) address += "," + cluster.member(index).client_endpoint();
  }
  return address;
}

}  // namespace

TEST_CASE("etcd cluster: killing the leader loses no registration and lookups keep answering") {
  EtcdCluster cluster(3);
  const std::size_t victim = find_member(cluster, true);
  // The registry prefers the member about to die, so it has to fail over.
  auto registry = make_registry(address_starting_with(cluster, victim), {{"ttl", "2s"}});
  EventRecorder recorder;
  auto watch = registry->watch({.service = "steady"}, recorder.callback());

  for (int index = 0; index < 20; ++index) {
    registry->register_service(make_service("steady", "1", {"before-" + std::to_string(index)}),
                               {});
  }

  std::atomic<bool> looking{true};
  std::atomic<int> lookups{0}, failed_lookups{0};
  std::thread looker([&] {
    while (looking.load()) {
      try {
        registry->get_service("steady");
        lookups.fetch_add(1);
      } catch (const micro::Exception&) {
        failed_lookups.fetch_add(1);
      }
    }
  });

  cluster.member(victim).kill();
  try {
    for (int index = 0; index < 20; ++index) {
      registry->register_service(make_service("steady", "1", {"after-" + std::to_string(index)}),
                                 {});
    }
  } catch (const std::exception& exception) {
    looking.store(false);
    looker.join();
    FAIL("registering after the leader died failed: " << std::string(exception.what()));
  }
  CHECK(node_count(*registry, "steady") == 40);
  // Three lease TTLs later every lease is still renewed, through the survivors.
  std::this_thread::sleep_for(6s);
  looking.store(false);
  looker.join();
  CHECK(node_count(*registry, "steady") == 40);
  CHECK(failed_lookups.load() == 0);
  CHECK(lookups.load() > 10);
  // The watch moved to a survivor and saw every registration.
  CHECK(recorder.wait_for(40, 10s));
  std::set<std::string> created;
  for (const auto& event : recorder.events()) {
    if (event.action == WatchAction::create) created.insert(event.service.nodes.at(0).id);
  }
  CHECK(created.size() == 40);
  watch->stop();

  // A registry made after the death, with the dead member first, works too.
  auto late = make_registry(address_starting_with(cluster, victim));
  CHECK(node_count(*late, "steady") == 40);
}

TEST_CASE("etcd cluster: 1000 events reach two watchers in order, once, across a member's death") {
  EtcdCluster cluster(3);
  // The watchers' streams are on a follower that dies mid-run; the writer never talks to it,
  // so writes go on while the watchers reconnect, and must be replayed to them.
  const std::size_t victim = find_member(cluster, false);
  std::string writer_address;
  for (std::size_t index = 0; index < cluster.size(); ++index) {
    if (index == victim) continue;
    if (!writer_address.empty()) writer_address += ",";
    writer_address += cluster.member(index).client_endpoint();
  }
  auto writer = make_registry(writer_address);
  auto watching = make_registry(address_starting_with(cluster, victim));
  auto watching_too = make_registry(address_starting_with(cluster, victim));
  EventRecorder first, second;
  auto first_watch = watching->watch({}, first.callback());
  auto second_watch = watching_too->watch({.service = "churn"}, second.callback());

  constexpr int node_count_total = 500;  // a create and a delete each: 1000 events
  std::vector<std::pair<WatchAction, std::string>> expected;
  auto id_of = [](int index) {
    return "churn-" + std::to_string(index);
  };
  for (int index = 0; index < node_count_total; ++index) {
    writer->register_service(make_service("churn", "1", {id_of(index)}), {});
    expected.push_back({WatchAction::create, id_of(index)});
    if (index == node_count_total / 4) cluster.member(victim).kill();
  }
  for (int index = 0; index < node_count_total; ++index) {
    writer->deregister_service(make_service("churn", "1", {id_of(index)}));
    expected.push_back({WatchAction::remove, id_of(index)});
  }
  // A marker after the last event: anything duplicated or late would show up before it.
  writer->register_service(make_service("churn", "1", {"marker"}), {});
  expected.push_back({WatchAction::create, "marker"});

  for (auto* recorder : {&first, &second}) {
    CHECK(recorder->wait_for_event(
        [](const micro::WatchEvent& event) {
          return is_event(event, WatchAction::create, "churn", "marker");
        },
        30s));
    std::vector<std::pair<WatchAction, std::string>> seen;
    for (const auto& event : recorder->events()) {
      REQUIRE(event.service.nodes.size() == 1);
      CHECK(event.service.name == "churn");
      seen.push_back({event.action, event.service.nodes[0].id});
    }
    CHECK(seen.size() == expected.size());
    CHECK(seen == expected);
  }
  first_watch->stop();
  second_watch->stop();
}

TEST_CASE("etcd cluster: a watch whose resume point was compacted away reports the difference") {
  EtcdCluster cluster(3);
  const std::size_t victim = find_member(cluster, false);
  std::string writer_address;
  for (std::size_t index = 0; index < cluster.size(); ++index) {
    if (index == victim) continue;
    if (!writer_address.empty()) writer_address += ",";
    writer_address += cluster.member(index).client_endpoint();
  }
  auto writer = make_registry(writer_address);
  writer->register_service(make_service("compacted", "1", {"stays", "goes"}), {});
  auto watching = make_registry(address_starting_with(cluster, victim));
  EventRecorder recorder;
  auto watch = watching->watch({}, recorder.callback());

  // While the watch's member is dead: one node changes, one goes, one comes, and etcd
  // compacts its history past the watch's resume point.
  cluster.member(victim).kill();
  auto changed = make_service("compacted", "1", {"stays"});
  changed.nodes[0].metadata["zone"] = "b";
  writer->register_service(changed, {});
  writer->deregister_service(make_service("compacted", "1", {"goes"}));
  writer->register_service(make_service("compacted", "1", {"comes"}), {});
  const auto status = nlohmann::json::parse(
      etcd_test::run_command("ETCDCTL_API=3 etcdctl --endpoints=" + writer_address +
                             " endpoint status -w json 2>/dev/null"),
      nullptr, false);
  REQUIRE(status.is_array());
  const auto revision = status[0]["Status"]["header"]["revision"].get<std::int64_t>();
  etcd_test::run_command("ETCDCTL_API=3 etcdctl --endpoints=" + writer_address + " compact " +
                         std::to_string(revision) + " 2>&1");

  CHECK(recorder.wait_for(3, 15s));
  // A marker after the last event: anything duplicated would show up before it.
  writer->register_service(make_service("compacted", "1", {"marker"}), {});
  REQUIRE(recorder.wait_for_event(
      [](const micro::WatchEvent& event) {
        return is_event(event, WatchAction::create, "compacted", "marker");
      },
      15s));
  auto events = recorder.events();
  REQUIRE(is_event(events.back(), WatchAction::create, "compacted", "marker"));
  events.pop_back();
  CHECK(events.size() == 3);
  auto saw = [&](WatchAction action, const std::string& id) {
    return std::any_of(events.begin(), events.end(), [&](const micro::WatchEvent& event) {
      return is_event(event, action, "compacted", id);
    });
  };
  CHECK(saw(WatchAction::update, "stays"));
  CHECK(saw(WatchAction::remove, "goes"));
  CHECK(saw(WatchAction::create, "comes"));
  watch->stop();
}
