// test/plugins/tcp/tcp_transport_test.cpp — what only the tcp transport promises, loaded through
// the PluginLoader: the server's Local and Remote metadata, calls spread across a pool of
// connections, the cancel frame, malformed and oversize frames, and the exact bytes of the
// README's example. What every transport promises (round trips, deadlines, cancellation, lost
// connections, size limits) is the conformance suite's (test/plugins/conformance), which runs on
// tcp too.
#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include "../conformance/stream_test_support.hpp"
#include "tcp_test_support.hpp"

using namespace tcp_test;

TEST_CASE("the server tells the handler both ends of the socket as Local and Remote") {
  Runtime runtime;
  auto transport = make_tcp(runtime);
  std::mutex seen_mutex;
  micro::Metadata seen;
  auto listener = transport->listen(
      "127.0.0.1:0", unary([&](micro::Request& request, micro::ResponseHandler respond) {
        {
          std::lock_guard lock(seen_mutex);
          seen = request.context.metadata();
        }
        respond(micro::Response{});
      }));
  micro::Request request = make_request("");
  request.context.metadata().set("Remote", "forged by the client");
  REQUIRE_FALSE(call_and_wait(*transport, listener->address(), request).error);
  std::lock_guard lock(seen_mutex);
  CHECK(seen.get("Local") == listener->address());
  CHECK(seen.get("Remote").rfind("127.0.0.1:", 0) == 0);
  CHECK(seen.get("Remote") != listener->address());
}

TEST_CASE("pooled connections are reused and calls spread across them") {
  Runtime runtime;
  std::mutex remotes_mutex;
  std::set<std::string> remotes;
  auto server_transport = make_tcp(runtime);
  auto listener = server_transport->listen(
      "127.0.0.1:0", unary([&](micro::Request& request, micro::ResponseHandler respond) {
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
    transport->async_call(listener->address(), share(requests[i]), collector.handler(i));
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
       "tcp: malformed request frame: unexpected frame type 2 at offset 3 (expected 1 request, 3 "
       "cancel, 4 stream open, 5 stream message, 6 stream close-send or 8 stream window)"},
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
  CHECK(names == std::set<std::string>{"connect_timeout", "max_frame", "nodelay", "pool_size",
                                       "stream_window"});
  auto window = refusal({{"stream_window", "1000"}});
  CHECK(window.code == 400);
  CHECK(window.detail.find("option 'stream_window' is 1000, below its minimum 65536") !=
        std::string::npos);
}

namespace {

// Echo.Stream streams echo (stream_test::EchoStreams); Hold.Stream streams are kept and never
// read, so whatever the client sends piles up against the window.
struct StreamServer {
  stream_test::EchoStreams echo;
  micro::CallHandler echo_handler = echo.handler();
  std::mutex mutex;
  std::vector<std::shared_ptr<micro::StreamCall>> held;

  micro::CallHandler handler() {
    return [this](micro::ServerCallPtr call) {
      if (call->request().endpoint != "Hold.Stream") {
        echo_handler(std::move(call));
        return;
      }
      std::lock_guard lock(mutex);
      held.push_back(micro::as_stream(call));
    };
  }
  ~StreamServer() {
    std::lock_guard lock(mutex);
    for (auto& stream : held) stream->finish(micro::Response{});
  }
};

std::string open_frame(std::uint64_t id, const std::string& endpoint) {
  return frame(4, id, request_payload("echo", endpoint, "", 0, {}, ""));
}

// Reads frames until one of `type` for `id` comes (window updates and others are skipped).
std::optional<RawFrame> read_until(RawSocket& socket, std::uint8_t type, std::uint64_t id) {
  for (int i = 0; i < 100; ++i) {
    auto next = socket.read_frame();
    if (!next) return std::nullopt;
    if (next->type == type && next->id == id) return next;
  }
  return std::nullopt;
}

// The error detail of an end frame (type 7), "" for a success.
std::string end_detail(const RawFrame& end) {
  auto size = get(end.bytes, 20, 4);
  std::string error_json = end.bytes.substr(24, size);
  if (error_json.empty()) return "";
  return micro::Error::from_json(error_json).detail;
}
std::int32_t end_code(const RawFrame& end) {
  auto size = get(end.bytes, 20, 4);
  std::string error_json = end.bytes.substr(24, size);
  return error_json.empty() ? 0 : micro::Error::from_json(error_json).code;
}

// A unary call on the same socket still answers: the connection survived.
void check_connection_alive(RawSocket& socket) {
  socket.send(frame(1, 1000, request_payload("echo", "Echo.Call", "", 0, {}, "still there")));
  auto answer = read_until(socket, 2, 1000);
  REQUIRE(answer);
  CHECK(answer->bytes.substr(answer->bytes.size() - 16) == "echo:still there");
}

}  // namespace

TEST_CASE("stream frames from a raw socket: a stream round trip by the README") {
  Runtime runtime;
  StreamServer server;
  auto transport = make_tcp(runtime);
  auto listener = transport->listen("127.0.0.1:0", server.handler());
  RawSocket socket(listener->address());
  socket.send(open_frame(3, "Echo.Stream"));
  // The server grants the rest of its 256 KiB window at once.
  auto grant = read_until(socket, 8, 3);
  REQUIRE(grant);
  CHECK(grant->bytes.size() == 24);
  CHECK(get(grant->bytes, 20, 4) == 262144 - 65536);
  socket.send(frame(5, 3, "ping"));
  auto echoed = read_until(socket, 5, 3);
  REQUIRE(echoed);
  CHECK(echoed->bytes.substr(20) == "echo:ping");
  socket.send(header(6, 3, 20));  // close-send
  auto end = read_until(socket, 7, 3);
  REQUIRE(end);
  CHECK(end_code(*end) == 0);
  check_connection_alive(socket);
}

TEST_CASE("bad stream frames end that stream with a clear error; the connection goes on") {
  Runtime runtime;
  StreamServer server;
  auto transport = make_tcp(runtime, {{"max_frame", "4096"}});
  auto listener = transport->listen("127.0.0.1:0", server.handler());
  RawSocket socket(listener->address());
  // A stream that stays healthy through everything below.
  socket.send(open_frame(1, "Echo.Stream"));

  SUBCASE("a message for an unknown stream id") {
    socket.send(frame(5, 99, "lost"));
    auto end = read_until(socket, 7, 99);
    REQUIRE(end);
    CHECK(end_code(*end) == 400);
    CHECK(end_detail(*end) == "tcp: stream frame (type 5) for unknown stream id 99");
  }
  SUBCASE("a message after close-send") {
    socket.send(open_frame(5, "Hold.Stream"));
    socket.send(header(6, 5, 20));
    socket.send(frame(5, 5, "too late"));
    auto end = read_until(socket, 7, 5);
    REQUIRE(end);
    CHECK(end_code(*end) == 400);
    CHECK(end_detail(*end) == "tcp: stream 5: message after the peer closed its side");
  }
  SUBCASE("messages past the window") {
    socket.send(open_frame(7, "Hold.Stream"));
    // 4000-byte messages into a 262144-byte window nobody reads: the 66th overshoots it,
    // the 67th is a violation.
    std::string message(4000, 'w');
    for (int i = 0; i < 67; ++i) socket.send(frame(5, 7, message));
    auto end = read_until(socket, 7, 7);
    REQUIRE(end);
    CHECK(end_code(*end) == 400);
    CHECK(end_detail(*end) ==
          "tcp: stream 7: window violation: message of 4000 bytes with the "
          "window of 262144 bytes used up");
  }
  SUBCASE("an oversize message is skipped, never buffered") {
    socket.send(open_frame(9, "Hold.Stream"));
    socket.send(header(5, 9, 20 + 100000) + std::string(100000, 'o'));
    auto end = read_until(socket, 7, 9);
    REQUIRE(end);
    CHECK(end_code(*end) == 413);
    CHECK(end_detail(*end) == "tcp: stream 9: frame of 100020 bytes exceeds max_frame 4096");
  }
  SUBCASE("a window frame without its increment") {
    socket.send(header(8, 1, 20));
    auto end = read_until(socket, 7, 1);
    REQUIRE(end);
    CHECK(end_code(*end) == 400);
    CHECK(end_detail(*end).find("truncated window increment at offset 20") != std::string::npos);
    socket.send(open_frame(1, "Echo.Stream"));  // the id is free again
  }
  SUBCASE("an open for an id already open") {
    socket.send(open_frame(1, "Echo.Stream"));
    auto end = read_until(socket, 7, 1);
    REQUIRE(end);
    CHECK(end_detail(*end) == "tcp: stream id 1 is already open");
    socket.send(open_frame(1, "Echo.Stream"));  // ended by the duplicate: opened afresh
  }
  // The healthy stream still echoes, and unary calls still work on the same connection.
  socket.send(frame(5, 1, "still"));
  auto echoed = read_until(socket, 5, 1);
  REQUIRE(echoed);
  CHECK(echoed->bytes.substr(20) == "echo:still");
  check_connection_alive(socket);
}
