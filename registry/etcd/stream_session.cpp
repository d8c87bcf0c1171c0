// stream_session.cpp — an etcd gateway stream: opened on the preferred endpoint, its answer read
// on the HTTP client's I/O thread into an inbox (JSON messages, the status, how it ended) that
// the owner's thread takes with wait().
#include "stream_session.hpp"

#include <boost/asio/use_future.hpp>

#include <micro/error.hpp>

namespace micro::etcd {

using micro::http::no_deadline;

namespace {

// A failure's text, with a hint when etcd refused our TLS certificate.
std::string describe(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const micro::Exception& failure) {
    return explain_tls_refusal(failure.error().detail);
  } catch (const std::exception& failure) {
    return failure.what();
  }
}

}  // namespace

struct StreamSession::Inbox {
  std::mutex mutex;
  std::condition_variable changed;
  std::string pending;  // an incomplete line
  std::vector<nlohmann::json> messages;
  unsigned status = 0;
  bool ended = false;
  std::string why;
  bool woken = false;
  bool news = false;  // something for the next wait()

  void tell(std::unique_lock<std::mutex>& lock) {
    news = true;
    lock.unlock();
    changed.notify_all();
  }

  void head(unsigned code) {
    std::unique_lock lock(mutex);
    status = code;
    tell(lock);
  }

  // False when the stream cannot go on (a line that is not JSON).
  bool add(std::string_view piece) {
    std::unique_lock lock(mutex);
    pending.append(piece);
    try {
      for (auto& message : take_json_lines(pending)) messages.push_back(std::move(message));
    } catch (const micro::Exception& error) {
      ended = true;
      why = error.error().detail;
      tell(lock);
      return false;
    }
    tell(lock);
    return true;
  }

  void end(std::string reason) {
    std::unique_lock lock(mutex);
    if (ended) return;
    // An error answer (not 200) need not end with a newline.
    pending += '\n';
    try {
      for (auto& message : take_json_lines(pending)) messages.push_back(std::move(message));
    } catch (const micro::Exception&) {
    }
    ended = true;
    why = std::move(reason);
    tell(lock);
  }
};

StreamSession::StreamSession(Client& client, std::string path, bool duplex)
    : client_(client),
      path_(std::move(path)),
      duplex_(duplex),
      endpoint_(client.preferred_endpoint() % client.options().endpoints.size()),
      inbox_(std::make_shared<Inbox>()),
      cancellation_(std::make_shared<micro::http::Cancellation>()) {}

StreamSession::~StreamSession() {
  cancel();
}

std::string StreamSession::endpoint_text() const {
  return client_.options().endpoints[endpoint_].authority();
}

void StreamSession::open(std::string first_message) {
  const auto& options = client_.options();
  auto request = client_.make_request(endpoint_, path_, std::move(first_message));
  // etcd's "require leader": a member cut off from its leader ends the stream, so the stream
  // moves to a member that can still serve it.
  request.headers.push_back({"Grpc-Metadata-hasleader", "true"});
  const auto opened = Clock::now();
  micro::http::RequestOptions request_options;
  request_options.deadline = opened + options.dial_timeout + options.request_timeout;
  request_options.connect_timeout = options.dial_timeout;
  request_options.cancellation = cancellation_;
  auto& http = client_.http();
  stream_ = duplex_ ? http.open_duplex(std::move(request), request_options)
                    : http.open(std::move(request), request_options);
  // The head may take a while: a keep-alive stream is answered only once primed (see
  // lease_keeper.cpp), which its owner bounds by request_timeout itself.
  const auto head_deadline = opened + options.dial_timeout + 2 * options.request_timeout;
  stream_->async_read_head(
      head_deadline,
      [stream = stream_, inbox = inbox_](std::exception_ptr error, micro::http::Response head) {
        if (error) return inbox->end(describe(error));
        inbox->head(static_cast<unsigned>(head.status));
        read_body(stream, inbox);
      });
}

void StreamSession::read_body(std::shared_ptr<micro::http::Stream> stream,
                              std::shared_ptr<Inbox> inbox) {
  auto& reader = *stream;
  reader.async_read_some(no_deadline, [stream = std::move(stream), inbox = std::move(inbox)](
                                          std::exception_ptr error, std::string piece) mutable {
    if (error) return inbox->end("etcd stream ended: " + describe(error));
    if (piece.empty()) return inbox->end("etcd ended the stream");
    if (inbox->add(piece)) read_body(std::move(stream), std::move(inbox));
  });
}

void StreamSession::send(std::string message) {
  stream_
      ->async_write(std::move(message), Clock::now() + client_.options().request_timeout,
                    boost::asio::use_future)
      .get();
}

void StreamSession::finish() {
  try {
    stream_->async_finish(Clock::now() + std::chrono::seconds(1), boost::asio::use_future).get();
  } catch (const std::exception&) {
    // Closing the connection ends etcd's side of the stream too.
  }
}

StreamSession::Update StreamSession::wait(Clock::time_point until) {
  std::unique_lock lock(inbox_->mutex);
  inbox_->changed.wait_until(lock, until, [&] { return inbox_->news || inbox_->woken; });
  Update update;
  update.messages.swap(inbox_->messages);
  update.status = inbox_->status;
  update.ended = inbox_->ended;
  update.why = inbox_->why;
  inbox_->news = false;
  inbox_->woken = false;
  return update;
}

void StreamSession::wake() {
  {
    std::lock_guard lock(inbox_->mutex);
    inbox_->woken = true;
  }
  inbox_->changed.notify_all();
}

void StreamSession::cancel() {
  cancellation_->cancel();
}

}  // namespace micro::etcd
