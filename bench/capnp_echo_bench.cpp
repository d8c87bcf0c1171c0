// Peer: a Cap'n Proto RPC 0.9 echo (Debian's libcapnp-rpc and kj-async), through the code
// `capnp compile -oc++` makes from echo.capnp. Same shape as rpc_bench and the other baselines:
// one process holds server and client, the same request bytes ({"name":"World"}, carried in
// EchoMessage.body), a closed loop keeping `concurrency` calls in flight (each completion starts
// the next) at 1, 16 and 64 for a fixed time per point after a warm-up, latencies collected and
// ranked the same way (load_report.hpp).
//
// kj's event loops are single-threaded, so the 2 threads rpc_bench runs are one per side:
// - server: an EzRpcServer (a TwoPartyServer per accepted connection) on its own thread and
//   event loop, exporting the Echo capability as its bootstrap interface;
// - client: the main thread's event loop holds 2 EzRpcClient connections (the 2 connections
//   rpc_bench keeps); call i goes on connection i % 2 and every call is sent without waiting
//   for the others, so up to `concurrency` calls are in flight at once (Cap'n Proto sends each
//   call as soon as it is made and matches answers by question id). The bootstrap capability is
//   itself used through promise pipelining: getMain() returns a capability for an answer not yet
//   received, and the first calls go out on it before the connection has answered.
// A reply's body is compared with the request's bytes; a mismatch or an exception counts as an
// error.
//
//   capnp_echo_bench [seconds per point, default 3]
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

#include <capnp/ez-rpc.h>
#include <kj/async-io.h>
#include <kj/async.h>
#include <kj/timer.h>

#include "load_report.hpp"

#include "echo.capnp.h"

using Clock = std::chrono::steady_clock;
using micro_bench::Echo;

namespace {

constexpr std::string_view request_body = R"({"name":"World"})";
constexpr int connection_count = 2;
constexpr int max_concurrency = 64;

capnp::Data::Reader request_bytes() {
  return {reinterpret_cast<const kj::byte*>(request_body.data()), request_body.size()};
}

class EchoImpl final : public Echo::Server {
 protected:
  kj::Promise<void> echo(EchoContext context) override {
    context.getResults().setReply(context.getParams().getRequest());
    return kj::READY_NOW;
  }
};

// The server's thread and event loop; stop() ends the loop from another thread through kj's
// cross-thread executor.
class EchoServer {
 public:
  EchoServer() {
    std::promise<unsigned> listening;
    auto port = listening.get_future();
    thread_ = std::thread([this, &listening] {
      bool announced = false;
      try {
        capnp::EzRpcServer server(kj::heap<EchoImpl>(), "127.0.0.1", 0);
        auto& wait_scope = server.getWaitScope();
        auto stop = kj::newPromiseAndFulfiller<void>();
        executor_ = &kj::getCurrentThreadExecutor();
        stop_ = stop.fulfiller.get();
        listening.set_value(server.getPort().wait(wait_scope));
        announced = true;
        stop.promise.wait(wait_scope);
      } catch (...) {
        if (!announced) listening.set_exception(std::current_exception());
      }
    });
    if (port.wait_for(std::chrono::seconds(5)) != std::future_status::ready)
      throw std::runtime_error("the Cap'n Proto server did not start within 5 s");
    port_ = port.get();
  }

  ~EchoServer() { stop(); }

  unsigned port() const { return port_; }

  void stop() {
    if (!thread_.joinable()) return;
    executor_->executeSync([this] { stop_->fulfill(); });
    thread_.join();
  }

 private:
  std::thread thread_;
  const kj::Executor* executor_ = nullptr;
  kj::PromiseFulfiller<void>* stop_ = nullptr;
  unsigned port_ = 0;
};

using Load = bench::ClosedLoop;

// One slot of the closed loop on one connection: a call, then the next. Runs on the client's
// event loop only.
class Slot {
 public:
  explicit Slot(Echo::Client& echo) : echo_(echo) {}

  void start(Load& load, kj::PromiseFulfiller<void>& all_finished) {
    load_ = &load;
    all_finished_ = &all_finished;
    call();
  }

 private:
  void call() {
    auto request = echo_.echoRequest();
    request.initRequest().setBody(request_bytes());
    auto started = Clock::now();
    request.send()
        .then(
            [this, started](capnp::Response<Echo::EchoResults>&& response) {
              auto now = Clock::now();
              auto body = response.getReply().getBody();
              if (body.size() != request_body.size() ||
                  std::memcmp(body.begin(), request_body.data(), body.size()) != 0) {
                load_->failed++;
              } else {
                load_->completed++;
                std::lock_guard lock(load_->mutex);
                load_->latencies_ns.push_back((now - started).count());
              }
              next(now);
            },
            [this](kj::Exception&& error) {
              load_->failed++;
              std::cerr << "capnp_echo_bench: a call failed: " << error.getDescription().cStr()
                        << "\n";
              next(Clock::now());
            })
        .detach([](kj::Exception&&) {});  // both outcomes are handled above
  }

  void next(Clock::time_point now) {
    if (load_->may_start_another(now)) return call();
    if (--load_->running == 0) all_finished_->fulfill();
  }

  Echo::Client& echo_;
  Load* load_ = nullptr;
  kj::PromiseFulfiller<void>* all_finished_ = nullptr;
};

struct ClientConnection {
  capnp::EzRpcClient client;
  Echo::Client echo;
  std::vector<std::unique_ptr<Slot>> slots;

  explicit ClientConnection(const std::string& address)
      : client(address), echo(client.getMain<Echo>()) {
    for (int i = 0; i < max_concurrency; ++i) slots.push_back(std::make_unique<Slot>(echo));
  }
};

// Runs one closed loop over the connections on this thread's event loop; false if it did not
// finish in time.
bool run_load(std::vector<std::unique_ptr<ClientConnection>>& connections, Load& load,
              int concurrency, std::chrono::nanoseconds limit) {
  auto& client = connections.front()->client;
  auto all_finished = kj::newPromiseAndFulfiller<void>();
  load.running = concurrency;
  for (int i = 0; i < concurrency; ++i)  // call i goes on connection i % connection_count
    connections[i % connection_count]->slots[i / connection_count]->start(load,
                                                                          *all_finished.fulfiller);
  bool in_time = true;
  auto overran = client.getIoProvider()
                     .getTimer()
                     .afterDelay(limit.count() * kj::NANOSECONDS)
                     .then([&in_time] { in_time = false; });
  all_finished.promise.exclusiveJoin(kj::mv(overran)).wait(client.getWaitScope());
  if (!in_time) {
    // Calls are still in flight and point at this load: leave at once.
    std::cerr << "capnp_echo_bench: a load point did not finish in time\n";
    std::_Exit(1);
  }
  return in_time;
}

}  // namespace

int main(int argc, char** argv) try {
  double seconds = 3.0;
  if (argc > 2) throw std::runtime_error("expected at most one argument, the seconds per point");
  if (argc == 2) {
    char* end = nullptr;
    seconds = std::strtod(argv[1], &end);
    if (end == argv[1] || *end != '\0' || seconds <= 0)
      throw std::runtime_error(std::string("seconds per point: expected a positive number, got '") +
                               argv[1] + "'");
  }
  auto duration = std::chrono::nanoseconds(static_cast<long>(seconds * 1e9));
  auto limit = duration + std::chrono::seconds(10);  // a point that overruns this is stuck

  EchoServer server;
  {
    std::string address = "127.0.0.1:" + std::to_string(server.port());
    std::vector<std::unique_ptr<ClientConnection>> connections;
    for (int i = 0; i < connection_count; ++i)
      connections.push_back(std::make_unique<ClientConnection>(address));

    std::vector<std::unique_ptr<Load>> loads;
    bench::run_points("capnp_echo", duration, connection_count, loads,
                      [&](Load& load, int concurrency) {
                        return run_load(connections, load, concurrency, limit);
                      });
  }  // the client connections close before the server stops
  server.stop();
  return 0;
} catch (const std::exception& e) {
  std::cerr << "capnp_echo_bench: " << e.what() << "\n";
  return 1;
} catch (const kj::Exception& e) {
  std::cerr << "capnp_echo_bench: " << e.getDescription().cStr() << "\n";
  return 1;
}
