// test/plugins/conformance/stream_test_support.hpp — helpers for stream tests at the transport
// level: opening a stream and waiting, blocking reads and writes with a bound (so a bug fails a
// test instead of hanging it), and server handlers built from callbacks (echo, flood, hold).
#pragma once

#include <atomic>
#include <future>
#include <memory>
#include <optional>
#include <string>

#include <micro/transport.hpp>

#include "transport_test_support.hpp"

namespace stream_test {

using namespace transport_test;

struct Opened {
  micro::MessageStreamPtr stream;
  std::optional<micro::Error> error;
};

inline Opened open_and_wait(micro::Transport& transport, const std::string& address,
                            const micro::Request& head, std::chrono::milliseconds limit = 10s) {
  auto promise = std::make_shared<std::promise<Opened>>();
  auto future = promise->get_future();
  transport.open_stream(
      address, share(head),
      [promise](micro::MessageStreamPtr stream, std::optional<micro::Error> error) {
        promise->set_value(Opened{std::move(stream), std::move(error)});
      });
  REQUIRE_MESSAGE(future.wait_for(limit) == std::future_status::ready, "open did not complete");
  return future.get();
}

// Blocking read: the message, nullopt at the end; fails the test when nothing comes in time.
inline std::optional<std::string> read_one(micro::MessageStream& stream,
                                           std::chrono::milliseconds limit = 10s) {
  auto promise = std::make_shared<std::promise<std::optional<std::string>>>();
  auto future = promise->get_future();
  stream.async_read(
      [promise](std::optional<std::string> message) { promise->set_value(std::move(message)); });
  REQUIRE_MESSAGE(future.wait_for(limit) == std::future_status::ready, "read did not complete");
  return future.get();
}

inline std::optional<micro::Error> write_one(micro::MessageStream& stream, std::string message,
                                             std::chrono::milliseconds limit = 10s) {
  auto promise = std::make_shared<std::promise<std::optional<micro::Error>>>();
  auto future = promise->get_future();
  stream.async_write(std::move(message), [promise](std::optional<micro::Error> error) {
    promise->set_value(std::move(error));
  });
  REQUIRE_MESSAGE(future.wait_for(limit) == std::future_status::ready, "write did not complete");
  return future.get();
}

// Waits for the stream's end and returns its status.
inline micro::Response wait_end(micro::MessageStream& stream,
                                std::chrono::milliseconds limit = 10s) {
  auto promise = std::make_shared<std::promise<micro::Response>>();
  auto future = promise->get_future();
  stream.on_end([promise](micro::Response&& status) { promise->set_value(std::move(status)); });
  REQUIRE_MESSAGE(future.wait_for(limit) == std::future_status::ready, "the stream did not end");
  return future.get();
}

inline micro::Request stream_head(std::string endpoint = "Echo.Stream") {
  micro::Request head;
  head.service = "echo";
  head.endpoint = std::move(endpoint);
  head.content_type = "application/octet-stream";
  return head;
}

// Reads every message and writes "echo:" + message back, each after the previous write
// completed; at the client's close it answers with trailing metadata "Count". Unary calls
// are answered "echo:" + body.
struct EchoStreams {
  std::atomic<int> opened{0};
  std::atomic<int> cancelled{0};

  micro::CallHandler handler() {
    return [this](micro::ServerCallPtr call) {
      auto stream = micro::as_stream(call);
      if (!stream) {
        micro::Response response;
        response.body = "echo:" + call->request().body;
        call->respond(std::move(response));
        return;
      }
      ++opened;
      stream->context().cancellation()->on_cancel([this] { ++cancelled; });
      next(stream, std::make_shared<int>(0));
    };
  }

  static void next(std::shared_ptr<micro::StreamCall> stream, std::shared_ptr<int> count) {
    stream->async_read([stream, count](std::optional<std::string> message) {
      if (!message) {
        micro::Response status;
        status.metadata.set("Count", std::to_string(*count));
        stream->finish(std::move(status));
        return;
      }
      ++*count;
      stream->async_write("echo:" + *message, [stream, count](std::optional<micro::Error> error) {
        if (error) {
          stream->finish(micro::Response::failure(*error));
          return;
        }
        next(stream, count);
      });
    });
  }
};

}  // namespace stream_test
