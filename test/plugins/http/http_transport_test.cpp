// test/plugins/http/http_transport_test.cpp — the http transport plugin, loaded through the
// PluginLoader: requests written by hand from the Go-Micro format (plugins/http/README.md) with
// Go's canonical header casing, older Go-Micro's Micro-Method, X-Micro-* synonyms, header names
// in any case, the error JSON, Timeout as the handler's deadline, metadata both ways, the
// refusals with their messages, a peer closing mid-call, cancellation reaching the handler, and
// the node's metadata in the registry.
#include <doctest/doctest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include <micro/plugin_loader.hpp>
#include <micro/registry.hpp>
#include <micro/runtime.hpp>
#include <micro/server.hpp>
#include <micro/transport.hpp>

#include "http/raw_http_client.hpp"
#include "support/wait.hpp"

using namespace std::chrono_literals;
using test_support::wait_until;

namespace {

struct Greeting {
  std::string name;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Greeting, name)

std::shared_ptr<micro::Transport> make_http(
    micro::Runtime& runtime, const std::vector<std::pair<std::string, std::string>>& options = {}) {
  return micro::PluginLoader::instance().create<micro::Transport>("http", "", options,
                                                                  runtime.executor());
}

// A handler that sees the request and answers through a ResponseHandler.
template <class Handler>
micro::CallHandler unary(Handler handler) {
  return [handler = std::move(handler)](micro::ServerCallPtr call) mutable {
    micro::Request& request = call->request();
    handler(request, [call](micro::Response&& response) { call->respond(std::move(response)); });
  };
}

micro::Response call_and_wait(micro::Transport& transport, const std::string& address,
                              const micro::Request& request,
                              std::chrono::milliseconds limit = 10s) {
  auto promise = std::make_shared<std::promise<micro::Response>>();
  auto future = promise->get_future();
  transport.async_call(
      address, std::make_shared<const micro::Request>(request),
      [promise](micro::Response&& response) { promise->set_value(std::move(response)); });
  REQUIRE_MESSAGE(future.wait_for(limit) == std::future_status::ready,
                  "no response within the time limit");
  return future.get();
}

micro::Request make_request(std::string body, std::string endpoint = "Greeter.Hello") {
  micro::Request request;
  request.service = "greeter";
  request.endpoint = std::move(endpoint);
  request.content_type = "application/json";
  request.body = std::move(body);
  return request;
}

// A request as Go-Micro's http transport writes it (Go canonicalises every header name).
std::string go_request(const std::string& address, const std::string& body,
                       const std::string& extra = {}) {
  return "POST / HTTP/1.1\r\n"
         "Host: " +
         address +
         "\r\n"
         "User-Agent: Go-http-client/1.1\r\n"
         "Content-Length: " +
         std::to_string(body.size()) +
         "\r\n"
         "Accept: application/json\r\n"
         "Content-Type: application/json\r\n"
         "Micro-Endpoint: Greeter.Hello\r\n"
         "Micro-Id: 7\r\n"
         "Micro-Method: Greeter.Hello\r\n"
         "Micro-Service: greeter\r\n"
         "Timeout: 5000000000\r\n" +
         extra + "Accept-Encoding: gzip\r\n\r\n" + body;
}

// What a handler saw, copied out under a lock.
struct Seen {
  std::mutex mutex;
  std::optional<micro::Request> request;
  micro::Context::Clock::time_point arrived;

  void record(const micro::Request& incoming) {
    std::lock_guard lock(mutex);
    request.emplace();
    request->service = incoming.service;
    request->endpoint = incoming.endpoint;
    request->content_type = incoming.content_type;
    request->body = incoming.body;
    request->context.metadata() = incoming.context.metadata();
    request->context.set_deadline(incoming.context.deadline());
    arrived = micro::Context::Clock::now();
  }
};

micro::Error micro_error(const raw_http::Response& response) {
  INFO(response.body);
  REQUIRE(response.has_header("Micro-Error"));
  return micro::Error::from_json(response.header("Micro-Error"));
}

// Sends `bytes` on a new connection and reads one response.
raw_http::Response ask_raw(const std::string& address, const std::string& bytes) {
  raw_http::Connection connection(address);
  REQUIRE(connection.send(bytes));
  auto response = connection.read_response();
  REQUIRE(response);
  return *response;
}

}  // namespace

TEST_CASE("a request written by hand in Go-Micro's format is answered in it") {
  micro::Runtime runtime(2);
  auto transport = make_http(runtime);
  Seen seen;
  auto listener = transport->listen(
      "127.0.0.1:0", unary([&](micro::Request& request, micro::ResponseHandler respond) {
        seen.record(request);
        micro::Response response;
        response.content_type = "application/json";
        response.body = "{\"msg\":\"Hello Ada\"}";
        response.metadata.set("X-Served-By", "test");
        respond(std::move(response));
      }));
  const auto address = listener->address();
  auto response = ask_raw(
      address, go_request(address, "{\"name\":\"Ada\"}",
                          "Traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
                          "X-Request-Id: abc\r\n"));
  CHECK(response.status == 200);
  CHECK(response.body == "{\"msg\":\"Hello Ada\"}");
  CHECK(response.header("Content-Type") == "application/json");
  CHECK(response.header("Micro-Id") == "7");
  CHECK(response.header("X-Served-By") == "test");
  CHECK_FALSE(response.has_header("Micro-Error"));

  std::lock_guard lock(seen.mutex);
  REQUIRE(seen.request);
  const auto& request = *seen.request;
  CHECK(request.service == "greeter");
  CHECK(request.endpoint == "Greeter.Hello");
  CHECK(request.content_type == "application/json");
  CHECK(request.body == "{\"name\":\"Ada\"}");
  // Timeout: 5 s in nanoseconds, re-based on the server's clock.
  REQUIRE(request.context.has_deadline());
  const auto left = request.context.deadline() - seen.arrived;
  CHECK(left <= 5s);
  CHECK(left > 4s);
  // Every other header is metadata, found whatever its case; the call's own are not.
  const auto& metadata = request.context.metadata();
  CHECK(metadata.get("traceparent") == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  CHECK(metadata.get("x-request-id") == "abc");
  CHECK(metadata.get("User-Agent") == "Go-http-client/1.1");
  CHECK(metadata.get("Accept-Encoding") == "gzip");
  for (const char* own : {"Micro-Service", "Micro-Endpoint", "Micro-Method", "Micro-Id", "Timeout",
                          "Content-Type", "Accept", "Host", "Content-Length"}) {
    CAPTURE(own);
    CHECK_FALSE(metadata.contains(own));
  }
  CHECK(metadata.get("Local") == address);
  CHECK(metadata.get("Remote").rfind("127.0.0.1:", 0) == 0);
}

TEST_CASE("older and other spellings: Micro-Method alone, X-Micro-*, names in any case") {
  micro::Runtime runtime(2);
  auto transport = make_http(runtime);
  Seen seen;
  auto listener = transport->listen(
      "127.0.0.1:0", unary([&](micro::Request& request, micro::ResponseHandler respond) {
        seen.record(request);
        respond(micro::Response{});
      }));
  const auto address = listener->address();
  auto ask = [&](const std::string& headers) {
    auto response = ask_raw(address, "POST / HTTP/1.1\r\nHost: " + address +
                                         "\r\nContent-Length: 2\r\n" + headers + "\r\n{}");
    CHECK(response.status == 200);
    CHECK_FALSE(response.has_header("Micro-Error"));
    std::lock_guard lock(seen.mutex);
    REQUIRE(seen.request);
    auto request = std::move(*seen.request);
    seen.request.reset();
    return request;
  };

  auto older = ask("Micro-Service: greeter\r\nMicro-Method: Greeter.Old\r\n");
  CHECK(older.endpoint == "Greeter.Old");
  CHECK(older.content_type == "");
  CHECK_FALSE(older.context.has_deadline());

  auto prefixed =
      ask("X-Micro-Service: greeter\r\nX-Micro-Endpoint: Greeter.Hello\r\n"
          "X-Micro-Id: 9\r\nContent-Type: application/msgpack\r\n");
  CHECK(prefixed.service == "greeter");
  CHECK(prefixed.endpoint == "Greeter.Hello");
  CHECK(prefixed.content_type == "application/msgpack");
  CHECK_FALSE(prefixed.context.metadata().contains("X-Micro-Id"));

  auto cased =
      ask("micro-service: greeter\r\nMICRO-ENDPOINT: Greeter.Hello\r\n"
          "timeout: 250000000\r\ntraceparent: lower\r\n");
  CHECK(cased.service == "greeter");
  CHECK(cased.endpoint == "Greeter.Hello");
  CHECK(cased.context.has_deadline());
  // Metadata keeps the case the header came with.
  std::map<std::string, std::string> keys(cased.context.metadata().begin(),
                                          cased.context.metadata().end());
  CHECK(keys.count("traceparent") == 1);

  // Micro-Endpoint wins over Micro-Method when both are there.
  auto both = ask("Micro-Service: s\r\nMicro-Method: Old.Name\r\nMicro-Endpoint: New.Name\r\n");
  CHECK(both.endpoint == "New.Name");
}

TEST_CASE("duplicated headers become one metadata entry joined with commas") {
  micro::Runtime runtime(1);
  auto transport = make_http(runtime);
  Seen seen;
  auto listener = transport->listen(
      "127.0.0.1:0", unary([&](micro::Request& request, micro::ResponseHandler respond) {
        seen.record(request);
        respond(micro::Response{});
      }));
  ask_raw(listener->address(),
          go_request(listener->address(), "{}",
                     "Tracestate: a=1\r\ntracestate: b=2\r\n"
                     "Traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
                     "Traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203332-01\r\n"));
  std::lock_guard lock(seen.mutex);
  REQUIRE(seen.request);
  const auto& metadata = seen.request->context.metadata();
  CHECK(metadata.get("tracestate") == "a=1,b=2");
  // Two traceparents joined are no valid traceparent: W3C Trace Context then starts afresh.
  CHECK(metadata.get("traceparent") ==
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01,"
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203332-01");
}

TEST_CASE("errors are 200 with Go-Micro's error JSON in Micro-Error") {
  micro::Runtime runtime(1);
  auto transport = make_http(runtime);
  auto listener = transport->listen(
      "127.0.0.1:0", unary([](micro::Request&, micro::ResponseHandler respond) {
        respond(micro::Response::failure(micro::Error("greeter", 404, "no greeting for Bob")));
      }));
  auto response = ask_raw(listener->address(), go_request(listener->address(), "{}"));
  CHECK(response.status == 200);
  CHECK(response.body == "");
  auto json = nlohmann::json::parse(response.header("Micro-Error"));
  CHECK(json == nlohmann::json{{"id", "greeter"},
                               {"code", 404},
                               {"detail", "no greeting for Bob"},
                               {"status", "Not Found"}});

  // Through the transport's own client, the same error arrives as the call's.
  auto answer = call_and_wait(*transport, listener->address(), make_request("{}"));
  REQUIRE(answer.error);
  CHECK(*answer.error == micro::Error("greeter", 404, "no greeting for Bob"));
}

TEST_CASE("bad input gets a clear error in Go-Micro's error JSON") {
  micro::Runtime runtime(1);
  std::atomic<int> handled{0};
  auto transport = make_http(runtime, {{"max_body", "1024"}, {"max_header", "2048"}});
  auto listener =
      transport->listen("127.0.0.1:0", unary([&](micro::Request&, micro::ResponseHandler respond) {
                          ++handled;
                          respond(micro::Response{});
                        }));
  const auto address = listener->address();
  const std::string host = "Host: " + address + "\r\n";

  struct Case {
    const char* name;
    std::string bytes;
    int status;  // of the HTTP answer
    int code;    // of the error
    std::string detail;
  };
  const Case cases[] = {
      {"no Micro-Service", "POST / HTTP/1.1\r\n" + host + "Micro-Endpoint: A.B\r\n\r\n", 200, 400,
       "http: missing header Micro-Service (the service called)"},
      {"no endpoint", "POST / HTTP/1.1\r\n" + host + "Micro-Service: s\r\n\r\n", 200, 400,
       "http: missing header Micro-Endpoint (or Micro-Method): the endpoint called, e.g. "
       "Greeter.Hello"},
      {"a Timeout with a unit",
       "POST / HTTP/1.1\r\n" + host +
           "Micro-Service: s\r\nMicro-Endpoint: A.B\r\nTimeout: 5s\r\n\r\n",
       200, 400, "http: header Timeout \"5s\" is not a whole number of nanoseconds"},
      {"a negative Timeout",
       "POST / HTTP/1.1\r\n" + host +
           "Micro-Service: s\r\nMicro-Endpoint: A.B\r\nTimeout: -1\r\n\r\n",
       200, 400, "http: header Timeout \"-1\" is not a whole number of nanoseconds"},
      {"two Timeouts",
       "POST / HTTP/1.1\r\n" + host +
           "Micro-Service: s\r\nMicro-Endpoint: A.B\r\nTimeout: 1\r\nTimeout: 2\r\n\r\n",
       200, 400, "http: header Timeout appears more than once"},
      {"GET", "GET / HTTP/1.1\r\n" + host + "\r\n", 405, 405,
       "http: method GET is not allowed; calls are POST /"},
      {"a gateway path", "POST /greeter/Greeter.Hello HTTP/1.1\r\n" + host + "\r\n", 404, 404,
       "http: no such path \"/greeter/Greeter.Hello\"; calls are POST / with the Micro-Service "
       "and Micro-Endpoint headers (micro api serves POST /<service>/<endpoint>)"},
      {"a body over max_body",
       "POST / HTTP/1.1\r\n" + host + "Micro-Service: s\r\nContent-Length: 1048576\r\n\r\n", 413,
       413, "http: request body of 1048576 bytes exceeds the limit of 1024 bytes"},
      {"a head over max_header",
       "POST / HTTP/1.1\r\n" + host + "X-Padding: " + std::string(3000, 'p') + "\r\n\r\n", 431, 431,
       "http: request head exceeds the limit of 2048 bytes"},
      {"a malformed head", "POST / HTTP/1.1\r\n" + host + "Micro Service: s\r\n\r\n", 400, 400,
       "http: malformed request: bad field at line 3 \"Micro Service: s\""},
  };
  for (const auto& item : cases) {
    CAPTURE(item.name);
    auto response = ask_raw(address, item.bytes);
    CHECK(response.status == item.status);
    auto error = micro_error(response);
    CHECK(error.id == "micro.server");
    CHECK(error.code == item.code);
    CHECK(error.detail == item.detail);
    CHECK(error.status == micro::status_text(item.code));
    if (item.status != 200) {
      // Callers that are not Go-Micro read the same JSON from the body.
      CHECK(response.header("Content-Type") == "application/json");
      CHECK(micro::Error::from_json(response.body) == error);
    }
  }
  CHECK(handled.load() == 0);
}

TEST_CASE("with the core Server: unknown endpoints, undecodable bodies, passed deadlines") {
  micro::Runtime runtime(2);
  auto& loader = micro::PluginLoader::instance();
  auto registry = loader.create<micro::Registry>("memory", "", {}, runtime.executor());
  auto transport = make_http(runtime);
  micro::ServerOptions options;
  options.name = "greeter";
  options.metadata = {{"protocol", "http"}, {"team", "core"}};
  micro::Server server(options, transport, registry, nullptr, micro::WrapperChains{});
  server.handle("Greeter.Hello", [](micro::Context&, const Greeting& greeting) {
    return Greeting{"Hello " + greeting.name};
  });
  server.start();
  const auto address = server.address();

  SUBCASE("a typed handler answers JSON") {
    auto response = ask_raw(address, go_request(address, "{\"name\":\"Ada\"}"));
    CHECK(response.status == 200);
    CHECK(nlohmann::json::parse(response.body) == nlohmann::json{{"name", "Hello Ada"}});
  }
  SUBCASE("an unknown endpoint is a 404") {
    auto bytes = go_request(address, "{}");
    bytes.replace(bytes.find("Micro-Endpoint: Greeter.Hello"), 29, "Micro-Endpoint: Greeter.Helo");
    auto error = micro_error(ask_raw(address, bytes));
    CHECK(error.code == 404);
    CHECK(error.detail == "service greeter has no endpoint 'Greeter.Helo'; it has: Greeter.Hello");
  }
  SUBCASE("a body that is not JSON is a 400") {
    auto error = micro_error(ask_raw(address, go_request(address, "{\"name\":")));
    CHECK(error.code == 400);
    CHECK(error.detail.rfind("cannot decode application/json body: ", 0) == 0);
  }
  SUBCASE("a Timeout already passed on arrival is a 408") {
    auto bytes = go_request(address, "{}");
    bytes.replace(bytes.find("Timeout: 5000000000"), 19, "Timeout: 1");
    auto error = micro_error(ask_raw(address, bytes));
    CHECK(error.code == 408);
    CHECK(error.detail == "deadline passed before Greeter.Hello started");
  }
  SUBCASE("the node registers protocol=mucp and transport=http") {
    auto services = registry->get_service("greeter");
    REQUIRE(services.size() == 1);
    REQUIRE(services[0].nodes.size() == 1);
    const auto& metadata = services[0].nodes[0].metadata;
    CHECK(metadata.at("protocol") == "mucp");  // the transport's fact wins over the option
    CHECK(metadata.at("transport") == "http");
    CHECK(metadata.at("team") == "core");
    CHECK(services[0].nodes[0].address == address);
  }
  server.stop();
}

TEST_CASE("the transport's client and server: metadata both ways, keys as they were sent") {
  micro::Runtime runtime(2);
  auto transport = make_http(runtime);
  Seen seen;
  auto listener = transport->listen(
      "127.0.0.1:0", unary([&](micro::Request& request, micro::ResponseHandler respond) {
        seen.record(request);
        micro::Response response;
        response.content_type = "application/octet-stream";
        response.body = std::string("binary\0answer", 13);
        for (const auto& [key, value] : request.context.metadata())
          response.metadata.set(key, value);
        respond(std::move(response));
      }));
  auto request = make_request(std::string("binary\0body\xff", 12));
  request.content_type = "application/msgpack";
  request.context.metadata().set("X-Trace-Id", "abc123");
  request.context.metadata().set("lowercase-key", "v");
  request.context.metadata().set("MiXeD-CaSe", "Value With Spaces");
  request.context.metadata().set("Empty", "");
  request.context.metadata().set("Micro-Service", "not the service");  // the call's own wins
  request.context.set_timeout(3s);

  auto response = call_and_wait(*transport, listener->address(), request);
  REQUIRE_FALSE(response.error);
  CHECK(response.content_type == "application/octet-stream");
  CHECK(response.body == std::string("binary\0answer", 13));
  std::map<std::string, std::string> returned(response.metadata.begin(), response.metadata.end());
  CHECK(returned.at("X-Trace-Id") == "abc123");
  CHECK(returned.at("lowercase-key") == "v");
  CHECK(returned.at("MiXeD-CaSe") == "Value With Spaces");
  CHECK(returned.at("Empty") == "");
  CHECK(returned.count("Micro-Id") == 0);

  std::lock_guard lock(seen.mutex);
  REQUIRE(seen.request);
  CHECK(seen.request->service == "greeter");
  CHECK(seen.request->content_type == "application/msgpack");
  CHECK(seen.request->body == std::string("binary\0body\xff", 12));
  CHECK(seen.request->context.has_deadline());
  CHECK(seen.request->context.deadline() - seen.arrived <= 3s);
}

TEST_CASE("the client refuses what HTTP cannot carry, before sending anything") {
  micro::Runtime runtime(1);
  auto transport = make_http(runtime, {{"max_body", "16"}});
  std::atomic<int> handled{0};
  auto listener =
      transport->listen("127.0.0.1:0", unary([&](micro::Request&, micro::ResponseHandler respond) {
                          ++handled;
                          micro::Response response;
                          response.body = std::string(100, 'x');  // over max_body
                          respond(std::move(response));
                        }));
  const auto address = listener->address();

  auto bad_key = make_request("{}");
  bad_key.context.metadata().set("two words", "x");
  auto response = call_and_wait(*transport, address, bad_key);
  REQUIRE(response.error);
  CHECK(response.error->code == 400);
  CHECK(response.error->detail ==
        "http: metadata key \"two words\" cannot be sent as an HTTP "
        "header name; not sent to " +
            address);

  auto bad_value = make_request("{}");
  bad_value.context.metadata().set("Key", "line\r\nInjected: yes");
  response = call_and_wait(*transport, address, bad_value);
  REQUIRE(response.error);
  CHECK(response.error->code == 400);

  response = call_and_wait(*transport, address, make_request(std::string(17, 'b')));
  REQUIRE(response.error);
  CHECK(response.error->code == 413);
  CHECK(response.error->detail ==
        "http: request body of 17 bytes exceeds max_body 16; not sent to " + address);
  CHECK(handled.load() == 0);

  // A handler's answer over max_body becomes a 413.
  response = call_and_wait(*transport, address, make_request("{}"));
  REQUIRE(response.error);
  CHECK(response.error->code == 413);
  CHECK(response.error->detail == "http: response body of 100 bytes exceeds max_body 16");

  response = call_and_wait(*transport, "no-port", make_request("{}"));
  REQUIRE(response.error);
  CHECK(response.error->detail == "http: node address \"no-port\" is not host:port");
}

TEST_CASE("deadlines: the client gives up with 408; a node that is gone is a 503 naming it") {
  micro::Runtime runtime(2);
  auto transport = make_http(runtime);
  std::mutex held_mutex;
  std::vector<micro::ServerCallPtr> held;
  auto listener = transport->listen("127.0.0.1:0", [&](micro::ServerCallPtr call) {
    std::lock_guard lock(held_mutex);
    held.push_back(std::move(call));  // never answered
  });
  auto request = make_request("{}");
  request.context.set_timeout(150ms);
  auto response = call_and_wait(*transport, listener->address(), request);
  REQUIRE(response.error);
  CHECK(response.error->code == 408);
  CHECK(response.error->detail.find(listener->address()) != std::string::npos);

  // Gone: nothing listens there any more.
  const auto address = listener->address();
  listener->close();
  listener.reset();
  response = call_and_wait(*transport, address, make_request("{}"));
  REQUIRE(response.error);
  CHECK(response.error->code == 503);
  CHECK(response.error->id == "micro.client");
  // Refused, or (the listener closes asynchronously) accepted and closed: either names the node.
  CHECK(response.error->detail.find(address) != std::string::npos);
  // Refused: a port that was free a moment ago.
  int probe = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in local{};
  local.sin_family = AF_INET;
  local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(probe, reinterpret_cast<sockaddr*>(&local), sizeof local) == 0);
  socklen_t size = sizeof local;
  ::getsockname(probe, reinterpret_cast<sockaddr*>(&local), &size);
  ::close(probe);
  const std::string free_address = "127.0.0.1:" + std::to_string(ntohs(local.sin_port));
  response = call_and_wait(*transport, free_address, make_request("{}"));
  REQUIRE(response.error);
  CHECK(response.error->code == 503);
  CHECK(response.error->detail == "http: POST http://" + free_address + "/: cannot connect to " +
                                      free_address + ": Connection refused");
  std::lock_guard lock(held_mutex);
  held.clear();
}

TEST_CASE("a peer that closes mid-call is a 503 naming the node") {
  micro::Runtime runtime(1);
  auto transport = make_http(runtime);
  // A server that reads the request's first bytes and closes without answering.
  int listening = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in local{};
  local.sin_family = AF_INET;
  local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(listening, reinterpret_cast<sockaddr*>(&local), sizeof local) == 0);
  REQUIRE(::listen(listening, 4) == 0);
  socklen_t size = sizeof local;
  ::getsockname(listening, reinterpret_cast<sockaddr*>(&local), &size);
  const std::string address = "127.0.0.1:" + std::to_string(ntohs(local.sin_port));
  std::thread closing([listening] {
    int connection = ::accept(listening, nullptr, nullptr);
    char bytes[64];
    ::recv(connection, bytes, sizeof bytes, 0);
    ::close(connection);
  });
  auto response = call_and_wait(*transport, address, make_request("{}"));
  closing.join();
  ::close(listening);
  REQUIRE(response.error);
  CHECK(response.error->code == 503);
  CHECK(response.error->detail.find("no answer from " + address) != std::string::npos);
}

TEST_CASE("cancelling a call ends it with 499 and cancels the handler's context") {
  micro::Runtime runtime(2);
  auto transport = make_http(runtime);
  std::atomic<int> started{0}, cancelled{0};
  std::mutex held_mutex;
  std::vector<micro::ServerCallPtr> held;
  auto listener = transport->listen("127.0.0.1:0", [&](micro::ServerCallPtr call) {
    call->context().cancellation()->on_cancel([&] { ++cancelled; });
    {
      std::lock_guard lock(held_mutex);
      held.push_back(call);
    }
    ++started;
  });
  auto request = make_request("{}");
  auto cancellation = request.context.cancellation();
  auto promise = std::make_shared<std::promise<micro::Response>>();
  auto future = promise->get_future();
  transport->async_call(
      listener->address(), std::make_shared<const micro::Request>(request),
      [promise](micro::Response&& response) { promise->set_value(std::move(response)); });
  REQUIRE(wait_until([&] { return started.load() == 1; }));
  cancellation->cancel();
  REQUIRE(future.wait_for(5s) == std::future_status::ready);
  auto response = future.get();
  REQUIRE(response.error);
  CHECK(*response.error == micro::cancelled_error("micro.client"));
  // The connection is dropped, so the server abandons the call.
  REQUIRE(wait_until([&] { return cancelled.load() == 1; }));
  std::lock_guard lock(held_mutex);
  CHECK(held.at(0)->cancelled());
  // An answer now is not sent (and must not fail).
  held.at(0)->respond(micro::Response{});
}

TEST_CASE("many calls in flight spread over several connections to one node") {
  micro::Runtime runtime(2);
  auto transport = make_http(runtime);
  std::mutex held_mutex;
  std::vector<micro::ServerCallPtr> held;
  auto listener = transport->listen("127.0.0.1:0", [&](micro::ServerCallPtr call) {
    std::lock_guard lock(held_mutex);
    held.push_back(std::move(call));
  });
  constexpr int calls = 32;
  std::vector<std::future<micro::Response>> futures;
  for (int i = 0; i < calls; ++i) {
    auto promise = std::make_shared<std::promise<micro::Response>>();
    futures.push_back(promise->get_future());
    transport->async_call(
        listener->address(),
        std::make_shared<const micro::Request>(make_request(std::to_string(i))),
        [promise](micro::Response&& response) { promise->set_value(std::move(response)); });
  }
  // All of them reach the handler at once: none waits for another's answer.
  REQUIRE(wait_until([&] {
    std::lock_guard lock(held_mutex);
    return held.size() == calls;
  }));
  {
    std::lock_guard lock(held_mutex);
    for (auto& call : held) {
      micro::Response response;
      response.body = "answer " + call->request().body;
      call->respond(std::move(response));
    }
  }
  for (int i = 0; i < calls; ++i) {
    REQUIRE(futures[static_cast<std::size_t>(i)].wait_for(10s) == std::future_status::ready);
    auto response = futures[static_cast<std::size_t>(i)].get();
    REQUIRE_FALSE(response.error);
    CHECK(response.body == "answer " + std::to_string(i));
  }
}
