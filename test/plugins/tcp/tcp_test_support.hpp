// test/plugins/tcp/tcp_test_support.hpp — helpers for the tcp transport tests: a runtime
// with a few I/O threads, a collector for call results, and a raw socket that speaks the
// frame format from plugins/tcp/README.md (written from the spec, not from the plugin's
// code, so the two check each other).
#pragma once

#include <sys/socket.h>
#include <sys/time.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <doctest/doctest.h>

#include <micro/plugin_loader.hpp>
#include <micro/transport.hpp>

namespace tcp_test {

namespace asio = boost::asio;
using namespace std::chrono_literals;

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

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable finished_changed_;
  std::size_t finished_ = 0;
};

inline std::shared_ptr<micro::Transport> make_tcp(
    Runtime& runtime, const std::vector<std::pair<std::string, std::string>>& options = {}) {
  return micro::PluginLoader::instance().create<micro::Transport>("tcp", "", options,
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

// ---- the frame format, from the README -------------------------------------------------

inline void put(std::string& out, std::uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}
inline void put_string(std::string& out, const std::string& text) {
  put(out, text.size(), 4);
  out += text;
}
inline std::uint64_t get(const std::string& in, std::size_t offset, int bytes) {
  std::uint64_t value = 0;
  for (int i = 0; i < bytes; ++i)
    value |= std::uint64_t(static_cast<unsigned char>(in.at(offset + i))) << (8 * i);
  return value;
}

inline std::string header(std::uint8_t type, std::uint64_t request_id, std::uint32_t length,
                          std::uint8_t version = 1, std::uint16_t flags = 0,
                          std::uint16_t reserved = 0) {
  std::string out = "MT";
  put(out, version, 1);
  put(out, type, 1);
  put(out, flags, 2);
  put(out, reserved, 2);
  put(out, request_id, 8);
  put(out, length, 4);
  return out;
}

// The payload after the header; `request_frame` prepends a header with the right length.
inline std::string request_payload(const std::string& service, const std::string& endpoint,
                                   const std::string& content_type, std::uint64_t timeout,
                                   const std::vector<std::pair<std::string, std::string>>& metadata,
                                   const std::string& body) {
  std::string out;
  put_string(out, service);
  put_string(out, endpoint);
  put_string(out, content_type);
  put(out, timeout, 8);
  put(out, metadata.size(), 4);
  for (const auto& [key, value] : metadata) {
    put_string(out, key);
    put_string(out, value);
  }
  return out + body;
}

inline std::string frame(std::uint8_t type, std::uint64_t request_id, const std::string& payload) {
  return header(type, request_id, static_cast<std::uint32_t>(20 + payload.size())) + payload;
}

inline std::string response_payload(const std::string& error_json, const std::string& content_type,
                                    const std::string& body) {
  std::string out;
  put_string(out, error_json);
  put_string(out, content_type);
  put(out, 0, 4);
  return out + body;
}

struct RawResponse {
  std::uint64_t request_id = 0;
  std::uint16_t flags = 0;
  std::string error_json;
  std::string content_type;
  std::vector<std::pair<std::string, std::string>> metadata;
  std::string body;
};

// A blocking plain TCP socket with a receive timeout, for sending hand-made bytes.
class RawSocket {
 public:
  explicit RawSocket(const std::string& address) : socket_(io_) {
    auto colon = address.rfind(':');
    asio::ip::tcp::endpoint endpoint(
        asio::ip::make_address(address.substr(0, colon)),
        static_cast<unsigned short>(std::stoi(address.substr(colon + 1))));
    socket_.connect(endpoint);
    timeval timeout{5, 0};
    ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  }
  void send(const std::string& bytes) { asio::write(socket_, asio::buffer(bytes)); }
  // Closes the connection, as a client process that goes away does.
  void close() {
    boost::system::error_code ignored;
    socket_.close(ignored);
  }

  // Reads exactly `size` bytes; nullopt on EOF or timeout.
  std::optional<std::string> read_exactly(std::size_t size) {
    std::string data(size, '\0');
    boost::system::error_code error;
    asio::read(socket_, asio::buffer(data), error);
    if (error) return std::nullopt;
    return data;
  }

  std::optional<RawResponse> read_response() {
    auto head = read_exactly(20);
    if (!head) return std::nullopt;
    REQUIRE(head->substr(0, 2) == "MT");
    REQUIRE(get(*head, 2, 1) == 1);
    REQUIRE(get(*head, 3, 1) == 2);
    RawResponse response;
    response.flags = static_cast<std::uint16_t>(get(*head, 4, 2));
    response.request_id = get(*head, 8, 8);
    auto length = get(*head, 16, 4);
    auto rest = read_exactly(length - 20);
    REQUIRE(rest);
    std::string whole = *head + *rest;
    std::size_t at = 20;
    auto string = [&] {
      auto size = get(whole, at, 4);
      std::string text = whole.substr(at + 4, size);
      at += 4 + size;
      return text;
    };
    response.error_json = string();
    response.content_type = string();
    auto count = get(whole, at, 4);
    at += 4;
    for (std::uint64_t i = 0; i < count; ++i) {
      std::string key = string();
      response.metadata.emplace_back(key, string());
    }
    response.body = whole.substr(at);
    return response;
  }

  // True when the peer closed (EOF or reset) within the receive timeout.
  bool peer_closed() {
    char byte;
    boost::system::error_code error;
    socket_.read_some(asio::buffer(&byte, 1), error);
    return error == asio::error::eof || error == asio::error::connection_reset;
  }

 private:
  asio::io_context io_;
  asio::ip::tcp::socket socket_;
};

// Resident memory of this process in KiB, from /proc.
inline long resident_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

// A loopback port nothing listens on.
inline std::string unused_address() {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  auto port = acceptor.local_endpoint().port();
  acceptor.close();
  return "127.0.0.1:" + std::to_string(port);
}

}  // namespace tcp_test
