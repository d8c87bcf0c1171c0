// test/wrappers/memory_stream.hpp — one stream end held in memory, for driving stream
// wrappers without a transport (log and trace wrapper tests).
#pragma once

#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <micro/error.hpp>
#include <micro/transport.hpp>

namespace test_support {

// A stream end held in memory: `incoming` are the peer's messages (then its close), writes
// are kept in `sent`; finish() ends it and runs the on_end callbacks. Completions run inline.
class MemoryStream final : public micro::MessageStream {
 public:
  explicit MemoryStream(std::string endpoint) { request_.endpoint = std::move(endpoint); }

  micro::Request& request() override { return request_; }
  void async_read(micro::StreamReadHandler done) override {
    std::unique_lock lock(mutex_);
    if (incoming.empty()) {
      lock.unlock();
      done(std::nullopt);
      return;
    }
    std::string message = std::move(incoming.front());
    incoming.pop_front();
    lock.unlock();
    done(std::move(message));
  }
  void async_write(std::string message, micro::StreamWriteHandler done) override {
    if (ended()) {
      done(micro::unavailable("test", "ended"));
      return;
    }
    sent.push_back(std::move(message));
    done(std::nullopt);
  }
  void close_send() override {}
  bool finish(micro::Response&& status) override {
    std::vector<micro::ResponseHandler> callbacks;
    {
      std::lock_guard lock(mutex_);
      if (ended_) return false;
      ended_ = true;
      status_ = status;
      callbacks.swap(on_end_);
    }
    for (auto& callback : callbacks) callback(micro::Response(status_));
    return true;
  }
  bool ended() const override {
    std::lock_guard lock(mutex_);
    return ended_;
  }
  micro::Response status() const override {
    std::lock_guard lock(mutex_);
    return status_;
  }
  void on_end(micro::ResponseHandler done) override {
    std::unique_lock lock(mutex_);
    if (!ended_) {
      on_end_.push_back(std::move(done));
      return;
    }
    lock.unlock();
    done(micro::Response(status_));
  }

  std::deque<std::string> incoming;
  std::vector<std::string> sent;

 private:
  mutable std::mutex mutex_;
  micro::Request request_;
  bool ended_ = false;
  micro::Response status_;
  std::vector<micro::ResponseHandler> on_end_;
};

// Reads every message through `stream` (inline completions), returning how many.
inline int read_all(const micro::MessageStreamPtr& stream) {
  int count = 0;
  bool more = true;
  while (more)
    stream->async_read([&](std::optional<std::string> message) {
      more = message.has_value();
      if (more) ++count;
    });
  return count;
}

}  // namespace test_support
