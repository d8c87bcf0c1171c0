// bench/load_report.hpp — how every RPC benchmark (ours and the baselines) reports a load
// point, written once so that the ratios between them compare like with like:
// requests/s over the point's wall time, p50/p99 from every completed call's latency, errors,
// and the process's peak RSS.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace bench {

// Room for every latency sample up front: pages count in RSS only once written, while a
// growing vector would briefly hold two copies and inflate the peak RSS figure.
inline constexpr std::size_t latency_samples_reserved = std::size_t{1} << 24;

// The baselines' closed loop: keeps `concurrency` requests in flight until `deadline` (or until
// `budget` starts are used, for the warm-up); each completion starts the next.
struct ClosedLoop {
  using Clock = std::chrono::steady_clock;
  Clock::time_point deadline = Clock::time_point::max();
  std::atomic<long> budget{LONG_MAX};
  std::mutex mutex;  // guards latencies_ns
  std::vector<std::int64_t> latencies_ns;
  std::atomic<std::uint64_t> completed{0}, failed{0};
  std::atomic<int> running{0};
  std::promise<void> finished;

  bool may_start_another(Clock::time_point now) {
    return now < deadline && budget.fetch_sub(1, std::memory_order_relaxed) > 0;
  }
  void slot_finished() {
    if (--running == 0) finished.set_value();
  }
};

inline long peak_rss_kilobytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6);
  return 0;
}

// Prints <prefix>_c<concurrency>_requests_per_second, _p50, _p99 (µs) and _errors; sorts
// `latencies_ns` in place.
inline void report_point(std::string_view prefix, int concurrency, std::uint64_t completed,
                         std::uint64_t failed, double elapsed_seconds,
                         std::vector<std::int64_t>& latencies_ns) {
  std::sort(latencies_ns.begin(), latencies_ns.end());
  auto percentile = [&](double share) {
    if (latencies_ns.empty()) return 0.0;
    auto index =
        std::min(latencies_ns.size() - 1,
                 static_cast<std::size_t>(share * static_cast<double>(latencies_ns.size())));
    return static_cast<double>(latencies_ns[index]) / 1000.0;
  };
  std::string name = std::string(prefix) + "_c" + std::to_string(concurrency);
  std::printf("%s_requests_per_second %.0f req/s\n", name.c_str(),
              static_cast<double>(completed) / elapsed_seconds);
  std::printf("%s_p50 %.1f us\n", name.c_str(), percentile(0.50));
  std::printf("%s_p99 %.1f us\n", name.c_str(), percentile(0.99));
  std::printf("%s_errors %llu count\n", name.c_str(), static_cast<unsigned long long>(failed));
  std::fflush(stdout);
}

inline void report_peak_rss(std::string_view prefix) {
  std::printf("%s_peak_rss %ld KiB\n", std::string(prefix).c_str(), peak_rss_kilobytes());
  std::fflush(stdout);
}

// The baselines' driver: 200 warm-up round trips (`budget` calls, one per connection to
// start), then a point per concurrency 1, 16, 64 for `duration`, each reported as above.
// `run_load(load, concurrency)` runs one load to its end and returns false when it overran
// its time limit; every load is kept in `loads`, because a stuck point may still have
// handlers pointing at it. Returns false when a point got stuck (the peak RSS is then not
// reported).
template <class Load, class RunLoad>
bool run_points(std::string_view prefix, std::chrono::nanoseconds duration, int connections,
                std::vector<std::unique_ptr<Load>>& loads, RunLoad&& run_load) {
  auto& warm_up = *loads.emplace_back(std::make_unique<Load>());
  warm_up.budget = 200 - connections;
  if (!run_load(warm_up, connections)) return false;
  for (int concurrency : {1, 16, 64}) {
    auto& load = *loads.emplace_back(std::make_unique<Load>());
    load.latencies_ns.reserve(latency_samples_reserved);
    auto started = std::chrono::steady_clock::now();
    load.deadline = started + duration;
    if (!run_load(load, concurrency)) return false;
    double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    report_point(prefix, concurrency, load.completed, load.failed, elapsed, load.latencies_ns);
    std::vector<std::int64_t>().swap(load.latencies_ns);  // each point's samples freed
  }
  report_peak_rss(prefix);
  return true;
}

}  // namespace bench
