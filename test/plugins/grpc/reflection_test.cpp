// test/plugins/grpc/reflection_test.cpp — gRPC server reflection (<micro/grpc_reflection.hpp>)
// against a third-party client: reflection_peer.py (Python grpcio, stubs from our own
// reflection.proto) lists the services of a micro-cpp server on transport=grpc, fetches the
// files declaring them with their dependencies, builds a descriptor pool from them, and calls a
// method with messages built from that pool alone. Also what typed endpoints register about
// their messages (message_codec<T>::annotate).
//
//   grpc_reflection_test <python3 with grpcio> <reflection_peer.py>
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <set>
#include <sstream>

#include <micro/grpc_reflection.hpp>

#include "interop_support.hpp"
#include "reflected.pb.h"

using namespace interop_test;

namespace {

std::string python, peer_script;

// The interop service as a user writes it, with reflection: typed Echo methods (their messages
// in interop.proto), Mirror.Reflect (declared in reflected.proto, which imports interop.proto)
// and a raw endpoint reflection cannot describe.
class ReflectedServer {
 public:
  explicit ReflectedServer(micro::Runtime& runtime) {
    auto& loader = micro::PluginLoader::instance();
    registry_ = loader.create<micro::Registry>("memory", "", {}, runtime.executor());
    transport_ = loader.create<micro::Transport>("grpc", "", {}, runtime.executor());
    micro::ServerOptions options;
    options.name = "interop";
    options.executor = runtime.executor();
    server_ = std::make_unique<micro::Server>(options, transport_, registry_, nullptr,
                                              micro::WrapperChains{});
    server_->handle("Echo.Unary", [](micro::Context&, const interop::EchoRequest& in) {
      interop::EchoReply reply;
      reply.set_text("echo:" + in.text());
      return reply;
    });
    server_->handle_stream(
        "Echo.Bidi",
        [](micro::Context&, micro::ServerStream<interop::EchoRequest, interop::EchoReply> stream)
            -> boost::asio::awaitable<void> {
          while (auto in = co_await stream.read(boost::asio::use_awaitable)) {
            interop::EchoReply reply;
            reply.set_text("echo:" + in->text());
            if (co_await stream.write(reply, boost::asio::use_awaitable)) co_return;
          }
        });
    server_->handle("Mirror.Reflect", [](micro::Context&, const interop::EchoRequest& in) {
      interop::Reflection reflection;
      *reflection.mutable_seen() = in;
      std::istringstream words(in.text());
      for (std::string word; words >> word;) {
        reflection.add_words(word);
        (*reflection.mutable_counts())[word] = static_cast<std::int32_t>(word.size());
      }
      return reflection;
    });
    server_->handle("Raw.Bytes", [](const micro::RequestPtr&, micro::ResponseHandler respond) {
      respond(micro::Response{});
    });
    micro::serve_grpc_reflection(*server_);
    server_->start();
  }
  ~ReflectedServer() {
    server_->stop();
    transport_->close();
  }
  std::string address() const { return server_->address(); }
  micro::Service registration() const { return server_->registration(); }

 private:
  std::shared_ptr<micro::Registry> registry_;
  std::shared_ptr<micro::Transport> transport_;
  std::unique_ptr<micro::Server> server_;
};

const micro::Endpoint* find(const micro::Service& service, std::string_view name) {
  for (const auto& endpoint : service.endpoints)
    if (endpoint.name == name) return &endpoint;
  return nullptr;
}

}  // namespace

TEST_CASE("typed endpoints name their protobuf messages in the endpoint metadata") {
  micro::Runtime runtime(2);
  ReflectedServer server(runtime);
  auto service = server.registration();
  const auto* mirror = find(service, "Mirror.Reflect");
  REQUIRE(mirror);
  CHECK(mirror->metadata.at("protobuf.request") == "interop.EchoRequest");
  CHECK(mirror->metadata.at("protobuf.response") == "interop.Reflection");
  const auto* bidi = find(service, "Echo.Bidi");
  REQUIRE(bidi);
  CHECK(bidi->metadata.at("protobuf.request") == "interop.EchoRequest");
  CHECK(bidi->metadata.at("protobuf.response") == "interop.EchoReply");
  const auto* raw = find(service, "Raw.Bytes");
  REQUIRE(raw);
  CHECK(raw->metadata.count("protobuf.request") == 0);
  CHECK(micro::detail::reflection::served_services(service) ==
        std::vector<std::string>{"interop.Echo", "interop.Mirror"});
}

TEST_CASE("a Python grpcio reflection client discovers and calls a micro-cpp service") {
  micro::Runtime runtime(3);
  ReflectedServer server(runtime);
  Child client({python, peer_script, server.address()});
  std::set<std::string> passed;
  std::string all;
  while (auto line = client.read_line(60s)) {
    all += *line + "\n";
    if (line->rfind("ok ", 0) == 0) passed.insert(line->substr(3));
  }
  CAPTURE(all);
  CHECK(client.wait() == 0);
  CHECK(passed == std::set<std::string>{"list-services", "file-containing-symbol",
                                        "symbols-of-every-kind", "file-by-filename",
                                        "not-found-keeps-the-stream", "dynamic-call", "v1",
                                        "malformed"});
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: grpc_reflection_test PYTHON3 REFLECTION_PEER_PY [options]\n");
    return 2;
  }
  python = argv[1];
  peer_script = argv[2];
  std::vector<char*> rest = {argv[0]};
  for (int i = 3; i < argc; ++i) rest.push_back(argv[i]);
  doctest::Context context(static_cast<int>(rest.size()), rest.data());
  return context.run();
}
