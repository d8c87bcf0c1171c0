// test/plugins/tcp/tcp_test_support.hpp — helpers for the tcp transport's own tests, on top of
// the conformance suite's (runtime, call helpers, collector): a raw socket that speaks the
// frame format from plugins/tcp/README.md (written from the spec, not from the plugin's code,
// so the two check each other).
#pragma once

#include <sys/socket.h>
#include <sys/time.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <doctest/doctest.h>

#include "../conformance/transport_test_support.hpp"

namespace tcp_test {

using namespace transport_test;

inline std::shared_ptr<micro::Transport> make_tcp(Runtime& runtime, const Options& options = {}) {
  return make_transport("tcp", runtime, options);
}

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

// Any frame, whole: its type, id and bytes (header included).
struct RawFrame {
  std::uint8_t type = 0;
  std::uint64_t id = 0;
  std::string bytes;
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

  std::optional<RawFrame> read_frame() {
    auto head = read_exactly(20);
    if (!head) return std::nullopt;
    REQUIRE(head->substr(0, 2) == "MT");
    RawFrame frame;
    frame.type = static_cast<std::uint8_t>(get(*head, 3, 1));
    frame.id = get(*head, 8, 8);
    auto length = get(*head, 16, 4);
    REQUIRE(length >= 20);
    auto rest = read_exactly(length - 20);
    REQUIRE(rest);
    frame.bytes = *head + *rest;
    return frame;
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

}  // namespace tcp_test
