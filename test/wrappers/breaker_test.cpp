// The breaker wrapper between a real client and server (tcp, memory registry): it opens on
// consecutive failures and on the error ratio, answers 503 while open without a call reaching
// the server (counted at the handler), probes when half-open, closes again, opens again on a
// failed probe, keeps endpoints apart, and ignores 4xx answers. State changes are read from
// the log lines it writes.
#include <doctest/doctest.h>

#include <atomic>
#include <string>

#include "resilience_support.hpp"

using namespace std::chrono_literals;
using resilience_test::CapturedLog;
using resilience_test::Services;
using test_support::wait_until;

namespace {

// A server whose endpoints fail on demand, counting the calls that reach them.
struct FlakyBackend {
  std::atomic<int> code{0};  // 0: answer; else throw an error with this code
  std::atomic<int> reached{0}, other_reached{0};

  void setup(micro::Server& server) {
    server.handle("Flaky.Call", [this](const micro::RequestPtr&, micro::ResponseHandler respond) {
      ++reached;
      int failing = code.load();
      if (failing != 0) {
        respond(micro::Response::failure(micro::Error("flaky", failing, "told to fail")));
        return;
      }
      micro::Response response;
      response.content_type = "application/json";
      response.body = "{}";
      respond(std::move(response));
    });
    server.handle("Flaky.Other", [this](const micro::RequestPtr&, micro::ResponseHandler respond) {
      ++other_reached;
      micro::Response response;
      response.content_type = "application/json";
      response.body = "{}";
      respond(std::move(response));
    });
  }
};

struct BreakerFixture {
  CapturedLog log;
  FlakyBackend backend;
  micro::Runtime loader_runtime{1};
  std::shared_ptr<micro::Wrapper> breaker;
  std::unique_ptr<Services> services;

  explicit BreakerFixture(const resilience_test::Options& options) {
    breaker = resilience_test::load_wrapper("breaker", options, loader_runtime.executor());
    micro::WrapperChains client_chains;
    client_chains.add(breaker->wrappers({"client", "1", "tcp", ""}));
    services = std::make_unique<Services>(micro::WrapperChains{}, std::move(client_chains),
                                          [this](micro::Server& server) { backend.setup(server); });
  }

  bool refused_by_breaker(const micro::Response& response) const {
    return response.error && response.error->code == 503 &&
           response.error->id == "micro.wrapper.breaker";
  }
};

}  // namespace

TEST_CASE("breaker: opens after consecutive failures, refuses without a call, probes, closes") {
  BreakerFixture fixture(
      {{"consecutive", "3"}, {"min_calls", "1000"}, {"open", "200ms"}, {"probes", "2"}});
  auto& backend = fixture.backend;
  CHECK_FALSE(fixture.services->call("Flaky.Call").error);

  backend.code = 500;
  for (int i = 0; i < 3; ++i) {
    auto response = fixture.services->call("Flaky.Call");
    REQUIRE(response.error);
    CHECK(response.error->id == "flaky");  // the server's own answer, passed through
  }
  CHECK(backend.reached == 4);
  CHECK(fixture.log.count({"wrapper breaker", "endpoint Flaky.Call", "closed -> open",
                           "3 consecutive failures", "opened=1"}) == 1);

  // Open: answered at once, the server never sees the call.
  auto refused = fixture.services->call("Flaky.Call");
  REQUIRE(fixture.refused_by_breaker(refused));
  CHECK(refused.error->detail.find("circuit open for node") != std::string::npos);
  CHECK(refused.error->detail.find(fixture.services->server->address()) != std::string::npos);
  CHECK(refused.error->detail.find("endpoint Flaky.Call") != std::string::npos);
  CHECK(refused.error->detail.find("3 consecutive failures") != std::string::npos);
  CHECK(refused.error->detail.find("probes again in") != std::string::npos);
  CHECK(backend.reached == 4);
  // Another endpoint of the same node has a circuit of its own.
  CHECK_FALSE(fixture.services->call("Flaky.Other").error);
  CHECK(backend.other_reached == 1);

  // Healthy again: once `open` has passed, probes go through; two successes close it.
  backend.code = 0;
  REQUIRE(wait_until([&] { return !fixture.services->call("Flaky.Call").error; }, 10s, 20ms));
  CHECK(fixture.log.count({"endpoint Flaky.Call", "open -> half-open"}) == 1);
  CHECK(fixture.log.count({"half-open -> closed"}) == 0);  // one probe of two so far
  int reached_before = backend.reached;
  CHECK_FALSE(fixture.services->call("Flaky.Call").error);
  CHECK(backend.reached == reached_before + 1);
  CHECK(fixture.log.count({"endpoint Flaky.Call", "half-open -> closed", "2 probe(s) succeeded",
                           "closed=1"}) == 1);
  // Closed: calls flow, two failures are not three.
  backend.code = 503;
  CHECK(fixture.services->call("Flaky.Call").error->id == "flaky");
  CHECK(fixture.services->call("Flaky.Call").error->id == "flaky");
  backend.code = 0;
  CHECK_FALSE(fixture.services->call("Flaky.Call").error);
}

TEST_CASE("breaker: a failed probe opens the circuit again") {
  BreakerFixture fixture({{"consecutive", "2"}, {"open", "100ms"}, {"probes", "1"}});
  auto& backend = fixture.backend;
  backend.code = 503;
  fixture.services->call("Flaky.Call");
  fixture.services->call("Flaky.Call");
  REQUIRE(fixture.refused_by_breaker(fixture.services->call("Flaky.Call")));
  int reached = backend.reached;
  // Still failing: the probe reaches the server, fails, and the circuit opens again.
  REQUIRE(wait_until(
      [&] {
        fixture.services->call("Flaky.Call");
        return backend.reached > reached;
      },
      10s, 20ms));
  CHECK(backend.reached == reached + 1);
  REQUIRE(wait_until(
      [&] {
        return fixture.log.count({"half-open -> open", "a failed probe"}) == 1;
      },
      10s, 5ms));
  CHECK(fixture.log.count({"open -> half-open"}) == 1);
  CHECK(fixture.refused_by_breaker(fixture.services->call("Flaky.Call")));
}

TEST_CASE("breaker: opens on the error ratio once the window holds min_calls") {
  BreakerFixture fixture({{"consecutive", "0"},
                          {"ratio", "0.5"},
                          {"min_calls", "10"},
                          {"window", "10m"},
                          {"open", "1h"}});
  auto& backend = fixture.backend;
  // Alternating success and failure: half fail, but never two in a row.
  for (int i = 0; i < 10; ++i) {
    backend.code = i % 2 == 0 ? 0 : 502;
    auto response = fixture.services->call("Flaky.Call");
    if (i % 2 == 0)
      CHECK_FALSE(response.error);
    else
      CHECK(response.error->id == "flaky");
    if (i < 9) CHECK(fixture.log.count({"closed -> open"}) == 0);
  }
  CHECK(fixture.log.count({"closed -> open", "error ratio 0.50 (5 of 10 calls"}) == 1);
  backend.code = 0;
  auto refused = fixture.services->call("Flaky.Call");
  REQUIRE(fixture.refused_by_breaker(refused));
  CHECK(refused.error->detail.find("error ratio 0.50") != std::string::npos);
  CHECK(backend.reached == 10);
}

TEST_CASE("breaker: 4xx answers are the caller's and never open the circuit; 408 does") {
  BreakerFixture fixture({{"consecutive", "2"}, {"open", "1h"}});
  auto& backend = fixture.backend;
  for (int code : {400, 404, 429, 401, 403}) {
    backend.code = code;
    auto response = fixture.services->call("Flaky.Call");
    REQUIRE(response.error);
    CHECK(response.error->code == code);
  }
  CHECK(backend.reached == 5);
  CHECK(fixture.log.count({"closed -> open"}) == 0);
  backend.code = 408;
  fixture.services->call("Flaky.Call");
  fixture.services->call("Flaky.Call");
  CHECK(fixture.log.count({"closed -> open", "2 consecutive failures"}) == 1);
  CHECK(fixture.refused_by_breaker(fixture.services->call("Flaky.Call")));
  CHECK(backend.reached == 7);
}

TEST_CASE("breaker: refuses options out of range with the loader's message") {
  micro::Runtime runtime{1};
  CHECK_THROWS_WITH_AS(
      resilience_test::load_wrapper("breaker", {{"ratio", "1.5"}}, runtime.executor()),
      doctest::Contains("ratio"), micro::Exception);
  CHECK_THROWS_AS(resilience_test::load_wrapper("breaker", {{"probes", "0"}}, runtime.executor()),
                  micro::Exception);
}

TEST_CASE("breaker: memory is bounded; the least recently used circuit goes first") {
  BreakerFixture fixture({{"consecutive", "1"}, {"open", "1h"}, {"max_circuits", "1"}});
  auto& backend = fixture.backend;
  backend.code = 500;
  fixture.services->call("Flaky.Call");
  REQUIRE(fixture.refused_by_breaker(fixture.services->call("Flaky.Call")));
  // A second circuit pushes the first (open) one out: its state is forgotten.
  CHECK_FALSE(fixture.services->call("Flaky.Other").error);
  backend.code = 0;
  CHECK_FALSE(fixture.services->call("Flaky.Call").error);
  CHECK(backend.reached == 2);
}
