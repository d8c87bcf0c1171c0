// test/plugins/conformance/transport_conformance_test.cpp — what the transport contract
// (<micro/transport.hpp>, docs/design.md "The transport contract") promises of every transport,
// asked of the one named on the command line and loaded through the PluginLoader:
//
//   transport_conformance_test --transport=tcp [doctest options]
//
// (or MICRO_TEST_TRANSPORT=tcp). Round trips of every field, many calls in flight answered out
// of order, completion exactly once on the transport's executor, deadlines, cancellation both
// ways, lost, refused and closed connections, size limits and options. What differs between
// transports (option names, error wording) comes from the table in transport_test_support.hpp; what
// only one transport promises stays in its own suite.
#define DOCTEST_CONFIG_IMPLEMENT
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <iostream>
#include <random>
#include <set>

#include <boost/asio/steady_timer.hpp>

#include <micro/connection_table.hpp>

#include "transport_test_support.hpp"

using namespace transport_test;

namespace {

const TransportProfile* profile_under_test = nullptr;

const TransportProfile& profile() {
  return *profile_under_test;
}

std::shared_ptr<micro::Transport> make(Runtime& runtime, const Options& options = {}) {
  return make_transport(profile().name, runtime, options);
}

// Checks an error's detail: word for word where the table knows this transport's wording,
// otherwise that it names `address` when `names_address` (the contract's "naming the address").
void check_detail(const char* case_name, const micro::Error& error, const std::string& address,
                  bool names_address = true) {
  CAPTURE(case_name);
  CAPTURE(error.detail);
  auto known = profile().details.find(case_name);
  if (known == profile().details.end()) {
    if (names_address) CHECK(error.detail.find(address) != std::string::npos);
    return;
  }
  std::string expected = fill_in(known->second, address);
  const std::string ellipsis = "…";
  if (expected.size() >= ellipsis.size() &&
      expected.compare(expected.size() - ellipsis.size(), ellipsis.size(), ellipsis) == 0) {
    expected.resize(expected.size() - ellipsis.size());
    CAPTURE(expected);
    CHECK(error.detail.rfind(expected, 0) == 0);
  } else {
    CHECK(error.detail == expected);
  }
}

// Reads from a pipe with a bound, for talking to a forked process; -1 on timeout or EOF.
int read_byte(int fd) {
  pollfd poll_fd{fd, POLLIN, 0};
  if (::poll(&poll_fd, 1, 10000) != 1) return -1;
  char byte;
  return ::read(fd, &byte, 1) == 1 ? static_cast<unsigned char>(byte) : -1;
}

std::string read_line(int fd) {
  std::string line;
  for (int byte = read_byte(fd); byte >= 0 && byte != '\n'; byte = read_byte(fd))
    line.push_back(static_cast<char>(byte));
  return line;
}

// A server handler that answers "Echo.Call" at once and holds every other call unanswered,
// counting the held calls whose context is cancelled.
struct Holder {
  std::mutex mutex;
  std::vector<micro::ServerCallPtr> held;
  std::atomic<int> cancelled{0};

  micro::CallHandler handler() {
    return [this](micro::ServerCallPtr call) {
      if (call->request().endpoint == "Echo.Call") {
        call->respond(micro::Response{});
        return;
      }
      call->context().cancellation()->on_cancel([this] { ++cancelled; });
      std::lock_guard lock(mutex);
      held.push_back(std::move(call));
    };
  }
  std::size_t count() {
    std::lock_guard lock(mutex);
    return held.size();
  }
  bool wait_for(std::size_t count_wanted) {
    return test_support::wait_until([&] { return count() >= count_wanted; });
  }
  // Answers the held call with this body.
  void answer(const std::string& request_body, std::string answer_body) {
    std::lock_guard lock(mutex);
    for (auto& call : held) {
      if (call->request().body != request_body) continue;
      micro::Response response;
      response.body = std::move(answer_body);
      call->respond(std::move(response));
      return;
    }
    FAIL("no held call with body " << request_body);
  }
  // Answers every held call; after a close the answers go nowhere and break nothing.
  void answer_all() {
    std::lock_guard lock(mutex);
    for (auto& call : held) call->respond(micro::Response{});
  }
};

}  // namespace

TEST_CASE("a request and its response round trip every field") {
  Runtime runtime;
  auto transport = make(runtime);
  micro::Request seen;
  bool handled_on_runtime = false;
  std::mutex seen_mutex;
  const std::vector<std::pair<std::string, std::string>> sent_metadata = {
      {"X-Trace-Id", "abc123"},
      {"lowercase-key", "v"},
      {"MiXeD-CaSe", "Value With Spaces"},
      {"Empty", ""}};
  auto listener = transport->listen(
      "127.0.0.1:0", unary([&](micro::Request& request, micro::ResponseHandler respond) {
        {
          std::lock_guard lock(seen_mutex);
          seen.service = request.service;
          seen.endpoint = request.endpoint;
          seen.content_type = request.content_type;
          seen.body = request.body;
          seen.context = request.context;
          handled_on_runtime = runtime.running_in_this_thread();  // an I/O thread
        }
        micro::Response response;
        response.content_type = "application/json";
        response.body = std::string("{\"ok\":true}\0tail", 16);
        // The sent entries go back, looked up case-insensitively, each under its own spelling.
        for (const auto& [key, value] : sent_metadata)
          response.metadata.set(key, request.context.metadata().get(key));
        response.metadata.set("Reply-Only", "from the server");
        respond(std::move(response));
      }));
  REQUIRE(listener->address().rfind("127.0.0.1:", 0) == 0);
  REQUIRE(listener->address() != "127.0.0.1:0");

  micro::Request request = make_request(std::string("binary\0body\xff", 12), "Greeter.Hello");
  request.service = "greeter";
  request.content_type = "application/msgpack";
  for (const auto& [key, value] : sent_metadata) request.context.metadata().set(key, value);

  micro::Response response = call_and_wait(*transport, listener->address(), request);
  REQUIRE_FALSE(response.error);
  CHECK(response.content_type == "application/json");
  CHECK(response.body == std::string("{\"ok\":true}\0tail", 16));

  {
    std::lock_guard lock(seen_mutex);
    CHECK(seen.service == "greeter");
    CHECK(seen.endpoint == "Greeter.Hello");
    CHECK(seen.content_type == "application/msgpack");
    CHECK(seen.body == std::string("binary\0body\xff", 12));
    CHECK_FALSE(seen.context.has_deadline());
    CHECK(handled_on_runtime);
    // The handler sees each key spelled as the client spelled it.
    std::map<std::string, std::string> arrived(seen.context.metadata().begin(),
                                               seen.context.metadata().end());
    for (const auto& [key, value] : sent_metadata) {
      CAPTURE(key);
      REQUIRE(arrived.count(key) == 1);
      CHECK(arrived.at(key) == value);
    }
  }

  // Keys come back with the exact case they were sent with.
  std::map<std::string, std::string> returned(response.metadata.begin(), response.metadata.end());
  CHECK(returned.at("X-Trace-Id") == "abc123");
  CHECK(returned.at("lowercase-key") == "v");
  CHECK(returned.at("MiXeD-CaSe") == "Value With Spaces");
  CHECK(returned.at("Empty") == "");
  CHECK(returned.at("Reply-Only") == "from the server");
  CHECK(returned.count("x-trace-id") == 0);
  CHECK(response.metadata.get("x-trace-id") == "abc123");  // and match case-insensitively
}

TEST_CASE("1000 concurrent calls answered out of order each get their own response") {
  Runtime runtime(4);
  auto transport = make(runtime);
  auto executor = runtime.executor();
  std::atomic<int> handled{0};
  auto listener = transport->listen(
      "127.0.0.1:0", unary([&, executor](micro::Request& request, micro::ResponseHandler respond) {
        ++handled;
        // A random delay per request makes the answers leave in a different order.
        thread_local std::mt19937 random(std::random_device{}());
        auto delay =
            std::chrono::microseconds(std::uniform_int_distribution<int>(0, 20000)(random));
        auto timer = std::make_shared<asio::steady_timer>(executor, delay);
        std::string token = request.context.metadata().get("Token");
        std::string body = request.body;
        timer->async_wait([timer, respond, token, body](const boost::system::error_code&) {
          micro::Response response;
          response.body = "echo:" + body;
          response.metadata.set("Token", token);
          respond(std::move(response));
        });
      }));

  constexpr std::size_t call_count = 1000;
  Collector collector(call_count);
  std::vector<micro::Request> requests;
  requests.reserve(call_count);
  for (std::size_t i = 0; i < call_count; ++i) {
    requests.push_back(make_request("token-" + std::to_string(i)));
    requests.back().context.metadata().set("Token", std::to_string(i));
    requests.back().context.set_timeout(20s);
  }
  // Issued from two threads at once, as a busy client would.
  std::thread other([&] {
    for (std::size_t i = 1; i < call_count; i += 2)
      transport->async_call(listener->address(), share(requests[i]), collector.handler(i));
  });
  for (std::size_t i = 0; i < call_count; i += 2)
    transport->async_call(listener->address(), share(requests[i]), collector.handler(i));
  other.join();

  REQUIRE(collector.wait_all());
  CHECK(handled.load() == static_cast<int>(call_count));
  std::size_t correct = 0;
  for (std::size_t i = 0; i < call_count; ++i) {
    const auto& response = collector.responses()[i];
    REQUIRE(response);
    if (response->error) FAIL_CHECK("call " << i << " failed: " << response->error->message());
    if (response->body == "echo:token-" + std::to_string(i) &&
        response->metadata.get("Token") == std::to_string(i))
      ++correct;
  }
  CHECK(correct == call_count);
  auto order = collector.order();
  CHECK_FALSE(std::is_sorted(order.begin(), order.end()));  // they really came back mixed
  // Each completed exactly once.
  CHECK(order.size() == call_count);
  CHECK(std::set<std::size_t>(order.begin(), order.end()).size() == call_count);
}

TEST_CASE("every call completes once, on the transport's executor, never inside async_call") {
  Runtime runtime;
  auto transport =
      make(runtime, {{profile().size_limit_option, std::to_string(profile().small_size_limit)}});
  auto listener = transport->listen("127.0.0.1:0", echo_handler());
  std::string refused_address = unused_address();

  struct Case {
    std::string name;
    std::string address;
    micro::Request request;
    int code;  // 0: answered
  };
  std::vector<Case> cases;
  cases.push_back({"answered", listener->address(), make_request("hi"), 0});
  cases.push_back({"already cancelled", listener->address(), make_request("hi"), 499});
  cases.back().request.context.cancel();
  cases.push_back({"deadline already passed", listener->address(), make_request("hi"), 408});
  cases.back().request.context.set_deadline(std::chrono::steady_clock::now() - 1ms);
  cases.push_back({"over the size limit", listener->address(),
                   make_request(std::string(2 * profile().small_size_limit, 'x')), 413});
  cases.push_back({"not host:port", "no-port-here", make_request("hi"), 400});
  cases.push_back({"refused", refused_address, make_request("hi"), 503});

  for (auto& item : cases) {
    CAPTURE(item.name);
    std::atomic<int> completions{0};
    std::mutex thread_mutex;
    std::thread::id completed_on;
    bool on_runtime = false;
    auto request = share(item.request);
    std::weak_ptr<const micro::Request> watched = request;
    std::promise<micro::Response> answer;
    // This thread is not one of the runtime's: a completion run on it ran inside async_call.
    transport->async_call(item.address, std::move(request), [&](micro::Response&& response) {
      {
        std::lock_guard lock(thread_mutex);
        completed_on = std::this_thread::get_id();
        on_runtime = runtime.running_in_this_thread();
      }
      if (++completions == 1) answer.set_value(std::move(response));
    });
    auto future = answer.get_future();
    REQUIRE(future.wait_for(10s) == std::future_status::ready);
    auto response = future.get();
    {
      std::lock_guard lock(thread_mutex);
      CHECK(completed_on != std::this_thread::get_id());
      CHECK(on_runtime);
    }
    if (item.code == 0) {
      CHECK_FALSE(response.error);
      CHECK(response.body == "echo:hi");
    } else {
      REQUIRE(response.error);
      CHECK(response.error->code == item.code);
    }
    // The transport lets go of the request once it has completed.
    CHECK(test_support::wait_until([&] { return watched.expired(); }));
    CHECK(completions.load() == 1);
  }
}

TEST_CASE("error responses round trip unchanged") {
  Runtime runtime;
  auto transport = make(runtime);
  auto listener = transport->listen(
      "127.0.0.1:0", unary([](micro::Request& request, micro::ResponseHandler respond) {
        if (request.endpoint == "Greeter.Missing") {
          respond(micro::Response::failure(micro::Error("greeter", 404, "no greeting \"x\" here")));
        } else if (request.endpoint == "Greeter.Custom") {
          micro::Error error("greeter", 422, "custom code");
          error.status = "Unprocessable";
          respond(micro::Response::failure(error));
        } else if (request.endpoint == "Greeter.ThrowsMicro") {
          throw micro::Exception(micro::Error("greeter", 409, "already greeted"));
        } else {
          throw std::runtime_error("handler blew up");
        }
      }));

  micro::Request missing = make_request("", "Greeter.Missing");
  auto response = call_and_wait(*transport, listener->address(), missing);
  REQUIRE(response.error);
  CHECK(*response.error == micro::Error("greeter", 404, "no greeting \"x\" here"));
  CHECK(response.error->status == "Not Found");

  micro::Request custom = make_request("", "Greeter.Custom");
  response = call_and_wait(*transport, listener->address(), custom);
  REQUIRE(response.error);
  CHECK(response.error->id == "greeter");
  CHECK(response.error->code == 422);
  CHECK(response.error->detail == "custom code");
  CHECK(response.error->status == "Unprocessable");

  // A handler that throws is answered, not lost: its micro::Error as it is, anything else 500.
  micro::Request throws = make_request("", "Greeter.ThrowsMicro");
  response = call_and_wait(*transport, listener->address(), throws);
  REQUIRE(response.error);
  CHECK(*response.error == micro::Error("greeter", 409, "already greeted"));

  micro::Request blows = make_request("", "Greeter.Other");
  response = call_and_wait(*transport, listener->address(), blows);
  REQUIRE(response.error);
  CHECK(response.error->code == 500);
  CHECK(response.error->detail == "handler blew up");
}

TEST_CASE("a call past its deadline completes with 408 and the late response is ignored") {
  Runtime runtime;
  auto transport = make(runtime, profile().one_connection);
  auto executor = runtime.executor();
  std::mutex seen_mutex;
  std::optional<micro::Context::Clock::duration> seen_remaining;
  std::promise<void> late_answer_sent;
  auto listener = transport->listen(
      "127.0.0.1:0", unary([&, executor](micro::Request& request, micro::ResponseHandler respond) {
        if (request.endpoint != "Slow.Call") {
          respond(micro::Response{});
          return;
        }
        {
          std::lock_guard lock(seen_mutex);
          seen_remaining = request.context.has_deadline()
                               ? std::optional(request.context.remaining())
                               : std::nullopt;
        }
        auto timer = std::make_shared<asio::steady_timer>(executor, 400ms);
        timer->async_wait([timer, respond, &late_answer_sent](const boost::system::error_code&) {
          micro::Response response;
          response.body = "too late";
          respond(std::move(response));
          late_answer_sent.set_value();
        });
      }));

  micro::Request request = make_request("", "Slow.Call");
  request.context.set_timeout(100ms);
  auto started = std::chrono::steady_clock::now();
  auto response = call_and_wait(*transport, listener->address(), request);
  auto took = std::chrono::steady_clock::now() - started;
  REQUIRE(response.error);
  CHECK(response.error->code == 408);
  check_detail("deadline passed", *response.error, listener->address());
  CHECK(took >= 95ms);
  CHECK(took < 350ms);
  {
    // The server got the remaining budget, re-based on its clock.
    std::lock_guard lock(seen_mutex);
    REQUIRE(seen_remaining);
    CHECK(*seen_remaining > 0ms);
    CHECK(*seen_remaining <= 100ms);
  }

  // The late answer is dropped; the client goes on.
  REQUIRE(late_answer_sent.get_future().wait_for(5s) == std::future_status::ready);
  micro::Request next = make_request("", "Fast.Call");
  response = call_and_wait(*transport, listener->address(), next);
  CHECK_FALSE(response.error);
  CHECK(response.body.empty());  // its own answer, not the late one

  // A deadline already past is refused before anything is sent.
  micro::Request expired = make_request("", "Fast.Call");
  expired.context.set_deadline(std::chrono::steady_clock::now() - 1ms);
  response = call_and_wait(*transport, listener->address(), expired);
  REQUIRE(response.error);
  CHECK(response.error->code == 408);
  check_detail("deadline passed before sending", *response.error, listener->address());
}

TEST_CASE("deadlines fire in deadline order, however the calls were sent") {
  // A call sent later with an earlier deadline must not wait behind the earlier calls'
  // deadlines, and answered calls must not time out (tcp: all on one connection, one timer).
  Runtime runtime;
  auto transport = make(runtime, profile().one_connection);
  std::mutex held_mutex;
  std::vector<micro::ResponseHandler> held;  // never answered until the end
  auto listener = transport->listen(
      "127.0.0.1:0", unary([&](micro::Request& request, micro::ResponseHandler respond) {
        if (request.endpoint == "Fast.Call") {
          respond(micro::Response{});
          return;
        }
        std::lock_guard lock(held_mutex);
        held.push_back(std::move(respond));
      }));

  // Deadlines 300, 600, ... ms from now, the earliest sent after later ones, with answered
  // calls (shorter deadlines of their own) in between.
  constexpr std::size_t slow_count = 5;
  constexpr auto spacing = 300ms;
  const std::size_t send_order[slow_count] = {3, 1, 4, 0, 2};
  Collector collector(slow_count);
  std::mutex times_mutex;
  std::vector<std::chrono::steady_clock::time_point> completed_at(slow_count);
  std::vector<micro::Request> requests(slow_count);
  auto start = std::chrono::steady_clock::now();
  for (std::size_t i : send_order) {
    requests[i] = make_request("", "Slow.Call");
    requests[i].context.set_deadline(start + spacing * (i + 1));
    auto collect = collector.handler(i);
    transport->async_call(listener->address(), share(requests[i]),
                          [&, i, collect](micro::Response&& response) {
                            {
                              std::lock_guard lock(times_mutex);
                              completed_at[i] = std::chrono::steady_clock::now();
                            }
                            collect(std::move(response));
                          });
    micro::Request fast = make_request("", "Fast.Call");
    fast.context.set_timeout(100ms);
    CHECK_FALSE(call_and_wait(*transport, listener->address(), fast).error);
  }

  REQUIRE(collector.wait_all());
  auto order = collector.order();
  CHECK(std::is_sorted(order.begin(), order.end()));  // completed by deadline, not send order
  std::lock_guard times_lock(times_mutex);
  for (std::size_t i = 0; i < slow_count; ++i) {
    const auto& response = collector.responses()[i];
    REQUIRE(response);
    REQUIRE(response->error);
    CHECK(response->error->code == 408);
    // Never before its deadline, and not held back until a later call's deadline.
    CHECK(completed_at[i] >= start + spacing * (i + 1));
    CHECK(completed_at[i] < start + spacing * (i + 1) + 250ms);
  }

  // The fast calls' deadlines (100 ms each) have long passed: they must not have fired late.
  micro::Request after = make_request("", "Fast.Call");
  CHECK_FALSE(call_and_wait(*transport, listener->address(), after).error);
  std::lock_guard lock(held_mutex);
  for (auto& respond : held) respond(micro::Response{});  // late answers are dropped
}

TEST_CASE("a cancelled call completes with 499 at once and the server's handler is cancelled") {
  CancelWatch watch;  // before the runtime, whose handlers may still reach it while it drains
  Runtime runtime;
  auto transport = make(runtime);
  auto listener = transport->listen("127.0.0.1:0", watch.handler());
  auto client = make(runtime, profile().one_connection);

  micro::Request request = make_request("hold 1");
  request.context.set_timeout(30s);
  auto cancellation = request.context.cancellation();
  Collector collector(1);
  client->async_call(listener->address(), share(request), collector.handler(0));
  REQUIRE(watch.wait(watch.started, 1));
  auto cancelled_at = std::chrono::steady_clock::now();
  cancellation->cancel();
  REQUIRE(collector.wait_all(5s));
  CHECK(std::chrono::steady_clock::now() - cancelled_at < 1s);
  auto& response = *collector.responses()[0];
  REQUIRE(response.error);
  CHECK(response.error->code == 499);
  CHECK(response.error->id == "micro.client");
  CHECK(response.error->detail == "call cancelled");
  // The server heard of it, and the client carries on.
  CHECK(watch.wait(watch.cancelled, 1));
  CHECK(watch.get(watch.cancelled) == std::vector<std::string>{"hold 1"});
  auto after = call_and_wait(*client, listener->address(), make_request("after"));
  CHECK_FALSE(after.error);
  CHECK(after.body == "echo:after");

  // Already cancelled when handed to the transport: nothing is sent.
  micro::Request late = make_request("hold 2");
  late.context.cancel();
  auto refused = call_and_wait(*client, listener->address(), late);
  REQUIRE(refused.error);
  CHECK(refused.error->code == 499);
  CHECK(watch.get(watch.started).size() == 1);
}

TEST_CASE("a client that goes away cancels the calls it had in flight") {
  SUBCASE("its process is killed") {
    // Fork first, while this process has no threads of its own; the child waits for the
    // server's address, calls twice and waits to be killed.
    int to_child[2];
    REQUIRE(::pipe(to_child) == 0);
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      ::close(to_child[1]);
      std::string address = read_line(to_child[0]);
      asio::io_context io;
      auto transport = micro::PluginLoader::instance().create<micro::Transport>(
          profile().name, "", {}, io.get_executor());
      std::vector<micro::Request> requests = {make_request("hold a"), make_request("hold b")};
      for (auto& request : requests)
        transport->async_call(address, share(request), [](micro::Response&&) {});
      io.run_for(60s);  // bounded, in case the parent dies before killing us
      ::_exit(0);
    }
    ::close(to_child[0]);

    CancelWatch watch;
    {
      Runtime runtime;
      auto transport = make(runtime);
      auto listener = transport->listen("127.0.0.1:0", watch.handler());
      std::string line = listener->address() + "\n";
      REQUIRE(::write(to_child[1], line.data(), line.size()) == static_cast<ssize_t>(line.size()));
      bool both_started = watch.wait(watch.started, 2);
      CHECK(watch.get(watch.cancelled).empty());
      ::kill(child, SIGKILL);
      int status = 0;
      ::waitpid(child, &status, 0);
      REQUIRE(both_started);
      REQUIRE(watch.wait(watch.cancelled, 2));
    }
    ::close(to_child[1]);
    auto cancelled = watch.get(watch.cancelled);
    std::sort(cancelled.begin(), cancelled.end());
    CHECK(cancelled == std::vector<std::string>{"hold a", "hold b"});
  }
  SUBCASE("its transport is closed") {
    CancelWatch watch;
    Runtime runtime;
    auto transport = make(runtime);
    auto listener = transport->listen("127.0.0.1:0", watch.handler());
    auto client = make(runtime);
    Collector collector(2);
    std::vector<micro::Request> requests = {make_request("hold a"), make_request("hold b")};
    for (std::size_t i = 0; i < requests.size(); ++i)
      client->async_call(listener->address(), share(requests[i]), collector.handler(i));
    REQUIRE(watch.wait(watch.started, 2));
    client->close();
    REQUIRE(watch.wait(watch.cancelled, 2));
    auto cancelled = watch.get(watch.cancelled);
    std::sort(cancelled.begin(), cancelled.end());
    CHECK(cancelled == std::vector<std::string>{"hold a", "hold b"});
    REQUIRE(collector.wait_all(5s));
    for (auto& response : collector.responses()) {
      REQUIRE(response->error);
      CHECK(response->error->code == 503);
    }
  }
}

TEST_CASE("connection refused completes with 503 naming the address") {
  Runtime runtime;
  auto transport = make(runtime);
  std::string address = unused_address();
  micro::Request request = make_request("");
  auto response = call_and_wait(*transport, address, request);
  REQUIRE(response.error);
  CHECK(response.error->code == 503);
  CHECK(response.error->id == "micro.client");
  check_detail("connection refused", *response.error, address);

  micro::Request bad = make_request("");
  response = call_and_wait(*transport, "no-port-here", bad);
  REQUIRE(response.error);
  CHECK(response.error->code == 400);
  check_detail("address without a port", *response.error, "no-port-here");

  try {
    transport->listen("nowhere", echo_handler());
    FAIL("listening on \"nowhere\" was accepted");
  } catch (const micro::Exception& e) {
    std::string message = e.what();
    CAPTURE(message);
    CHECK(e.error().code == 400);
    auto known = profile().details.find("listen without a port");
    if (known != profile().details.end())
      CHECK(std::string(e.what()) == fill_in(known->second, "nowhere"));
    else
      CHECK(e.error().detail.find("nowhere") != std::string::npos);
  }
}

TEST_CASE("a connect that takes longer than its timeout fails with 503") {
  if (profile().connect_timeout_option.empty()) {
    MESSAGE(profile().name << " has no connect timeout option");
    return;
  }
  // A listener that never accepts, with its backlog already full: the kernel drops further
  // SYNs, so a connect hangs until our timeout.
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io);
  asio::ip::tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), 0);
  acceptor.open(endpoint.protocol());
  acceptor.bind(endpoint);
  acceptor.listen(0);
  std::string address = "127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());
  asio::ip::tcp::socket filler(io);
  filler.connect(acceptor.local_endpoint());

  Runtime runtime;
  auto transport = make(runtime, {{profile().connect_timeout_option, "200ms"}});
  micro::Request request = make_request("");
  auto started = std::chrono::steady_clock::now();
  auto response = call_and_wait(*transport, address, request);
  auto took = std::chrono::steady_clock::now() - started;
  REQUIRE(response.error);
  CHECK(response.error->code == 503);
  check_detail("connect timed out", *response.error, address);
  CHECK(took >= 190ms);
  CHECK(took < 2s);
}

TEST_CASE("a server killed mid-call fails its pending calls with 503") {
  // Fork first, while this process has no threads of its own.
  int pipe_ends[2];
  REQUIRE(::pipe(pipe_ends) == 0);
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(pipe_ends[0]);
    int out = pipe_ends[1];
    asio::io_context io;
    auto transport = micro::PluginLoader::instance().create<micro::Transport>(
        profile().name, "", {}, io.get_executor());
    std::vector<micro::ResponseHandler> never_answered;
    auto listener = transport->listen("127.0.0.1:0",
                                      unary([&](micro::Request&, micro::ResponseHandler respond) {
                                        never_answered.push_back(std::move(respond));
                                        [[maybe_unused]] auto written = ::write(out, "R", 1);
                                      }));
    std::string line = listener->address() + "\n";
    [[maybe_unused]] auto written = ::write(out, line.data(), line.size());
    // Bounded, in case the parent dies before killing us.
    io.run_for(60s);
    ::_exit(0);
  }
  ::close(pipe_ends[1]);
  std::string address = read_line(pipe_ends[0]);
  REQUIRE(address.rfind("127.0.0.1:", 0) == 0);

  {
    Runtime runtime;
    auto transport = make(runtime, profile().one_connection);
    Collector collector(3);
    std::vector<micro::Request> requests(3, make_request("hang"));
    for (std::size_t i = 0; i < requests.size(); ++i)
      transport->async_call(address, share(requests[i]), collector.handler(i));
    for (int i = 0; i < 3; ++i) CHECK(read_byte(pipe_ends[0]) == 'R');  // all reached the handler

    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    REQUIRE(collector.wait_all(10s));
    for (auto& response : collector.responses()) {
      REQUIRE(response->error);
      CHECK(response->error->code == 503);
      check_detail("server killed", *response->error, address);
    }
    // The next call finds nobody there.
    micro::Request after = make_request("");
    auto response = call_and_wait(*transport, address, after);
    REQUIRE(response.error);
    CHECK(response.error->code == 503);
    check_detail("connection refused", *response.error, address);
  }
  ::close(pipe_ends[0]);
}

TEST_CASE("closing the transport fails its pending calls with 503; it can call again after") {
  Runtime runtime;
  Holder holder;
  auto server = make(runtime);
  auto listener = server->listen("127.0.0.1:0", holder.handler());

  auto client = make(runtime, profile().one_connection);
  Collector collector(1);
  micro::Request request = make_request("", "Hold.Call");
  client->async_call(listener->address(), share(request), collector.handler(0));
  REQUIRE(holder.wait_for(1));
  client->close();
  REQUIRE(collector.wait_all(5s));
  REQUIRE(collector.responses()[0]->error);
  CHECK(collector.responses()[0]->error->code == 503);
  check_detail("transport closed", *collector.responses()[0]->error, listener->address());
  // Usable again after close: a new connection is made.
  micro::Request again = make_request("");
  CHECK_FALSE(call_and_wait(*client, listener->address(), again).error);
  holder.answer_all();
}

TEST_CASE("closing a listener writes the answers given, then fails the rest with 503") {
  Runtime runtime;
  Holder holder;
  auto server = make(runtime);
  auto listener = server->listen("127.0.0.1:0", holder.handler());

  auto client = make(runtime, profile().one_connection);
  Collector collector(2);
  std::vector<micro::Request> requests = {make_request("answered", "Hold.Call"),
                                          make_request("unanswered", "Hold.Call")};
  for (std::size_t i = 0; i < 2; ++i)
    client->async_call(listener->address(), share(requests[i]), collector.handler(i));
  REQUIRE(holder.wait_for(2));
  // A draining server's last answer, handed over just before the close, still arrives.
  holder.answer("answered", "last words");
  listener->close();
  REQUIRE(collector.wait_all(5s));
  const auto& answered = *collector.responses()[0];
  CHECK_FALSE(answered.error);
  CHECK(answered.body == "last words");
  const auto& dropped = *collector.responses()[1];
  REQUIRE(dropped.error);
  CHECK(dropped.error->code == 503);
  check_detail("listener closed", *dropped.error, listener->address());
  // The call left unanswered is cancelled on the server.
  CHECK(test_support::wait_until([&] { return holder.cancelled.load() == 1; }));
  holder.answer_all();
}

TEST_CASE("a listener that stops accepting serves its open connections and nobody new") {
  Runtime runtime;
  Holder holder;
  auto server = make(runtime);
  auto listener = server->listen("127.0.0.1:0", holder.handler());

  auto client = make(runtime, profile().one_connection);
  micro::Request warm = make_request("");
  REQUIRE_FALSE(call_and_wait(*client, listener->address(), warm).error);
  listener->stop_accepting();
  // The open connection still serves...
  micro::Request still = make_request("");
  CHECK_FALSE(call_and_wait(*client, listener->address(), still).error);
  // ...but nobody new gets in.
  auto newcomer = make(runtime);
  micro::Request refused = make_request("");
  auto response = call_and_wait(*newcomer, listener->address(), refused);
  REQUIRE(response.error);
  CHECK(response.error->code == 503);
  CHECK(response.error->detail.find(listener->address()) != std::string::npos);

  // A call on the open connection is delivered, and closing the listener ends it.
  Collector collector(1);
  micro::Request hold = make_request("", "Hold.Call");
  client->async_call(listener->address(), share(hold), collector.handler(0));
  REQUIRE(holder.wait_for(1));
  listener->close();
  REQUIRE(collector.wait_all(5s));
  REQUIRE(collector.responses()[0]->error);
  CHECK(collector.responses()[0]->error->code == 503);
  CHECK(test_support::wait_until([&] { return holder.cancelled.load() == 1; }));
  holder.answer_all();
}

TEST_CASE("messages over the size limit are refused with 413") {
  Runtime runtime;
  const std::size_t limit = profile().small_size_limit;
  const std::string over = std::to_string(2 * limit);
  auto small = make(runtime, {{profile().size_limit_option, std::to_string(limit)}});
  std::atomic<int> handled{0};
  // Answers with as many bytes as the request's body says.
  auto sized_answer = [&](micro::Request& request, micro::ResponseHandler respond) {
    ++handled;
    micro::Response response;
    response.body = std::string(std::stoul(request.body), 'r');
    respond(std::move(response));
  };
  auto listener = small->listen("127.0.0.1:0", unary(sized_answer));

  SUBCASE("a request over the client's own limit is never handled") {
    micro::Request request = make_request(std::string(2 * limit, 'q'));
    auto response = call_and_wait(*small, listener->address(), request);
    REQUIRE(response.error);
    CHECK(response.error->code == 413);
    CHECK(response.error->status == "Payload Too Large");
    check_detail("request over the client's limit", *response.error, listener->address(), false);
    CHECK(handled.load() == 0);
  }
  SUBCASE("a request over the server's limit is refused by the server") {
    auto client = make(runtime);
    micro::Request request = make_request(std::string(2 * limit, 'q'));
    auto response = call_and_wait(*client, listener->address(), request);
    REQUIRE(response.error);
    CHECK(response.error->code == 413);
    CHECK(response.error->status == "Payload Too Large");
    check_detail("request over the server's limit", *response.error, listener->address(), false);
    CHECK(handled.load() == 0);
    // The server goes on serving whatever fits.
    micro::Request fits = make_request("100");
    auto answer = call_and_wait(*client, listener->address(), fits);
    CHECK_FALSE(answer.error);
    CHECK(answer.body == std::string(100, 'r'));
  }
  SUBCASE("a response over the server's limit becomes a 413 from the server") {
    auto client = make(runtime);
    micro::Request request = make_request(over);
    auto response = call_and_wait(*client, listener->address(), request);
    REQUIRE(response.error);
    CHECK(response.error->code == 413);
    CHECK(response.error->status == "Payload Too Large");
    CHECK(response.error->id == "micro.server");
    check_detail("response over the server's limit", *response.error, listener->address(), false);
    micro::Request fits = make_request("100");
    auto answer = call_and_wait(*client, listener->address(), fits);
    CHECK_FALSE(answer.error);
    CHECK(answer.body == std::string(100, 'r'));
  }
  SUBCASE("a response over the client's limit is refused by the client") {
    auto big = make(runtime);
    auto big_listener = big->listen("127.0.0.1:0", unary(sized_answer));
    micro::Request request = make_request(over);
    auto response = call_and_wait(*small, big_listener->address(), request);
    REQUIRE(response.error);
    CHECK(response.error->code == 413);
    check_detail("response over the client's limit", *response.error, big_listener->address());
    micro::Request fits = make_request("10");
    auto answer = call_and_wait(*small, big_listener->address(), fits);
    CHECK_FALSE(answer.error);
    CHECK(answer.body == std::string(10, 'r'));
  }
}

TEST_CASE("options are checked") {
  Runtime runtime;
  // The loader wraps the factory's error with where the plugin came from; ours is inside.
  auto refusal = [&](const Options& options) -> micro::Error {
    try {
      make(runtime, options);
    } catch (const micro::Exception& e) {
      return e.error();
    }
    FAIL("the options were accepted");
    return {};
  };
  const std::string plugin = "transport plugin '" + profile().name + "'";
  const std::string& limit = profile().size_limit_option;

  auto unknown = refusal({{limit + "x", "1"}});
  CHECK(unknown.code == 400);
  CHECK(unknown.detail.find(plugin + " has no option '" + limit + "x'; expected one of: ") !=
        std::string::npos);
  CHECK(unknown.detail.find("(did you mean '" + limit + "'?)") != std::string::npos);

  auto not_a_number = refusal({{limit, "lots"}});
  CHECK(not_a_number.code == 400);
  CHECK(not_a_number.detail.find(plugin + ": option '" + limit + "' is ") != std::string::npos);
  CHECK(not_a_number.detail.find("got 'lots'") != std::string::npos);

  // The limit's range is the descriptor's, and values outside it are refused.
  auto info =
      micro::PluginLoader::instance().describe(micro::PluginKind::transport, profile().name);
  const micro::PluginOption* limit_option = nullptr;
  for (const auto& option : info.options)
    if (option.name == limit) limit_option = &option;
  REQUIRE(limit_option != nullptr);
  CHECK(std::string(limit_option->type) == "int");
  if (limit_option->min != nullptr && std::stoull(limit_option->min) > 0) {
    auto below = std::to_string(std::stoull(limit_option->min) - 1);
    auto too_small = refusal({{limit, below}});
    CHECK(too_small.code == 400);
    CHECK(too_small.detail.find(plugin + ": option '" + limit + "' is " + below +
                                ", below its minimum ") != std::string::npos);
  }
  if (limit_option->max != nullptr) {
    auto above = std::to_string(std::stoull(limit_option->max) + 1);
    auto too_big = refusal({{limit, above}});
    CHECK(too_big.code == 400);
    CHECK(too_big.detail.find(plugin + ": option '" + limit + "' is " + above +
                              ", above its maximum ") != std::string::npos);
  }

  std::set<std::string> names;
  for (const auto& option : info.options) names.insert(option.name);
  CHECK(names == profile().option_names);
}

// For the suite's other files (stream_conformance_test.cpp).
const TransportProfile& conformance_profile() {
  return profile();
}

// Takes --transport=NAME (or MICRO_TEST_TRANSPORT) and hands the rest to doctest.
int main(int argc, char** argv) {
  std::string name;
  if (const char* from_environment = std::getenv("MICRO_TEST_TRANSPORT")) name = from_environment;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    std::string_view argument = argv[i];
    if (argument.rfind("--transport=", 0) == 0)
      name = std::string(argument.substr(12));
    else
      rest.push_back(argv[i]);
  }
  std::string known;
  for (const auto& profile : transport_profiles())
    known += (known.empty() ? "" : ", ") + profile.name;
  if (name.empty()) {
    std::cerr << "transport_conformance_test: which transport? pass --transport=NAME (or set "
                 "MICRO_TEST_TRANSPORT); known: "
              << known << "\n";
    return 2;
  }
  profile_under_test = find_profile(name);
  if (profile_under_test == nullptr) {
    std::cerr << "transport_conformance_test: no profile for transport '" << name
              << "'; known: " << known
              << " (add one to test/plugins/conformance/transport_test_support.hpp)\n";
    return 2;
  }
  doctest::Context context(static_cast<int>(rest.size()), rest.data());
  return context.run();
}

TEST_CASE("open connections show in the connection table with their calls and bytes") {
  // Every transport reports both sides into micro::connection_table() (the admin endpoint's
  // /connections).
  Runtime runtime;
  auto transport = make(runtime);
  auto listener = transport->listen("127.0.0.1:0", echo_handler());
  const std::string address = listener->address();
  constexpr int calls = 7;
  for (int i = 0; i < calls; ++i) {
    auto response = call_and_wait(*transport, address, make_request("hello"));
    REQUIRE_FALSE(response.error);
  }
  auto rows_to = [&](micro::ConnectionSide side) {
    std::vector<micro::ConnectionRow> found;
    for (auto& row : micro::connection_table().rows())
      if (row.side == side &&
          (side == micro::ConnectionSide::client ? row.peer : row.local) == address)
        found.push_back(row);
    return found;
  };
  // The pool may spread the calls over a few connections: each has a row on either side. A
  // client's figures settle once the response is read to its end.
  std::vector<micro::ConnectionRow> client;
  REQUIRE(test_support::wait_until([&] {
    client = rows_to(micro::ConnectionSide::client);
    std::int64_t in_flight = 0;
    for (const auto& row : client) in_flight += row.in_flight;
    return !client.empty() && in_flight == 0;
  }));
  REQUIRE_FALSE(client.empty());
  std::uint64_t requests = 0, bytes_in = 0, bytes_out = 0;
  std::set<std::string> client_locals;
  for (const auto& row : client) {
    CHECK(row.transport == profile().name);
    CHECK(row.in_flight == 0);
    requests += row.requests;
    bytes_in += row.bytes_in;
    bytes_out += row.bytes_out;
    client_locals.insert(row.local);
  }
  CHECK(requests == calls);
  CHECK(bytes_in > 0);
  CHECK(bytes_out > 0);
  // The server's rows name the clients' local addresses as their peers; their figures settle
  // once the last response is written (and, on HTTP/2, the last SETTINGS or WINDOW_UPDATE).
  REQUIRE(test_support::wait_until([&] {
    bytes_in = bytes_out = 0;
    for (const auto& row : rows_to(micro::ConnectionSide::client)) {
      bytes_in += row.bytes_in;
      bytes_out += row.bytes_out;
    }
    auto server = rows_to(micro::ConnectionSide::server);
    std::set<std::string> peers;
    std::uint64_t served = 0, in = 0, out = 0;
    std::int64_t in_flight = 0;
    for (const auto& row : server) {
      peers.insert(row.peer);
      served += row.requests;
      in += row.bytes_in;
      out += row.bytes_out;
      in_flight += row.in_flight;
    }
    return peers == client_locals && served == calls && in_flight == 0 && in == bytes_out &&
           out == bytes_in;
  }));
  transport->close();
  CHECK(test_support::wait_until([&] {
    return rows_to(micro::ConnectionSide::client).empty() &&
           rows_to(micro::ConnectionSide::server).empty();
  }));
}
