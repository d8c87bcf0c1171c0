// load-driver: steady closed-loop load on the greeter for the fault tests. N threads call
// Greeter.Hello back to back for S seconds through an ordinary micro::Microservice client
// (registry, selector and transport from the usual flags), and every 100 ms one JSON line
// reports that interval's successes, errors, p99 latency and the last error seen, so a test
// can say what happened before, during and after the fault it injects. A last line sums up.
//
//   load-driver [--registry=…] [--transport=…] CONCURRENCY SECONDS
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <micro/service.hpp>
#include <nlohmann/json.hpp>

#include "greeter.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Interval {
  std::mutex mutex;
  std::vector<double> latencies_us;  // successful calls only
  std::uint64_t errors = 0;
  std::string last_error;
};

double percentile(std::vector<double>& values, double share) {
  if (values.empty()) return 0;
  auto at = values.begin() + static_cast<std::ptrdiff_t>(share * double(values.size() - 1));
  std::nth_element(values.begin(), at, values.end());
  return *at;
}

}  // namespace

int main(int argc, char** argv) try {
  auto config = micro::Config::load(argc, argv, "registry=file selector=roundrobin");
  if (argc != 3) {
    std::cerr << "usage: load-driver [--config flags] CONCURRENCY SECONDS\n";
    return 2;
  }
  const int concurrency = std::stoi(argv[1]);
  const auto duration = std::chrono::duration<double>(std::stod(argv[2]));

  micro::Microservice service("", config);
  Interval interval;
  std::atomic<bool> running{true};
  std::uint64_t total_ok = 0, total_errors = 0;
  std::vector<double> all_latencies_us;

  std::vector<std::thread> callers;
  for (int i = 0; i < concurrency; ++i) {
    callers.emplace_back([&] {
      while (running.load(std::memory_order_relaxed)) {
        const auto begin = Clock::now();
        std::string failure;
        try {
          service.client().call<greeter::HelloResponse>("greeter", "Greeter.Hello",
                                                        greeter::HelloRequest{"fault"});
        } catch (const std::exception& e) {
          failure = e.what();
        }
        const double micros =
            std::chrono::duration<double, std::micro>(Clock::now() - begin).count();
        std::lock_guard lock(interval.mutex);
        if (failure.empty()) {
          interval.latencies_us.push_back(micros);
        } else {
          ++interval.errors;
          interval.last_error = std::move(failure);
        }
      }
    });
  }

  const auto start = Clock::now();
  auto next = start;
  while (Clock::now() - start < duration) {
    next += std::chrono::milliseconds(100);
    std::this_thread::sleep_until(next);
    std::vector<double> latencies;
    std::uint64_t errors;
    std::string last_error;
    {
      std::lock_guard lock(interval.mutex);
      latencies.swap(interval.latencies_us);
      errors = std::exchange(interval.errors, 0);
      last_error = std::move(interval.last_error);
      interval.last_error.clear();
    }
    total_ok += latencies.size();
    total_errors += errors;
    all_latencies_us.insert(all_latencies_us.end(), latencies.begin(), latencies.end());
    nlohmann::json line = {
        {"t_ms",
         std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count()},
        {"ok", latencies.size()},
        {"errors", errors},
        {"p99_us", percentile(latencies, 0.99)}};
    if (!last_error.empty()) line["last_error"] = last_error;
    std::cout << line.dump() << std::endl;
  }
  running = false;
  for (auto& caller : callers) caller.join();
  {
    std::lock_guard lock(interval.mutex);  // calls that finished after the last report
    total_ok += interval.latencies_us.size();
    total_errors += interval.errors;
  }
  nlohmann::json summary = {{"summary", true},
                            {"ok", total_ok},
                            {"errors", total_errors},
                            {"p50_us", percentile(all_latencies_us, 0.50)},
                            {"p99_us", percentile(all_latencies_us, 0.99)}};
  std::cout << summary.dump() << std::endl;
  return 0;
} catch (const std::exception& e) {
  std::cerr << "load-driver: " << e.what() << "\n";
  return 1;
}
