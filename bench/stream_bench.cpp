// Stream benchmark: 128-byte messages over micro-cpp streams on the tcp transport through the
// whole pipeline (client_stream and handler_stream wrappers, registry cache, selector, server
// router), beside bench/grpc_stream_bench.cpp's gRPC C++ figures of the same four cases:
// - server_to_client: the client opens Bench.Ticks and the server writes the same message
//   until the client cancels; the figure is messages the client read per second;
// - bidirectional: the client writes on Bench.Chat as fast as the stream's window lets it
//   while reading the server's echo of each; the figure is echoes read per second;
// with 1 stream and with 16 streams, for a fixed time per case after a warm-up. One process
// holds server and client, like grpc_stream_bench. Messages are raw bytes (micro::Stream), as
// gRPC's are one protobuf bytes field; both sides keep one write and one read outstanding per
// stream, the most the stream contract allows.
//
//   stream_bench [seconds per case, default 3] [--name=stream_tcp] [micro flags…]
//
// Prints one line per figure: `name value unit` (messages/s and MB/s of payload, and errors:
// messages not of the 128 bytes sent, or streams that ended with an unexpected error).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <micro/service.hpp>

using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t message_bytes = 128;
const std::string payload(message_bytes, 'x');

// ---- server ----

// Bench.Ticks: after the request, writes the payload until a write fails (the client cancelled).
void write_ticks(const micro::MessageStreamPtr& stream) {
  stream->async_write(payload, [stream](std::optional<micro::Error> error) {
    if (error) {
      stream->finish(micro::Response{});  // already ended by the client: a no-op
      return;
    }
    write_ticks(stream);
  });
}

// Bench.Chat: reads a message, writes it back, reads the next; the client's close ends it.
void echo_next(const micro::MessageStreamPtr& stream) {
  stream->async_read([stream](std::optional<std::string> message) {
    if (!message) {
      stream->finish(micro::Response{});
      return;
    }
    stream->async_write(std::move(*message), [stream](std::optional<micro::Error> error) {
      if (error) {
        stream->finish(micro::Response{});
        return;
      }
      echo_next(stream);
    });
  });
}

// ---- client ----

struct alignas(64) StreamCounters {
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> bad{0};
};

enum class Direction { server_to_client, bidirectional };

// One client stream's loops: the reader counts until the end; the bidi writer writes until
// `stop`, then closes its side. `finished` is told once the stream ended and was read out.
struct ClientStream : std::enable_shared_from_this<ClientStream> {
  micro::Stream stream;
  StreamCounters& counters;
  const std::atomic<bool>& stop;
  std::shared_ptr<std::atomic<int>> running;
  std::shared_ptr<std::promise<void>> finished;

  ClientStream(micro::Stream stream, StreamCounters& counters, const std::atomic<bool>& stop,
               std::shared_ptr<std::atomic<int>> running,
               std::shared_ptr<std::promise<void>> finished)
      : stream(std::move(stream)),
        counters(counters),
        stop(stop),
        running(std::move(running)),
        finished(std::move(finished)) {}

  void read_next() {
    stream.raw()->async_read([self = shared_from_this()](std::optional<std::string> message) {
      if (!message) {
        if (self->running->fetch_sub(1) == 1) self->finished->set_value();
        return;
      }
      if (message->size() != message_bytes) self->counters.bad++;
      self->counters.received.fetch_add(1, std::memory_order_relaxed);
      self->read_next();
    });
  }

  void write_next() {
    if (stop.load(std::memory_order_relaxed)) {
      stream.close_send();
      return;
    }
    stream.raw()->async_write(payload, [self = shared_from_this()](std::optional<micro::Error> e) {
      if (e) {
        if (!self->stop) self->counters.bad++;
        return;
      }
      self->write_next();
    });
  }
};

void run_case(micro::Microservice& service, const std::string& prefix, Direction direction,
              int stream_count, std::chrono::nanoseconds duration) {
  std::vector<std::unique_ptr<StreamCounters>> counters;
  std::vector<std::shared_ptr<ClientStream>> streams;
  std::atomic<bool> stop{false};
  auto running = std::make_shared<std::atomic<int>>(stream_count);
  auto finished = std::make_shared<std::promise<void>>();
  auto all_finished = finished->get_future();
  const char* endpoint = direction == Direction::server_to_client ? "Bench.Ticks" : "Bench.Chat";
  for (int i = 0; i < stream_count; ++i) {
    counters.push_back(std::make_unique<StreamCounters>());
    streams.push_back(
        std::make_shared<ClientStream>(service.client().open_stream("bench_stream", endpoint),
                                       *counters.back(), stop, running, finished));
  }
  for (auto& stream : streams) {
    if (direction == Direction::server_to_client) {
      stream->stream.send(payload);  // the request
      stream->stream.close_send();
    } else {
      stream->write_next();
    }
    stream->read_next();
  }
  auto total = [&](std::atomic<std::uint64_t> StreamCounters::*field) {
    std::uint64_t sum = 0;
    for (auto& c : counters) sum += ((*c).*field).load();
    return sum;
  };
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // warm-up
  auto start_count = total(&StreamCounters::received);
  auto started = Clock::now();
  std::this_thread::sleep_for(duration);
  auto end_count = total(&StreamCounters::received);
  double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
  stop = true;
  if (direction == Direction::server_to_client)
    for (auto& stream : streams) stream->stream.cancel();
  if (all_finished.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    std::cerr << "stream_bench: streams did not end within 10 s of the case's end\n";
    std::_Exit(1);
  }
  std::uint64_t bad = total(&StreamCounters::bad);
  for (auto& stream : streams) {
    auto error = stream->stream.error();
    // A cancelled ticker ends with 499 by design; a chat must end cleanly.
    if (error && !(direction == Direction::server_to_client && error->code == 499)) {
      std::cerr << "stream_bench: " << endpoint << " ended with " << error->message() << "\n";
      bad++;
    }
  }

  double rate = static_cast<double>(end_count - start_count) / elapsed;
  std::string name =
      prefix + "_" +
      (direction == Direction::server_to_client ? "server_to_client_" : "bidirectional_") +
      std::to_string(stream_count);
  std::printf("%s_messages_per_second %.0f msg/s\n", name.c_str(), rate);
  std::printf("%s_throughput %.1f MB/s\n", name.c_str(), rate * message_bytes / 1e6);
  std::printf("%s_errors %llu count\n", name.c_str(), static_cast<unsigned long long>(bad));
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) try {
  double seconds = 3.0;
  std::string prefix = "stream_tcp";
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    std::string_view argument = argv[i];
    if (argument.starts_with("--name="))
      prefix = std::string(argument.substr(7));
    else if (!argument.starts_with("--"))
      seconds = std::atof(argv[i]);
    else
      rest.push_back(argv[i]);
  }
  if (!(seconds > 0)) throw std::invalid_argument("seconds per case must be a positive number");
  auto duration = std::chrono::nanoseconds(static_cast<long>(seconds * 1e9));
  int rest_count = static_cast<int>(rest.size());
  auto config = micro::Config::load(rest_count, rest.data(),
                                    "registry=memory selector=roundrobin transport=tcp");

  micro::Microservice service("bench_stream", config);
  service.handle_stream("Bench.Ticks", [](const micro::MessageStreamPtr& stream) {
    stream->async_read([stream](std::optional<std::string> request) {
      if (!request) {
        stream->finish(micro::Response{});
        return;
      }
      write_ticks(stream);
    });
  });
  service.handle_stream("Bench.Chat",
                        [](const micro::MessageStreamPtr& stream) { echo_next(stream); });
  service.start();

  for (auto direction : {Direction::server_to_client, Direction::bidirectional})
    for (int streams : {1, 16}) run_case(service, prefix, direction, streams, duration);

  service.stop();
  return 0;
} catch (const micro::Exception& e) {
  std::cerr << "stream_bench: " << e.error().message() << "\n";
  return 1;
} catch (const std::exception& e) {
  std::cerr << "stream_bench: " << e.what() << "\n";
  return 1;
}
