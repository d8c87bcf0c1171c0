// test/plugins/grpc/python_interop_test.cpp — transport=grpc against Python grpcio, a
// third-party gRPC, both ways: grpc_peer.py's client (stubs generated from interop.proto)
// calls a micro-cpp service, and our client calls grpc_peer.py's server. Every call kind,
// deadline, cancellation, error status, metadata, a 3 MiB message, one over the limit.
//
//   python_interop_test <python3 with grpcio> <grpc_peer.py>
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <future>
#include <set>

#include "interop_support.hpp"
#include "plugins/conformance/stream_test_support.hpp"
#include "support/test_certificates.hpp"
#include "support/wait.hpp"

using namespace interop_test;

namespace {

std::string python, peer_script;

micro::Request echo_request(std::string endpoint, const interop::EchoRequest& in) {
  micro::Request request;
  request.service = "interop";  // the proto package: the path is /interop.Echo/<Method>
  request.endpoint = std::move(endpoint);
  request.content_type = "application/protobuf";
  request.body = serialized(in);
  return request;
}

interop::EchoReply parse_reply(const std::string& body) {
  interop::EchoReply reply;
  REQUIRE(reply.ParseFromString(body));
  return reply;
}

}  // namespace

TEST_CASE("a Python grpcio client calls a micro-cpp service: every kind, errors, limits") {
  micro::Runtime runtime(3);
  EchoServer server(runtime);
  Child client({python, peer_script, "client", server.address()});
  std::set<std::string> passed;
  std::vector<std::string> output;
  while (auto line = client.read_line(60s)) {
    output.push_back(*line);
    if (line->rfind("ok ", 0) == 0) passed.insert(line->substr(3));
  }
  std::string all;
  for (const auto& line : output) all += line + "\n";
  CAPTURE(all);
  CHECK(client.wait() == 0);
  for (std::string name :
       {"unary", "server-stream", "client-stream", "bidi", "deadline", "cancel", "error-status",
        "unimplemented", "3MiB", "over-limit", "health", "gzip"}) {
    CAPTURE(name);
    CHECK(passed.count(name) == 1);
  }
  // The Python client's cancel reached our handler's context (as did its deadline).
  CHECK(test_support::wait_until([&] { return server.cancelled.load() >= 2; }));
}

TEST_CASE("a Python grpcio stub calls typed handlers written on the generated messages") {
  micro::Runtime runtime(3);
  TypedEchoServer server(runtime);
  Child client({python, peer_script, "client-typed", server.address()});
  std::set<std::string> passed;
  std::string all;
  while (auto line = client.read_line(60s)) {
    all += *line + "\n";
    if (line->rfind("ok ", 0) == 0) passed.insert(line->substr(3));
  }
  CAPTURE(all);
  CHECK(client.wait() == 0);
  CHECK(passed == std::set<std::string>{"typed-unary", "typed-server-stream", "typed-client-stream",
                                        "typed-bidi", "typed-error", "typed-malformed"});
}

TEST_CASE("a Python grpcio client calls a micro-cpp service over TLS with ALPN h2") {
  micro_test::TestCertificates certificates("micro-grpc-python");
  micro::Runtime runtime(2);
  EchoServer server(runtime, {{"tls_cert", certificates.path("server.pem")},
                              {"tls_key", certificates.path("server.key")}});
  Child client({python, peer_script, "client-tls", server.address(), certificates.path("ca.pem")});
  std::set<std::string> passed;
  std::string all;
  while (auto line = client.read_line(60s)) {
    all += *line + "\n";
    if (line->rfind("ok ", 0) == 0) passed.insert(line->substr(3));
  }
  CAPTURE(all);
  CHECK(client.wait() == 0);
  CHECK(passed == std::set<std::string>{"tls-unary", "tls-bidi"});
}

namespace {

// Our client calling grpc_peer.py's server; `compression` is the client's option (gzip: every
// message we send is compressed, and Python must inflate it).
void call_python_server(const char* compression) {
  Child peer({python, peer_script, "server"});
  auto port_line = peer.read_line(60s);
  REQUIRE(port_line);
  REQUIRE(port_line->rfind("port ", 0) == 0);
  std::string address = "127.0.0.1:" + port_line->substr(5);

  stream_test::Runtime runtime;
  auto transport = micro::PluginLoader::instance().create<micro::Transport>(
      "grpc", "", {{"max_message", std::to_string(8 << 20)}, {"compression", compression}},
      runtime.executor());

  SUBCASE("unary with metadata both ways") {
    interop::EchoRequest in;
    in.set_text("hi");
    in.set_payload(std::string("\0\xff", 2));
    auto request = echo_request("Echo.Unary", in);
    request.context.metadata().set("x-probe", "from micro");
    auto response = transport_test::call_and_wait(*transport, address, request);
    REQUIRE_FALSE(response.error);
    auto reply = parse_reply(response.body);
    CHECK(reply.text() == "echo:hi");
    CHECK(reply.payload() == std::string("\0\xff", 2));
    CHECK(reply.metadata() == "from micro");
    CHECK(response.metadata.get("x-answer") == "python");
  }
  SUBCASE("server streaming") {
    interop::EchoRequest in;
    in.set_text("tick");
    in.set_count(4);
    auto opened =
        stream_test::open_and_wait(*transport, address, echo_request("Echo.ServerStream", in));
    REQUIRE(opened.stream);
    REQUIRE_FALSE(stream_test::write_one(*opened.stream, serialized(in)));
    opened.stream->close_send();
    std::vector<int> indexes;
    while (auto message = stream_test::read_one(*opened.stream))
      indexes.push_back(parse_reply(*message).index());
    CHECK(indexes == std::vector<int>{0, 1, 2, 3});
    CHECK_FALSE(stream_test::wait_end(*opened.stream).error);
  }
  SUBCASE("client streaming") {
    interop::EchoRequest none;
    auto opened =
        stream_test::open_and_wait(*transport, address, echo_request("Echo.ClientStream", none));
    REQUIRE(opened.stream);
    for (const char* text : {"x", "y", "z"}) {
      interop::EchoRequest in;
      in.set_text(text);
      REQUIRE_FALSE(stream_test::write_one(*opened.stream, serialized(in)));
    }
    opened.stream->close_send();
    auto message = stream_test::read_one(*opened.stream);
    REQUIRE(message);
    auto reply = parse_reply(*message);
    CHECK(reply.text() == "xyz");
    CHECK(reply.index() == 3);
    CHECK_FALSE(stream_test::wait_end(*opened.stream).error);
  }
  SUBCASE("bidirectional") {
    interop::EchoRequest none;
    auto opened = stream_test::open_and_wait(*transport, address, echo_request("Echo.Bidi", none));
    REQUIRE(opened.stream);
    for (const char* text : {"one", "two", "three"}) {
      interop::EchoRequest in;
      in.set_text(text);
      REQUIRE_FALSE(stream_test::write_one(*opened.stream, serialized(in)));
      auto message = stream_test::read_one(*opened.stream);
      REQUIRE(message);
      CHECK(parse_reply(*message).text() == std::string("echo:") + text);
    }
    opened.stream->close_send();
    CHECK_FALSE(stream_test::read_one(*opened.stream));
    CHECK_FALSE(stream_test::wait_end(*opened.stream).error);
  }
  SUBCASE("deadline") {
    interop::EchoRequest in;
    in.set_text("slow");
    in.set_delay_ms(5000);
    auto request = echo_request("Echo.Unary", in);
    request.context.set_timeout(200ms);
    auto response = transport_test::call_and_wait(*transport, address, request);
    REQUIRE(response.error);
    CHECK(response.error->code == 408);
    // grpc-timeout told the server: its handler saw the context end.
    CHECK(peer.read_line(10s) == std::optional<std::string>("cancelled slow"));
  }
  SUBCASE("cancellation reaches the server") {
    interop::EchoRequest in;
    in.set_text("hold");
    in.set_delay_ms(20000);
    auto request = echo_request("Echo.Unary", in);
    auto cancellation = request.context.cancellation();
    std::promise<micro::Response> answer;
    transport->async_call(address, transport_test::share(request), [&](micro::Response&& response) {
      answer.set_value(std::move(response));
    });
    std::this_thread::sleep_for(300ms);  // the call is in the Python handler (no event to wait on)
    cancellation->cancel();
    auto future = answer.get_future();
    REQUIRE(future.wait_for(5s) == std::future_status::ready);
    auto response = future.get();
    REQUIRE(response.error);
    CHECK(response.error->code == 499);
    CHECK(peer.read_line(10s) == std::optional<std::string>("cancelled hold"));
  }
  SUBCASE("an error status becomes a micro::Error") {
    interop::EchoRequest in;
    in.set_text("nope");
    in.set_fail_code(1);
    auto response =
        transport_test::call_and_wait(*transport, address, echo_request("Echo.Unary", in));
    REQUIRE(response.error);
    CHECK(response.error->code == 404);  // NOT_FOUND
    CHECK(response.error->detail == "python says no: nope");
    CHECK(response.error->id == "interop");
  }
  SUBCASE("an unknown method is UNIMPLEMENTED") {
    interop::EchoRequest in;
    auto response =
        transport_test::call_and_wait(*transport, address, echo_request("Echo.Missing", in));
    REQUIRE(response.error);
    CHECK(response.error->code == 501);
  }
  SUBCASE("a 3 MiB message, and one over the server's 4 MiB limit") {
    interop::EchoRequest in;
    in.set_payload(std::string(3 << 20, 'p'));
    auto response =
        transport_test::call_and_wait(*transport, address, echo_request("Echo.Unary", in));
    REQUIRE_FALSE(response.error);
    CHECK(parse_reply(response.body).payload().size() == std::size_t(3 << 20));
    in.set_payload(std::string(5 << 20, 'p'));
    response = transport_test::call_and_wait(*transport, address, echo_request("Echo.Unary", in));
    REQUIRE(response.error);
    CHECK(response.error->code == 429);  // RESOURCE_EXHAUSTED
  }
  transport->close();
}

}  // namespace

TEST_CASE("a micro-cpp client calls a Python grpcio server: every kind, errors, limits") {
  call_python_server("identity");
}

TEST_CASE("a micro-cpp client with compression=gzip calls a Python grpcio server") {
  call_python_server("gzip");
}

TEST_CASE("a Python grpcio client takes gzip answers from a compression=gzip service") {
  micro::Runtime runtime(3);
  EchoServer server(runtime, {{"compression", "gzip"}});
  Child client({python, peer_script, "client", server.address()});
  std::set<std::string> passed;
  std::string all;
  while (auto line = client.read_line(60s)) {
    all += *line + "\n";
    if (line->rfind("ok ", 0) == 0) passed.insert(line->substr(3));
  }
  CAPTURE(all);
  CHECK(client.wait() == 0);
  for (std::string name : {"unary", "server-stream", "client-stream", "bidi", "error-status",
                           "3MiB", "over-limit", "health", "gzip"}) {
    CAPTURE(name);
    CHECK(passed.count(name) == 1);
  }
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: python_interop_test PYTHON3 GRPC_PEER_PY [doctest options]\n");
    return 2;
  }
  python = argv[1];
  peer_script = argv[2];
  std::vector<char*> rest = {argv[0]};
  for (int i = 3; i < argc; ++i) rest.push_back(argv[i]);
  doctest::Context context(static_cast<int>(rest.size()), rest.data());
  return context.run();
}
