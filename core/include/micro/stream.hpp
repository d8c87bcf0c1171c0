// micro/stream.hpp — streams as users and wrappers hold them.
//
// The transport moves a stream as a MessageStream (<micro/transport.hpp>); this header gives
// it handles: Stream (raw bytes) and TypedStream<Send, Receive> (values converted by
// message_codec, <micro/codec.hpp>, in the head's content type), each with asynchronous read/write
// taking any Asio completion token and blocking conveniences, and ForwardingStream, the base a
// stream wrapper derives from to observe messages and the end.
//
//   // client, in a coroutine (name messages before co_await: see README, g++ 12):
//   auto stream = co_await client.open_stream(std::move(head), options, use_awaitable);
//   while (auto tick = co_await stream.read(use_awaitable)) handle(*tick);
//   if (auto error = stream.error()) ...
//
//   // server, a typed stream handler (a coroutine):
//   service.handle_stream("Prices.Watch",
//       [](micro::Context&, micro::ServerStream<Watch, Tick> stream)
//           -> boost::asio::awaitable<void> {
//         auto watch = co_await stream.read(boost::asio::use_awaitable);
//         for (int i = 0; i < watch->count; ++i) {
//           Tick tick{i};
//           if (auto error = co_await stream.write(tick, boost::asio::use_awaitable)) co_return;
//         }
//       });  // returning ends the stream with success; throwing micro::Exception with its error
#pragma once

#include <future>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>

#include <nlohmann/json.hpp>

#include <micro/codec.hpp>
#include <micro/error.hpp>
#include <micro/transport.hpp>

namespace micro {

// Forwards everything to `inner`. A stream wrapper derives from it, overrides what it
// observes (counting messages in async_read / async_write, the end in on_end or finish) and
// passes the derived stream on in place of the inner one.
class ForwardingStream : public MessageStream {
 public:
  explicit ForwardingStream(MessageStreamPtr inner) : inner_(std::move(inner)) {}

  Request& request() override { return inner_->request(); }
  void async_read(StreamReadHandler done) override { inner_->async_read(std::move(done)); }
  void async_write(std::string message, StreamWriteHandler done) override {
    inner_->async_write(std::move(message), std::move(done));
  }
  void close_send() override { inner_->close_send(); }
  bool finish(Response&& status) override { return inner_->finish(std::move(status)); }
  bool ended() const override { return inner_->ended(); }
  Response status() const override { return inner_->status(); }
  void on_end(ResponseHandler done) override { inner_->on_end(std::move(done)); }

  const MessageStreamPtr& inner() const noexcept { return inner_; }

 protected:
  MessageStreamPtr inner_;
};

// An already ended stream: what a failed open gives (reads see nullopt, writes fail, status()
// is the error).
MessageStreamPtr make_ended_stream(Request head, Error error);

namespace detail {

// Runs `start(callback)` with a std::function callback that completes the token's handler
// on its associated executor (`fallback` when it has none), once, as an rvalue.
template <class Signature, class Token, class Start>
auto stream_initiate(const boost::asio::any_io_executor& fallback, Token&& token, Start start) {
  return boost::asio::async_initiate<Token, Signature>(
      [fallback](auto handler, Start start) {
        using Handler = decltype(handler);
        auto shared = std::make_shared<Handler>(std::move(handler));
        auto executor = boost::asio::get_associated_executor(*shared, fallback);
        start([shared, executor](auto&&... args) {
          boost::asio::dispatch(executor, [shared, ... values = std::move(args)]() mutable {
            std::move (*shared)(std::move(values)...);
          });
        });
      },
      token, std::move(start));
}

}  // namespace detail

// A handle on one end of a stream, copyable (copies share the stream). Completions of the
// token-taking functions run on the token's associated executor, else on `executor`.
// The blocking ones must never run on an I/O thread.
class Stream {
 public:
  Stream() = default;
  Stream(MessageStreamPtr stream, boost::asio::any_io_executor executor)
      : stream_(std::move(stream)), executor_(std::move(executor)) {}

  // Completes with the next message, or nullopt when the peer sends no more (then, once
  // ended(), status()/error() say how the stream ended).
  template <class Token>
  auto read(Token&& token) {
    return detail::stream_initiate<void(std::optional<std::string>)>(
        executor_, std::forward<Token>(token),
        [stream = stream_](auto callback) { stream->async_read(std::move(callback)); });
  }
  // Completes with nullopt once the message is sent (within the peer's window), or with the
  // error that ended the stream.
  template <class Token>
  auto write(std::string message, Token&& token) {
    return detail::stream_initiate<void(std::optional<Error>)>(
        executor_, std::forward<Token>(token),
        [stream = stream_, message = std::move(message)](auto callback) mutable {
          stream->async_write(std::move(message), std::move(callback));
        });
  }

  // Blocking forms. send throws micro::Exception with the error that ended the stream.
  std::optional<std::string> receive();
  void send(std::string message);

  void close_send() { stream_->close_send(); }
  // Ends the stream at once with 499 (micro.client, "stream cancelled"); the peer is told.
  void cancel();
  bool ended() const { return stream_->ended(); }
  Response status() const { return stream_->status(); }
  // The error the stream ended with; nullopt while open and after a successful end.
  std::optional<Error> error() const;
  Context& context() { return stream_->request().context; }
  const Request& request() const { return stream_->request(); }

  const MessageStreamPtr& raw() const noexcept { return stream_; }
  const boost::asio::any_io_executor& executor() const noexcept { return executor_; }
  explicit operator bool() const noexcept { return stream_ != nullptr; }

 private:
  MessageStreamPtr stream_;
  boost::asio::any_io_executor executor_;
};

// A Stream whose messages are values: Send written, Receive read, each one codec message
// (the head's content type; JSON when empty). A message that cannot be decoded ends the
// stream with 400 naming the endpoint, and the read completes with nullopt.
template <class Send, class Receive>
class TypedStream {
 public:
  TypedStream() = default;
  explicit TypedStream(Stream stream) : stream_(std::move(stream)) {}

  template <class Token>
  auto read(Token&& token) {
    return detail::stream_initiate<void(std::optional<Receive>)>(
        stream_.executor(), std::forward<Token>(token), [stream = stream_.raw()](auto callback) {
          stream->async_read(
              [stream, callback = std::move(callback)](std::optional<std::string> message) mutable {
                callback(decode(*stream, std::move(message)));
              });
        });
  }
  template <class Token>
  auto write(const Send& value, Token&& token) {
    return stream_.write(encode(*stream_.raw(), value), std::forward<Token>(token));
  }

  std::optional<Receive> receive() { return decode(*stream_.raw(), stream_.receive()); }
  void send(const Send& value) { stream_.send(encode(*stream_.raw(), value)); }

  void close_send() { stream_.close_send(); }
  void cancel() { stream_.cancel(); }
  bool ended() const { return stream_.ended(); }
  Response status() const { return stream_.status(); }
  std::optional<Error> error() const { return stream_.error(); }
  Context& context() { return stream_.context(); }
  const Stream& untyped() const noexcept { return stream_; }
  explicit operator bool() const noexcept { return static_cast<bool>(stream_); }

 private:
  static std::string encode(MessageStream& stream, const Send& value) {
    std::string out;
    message_codec<Send>::encode(stream.request().content_type, value, out);
    return out;
  }
  static std::optional<Receive> decode(MessageStream& stream, std::optional<std::string> message) {
    if (!message) return std::nullopt;
    try {
      return message_codec<Receive>::decode(stream.request().content_type, *message);
    } catch (const std::exception& e) {
      const Request& head = stream.request();
      stream.finish(Response::failure(
          bad_request(head.service.empty() ? "micro.stream" : head.service,
                      "cannot read a message of stream " + head.endpoint + ": " + e.what())));
      return std::nullopt;
    }
  }

  Stream stream_;
};

// The server's end in a typed stream handler: reads In, writes Out. Returning from the
// handler ends the stream with success.
template <class In, class Out>
using ServerStream = TypedStream<Out, In>;

}  // namespace micro
