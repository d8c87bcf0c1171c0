// A raw HTTP/1.1 client for server tests: a blocking POSIX socket that writes exactly the bytes a
// test gives (pipelined requests, broken heads, half-sent bodies) and reads responses one at a
// time. Every read is bounded (SO_RCVTIMEO), so a server that fails to answer fails the test
// instead of hanging it.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace raw_http {

struct Response {
  int status = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;  // as received
  std::string body;

  // The first header named `name` (case-insensitive), "" when absent.
  std::string header(const std::string& name) const {
    for (const auto& [key, value] : headers) {
      if (strcasecmp(key.c_str(), name.c_str()) == 0) return value;
    }
    return {};
  }
  bool has_header(const std::string& name) const {
    for (const auto& [key, value] : headers) {
      if (strcasecmp(key.c_str(), name.c_str()) == 0) return true;
    }
    return false;
  }
};

class Connection {
 public:
  // "127.0.0.1:port"
  explicit Connection(const std::string& address,
                      std::chrono::milliseconds read_timeout = std::chrono::seconds(5)) {
    auto colon = address.rfind(':');
    sockaddr_in peer{};
    peer.sin_family = AF_INET;
    peer.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
    ::inet_pton(AF_INET, address.substr(0, colon).c_str(), &peer.sin_addr);
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&peer), sizeof peer) != 0) {
      throw std::runtime_error("cannot connect to " + address);
    }
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    set_read_timeout(read_timeout);
  }
  ~Connection() { close(); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void set_read_timeout(std::chrono::milliseconds timeout) {
    timeval limit{};
    limit.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    limit.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  }

  // Writes every byte (false when the peer is gone).
  bool send(const std::string& bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
      auto n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<std::size_t>(n);
    }
    return true;
  }

  // The next response (Content-Length framed, or read to the close); nullopt when the
  // connection ended or the read timed out before a whole response arrived.
  std::optional<Response> read_response() {
    std::size_t head_end;
    while ((head_end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) return std::nullopt;
    }
    Response response;
    std::string head = buffer_.substr(0, head_end);
    buffer_.erase(0, head_end + 4);
    std::size_t line_end = head.find("\r\n");
    std::string status_line = head.substr(0, line_end);
    // "HTTP/1.1 200 OK"
    auto first_space = status_line.find(' ');
    response.status = std::atoi(status_line.c_str() + first_space + 1);
    auto second_space = status_line.find(' ', first_space + 1);
    if (second_space != std::string::npos) response.reason = status_line.substr(second_space + 1);
    std::size_t position = line_end == std::string::npos ? head.size() : line_end + 2;
    while (position < head.size()) {
      auto end = head.find("\r\n", position);
      if (end == std::string::npos) end = head.size();
      std::string line = head.substr(position, end - position);
      auto colon = line.find(':');
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      response.headers.emplace_back(line.substr(0, colon), value);
      position = end + 2;
    }
    if (response.status / 100 == 1) return response;  // 100 Continue: no body
    std::string length = response.header("Content-Length");
    if (length.empty()) {
      while (fill()) {
      }
      response.body = std::move(buffer_);
      buffer_.clear();
      return response;
    }
    const std::size_t size = std::stoull(length);
    while (buffer_.size() < size) {
      if (!fill()) return std::nullopt;
    }
    response.body = buffer_.substr(0, size);
    buffer_.erase(0, size);
    return response;
  }

  // Whether the server closed the connection (EOF or reset) with nothing more to read, within
  // the read timeout.
  bool closed_by_peer() {
    if (!buffer_.empty()) return false;
    char byte;
    auto n = ::recv(fd_, &byte, 1, 0);
    if (n > 0) {
      buffer_.push_back(byte);
      return false;
    }
    return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
  }

  // Ends our side only (FIN); the server may still answer.
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  bool fill() {
    char piece[65536];
    auto n = ::recv(fd_, piece, sizeof piece, 0);
    if (n <= 0) return false;
    buffer_.append(piece, static_cast<std::size_t>(n));
    return true;
  }

  int fd_ = -1;
  std::string buffer_;
};

// "POST / HTTP/1.1" with Host, Content-Length and the given extra lines ("Name: value\r\n"…).
inline std::string post(const std::string& body, const std::string& extra = {},
                        const std::string& target = "/") {
  return "POST " + target +
         " HTTP/1.1\r\nHost: localhost\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
         extra + "\r\n" + body;
}

}  // namespace raw_http
