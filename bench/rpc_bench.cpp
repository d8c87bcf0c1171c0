// RPC benchmark: a greeter-style echo (small JSON request and response) over the tcp
// transport through the whole pipeline — client wrappers, registry cache, selector, codec,
// server router — at several concurrencies, for a fixed time per point.
// Prints one line per figure: `name value unit`.
//
//   rpc_bench [seconds per point, default 3] [--name=rpc_tcp] [--remote] [--concurrency=N]
//             [micro flags…]
//
// --name sets the prefix of every figure, so one script can run it with and without wrappers.
// --remote starts no server of its own: the load goes to whichever `greeter` service the
// configured registry knows (e.g. examples/greeter-server in another process, whose memory
// the benchmark script watches). --concurrency runs that one point instead of 1, 16 and 64
// (for profiling).
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <iostream>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <micro/service.hpp>

#include "load_report.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

struct HelloRequest {
  std::string name;
};
struct HelloResponse {
  std::string greeting;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(HelloRequest, name)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(HelloResponse, greeting)

// Keeps `concurrency` calls in flight for `duration`; each completion starts the next.
struct Load {
  micro::Client& client;
  std::chrono::nanoseconds duration;
  Clock::time_point deadline;
  std::mutex mutex;
  std::vector<std::int64_t> latencies_ns;
  std::atomic<std::uint64_t> completed{0}, failed{0};
  std::atomic<int> running{0};
  std::promise<void> finished;

  void start_one() {
    auto started = Clock::now();
    client.async_call(client.make_request("greeter", "Greeter.Hello", HelloRequest{"World"}),
                      [this, started](micro::Response&& response) {
                        auto now = Clock::now();
                        if (response.error) {
                          failed++;
                        } else {
                          completed++;
                          std::lock_guard lock(mutex);
                          latencies_ns.push_back((now - started).count());
                        }
                        if (now < deadline) {
                          start_one();
                        } else if (--running == 0) {
                          finished.set_value();
                        }
                      });
  }
};

}  // namespace

int main(int argc, char** argv) try {
  std::string name_prefix = "rpc_tcp";
  bool remote = false;
  std::vector<int> concurrencies{1, 16, 64};
  for (int index = 1; index < argc;) {  // the benchmark's own flags, before micro's
    std::string_view argument = argv[index];
    if (argument.starts_with("--name=")) {
      name_prefix = argument.substr(7);
    } else if (argument.starts_with("--concurrency=")) {
      concurrencies = {std::atoi(argument.data() + 14)};
    } else if (argument == "--remote") {
      remote = true;
    } else {
      ++index;
      continue;
    }
    for (int from = index + 1; from <= argc; ++from) argv[from - 1] = argv[from];
    --argc;
  }
  auto config =
      micro::Config::load(argc, argv, "registry=memory selector=roundrobin transport=tcp");
  double seconds = argc > 1 ? std::atof(argv[1]) : 3.0;

  micro::Microservice service(remote ? "" : "greeter", config);
  if (!remote) {
    service.handle("Greeter.Hello", [](micro::Context&, const HelloRequest& request) {
      return HelloResponse{"Hello, " + request.name + "!"};
    });
    service.start();
  }
  // Warm up: connections, registry cache.
  for (int i = 0; i < 200; ++i)
    service.client().call<HelloResponse>("greeter", "Greeter.Hello", HelloRequest{"warm"});

  for (int concurrency : concurrencies) {
    Load load{service.client(),
              std::chrono::nanoseconds(static_cast<long>(seconds * 1e9)),
              {},
              {},
              {},
              {},
              {},
              {},
              {}};
    load.latencies_ns.reserve(bench::latency_samples_reserved);
    auto started = Clock::now();
    load.deadline = started + load.duration;
    load.running = concurrency;
    for (int i = 0; i < concurrency; ++i) load.start_one();
    load.finished.get_future().wait();
    double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
    bench::report_point(name_prefix, concurrency, load.completed, load.failed, elapsed,
                        load.latencies_ns);
  }
  bench::report_peak_rss(name_prefix);
  if (!remote) service.stop();
  return 0;
} catch (const std::exception& e) {
  std::cerr << "rpc_bench: " << e.what() << "\n";
  return 1;
}
