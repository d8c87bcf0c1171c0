// The ratelimit wrapper: server side (handler chain) the burst, 429 with Retry-After, the rate
// held within ±5 % over a second of hammering, the concurrency limit refusing and waiting;
// client side (client chain) waiting for tokens at the rate, failing at once, and never
// waiting past the call's deadline; and through a real tcp server, Retry-After reaching the
// caller.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "resilience_support.hpp"

using namespace std::chrono_literals;
using resilience_test::answer_of;
using resilience_test::request_for;
using test_support::wait_until;
using Clock = std::chrono::steady_clock;

namespace {

micro::Response ok() {
  micro::Response response;
  response.content_type = "application/json";
  response.body = "{}";
  return response;
}

struct Limited {
  micro::Runtime runtime{2};
  std::shared_ptr<micro::Wrapper> wrapper;
  micro::WrapperChains chains;

  explicit Limited(const resilience_test::Options& options) {
    wrapper = resilience_test::load_wrapper("ratelimit", options, runtime.executor());
    chains.add(wrapper->wrappers({"greeter", "1", "tcp", ""}));
  }
};

bool is_rate_refusal(const micro::Response& response) {
  return response.error && response.error->code == 429 &&
         response.error->id == "micro.wrapper.ratelimit";
}

}  // namespace

TEST_CASE("ratelimit server side: the burst passes, then 429 with Retry-After in seconds") {
  Limited limited({{"rate", "0.5"}, {"burst", "2"}});
  int handled = 0;
  auto handler =
      limited.chains.wrap_handler([&](const micro::RequestPtr&, micro::ResponseHandler respond) {
        ++handled;
        respond(ok());
      });
  CHECK_FALSE(answer_of(handler, request_for("greeter", "Greeter.Hello")).error);
  CHECK_FALSE(answer_of(handler, request_for("greeter", "Greeter.Hello")).error);
  auto refused = answer_of(handler, request_for("greeter", "Greeter.Hello"));
  REQUIRE(is_rate_refusal(refused));
  CHECK(refused.error->detail.find("rate limit of 0.5/s for Greeter.Hello exceeded") !=
        std::string::npos);
  // A token every 2 s: the next one is 1-2 s away, rounded up to whole seconds.
  std::string retry_after = refused.metadata.get("Retry-After");
  CHECK((retry_after == "2" || retry_after == "1"));
  CHECK(handled == 2);
  // Endpoints have buckets of their own.
  CHECK_FALSE(answer_of(handler, request_for("greeter", "Greeter.Other")).error);
}

TEST_CASE("ratelimit server side: admits the rate within 5 % over a second of hammering") {
  constexpr double rate = 2000;
  constexpr int burst = 100;
  Limited limited({{"rate", "2000"}, {"burst", "100"}});
  std::atomic<std::int64_t> admitted{0}, refused{0};
  auto handler =
      limited.chains.wrap_handler([&](const micro::RequestPtr&, micro::ResponseHandler respond) {
        ++admitted;
        respond(ok());
      });
  auto request = request_for("greeter", "Greeter.Hello");
  auto started = Clock::now();
  auto stop = started + 1s;
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      while (Clock::now() < stop) {
        handler(request, [&](micro::Response&& response) {
          if (response.error) ++refused;
        });
      }
    });
  }
  for (auto& thread : threads) thread.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
  double expected = rate * elapsed;
  INFO("admitted " << admitted.load() << " refused " << refused.load() << " in " << elapsed
                   << " s; expected " << expected << " + burst " << burst);
  CHECK(refused > 0);
  // Never more than the rate allows (the burst on top), and not fewer than 95 % of it.
  CHECK(static_cast<double>(admitted.load()) <= expected * 1.05 + burst);
  CHECK(static_cast<double>(admitted.load()) >= expected * 0.95);
}

TEST_CASE("ratelimit server side: concurrency limit refuses at once, or waits for a slot") {
  std::mutex mutex;
  std::vector<micro::ResponseHandler> held;
  auto holding = [&](const micro::RequestPtr&, micro::ResponseHandler respond) {
    std::lock_guard lock(mutex);
    held.push_back(std::move(respond));
  };
  auto release_one = [&] {
    micro::ResponseHandler respond;
    {
      std::lock_guard lock(mutex);
      REQUIRE_FALSE(held.empty());
      respond = std::move(held.front());
      held.erase(held.begin());
    }
    respond(ok());
  };
  auto held_count = [&] {
    std::lock_guard lock(mutex);
    return held.size();
  };

  SUBCASE("refuse") {
    Limited limited({{"rate", "0"}, {"concurrency", "2"}});
    auto handler = limited.chains.wrap_handler(holding);
    std::atomic<int> answered{0};
    auto count = [&](micro::Response&& response) {
      CHECK_FALSE(response.error);
      ++answered;
    };
    handler(request_for("greeter", "Greeter.Hello"), count);
    handler(request_for("greeter", "Greeter.Hello"), count);
    auto refused = answer_of(handler, request_for("greeter", "Greeter.Hello"));
    REQUIRE(refused.error);
    CHECK(refused.error->code == 429);
    CHECK(refused.error->detail ==
          "concurrency limit of 2 calls in flight for Greeter.Hello reached");
    CHECK(held_count() == 2);
    release_one();
    CHECK(answered == 1);
    handler(request_for("greeter", "Greeter.Hello"), count);  // a slot is free again
    CHECK(held_count() == 2);
    release_one();
    release_one();
    CHECK(answered == 3);
  }
  SUBCASE("wait") {
    Limited limited({{"rate", "0"}, {"concurrency", "1"}, {"wait", "10s"}});
    auto handler = limited.chains.wrap_handler(holding);
    std::atomic<int> answered{0};
    auto count = [&](micro::Response&& response) {
      CHECK_FALSE(response.error);
      ++answered;
    };
    handler(request_for("greeter", "Greeter.Hello"), count);
    handler(request_for("greeter", "Greeter.Hello"), count);  // queued
    handler(request_for("greeter", "Greeter.Hello"), count);  // queued
    CHECK(held_count() == 1);
    release_one();
    REQUIRE(wait_until([&] { return held_count() == 1 && answered == 1; }));
    release_one();
    REQUIRE(wait_until([&] { return held_count() == 1 && answered == 2; }));
    release_one();
    CHECK(answered == 3);
  }
  SUBCASE("wait runs out") {
    Limited limited({{"rate", "0"}, {"concurrency", "1"}, {"wait", "50ms"}});
    auto handler = limited.chains.wrap_handler(holding);
    handler(request_for("greeter", "Greeter.Hello"), [](micro::Response&&) {});
    auto refused = answer_of(handler, request_for("greeter", "Greeter.Hello"));
    REQUIRE(refused.error);
    CHECK(refused.error->code == 429);
    CHECK(refused.error->detail.find("concurrency limit of 1 calls in flight for Greeter.Hello "
                                     "reached (waited ") != std::string::npos);
    CHECK(held_count() == 1);
    release_one();
  }
}

TEST_CASE("ratelimit client side: waits for tokens at the rate, or fails at once") {
  std::atomic<int> started{0};
  auto inner = [&](const micro::RequestPtr&, const micro::CallOptions&,
                   micro::ResponseHandler done) {
    ++started;
    done(ok());
  };
  SUBCASE("wait: 11 calls at once at 20/s with a burst of 1 take at least half a second") {
    Limited limited({{"side", "client"}, {"rate", "20"}, {"burst", "1"}, {"wait", "10s"}});
    auto client = limited.chains.wrap_client(inner);
    std::atomic<int> succeeded{0};
    auto begin = Clock::now();
    for (int i = 0; i < 11; ++i) {
      auto request = request_for("greeter", "Greeter.Hello");
      request->context.set_timeout(10s);
      client(request, {}, [&](micro::Response&& response) {
        if (!response.error) ++succeeded;
      });
    }
    CHECK(started.load() < 11);  // the first at once; the others wait for their tokens
    REQUIRE(wait_until([&] { return succeeded == 11; }));
    // Ten intervals of 50 ms at least: waiting calls never come out faster than the rate.
    CHECK(Clock::now() - begin >= 475ms);
  }
  SUBCASE("fail: refused with 429 and Retry-After, the call not started") {
    Limited limited({{"side", "client"}, {"rate", "1"}, {"burst", "1"}});
    auto client = limited.chains.wrap_client(inner);
    auto call = [&](micro::RequestPtr request, micro::ResponseHandler done) {
      client(std::move(request), {}, std::move(done));
    };
    CHECK_FALSE(answer_of(call, request_for("greeter", "Greeter.Hello")).error);
    auto refused = answer_of(call, request_for("greeter", "Greeter.Hello"));
    REQUIRE(is_rate_refusal(refused));
    CHECK(refused.error->detail.find("for greeter Greeter.Hello exceeded") != std::string::npos);
    CHECK(refused.metadata.get("Retry-After") == "1");
    CHECK(started == 1);
  }
  SUBCASE("a wait that would pass the call's deadline is refused at once") {
    Limited limited({{"side", "client"}, {"rate", "0.1"}, {"burst", "1"}, {"wait", "1h"}});
    auto client = limited.chains.wrap_client(inner);
    auto call = [&](micro::RequestPtr request, micro::ResponseHandler done) {
      request->context.set_timeout(200ms);
      client(std::move(request), {}, std::move(done));
    };
    CHECK_FALSE(answer_of(call, request_for("greeter", "Greeter.Hello")).error);
    auto begin = Clock::now();
    auto refused = answer_of(call, request_for("greeter", "Greeter.Hello"));
    REQUIRE(is_rate_refusal(refused));
    CHECK(refused.metadata.get("Retry-After") == "10");
    CHECK(Clock::now() - begin < 200ms);  // not held until the deadline
    CHECK(started == 1);
  }
}

TEST_CASE("ratelimit over a real tcp server: 429 and Retry-After reach the client") {
  micro::Runtime runtime{1};
  auto wrapper = resilience_test::load_wrapper("ratelimit", {{"rate", "1"}, {"burst", "1"}},
                                               runtime.executor());
  micro::WrapperChains server_chains;
  server_chains.add(wrapper->wrappers({"flaky", "1", "tcp", ""}));
  std::atomic<int> reached{0};
  resilience_test::Services services(std::move(server_chains), {}, [&](micro::Server& server) {
    server.handle("Flaky.Call", [&](const micro::RequestPtr&, micro::ResponseHandler respond) {
      ++reached;
      respond(ok());
    });
  });
  CHECK_FALSE(services.call("Flaky.Call").error);
  auto refused = services.call("Flaky.Call");
  REQUIRE(refused.error);
  CHECK(refused.error->code == 429);
  CHECK(refused.error->id == "micro.wrapper.ratelimit");
  CHECK(refused.metadata.get("Retry-After") == "1");
  CHECK(reached == 1);
}

TEST_CASE("ratelimit: a configuration that limits nothing is refused") {
  micro::Runtime runtime{1};
  CHECK_THROWS_WITH_AS(
      resilience_test::load_wrapper("ratelimit", {{"rate", "0"}}, runtime.executor()),
      doctest::Contains("nothing to limit"), micro::Exception);
  CHECK_THROWS_WITH_AS(
      resilience_test::load_wrapper("ratelimit", {{"side", "sever"}}, runtime.executor()),
      doctest::Contains("'sever' is not server, client or both"), micro::Exception);
}
