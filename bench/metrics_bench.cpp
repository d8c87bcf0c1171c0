// bench/metrics_bench.cpp — what the metrics wrapper costs per call beside no wrapper, in one
// run, and how long a /metrics scrape takes with 100 endpoints. Prints `name value unit`:
//   metrics_none_handler_ns          a bare handler chain, per call (wall time, one thread)
//   metrics_registry_handler_ns      with wrappers=metrics (counter + histogram in the registry)
//   metrics_report_handler_ns        with wrappers=metrics?stream=… (the older text report too)
//   metrics_registry_overhead_ns     the registry's cost per call (second minus first)
//   metrics_registry_4threads_ns     per call, four threads on the same endpoint (sharded cells)
//   metrics_scrape_100_endpoints_us  one Prometheus text exposition of 100 endpoints' series
//   metrics_scrape_100_endpoints_bytes  its size
//
//   metrics_bench [calls per case, default 2000000]
#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <micro/metrics.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/runtime.hpp>
#include <micro/wrapper.hpp>

namespace {

using Clock = std::chrono::steady_clock;

micro::HandlerFunction chain_with(const std::shared_ptr<micro::Wrapper>& wrapper) {
  micro::WrapperChains chains;
  if (wrapper) chains.add(wrapper->wrappers({"bench", "latest", "tcp", "memory"}));
  return chains.wrap_handler(
      [](const micro::RequestPtr&, micro::ResponseHandler done) { done(micro::Response{}); });
}

double nanoseconds_per_call(const micro::HandlerFunction& handler, long calls,
                            const std::string& endpoint = "Bench.Call") {
  auto request = std::make_shared<micro::Request>();
  request->service = "bench";
  request->endpoint = endpoint;
  long answered = 0;
  auto start = Clock::now();
  for (long i = 0; i < calls; ++i) handler(request, [&answered](micro::Response&&) { ++answered; });
  auto elapsed = std::chrono::duration<double, std::nano>(Clock::now() - start).count();
  if (answered != calls) std::abort();
  return elapsed / static_cast<double>(calls);
}

}  // namespace

int main(int argc, char** argv) {
  long calls = argc > 1 ? std::atol(argv[1]) : 2000000;
  micro::Runtime runtime(1);
  auto& loader = micro::PluginLoader::instance();
  auto registry_only = loader.create<micro::Wrapper>("metrics", "", {}, runtime.executor());
  auto report_file = std::filesystem::temp_directory_path() /
                     ("metrics_bench_" + std::to_string(::getpid()) + ".txt");
  auto with_report = loader.create<micro::Wrapper>(
      "metrics", "", {{"stream", report_file.string()}}, runtime.executor());

  auto none = chain_with(nullptr);
  auto metrics = chain_with(registry_only);
  auto report = chain_with(with_report);
  // Warm up, then alternate so drift hits every case alike.
  nanoseconds_per_call(none, calls / 10);
  nanoseconds_per_call(metrics, calls / 10);
  double none_ns = 0, metrics_ns = 0, report_ns = 0;
  for (int round = 0; round < 3; ++round) {
    none_ns += nanoseconds_per_call(none, calls) / 3;
    metrics_ns += nanoseconds_per_call(metrics, calls) / 3;
    report_ns += nanoseconds_per_call(report, calls) / 3;
  }
  std::printf("metrics_none_handler_ns %.1f ns\n", none_ns);
  std::printf("metrics_registry_handler_ns %.1f ns\n", metrics_ns);
  std::printf("metrics_report_handler_ns %.1f ns\n", report_ns);
  std::printf("metrics_registry_overhead_ns %.1f ns\n", metrics_ns - none_ns);

  // Four threads on one endpoint: the cells are sharded, so they do not share a cache line.
  std::vector<std::thread> threads;
  std::vector<double> per_thread(4);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] { per_thread[t] = nanoseconds_per_call(metrics, calls / 2); });
  for (auto& thread : threads) thread.join();
  double parallel = 0;
  for (double value : per_thread) parallel += value / 4;
  std::printf("metrics_registry_4threads_ns %.1f ns\n", parallel);

  // 100 endpoints, each with a success and an error series: the scrape's cost.
  for (int e = 0; e < 100; ++e) {
    std::string endpoint = "Bench.Endpoint" + std::to_string(e);
    nanoseconds_per_call(metrics, 10, endpoint);
  }
  std::string text;
  int scrapes = 200;
  auto start = Clock::now();
  for (int i = 0; i < scrapes; ++i) text = micro::metrics::default_registry().expose();
  double scrape_us =
      std::chrono::duration<double, std::micro>(Clock::now() - start).count() / scrapes;
  std::printf("metrics_scrape_100_endpoints_us %.1f us\n", scrape_us);
  std::printf("metrics_scrape_100_endpoints_bytes %zu bytes\n", text.size());

  with_report.reset();
  std::filesystem::remove(report_file);
  return 0;
}
