// Stream handles: the blocking conveniences, cancel, an already ended stream for failed
// opens, and the default Transport::open_stream of transports that cannot stream (501).
#include <micro/stream.hpp>

#include <mutex>

namespace micro {

namespace {

// A stream that ended before it opened: every operation reports the error.
class EndedStream final : public MessageStream {
 public:
  EndedStream(Request head, Error error) : head_(std::move(head)) {
    status_ = Response::failure(std::move(error));
  }

  Request& request() override { return head_; }
  void async_read(StreamReadHandler done) override { done(std::nullopt); }
  void async_write(std::string, StreamWriteHandler done) override { done(*status_.error); }
  void close_send() override {}
  bool finish(Response&&) override { return false; }
  bool ended() const override { return true; }
  Response status() const override { return status_; }
  void on_end(ResponseHandler done) override {
    Response copy = status_;
    done(std::move(copy));
  }

 private:
  Request head_;
  Response status_;
};

}  // namespace

MessageStreamPtr make_ended_stream(Request head, Error error) {
  return std::make_shared<EndedStream>(std::move(head), std::move(error));
}

std::optional<std::string> Stream::receive() {
  std::promise<std::optional<std::string>> promise;
  auto future = promise.get_future();
  stream_->async_read(
      [&promise](std::optional<std::string> message) { promise.set_value(std::move(message)); });
  return future.get();
}

void Stream::send(std::string message) {
  std::promise<std::optional<Error>> promise;
  auto future = promise.get_future();
  stream_->async_write(std::move(message), [&promise](std::optional<Error> error) {
    promise.set_value(std::move(error));
  });
  if (auto error = future.get()) throw Exception(std::move(*error));
}

void Stream::cancel() {
  stream_->finish(Response::failure(cancelled_error("micro.client", "stream cancelled")));
}

std::optional<Error> Stream::error() const {
  if (!stream_->ended()) return std::nullopt;
  return stream_->status().error;
}

void Transport::open_stream(std::string_view address, std::shared_ptr<const Request> request,
                            OpenStreamHandler done) {
  std::string name = transport_name();
  done(nullptr,
       Error("micro.client", 501,
             (name.empty() ? std::string("this transport") : "the " + name + " transport") +
                 " cannot stream (opening " + request->service + "." + request->endpoint + " at " +
                 std::string(address) + ")"));
}

}  // namespace micro
