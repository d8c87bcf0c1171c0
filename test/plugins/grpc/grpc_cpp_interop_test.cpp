// test/plugins/grpc/grpc_cpp_interop_test.cpp — transport=grpc against gRPC C++ (the stubs
// grpc_cpp_plugin generates from interop.proto), both ways: a gRPC C++ client calls a
// micro-cpp service (unary with metadata, server streaming, bidi, error status, deadline,
// cancellation), and our client calls a gRPC C++ server (unary and bidi, error, deadline).
#include <grpcpp/grpcpp.h>

#include <doctest/doctest.h>

#include <thread>

#include "interop.grpc.pb.h"
#include "interop_support.hpp"
#include "plugins/conformance/stream_test_support.hpp"
#include "support/wait.hpp"

using namespace interop_test;

namespace {

std::unique_ptr<interop::Echo::Stub> stub_for(const std::string& address) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  REQUIRE(channel->WaitForConnected(std::chrono::system_clock::now() + 10s));
  return interop::Echo::NewStub(channel);
}

void set_deadline(grpc::ClientContext& context, std::chrono::milliseconds timeout) {
  context.set_deadline(std::chrono::system_clock::now() + timeout);
}

// The gRPC C++ server our client calls.
class CppEcho final : public interop::Echo::Service {
 public:
  std::atomic<int> cancelled{0};

  grpc::Status Unary(grpc::ServerContext* context, const interop::EchoRequest* request,
                     interop::EchoReply* reply) override {
    if (request->delay_ms() > 0) {
      auto until =
          std::chrono::steady_clock::now() + std::chrono::milliseconds(request->delay_ms());
      while (std::chrono::steady_clock::now() < until && !context->IsCancelled())
        std::this_thread::sleep_for(5ms);
      if (context->IsCancelled()) {
        ++cancelled;
        return grpc::Status::CANCELLED;
      }
    }
    if (request->fail_code() != 0)
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "c++ says no: " + request->text());
    auto probe = context->client_metadata().find("x-probe");
    if (probe != context->client_metadata().end())
      reply->set_metadata(std::string(probe->second.data(), probe->second.size()));
    context->AddInitialMetadata("x-answer", "c++");
    reply->set_text("echo:" + request->text());
    reply->set_payload(request->payload());
    return grpc::Status::OK;
  }

  grpc::Status Bidi(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<interop::EchoReply, interop::EchoRequest>* stream) override {
    interop::EchoRequest request;
    while (stream->Read(&request)) {
      interop::EchoReply reply;
      reply.set_text("echo:" + request.text());
      stream->Write(reply);
    }
    return grpc::Status::OK;
  }
};

micro::Request echo_request(std::string endpoint, const interop::EchoRequest& in) {
  micro::Request request;
  request.service = "interop";
  request.endpoint = std::move(endpoint);
  request.content_type = "application/protobuf";
  request.body = serialized(in);
  return request;
}

}  // namespace

TEST_CASE("a gRPC C++ client calls a micro-cpp service") {
  micro::Runtime runtime(3);
  EchoServer server(runtime);
  auto stub = stub_for(server.address());

  SUBCASE("unary with metadata both ways") {
    grpc::ClientContext context;
    set_deadline(context, 10s);
    context.AddMetadata("x-probe", "from c++");
    context.AddMetadata("x-blob-bin", std::string("\x01\x02", 2));
    interop::EchoRequest request;
    request.set_text("hi");
    request.set_payload(std::string("\0\xfe", 2));
    interop::EchoReply reply;
    auto status = stub->Unary(&context, request, &reply);
    REQUIRE(status.ok());
    CHECK(reply.text() == "echo:hi");
    CHECK(reply.payload() == std::string("\0\xfe", 2));
    CHECK(reply.metadata() == "from c++|0102");
    std::multimap<std::string, std::string> answered;
    for (const auto& [key, value] : context.GetServerInitialMetadata())
      answered.emplace(std::string(key.data(), key.size()),
                       std::string(value.data(), value.size()));
    for (const auto& [key, value] : context.GetServerTrailingMetadata())
      answered.emplace(std::string(key.data(), key.size()),
                       std::string(value.data(), value.size()));
    REQUIRE(answered.count("x-answer") == 1);
    CHECK(answered.find("x-answer")->second == "yes");
    REQUIRE(answered.count("x-answer-bin") == 1);
    CHECK(answered.find("x-answer-bin")->second == std::string("\x00\x02", 2));
  }
  SUBCASE("server streaming") {
    grpc::ClientContext context;
    set_deadline(context, 10s);
    interop::EchoRequest request;
    request.set_text("t");
    request.set_count(100);
    auto reader = stub->ServerStream(&context, request);
    interop::EchoReply reply;
    int expected = 0;
    while (reader->Read(&reply)) CHECK(reply.index() == expected++);
    CHECK(expected == 100);
    CHECK(reader->Finish().ok());
  }
  SUBCASE("bidirectional") {
    grpc::ClientContext context;
    set_deadline(context, 10s);
    auto stream = stub->Bidi(&context);
    for (int i = 0; i < 50; ++i) {
      interop::EchoRequest request;
      request.set_text("m" + std::to_string(i));
      REQUIRE(stream->Write(request));
      interop::EchoReply reply;
      REQUIRE(stream->Read(&reply));
      CHECK(reply.text() == "echo:m" + std::to_string(i));
    }
    stream->WritesDone();
    interop::EchoReply extra;
    CHECK_FALSE(stream->Read(&extra));
    CHECK(stream->Finish().ok());
  }
  SUBCASE("an error status, and its micro::Error detail") {
    grpc::ClientContext context;
    interop::EchoRequest request;
    request.set_fail_code(409);
    interop::EchoReply reply;
    auto status = stub->Unary(&context, request, &reply);
    CHECK(status.error_code() == grpc::StatusCode::ALREADY_EXISTS);
    CHECK(status.error_message() ==
          "asked to fail with 409: \xc3\xbc"
          "n\xc3\xaf"
          "code");
  }
  SUBCASE("deadline and cancellation reach the handler") {
    grpc::ClientContext context;
    set_deadline(context, 200ms);
    interop::EchoRequest request;
    request.set_delay_ms(5000);
    interop::EchoReply reply;
    CHECK(stub->Unary(&context, request, &reply).error_code() ==
          grpc::StatusCode::DEADLINE_EXCEEDED);
    CHECK(test_support::wait_until([&] { return server.cancelled.load() == 1; }));

    grpc::ClientContext cancelled;
    std::thread canceller([&] {
      test_support::wait_until([&] { return server.unary_calls.load() >= 2; });
      std::this_thread::sleep_for(50ms);  // the handler has armed its timer
      cancelled.TryCancel();
    });
    CHECK(stub->Unary(&cancelled, request, &reply).error_code() == grpc::StatusCode::CANCELLED);
    canceller.join();
    CHECK(test_support::wait_until([&] { return server.cancelled.load() == 2; }));
  }
}

TEST_CASE("a micro-cpp client calls a gRPC C++ server") {
  CppEcho service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  auto grpc_server = builder.BuildAndStart();
  REQUIRE(grpc_server);
  std::string address = "127.0.0.1:" + std::to_string(port);

  stream_test::Runtime runtime;
  auto transport =
      micro::PluginLoader::instance().create<micro::Transport>("grpc", "", {}, runtime.executor());

  SUBCASE("unary with metadata") {
    interop::EchoRequest in;
    in.set_text("hi");
    auto request = echo_request("Echo.Unary", in);
    request.context.metadata().set("x-probe", "from micro");
    auto response = transport_test::call_and_wait(*transport, address, request);
    REQUIRE_FALSE(response.error);
    interop::EchoReply reply;
    REQUIRE(reply.ParseFromString(response.body));
    CHECK(reply.text() == "echo:hi");
    CHECK(reply.metadata() == "from micro");
    CHECK(response.metadata.get("x-answer") == "c++");
  }
  SUBCASE("bidirectional") {
    interop::EchoRequest none;
    auto opened = stream_test::open_and_wait(*transport, address, echo_request("Echo.Bidi", none));
    REQUIRE(opened.stream);
    for (int i = 0; i < 100; ++i) {
      interop::EchoRequest in;
      in.set_text("b" + std::to_string(i));
      REQUIRE_FALSE(stream_test::write_one(*opened.stream, serialized(in)));
      auto message = stream_test::read_one(*opened.stream);
      REQUIRE(message);
      interop::EchoReply reply;
      REQUIRE(reply.ParseFromString(*message));
      CHECK(reply.text() == "echo:b" + std::to_string(i));
    }
    opened.stream->close_send();
    CHECK_FALSE(stream_test::read_one(*opened.stream));
    CHECK_FALSE(stream_test::wait_end(*opened.stream).error);
  }
  SUBCASE("an error status, a deadline, a cancel") {
    interop::EchoRequest in;
    in.set_text("x");
    in.set_fail_code(1);
    auto response =
        transport_test::call_and_wait(*transport, address, echo_request("Echo.Unary", in));
    REQUIRE(response.error);
    CHECK(response.error->code == 403);
    CHECK(response.error->detail == "c++ says no: x");

    interop::EchoRequest slow;
    slow.set_delay_ms(5000);
    auto request = echo_request("Echo.Unary", slow);
    request.context.set_timeout(200ms);
    response = transport_test::call_and_wait(*transport, address, request);
    REQUIRE(response.error);
    CHECK(response.error->code == 408);
    CHECK(test_support::wait_until([&] { return service.cancelled.load() == 1; }));
  }
  transport->close();
  grpc_server->Shutdown(std::chrono::system_clock::now() + 1s);
}

TEST_CASE("a typed micro::Client calls a gRPC C++ server with the generated messages") {
  CppEcho service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  auto grpc_server = builder.BuildAndStart();
  REQUIRE(grpc_server);

  // The gRPC C++ server as a node of service "interop" (its proto package), as a registry
  // entry written by hand or by a sidecar would have it.
  micro::Runtime runtime(2);
  auto& loader = micro::PluginLoader::instance();
  auto registry = loader.create<micro::Registry>("memory", "", {}, runtime.executor());
  auto transport = loader.create<micro::Transport>("grpc", "", {}, runtime.executor());
  micro::Service entry;
  entry.name = "interop";
  entry.nodes.push_back(micro::Node{"cpp-echo",
                                    "127.0.0.1:" + std::to_string(port),
                                    {{"transport", "grpc"}, {"protocol", "grpc"}}});
  registry->register_service(entry, {});
  micro::ClientOptions options;
  options.content_type = "application/protobuf";
  micro::Client client(
      options, transport,
      std::make_shared<micro::RegistryCache>(registry, runtime.blocking_executor()),
      loader.create<micro::Selector>("roundrobin", "", {}, runtime.executor()), nullptr,
      micro::WrapperChains{}, runtime.executor());

  interop::EchoRequest in;
  in.set_text("typed");
  in.set_payload(std::string("\x00\x01", 2));
  micro::Context context;
  context.metadata().set("x-probe", "typed micro");
  auto reply = client.call<interop::EchoReply>("interop", "Echo.Unary", in, {}, context);
  CHECK(reply.text() == "echo:typed");
  CHECK(reply.payload() == std::string("\x00\x01", 2));
  CHECK(reply.metadata() == "typed micro");

  in.set_fail_code(1);
  try {
    client.call<interop::EchoReply>("interop", "Echo.Unary", in);
    FAIL("a failing call succeeded");
  } catch (const micro::Exception& e) {
    CHECK(e.error().code == 403);
    CHECK(e.error().detail == "c++ says no: typed");
  }

  auto stream =
      client.open_stream<interop::EchoRequest, interop::EchoReply>("interop", "Echo.Bidi");
  for (int i = 0; i < 20; ++i) {
    interop::EchoRequest message;
    message.set_text("m" + std::to_string(i));
    stream.send(message);
    auto answer = stream.receive();
    REQUIRE(answer);
    CHECK(answer->text() == "echo:m" + std::to_string(i));
  }
  stream.close_send();
  CHECK_FALSE(stream.receive());
  CHECK_FALSE(stream.error());

  transport->close();
  grpc_server->Shutdown(std::chrono::system_clock::now() + 1s);
}
