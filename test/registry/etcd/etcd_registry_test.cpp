// etcd registry specifics against a real etcd: option errors, Go-Micro's layout as etcdctl shows
// it, TTL expiry of a process that died, deregistration, survival of etcd restarts, and watch
// correctness over 1000 events across a forced reconnect.
#include <doctest/doctest.h>

#include <poll.h>

#include <map>
#include <optional>
#include <set>

#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include <micro/error.hpp>
#include <micro/plugin.hpp>
#include <micro/registry.hpp>

#include "registry/etcd/etcd_fixture.hpp"
#include "registry/registry_test_support.hpp"

using namespace registry_test;
using etcd_test::creation_error;
using etcd_test::EtcdCluster;
using etcd_test::has_node;
using etcd_test::make_registry;
using micro::WatchAction;

namespace {

bool ends_with(const std::string& text, const std::string& end) {
  return text.size() >= end.size() && text.compare(text.size() - end.size(), end.size(), end) == 0;
}

}  // namespace

TEST_CASE("etcd registry: malformed addresses and options are refused with what is wrong") {
  CHECK(ends_with(creation_error("127.0.0.1"),
                  "bad endpoint \"127.0.0.1\" in \"127.0.0.1\": expected host:port"));
  CHECK(ends_with(creation_error("127.0.0.1:2379,:2379"),
                  "bad endpoint \":2379\" in \"127.0.0.1:2379,:2379\": expected host:port"));
  CHECK(ends_with(creation_error("127.0.0.1:2379,"),
                  "bad endpoint \"\" in \"127.0.0.1:2379,\": expected host:port"));
  CHECK(ends_with(creation_error("localhost:http"),
                  "bad endpoint \"localhost:http\" in \"localhost:http\": port \"http\" is not a "
                  "number from 1 to 65535"));
  CHECK(ends_with(creation_error("localhost:70000"),
                  "bad endpoint \"localhost:70000\" in \"localhost:70000\": port \"70000\" is not "
                  "a number from 1 to 65535"));
  CHECK(ends_with(creation_error("https://10.0.0.1:2379/v3"),
                  "bad endpoint \"https://10.0.0.1:2379/v3\" in \"https://10.0.0.1:2379/v3\": "
                  "expected host:port, not a path (\"/v3\")"));
  CHECK(ends_with(creation_error("127.0.0.1:2379", {{"prefix", "micro/"}}),
                  "prefix \"micro/\" must start with \"/\""));
  CHECK(ends_with(creation_error("127.0.0.1:2379", {{"username", "root"}}),
                  "username and password go together: give both or neither"));
  // Ranges are the descriptor's, checked by the loader (etcd leases count whole seconds).
  CHECK(ends_with(creation_error("127.0.0.1:2379", {{"ttl", "500ms"}}),
                  "registry plugin 'etcd': option 'ttl' is 500ms, below its minimum 1s; expected a "
                  "duration of at least 1s"));
  CHECK(ends_with(creation_error("127.0.0.1:2379", {{"request_timeout", "0s"}}),
                  "option 'request_timeout' is 0s, below its minimum 1ms; expected a duration of "
                  "at least 1ms"));
  CHECK(ends_with(creation_error("127.0.0.1:2379", {{"keepalive", "sometimes"}}),
                  "keepalive \"sometimes\" must be \"stream\" or \"batch\""));
  // The loader itself refuses unknown options and ill-typed values.
  CHECK_THROWS_AS(make_registry("127.0.0.1:2379", {{"ttl", "soon"}}), micro::Exception);
  CHECK_THROWS_AS(make_registry("127.0.0.1:2379", {{"endpoints", "x"}}), micro::Exception);
  // Good forms: several endpoints, http:// prefixes, an empty address (127.0.0.1:2379).
  CHECK(creation_error("http://127.0.0.1:2379,10.0.0.2:2379") == "");
  CHECK(creation_error("") == "");
}

TEST_CASE("etcd registry: a member that is down is a 503 within request_timeout") {
  const int port = etcd_test::free_port();  // nobody listens there
  auto registry = make_registry("127.0.0.1:" + std::to_string(port),
                                {{"request_timeout", "300ms"}, {"dial_timeout", "100ms"}});
  const auto started = std::chrono::steady_clock::now();
  try {
    registry->get_service("greeter");
    FAIL("get_service answered without etcd");
  } catch (const micro::Exception& exception) {
    CHECK(exception.error().code == 503);
    CHECK(exception.error().detail.find("no etcd endpoint answered /v3/kv/range") !=
          std::string::npos);
  }
  CHECK(std::chrono::steady_clock::now() - started < 2s);
}

TEST_CASE("etcd registry: etcdctl shows Go-Micro's layout and JSON values") {
  EtcdCluster etcd;
  auto registry = make_registry(etcd.address());
  micro::Service service = make_service("go.micro/greeter", "1.0.0", {"greeter/1"});
  service.metadata = {{"team", "edge"}};
  service.nodes[0].metadata = {{"protocol", "tcp"},
                               {"transport", "tcp"},
                               {"broker", "memory"},
                               {"registry", "etcd"},
                               {"server", "micro"}};
  service.endpoints = {{"Greeter.Hello", {"HelloRequest", "HelloRequest", {}}, {}, {}}};
  registry->register_service(service, {.ttl = 30s});

  // etcdctl prints key, then value, one per line.
  const auto output = etcd.etcdctl("get --prefix /micro/registry/");
  std::istringstream lines(output);
  std::string key, value;
  std::getline(lines, key);
  std::getline(lines, value);
  INFO("etcdctl said: " << output);
  CHECK(key == "/micro/registry/go.micro-greeter/greeter-1");
  auto json = nlohmann::json::parse(value, nullptr, false);
  REQUIRE(json.is_object());
  CHECK(json["name"] == "go.micro/greeter");
  CHECK(json["version"] == "1.0.0");
  CHECK(json["metadata"]["team"] == "edge");
  CHECK(json["endpoints"][0]["name"] == "Greeter.Hello");
  REQUIRE(json["nodes"].size() == 1);
  CHECK(json["nodes"][0]["id"] == "greeter/1");
  CHECK(json["nodes"][0]["address"] == service.nodes[0].address);
  for (const char* field : {"protocol", "transport", "broker", "registry", "server"}) {
    CHECK(json["nodes"][0]["metadata"].contains(field));
  }
  // The key carries a lease with the TTL asked for.
  const auto lease_output = etcd.etcdctl("get /micro/registry/go.micro-greeter/greeter-1 -w json");
  auto lease_json = nlohmann::json::parse(lease_output, nullptr, false);
  REQUIRE(lease_json.is_object());
  CHECK(lease_json["kvs"][0].value("lease", 0LL) != 0);

  // What a Go-Micro service wrote is read back too.
  const std::string go_value =
      R"({"name":"legacy","version":"latest","metadata":null,"endpoints":[],)"
      R"("nodes":[{"id":"legacy-1","address":"10.0.0.9:8080","metadata":{"protocol":"grpc"}}]})";
  etcd.etcdctl("put /micro/registry/legacy/legacy-1 '" + go_value + "'");
  auto found = registry->get_service("legacy");
  REQUIRE(found.size() == 1);
  REQUIRE(found[0].nodes.size() == 1);
  CHECK(found[0].nodes[0].address == "10.0.0.9:8080");
  CHECK(found[0].nodes[0].metadata.at("protocol") == "grpc");
  // A stray non-JSON value under the prefix does not break lookups.
  etcd.etcdctl("put /micro/registry/legacy/garbage 'not json'");
  CHECK(registry->get_service("legacy").size() == 1);
}

TEST_CASE("etcd registry: deregistering removes the node at once") {
  EtcdCluster etcd;
  auto registry = make_registry(etcd.address());
  auto reader = make_registry(etcd.address());
  registry->register_service(make_service("greeter", "1", {"greeter-1", "greeter-2"}), {});
  CHECK(has_node(*reader, "greeter", "greeter-1"));
  registry->deregister_service(make_service("greeter", "1", {"greeter-1"}));
  // No waiting: the key is gone by the time deregister_service returns.
  CHECK_FALSE(has_node(*reader, "greeter", "greeter-1"));
  CHECK(has_node(*reader, "greeter", "greeter-2"));
  CHECK(etcd.etcdctl("get --prefix /micro/registry/ --keys-only").find("greeter-1") ==
        std::string::npos);
}

TEST_CASE("etcd registry: the nodes of a registry destroyed without deregistering expire") {
  EtcdCluster etcd;
  auto reader = make_registry(etcd.address());
  {
    auto crashed = make_registry(etcd.address(), {{"ttl", "1s"}});
    crashed->register_service(make_service("greeter", "1", {"with-ttl"}), {.ttl = 1s});
    crashed->register_service(make_service("greeter", "1", {"default-ttl"}), {});
    CHECK(has_node(*reader, "greeter", "with-ttl"));
    CHECK(has_node(*reader, "greeter", "default-ttl"));
  }  // no deregistration: as if the process had crashed
  CHECK(wait_until([&] { return !has_node(*reader, "greeter", "with-ttl"); }, 6s));
  CHECK(wait_until([&] { return !has_node(*reader, "greeter", "default-ttl"); }, 6s));
}

TEST_CASE("etcd registry: a SIGKILLed process's node is kept alive while it lives, then expires") {
  EtcdCluster etcd;
  int ready_pipe[2];
  REQUIRE(::pipe(ready_pipe) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // The child registers with the plugin's keep-alive and waits to be killed.
    ::close(ready_pipe[0]);
    try {
      auto registry = make_registry(etcd.address(), {{"ttl", "1s"}});
      registry->register_service(make_service("victim", "1", {"victim-1"}), {});
      const char ready = 'r';
      (void)!::write(ready_pipe[1], &ready, 1);
      ::sleep(60);
    } catch (...) {
    }
    ::_exit(0);
  }
  ::close(ready_pipe[1]);
  pollfd ready{ready_pipe[0], POLLIN, 0};
  REQUIRE(::poll(&ready, 1, 10000) == 1);
  ::close(ready_pipe[0]);

  auto reader = make_registry(etcd.address());
  CHECK(has_node(*reader, "victim", "victim-1"));
  // Three lease TTLs later the keep-alive sender has kept the node.
  std::this_thread::sleep_for(3s);
  CHECK(has_node(*reader, "victim", "victim-1"));

  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  const auto killed = std::chrono::steady_clock::now();
  CHECK(wait_until([&] { return !has_node(*reader, "victim", "victim-1"); }, 6s));
  // Gone within about one TTL (1s) plus etcd's expiry sweep (0.5s).
  CHECK(std::chrono::steady_clock::now() - killed < 3s);
}

TEST_CASE("etcd registry: registrations survive an etcd restart") {
  EtcdCluster etcd;
  auto registry = make_registry(etcd.address(), {{"ttl", "2s"}});
  auto reader = make_registry(etcd.address());
  registry->register_service(make_service("greeter", "1", {"greeter-1"}), {});

  SUBCASE("with its data: the lease and key are still there") {
    etcd.restart(0);
    CHECK(wait_until([&] { return has_node(*reader, "greeter", "greeter-1"); }, 6s));
    // And they stay beyond a lease TTL: keep-alives resumed on a new connection.
    std::this_thread::sleep_for(3s);
    CHECK(has_node(*reader, "greeter", "greeter-1"));
  }
  SUBCASE("without its data: the node re-registers on its own") {
    etcd.restart_empty();
    CHECK(etcd.etcdctl("get --prefix /micro/registry/ --keys-only").find("greeter-1") ==
          std::string::npos);
    CHECK(wait_until([&] { return has_node(*reader, "greeter", "greeter-1"); }, 8s));
  }
  // Deregistering after the restart still works.
  registry->deregister_service(make_service("greeter", "1", {"greeter-1"}));
  CHECK_FALSE(has_node(*reader, "greeter", "greeter-1"));
}

TEST_CASE("etcd registry: 1000 events reach two watchers in order, once, across a restart") {
  EtcdCluster etcd;
  auto registry = make_registry(etcd.address(), {{"request_timeout", "10s"}});
  auto other = make_registry(etcd.address());
  EventRecorder first, second;
  auto first_watch = registry->watch({}, first.callback());
  auto second_watch = other->watch({.service = "churn"}, second.callback());

  constexpr int node_count = 500;  // a create and a delete each: 1000 events
  std::vector<std::pair<WatchAction, std::string>> expected;
  auto id_of = [](int index) {
    return "churn-" + std::to_string(index);
  };
  for (int index = 0; index < node_count; ++index) {
    registry->register_service(make_service("churn", "1", {id_of(index)}), {});
    expected.push_back({WatchAction::create, id_of(index)});
    if (index == node_count / 2) {
      // Force both watch streams to reconnect in the middle of the run.
      REQUIRE(first.wait_for(expected.size(), 10s));
      etcd.restart(0);
    }
  }
  for (int index = 0; index < node_count; ++index) {
    registry->deregister_service(make_service("churn", "1", {id_of(index)}));
    expected.push_back({WatchAction::remove, id_of(index)});
  }

  // A marker after the last event: both watches see it last, and anything duplicated or late
  // would show up before it.
  registry->register_service(make_service("churn", "1", {"marker"}), {});
  for (auto* recorder : {&first, &second}) {
    REQUIRE(recorder->wait_for_event(
        [](const micro::WatchEvent& event) {
          return is_event(event, WatchAction::create, "churn", "marker");
        },
        20s));
    auto events = recorder->events();
    REQUIRE(is_event(events.back(), WatchAction::create, "churn", "marker"));
    events.pop_back();
    std::vector<std::pair<WatchAction, std::string>> seen;
    for (const auto& event : events) {
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

TEST_CASE("etcd registry: with auth enabled, a user and password are needed and used") {
  EtcdCluster etcd;
  REQUIRE(etcd.etcdctl("user add root:secret-root").find("User root created") != std::string::npos);
  REQUIRE(etcd.etcdctl("auth enable").find("Authentication Enabled") != std::string::npos);

  auto registry =
      make_registry(etcd.address(), {{"username", "root"}, {"password", "secret-root"}});
  registry->register_service(make_service("guarded", "1", {"guarded-1"}), {.ttl = 5s});
  CHECK(has_node(*registry, "guarded", "guarded-1"));
  EventRecorder recorder;
  auto watch = registry->watch({}, recorder.callback());
  registry->register_service(make_service("guarded", "1", {"guarded-2"}), {});
  CHECK(recorder.wait_for_event([](const micro::WatchEvent& event) {
    return is_event(event, WatchAction::create, "guarded", "guarded-2");
  }));
  watch->stop();

  auto code_of = [](micro::Registry& registry) -> std::optional<int> {
    try {
      registry.get_service("guarded");
    } catch (const micro::Exception& exception) {
      return exception.error().code;
    }
    return std::nullopt;
  };
  auto wrong_password =
      make_registry(etcd.address(), {{"username", "root"}, {"password", "wrong"}});
  CHECK(code_of(*wrong_password) == 401);
  auto anonymous = make_registry(etcd.address());
  CHECK(code_of(*anonymous).has_value());  // etcd refuses a request without a token
  registry->deregister_service(make_service("guarded", "1", {"guarded-1", "guarded-2"}));
  CHECK(code_of(*registry) == 404);
}
