// Baseline for the http transport: a bare Boost.Beast HTTP/1.1 keep-alive echo, and the same
// HTTP load generator pointed at any URL (the `micro api` gateway).
//
// Same shape as rpc_bench and asio_echo_bench: one process holds server and client, one
// io_context run by 2 threads, the same request body ({"name":"World"}), a closed loop keeping
// `concurrency` requests in flight at 1, 16 and 64 for a fixed time per point after a warm-up,
// latencies ranked by bench/load_report.hpp. HTTP/1.1 has one request in flight per connection
// (clients do not pipeline), so each in-flight request has its own kept-alive connection, as an
// HTTP client pool makes them.
//
// The server is as lean as Beast gets: a socket on a concrete strand type (no type-erased
// executor per operation), one flat_buffer and one request parser reused per connection, the
// response reusing its string body, TCP_NODELAY.
//
//   beast_echo_bench [seconds per point, default 3]
//   beast_echo_bench [seconds] --url=http://127.0.0.1:8080/greeter/Greeter.Hello --name=api
//                    [--expect=<substring of a good response body>]
//
// The second form starts no server: it drives the URL with the same load and counts a response
// as good when its status is 200 (and its body holds --expect). Prints `name value unit` lines.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "load_report.hpp"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using error_code = boost::system::error_code;
using Strand = asio::strand<asio::io_context::executor_type>;
using Socket = asio::basic_stream_socket<tcp, Strand>;
using Acceptor = asio::basic_socket_acceptor<tcp, Strand>;

namespace {

constexpr std::string_view request_body = R"({"name":"World"})";
constexpr unsigned io_threads = 2;

// One accepted connection: read a request, answer it with its own body, repeat.
class ServerSession : public std::enable_shared_from_this<ServerSession> {
 public:
  explicit ServerSession(Socket socket) : socket_(std::move(socket)) {}

  void start() {
    error_code ignored;
    socket_.set_option(tcp::no_delay(true), ignored);
    read();
  }

 private:
  void read() {
    request_ = {};
    http::async_read(
        socket_, buffer_, request_,
        [self = shared_from_this()](error_code error, std::size_t) { self->on_read(error); });
  }

  void on_read(error_code error) {
    if (error) return close();
    response_.result(http::status::ok);
    response_.version(request_.version());
    response_.keep_alive(request_.keep_alive());
    response_.set(http::field::content_type, "application/json");
    response_.body() = std::move(request_.body());
    response_.prepare_payload();
    http::async_write(socket_, response_,
                      [self = shared_from_this()](error_code error, std::size_t) {
                        if (error || !self->response_.keep_alive()) return self->close();
                        self->read();
                      });
  }

  void close() {
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

  Socket socket_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
};

class EchoServer {
 public:
  explicit EchoServer(asio::io_context& io)
      : io_(io),
        acceptor_(asio::make_strand(io), tcp::endpoint(asio::ip::address_v4::loopback(), 0)) {
    accept();
  }
  tcp::endpoint endpoint() const { return acceptor_.local_endpoint(); }
  void close() {
    asio::post(acceptor_.get_executor(), [this] {
      error_code ignored;
      acceptor_.close(ignored);
    });
  }

 private:
  void accept() {
    acceptor_.async_accept(asio::make_strand(io_), [this](error_code error, Socket socket) {
      if (error) return;
      std::make_shared<ServerSession>(std::move(socket))->start();
      accept();
    });
  }

  asio::io_context& io_;
  Acceptor acceptor_;
};

using Load = bench::ClosedLoop;

struct Target {
  tcp::endpoint endpoint;
  std::string host;  // the Host header
  std::string path = "/";
  std::string expect;  // a good body holds this ("" with the echo: the body must equal the request)
  bool echo = true;
};

// One kept-alive client connection with one request in flight at a time.
class ClientConnection {
 public:
  ClientConnection(asio::io_context& io, const Target& target)
      : socket_(asio::make_strand(io)), target_(target) {
    socket_.connect(target.endpoint);
    socket_.set_option(tcp::no_delay(true));
    request_.method(http::verb::post);
    request_.target(target.path);
    request_.version(11);
    request_.set(http::field::host, target.host);
    request_.set(http::field::content_type, "application/json");
    request_.body() = std::string(request_body);
    request_.prepare_payload();
  }

  void begin(Load& load) {
    asio::post(socket_.get_executor(), [this, &load] {
      load_ = &load;
      send();
    });
  }

  void close() {
    asio::post(socket_.get_executor(), [this] {
      error_code ignored;
      socket_.shutdown(tcp::socket::shutdown_both, ignored);
      socket_.close(ignored);
    });
  }

 private:
  void send() {
    started_ = Clock::now();
    http::async_write(socket_, request_, [this](error_code error, std::size_t) {
      if (error) return failed();
      response_ = {};
      http::async_read(socket_, buffer_, response_,
                       [this](error_code error, std::size_t) { on_response(error); });
    });
  }

  void on_response(error_code error) {
    if (error) return failed();
    auto now = Clock::now();
    const std::string& body = response_.body();
    bool good =
        response_.result() == http::status::ok &&
        (target_.echo ? body == request_body : body.find(target_.expect) != std::string::npos);
    if (good) {
      load_->completed++;
      std::lock_guard lock(load_->mutex);
      load_->latencies_ns.push_back((now - started_).count());
    } else {
      load_->failed++;
    }
    if (load_->may_start_another(now)) return send();
    load_->slot_finished();
  }

  // The connection broke: its slot ends (it is not reused by later points).
  void failed() {
    load_->failed++;
    load_->slot_finished();
  }

  Socket socket_;
  const Target& target_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
  beast::flat_buffer buffer_;
  Clock::time_point started_;
  Load* load_ = nullptr;
};

// Runs one closed loop on the first `concurrency` connections; false if it overran `limit`.
bool run_load(std::vector<std::unique_ptr<ClientConnection>>& connections, Load& load,
              int concurrency, std::chrono::nanoseconds limit) {
  load.running = concurrency;
  auto finished = load.finished.get_future();
  for (int index = 0; index < concurrency; ++index) connections[index]->begin(load);
  return finished.wait_for(limit) == std::future_status::ready;
}

// "http://host:port/path" → the target; only what the benchmark needs (IPv4 loopback).
Target parse_target(std::string_view url) {
  constexpr std::string_view scheme = "http://";
  if (url.substr(0, scheme.size()) != scheme)
    throw std::runtime_error("--url must start with http://");
  url.remove_prefix(scheme.size());
  auto slash = url.find('/');
  std::string authority(url.substr(0, slash));
  Target target;
  target.path = slash == std::string_view::npos ? "/" : std::string(url.substr(slash));
  auto colon = authority.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("--url needs a port");
  target.endpoint =
      tcp::endpoint(asio::ip::make_address(authority.substr(0, colon)),
                    static_cast<unsigned short>(std::stoi(authority.substr(colon + 1))));
  target.host = authority;
  target.echo = false;
  return target;
}

}  // namespace

int main(int argc, char** argv) try {
  double seconds = 3.0;
  std::string name = "beast_echo", url, expect;
  for (int i = 1; i < argc; ++i) {
    std::string_view argument = argv[i];
    if (argument.rfind("--url=", 0) == 0) {
      url = argument.substr(6);
    } else if (argument.rfind("--name=", 0) == 0) {
      name = argument.substr(7);
    } else if (argument.rfind("--expect=", 0) == 0) {
      expect = argument.substr(9);
    } else {
      seconds = std::atof(argv[i]);
    }
  }
  auto duration = std::chrono::nanoseconds(static_cast<long>(seconds * 1e9));
  auto limit = duration + std::chrono::seconds(10);

  asio::io_context io(io_threads);
  auto work = asio::make_work_guard(io);
  std::unique_ptr<EchoServer> server;
  Target target;
  if (url.empty()) {
    server = std::make_unique<EchoServer>(io);
    target.endpoint = server->endpoint();
    target.host = "127.0.0.1:" + std::to_string(target.endpoint.port());
  } else {
    target = parse_target(url);
    target.expect = expect;
  }
  std::atomic<unsigned> threads_running{io_threads};
  std::promise<void> threads_done;
  std::vector<std::thread> threads;
  for (unsigned i = 0; i < io_threads; ++i)
    threads.emplace_back([&] {
      io.run();
      if (--threads_running == 0) threads_done.set_value();
    });

  constexpr int most_connections = 64;  // the highest concurrency point
  std::vector<std::unique_ptr<ClientConnection>> connections;
  for (int i = 0; i < most_connections; ++i)
    connections.push_back(std::make_unique<ClientConnection>(io, target));

  std::vector<std::unique_ptr<Load>> loads;
  bool stuck = !bench::run_points(name, duration, 1, loads, [&](Load& load, int concurrency) {
    return run_load(connections, load, concurrency, limit);
  });

  for (auto& connection : connections) connection->close();
  if (server) server->close();
  work.reset();
  bool stopped =
      threads_done.get_future().wait_for(std::chrono::seconds(5)) == std::future_status::ready;
  if (!stopped) {
    std::cerr << "beast_echo_bench: the I/O threads did not finish within 5 s\n";
    io.stop();
  }
  for (auto& thread : threads) thread.join();
  if (stuck) std::cerr << "beast_echo_bench: a load point did not finish in time\n";
  return stuck || !stopped ? 1 : 0;
} catch (const std::exception& e) {
  std::cerr << "beast_echo_bench: " << e.what() << "\n";
  return 1;
}
