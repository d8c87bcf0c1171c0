// The streaming example's server: the three shapes of stream on one service, "streaming".
//   Ticker.Watch  server stream: one Watch, then `count` price ticks, `interval_ms` apart
//   Upload.Send   client stream: chunks until the client closes its side, then one Summary
//   Chat.Talk     bidirectional: a chat room; every message goes to every participant
// Ticker and Upload are typed coroutine handlers; the chat is a raw stream handler driven by
// callbacks, since a participant's stream is written by whichever participant speaks.
//
//   streaming-server [--registry=file?dir=/tmp/reg] [--server_address=127.0.0.1:0]
#include <cmath>
#include <deque>
#include <iostream>
#include <memory>
#include <mutex>
#include <set>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <micro/base64.hpp>
#include <micro/service.hpp>

#include "streaming.hpp"

namespace {

using boost::asio::use_awaitable;

constexpr int max_ticks = 100000;
constexpr int max_interval_ms = 60000;
// A participant that falls this far behind the room loses messages rather than growing the
// server's memory (the room never waits for its slowest reader).
constexpr std::size_t max_queued_per_participant = 256;

boost::asio::awaitable<void> watch(micro::Context&,
                                   micro::ServerStream<streaming::Watch, streaming::Tick> stream) {
  auto request = co_await stream.read(use_awaitable);
  if (!request) co_return;  // the client closed without asking
  if (request->count < 1 || request->count > max_ticks)
    throw micro::Exception(
        micro::bad_request("streaming", "count must be 1.." + std::to_string(max_ticks) + ", got " +
                                            std::to_string(request->count)));
  if (request->interval_ms < 0 || request->interval_ms > max_interval_ms)
    throw micro::Exception(micro::bad_request(
        "streaming", "interval_ms must be 0.." + std::to_string(max_interval_ms) + ", got " +
                         std::to_string(request->interval_ms)));
  boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor);
  double price = 100;
  for (int sequence = 1; sequence <= request->count; ++sequence) {
    if (sequence > 1 && request->interval_ms > 0) {
      timer.expires_after(std::chrono::milliseconds(request->interval_ms));
      co_await timer.async_wait(use_awaitable);
    }
    price = std::round((price + std::sin(sequence) * 0.75) * 100) / 100;  // a gentle wobble
    streaming::Tick tick{request->symbol, sequence, price};
    if (auto error = co_await stream.write(tick, use_awaitable)) co_return;  // client went away
  }
}

boost::asio::awaitable<void> upload(
    micro::Context&, micro::ServerStream<streaming::Chunk, streaming::Summary> stream) {
  streaming::Summary summary;
  streaming::Checksum checksum;
  while (auto chunk = co_await stream.read(use_awaitable)) {
    micro::base64::DecodeError problem;
    auto bytes = micro::base64::try_decode(chunk->data, &problem);
    if (!bytes)
      throw micro::Exception(micro::bad_request(
          "streaming",
          "chunk " + std::to_string(summary.chunks + 1) + " is not base64: " + problem.message));
    checksum.add(*bytes);
    summary.chunks++;
    summary.bytes += static_cast<std::int64_t>(bytes->size());
  }
  if (stream.ended()) co_return;  // cancelled or failed, not closed: nobody to answer
  summary.checksum = checksum.hex();
  co_await stream.write(summary, use_awaitable);
}

// One chat participant: its stream and the messages waiting to be written to it (one write
// outstanding at a time, as streams allow).
class Participant : public std::enable_shared_from_this<Participant> {
 public:
  explicit Participant(micro::MessageStreamPtr stream) : stream_(std::move(stream)) {}

  void deliver(const std::string& encoded) {
    std::lock_guard lock(mutex_);
    if (queue_.size() >= max_queued_per_participant) return;  // too slow: this one misses it
    queue_.push_back(encoded);
    if (!writing_) write_front_locked();
  }

  // Reading ended: finish once what is queued has gone out (its own last messages too).
  void closing() {
    std::lock_guard lock(mutex_);
    closing_ = true;
    if (!writing_) stream_->finish(micro::Response{});
  }

  const micro::MessageStreamPtr& stream() const { return stream_; }

 private:
  void write_front_locked() {
    writing_ = true;
    stream_->async_write(queue_.front(),
                         [self = shared_from_this()](std::optional<micro::Error> error) {
                           std::lock_guard lock(self->mutex_);
                           self->queue_.pop_front();
                           if (error)
                             self->queue_.clear();  // the stream ended: nothing more will go out
                           if (!self->queue_.empty()) {
                             self->write_front_locked();
                             return;
                           }
                           self->writing_ = false;
                           if (self->closing_) self->stream_->finish(micro::Response{});
                         });
  }

  micro::MessageStreamPtr stream_;
  std::mutex mutex_;
  std::deque<std::string> queue_;
  bool writing_ = false;
  bool closing_ = false;
};

class ChatRoom : public std::enable_shared_from_this<ChatRoom> {
 public:
  void join(const micro::MessageStreamPtr& stream) {
    auto participant = std::make_shared<Participant>(stream);
    {
      std::lock_guard lock(mutex_);
      participants_.insert(participant);
    }
    read_next(participant);
  }

 private:
  void read_next(const std::shared_ptr<Participant>& participant) {
    participant->stream()->async_read(
        [room = shared_from_this(), participant](std::optional<std::string> message) {
          if (!message) {
            room->leave(participant);
            return;
          }
          // Checked as a ChatMessage, passed on as it came (every participant gets the same bytes).
          try {
            (void)nlohmann::json::parse(*message).get<streaming::ChatMessage>();
          } catch (const std::exception& e) {
            participant->stream()->finish(micro::Response::failure(
                micro::bad_request("streaming", std::string("not a chat message: ") + e.what())));
            room->leave(participant);
            return;
          }
          room->broadcast(*message);
          room->read_next(participant);
        });
  }

  void broadcast(const std::string& encoded) {
    std::lock_guard lock(mutex_);
    for (const auto& participant : participants_) participant->deliver(encoded);
  }

  void leave(const std::shared_ptr<Participant>& participant) {
    {
      std::lock_guard lock(mutex_);
      participants_.erase(participant);
    }
    participant->closing();
  }

  std::mutex mutex_;
  std::set<std::shared_ptr<Participant>> participants_;
};

}  // namespace

int main(int argc, char** argv) try {
  auto config = micro::Config::load(argc, argv, "registry=file transport=tcp");
  micro::Microservice service("streaming", config);
  service.handle_stream("Ticker.Watch", watch);
  service.handle_stream("Upload.Send", upload);
  auto room = std::make_shared<ChatRoom>();
  service.handle_stream("Chat.Talk",
                        [room](const micro::MessageStreamPtr& stream) { room->join(stream); });
  service.start();
  std::cout << "streaming listening on " << service.server().address() << std::endl;
  service.run();  // until SIGTERM/SIGINT, then deregister and drain
  std::cout << "streaming stopped" << std::endl;
  return 0;
} catch (const std::exception& e) {
  std::cerr << "streaming-server: " << e.what() << "\n";
  return 1;
}
