// Baseline: a raw Boost.Asio length-prefixed echo — the floor of what any RPC can cost here.
// Same shape as rpc_bench: one process holds server and client, one io_context run by 2
// threads, 2 client connections, the same request bytes ({"name":"World"}), a closed loop
// keeping `concurrency` requests in flight (each completion starts the next) at 1, 16 and 64
// for a fixed time per point after a warm-up, latencies collected and ranked the same way.
//
// Frame: a 4-byte little-endian body length, then the body. The server reads frames and echoes
// each one back; the client pipelines requests on its connections and, since responses come
// back in order on each connection, matches completions with a FIFO of send times.
// Tight on purpose: TCP_NODELAY, no allocation of ours per request (buffers are reused; sockets
// name their strand type so Asio need not type-erase the executor per operation, and it recycles
// handler memory), all frames queued while a write is in flight go out in the next single write.
//
//   asio_echo_bench [seconds per point, default 3]
//
// Prints one line per figure: `name value unit`.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>  // Boost 1.74's asio/awaitable.hpp uses std::exchange without it
#include <vector>

#include <boost/asio.hpp>

#include "load_report.hpp"

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using error_code = boost::system::error_code;
// Sockets name their strand's concrete type: the default polymorphic executor would allocate
// (type erasure) on every operation.
using Strand = asio::strand<asio::io_context::executor_type>;
using Socket = asio::basic_stream_socket<tcp, Strand>;
using Acceptor = asio::basic_socket_acceptor<tcp, Strand>;

namespace {

constexpr std::string_view request_body = R"({"name":"World"})";
constexpr std::size_t length_prefix_size = 4;
constexpr std::size_t read_buffer_size = 64 * 1024;
// A frame must fit the read buffer; anything larger is a protocol error here.
constexpr std::size_t max_body_size = read_buffer_size - length_prefix_size;
constexpr unsigned io_threads = 2;
constexpr int connection_count = 2;

void append_frame(std::vector<char>& out, const char* body, std::uint32_t length) {
  const char prefix[length_prefix_size] = {
      static_cast<char>(length & 0xff), static_cast<char>((length >> 8) & 0xff),
      static_cast<char>((length >> 16) & 0xff), static_cast<char>((length >> 24) & 0xff)};
  out.insert(out.end(), prefix, prefix + length_prefix_size);
  out.insert(out.end(), body, body + length);
}

std::uint32_t read_length(const char* data) {
  auto byte = [data](int index) {
    return static_cast<std::uint32_t>(static_cast<unsigned char>(data[index]));
  };
  return byte(0) | byte(1) << 8 | byte(2) << 16 | byte(3) << 24;
}

// Reads whole frames out of a fixed buffer: `for_each_frame` sees every complete frame received
// so far and the partial tail is moved to the front for the next read.
struct FrameReader {
  std::array<char, read_buffer_size> buffer;
  std::size_t buffered = 0;

  asio::mutable_buffer free_space() {
    return asio::buffer(buffer.data() + buffered, buffer.size() - buffered);
  }

  // Returns false on a frame too large to ever fit.
  template <typename Visit>
  bool for_each_frame(std::size_t bytes_received, Visit&& visit) {
    buffered += bytes_received;
    std::size_t offset = 0;
    while (buffered - offset >= length_prefix_size) {
      std::uint32_t length = read_length(buffer.data() + offset);
      if (length > max_body_size) return false;
      if (buffered - offset - length_prefix_size < length) break;
      visit(buffer.data() + offset + length_prefix_size, length);
      offset += length_prefix_size + length;
    }
    if (offset > 0) {
      std::memmove(buffer.data(), buffer.data() + offset, buffered - offset);
      buffered -= offset;
    }
    return true;
  }
};

// Outgoing bytes: frames queued while a write is in flight go out together in the next write.
struct FrameWriter {
  std::vector<char> pending, writing;
  bool write_in_flight = false;

  FrameWriter() {
    pending.reserve(read_buffer_size);
    writing.reserve(read_buffer_size);
  }
  bool should_start_write() const { return !write_in_flight && !pending.empty(); }
  // Moves the queued frames to the buffer handed to the socket.
  asio::const_buffer take_pending() {
    writing.clear();
    std::swap(pending, writing);
    write_in_flight = true;
    return asio::buffer(writing);
  }
};

// One accepted connection; its socket's executor is a strand, so every handler below runs
// serialized even though two threads run the io_context.
class ServerSession : public std::enable_shared_from_this<ServerSession> {
 public:
  explicit ServerSession(Socket socket) : socket_(std::move(socket)) {}

  void start() {
    error_code ignored;  // without TCP_NODELAY it would only be slower
    socket_.set_option(tcp::no_delay(true), ignored);
    read();
  }

 private:
  void read() {
    socket_.async_read_some(reader_.free_space(),
                            [self = shared_from_this()](error_code error, std::size_t bytes) {
                              self->on_read(error, bytes);
                            });
  }

  void on_read(error_code error, std::size_t bytes) {
    if (error) return close();  // the client closed: this session ends with its last handler
    bool well_formed =
        reader_.for_each_frame(bytes, [this](const char* body, std::uint32_t length) {
          append_frame(writer_.pending, body, length);
        });
    if (!well_formed) return close();
    if (writer_.should_start_write()) write();
    read();
  }

  void write() {
    asio::async_write(socket_, writer_.take_pending(),
                      [self = shared_from_this()](error_code error, std::size_t) {
                        self->writer_.write_in_flight = false;
                        if (error) return self->close();
                        if (self->writer_.should_start_write()) self->write();
                      });
  }

  void close() {
    error_code ignored;
    socket_.close(ignored);
  }

  Socket socket_;
  FrameReader reader_;
  FrameWriter writer_;
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
      if (error) return;  // closed
      std::make_shared<ServerSession>(std::move(socket))->start();
      accept();
    });
  }

  asio::io_context& io_;
  Acceptor acceptor_;
};

using Load = bench::ClosedLoop;

// One client connection: requests pipelined, responses matched in order with a FIFO of send
// times. Every handler runs on the socket's strand.
class ClientConnection {
 public:
  ClientConnection(asio::io_context& io, const tcp::endpoint& server)
      : socket_(asio::make_strand(io)) {
    socket_.connect(server);
    socket_.set_option(tcp::no_delay(true));
    send_times_.resize(send_time_capacity);
    asio::post(socket_.get_executor(), [this] { read(); });
  }

  // Starts `count` requests of `load` on this connection.
  void begin(Load& load, int count) {
    asio::post(socket_.get_executor(), [this, &load, count] {
      load_ = &load;
      for (int i = 0; i < count; ++i) start_request();
      if (writer_.should_start_write()) write();
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
  static constexpr std::size_t send_time_capacity = 1024;  // > the most requests in flight

  void start_request() {
    if (in_flight_ == send_time_capacity) {  // cannot happen at concurrency ≤ 64
      load_->failed++;
      load_->slot_finished();
      return;
    }
    send_times_[(oldest_ + in_flight_++) % send_time_capacity] = Clock::now();
    append_frame(writer_.pending, request_body.data(),
                 static_cast<std::uint32_t>(request_body.size()));
  }

  void read() {
    socket_.async_read_some(reader_.free_space(),
                            [this](error_code error, std::size_t bytes) { on_read(error, bytes); });
  }

  void on_read(error_code error, std::size_t bytes) {
    if (error) return fail_in_flight();
    bool well_formed =
        reader_.for_each_frame(bytes, [this](const char* body, std::uint32_t length) {
          if (in_flight_ == 0) return;  // a response nobody asked for: ignored
          auto started = send_times_[oldest_];
          oldest_ = (oldest_ + 1) % send_time_capacity;
          --in_flight_;
          auto now = Clock::now();
          if (std::string_view(body, length) != request_body) {
            load_->failed++;
          } else {
            load_->completed++;
            std::lock_guard lock(load_->mutex);
            load_->latencies_ns.push_back((now - started).count());
          }
          if (load_->may_start_another(now)) {
            start_request();
          } else {
            load_->slot_finished();
          }
        });
    if (!well_formed) {
      close();
      return fail_in_flight();
    }
    if (writer_.should_start_write()) write();
    read();
  }

  void write() {
    asio::async_write(socket_, writer_.take_pending(), [this](error_code error, std::size_t) {
      writer_.write_in_flight = false;
      if (error) return;  // the read side reports the failure
      if (writer_.should_start_write()) write();
    });
  }

  // The connection is gone: every request still waiting for its response failed.
  void fail_in_flight() {
    for (; in_flight_ > 0; --in_flight_) {
      load_->failed++;
      load_->slot_finished();
    }
  }

  Socket socket_;
  FrameReader reader_;
  FrameWriter writer_;
  std::vector<Clock::time_point> send_times_;
  std::size_t oldest_ = 0, in_flight_ = 0;
  Load* load_ = nullptr;
};

// Runs one closed loop over the connections; false if it did not finish in time.
bool run_load(std::vector<std::unique_ptr<ClientConnection>>& connections, Load& load,
              int concurrency, std::chrono::nanoseconds limit) {
  load.running = concurrency;
  auto finished = load.finished.get_future();
  int connection_total = static_cast<int>(connections.size());
  for (int index = 0; index < connection_total; ++index) {
    // Request i goes on connection i % connection_total.
    int count = concurrency / connection_total + (index < concurrency % connection_total ? 1 : 0);
    if (count > 0) connections[index]->begin(load, count);
  }
  return finished.wait_for(limit) == std::future_status::ready;
}

}  // namespace

int main(int argc, char** argv) try {
  double seconds = argc > 1 ? std::atof(argv[1]) : 3.0;
  auto duration = std::chrono::nanoseconds(static_cast<long>(seconds * 1e9));
  auto limit = duration + std::chrono::seconds(10);  // a point that overruns this is stuck

  asio::io_context io(io_threads);
  auto work = asio::make_work_guard(io);
  EchoServer server(io);
  std::atomic<unsigned> threads_running{io_threads};
  std::promise<void> threads_done;
  std::vector<std::thread> threads;
  for (unsigned i = 0; i < io_threads; ++i)
    threads.emplace_back([&] {
      io.run();
      if (--threads_running == 0) threads_done.set_value();
    });

  std::vector<std::unique_ptr<ClientConnection>> connections;
  for (int i = 0; i < connection_count; ++i)
    connections.push_back(std::make_unique<ClientConnection>(io, server.endpoint()));

  // Every load outlives the I/O threads: a stuck point may still have handlers pointing at it.
  std::vector<std::unique_ptr<Load>> loads;
  bool stuck = !bench::run_points(
      "asio_echo", duration, connection_count, loads,
      [&](Load& load, int concurrency) { return run_load(connections, load, concurrency, limit); });

  // Stop: clients close, each server session ends on end-of-stream, the acceptor closes, and
  // the threads return once no handler is left. Bounded: a leftover handler would be a bug.
  for (auto& connection : connections) connection->close();
  server.close();
  work.reset();
  bool stopped =
      threads_done.get_future().wait_for(std::chrono::seconds(5)) == std::future_status::ready;
  if (!stopped) {
    std::cerr << "asio_echo_bench: the I/O threads did not finish within 5 s\n";
    io.stop();
  }
  for (auto& thread : threads) thread.join();
  if (stuck) std::cerr << "asio_echo_bench: a load point did not finish in time\n";
  return stuck || !stopped ? 1 : 0;
} catch (const std::exception& e) {
  std::cerr << "asio_echo_bench: " << e.what() << "\n";
  return 1;
}
