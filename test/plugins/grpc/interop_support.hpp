// test/plugins/grpc/interop_support.hpp — what the interop tests share: a micro-cpp Server on
// transport=grpc serving interop.proto's Echo (raw handlers reading and writing the
// protoc-generated messages), the same Echo written as a user would, with typed handlers on
// the generated messages (<micro/protobuf.hpp>), a child process with its output read line by
// line (test/support/child_process.hpp), and blocking stream helpers for our client's side.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <micro/client.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/protobuf.hpp>
#include <micro/registry.hpp>
#include <micro/registry_cache.hpp>
#include <micro/runtime.hpp>
#include <micro/server.hpp>
#include <micro/transport.hpp>

#include "interop.pb.h"
#include "support/child_process.hpp"

namespace interop_test {

using namespace std::chrono_literals;

inline std::string hex(const std::string& bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

inline std::string serialized(const google::protobuf::Message& message) {
  std::string out;
  message.SerializeToString(&out);
  return out;
}

// Writes `messages` one after the other, then ends the stream with success.
inline void write_all(micro::MessageStreamPtr stream,
                      std::shared_ptr<std::vector<std::string>> messages, std::size_t next = 0) {
  if (next == messages->size()) {
    stream->finish(micro::Response{});
    return;
  }
  std::string message = (*messages)[next];
  stream->async_write(std::move(message),
                      [stream, messages, next](std::optional<micro::Error> error) {
                        if (!error) write_all(stream, messages, next + 1);
                      });
}

// Echo on transport=grpc, as a micro-cpp service: the peer's calls reach these handlers through
// the core's routing, as any service's would.
class EchoServer {
 public:
  explicit EchoServer(micro::Runtime& runtime, micro::PluginOptions transport_options = {})
      : runtime_(runtime) {
    auto& loader = micro::PluginLoader::instance();
    registry_ = loader.create<micro::Registry>("memory", "", {}, runtime.executor());
    transport_ = loader.create<micro::Transport>("grpc", "", transport_options, runtime.executor());
    micro::ServerOptions options;
    options.name = "interop";
    options.executor = runtime.executor();
    server_ = std::make_unique<micro::Server>(options, transport_, registry_, nullptr,
                                              micro::WrapperChains{});
    server_->handle("Echo.Unary",
                    [this](const micro::RequestPtr& request, micro::ResponseHandler respond) {
                      unary(request, std::move(respond));
                    });
    server_->handle_stream("Echo.ServerStream", [](const micro::MessageStreamPtr& stream) {
      stream->async_read([stream](std::optional<std::string> message) {
        interop::EchoRequest in;
        if (!message || !in.ParseFromString(*message)) {
          stream->finish(micro::Response::failure(micro::bad_request("interop", "no request")));
          return;
        }
        auto replies = std::make_shared<std::vector<std::string>>();
        for (int i = 0; i < in.count(); ++i) {
          interop::EchoReply reply;
          reply.set_text(in.text());
          reply.set_index(i);
          replies->push_back(serialized(reply));
        }
        write_all(stream, replies);
      });
    });
    server_->handle_stream("Echo.ClientStream", [](const micro::MessageStreamPtr& stream) {
      read_all(stream, std::make_shared<interop::EchoReply>());
    });
    server_->handle_stream("Echo.Bidi",
                           [](const micro::MessageStreamPtr& stream) { bidi(stream); });
    server_->start();
  }
  ~EchoServer() {
    server_->stop();
    transport_->close();
  }

  std::string address() const { return server_->address(); }
  std::atomic<int> cancelled{0};  // delayed unary calls whose context was cancelled
  std::atomic<int> unary_calls{0};

 private:
  void unary(const micro::RequestPtr& request, micro::ResponseHandler respond) {
    ++unary_calls;
    interop::EchoRequest in;
    if (!in.ParseFromString(request->body)) {
      respond(micro::Response::failure(micro::bad_request("interop", "not an EchoRequest")));
      return;
    }
    if (in.fail_code() != 0) {
      respond(micro::Response::failure(micro::Error("interop", in.fail_code(),
                                                    "asked to fail with " +
                                                        std::to_string(in.fail_code()) +
                                                        ": \xc3\xbc"
                                                        "n\xc3\xaf"
                                                        "code")));
      return;
    }
    interop::EchoReply reply;
    reply.set_text("echo:" + in.text());
    reply.set_payload(in.payload());
    reply.set_metadata(request->context.metadata().get("x-probe") + "|" +
                       hex(request->context.metadata().get("x-blob-bin")));
    micro::Response response;
    response.content_type = request->content_type;
    response.body = serialized(reply);
    response.metadata.set("x-answer", "yes");
    response.metadata.set("x-answer-bin", std::string("\x00\x02", 2));
    if (in.delay_ms() == 0) {
      respond(std::move(response));
      return;
    }
    auto timer = std::make_shared<boost::asio::steady_timer>(
        runtime_.executor(), std::chrono::milliseconds(in.delay_ms()));
    auto cancellation = request->context.cancellation();
    cancellation->on_cancel([this, timer] {
      ++cancelled;
      timer->cancel();
    });
    timer->async_wait([timer, respond, response = std::move(response)](
                          const boost::system::error_code& error) mutable {
      if (error)
        respond(micro::Response::failure(micro::cancelled_error("interop")));
      else
        respond(std::move(response));
    });
  }

  static void read_all(micro::MessageStreamPtr stream, std::shared_ptr<interop::EchoReply> total) {
    stream->async_read([stream, total](std::optional<std::string> message) {
      if (!message) {
        if (stream->ended()) return;
        stream->async_write(serialized(*total), [stream](std::optional<micro::Error> error) {
          if (!error) stream->finish(micro::Response{});
        });
        return;
      }
      interop::EchoRequest in;
      in.ParseFromString(*message);
      total->set_text(total->text() + in.text());
      total->set_index(total->index() + 1);
      read_all(stream, total);
    });
  }

  static void bidi(micro::MessageStreamPtr stream) {
    stream->async_read([stream](std::optional<std::string> message) {
      if (!message) {
        if (!stream->ended()) stream->finish(micro::Response{});
        return;
      }
      interop::EchoRequest in;
      in.ParseFromString(*message);
      interop::EchoReply reply;
      reply.set_text("echo:" + in.text());
      stream->async_write(serialized(reply), [stream](std::optional<micro::Error> error) {
        if (!error) bidi(stream);
      });
    });
  }

  micro::Runtime& runtime_;
  std::shared_ptr<micro::Registry> registry_;
  std::shared_ptr<micro::Transport> transport_;
  std::unique_ptr<micro::Server> server_;
};

// Echo as a user writes it: typed unary and stream handlers taking and returning the
// generated messages, errors as micro::Exception. What a stock gRPC stub calls.
class TypedEchoServer {
 public:
  explicit TypedEchoServer(micro::Runtime& runtime) {
    auto& loader = micro::PluginLoader::instance();
    registry_ = loader.create<micro::Registry>("memory", "", {}, runtime.executor());
    transport_ = loader.create<micro::Transport>("grpc", "", {}, runtime.executor());
    micro::ServerOptions options;
    options.name = "interop";
    options.executor = runtime.executor();
    server_ = std::make_unique<micro::Server>(options, transport_, registry_, nullptr,
                                              micro::WrapperChains{});
    using boost::asio::use_awaitable;
    server_->handle("Echo.Unary", [](micro::Context& context, const interop::EchoRequest& in) {
      if (in.fail_code() != 0)
        throw micro::Exception(
            micro::Error("interop", in.fail_code(),
                         "typed handler fails with " + std::to_string(in.fail_code())));
      interop::EchoReply reply;
      reply.set_text("echo:" + in.text());
      reply.set_payload(in.payload());
      reply.set_metadata(context.metadata().get("x-probe"));
      return reply;
    });
    server_->handle_stream(
        "Echo.ServerStream",
        [](micro::Context&, micro::ServerStream<interop::EchoRequest, interop::EchoReply> stream)
            -> boost::asio::awaitable<void> {
          auto in = co_await stream.read(use_awaitable);
          if (!in) throw micro::Exception(micro::bad_request("interop", "no request"));
          for (int i = 0; i < in->count(); ++i) {
            interop::EchoReply reply;
            reply.set_text(in->text());
            reply.set_index(i);
            if (co_await stream.write(reply, use_awaitable)) co_return;
          }
        });
    server_->handle_stream(
        "Echo.ClientStream",
        [](micro::Context&, micro::ServerStream<interop::EchoRequest, interop::EchoReply> stream)
            -> boost::asio::awaitable<void> {
          interop::EchoReply total;
          while (auto in = co_await stream.read(use_awaitable)) {
            total.set_text(total.text() + in->text());
            total.set_index(total.index() + 1);
          }
          co_await stream.write(total, use_awaitable);
        });
    server_->handle_stream(
        "Echo.Bidi",
        [](micro::Context&, micro::ServerStream<interop::EchoRequest, interop::EchoReply> stream)
            -> boost::asio::awaitable<void> {
          while (auto in = co_await stream.read(use_awaitable)) {
            interop::EchoReply reply;
            reply.set_text("echo:" + in->text());
            if (co_await stream.write(reply, use_awaitable)) co_return;
          }
        });
    server_->start();
  }
  ~TypedEchoServer() {
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

using Child = micro_test::Child;  // test/support/child_process.hpp

}  // namespace interop_test
