// test/plugins/tcp/tcp_transport_test.cpp — the tcp transport plugin, loaded through the
// PluginLoader: round trips, many calls in flight answered out of order, pooling,
// deadlines, cancellation, lost and refused connections, and frames refused for size or
// shape.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <set>

#include <boost/asio/steady_timer.hpp>

#include "tcp_test_support.hpp"

using namespace tcp_test;

namespace {

micro::Request make_request(std::string body, std::string endpoint = "Echo.Call") {
  micro::Request request;
  request.service = "echo";
  request.endpoint = std::move(endpoint);
  request.content_type = "application/octet-stream";
  request.body = std::move(body);
  return request;
}

// Answers every request with "echo:" + body, at once.
micro::CallHandler echo_handler() {
  return tcp_test::unary([](micro::Request& request, micro::ResponseHandler respond) {
    micro::Response response;
    response.content_type = request.content_type;
    response.body = "echo:" + request.body;
    respond(std::move(response));
  });
}

}  // namespace

TEST_CASE("a request and its response round trip every field") {
  Runtime runtime;
  auto transport = make_tcp(runtime);
  micro::Request seen;
  std::mutex seen_mutex;
  auto listener = transport->listen(
      "127.0.0.1:0", tcp_test::unary([&](micro::Request& request, micro::ResponseHandler respond) {
        {
          std::lock_guard lock(seen_mutex);
          seen.service = request.service;
          seen.endpoint = request.endpoint;
          seen.content_type = request.content_type;
          seen.body = request.body;
          seen.context = request.context;
        }
        micro::Response response;
        response.content_type = "application/json";
        response.body = std::string("{\"ok\":true}\0tail", 16);
        for (const auto& [key, value] : request.context.metadata())
          response.metadata.set(key, value);
        respond(std::move(response));
      }));
  REQUIRE(listener->address().rfind("127.0.0.1:", 0) == 0);
  REQUIRE(listener->address() != "127.0.0.1:0");

  micro::Request request = make_request(std::string("binary\0body\xff", 12), "Greeter.Hello");
  request.service = "greeter";
  request.content_type = "application/msgpack";
  request.context.metadata().set("X-Trace-Id", "abc123");
  request.context.metadata().set("lowercase-key", "v");
  request.context.metadata().set("MiXeD-CaSe", "Value With Spaces");
  request.context.metadata().set("Empty", "");

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
    // The server says who is on each end, as Go-Micro's does.
    CHECK(seen.context.metadata().get("Local") == listener->address());
    CHECK(seen.context.metadata().get("Remote").rfind("127.0.0.1:", 0) == 0);
  }

  // Keys come back with the exact case they were sent with.
  std::map<std::string, std::string> returned(response.metadata.begin(), response.metadata.end());
  CHECK(returned.at("X-Trace-Id") == "abc123");
  CHECK(returned.at("lowercase-key") == "v");
  CHECK(returned.at("MiXeD-CaSe") == "Value With Spaces");
  CHECK(returned.at("Empty") == "");
  CHECK(returned.count("x-trace-id") == 0);
  CHECK(response.metadata.get("x-trace-id") == "abc123");  // and match case-insensitively
}

TEST_CASE("1000 concurrent calls answered out of order each get their own response") {
  Runtime runtime(4);
  auto transport = make_tcp(runtime);
  auto executor = runtime.executor();
  std::atomic<int> handled{0};
  auto listener = transport->listen(
      "127.0.0.1:0",
      tcp_test::unary([&, executor](micro::Request& request, micro::ResponseHandler respond) {
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
      transport->async_call(listener->address(), tcp_test::share(requests[i]),
                            collector.handler(i));
  });
  for (std::size_t i = 0; i < call_count; i += 2)
    transport->async_call(listener->address(), tcp_test::share(requests[i]), collector.handler(i));
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
}

TEST_CASE("pooled connections are reused and calls spread across them") {
  Runtime runtime;
  std::mutex remotes_mutex;
  std::set<std::string> remotes;
  auto server_transport = make_tcp(runtime);
  auto listener = server_transport->listen(
      "127.0.0.1:0", tcp_test::unary([&](micro::Request& request, micro::ResponseHandler respond) {
        {
          std::lock_guard lock(remotes_mutex);
          remotes.insert(request.context.metadata().get("Remote"));
        }
        respond(micro::Response{});
      }));

  auto transport = make_tcp(runtime, {{"pool_size", "3"}});
  for (int i = 0; i < 60; ++i) {
    micro::Request request = make_request("x");
    REQUIRE_FALSE(call_and_wait(*transport, listener->address(), request).error);
  }
  Collector collector(200);
  std::vector<micro::Request> requests(200, make_request("y"));
  for (std::size_t i = 0; i < requests.size(); ++i)
    transport->async_call(listener->address(), tcp_test::share(requests[i]), collector.handler(i));
  REQUIRE(collector.wait_all());
  for (auto& response : collector.responses()) CHECK_FALSE(response->error);
  {
    std::lock_guard lock(remotes_mutex);
    CHECK(remotes.size() == 3);  // 260 calls, three connections
    remotes.clear();
  }

  auto single = make_tcp(runtime, {{"pool_size", "1"}});
  for (int i = 0; i < 20; ++i) {
    micro::Request request = make_request("z");
    REQUIRE_FALSE(call_and_wait(*single, listener->address(), request).error);
  }
  std::lock_guard lock(remotes_mutex);
  CHECK(remotes.size() == 1);
}

TEST_CASE("error responses round trip unchanged") {
  Runtime runtime;
  auto transport = make_tcp(runtime);
  auto listener = transport->listen(
      "127.0.0.1:0", tcp_test::unary([](micro::Request& request, micro::ResponseHandler respond) {
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
  CHECK(response.error->code == 422);
  CHECK(response.error->status == "Unprocessable");

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
  auto transport = make_tcp(runtime, {{"pool_size", "1"}});
  auto executor = runtime.executor();
  std::mutex seen_mutex;
  std::optional<micro::Context::Clock::duration> seen_remaining;
  std::promise<void> late_answer_sent;
  auto listener = transport->listen(
      "127.0.0.1:0",
      tcp_test::unary([&, executor](micro::Request& request, micro::ResponseHandler respond) {
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
  CHECK(response.error->detail ==
        "tcp: deadline passed waiting for the response from " + listener->address());
  CHECK(took >= 95ms);
  CHECK(took < 350ms);
  {
    // The server got the remaining budget, re-based on its clock.
    std::lock_guard lock(seen_mutex);
    REQUIRE(seen_remaining);
    CHECK(*seen_remaining > 0ms);
    CHECK(*seen_remaining <= 100ms);
  }

  // The late answer arrives on the same connection and is dropped; the connection goes on.
  REQUIRE(late_answer_sent.get_future().wait_for(5s) == std::future_status::ready);
  micro::Request next = make_request("", "Fast.Call");
  response = call_and_wait(*transport, listener->address(), next);
  CHECK_FALSE(response.error);

  // A deadline already past is refused before anything is sent.
  micro::Request expired = make_request("", "Fast.Call");
  expired.context.set_deadline(std::chrono::steady_clock::now() - 1ms);
  response = call_and_wait(*transport, listener->address(), expired);
  REQUIRE(response.error);
  CHECK(response.error->code == 408);
  CHECK(response.error->detail ==
        "tcp: deadline passed before the call to " + listener->address() + " was sent");
}

TEST_CASE("deadlines on one connection fire in deadline order, however the calls were sent") {
  // One connection, one deadline timer: a call sent later with an earlier deadline must not
  // wait behind the earlier calls' deadlines, and answered calls must not time out.
  Runtime runtime;
  auto transport = make_tcp(runtime, {{"pool_size", "1"}});
  std::mutex held_mutex;
  std::vector<micro::ResponseHandler> held;  // never answered until the end
  auto listener = transport->listen(
      "127.0.0.1:0", tcp_test::unary([&](micro::Request& request, micro::ResponseHandler respond) {
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
    transport->async_call(listener->address(), tcp_test::share(requests[i]),
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

// Handlers that wait for their context to be cancelled, and what they saw.
struct CancelWatch {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::string> started, cancelled;  // request bodies

  micro::CallHandler handler() {
    return [this](micro::ServerCallPtr call) {
      std::string body = call->request().body;
      if (body.rfind("hold", 0) != 0) {  // answered at once
        micro::Response response;
        response.body = "echo:" + body;
        call->respond(std::move(response));
        return;
      }
      note(started, body);
      call->context().cancellation()->on_cancel([this, body, call] {
        note(cancelled, body);
        call->respond(micro::Response::failure(micro::cancelled_error("echo")));
      });
    };
  }
  void note(std::vector<std::string>& list, const std::string& body) {
    std::lock_guard lock(mutex);
    list.push_back(body);
    changed.notify_all();
  }
  bool wait(std::vector<std::string>& list, std::size_t count) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, 5s, [&] { return list.size() >= count; });
  }
  std::vector<std::string> get(std::vector<std::string>& list) {
    std::lock_guard lock(mutex);
    return list;
  }
};

TEST_CASE("a cancelled call completes with 499 at once and the server's handler is cancelled") {
  CancelWatch watch;  // before the runtime, whose handlers may still reach it while it drains
  Runtime runtime;
  auto transport = make_tcp(runtime);
  auto listener = transport->listen("127.0.0.1:0", watch.handler());
  auto client = make_tcp(runtime, {{"pool_size", "1"}});  // one connection for every call

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
  // The cancel frame reached the server, and the shared connection carries on.
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

TEST_CASE("a cancel frame cancels that call only; no response is written for it") {
  CancelWatch watch;  // before the runtime, whose handlers may still reach it while it drains
  Runtime runtime;
  auto transport = make_tcp(runtime);
  auto listener = transport->listen("127.0.0.1:0", watch.handler());
  RawSocket raw(listener->address());
  raw.send(frame(1, 7, request_payload("echo", "Echo.Call", "", 0, {}, "hold 7")));
  raw.send(frame(1, 8, request_payload("echo", "Echo.Call", "", 0, {}, "hold 8")));
  REQUIRE(watch.wait(watch.started, 2));
  raw.send(header(3, 7, 20));   // cancel request 7
  raw.send(header(3, 99, 20));  // an id not in flight: ignored
  REQUIRE(watch.wait(watch.cancelled, 1));
  CHECK(watch.get(watch.cancelled) == std::vector<std::string>{"hold 7"});
  // The connection still serves: the next frame read is the answer to a new request, not one
  // for the cancelled id.
  raw.send(frame(1, 9, request_payload("echo", "Echo.Call", "", 0, {}, "ping")));
  auto response = raw.read_response();
  REQUIRE(response);
  CHECK(response->request_id == 9);
  CHECK(response->body == "echo:ping");
  CHECK(watch.get(watch.cancelled).size() == 1);  // 8 is still being handled
}

TEST_CASE("a client connection that goes away cancels the calls it had in flight") {
  CancelWatch watch;  // before the runtime, whose handlers may still reach it while it drains
  Runtime runtime;
  auto transport = make_tcp(runtime);
  auto listener = transport->listen("127.0.0.1:0", watch.handler());
  {
    RawSocket raw(listener->address());
    raw.send(frame(1, 1, request_payload("echo", "Echo.Call", "", 0, {}, "hold a")));
    raw.send(frame(1, 2, request_payload("echo", "Echo.Call", "", 0, {}, "hold b")));
    REQUIRE(watch.wait(watch.started, 2));
    CHECK(watch.get(watch.cancelled).empty());
    raw.close();
  }
  REQUIRE(watch.wait(watch.cancelled, 2));
  auto cancelled = watch.get(watch.cancelled);
  std::sort(cancelled.begin(), cancelled.end());
  CHECK(cancelled == std::vector<std::string>{"hold a", "hold b"});
}

TEST_CASE("connection refused completes with 503 naming the address") {
  Runtime runtime;
  auto transport = make_tcp(runtime);
  std::string address = unused_address();
  micro::Request request = make_request("");
  auto response = call_and_wait(*transport, address, request);
  REQUIRE(response.error);
  CHECK(response.error->code == 503);
  CHECK(response.error->id == "micro.client");
  CHECK(response.error->detail == "tcp: cannot connect to " + address + ": Connection refused");

  micro::Request bad = make_request("");
  response = call_and_wait(*transport, "no-port-here", bad);
  REQUIRE(response.error);
  CHECK(response.error->code == 400);
  CHECK(response.error->detail == "tcp: cannot call \"no-port-here\": expected host:port");

  CHECK_THROWS_WITH_AS(transport->listen("nowhere", echo_handler()),
                       "micro.server: 400 Bad Request: tcp: cannot listen on \"nowhere\": "
                       "expected host:port",
                       micro::Exception);
}

TEST_CASE("a connect that takes longer than connect_timeout fails with 503") {
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
  auto transport = make_tcp(runtime, {{"connect_timeout", "200ms"}});
  micro::Request request = make_request("");
  auto started = std::chrono::steady_clock::now();
  auto response = call_and_wait(*transport, address, request);
  auto took = std::chrono::steady_clock::now() - started;
  REQUIRE(response.error);
  CHECK(response.error->code == 503);
  CHECK(response.error->detail == "tcp: connecting to " + address + " timed out after 200ms");
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
    auto transport =
        micro::PluginLoader::instance().create<micro::Transport>("tcp", "", {}, io.get_executor());
    std::vector<micro::ResponseHandler> never_answered;
    auto listener = transport->listen(
        "127.0.0.1:0", tcp_test::unary([&](micro::Request&, micro::ResponseHandler respond) {
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
  auto read_byte = [&]() -> int {
    pollfd poll_fd{pipe_ends[0], POLLIN, 0};
    if (::poll(&poll_fd, 1, 10000) != 1) return -1;
    char byte;
    return ::read(pipe_ends[0], &byte, 1) == 1 ? byte : -1;
  };
  std::string address;
  for (int byte = read_byte(); byte != '\n'; byte = read_byte()) {
    if (byte < 0) break;
    address.push_back(static_cast<char>(byte));
  }
  REQUIRE(address.rfind("127.0.0.1:", 0) == 0);

  {
    Runtime runtime;
    auto transport = make_tcp(runtime, {{"pool_size", "1"}});
    Collector collector(3);
    std::vector<micro::Request> requests(3, make_request("hang"));
    for (std::size_t i = 0; i < requests.size(); ++i)
      transport->async_call(address, tcp_test::share(requests[i]), collector.handler(i));
    for (int i = 0; i < 3; ++i) CHECK(read_byte() == 'R');  // all three reached the handler

    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    REQUIRE(collector.wait_all(10s));
    for (auto& response : collector.responses()) {
      REQUIRE(response->error);
      CHECK(response->error->code == 503);
      CHECK(response->error->detail.rfind(
                "tcp: connection to " + address + " closed with 3 calls pending", 0) == 0);
    }
    // The next call finds nobody there.
    micro::Request after = make_request("");
    auto response = call_and_wait(*transport, address, after);
    REQUIRE(response.error);
    CHECK(response.error->detail == "tcp: cannot connect to " + address + ": Connection refused");
  }
  ::close(pipe_ends[0]);
}

TEST_CASE("closing the transport fails pending calls; closing a listener drops its clients") {
  Runtime runtime;
  auto server = make_tcp(runtime);
  std::mutex held_mutex;
  std::vector<micro::ResponseHandler> held;
  auto listener = server->listen(
      "127.0.0.1:0", tcp_test::unary([&](micro::Request& request, micro::ResponseHandler respond) {
        if (request.endpoint == "Echo.Call") {
          respond(micro::Response{});
          return;
        }
        std::lock_guard lock(held_mutex);
        held.push_back(std::move(respond));
      }));
  auto held_count = [&] {
    std::lock_guard lock(held_mutex);
    return held.size();
  };

  {
    auto client = make_tcp(runtime, {{"pool_size", "1"}});
    Collector collector(1);
    micro::Request request = make_request("", "Hold.Call");
    client->async_call(listener->address(), tcp_test::share(request), collector.handler(0));
    micro::Request probe = make_request("");  // same connection, answered: the hold arrived
    REQUIRE_FALSE(call_and_wait(*client, listener->address(), probe).error);
    client->close();
    REQUIRE(collector.wait_all(5s));
    REQUIRE(collector.responses()[0]->error);
    CHECK(collector.responses()[0]->error->code == 503);
    CHECK(collector.responses()[0]->error->detail ==
          "tcp: connection to " + listener->address() +
              " closed with 1 call pending (transport closed)");
    // Usable again after close: a new connection is made.
    micro::Request again = make_request("");
    CHECK_FALSE(call_and_wait(*client, listener->address(), again).error);
  }

  {
    auto client = make_tcp(runtime, {{"pool_size", "1"}});
    micro::Request warm = make_request("");
    REQUIRE_FALSE(call_and_wait(*client, listener->address(), warm).error);
    listener->stop_accepting();
    // The open connection still serves...
    micro::Request still = make_request("");
    CHECK_FALSE(call_and_wait(*client, listener->address(), still).error);
    // ...but nobody new gets in.
    auto newcomer = make_tcp(runtime);
    micro::Request refused = make_request("");
    auto response = call_and_wait(*newcomer, listener->address(), refused);
    REQUIRE(response.error);
    CHECK(response.error->code == 503);

    std::size_t before = held_count();
    Collector collector(2);
    std::vector<micro::Request> requests(2, make_request("", "Hold.Call"));
    for (std::size_t i = 0; i < 2; ++i)
      client->async_call(listener->address(), tcp_test::share(requests[i]), collector.handler(i));
    micro::Request probe = make_request("");
    REQUIRE_FALSE(call_and_wait(*client, listener->address(), probe).error);
    CHECK(held_count() == before + 2);
    listener->close();
    REQUIRE(collector.wait_all(5s));
    for (auto& result : collector.responses()) {
      REQUIRE(result->error);
      CHECK(result->error->detail ==
            "tcp: connection to " + listener->address() + " closed with 2 calls pending");
    }
    // Answers after close go nowhere and break nothing.
    std::lock_guard lock(held_mutex);
    for (auto& respond : held) respond(micro::Response{});
  }
}

TEST_CASE("an oversize header from a peer is refused without allocating it") {
  Runtime runtime;
  auto transport = make_tcp(runtime);
  auto listener = transport->listen("127.0.0.1:0", echo_handler());
  long resident_before = resident_kib();

  RawSocket raw(listener->address());
  // Claims 1 GiB follows, and sends a first 256 KiB of it: the server must answer without
  // waiting for (or allocating) the rest, and the bytes it never reads must not reset the
  // connection before we read the answer.
  raw.send(header(1, 77, 1u << 30) + std::string(256 * 1024, 'x'));
  auto response = raw.read_response();
  REQUIRE(response);
  CHECK(response->request_id == 77);
  CHECK(response->flags == 1);  // the server closes after this frame
  auto error = micro::Error::from_json(response->error_json);
  CHECK(error.code == 413);
  CHECK(error.detail == "tcp: frame of 1073741824 bytes exceeds max_frame 4194304");
  CHECK(raw.peer_closed());
  CHECK(resident_kib() - resident_before < 64 * 1024);

  // Everyone else is still served.
  micro::Request request = make_request("still here");
  auto answer = call_and_wait(*transport, listener->address(), request);
  REQUIRE_FALSE(answer.error);
  CHECK(answer.body == "echo:still here");
}

TEST_CASE("frames over max_frame are refused on both sides with 413") {
  Runtime runtime;
  auto small = make_tcp(runtime, {{"max_frame", "1024"}});
  std::atomic<int> handled{0};
  auto listener = small->listen(
      "127.0.0.1:0", tcp_test::unary([&](micro::Request& request, micro::ResponseHandler respond) {
        ++handled;
        micro::Response response;
        response.body = std::string(std::stoul(request.body), 'r');
        respond(std::move(response));
      }));

  SUBCASE("a request over the limit is never sent") {
    micro::Request request = make_request(std::string(2000, 'q'));
    auto response = call_and_wait(*small, listener->address(), request);
    REQUIRE(response.error);
    CHECK(response.error->code == 413);
    CHECK(response.error->status == "Payload Too Large");
    CHECK(response.error->detail ==
          "tcp: request of 2081 bytes exceeds max_frame 1024; not sent to " + listener->address());
    CHECK(handled.load() == 0);
  }
  SUBCASE("a response over the server's limit becomes a 413 from the server") {
    auto client = make_tcp(runtime);
    micro::Request request = make_request("5000");
    auto response = call_and_wait(*client, listener->address(), request);
    REQUIRE(response.error);
    CHECK(response.error->code == 413);
    CHECK(response.error->id == "micro.server");
    CHECK(response.error->detail == "tcp: response of 5032 bytes exceeds max_frame 1024");
    micro::Request fits = make_request("100");
    CHECK(call_and_wait(*client, listener->address(), fits).body == std::string(100, 'r'));
  }
  SUBCASE("a response over the client's limit is refused by the client") {
    auto big = make_tcp(runtime, {{"max_frame", "1048576"}});
    auto big_listener = big->listen(
        "127.0.0.1:0", tcp_test::unary([](micro::Request& request, micro::ResponseHandler respond) {
          micro::Response response;
          response.body = std::string(std::stoul(request.body), 'r');
          respond(std::move(response));
        }));
    micro::Request request = make_request("2000");
    auto response = call_and_wait(*small, big_listener->address(), request);
    REQUIRE(response.error);
    CHECK(response.error->code == 413);
    CHECK(response.error->detail == "tcp: response from " + big_listener->address() +
                                        ": frame of 2032 bytes exceeds max_frame 1024");
    micro::Request fits = make_request("10");
    CHECK(call_and_wait(*small, big_listener->address(), fits).body == std::string(10, 'r'));
  }
}

TEST_CASE("malformed request frames get a 400 naming what was wrong and where") {
  Runtime runtime;
  auto transport = make_tcp(runtime);
  auto listener = transport->listen("127.0.0.1:0", echo_handler());
  auto error_of = [](const RawResponse& response) {
    return micro::Error::from_json(response.error_json);
  };

  struct Case {
    const char* name;
    std::string bytes;
    std::string detail;
  };
  // Header problems: the stream cannot be followed, so the answer has id 0 and the server closes.
  std::vector<Case> fatal = {
      {"not this protocol", "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
       "tcp: malformed request frame: bad magic 0x47 0x45 at offset 0 (expected \"MT\", 0x4d "
       "0x54)"},
      {"another version", header(1, 5, 20, 9),
       "tcp: malformed request frame: unsupported version 9 at offset 2 (this side speaks version "
       "1)"},
      {"a response sent to a server", header(2, 5, 20),
       "tcp: malformed request frame: unexpected frame type 2 at offset 3 (expected 1, a request, "
       "or 3, a cancel)"},
      {"reserved bits set", header(1, 5, 20, 1, 0, 7),
       "tcp: malformed request frame: reserved field at offset 6 is 7 (must be 0)"},
      {"length shorter than the header", header(1, 5, 10),
       "tcp: malformed request frame: frame length 10 at offset 16 is smaller than the 20-byte "
       "header"},
  };
  for (const auto& item : fatal) {
    CAPTURE(item.name);
    RawSocket raw(listener->address());
    raw.send(item.bytes);
    auto response = raw.read_response();
    REQUIRE(response);
    CHECK(response->request_id == 0);
    CHECK(response->flags == 1);
    auto error = error_of(*response);
    CHECK(error.code == 400);
    CHECK(error.id == "micro.server");
    CHECK(error.detail == item.detail);
    CHECK(raw.peer_closed());
  }

  // Payload problems: the frame's length is sound, so only that request is refused and the
  // connection goes on serving.
  std::string long_service;
  put(long_service, 1000, 4);
  long_service += "abc";
  std::string truncated_timeout;
  for (int i = 0; i < 3; ++i) put(truncated_timeout, 0, 4);
  put(truncated_timeout, 0, 4);  // 4 of the timeout's 8 bytes
  std::string huge_count = request_payload("s", "e", "c", 0, {}, "");
  huge_count.resize(huge_count.size() - 4);
  put(huge_count, 1000000, 4);
  std::string metadata_past_end = request_payload("s", "e", "c", 0, {}, "");
  metadata_past_end.resize(metadata_past_end.size() - 4);
  put(metadata_past_end, 1, 4);
  put(metadata_past_end, 3, 4);
  metadata_past_end += "key";
  put(metadata_past_end, 50, 4);
  metadata_past_end += "short";
  std::vector<Case> recoverable = {
      {"string past the end", long_service,
       "tcp: malformed request frame: service length 1000 at offset 20 runs past the end of the "
       "frame (3 bytes left of 27)"},
      {"truncated field", truncated_timeout,
       "tcp: malformed request frame: truncated timeout at offset 32: needs 8 bytes, 4 left of 36"},
      {"count that cannot fit", huge_count,
       "tcp: malformed request frame: metadata count 1000000 at offset 43 cannot fit in the 0 "
       "bytes "
       "left of the frame"},
      {"metadata value past the end", metadata_past_end,
       "tcp: malformed request frame: metadata value length 50 at offset 54 runs past the end of "
       "the "
       "frame (5 bytes left of 63)"},
  };
  RawSocket raw(listener->address());
  std::uint64_t id = 100;
  for (const auto& item : recoverable) {
    CAPTURE(item.name);
    raw.send(frame(1, ++id, item.bytes));
    auto response = raw.read_response();
    REQUIRE(response);
    CHECK(response->request_id == id);
    CHECK(response->flags == 0);
    auto error = error_of(*response);
    CHECK(error.code == 400);
    CHECK(error.detail == item.detail);
  }
  // A good frame on the same connection, written by hand from the README, is served.
  raw.send(
      frame(1, 999, request_payload("echo", "Echo.Call", "text/plain", 0, {{"K", "v"}}, "hi")));
  auto response = raw.read_response();
  REQUIRE(response);
  CHECK(response->request_id == 999);
  CHECK(response->error_json.empty());
  CHECK(response->content_type == "text/plain");
  CHECK(response->body == "echo:hi");
}

TEST_CASE("malformed and oversize response frames give the client clear errors") {
  Runtime runtime;
  // A fake server that reads one request header and answers with whatever the case says.
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  std::string address = "127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());
  auto serve_once = [&](std::function<std::string(std::uint64_t request_id)> answer) {
    return std::thread([&acceptor, answer] {
      asio::ip::tcp::socket socket(acceptor.get_executor());
      acceptor.accept(socket);
      std::string head(20, '\0');
      asio::read(socket, asio::buffer(head));
      std::string rest(get(head, 16, 4) - 20, '\0');
      asio::read(socket, asio::buffer(rest));
      asio::write(socket, asio::buffer(answer(get(head, 8, 8))));
      char byte;
      boost::system::error_code ignored;
      socket.read_some(asio::buffer(&byte, 1), ignored);  // until the client closes
    });
  };

  SUBCASE("bad magic") {
    auto transport = make_tcp(runtime, {{"pool_size", "1"}});
    auto server = serve_once([](std::uint64_t) { return std::string(40, 'Z'); });
    micro::Request request = make_request("");
    auto response = call_and_wait(*transport, address, request);
    transport->close();
    server.join();
    REQUIRE(response.error);
    CHECK(response.error->code == 400);
    CHECK(response.error->detail ==
          "tcp: malformed response frame from " + address +
              ": bad magic 0x5a 0x5a at offset 0 (expected \"MT\", 0x4d 0x54)");
  }
  SUBCASE("string past the end") {
    auto transport = make_tcp(runtime, {{"pool_size", "1"}});
    auto server = serve_once([](std::uint64_t id) {
      std::string payload;
      put(payload, 0, 4);
      put(payload, 99, 4);  // content type of 99 bytes, 2 present
      payload += "ab";
      return frame(2, id, payload);
    });
    micro::Request request = make_request("");
    auto response = call_and_wait(*transport, address, request);
    transport->close();
    server.join();
    REQUIRE(response.error);
    CHECK(response.error->code == 400);
    CHECK(response.error->detail ==
          "tcp: malformed response frame from " + address +
              ": content type length 99 at offset 24 runs past the end of "
              "the frame (2 bytes left of 30)");
  }
  SUBCASE("oversize length") {
    auto transport = make_tcp(runtime, {{"pool_size", "1"}});
    auto server = serve_once([](std::uint64_t id) { return header(2, id, 0xffffffffu); });
    micro::Request request = make_request("");
    auto response = call_and_wait(*transport, address, request);
    transport->close();
    server.join();
    REQUIRE(response.error);
    CHECK(response.error->code == 413);
    CHECK(response.error->detail == "tcp: response from " + address +
                                        ": frame of 4294967295 bytes exceeds max_frame 4194304");
  }
  SUBCASE("a well-formed answer from the fake server is understood") {
    auto transport = make_tcp(runtime, {{"pool_size", "1"}});
    auto server = serve_once([](std::uint64_t id) {
      return frame(2, id, response_payload("", "text/plain", "hand made"));
    });
    micro::Request request = make_request("");
    auto response = call_and_wait(*transport, address, request);
    transport->close();
    server.join();
    REQUIRE_FALSE(response.error);
    CHECK(response.content_type == "text/plain");
    CHECK(response.body == "hand made");
  }
}

TEST_CASE("the client writes exactly the bytes the README example shows") {
  Runtime runtime;
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  std::string address = "127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());
  std::string received;
  std::thread server([&] {
    asio::ip::tcp::socket socket(io);
    acceptor.accept(socket);
    std::string head(20, '\0');
    asio::read(socket, asio::buffer(head));
    std::string rest(get(head, 16, 4) - 20, '\0');
    asio::read(socket, asio::buffer(rest));
    received = head + rest;
    asio::write(socket, asio::buffer(frame(2, get(head, 8, 8), response_payload("", "", ""))));
    char byte;
    boost::system::error_code ignored;
    socket.read_some(asio::buffer(&byte, 1), ignored);
  });
  auto transport = make_tcp(runtime, {{"pool_size", "1"}});
  micro::Request request;
  request.service = "greeter";
  request.endpoint = "Greeter.Hello";
  request.content_type = "application/json";
  request.body = "{}";
  request.context.metadata().set("Trace", "1");
  request.context.set_timeout(250ms);
  auto response = call_and_wait(*transport, address, request);
  transport->close();
  server.join();
  CHECK_FALSE(response.error);

  REQUIRE(received.size() == 96);
  // The README's bytes, except the request id (the client's choice) and the timeout
  // (whatever was left of the 250 ms when the frame was encoded).
  std::string expected =
      header(1, 0, 96) +
      request_payload("greeter", "Greeter.Hello", "application/json", 0, {{"Trace", "1"}}, "{}");
  std::string masked = received;
  masked.replace(8, 8, std::string(8, '\0'));
  masked.replace(68, 8, std::string(8, '\0'));
  CHECK(masked == expected);
  CHECK(get(received, 8, 8) != 0);
  auto timeout = get(received, 68, 8);
  CHECK(timeout > 200'000'000u);
  CHECK(timeout <= 250'000'000u);
}

TEST_CASE("options are checked") {
  Runtime runtime;
  // The loader wraps the factory's error with where the plugin came from; ours is inside.
  auto refusal = [&](std::vector<std::pair<std::string, std::string>> options) -> micro::Error {
    try {
      make_tcp(runtime, options);
    } catch (const micro::Exception& e) {
      return e.error();
    }
    FAIL("the options were accepted");
    return {};
  };
  auto pool = refusal({{"pool_size", "0"}});
  CHECK(pool.code == 400);
  CHECK(pool.detail.find("transport plugin 'tcp': option 'pool_size' is 0, below its minimum 1; "
                         "expected a whole number from 1 to 64") != std::string::npos);
  auto frame_limit = refusal({{"max_frame", "10"}});
  CHECK(frame_limit.code == 400);
  CHECK(frame_limit.detail.find("option 'max_frame' is 10, below its minimum 64; expected a whole "
                                "number from 64 to 4294967295") != std::string::npos);
  auto info = micro::PluginLoader::instance().describe(micro::PluginKind::transport, "tcp");
  std::set<std::string> names;
  for (const auto& option : info.options) names.insert(option.name);
  CHECK(names == std::set<std::string>{"connect_timeout", "max_frame", "nodelay", "pool_size"});
}
