// Baseline: a gRPC C++ async unary echo (Debian's libgrpc++ 1.51), the RPC stack micro-cpp's
// users would otherwise pick. Same shape as rpc_bench: one process holds server and client, the
// same request bytes ({"name":"World"}, carried in EchoMessage.body from echo.proto), a closed
// loop keeping `concurrency` calls in flight (each completion starts the next) at 1, 16 and 64
// for a fixed time per point after a warm-up, latencies collected and ranked the same way.
//
// Threading follows gRPC's C++ performance notes ("numcpu threads and one completion queue per
// thread", the CompletionQueue async API):
// - server: 2 threads, each polling its own ServerCompletionQueue, 128 request handlers
//   outstanding on each queue (more than the 64 calls ever in flight), handlers reused;
// - client: 2 channels, as the performance guide advises for high load (a pool of channels made
//   distinct by a channel argument and a local subchannel pool, so each has its own HTTP/2
//   connection — the same 2 connections rpc_bench's tcp transport keeps), each with its own
//   completion queue polled by its own thread; calls are async unary calls through the
//   generated stub (PrepareAsyncEcho + Finish), protobuf-encoded like any gRPC user's.
// Calls are spread over the channels round-robin and a completion restarts on its channel.
//
//   grpc_echo_bench [seconds per point, default 3]
//
// Prints one line per figure: `name value unit`.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "load_report.hpp"

#include "echo.grpc.pb.h"

using Clock = std::chrono::steady_clock;
using micro_bench::Echo;
using micro_bench::EchoMessage;

namespace {

constexpr std::string_view request_body = R"({"name":"World"})";
constexpr int server_threads = 2;
constexpr int handlers_per_server_queue = 128;
constexpr int channel_count = 2;
constexpr int max_concurrency = 64;

// ---- server ----

// One server thread's completion queue. The mutex and flag keep a handler from asking for a new
// call once shutdown began: nothing may be queued on a completion queue after its Shutdown().
struct ServerQueue {
  std::unique_ptr<grpc::ServerCompletionQueue> queue;
  std::mutex mutex;
  bool shutting_down = false;
  std::thread thread;
};

// An outstanding request handler: waits for a call, answers it with the request message, then
// waits for the next one. Reused for every call (a ServerContext is single-use, so it is rebuilt).
class ServerCall {
 public:
  ServerCall(Echo::AsyncService& service, ServerQueue& queue) : service_(service), queue_(queue) {}

  void wait_for_call() {
    std::lock_guard lock(queue_.mutex);
    if (queue_.shutting_down) return;
    responder_.reset();  // refers to the context: goes first
    context_.emplace();
    responder_.emplace(&*context_);
    request_.Clear();
    answering_ = false;
    service_.RequestEcho(&*context_, &request_, &*responder_, queue_.queue.get(),
                         queue_.queue.get(), this);
  }

  void on_event(bool ok) {
    if (!answering_) {
      if (!ok) return;  // the server is shutting down
      answering_ = true;
      responder_->Finish(request_, grpc::Status::OK, this);
    } else {
      wait_for_call();
    }
  }

 private:
  Echo::AsyncService& service_;
  ServerQueue& queue_;
  std::optional<grpc::ServerContext> context_;
  std::optional<grpc::ServerAsyncResponseWriter<EchoMessage>> responder_;
  EchoMessage request_;
  bool answering_ = false;
};

class EchoServer {
 public:
  EchoServer() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    for (int i = 0; i < server_threads; ++i)
      queues_.emplace_back(std::make_unique<ServerQueue>())->queue = builder.AddCompletionQueue();
    server_ = builder.BuildAndStart();
    if (!server_ || port_ == 0) throw std::runtime_error("the gRPC server did not start");
    for (auto& queue : queues_) {
      for (int i = 0; i < handlers_per_server_queue; ++i)
        calls_.emplace_back(std::make_unique<ServerCall>(service_, *queue))->wait_for_call();
      queue->thread = std::thread([queue = queue.get()] {
        void* tag;
        bool ok;
        while (queue->queue->Next(&tag, &ok)) static_cast<ServerCall*>(tag)->on_event(ok);
      });
    }
  }

  ~EchoServer() { stop(); }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  void stop() {
    if (stopped_) return;
    stopped_ = true;
    for (auto& queue : queues_) {
      std::lock_guard lock(queue->mutex);
      queue->shutting_down = true;
    }
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    for (auto& queue : queues_) queue->queue->Shutdown();
    for (auto& queue : queues_) queue->thread.join();
  }

 private:
  Echo::AsyncService service_;
  int port_ = 0;
  std::vector<std::unique_ptr<ServerQueue>> queues_;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::unique_ptr<ServerCall>> calls_;
  bool stopped_ = false;
};

// ---- client ----

using Load = bench::ClosedLoop;

struct ClientChannel;

// One slot of the closed loop on one channel: a call, then the next, reusing the messages.
class ClientCall {
 public:
  explicit ClientCall(ClientChannel& channel) : channel_(channel) {}
  void start(Load& load);
  void on_finished(bool ok);

 private:
  ClientChannel& channel_;
  Load* load_ = nullptr;
  Clock::time_point started_;
  std::optional<grpc::ClientContext> context_;  // single-use, rebuilt per call
  std::unique_ptr<grpc::ClientAsyncResponseReader<EchoMessage>> reader_;
  EchoMessage reply_;
  grpc::Status status_;
};

// A channel (its own HTTP/2 connection), its completion queue and the thread polling it.
struct ClientChannel {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<Echo::Stub> stub;
  grpc::CompletionQueue queue;
  std::thread thread;
  EchoMessage request;
  std::vector<std::unique_ptr<ClientCall>> calls;

  ClientChannel(const std::string& address, int index) {
    grpc::ChannelArguments arguments;
    // A distinct argument and a local subchannel pool: this channel gets its own connection.
    arguments.SetInt("micro.bench.channel_index", index);
    arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), arguments);
    stub = Echo::NewStub(channel);
    request.set_body(std::string(request_body));
    for (int i = 0; i < max_concurrency; ++i) calls.push_back(std::make_unique<ClientCall>(*this));
    thread = std::thread([this] {
      void* tag;
      bool ok;
      while (queue.Next(&tag, &ok)) static_cast<ClientCall*>(tag)->on_finished(ok);
    });
  }

  bool connect(std::chrono::seconds limit) {
    return channel->WaitForConnected(std::chrono::system_clock::now() + limit);
  }

  ~ClientChannel() { stop(); }

  // Every call has completed (the loads finished): the queue drains and the thread ends.
  void stop() {
    if (!thread.joinable()) return;
    queue.Shutdown();
    thread.join();
  }
};

void ClientCall::start(Load& load) {
  load_ = &load;
  reader_.reset();  // lives in the previous call's arena, which the old context owns
  context_.emplace();
  started_ = Clock::now();
  reader_ = channel_.stub->PrepareAsyncEcho(&*context_, channel_.request, &channel_.queue);
  reader_->StartCall();
  reader_->Finish(&reply_, &status_, this);
}

void ClientCall::on_finished(bool ok) {
  auto now = Clock::now();
  Load& load = *load_;
  if (!ok || !status_.ok() || reply_.body() != request_body) {
    load.failed++;
  } else {
    load.completed++;
    std::lock_guard lock(load.mutex);
    load.latencies_ns.push_back((now - started_).count());
  }
  if (load.may_start_another(now)) {
    start(load);
  } else {
    load.slot_finished();
  }
}

// Runs one closed loop over the channels; false if it did not finish in time.
bool run_load(std::vector<std::unique_ptr<ClientChannel>>& channels, Load& load, int concurrency,
              std::chrono::nanoseconds limit) {
  load.running = concurrency;
  auto finished = load.finished.get_future();
  // Call i goes on channel i % channel_count.
  for (int i = 0; i < concurrency; ++i)
    channels[i % channel_count]->calls[i / channel_count]->start(load);
  return finished.wait_for(limit) == std::future_status::ready;
}

}  // namespace

int main(int argc, char** argv) try {
  double seconds = argc > 1 ? std::atof(argv[1]) : 3.0;
  auto duration = std::chrono::nanoseconds(static_cast<long>(seconds * 1e9));
  auto limit = duration + std::chrono::seconds(10);  // a point that overruns this is stuck

  EchoServer server;
  std::vector<std::unique_ptr<ClientChannel>> channels;
  for (int i = 0; i < channel_count; ++i)
    channels.push_back(std::make_unique<ClientChannel>(server.address(), i));
  for (auto& channel : channels)
    if (!channel->connect(std::chrono::seconds(5)))
      throw std::runtime_error("a channel did not connect within 5 s");

  std::vector<std::unique_ptr<Load>> loads;  // outlive the calls that point at them
  bool stuck = !bench::run_points(
      "grpc_echo", duration, channel_count, loads,
      [&](Load& load, int concurrency) { return run_load(channels, load, concurrency, limit); });
  if (stuck) {
    // Calls are still in flight and would keep the queues from draining: leave at once.
    std::cerr << "grpc_echo_bench: a load point did not finish in time\n";
    std::_Exit(1);
  }

  // Stop, bounded: a watchdog ends the process if gRPC does not let go within 10 s.
  std::mutex stop_mutex;
  std::condition_variable stop_condition;
  bool stopped = false;
  std::thread watchdog([&] {
    std::unique_lock lock(stop_mutex);
    if (!stop_condition.wait_for(lock, std::chrono::seconds(10), [&] { return stopped; })) {
      std::cerr << "grpc_echo_bench: shutdown did not finish within 10 s\n";
      std::_Exit(1);
    }
  });
  for (auto& channel : channels) channel->stop();
  channels.clear();
  server.stop();
  {
    std::lock_guard lock(stop_mutex);
    stopped = true;
  }
  stop_condition.notify_one();
  watchdog.join();
  return 0;
} catch (const std::exception& e) {
  std::cerr << "grpc_echo_bench: " << e.what() << "\n";
  return 1;
}
