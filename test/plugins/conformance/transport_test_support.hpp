// test/plugins/conformance/transport_test_support.hpp — what every transport test needs, for
// any transport: a runtime with a few I/O threads, a transport loaded by name through the
// PluginLoader, call helpers, a collector for many calls' results, and the table of what differs
// between transports (option names, the wording of their errors) that the conformance suite
// reads. The tcp suite builds on it too.
#pragma once

#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <doctest/doctest.h>

#include <micro/error.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/transport.hpp>

#include "support/wait.hpp"

namespace transport_test {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using Options = std::vector<std::pair<std::string, std::string>>;

// An io_context run by a few threads, as the runtime does. Drains on destruction, and
// stops for good after a bounded wait so a bug cannot hang the suite.
class Runtime {
 public:
  explicit Runtime(int thread_count = 3) : guard_(asio::make_work_guard(io_)) {
    for (int i = 0; i < thread_count; ++i) {
      threads_.emplace_back([this] {
        io_.run();
        std::lock_guard lock(mutex_);
        ++finished_;
        finished_changed_.notify_all();
      });
    }
  }
  ~Runtime() {
    guard_.reset();
    {
      std::unique_lock lock(mutex_);
      if (!finished_changed_.wait_for(lock, 10s, [&] { return finished_ == threads_.size(); }))
        io_.stop();
    }
    for (auto& thread : threads_) thread.join();
  }
  asio::any_io_executor executor() { return io_.get_executor(); }
  // True on one of this runtime's threads.
  bool running_in_this_thread() { return io_.get_executor().running_in_this_thread(); }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable finished_changed_;
  std::size_t finished_ = 0;
};

inline std::shared_ptr<micro::Transport> make_transport(const std::string& name, Runtime& runtime,
                                                        const Options& options = {}) {
  return micro::PluginLoader::instance().create<micro::Transport>(name, "", options,
                                                                  runtime.executor());
}

// A server-side handler that sees the call's request and answers through a ResponseHandler,
// as most of these tests' handlers do.
template <class Handler>
micro::CallHandler unary(Handler handler) {
  return [handler = std::move(handler)](micro::ServerCallPtr call) mutable {
    micro::Request& request = call->request();
    handler(request, [call = std::move(call)](micro::Response&& response) {
      call->respond(std::move(response));
    });
  };
}

// The call's own copy of a request (a call owns its request).
inline std::shared_ptr<const micro::Request> share(const micro::Request& request) {
  return std::make_shared<const micro::Request>(request);
}

inline micro::Request make_request(std::string body, std::string endpoint = "Echo.Call") {
  micro::Request request;
  request.service = "echo";
  request.endpoint = std::move(endpoint);
  request.content_type = "application/octet-stream";
  request.body = std::move(body);
  return request;
}

// Answers every request with "echo:" + body, at once.
inline micro::CallHandler echo_handler() {
  return unary([](micro::Request& request, micro::ResponseHandler respond) {
    micro::Response response;
    response.content_type = request.content_type;
    response.body = "echo:" + request.body;
    respond(std::move(response));
  });
}

// Waits for one call's response without risking a dangling promise if it never comes.
inline micro::Response call_and_wait(micro::Transport& transport, const std::string& address,
                                     const micro::Request& request,
                                     std::chrono::milliseconds limit = 10s) {
  auto promise = std::make_shared<std::promise<micro::Response>>();
  auto future = promise->get_future();
  transport.async_call(address, share(request), [promise](micro::Response&& response) {
    promise->set_value(std::move(response));
  });
  REQUIRE_MESSAGE(future.wait_for(limit) == std::future_status::ready,
                  "no response within the time limit");
  return future.get();
}

// Responses of many calls, by index, with a wait for a count.
class Collector {
 public:
  explicit Collector(std::size_t size) : responses_(size) {}
  micro::ResponseHandler handler(std::size_t index) {
    return [this, index](micro::Response&& response) {
      std::lock_guard lock(mutex_);
      responses_[index] = std::move(response);
      order_.push_back(index);
      changed_.notify_all();
    };
  }
  bool wait_all(std::chrono::milliseconds limit = 30s) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, limit, [&] { return order_.size() == responses_.size(); });
  }
  std::size_t completed() {
    std::lock_guard lock(mutex_);
    return order_.size();
  }
  std::vector<std::optional<micro::Response>>& responses() { return responses_; }
  std::vector<std::size_t> order() {
    std::lock_guard lock(mutex_);
    return order_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::optional<micro::Response>> responses_;
  std::vector<std::size_t> order_;
};

// Handlers that wait for their context to be cancelled, and what they saw.
struct CancelWatch {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::string> started, cancelled;  // request bodies

  micro::CallHandler handler() {
    return [this](micro::ServerCallPtr call) {
      std::string body = call->request().body;
      if (body.rfind("hold", 0) != 0) {  // answered at once
        micro::Response response;
        response.body = "echo:" + body;
        call->respond(std::move(response));
        return;
      }
      note(started, body);
      call->context().cancellation()->on_cancel([this, body, call] {
        note(cancelled, body);
        call->respond(micro::Response::failure(micro::cancelled_error("echo")));
      });
    };
  }
  void note(std::vector<std::string>& list, const std::string& body) {
    std::lock_guard lock(mutex);
    list.push_back(body);
    changed.notify_all();
  }
  bool wait(std::vector<std::string>& list, std::size_t count) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, 5s, [&] { return list.size() >= count; });
  }
  std::vector<std::string> get(std::vector<std::string>& list) {
    std::lock_guard lock(mutex);
    return list;
  }
};

// A loopback port nothing listens on.
inline std::string unused_address() {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  auto port = acceptor.local_endpoint().port();
  acceptor.close();
  return "127.0.0.1:" + std::to_string(port);
}

// ---- what differs between transports ---------------------------------------------------

// The conformance suite asks the same of every transport; this is the little it must know about
// each one: how its options are spelled, and the exact words of its errors.
struct TransportProfile {
  std::string name;
  // Every option the plugin's descriptor lists.
  std::set<std::string> option_names;
  // The option bounding a message's size (tcp: the whole frame; http: the body), and a small
  // value it accepts, which the suite's bodies of twice that size exceed.
  std::string size_limit_option;
  std::size_t small_size_limit = 0;
  // The option bounding how long a connect may take ("" when the transport has none).
  std::string connect_timeout_option;
  // Options that keep a client to one connection per node that carries many calls at once
  // (empty where a connection carries one call at a time): tests that promise something of
  // "the same connection" use them.
  Options one_connection;
  // The detail of the error each case provokes, "{address}" standing for the address called;
  // a trailing "…" asks for a prefix only. A case not listed is held to the contract alone:
  // its code, and naming the address where the contract says so.
  std::map<std::string, std::string> details;
  // Whether the transport carries streams (Transport::open_stream); those that do not must
  // refuse them with 501 naming the transport.
  bool streams = false;
};

inline const std::vector<TransportProfile>& transport_profiles() {
  static const std::vector<TransportProfile> profiles = {
      {
          "tcp",
          {"connect_timeout", "max_frame", "nodelay", "pool_size", "stream_window"},
          "max_frame",
          1024,
          "connect_timeout",
          {{"pool_size", "1"}},
          {
              {"deadline passed", "tcp: deadline passed waiting for the response from {address}"},
              {"deadline passed before sending",
               "tcp: deadline passed before the call to {address} was sent"},
              {"connection refused", "tcp: cannot connect to {address}: Connection refused"},
              {"address without a port", "tcp: cannot call \"{address}\": expected host:port"},
              {"listen without a port",
               "micro.server: 400 Bad Request: tcp: cannot listen on \"{address}\": expected "
               "host:port"},
              {"connect timed out", "tcp: connecting to {address} timed out after 200ms"},
              {"server killed", "tcp: connection to {address} closed with 3 calls pending…"},
              {"transport closed",
               "tcp: connection to {address} closed with 1 call pending (transport closed)"},
              {"listener closed", "tcp: connection to {address} closed with 1 call pending"},
              // 2048 bytes of body in a frame of 81 bytes more (plugins/tcp/README.md).
              {"request over the client's limit",
               "tcp: request of 2129 bytes exceeds max_frame 1024; not sent to {address}"},
              {"request over the server's limit",
               "tcp: frame of 2129 bytes exceeds max_frame 1024"},
              {"response over the server's limit",
               "tcp: response of 2080 bytes exceeds max_frame 1024"},
              {"response over the client's limit",
               "tcp: response from {address}: frame of 2080 bytes exceeds max_frame 1024"},
          },
          true,
      },
      {
          "http",
          {"body_timeout", "connect_timeout", "header_timeout", "idle_timeout", "max_body",
           "max_connections", "max_header", "pool_size"},
          "max_body",
          1024,
          "connect_timeout",
          {},  // one call at a time per connection
          {},  // held to the contract; test/plugins/http checks its wording
          false,
      },
      {
          "grpc",
          {"compression", "connect_timeout", "max_concurrent_streams", "max_message", "pool_size",
           "stream_window", "tls", "tls_ca", "tls_cert", "tls_key"},
          "max_message",
          1024,
          "connect_timeout",
          {{"pool_size", "1"}},
          {
              {"deadline passed", "grpc: deadline passed waiting for the response from {address}"},
              {"deadline passed before sending",
               "grpc: deadline passed before the call to {address} was sent"},
              {"connection refused", "grpc: cannot connect to {address}: Connection refused"},
              {"address without a port", "grpc: cannot call \"{address}\": expected host:port"},
              {"listen without a port",
               "micro.server: 400 Bad Request: grpc: cannot listen on \"{address}\": expected "
               "host:port"},
              {"connect timed out", "grpc: connecting to {address} timed out after 200ms"},
              {"server killed", "grpc: connection to {address} closed with 3 calls pending…"},
              {"transport closed",
               "grpc: connection to {address} closed with 1 call pending (transport closed)"},
              {"listener closed", "grpc: connection to {address} closed with 1 call pending…"},
              {"request over the client's limit",
               "grpc: request of 2048 bytes exceeds max_message 1024; not sent to {address}"},
              {"request over the server's limit",
               "grpc: message of 2048 bytes exceeds max_message 1024"},
              {"response over the server's limit",
               "grpc: response of 2048 bytes exceeds max_message 1024"},
              {"response over the client's limit",
               "grpc: response from {address}: message of 2048 bytes exceeds max_message 1024"},
          },
          true,
      },
  };
  return profiles;
}

inline const TransportProfile* find_profile(const std::string& name) {
  for (const auto& profile : transport_profiles())
    if (profile.name == name) return &profile;
  return nullptr;
}

// Replaces every "{address}" in `pattern`.
inline std::string fill_in(std::string pattern, const std::string& address) {
  const std::string placeholder = "{address}";
  for (auto at = pattern.find(placeholder); at != std::string::npos;
       at = pattern.find(placeholder, at + address.size()))
    pattern.replace(at, placeholder.size(), address);
  return pattern;
}

}  // namespace transport_test
