// Peer: an Apache Thrift 0.17 echo (Debian's libthrift), binary protocol over framed transport,
// through the code `thrift --gen cpp` makes from echo.thrift. Same shape as rpc_bench and the
// other baselines: one process holds server and client, the same request bytes
// ({"name":"World"}, carried in EchoMessage.body), a closed loop keeping `concurrency` calls in
// flight (each completion starts the next) at 1, 16 and 64 for a fixed time per point after a
// warm-up, latencies collected and ranked the same way (load_report.hpp).
//
// Thrift's C++ clients are synchronous: a call blocks its thread until its reply. So N calls in
// flight take N client threads. Two client shapes, both Thrift's own:
// - connections (default): one EchoClient, one thread and one connection per call in flight —
//   what a Thrift user runs for concurrency, and the faster shape here;
// - concurrent: EchoConcurrentClient (Thrift's thread-safe client, replies matched to callers by
//   sequence id) on 2 shared connections, N threads calling through them — the 2 connections
//   rpc_bench keeps, but every reply read by one thread wakes the thread it belongs to.
// The async (cob-style) client exists only over TEvhttp, i.e. HTTP transport, not framed.
// Three servers, all Thrift's own; the default is the one that measured fastest here:
// - threaded (default): TThreadedServer, one thread per connection doing blocking reads and
//   writes — a call costs the server its socket reads and one write, no event loop between;
// - nonblocking: TNonblockingServer, 2 libevent I/O threads, each call processed on the I/O
//   thread that read it (no hand-off); it reads the 4-byte frame length and the frame in
//   separate reads and goes through libevent for every state change;
// - pool: TNonblockingServer, 1 I/O thread handing every call to a 2-thread ThreadManager.
// Measured on this 2-core machine (1–2 s points, connections client, best of 2 runs): threaded
// 131k/108k/131k req/s at c=1/16/64, nonblocking 69k/69k/83k, pool 9k/51k/52k; the concurrent
// client trails the connections client at c=16/64 with every server (73k/64k with nonblocking,
// 66k/62k with threaded). See docs/performance.md, "Peers".
//
//   thrift_echo_bench [seconds per point, default 3] [--server=threaded|nonblocking|pool]
//                     [--client=connections|concurrent]
//
// Prints one line per figure: `name value unit`.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <thrift/TOutput.h>
#include <thrift/TProcessor.h>
#include <thrift/async/TConcurrentClientSyncInfo.h>
#include <thrift/concurrency/ThreadFactory.h>
#include <thrift/concurrency/ThreadManager.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/server/TNonblockingServer.h>
#include <thrift/server/TThreadedServer.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TNonblockingServerSocket.h>
#include <thrift/transport/TServerSocket.h>
#include <thrift/transport/TSocket.h>

#include "load_report.hpp"

#include "Echo.h"

using Clock = std::chrono::steady_clock;
using micro_bench::EchoMessage;
namespace thrift = apache::thrift;

namespace {

constexpr std::string_view request_body = R"({"name":"World"})";
constexpr int io_threads = 2;
constexpr int shared_connection_count = 2;  // the concurrent client's connections
constexpr int max_concurrency = 64;
constexpr int socket_timeout_ms = 10000;  // a call that waits longer has failed

enum class ServerKind { nonblocking, pool, threaded };
enum class ClientKind { connections, concurrent };

class EchoHandler : public micro_bench::EchoIf {
 public:
  void echo(EchoMessage& reply, const EchoMessage& request) override { reply = request; }
};

// Tells the starting thread the server listens (Thrift calls preServe once it does).
class ReadySignal : public thrift::server::TServerEventHandler {
 public:
  void preServe() override { ready.set_value(); }
  std::promise<void> ready;
};

// The server on its own thread(s); the listening port is known once start() returns.
class EchoServer {
 public:
  explicit EchoServer(ServerKind kind) {
    auto processor = std::make_shared<micro_bench::EchoProcessor>(std::make_shared<EchoHandler>());
    auto protocols = std::make_shared<thrift::protocol::TBinaryProtocolFactory>();
    auto ready = std::make_shared<ReadySignal>();
    auto listening = ready->ready.get_future();
    if (kind == ServerKind::threaded) {
      auto socket = std::make_shared<thrift::transport::TServerSocket>("127.0.0.1", 0);
      server_socket_ = socket;
      threaded_ = std::make_unique<thrift::server::TThreadedServer>(
          processor, socket, std::make_shared<thrift::transport::TFramedTransportFactory>(),
          protocols);
      threaded_->setServerEventHandler(ready);
      thread_ = std::thread([this] { threaded_->serve(); });
    } else {
      auto socket = std::make_shared<thrift::transport::TNonblockingServerSocket>("127.0.0.1", 0);
      nonblocking_socket_ = socket;
      std::shared_ptr<thrift::concurrency::ThreadManager> workers;
      if (kind == ServerKind::pool) {
        workers = thrift::concurrency::ThreadManager::newSimpleThreadManager(io_threads);
        workers->threadFactory(std::make_shared<thrift::concurrency::ThreadFactory>());
        workers->start();
      }
      nonblocking_ = std::make_unique<thrift::server::TNonblockingServer>(processor, protocols,
                                                                          socket, workers);
      nonblocking_->setNumIOThreads(kind == ServerKind::pool ? 1 : io_threads);
      nonblocking_->setServerEventHandler(ready);
      thread_ = std::thread([this] { nonblocking_->serve(); });
    }
    if (listening.wait_for(std::chrono::seconds(5)) != std::future_status::ready)
      throw std::runtime_error("the Thrift server did not start within 5 s");
  }

  ~EchoServer() { stop(); }

  int port() const {
    return nonblocking_ ? nonblocking_socket_->getListenPort() : server_socket_->getPort();
  }

  // The clients are closed first: TThreadedServer's serve() waits for its connections to end.
  void stop() {
    if (!thread_.joinable()) return;
    if (nonblocking_) nonblocking_->stop();
    if (threaded_) threaded_->stop();
    thread_.join();
  }

 private:
  std::shared_ptr<thrift::transport::TServerSocket> server_socket_;
  std::shared_ptr<thrift::transport::TNonblockingServerSocket> nonblocking_socket_;
  std::unique_ptr<thrift::server::TThreadedServer> threaded_;
  std::unique_ptr<thrift::server::TNonblockingServer> nonblocking_;
  std::thread thread_;
};

// A framed binary-protocol connection.
struct Connection {
  std::shared_ptr<thrift::transport::TSocket> socket;
  std::shared_ptr<thrift::transport::TTransport> transport;
  std::shared_ptr<thrift::protocol::TProtocol> protocol;

  explicit Connection(int port)
      : socket(std::make_shared<thrift::transport::TSocket>("127.0.0.1", port)),
        transport(std::make_shared<thrift::transport::TFramedTransport>(socket)),
        protocol(std::make_shared<thrift::protocol::TBinaryProtocol>(transport)) {
    socket->setNoDelay(true);
    socket->setRecvTimeout(socket_timeout_ms);
    socket->setSendTimeout(socket_timeout_ms);
    transport->open();
  }
  ~Connection() {
    try {
      transport->close();
    } catch (const std::exception&) {
      // closing a broken connection: nothing left to do
    }
  }
};

// What one closed-loop slot calls through: its own client on its own connection, or a share of
// a concurrent client.
class Caller {
 public:
  virtual ~Caller() = default;
  virtual void echo(EchoMessage& reply, const EchoMessage& request) = 0;
};

class OwnConnectionCaller : public Caller {
 public:
  explicit OwnConnectionCaller(int port) : connection_(port), client_(connection_.protocol) {}
  void echo(EchoMessage& reply, const EchoMessage& request) override {
    client_.echo(reply, request);
  }

 private:
  Connection connection_;
  micro_bench::EchoClient client_;
};

class SharedConnectionCaller : public Caller {
 public:
  explicit SharedConnectionCaller(micro_bench::EchoConcurrentClient& client) : client_(client) {}
  void echo(EchoMessage& reply, const EchoMessage& request) override {
    client_.echo(reply, request);
  }

 private:
  micro_bench::EchoConcurrentClient& client_;
};

using Load = bench::ClosedLoop;

// One slot: calls until the load says stop. A failed call breaks its connection's framing,
// so the slot stops there.
void run_slot(Caller& caller, Load& load) {
  EchoMessage request, reply;
  request.__set_body(std::string(request_body));
  for (auto now = Clock::now(); load.may_start_another(now);) {
    auto started = now;
    try {
      caller.echo(reply, request);
    } catch (const std::exception& error) {
      load.failed++;
      std::cerr << "thrift_echo_bench: a call failed: " << error.what() << "\n";
      break;
    }
    now = Clock::now();
    if (reply.body != request_body) {
      load.failed++;
    } else {
      load.completed++;
      std::lock_guard lock(load.mutex);
      load.latencies_ns.push_back((now - started).count());
    }
  }
  load.slot_finished();
}

// Runs one closed loop, a thread per slot; false if it did not finish in time.
bool run_load(std::vector<std::unique_ptr<Caller>>& callers, Load& load, int concurrency,
              std::chrono::nanoseconds limit) {
  load.running = concurrency;
  auto finished = load.finished.get_future();
  std::vector<std::thread> slots;
  for (int i = 0; i < concurrency; ++i)
    slots.emplace_back([&caller = *callers[i], &load] { run_slot(caller, load); });
  bool in_time = finished.wait_for(limit) == std::future_status::ready;
  if (!in_time) {
    // Slots are still blocked in calls and cannot be joined: leave at once.
    std::cerr << "thrift_echo_bench: a load point did not finish in time\n";
    std::_Exit(1);
  }
  for (auto& slot : slots) slot.join();
  return in_time;
}

std::string_view option_value(std::string_view argument, std::string_view name) {
  if (argument.substr(0, name.size()) != name) return {};
  return argument.substr(name.size());
}

}  // namespace

int main(int argc, char** argv) try {
  double seconds = 3.0;
  ServerKind server_kind = ServerKind::threaded;
  ClientKind client_kind = ClientKind::connections;
  for (int i = 1; i < argc; ++i) {
    std::string_view argument = argv[i];
    if (auto value = option_value(argument, "--server="); !value.empty()) {
      if (value == "nonblocking")
        server_kind = ServerKind::nonblocking;
      else if (value == "pool")
        server_kind = ServerKind::pool;
      else if (value == "threaded")
        server_kind = ServerKind::threaded;
      else
        throw std::runtime_error("--server: expected threaded, nonblocking or pool, got '" +
                                 std::string(value) + "'");
    } else if (auto value = option_value(argument, "--client="); !value.empty()) {
      if (value == "connections")
        client_kind = ClientKind::connections;
      else if (value == "concurrent")
        client_kind = ClientKind::concurrent;
      else
        throw std::runtime_error("--client: expected connections or concurrent, got '" +
                                 std::string(value) + "'");
    } else {
      char* end = nullptr;
      seconds = std::strtod(argv[i], &end);
      if (end == argv[i] || *end != '\0' || seconds <= 0)
        throw std::runtime_error("unexpected argument '" + std::string(argument) +
                                 "' (expected seconds per point, --server= or --client=)");
    }
  }
  // Thrift's notices (I/O threads starting and stopping) are not figures; its errors surface as
  // exceptions.
  thrift::GlobalOutput.setOutputFunction([](const char*) {});
  auto duration = std::chrono::nanoseconds(static_cast<long>(seconds * 1e9));
  auto limit = duration + std::chrono::seconds(10);  // a point that overruns this is stuck

  EchoServer server(server_kind);
  std::vector<std::unique_ptr<Connection>> shared_connections;
  std::vector<std::unique_ptr<micro_bench::EchoConcurrentClient>> shared_clients;
  std::vector<std::unique_ptr<Caller>> callers;
  if (client_kind == ClientKind::concurrent) {
    for (int i = 0; i < shared_connection_count; ++i) {
      auto& connection =
          shared_connections.emplace_back(std::make_unique<Connection>(server.port()));
      shared_clients.push_back(std::make_unique<micro_bench::EchoConcurrentClient>(
          connection->protocol, std::make_shared<thrift::async::TConcurrentClientSyncInfo>()));
    }
    for (int i = 0; i < max_concurrency; ++i)  // slot i calls through connection i % 2
      callers.push_back(
          std::make_unique<SharedConnectionCaller>(*shared_clients[i % shared_connection_count]));
  } else {
    for (int i = 0; i < max_concurrency; ++i)
      callers.push_back(std::make_unique<OwnConnectionCaller>(server.port()));
  }

  std::vector<std::unique_ptr<Load>> loads;
  bench::run_points(
      "thrift_echo", duration, shared_connection_count, loads,
      [&](Load& load, int concurrency) { return run_load(callers, load, concurrency, limit); });

  callers.clear();
  shared_clients.clear();
  shared_connections.clear();
  server.stop();
  return 0;
} catch (const std::exception& e) {
  std::cerr << "thrift_echo_bench: " << e.what() << "\n";
  return 1;
}
