// stream_session.hpp — one long-lived stream to etcd's gateway, the one shape both the watch
// (/v3/watch: one request message, answers for as long as the watch lives) and the lease
// keep-alive (/v3/lease/keepalive: a request body held open, one message per lease due) have.
// The answer's newline-separated JSON messages are collected as they arrive on the HTTP client's
// I/O thread and taken by the owner's thread with wait(), so the owner's callbacks run on its own
// thread, as before.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "etcd_client.hpp"

namespace micro::etcd {

class StreamSession {
 public:
  using Clock = std::chrono::steady_clock;

  // What arrived since the last wait().
  struct Update {
    std::vector<nlohmann::json> messages;
    unsigned status = 0;  // the answer's HTTP status; 0 until its head arrived
    bool ended = false;   // the stream is over: `why` says how
    std::string why;
  };

  // A stream to the client's preferred endpoint at `path`. `duplex`: the request body stays
  // open for send(); otherwise `first_message` is the whole body. Connects nothing yet.
  StreamSession(Client& client, std::string path, bool duplex);
  // Ends the stream (without finishing a duplex body: the connection just closes).
  ~StreamSession();
  StreamSession(const StreamSession&) = delete;
  StreamSession& operator=(const StreamSession&) = delete;

  std::size_t endpoint() const noexcept { return endpoint_; }
  // "127.0.0.1:2379", for messages.
  std::string endpoint_text() const;

  // Connects and sends the request with `first_message` as its body (the first chunk of a duplex
  // body), within dial_timeout + request_timeout, then reads the answer in the background.
  // Throws micro::Exception.
  void open(std::string first_message);
  // Duplex: sends one more piece of the body, within request_timeout. Throws micro::Exception.
  void send(std::string message);
  // Duplex: ends the body (etcd then ends the stream); a failure is ignored.
  void finish();

  // Waits until something arrived, the stream ended, wake() was called or `until` passed
  // (`until` in the past: only takes what is there), and takes it. Throws micro::Exception (502)
  // when etcd sent a line that is not JSON.
  Update wait(Clock::time_point until);
  // From any thread: makes a wait() in progress (or the next one) return.
  void wake();
  // From any thread: ends the stream; wait() reports it ended.
  void cancel();

 private:
  struct Inbox;  // what the I/O thread hands over, shared with its callbacks
  // Reads the body piece by piece until it ends (on the I/O thread: each completion starts the
  // next read).
  static void read_body(std::shared_ptr<micro::http::Stream> stream, std::shared_ptr<Inbox> inbox);

  Client& client_;
  const std::string path_;
  const bool duplex_;
  const std::size_t endpoint_;
  std::shared_ptr<Inbox> inbox_;
  std::shared_ptr<micro::http::Cancellation> cancellation_;
  std::shared_ptr<micro::http::Stream> stream_;
};

}  // namespace micro::etcd
