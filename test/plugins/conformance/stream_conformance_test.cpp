// test/plugins/conformance/stream_conformance_test.cpp — what the transport contract promises
// of streams (<micro/transport.hpp>, docs/design.md "Streams"), for the transport under test:
// a transport that streams carries messages in order both ways, many streams on one connection
// beside unary calls, holds a fast writer back for a slow reader, ends streams on cancel from
// either side, deadlines and a killed server; one that cannot stream refuses with 501.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "stream_test_support.hpp"

using namespace stream_test;

const TransportProfile& conformance_profile();

namespace {

const TransportProfile& profile() {
  return conformance_profile();
}

std::shared_ptr<micro::Transport> make(Runtime& runtime, const Options& options = {}) {
  return make_transport(profile().name, runtime, options);
}

// Writes as fast as the transport takes messages, `total` of them, then ends with success.
void flood_write(std::shared_ptr<micro::StreamCall> stream, std::atomic<int>* written, int total,
                 std::size_t size) {
  if (written->load() >= total) {
    stream->finish(micro::Response{});
    return;
  }
  stream->async_write(std::string(size, 'f'),
                      [stream, written, total, size](std::optional<micro::Error> error) {
                        if (error) return;  // the stream ended (the reader cancelled it)
                        ++*written;
                        flood_write(stream, written, total, size);
                      });
}

long resident_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

}  // namespace

TEST_CASE("a transport that cannot stream refuses with 501 naming itself") {
  if (profile().streams) return;
  Runtime runtime;
  auto transport = make(runtime);
  EchoStreams echo;
  auto listener = transport->listen("127.0.0.1:0", echo.handler());
  auto opened = open_and_wait(*transport, listener->address(), stream_head());
  REQUIRE_FALSE(opened.stream);
  REQUIRE(opened.error);
  CHECK(opened.error->code == 501);
  CHECK(opened.error->detail.find("the " + profile().name + " transport cannot stream") !=
        std::string::npos);
  CHECK(opened.error->detail.find(listener->address()) != std::string::npos);
}

TEST_CASE("a stream carries messages both ways and ends with the server's status") {
  if (!profile().streams) return;
  Runtime runtime;
  auto transport = make(runtime);
  EchoStreams echo;
  auto listener = transport->listen("127.0.0.1:0", echo.handler());
  auto head = stream_head();
  head.context.metadata().set("Trace", "7");
  auto opened = open_and_wait(*transport, listener->address(), head);
  REQUIRE(opened.stream);
  auto& stream = *opened.stream;
  CHECK(stream.request().endpoint == "Echo.Stream");
  for (const std::string& message : std::vector<std::string>{"a", "", std::string(5000, 'x')}) {
    REQUIRE_FALSE(write_one(stream, message));
    CHECK(read_one(stream) == "echo:" + message);
  }
  stream.close_send();
  CHECK(write_one(stream, "after close"));  // refused: this side is closed
  CHECK_FALSE(read_one(stream));
  auto status = wait_end(stream);
  CHECK_FALSE(status.error);
  CHECK(status.metadata.get("Count") == "3");
  CHECK(stream.ended());
  CHECK_FALSE(stream.finish(micro::Response{}));  // the server's end came first
  // A unary call on the same transport still works beside it.
  auto response = call_and_wait(*transport, listener->address(), make_request("u"));
  CHECK(response.body == "echo:u");
}

TEST_CASE("10,000 messages each way arrive in order, none lost or duplicated") {
  if (!profile().streams) return;
  Runtime runtime;
  auto transport = make(runtime);
  EchoStreams echo;
  auto listener = transport->listen("127.0.0.1:0", echo.handler());
  auto opened = open_and_wait(*transport, listener->address(), stream_head());
  REQUIRE(opened.stream);
  auto stream = opened.stream;
  constexpr int count = 10000;
  std::thread writer([stream] {
    for (int i = 0; i < count; ++i) REQUIRE_FALSE(write_one(*stream, "m" + std::to_string(i)));
    stream->close_send();
  });
  int received = 0;
  bool in_order = true;
  while (auto message = read_one(*stream)) {
    if (*message != "echo:m" + std::to_string(received)) in_order = false;
    ++received;
  }
  writer.join();
  CHECK(in_order);
  CHECK(received == count);
  auto status = wait_end(*stream);
  CHECK_FALSE(status.error);
  CHECK(status.metadata.get("Count") == std::to_string(count));
}

TEST_CASE("200 concurrent streams share one connection with unary calls") {
  if (!profile().streams) return;
  Runtime runtime;
  std::mutex remotes_mutex;
  std::set<std::string> remotes;
  EchoStreams echo;
  auto inner = echo.handler();
  auto server = make(runtime);
  auto listener = server->listen("127.0.0.1:0", [&](micro::ServerCallPtr call) {
    {
      std::lock_guard lock(remotes_mutex);
      remotes.insert(call->context().metadata().get("Remote"));
    }
    inner(std::move(call));
  });
  auto transport = make(runtime, profile().one_connection);
  constexpr int streams = 200, messages = 20;
  std::vector<micro::MessageStreamPtr> open;
  for (int i = 0; i < streams; ++i) {
    auto opened = open_and_wait(*transport, listener->address(), stream_head());
    REQUIRE(opened.stream);
    open.push_back(opened.stream);
  }
  // Every stream writes its messages before any reads, so all 200 are in flight at once.
  for (int m = 0; m < messages; ++m)
    for (int i = 0; i < streams; ++i)
      REQUIRE_FALSE(write_one(*open[i], std::to_string(i) + "." + std::to_string(m)));
  Collector calls(50);
  std::vector<micro::Request> requests(50, make_request("beside"));
  for (std::size_t i = 0; i < requests.size(); ++i)
    transport->async_call(listener->address(), share(requests[i]), calls.handler(i));
  int wrong = 0;
  for (int i = 0; i < streams; ++i) {
    open[i]->close_send();
    for (int m = 0; m < messages; ++m)
      if (read_one(*open[i]) != "echo:" + std::to_string(i) + "." + std::to_string(m)) ++wrong;
    CHECK_FALSE(read_one(*open[i]));
    CHECK_FALSE(wait_end(*open[i]).error);
  }
  CHECK(wrong == 0);
  REQUIRE(calls.wait_all());
  for (auto& response : calls.responses()) CHECK(response->body == "echo:beside");
  std::lock_guard lock(remotes_mutex);
  CHECK(remotes.size() == 1);
  CHECK(echo.opened == streams);
}

TEST_CASE("a slow reader holds a fast writer back: memory stays bounded") {
  if (!profile().streams) return;
  Runtime runtime;
  constexpr std::size_t message_size = 16 * 1024;
  constexpr int flood = 2000;  // 32 MiB if nothing held the writer back
  std::atomic<int> written{0};
  std::shared_ptr<micro::StreamCall> server_stream;
  std::mutex server_mutex;
  auto server = make(runtime);
  auto listener = server->listen("127.0.0.1:0", [&](micro::ServerCallPtr call) {
    auto stream = micro::as_stream(call);
    REQUIRE(stream);
    {
      std::lock_guard lock(server_mutex);
      server_stream = stream;
    }
    flood_write(stream, &written, flood, message_size);
  });
  auto transport = make(runtime);
  auto opened = open_and_wait(*transport, listener->address(), stream_head("Flood.Stream"));
  REQUIRE(opened.stream);
  long before = resident_kib();
  int read = 0;
  int worst_lead = 0;
  // The reader takes a message every millisecond; the writer could go ~100x faster.
  for (; read < 300; ++read) {
    REQUIRE(read_one(*opened.stream));
    worst_lead = std::max(worst_lead, written.load() - read);
    std::this_thread::sleep_for(1ms);
  }
  long growth = resident_kib() - before;
  CAPTURE(worst_lead);
  CAPTURE(growth);
  // The writer runs ahead by at most the reader's window (256 KiB by default) over the
  // message size, plus the one message a window may overshoot by.
  CHECK(worst_lead <= static_cast<int>(262144 / message_size) + 2);
  CHECK(written.load() < flood);
  CHECK(growth < 8 * 1024);
  opened.stream->finish(micro::Response::failure(micro::cancelled_error("test")));
  auto status = wait_end(*opened.stream);
  CHECK(status.error->code == 499);
}

TEST_CASE("cancel from either side ends the stream on both; others on the connection go on") {
  if (!profile().streams) return;
  Runtime runtime;
  EchoStreams echo;
  auto server = make(runtime);
  std::mutex held_mutex;
  std::vector<std::shared_ptr<micro::StreamCall>> held;
  auto echo_handler = echo.handler();
  std::atomic<int> held_cancelled{0};
  auto listener = server->listen("127.0.0.1:0", [&](micro::ServerCallPtr call) {
    if (call->request().endpoint != "Hold.Stream") {
      echo_handler(std::move(call));
      return;
    }
    auto stream = micro::as_stream(call);
    stream->context().cancellation()->on_cancel([&] { ++held_cancelled; });
    std::lock_guard lock(held_mutex);
    held.push_back(stream);
  });
  auto transport = make(runtime, profile().one_connection);
  auto other = open_and_wait(*transport, listener->address(), stream_head());
  REQUIRE(other.stream);
  REQUIRE_FALSE(write_one(*other.stream, "before"));
  CHECK(read_one(*other.stream) == "echo:before");

  SUBCASE("the client cancels") {
    auto opened = open_and_wait(*transport, listener->address(), stream_head("Hold.Stream"));
    REQUIRE(opened.stream);
    REQUIRE(test_support::wait_until([&] {
      std::lock_guard lock(held_mutex);
      return held.size() == 1;
    }));
    CHECK(opened.stream->finish(micro::Response::failure(micro::cancelled_error("micro.client"))));
    CHECK(opened.stream->ended());
    CHECK(opened.stream->status().error->code == 499);
    CHECK_FALSE(read_one(*opened.stream));
    CHECK(write_one(*opened.stream, "late"));
    REQUIRE(test_support::wait_until([&] { return held_cancelled.load() == 1; }));
    std::lock_guard lock(held_mutex);
    CHECK(held[0]->ended());  // the server's end saw it as well
  }
  SUBCASE("the cancellation of the head's context cancels") {
    auto head = stream_head("Hold.Stream");
    auto cancellation = head.context.cancellation();
    auto opened = open_and_wait(*transport, listener->address(), head);
    REQUIRE(opened.stream);
    cancellation->cancel();
    auto status = wait_end(*opened.stream);
    CHECK(status.error->code == 499);
    REQUIRE(test_support::wait_until([&] { return held_cancelled.load() == 1; }));
  }
  SUBCASE("the server ends it with an error mid-stream") {
    auto opened = open_and_wait(*transport, listener->address(), stream_head("Hold.Stream"));
    REQUIRE(opened.stream);
    REQUIRE(test_support::wait_until([&] {
      std::lock_guard lock(held_mutex);
      return held.size() == 1;
    }));
    {
      std::lock_guard lock(held_mutex);
      REQUIRE_FALSE(write_one(*held[0], "one"));
      held[0]->finish(micro::Response::failure(micro::Error("echo", 409, "enough")));
    }
    CHECK(read_one(*opened.stream) == "one");  // sent before the end: still delivered
    CHECK_FALSE(read_one(*opened.stream));
    auto status = wait_end(*opened.stream);
    REQUIRE(status.error);
    CHECK(status.error->code == 409);
    CHECK(status.error->detail == "enough");
    auto refused = write_one(*opened.stream, "after the end");
    REQUIRE(refused);
    CHECK(refused->code == 409);
  }
  // The other stream on the same connection is untouched.
  REQUIRE_FALSE(write_one(*other.stream, "after"));
  CHECK(read_one(*other.stream) == "echo:after");
  other.stream->close_send();
  CHECK_FALSE(read_one(*other.stream));
  CHECK_FALSE(wait_end(*other.stream).error);
  std::lock_guard lock(held_mutex);
  for (auto& stream : held) stream->finish(micro::Response{});
}

TEST_CASE("a stream past its deadline ends with 408 on the client and is cancelled on the server") {
  if (!profile().streams) return;
  Runtime runtime;
  auto server = make(runtime);
  std::atomic<int> cancelled{0};
  std::mutex held_mutex;
  std::vector<std::shared_ptr<micro::StreamCall>> held;
  std::atomic<bool> server_saw_deadline{false};
  auto listener = server->listen("127.0.0.1:0", [&](micro::ServerCallPtr call) {
    auto stream = micro::as_stream(call);
    server_saw_deadline = stream->context().has_deadline();
    stream->context().cancellation()->on_cancel([&] { ++cancelled; });
    std::lock_guard lock(held_mutex);
    held.push_back(stream);
  });
  auto transport = make(runtime);
  auto head = stream_head();
  head.context.set_timeout(300ms);
  auto opened = open_and_wait(*transport, listener->address(), head);
  REQUIRE(opened.stream);
  REQUIRE_FALSE(write_one(*opened.stream, "x"));
  auto status = wait_end(*opened.stream);
  REQUIRE(status.error);
  CHECK(status.error->code == 408);
  CHECK(status.error->detail.find(listener->address()) != std::string::npos);
  CHECK(server_saw_deadline);
  REQUIRE(test_support::wait_until([&] { return cancelled.load() == 1; }));
  std::lock_guard lock(held_mutex);
  for (auto& stream : held) stream->finish(micro::Response{});
}

TEST_CASE("a server killed mid-stream ends the stream with 503 within the deadline") {
  if (!profile().streams) return;
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
    EchoStreams echo;
    auto listener = transport->listen("127.0.0.1:0", echo.handler());
    std::string line = listener->address() + "\n";
    [[maybe_unused]] auto written = ::write(out, line.data(), line.size());
    io.run_for(60s);
    ::_exit(0);
  }
  ::close(pipe_ends[1]);
  std::string address;
  {
    pollfd poll_fd{pipe_ends[0], POLLIN, 0};
    char byte;
    while (::poll(&poll_fd, 1, 10000) == 1 && ::read(pipe_ends[0], &byte, 1) == 1 && byte != '\n')
      address.push_back(byte);
  }
  REQUIRE(address.rfind("127.0.0.1:", 0) == 0);
  {
    Runtime runtime;
    auto transport = make(runtime);
    auto head = stream_head();
    head.context.set_timeout(5s);
    auto opened = open_and_wait(*transport, address, head);
    REQUIRE(opened.stream);
    REQUIRE_FALSE(write_one(*opened.stream, "alive"));
    CHECK(read_one(*opened.stream) == "echo:alive");
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    auto end = wait_end(*opened.stream, 5s);
    REQUIRE(end.error);
    CHECK(end.error->code == 503);
    CHECK(end.error->detail.find(address) != std::string::npos);
    CHECK_FALSE(read_one(*opened.stream));
  }
  ::close(pipe_ends[0]);
}

TEST_CASE("opening a stream to nobody fails with 503 naming the address") {
  if (!profile().streams) return;
  Runtime runtime;
  auto transport = make(runtime);
  std::string address = unused_address();
  auto opened = open_and_wait(*transport, address, stream_head());
  REQUIRE_FALSE(opened.stream);
  REQUIRE(opened.error);
  CHECK(opened.error->code == 503);
  CHECK(opened.error->detail.find(address) != std::string::npos);
}
