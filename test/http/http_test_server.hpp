// A real HTTP/1.1 server for the HTTP client's tests: Boost.Beast, synchronous, one thread per
// connection, on 127.0.0.1:0, plain or TLS (optionally demanding a client certificate). Each
// test gives the function that serves one connection; the server counts connections and stops
// (closing every socket, joining every thread) when destroyed. Signal lets a test and a
// connection wait for each other without sleeping.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <limits>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

namespace http_test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using namespace std::chrono_literals;

// A condition one thread raises and another waits for (bounded).
class Signal {
 public:
  void raise() {
    {
      std::lock_guard lock(mutex_);
      raised_ = true;
    }
    changed_.notify_all();
  }
  bool wait(std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return raised_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool raised_ = false;
};

// One accepted connection, as the serving function sees it: blocking reads and writes.
class Peer {
 public:
  virtual ~Peer() = default;
  // The next request, whole; nullopt when the client closed the connection.
  virtual std::optional<http::request<http::string_body>> read_request() = 0;
  // The next request's head; its body is then read with read_body_piece().
  virtual bool read_request_head() = 0;
  // The next piece of that body; "" when it ended (or the connection did).
  virtual std::string read_body_piece() = 0;
  virtual void write(http::response<http::string_body>& response) = 0;
  // Raw bytes (a chunked response written by hand).
  virtual void write_raw(const std::string& bytes) = 0;
  // Ends the connection (FIN); also done when the serving function returns.
  virtual void close() = 0;

  // A 200 (or `status`) with `body`, kept alive.
  void answer(const std::string& body, unsigned status = 200) {
    http::response<http::string_body> response{static_cast<http::status>(status), 11};
    response.keep_alive(true);
    response.body() = body;
    response.prepare_payload();
    write(response);
  }
  // The head of a chunked response, then write_chunk() and end_chunks().
  void begin_chunks(unsigned status = 200) {
    write_raw("HTTP/1.1 " + std::to_string(status) + " OK\r\nTransfer-Encoding: chunked\r\n\r\n");
  }
  void write_chunk(const std::string& data) {
    char size[16];
    std::snprintf(size, sizeof(size), "%zx", data.size());
    write_raw(std::string(size) + "\r\n" + data + "\r\n");
  }
  void end_chunks() { write_raw("0\r\n\r\n"); }
};

using Serve = std::function<void(Peer&)>;

struct ServerTls {
  std::string cert, key;
  std::string client_ca;  // when set, a client certificate signed by it is demanded
};

class Server {
 public:
  explicit Server(Serve serve, std::optional<ServerTls> tls = std::nullopt)
      : serve_(std::move(serve)), acceptor_(io_, {asio::ip::make_address("127.0.0.1"), 0}) {
    if (tls) {
      tls_.emplace(asio::ssl::context::tls_server);
      tls_->use_certificate_chain_file(tls->cert);
      tls_->use_private_key_file(tls->key, asio::ssl::context::pem);
      if (!tls->client_ca.empty()) {
        tls_->load_verify_file(tls->client_ca);
        tls_->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
      }
    }
    accepting_ = std::thread([this] { accept_loop(); });
  }

  ~Server() {
    stopping_ = true;
    ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    accepting_.join();
    std::list<Connection> connections;
    {
      std::lock_guard lock(mutex_);
      for (auto& connection : connections_)
        ::shutdown(connection.socket->native_handle(), SHUT_RDWR);
      connections.swap(connections_);
    }
    for (auto& connection : connections) connection.thread.join();
  }

  std::string url(const std::string& target = "/", const std::string& host = "127.0.0.1") const {
    return std::string(tls_ ? "https://" : "http://") + host + ":" +
           std::to_string(acceptor_.local_endpoint().port()) + target;
  }
  int accepted() const { return accepted_.load(); }

 private:
  // The socket stays open until the server stops, so its descriptor is never another's.
  struct Connection {
    std::shared_ptr<asio::ip::tcp::socket> socket;
    std::thread thread;
  };

  template <class Stream>
  class StreamPeer final : public Peer {
   public:
    StreamPeer(Stream& stream, int fd) : stream_(stream), fd_(fd) {}
    void close() override { ::shutdown(fd_, SHUT_RDWR); }
    std::optional<http::request<http::string_body>> read_request() override {
      http::request<http::string_body> request;
      beast::error_code error;
      http::read(stream_, buffer_, request, error);
      if (error) return std::nullopt;
      return request;
    }
    bool read_request_head() override {
      parser_.emplace();
      parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
      beast::error_code error;
      http::read_header(stream_, buffer_, *parser_, error);
      return !error;
    }
    std::string read_body_piece() override {
      while (!parser_->is_done()) {
        char piece[4096];
        parser_->get().body().data = piece;
        parser_->get().body().size = sizeof(piece);
        beast::error_code error;
        http::read_some(stream_, buffer_, *parser_, error);
        if (error && error != http::error::need_buffer) return {};
        const std::size_t filled = sizeof(piece) - parser_->get().body().size;
        if (filled > 0) return std::string(piece, filled);
      }
      return {};
    }
    void write(http::response<http::string_body>& response) override {
      beast::error_code ignored;
      http::write(stream_, response, ignored);
    }
    void write_raw(const std::string& bytes) override {
      beast::error_code ignored;
      asio::write(stream_, asio::buffer(bytes), ignored);
    }

   private:
    Stream& stream_;
    int fd_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::buffer_body>> parser_;
  };

  void accept_loop() {
    while (!stopping_) {
      auto socket = std::make_shared<asio::ip::tcp::socket>(io_);
      boost::system::error_code error;
      acceptor_.accept(*socket, error);
      if (error) return;
      ++accepted_;
      std::lock_guard lock(mutex_);
      connections_.push_back({socket, std::thread([this, socket] { serve_connection(*socket); })});
    }
  }

  void serve_connection(asio::ip::tcp::socket& socket) {
    const int fd = socket.native_handle();
    if (!tls_) {
      StreamPeer<asio::ip::tcp::socket> peer(socket, fd);
      serve_(peer);
    } else {
      asio::ssl::stream<asio::ip::tcp::socket&> stream(socket, *tls_);
      boost::system::error_code error;
      stream.handshake(asio::ssl::stream_base::server, error);
      // A failed handshake: the client refused us, or we refused it.
      if (!error) {
        StreamPeer<asio::ssl::stream<asio::ip::tcp::socket&>> peer(stream, fd);
        serve_(peer);
      }
    }
    ::shutdown(fd, SHUT_RDWR);
  }

  Serve serve_;
  asio::io_context io_;
  asio::ip::tcp::acceptor acceptor_;
  std::optional<asio::ssl::context> tls_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> accepted_{0};
  std::mutex mutex_;
  std::list<Connection> connections_;
  std::thread accepting_;
};

// Serves requests on a connection with `answer(request)` for as long as the client keeps it.
inline Serve keep_alive(
    std::function<std::string(const http::request<http::string_body>&)> answer) {
  return [answer](Peer& peer) {
    while (auto request = peer.read_request()) peer.answer(answer(*request));
  };
}

}  // namespace http_test
