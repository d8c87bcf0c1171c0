// Baseline for stream_bench: gRPC C++ (Debian's libgrpc++ 1.51) streaming 128-byte messages, in
// one process holding server and client like grpc_echo_bench. Four cases, each for a fixed time
// after a warm-up:
// - server_to_client: the client opens Ticks and the server writes the same message until the
//   client cancels; the figure is messages the client read per second;
// - bidirectional: the client writes messages on Chat as fast as flow control lets it (one
//   thread) while another thread reads the server's echo of each; the figure is echoes read per
//   second (each one a message sent and a message received);
// with 1 stream and with 16 streams, spread round-robin over 2 channels (2 HTTP/2 connections,
// as grpc_echo_bench and rpc_bench keep 2 connections).
//
// The synchronous API: a stream is a loop of blocking Write or Read calls, each returning once
// gRPC has taken the message under HTTP/2 flow control, with no completion-queue round trip per
// message (the CompletionQueue API allows one outstanding write per stream, so every message
// would cost one). WriteOptions are left at their defaults (no buffer hints), as a user's stream
// would write.
//
//   grpc_stream_bench [seconds per case, default 3]
//
// Prints one line per figure: `name value unit` (messages/s and MB/s of payload, and errors:
// messages whose body was not the 128 bytes sent).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "stream_echo.grpc.pb.h"

using Clock = std::chrono::steady_clock;
using micro_bench::StreamEcho;
using micro_bench::StreamMessage;

namespace {

constexpr std::size_t message_bytes = 128;
constexpr int channel_count = 2;
const std::string payload(message_bytes, 'x');

// ---- server ----

class StreamEchoService final : public StreamEcho::Service {
 public:
  grpc::Status Ticks(grpc::ServerContext* context, const StreamMessage*,
                     grpc::ServerWriter<StreamMessage>* writer) override {
    StreamMessage message;
    message.set_body(payload);
    while (!context->IsCancelled() && writer->Write(message)) {
    }
    return grpc::Status::OK;
  }

  grpc::Status Chat(grpc::ServerContext*,
                    grpc::ServerReaderWriter<StreamMessage, StreamMessage>* stream) override {
    StreamMessage message;
    while (stream->Read(&message))
      if (!stream->Write(message)) break;
    return grpc::Status::OK;
  }
};

// ---- client ----

// One stream's counters, on its own cache line so the streams' threads do not share one.
struct alignas(64) StreamCounters {
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> bad{0};
};

enum class Direction { server_to_client, bidirectional };

// Opens one stream and reads (and for bidi also writes) until `stop`; returns when it ended.
void run_stream(StreamEcho::Stub& stub, Direction direction, StreamCounters& counters,
                const std::atomic<bool>& stop, grpc::ClientContext& context) {
  StreamMessage message;
  if (direction == Direction::server_to_client) {
    StreamMessage request;
    auto reader = stub.Ticks(&context, request);
    while (reader->Read(&message)) {
      if (message.body().size() != message_bytes) counters.bad++;
      counters.received.fetch_add(1, std::memory_order_relaxed);
    }
    reader->Finish();  // CANCELLED: the client ended it
    return;
  }
  auto stream = stub.Chat(&context);
  std::thread writer([&] {
    StreamMessage out;
    out.set_body(payload);
    while (!stop.load(std::memory_order_relaxed))
      if (!stream->Write(out)) break;
    stream->WritesDone();
  });
  while (stream->Read(&message)) {
    if (message.body().size() != message_bytes) counters.bad++;
    counters.received.fetch_add(1, std::memory_order_relaxed);
  }
  writer.join();
  auto status = stream->Finish();
  if (!status.ok() && !stop) counters.bad++;
}

std::uint64_t total(const std::vector<std::unique_ptr<StreamCounters>>& counters,
                    std::atomic<std::uint64_t> StreamCounters::*field) {
  std::uint64_t sum = 0;
  for (auto& c : counters) sum += ((*c).*field).load();
  return sum;
}

void run_case(std::vector<std::unique_ptr<StreamEcho::Stub>>& stubs, Direction direction,
              int stream_count, std::chrono::nanoseconds duration) {
  std::vector<std::unique_ptr<StreamCounters>> counters;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::thread> threads;
  std::atomic<bool> stop{false};
  for (int i = 0; i < stream_count; ++i) {
    counters.push_back(std::make_unique<StreamCounters>());
    contexts.push_back(std::make_unique<grpc::ClientContext>());
  }
  for (int i = 0; i < stream_count; ++i)
    threads.emplace_back([&, i] {
      run_stream(*stubs[i % channel_count], direction, *counters[i], stop, *contexts[i]);
    });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // warm-up
  auto start_count = total(counters, &StreamCounters::received);
  auto started = Clock::now();
  std::this_thread::sleep_for(duration);
  auto end_count = total(counters, &StreamCounters::received);
  double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
  stop = true;
  if (direction == Direction::server_to_client)
    for (auto& context : contexts) context->TryCancel();
  for (auto& thread : threads) thread.join();

  double rate = static_cast<double>(end_count - start_count) / elapsed;
  std::string name =
      std::string("grpc_stream_") +
      (direction == Direction::server_to_client ? "server_to_client_" : "bidirectional_") +
      std::to_string(stream_count);
  std::printf("%s_messages_per_second %.0f msg/s\n", name.c_str(), rate);
  std::printf("%s_throughput %.1f MB/s\n", name.c_str(), rate * message_bytes / 1e6);
  std::printf("%s_errors %llu count\n", name.c_str(),
              static_cast<unsigned long long>(total(counters, &StreamCounters::bad)));
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) try {
  double seconds = argc > 1 ? std::atof(argv[1]) : 3.0;
  if (!(seconds > 0)) throw std::invalid_argument("seconds per case must be a positive number");
  auto duration = std::chrono::nanoseconds(static_cast<long>(seconds * 1e9));

  StreamEchoService service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();
  if (!server || port == 0) throw std::runtime_error("the gRPC server did not start");
  std::string address = "127.0.0.1:" + std::to_string(port);

  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<StreamEcho::Stub>> stubs;
  for (int i = 0; i < channel_count; ++i) {
    grpc::ChannelArguments arguments;
    // A distinct argument and a local subchannel pool: each channel gets its own connection.
    arguments.SetInt("micro.bench.channel_index", i);
    arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    channels.push_back(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), arguments));
    if (!channels.back()->WaitForConnected(std::chrono::system_clock::now() +
                                           std::chrono::seconds(5)))
      throw std::runtime_error("a channel did not connect within 5 s");
    stubs.push_back(StreamEcho::NewStub(channels.back()));
  }

  for (auto direction : {Direction::server_to_client, Direction::bidirectional})
    for (int streams : {1, 16}) run_case(stubs, direction, streams, duration);

  stubs.clear();
  channels.clear();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  return 0;
} catch (const std::exception& e) {
  std::cerr << "grpc_stream_bench: " << e.what() << "\n";
  return 1;
}
