// Streams through the core over real plugins (memory registry, tcp transport, roundrobin
// selector): typed coroutine handlers of all three shapes, the client's coroutine and blocking
// handles, stream wrappers seeing messages and the end, routing errors, retries before the
// first message, deadlines, cancel, and a graceful stop that lets streams finish or ends them
// with 503.
#include <doctest/doctest.h>

#include <atomic>
#include <future>
#include <mutex>
#include <thread>
#include <utility>  // before Boost 1.74's awaitable.hpp, which uses std::exchange without it

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include <micro/client.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/runtime.hpp>
#include <micro/server.hpp>
#include <micro/stream.hpp>

#include "support/wait.hpp"

using namespace std::chrono_literals;
using boost::asio::use_awaitable;

namespace {

struct Watch {
  std::string symbol;
  int count = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Watch, symbol, count)
struct Tick {
  std::string symbol;
  int sequence = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Tick, symbol, sequence)
struct Number {
  int value = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Number, value)
struct Line {
  std::string text;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Line, text)

// Counts what a stream wrapper sees: messages each way and the final code, per side.
struct StreamCounts {
  std::atomic<int> opened{0}, sent{0}, received{0}, ended{0};
  std::atomic<int> last_code{-1};
};

class CountingStream : public micro::ForwardingStream {
 public:
  CountingStream(micro::MessageStreamPtr inner, StreamCounts& counts)
      : ForwardingStream(std::move(inner)), counts_(counts) {
    ++counts_.opened;
    inner_->on_end([&counts = counts_](micro::Response&& status) {
      counts.last_code = status.error ? status.error->code : 0;
      ++counts.ended;
    });
  }
  void async_read(micro::StreamReadHandler done) override {
    inner_->async_read([this, done = std::move(done)](std::optional<std::string> message) {
      if (message) ++counts_.received;
      done(std::move(message));
    });
  }
  void async_write(std::string message, micro::StreamWriteHandler done) override {
    inner_->async_write(std::move(message),
                        [this, done = std::move(done)](std::optional<micro::Error> error) {
                          if (!error) ++counts_.sent;
                          done(std::move(error));
                        });
  }

 private:
  StreamCounts& counts_;
};

struct Fixture {
  micro::Runtime runtime{4};
  micro::PluginLoader& loader = micro::PluginLoader::instance();
  std::shared_ptr<micro::Registry> registry =
      loader.create<micro::Registry>("memory", "", {}, runtime.executor());
  std::shared_ptr<micro::Transport> transport =
      loader.create<micro::Transport>("tcp", "", {}, runtime.executor());
  std::shared_ptr<micro::Selector> selector =
      loader.create<micro::Selector>("roundrobin", "", {}, runtime.executor());
  std::shared_ptr<micro::RegistryCache> cache =
      std::make_shared<micro::RegistryCache>(registry, runtime.blocking_executor());
  std::unique_ptr<micro::Server> server;
  StreamCounts server_counts, client_counts;
  std::atomic<int> handler_cancelled{0};

  ~Fixture() {
    if (server) server->stop();
    transport->close();
  }

  micro::WrapperChains counting_chains() {
    micro::WrapperChains chains;
    chains.add_handler_stream([this](micro::StreamHandlerFunction next) {
      return [this, next](const micro::MessageStreamPtr& stream) {
        stream->request().context.metadata().set("Wrapped", "server");
        next(std::make_shared<CountingStream>(stream, server_counts));
      };
    });
    chains.add_client_stream([this](micro::ClientStreamFunction next) {
      return [this, next](const micro::RequestPtr& head, const micro::CallOptions& options,
                          micro::OpenStreamHandler done) {
        head->context.metadata().set("Client-Wrapper", "yes");
        next(head, options,
             [this, done](micro::MessageStreamPtr stream, std::optional<micro::Error> error) {
               if (stream) stream = std::make_shared<CountingStream>(stream, client_counts);
               done(std::move(stream), std::move(error));
             });
      };
    });
    return chains;
  }

  micro::Server& start_server(std::chrono::milliseconds drain = 5s) {
    micro::ServerOptions options;
    options.name = "market";
    options.drain_timeout = drain;
    options.executor = runtime.executor();
    server =
        std::make_unique<micro::Server>(options, transport, registry, nullptr, counting_chains());
    // Server-streaming: one Watch in, `count` ticks out.
    server->handle_stream(
        "Prices.Watch",
        [](micro::Context& context,
           micro::ServerStream<Watch, Tick> stream) -> boost::asio::awaitable<void> {
          auto watch = co_await stream.read(use_awaitable);
          if (!watch) throw micro::Exception(micro::bad_request("market", "no watch request"));
          if (context.metadata().get("Wrapped") != "server" ||
              context.metadata().get("Client-Wrapper") != "yes")
            throw micro::Exception(micro::Error("market", 500, "wrappers not seen"));
          for (int i = 0; i < watch->count; ++i) {
            Tick tick{watch->symbol, i};
            auto error = co_await stream.write(tick, use_awaitable);
            if (error) co_return;
          }
        });
    // Client-streaming: numbers in until the client closes, their sum out.
    server->handle_stream(
        "Upload.Sum",
        [](micro::Context&,
           micro::ServerStream<Number, Number> stream) -> boost::asio::awaitable<void> {
          int sum = 0;
          while (auto number = co_await stream.read(use_awaitable)) sum += number->value;
          Number total{sum};
          co_await stream.write(total, use_awaitable);
        });
    // Bidirectional: each line echoed; "quit" ends with 409; "hold" waits for the end.
    server->handle_stream(
        "Chat.Talk",
        [this](micro::Context& context,
               micro::ServerStream<Line, Line> stream) -> boost::asio::awaitable<void> {
          context.cancellation()->on_cancel([this] { ++handler_cancelled; });
          while (auto line = co_await stream.read(use_awaitable)) {
            if (line->text == "quit")
              throw micro::Exception(micro::Error("market", 409, "the client said quit"));
            if (line->text == "hold") continue;
            Line reply{"re: " + line->text};
            auto error = co_await stream.write(reply, use_awaitable);
            if (error) co_return;
          }
          if (context.cancelled()) throw micro::Exception(micro::cancelled_error("market"));
        });
    server->handle("Plain.Call", [](micro::Context&, const Line& line) { return line; });
    server->start();
    return *server;
  }

  micro::Client make_client(micro::ClientOptions options = {}) {
    return micro::Client(options, transport, cache, selector, nullptr, counting_chains(),
                         runtime.executor());
  }
};

// Runs a coroutine to completion on the runtime and returns its result.
template <class T>
T run(Fixture& fixture, boost::asio::awaitable<T> coroutine) {
  auto future = boost::asio::co_spawn(fixture.runtime.executor(), std::move(coroutine),
                                      boost::asio::use_future);
  REQUIRE(future.wait_for(20s) == std::future_status::ready);
  return future.get();
}

}  // namespace

TEST_CASE("a server stream: a coroutine client reads every tick, then the success") {
  Fixture fixture;
  fixture.start_server();
  auto client = fixture.make_client();
  auto ticks = run(fixture, [&]() -> boost::asio::awaitable<std::vector<Tick>> {
    micro::Request head;
    head.service = "market";
    head.endpoint = "Prices.Watch";
    micro::CallOptions options;
    auto raw = co_await client.open_stream(std::move(head), options, use_awaitable);
    micro::TypedStream<Watch, Tick> stream(raw);
    Watch watch{"ACME", 500};
    auto error = co_await stream.write(watch, use_awaitable);
    REQUIRE_FALSE(error);
    stream.close_send();
    std::vector<Tick> received;
    while (auto tick = co_await stream.read(use_awaitable)) received.push_back(*tick);
    CHECK_FALSE(stream.error());
    CHECK(stream.ended());
    co_return received;
  }());
  REQUIRE(ticks.size() == 500);
  for (int i = 0; i < 500; ++i) {
    CHECK(ticks[i].sequence == i);
    CHECK(ticks[i].symbol == "ACME");
  }
  // Both sides' wrappers saw the stream, its messages and its end.
  REQUIRE(test_support::wait_until([&] { return fixture.server_counts.ended.load() == 1; }));
  CHECK(fixture.server_counts.received == 1);
  CHECK(fixture.server_counts.sent == 500);
  CHECK(fixture.server_counts.last_code == 0);
  CHECK(fixture.client_counts.sent == 1);
  CHECK(fixture.client_counts.received == 500);
  CHECK(fixture.client_counts.ended == 1);
  CHECK(fixture.client_counts.last_code == 0);
  CHECK(fixture.server->statistics().streams == 1);
  CHECK(client.statistics().streams == 1);
  // Registered as a stream endpoint, with its message schemas.
  auto registration = fixture.server->registration();
  bool found = false;
  for (const auto& endpoint : registration.endpoints) {
    if (endpoint.name != "Prices.Watch") continue;
    found = true;
    CHECK(endpoint.metadata.at("stream") == "true");
    CHECK(endpoint.request != micro::Value{});
  }
  CHECK(found);
}

TEST_CASE("a client stream with the blocking handle: many numbers in, one sum out") {
  Fixture fixture;
  fixture.start_server();
  auto client = fixture.make_client();
  auto stream = client.open_stream<Number, Number>("market", "Upload.Sum");
  int expected = 0;
  for (int i = 1; i <= 1000; ++i) {
    stream.send(Number{i});
    expected += i;
  }
  stream.close_send();
  auto total = stream.receive();
  REQUIRE(total);
  CHECK(total->value == expected);
  CHECK_FALSE(stream.receive());
  CHECK_FALSE(stream.error());
}

TEST_CASE("a bidirectional stream; a handler's exception ends it with its error on both sides") {
  Fixture fixture;
  fixture.start_server();
  auto client = fixture.make_client();
  auto stream = client.open_stream<Line, Line>("market", "Chat.Talk");
  for (std::string text : {"hello", "how are you"}) {
    stream.send(Line{text});
    auto reply = stream.receive();
    REQUIRE(reply);
    CHECK(reply->text == "re: " + text);
  }
  stream.send(Line{"quit"});
  CHECK_FALSE(stream.receive());
  REQUIRE(stream.error());
  CHECK(stream.error()->code == 409);
  CHECK(stream.error()->detail == "the client said quit");
  try {
    stream.send(Line{"after the end"});
    FAIL("a write after the end must fail");
  } catch (const micro::Exception& e) {
    CHECK(e.error().code == 409);
  }
  REQUIRE(test_support::wait_until([&] { return fixture.server_counts.ended.load() == 1; }));
  CHECK(fixture.server_counts.last_code == 409);
}

TEST_CASE("streams and calls are routed to their own kind of endpoint") {
  Fixture fixture;
  fixture.start_server();
  auto client = fixture.make_client();
  SUBCASE("a stream to a unary endpoint is refused with 400") {
    auto stream = client.open_stream("market", "Plain.Call");
    CHECK_FALSE(stream.receive());
    REQUIRE(stream.error());
    CHECK(stream.error()->code == 400);
    CHECK(stream.error()->detail.find("is not a stream") != std::string::npos);
  }
  SUBCASE("a call to a stream endpoint is refused with 400") {
    try {
      client.call<Line>("market", "Chat.Talk", Line{"x"});
      FAIL("expected 400");
    } catch (const micro::Exception& e) {
      CHECK(e.error().code == 400);
      CHECK(e.error().detail.find("is a stream") != std::string::npos);
    }
  }
  SUBCASE("an unknown endpoint ends the stream with 404 naming what there is") {
    auto stream = client.open_stream("market", "Nope.Stream");
    CHECK_FALSE(stream.receive());
    REQUIRE(stream.error());
    CHECK(stream.error()->code == 404);
    CHECK(stream.error()->detail.find("Chat.Talk") != std::string::npos);
  }
  SUBCASE("an unknown service fails the open") {
    try {
      client.open_stream("nobody", "Chat.Talk");
      FAIL("expected an error");
    } catch (const micro::Exception& e) {
      CHECK(e.error().code == 503);
      CHECK(e.error().detail.find("nobody") != std::string::npos);
    }
  }
}

TEST_CASE("a node that cannot be reached is replaced before anything is sent") {
  Fixture fixture;
  fixture.start_server();
  // A second node of the same service where nobody listens.
  micro::Service dead = fixture.server->registration();
  dead.nodes[0].id = "market-dead";
  dead.nodes[0].address = [] {
    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor acceptor(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
    return "127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());
  }();
  fixture.registry->register_service(dead, micro::RegisterOptions{});
  micro::ClientOptions options;
  options.retries = 2;
  auto client = fixture.make_client(options);
  for (int i = 0; i < 4; ++i) {  // round robin: some opens pick the dead node first
    auto stream = client.open_stream<Line, Line>("market", "Chat.Talk");
    stream.send(Line{"hi"});
    auto reply = stream.receive();
    REQUIRE(reply);
    CHECK(reply->text == "re: hi");
    stream.close_send();
    CHECK_FALSE(stream.receive());
  }
  CHECK(client.statistics().retries >= 1);
}

TEST_CASE("a stream's deadline ends it with 408 and cancels the handler") {
  Fixture fixture;
  fixture.start_server();
  auto client = fixture.make_client();
  micro::CallOptions options;
  options.timeout = 300ms;
  auto stream = client.open_stream<Line, Line>("market", "Chat.Talk", options);
  stream.send(Line{"hold"});
  CHECK_FALSE(stream.receive());
  REQUIRE(stream.error());
  CHECK(stream.error()->code == 408);
  REQUIRE(test_support::wait_until([&] { return fixture.handler_cancelled.load() == 1; }));
  REQUIRE(test_support::wait_until([&] { return fixture.server->statistics().in_flight == 0; }));
}

TEST_CASE("cancelling a stream ends it with 499 and cancels the handler") {
  Fixture fixture;
  fixture.start_server();
  auto client = fixture.make_client();
  SUBCASE("with the handle") {
    auto stream = client.open_stream<Line, Line>("market", "Chat.Talk");
    stream.send(Line{"one"});
    REQUIRE(stream.receive());
    stream.cancel();
    CHECK(stream.error()->code == 499);
    CHECK_FALSE(stream.receive());
  }
  SUBCASE("with the head's context") {
    micro::Context context;
    auto cancellation = context.cancellation();
    auto stream = client.open_stream<Line, Line>("market", "Chat.Talk", {}, context);
    stream.send(Line{"one"});
    REQUIRE(stream.receive());
    cancellation->cancel();
    CHECK_FALSE(stream.receive());
    REQUIRE(stream.error());
    CHECK(stream.error()->code == 499);
  }
  REQUIRE(test_support::wait_until([&] { return fixture.handler_cancelled.load() == 1; }));
  REQUIRE(test_support::wait_until([&] { return fixture.server->statistics().in_flight == 0; }));
}

TEST_CASE("a graceful stop lets open streams finish, and ends them with 503 past the drain bound") {
  SUBCASE("the stream finishes within the drain timeout") {
    Fixture fixture;
    fixture.start_server(5s);
    auto client = fixture.make_client();
    auto stream = client.open_stream<Line, Line>("market", "Chat.Talk");
    stream.send(Line{"before stop"});
    REQUIRE(stream.receive());
    auto stopped = std::async(std::launch::async, [&] { return fixture.server->stop(); });
    // The server is draining; the open stream still works and ends normally.
    // Deregistering is the stop's first step: once it is gone, the stop is under way.
    REQUIRE(test_support::wait_until([&] {
      try {
        return fixture.registry->get_service("market").empty();
      } catch (const micro::Exception&) {
        return true;
      }
    }));
    stream.send(Line{"during stop"});
    auto reply = stream.receive();
    REQUIRE(reply);
    CHECK(reply->text == "re: during stop");
    stream.close_send();
    CHECK_FALSE(stream.receive());
    CHECK_FALSE(stream.error());
    CHECK(stopped.get() == 0);
  }
  SUBCASE("the stream is still open at the drain bound") {
    Fixture fixture;
    fixture.start_server(300ms);
    auto client = fixture.make_client();
    auto stream = client.open_stream<Line, Line>("market", "Chat.Talk");
    stream.send(Line{"hold"});
    // send() returns once the client's transport has the message; the server may not have
    // dispatched the stream yet, and a stop before that would find nothing open.
    REQUIRE(
        test_support::wait_until([&] { return fixture.server->statistics().in_flight == 1; }, 5s));
    CHECK(fixture.server->stop() == 1);
    CHECK_FALSE(stream.receive());
    REQUIRE(stream.error());
    CHECK(stream.error()->code == 503);
    CHECK(stream.error()->detail.find("drain timeout") != std::string::npos);
    REQUIRE(test_support::wait_until([&] { return fixture.handler_cancelled.load() == 1; }));
  }
}

TEST_CASE("typed stream handlers need an executor") {
  micro::Runtime runtime{1};
  auto transport =
      micro::PluginLoader::instance().create<micro::Transport>("tcp", "", {}, runtime.executor());
  micro::ServerOptions options;
  options.name = "market";
  micro::Server server(options, transport, nullptr, nullptr, {});
  server.handle_stream(
      "Chat.Talk",
      [](micro::Context&, micro::ServerStream<Line, Line>) -> boost::asio::awaitable<void> {
        co_return;
      });
  try {
    server.start();
    FAIL("expected an error");
  } catch (const micro::Exception& e) {
    CHECK(e.error().code == 400);
    CHECK(e.error().detail.find("ServerOptions::executor") != std::string::npos);
  }
}
