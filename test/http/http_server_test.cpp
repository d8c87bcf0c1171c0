// The HTTP server (<micro/http_server.hpp>) on 127.0.0.1:0, driven by libmicro's HTTP client and by
// a raw socket writing exact bytes: round trips, keep-alive reuse, pipelined requests answered in
// order, limits refused from the head (413 before the body is sent, 431), malformed requests
// named, slow senders and idle connections timed out, abandoned exchanges, and close() flushing
// the answers given.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <micro/error.hpp>
#include <micro/http_client.hpp>
#include <micro/http_server.hpp>
#include <micro/runtime.hpp>

#include "http/raw_http_client.hpp"
#include "support/wait.hpp"

namespace mh = micro::http;
using namespace std::chrono_literals;
using test_support::wait_until;

namespace {

// An exchange kept by a test, to answer later or watch.
struct Held {
  std::mutex mutex;
  std::vector<mh::ExchangePtr> exchanges;

  void add(mh::ExchangePtr exchange) {
    std::lock_guard lock(mutex);
    exchanges.push_back(std::move(exchange));
  }
  std::size_t size() {
    std::lock_guard lock(mutex);
    return exchanges.size();
  }
  mh::ExchangePtr at(std::size_t i) {
    std::lock_guard lock(mutex);
    return exchanges.at(i);
  }
};

mh::ServerResponse text(std::string body, int status = 200) {
  mh::ServerResponse response;
  response.status = status;
  response.headers.push_back({"Content-Type", "text/plain"});
  response.body = std::move(body);
  return response;
}

// Answers every request with its body.
void echo(mh::ExchangePtr exchange) {
  exchange->respond(text(exchange->request().body));
}

mh::Request post(const std::string& address, std::string body) {
  return {.method = "POST",
          .url = mh::parse_url("http://" + address + "/echo"),
          .headers = {},
          .body = std::move(body)};
}

bool contains(const std::string& text, const std::string& part) {
  INFO(text);
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("a request and its answer round trip: method, target, headers as sent, body") {
  micro::Runtime runtime(2);
  std::mutex seen_mutex;
  mh::ServerRequest seen;
  mh::Server server(runtime.executor(), {}, [&](mh::ExchangePtr exchange) {
    {
      std::lock_guard lock(seen_mutex);
      seen = exchange->request();
    }
    mh::ServerResponse response = text("got " + exchange->request().body, 201);
    response.headers.push_back({"X-Answer", "42"});
    exchange->respond(std::move(response));
  });
  server.listen("127.0.0.1:0");
  REQUIRE(server.address().rfind("127.0.0.1:", 0) == 0);
  REQUIRE(server.address() != "127.0.0.1:0");

  mh::BlockingClient client;
  auto request = post(server.address(), std::string("binary\0body", 11));
  request.headers.push_back(
      {"Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"});
  request.headers.push_back({"lower-case", "v"});
  auto response = client.request(std::move(request));
  CHECK(response.status == 201);
  CHECK(response.body == std::string("got binary\0body", 15));
  CHECK(response.header("X-Answer") == "42");
  CHECK(response.header("Content-Type") == "text/plain");
  CHECK(response.header("Server") == "micro-cpp");
  CHECK(response.header("Date").size() == 29);  // "Thu, 03 Dec 2026 13:16:53 GMT"

  std::lock_guard lock(seen_mutex);
  CHECK(seen.method == "POST");
  CHECK(seen.target == "/echo");
  CHECK(seen.version == 11);
  CHECK(seen.keep_alive);
  CHECK(seen.body == std::string("binary\0body", 11));
  CHECK(seen.header("traceparent") == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  CHECK(seen.header("LOWER-CASE") == "v");
  // Names keep the case they came with.
  bool found_exact = false;
  for (const auto& field : seen.headers) found_exact |= field.name == "Traceparent";
  CHECK(found_exact);
  CHECK(seen.remote.rfind("127.0.0.1:", 0) == 0);
  CHECK(seen.local == server.address());
}

TEST_CASE("duplicated headers stay separate; joined_header combines them with commas") {
  micro::Runtime runtime(1);
  std::mutex seen_mutex;
  mh::ServerRequest seen;
  mh::Server server(runtime.executor(), {}, [&](mh::ExchangePtr exchange) {
    {
      std::lock_guard lock(seen_mutex);
      seen = exchange->request();
    }
    exchange->respond(text("ok"));
  });
  server.listen("127.0.0.1:0");
  raw_http::Connection connection(server.address());
  REQUIRE(connection.send(raw_http::post("", "Tracestate: a=1\r\ntracestate: b=2\r\n")));
  auto response = connection.read_response();
  REQUIRE(response);
  CHECK(response->status == 200);
  std::lock_guard lock(seen_mutex);
  CHECK(seen.count_header("TRACESTATE") == 2);
  CHECK(seen.header("tracestate") == "a=1");
  CHECK(seen.joined_header("tracestate") == "a=1,b=2");
  CHECK(seen.count_header("absent") == 0);
  CHECK(seen.joined_header("absent") == "");
}

TEST_CASE("kept-alive connections carry many requests") {
  micro::Runtime runtime(2);
  mh::Server server(runtime.executor(), {}, echo);
  server.listen("127.0.0.1:0");
  mh::BlockingClient client;
  for (int i = 0; i < 20; ++i) {
    auto response = client.request(post(server.address(), "call " + std::to_string(i)));
    REQUIRE(response.status == 200);
    CHECK(response.body == "call " + std::to_string(i));
  }
  CHECK(server.statistics().connections_accepted == 1);
  CHECK(server.statistics().requests == 20);
  CHECK(client.statistics().connections_reused == 19);
}

TEST_CASE(
    "pipelined requests are answered in the order they arrived, whatever order the "
    "handler answers in") {
  micro::Runtime runtime(2);
  Held held;
  mh::Server server(runtime.executor(), {}, [&](mh::ExchangePtr exchange) { held.add(exchange); });
  server.listen("127.0.0.1:0");

  raw_http::Connection connection(server.address());
  // Three requests in one write.
  REQUIRE(connection.send(raw_http::post("first") + raw_http::post("second") +
                          raw_http::post("third")));
  REQUIRE(wait_until([&] { return held.size() == 3; }));
  // Answered last to first, from another thread.
  std::thread answering([&] {
    for (int i = 2; i >= 0; --i) {
      auto exchange = held.at(static_cast<std::size_t>(i));
      CHECK(exchange->respond(text("answer to " + exchange->request().body)));
    }
  });
  answering.join();
  for (const char* body : {"first", "second", "third"}) {
    auto response = connection.read_response();
    REQUIRE(response);
    CHECK(response->body == std::string("answer to ") + body);
  }
  // A second answer to the same exchange does not count.
  CHECK_FALSE(held.at(0)->respond(text("again")));
}

TEST_CASE(
    "a body larger than body_limit is refused with 413 from its Content-Length, before "
    "it is sent") {
  micro::Runtime runtime(1);
  mh::ServerOptions options;
  options.body_limit = 1024;
  std::atomic<int> handled{0};
  mh::Server server(runtime.executor(), options, [&](mh::ExchangePtr exchange) {
    ++handled;
    echo(exchange);
  });
  server.listen("127.0.0.1:0");

  SUBCASE("declared length") {
    raw_http::Connection connection(server.address());
    // Only the head: the answer must come without the server waiting for 10 GB.
    REQUIRE(
        connection.send("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10737418240\r\n"
                        "Content-Type: application/json\r\n\r\n"));
    auto response = connection.read_response();
    REQUIRE(response);
    CHECK(response->status == 413);
    CHECK(response->header("Connection") == "close");
    CHECK(contains(response->body,
                   "request body of 10737418240 bytes exceeds the limit of 1024 bytes"));
    CHECK(connection.closed_by_peer());
  }
  SUBCASE("a chunk larger than the limit") {
    raw_http::Connection connection(server.address());
    REQUIRE(
        connection.send("POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                        "\r\n10\r\n0123456789abcdef\r\nfffff\r\n"));
    auto response = connection.read_response();
    REQUIRE(response);
    CHECK(response->status == 413);
    CHECK(contains(response->body, "chunked request body exceeds the limit of 1024 bytes"));
  }
  SUBCASE("a body within the limit, chunked, is read whole") {
    raw_http::Connection connection(server.address());
    REQUIRE(
        connection.send("POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                        "\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"));
    auto response = connection.read_response();
    REQUIRE(response);
    CHECK(response->status == 200);
    CHECK(response->body == "hello world");
  }
  CHECK(handled.load() <= 1);
}

TEST_CASE("a head larger than header_limit is refused with 431") {
  micro::Runtime runtime(1);
  mh::ServerOptions options;
  options.header_limit = 1024;
  mh::Server server(runtime.executor(), options, echo);
  server.listen("127.0.0.1:0");

  SUBCASE("in one piece") {
    raw_http::Connection connection(server.address());
    REQUIRE(connection.send(raw_http::post("", "X-Big: " + std::string(2000, 'x') + "\r\n")));
    auto response = connection.read_response();
    REQUIRE(response);
    CHECK(response->status == 431);
    CHECK(contains(response->body, "request head exceeds the limit of 1024 bytes"));
  }
  SUBCASE("field by field") {
    raw_http::Connection connection(server.address());
    REQUIRE(connection.send("POST / HTTP/1.1\r\nHost: localhost\r\n"));
    bool refused = false;
    for (int i = 0; i < 100 && !refused; ++i) {
      if (!connection.send("X-Field-" + std::to_string(i) + ": " + std::string(50, 'v') + "\r\n"))
        refused = true;
    }
    auto response = connection.read_response();
    REQUIRE(response);
    CHECK(response->status == 431);
  }
  CHECK(server.statistics().refused == 1);
  CHECK(server.statistics().requests == 0);
}

TEST_CASE("malformed requests get a 400 naming what was refused, then the connection closes") {
  micro::Runtime runtime(1);
  mh::Server server(runtime.executor(), {}, echo);
  server.listen("127.0.0.1:0");

  struct Case {
    const char* name;
    std::string bytes;
    std::string message;
  };
  const Case cases[] = {
      {"a field without a colon", "POST / HTTP/1.1\r\nHost: localhost\r\nNo Colon Here\r\n\r\n",
       "malformed request: bad field at line 3 \"No Colon Here\""},
      {"a bad request line", "POST\t/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
       "malformed request: bad method at line 1 \"POST\\x09/ HTTP/1.1\""},
      {"a bad version", "GET / HTTP/2.5\r\nHost: localhost\r\n\r\n",
       "malformed request: bad version at line 1 \"GET / HTTP/2.5\""},
      {"a bad Content-Length", "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 12x\r\n\r\n",
       "malformed request: bad Content-Length at line 3 \"Content-Length: 12x\""},
      {"no Host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
       "malformed request: no Host header (HTTP/1.1 requires one)"},
      {"an unknown transfer coding",
       "POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\r\n",
       "malformed request: Transfer-Encoding \"gzip\" does not end with chunked"},
      {"a broken chunk",
       "POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
       "malformed request body: bad chunk"},
  };
  for (const auto& item : cases) {
    CAPTURE(item.name);
    raw_http::Connection connection(server.address());
    REQUIRE(connection.send(item.bytes));
    auto response = connection.read_response();
    REQUIRE(response);
    CHECK(response->status == 400);
    CHECK(response->header("Content-Type") == "text/plain; charset=utf-8");
    CHECK(response->body == item.message + "\n");
    CHECK(connection.closed_by_peer());
  }
  CHECK(server.statistics().requests == 0);
}

TEST_CASE("an empty chunked body whose final chunk and trailer come in small pieces is read") {
  // Boost 1.81's chunk parser asserts when a put after "0\r\n" has fewer than 5 bytes
  // (boostorg/beast#2861): with assertions on, these pieces used to abort the server. The
  // pauses shape how the bytes arrive (one read each); nothing here waits on a condition.
  micro::Runtime runtime(1);
  mh::Server server(runtime.executor(), {}, echo);
  server.listen("127.0.0.1:0");
  raw_http::Connection connection(server.address());
  const std::string pieces[] = {
      "POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
      "0\r\n",
      "X",
      "-",
      "Trailer: v\r\n",
      "\r",
      "\n"};
  for (const auto& piece : pieces) {
    REQUIRE(connection.send(piece));
    std::this_thread::sleep_for(20ms);
  }
  auto response = connection.read_response();
  REQUIRE(response);
  CHECK(response->status == 200);
  CHECK(response->body.empty());
}

TEST_CASE("the refusal hook formats the server's own answers") {
  micro::Runtime runtime(1);
  mh::ServerOptions options;
  options.body_limit = 10;
  options.refusal = [](int status, std::string message) {
    mh::ServerResponse response;
    response.status = status;
    response.headers.push_back({"Content-Type", "application/json"});
    response.body = "{\"code\":" + std::to_string(status) + ",\"detail\":\"" + message + "\"}";
    return response;
  };
  mh::Server server(runtime.executor(), options, echo);
  server.listen("127.0.0.1:0");
  raw_http::Connection connection(server.address());
  REQUIRE(connection.send(raw_http::post(std::string(11, 'x'))));
  auto response = connection.read_response();
  REQUIRE(response);
  CHECK(response->status == 413);
  CHECK(response->header("Content-Type") == "application/json");
  CHECK(response->body ==
        "{\"code\":413,\"detail\":\"request body of 11 bytes exceeds the limit of 10 bytes\"}");
}

TEST_CASE("slow senders are cut off with 408; idle connections are closed") {
  micro::Runtime runtime(1);
  mh::ServerOptions options;
  options.header_timeout = 200ms;
  options.body_timeout = 200ms;
  options.idle_timeout = 300ms;
  std::atomic<int> handled{0};
  mh::Server server(runtime.executor(), options, [&](mh::ExchangePtr exchange) {
    ++handled;
    echo(exchange);
  });
  server.listen("127.0.0.1:0");

  SUBCASE("a head that never ends") {
    raw_http::Connection connection(server.address());
    REQUIRE(connection.send("POST / HTTP/1.1\r\nHost: local"));
    auto response = connection.read_response();
    REQUIRE(response);
    CHECK(response->status == 408);
    CHECK(contains(response->body, "the request head did not arrive within header_timeout 200ms"));
    CHECK(connection.closed_by_peer());
  }
  SUBCASE("a body that stops half way") {
    raw_http::Connection connection(server.address());
    REQUIRE(
        connection.send("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n12345"));
    auto response = connection.read_response();
    REQUIRE(response);
    CHECK(response->status == 408);
    CHECK(contains(response->body, "the request body did not arrive within body_timeout 200ms"));
  }
  SUBCASE("an idle kept-alive connection closes without an answer") {
    raw_http::Connection connection(server.address());
    REQUIRE(connection.send(raw_http::post("one")));
    auto response = connection.read_response();
    REQUIRE(response);
    CHECK(response->body == "one");
    CHECK(connection.closed_by_peer());  // within the read timeout of 5 s
    CHECK(server.statistics().refused == 0);
  }
  CHECK(handled.load() <= 1);
}

TEST_CASE("an exchange whose client goes before the answer is abandoned") {
  micro::Runtime runtime(2);
  Held held;
  std::atomic<int> abandoned{0};
  mh::Server server(runtime.executor(), {}, [&](mh::ExchangePtr exchange) {
    exchange->on_abandoned([&] { ++abandoned; });
    held.add(exchange);
  });
  server.listen("127.0.0.1:0");

  {
    raw_http::Connection connection(server.address());
    REQUIRE(connection.send(raw_http::post("going")));
    REQUIRE(wait_until([&] { return held.size() == 1; }));
  }  // closed before any answer
  REQUIRE(wait_until([&] { return abandoned.load() == 1; }));
  // Answering now does nothing; a hook registered now runs at once.
  CHECK_FALSE(held.at(0)->respond(text("late")));
  std::atomic<bool> ran_at_once{false};
  held.at(0)->on_abandoned([&] { ran_at_once = true; });
  CHECK(ran_at_once.load());
  REQUIRE(wait_until([&] { return server.statistics().connections_open == 0; }));
}

TEST_CASE("an exchange answered and written is never abandoned") {
  micro::Runtime runtime(1);
  std::atomic<int> abandoned{0};
  mh::Server server(runtime.executor(), {}, [&](mh::ExchangePtr exchange) {
    exchange->on_abandoned([&] { ++abandoned; });
    echo(exchange);
  });
  server.listen("127.0.0.1:0");
  {
    raw_http::Connection connection(server.address());
    REQUIRE(connection.send(raw_http::post("x")));
    REQUIRE(connection.read_response());
  }
  REQUIRE(wait_until([&] { return server.statistics().connections_open == 0; }));
  CHECK(abandoned.load() == 0);
}

TEST_CASE("close() writes the answers given, abandons the rest, and closes") {
  micro::Runtime runtime(2);
  Held held;
  std::atomic<int> abandoned{0};
  const std::string large(32 * 1024 * 1024, 'z');
  mh::Server server(runtime.executor(), {}, [&](mh::ExchangePtr exchange) {
    exchange->on_abandoned([&] { ++abandoned; });
    if (exchange->request().body == "large") {
      exchange->respond(text(large));
    } else {
      held.add(exchange);
    }
  });
  server.listen("127.0.0.1:0");

  raw_http::Connection answered(server.address());
  raw_http::Connection waiting(server.address());
  REQUIRE(answered.send(raw_http::post("large")));
  REQUIRE(waiting.send(raw_http::post("never answered")));
  REQUIRE(wait_until([&] { return held.size() == 1 && server.statistics().requests == 2; }));

  // The large answer cannot be in the socket buffers whole yet: it is still being written.
  server.close();
  auto response = answered.read_response();
  REQUIRE(response);
  CHECK(response->status == 200);
  CHECK(response->body.size() == large.size());
  CHECK(answered.closed_by_peer());

  CHECK(waiting.closed_by_peer());
  REQUIRE(wait_until([&] { return abandoned.load() == 1; }));
  CHECK_FALSE(held.at(0)->respond(text("too late")));
  // Nothing new is accepted.
  bool refused = false;
  try {
    raw_http::Connection late(server.address());
    refused = late.closed_by_peer();
  } catch (const std::exception&) {
    refused = true;
  }
  CHECK(refused);
}

TEST_CASE("HTTP/1.0 closes unless asked to keep alive; Connection: close is honoured") {
  micro::Runtime runtime(1);
  mh::Server server(runtime.executor(), {}, echo);
  server.listen("127.0.0.1:0");
  {
    raw_http::Connection connection(server.address());
    REQUIRE(connection.send("POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi"));
    auto response = connection.read_response();
    REQUIRE(response);
    CHECK(response->body == "hi");
    CHECK(response->header("Connection") == "close");
    CHECK(connection.closed_by_peer());
  }
  {
    raw_http::Connection connection(server.address());
    REQUIRE(
        connection.send("POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\na"
                        "POST / HTTP/1.0\r\nContent-Length: 1\r\n\r\nb"));
    auto first = connection.read_response();
    REQUIRE(first);
    CHECK(first->header("Connection") == "keep-alive");
    auto second = connection.read_response();
    REQUIRE(second);
    CHECK(second->body == "b");
    CHECK(connection.closed_by_peer());
  }
  {
    raw_http::Connection connection(server.address());
    REQUIRE(connection.send(raw_http::post("bye", "Connection: close\r\n")));
    auto response = connection.read_response();
    REQUIRE(response);
    CHECK(response->header("Connection") == "close");
    CHECK(connection.closed_by_peer());
  }
}

TEST_CASE("Expect: 100-continue gets a 100 before the body is sent") {
  micro::Runtime runtime(1);
  mh::Server server(runtime.executor(), {}, echo);
  server.listen("127.0.0.1:0");
  raw_http::Connection connection(server.address());
  REQUIRE(
      connection.send("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n"
                      "Expect: 100-continue\r\n\r\n"));
  auto interim = connection.read_response();
  REQUIRE(interim);
  CHECK(interim->status == 100);
  REQUIRE(connection.send("body"));
  auto response = connection.read_response();
  REQUIRE(response);
  CHECK(response->status == 200);
  CHECK(response->body == "body");
}

TEST_CASE("connections beyond max_connections are closed at once") {
  micro::Runtime runtime(1);
  mh::ServerOptions options;
  options.max_connections = 1;
  mh::Server server(runtime.executor(), options, echo);
  server.listen("127.0.0.1:0");
  raw_http::Connection first(server.address());
  REQUIRE(first.send(raw_http::post("1")));
  REQUIRE(first.read_response());
  raw_http::Connection second(server.address());
  CHECK(second.closed_by_peer());
  CHECK(server.statistics().connections_refused == 1);
  // The first is still served.
  REQUIRE(first.send(raw_http::post("2")));
  auto response = first.read_response();
  REQUIRE(response);
  CHECK(response->body == "2");
}

TEST_CASE("a handler that throws gets a 500 from the server; HEAD gets no body") {
  micro::Runtime runtime(1);
  mh::Server server(runtime.executor(), {}, [](mh::ExchangePtr exchange) {
    if (exchange->request().method == "HEAD") return echo(exchange);
    throw std::runtime_error("boom");
  });
  server.listen("127.0.0.1:0");
  raw_http::Connection connection(server.address());
  REQUIRE(connection.send(raw_http::post("x")));
  auto response = connection.read_response();
  REQUIRE(response);
  CHECK(response->status == 500);
  CHECK(contains(response->body, "the request handler threw"));
  // The connection goes on.
  REQUIRE(connection.send("HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  response = connection.read_response();  // Content-Length: 0 for an empty echo
  REQUIRE(response);
  CHECK(response->status == 200);
}

TEST_CASE("listen errors name the address and the cause") {
  micro::Runtime runtime(1);
  mh::Server server(runtime.executor(), {}, echo);
  auto detail_of = [&](const std::string& address) {
    try {
      mh::Server other(runtime.executor(), {}, echo);
      other.listen(address);
    } catch (const micro::Exception& e) {
      return e.error().detail;
    }
    return std::string();
  };
  CHECK(detail_of("localhost") == "http: cannot listen on \"localhost\": expected host:port");
  CHECK(detail_of("127.0.0.1:99999") ==
        "http: cannot listen on \"127.0.0.1:99999\": port \"99999\" is not a number from 0 to "
        "65535");
  server.listen("127.0.0.1:0");
  CHECK(contains(detail_of(server.address()), "cannot listen on \"" + server.address() + "\""));
}

TEST_CASE("an exchange its handler drops without answering gets a 500; later answers still go") {
  micro::Runtime runtime(1);
  mh::Server server(runtime.executor(), {}, [](mh::ExchangePtr exchange) {
    if (exchange->request().body != "drop") echo(exchange);
  });
  server.listen("127.0.0.1:0");
  raw_http::Connection connection(server.address());
  REQUIRE(connection.send(raw_http::post("drop") + raw_http::post("after")));
  auto dropped = connection.read_response();
  REQUIRE(dropped);
  CHECK(dropped->status == 500);
  CHECK(dropped->body == "internal error: the request was dropped without an answer\n");
  auto after = connection.read_response();
  REQUIRE(after);
  CHECK(after->status == 200);
  CHECK(after->body == "after");
}

// ---- Streamed answers (respond_streaming) -----------------------------------------------------

namespace {

// Reads a chunked answer piece by piece off a raw socket: the head, then each chunk as it comes.
class ChunkReader {
 public:
  explicit ChunkReader(const std::string& address) {
    auto colon = address.rfind(':');
    sockaddr_in peer{};
    peer.sin_family = AF_INET;
    peer.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
    ::inet_pton(AF_INET, address.substr(0, colon).c_str(), &peer.sin_addr);
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&peer), sizeof peer) == 0);
    timeval limit{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  }
  ~ChunkReader() { close(); }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  bool send(const std::string& bytes) {
    return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(bytes.size());
  }
  // The head up to its blank line; "" when the connection ended first.
  std::string head() {
    std::size_t end;
    while ((end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) return {};
    }
    std::string head = buffer_.substr(0, end + 4);
    buffer_.erase(0, end + 4);
    return head;
  }
  // The next chunk's data ("" for the last chunk); nullopt when the connection ended first or
  // the framing is not a chunk's.
  std::optional<std::string> chunk() {
    std::size_t line_end;
    while ((line_end = buffer_.find("\r\n")) == std::string::npos) {
      if (!fill()) return std::nullopt;
    }
    std::size_t size = 0;
    auto [end, error] = std::from_chars(buffer_.data(), buffer_.data() + line_end, size, 16);
    if (error != std::errc() || end != buffer_.data() + line_end) {
      INFO("not a chunk: " << buffer_.substr(0, 40));
      return std::nullopt;
    }
    while (buffer_.size() < line_end + 2 + size + 2) {
      if (!fill()) return std::nullopt;
    }
    std::string data = buffer_.substr(line_end + 2, size);
    if (buffer_.compare(line_end + 2 + size, 2, "\r\n") != 0) return std::nullopt;
    buffer_.erase(0, line_end + 2 + size + 2);
    return data;
  }
  // Whether the server closed with nothing more to read.
  bool ended() {
    if (!buffer_.empty()) return false;
    return !fill();
  }
  std::string rest() { return std::move(buffer_); }

 private:
  bool fill() {
    char piece[65536];
    auto n = ::recv(fd_, piece, sizeof piece, 0);
    if (n <= 0) return false;
    buffer_.append(piece, static_cast<std::size_t>(n));
    return true;
  }
  int fd_ = -1;
  std::string buffer_;
};

// Keeps the writers the handler made.
struct Writers {
  std::mutex mutex;
  std::vector<mh::ResponseWriterPtr> writers;
  std::vector<mh::ExchangePtr> exchanges;
  void add(mh::ExchangePtr exchange, mh::ResponseWriterPtr writer) {
    std::lock_guard lock(mutex);
    exchanges.push_back(std::move(exchange));
    writers.push_back(std::move(writer));
  }
  std::size_t size() {
    std::lock_guard lock(mutex);
    return writers.size();
  }
  mh::ResponseWriterPtr at(std::size_t i) {
    std::lock_guard lock(mutex);
    return writers.at(i);
  }
};

mh::ServerResponse stream_head() {
  mh::ServerResponse head;
  head.headers.push_back({"Content-Type", "text/event-stream"});
  head.headers.push_back({"Content-Length", "99"});  // the server's to set: dropped
  return head;
}

std::string get_request(const std::string& target = "/stream") {
  return "GET " + target + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
}

}  // namespace

TEST_CASE(
    "a streamed answer goes out chunk by chunk before it finishes, and keeps the connection") {
  micro::Runtime runtime(2);
  Writers writers;
  mh::Server server(runtime.executor(), {}, [&](mh::ExchangePtr exchange) {
    if (exchange->request().target == "/plain") return echo(exchange);
    auto writer = exchange->respond_streaming(stream_head());
    REQUIRE(writer);
    CHECK_FALSE(exchange->respond(text("too late")));  // the stream is the answer
    CHECK(exchange->respond_streaming(stream_head()) == nullptr);
    writers.add(exchange, std::move(writer));
  });
  server.listen("127.0.0.1:0");

  ChunkReader reader(server.address());
  REQUIRE(reader.send(get_request()));
  REQUIRE(wait_until([&] { return writers.size() == 1; }));
  auto writer = writers.at(0);
  CHECK(writer->write("data: one\n\n"));
  std::string head = reader.head();
  CHECK(contains(head, "HTTP/1.1 200 OK\r\n"));
  CHECK(contains(head, "Transfer-Encoding: chunked\r\n"));
  CHECK(contains(head, "Content-Type: text/event-stream\r\n"));
  CHECK_FALSE(contains(head, "Content-Length"));
  CHECK_FALSE(contains(head, "Connection: close"));
  // The first chunk arrives while the stream is still open.
  CHECK(reader.chunk() == std::optional<std::string>("data: one\n\n"));
  CHECK(writer->open());
  CHECK(writer->write(""));  // skipped, not the last chunk
  CHECK(writer->write("data: two\n\n"));
  CHECK(reader.chunk() == std::optional<std::string>("data: two\n\n"));
  CHECK(writer->finish());
  CHECK_FALSE(writer->finish());
  CHECK_FALSE(writer->write("after"));
  CHECK_FALSE(writer->open());
  CHECK(reader.chunk() == std::optional<std::string>(""));  // the last chunk
  // Kept alive: the next request on the same connection is answered.
  REQUIRE(reader.send(raw_http::post("again", {}, "/plain")));
  std::string next = reader.head();
  CHECK(contains(next, "Content-Length: 5\r\n"));
  REQUIRE(wait_until([&] { return server.statistics().requests == 2; }));
  CHECK(server.statistics().connections_accepted == 1);
}

TEST_CASE("a writer dropped unfinished finishes its stream; written from another thread") {
  micro::Runtime runtime(2);
  mh::Server server(runtime.executor(), {}, [&](mh::ExchangePtr exchange) {
    auto writer = exchange->respond_streaming(stream_head());
    std::thread([writer = std::move(writer)] {
      for (int i = 0; i < 3; ++i) writer->write("piece " + std::to_string(i) + "\n");
    }).detach();
  });
  server.listen("127.0.0.1:0");
  ChunkReader reader(server.address());
  REQUIRE(reader.send(get_request()));
  CHECK(contains(reader.head(), "Transfer-Encoding: chunked"));
  std::string body;
  for (;;) {
    auto chunk = reader.chunk();
    REQUIRE(chunk);
    if (chunk->empty()) break;
    body += *chunk;
  }
  CHECK(body == "piece 0\npiece 1\npiece 2\n");
}

TEST_CASE("pipelined answers behind a stream wait until it finishes") {
  micro::Runtime runtime(2);
  Writers writers;
  Held plain;
  mh::Server server(runtime.executor(), {}, [&](mh::ExchangePtr exchange) {
    if (exchange->request().target == "/stream") {
      auto writer = exchange->respond_streaming(stream_head());
      writers.add(exchange, std::move(writer));
    } else {
      plain.add(exchange);
    }
  });
  server.listen("127.0.0.1:0");

  ChunkReader reader(server.address());
  // A stream, then a plain request, in one write.
  REQUIRE(reader.send(get_request() + raw_http::post("second", {}, "/plain")));
  REQUIRE(wait_until([&] { return writers.size() == 1 && plain.size() == 1; }));
  // The later one is answered first; the stream writes after it. Any early write of the plain
  // answer would land inside the chunked body and break its framing.
  CHECK(plain.at(0)->respond(text("answer to second")));
  auto writer = writers.at(0);
  CHECK(writer->write("a"));
  CHECK(contains(reader.head(), "Transfer-Encoding: chunked"));
  CHECK(reader.chunk() == std::optional<std::string>("a"));
  CHECK(writer->write("b"));
  CHECK(reader.chunk() == std::optional<std::string>("b"));
  writer->finish();
  CHECK(reader.chunk() == std::optional<std::string>(""));
  std::string second = reader.head();
  CHECK(contains(second, "HTTP/1.1 200 OK"));
  CHECK(contains(second, "Content-Length: 16"));
  std::string body = reader.rest();
  while (body.size() < 16) {
    REQUIRE_FALSE(reader.ended());
    body += reader.rest();
  }
  CHECK(body == "answer to second");
}

TEST_CASE("a slow reader is bounded: writes past stream_buffer_limit are refused until drained") {
  micro::Runtime runtime(2);
  mh::ServerOptions options;
  options.stream_buffer_limit = 64 * 1024;
  Writers writers;
  mh::Server server(runtime.executor(), options, [&](mh::ExchangePtr exchange) {
    writers.add(exchange, exchange->respond_streaming(stream_head()));
  });
  server.listen("127.0.0.1:0");

  ChunkReader reader(server.address());
  REQUIRE(reader.send(get_request()));
  REQUIRE(wait_until([&] { return writers.size() == 1; }));
  auto writer = writers.at(0);
  const std::string piece(16 * 1024, 'x');
  // The client reads nothing: once the socket buffers are full, the writer is refused.
  std::size_t accepted = 0;
  bool refused = false;
  for (int i = 0; i < 20000 && !refused; ++i) {
    if (writer->write(piece)) {
      accepted += piece.size();
    } else {
      refused = true;
    }
  }
  REQUIRE(refused);
  CHECK(writer->buffered() <= options.stream_buffer_limit);
  CHECK(writer->open());  // refused, not ended
  std::atomic<bool> drained{false};
  writer->on_drained([&] { drained = true; });
  // The client reads; everything accepted arrives, and the drain is told.
  CHECK(contains(reader.head(), "Transfer-Encoding: chunked"));
  std::size_t received = 0;
  while (received < accepted) {
    auto chunk = reader.chunk();
    REQUIRE(chunk);
    REQUIRE_FALSE(chunk->empty());
    received += chunk->size();
  }
  CHECK(received == accepted);
  REQUIRE(wait_until([&] { return drained.load(); }));
  CHECK(writer->buffered() == 0);
  CHECK(writer->write(piece));
  writer->finish();
  CHECK(reader.chunk() == std::optional<std::string>(piece));
  CHECK(reader.chunk() == std::optional<std::string>(""));
}

TEST_CASE("a stream whose client goes mid-stream is abandoned; close() ends open streams") {
  micro::Runtime runtime(2);
  Writers writers;
  std::atomic<int> abandoned{0};
  mh::Server server(runtime.executor(), {}, [&](mh::ExchangePtr exchange) {
    exchange->on_abandoned([&] { ++abandoned; });
    writers.add(exchange, exchange->respond_streaming(stream_head()));
  });
  server.listen("127.0.0.1:0");

  SUBCASE("the client closes") {
    {
      ChunkReader reader(server.address());
      REQUIRE(reader.send(get_request()));
      REQUIRE(wait_until([&] { return writers.size() == 1; }));
      CHECK(writers.at(0)->write("first"));
      CHECK(contains(reader.head(), "chunked"));
      CHECK(reader.chunk() == std::optional<std::string>("first"));
    }  // gone mid-stream
    REQUIRE(wait_until([&] { return abandoned.load() == 1; }));
    CHECK_FALSE(writers.at(0)->open());
    CHECK_FALSE(writers.at(0)->write("to nobody"));
    CHECK_FALSE(writers.at(0)->finish());
    REQUIRE(wait_until([&] { return server.statistics().connections_open == 0; }));
  }
  SUBCASE("the server closes") {
    ChunkReader reader(server.address());
    REQUIRE(reader.send(get_request()));
    REQUIRE(wait_until([&] { return writers.size() == 1; }));
    CHECK(writers.at(0)->write("first"));
    CHECK(contains(reader.head(), "chunked"));
    CHECK(reader.chunk() == std::optional<std::string>("first"));
    server.close();
    REQUIRE(wait_until([&] { return abandoned.load() == 1; }));
    CHECK_FALSE(writers.at(0)->write("after close"));
    // The connection ends without the last chunk: the client sees the answer cut short.
    CHECK(reader.chunk() == std::nullopt);
    REQUIRE(wait_until([&] { return server.statistics().connections_open == 0; }));
  }
}

TEST_CASE("a streamed answer to HTTP/1.0 is sent raw and ends with the close; HEAD gets no body") {
  micro::Runtime runtime(2);
  mh::Server server(runtime.executor(), {}, [&](mh::ExchangePtr exchange) {
    auto writer = exchange->respond_streaming(stream_head());
    writer->write("raw ");
    writer->write("body");
  });  // dropped: finished
  server.listen("127.0.0.1:0");
  SUBCASE("HTTP/1.0") {
    raw_http::Connection connection(server.address());
    REQUIRE(connection.send("GET /stream HTTP/1.0\r\n\r\n"));
    auto response = connection.read_response();  // read to the close
    REQUIRE(response);
    CHECK_FALSE(response->has_header("Transfer-Encoding"));
    CHECK(response->header("Connection") == "close");
    CHECK(response->body == "raw body");
  }
  SUBCASE("HEAD") {
    ChunkReader reader(server.address());
    REQUIRE(
        reader.send("HEAD /stream HTTP/1.1\r\nHost: localhost\r\n\r\n" + raw_http::post("next")));
    std::string head = reader.head();
    CHECK(contains(head, "HTTP/1.1 200 OK"));
    CHECK(contains(head, "Transfer-Encoding: chunked"));  // as a GET's would say
    // Nothing of the body came: the next answer's head follows at once.
    CHECK(contains(reader.head(), "HTTP/1.1 200 OK"));
  }
}
