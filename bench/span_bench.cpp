// bench/span_bench.cpp — the cost of one span start+end through the global tracer: tracing
// off (the API's no-op), unsampled (SDK, parent-based always_off), and sampled with four
// attributes (SDK, always_on, batch processor with an exporter that discards), and the same
// span under sampler=deferred, recorded and then discarded at its end. Prints
// `name value unit` lines: ns per span and heap allocations per span, counted by a global
// operator new. The SDK sources are compiled in (see bench/meson.build).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <new>
#include <string>

#include <micro/context.hpp>
#include <micro/trace.hpp>

#include "batch_processor.hpp"
#include "deferred_processor.hpp"
#include "samplers.hpp"
#include "sdk_tracer.hpp"

// Replacing operator new with malloc/free is valid; g++ cannot see that and warns.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
namespace {
std::atomic<std::uint64_t> allocation_count{0};
}
void* operator new(std::size_t size) {
  allocation_count.fetch_add(1, std::memory_order_relaxed);
  if (void* pointer = std::malloc(size == 0 ? 1 : size)) return pointer;
  throw std::bad_alloc();
}
void operator delete(void* pointer) noexcept {
  std::free(pointer);
}
void operator delete(void* pointer, std::size_t) noexcept {
  std::free(pointer);
}

namespace {

using namespace micro::trace;
using namespace micro::trace::sdk;

class DiscardingExporter final : public SpanExporter {
 public:
  ExportResult export_spans(std::span<const SpanData>) override { return ExportResult::success; }
  void shutdown(std::chrono::milliseconds) override {}
};

double thread_cpu_nanoseconds() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) * 1e9 + static_cast<double>(now.tv_nsec);
}

// Wall time and this thread's CPU time per span: on a loaded machine the CPU time is the
// steadier figure for what the calling thread pays.
template <class Body>
void measure(const char* name, int iterations, Body body) {
  for (int index = 0; index < iterations / 10; ++index) body();  // warm up pools and caches
  auto allocations_before = allocation_count.load();
  double cpu_started = thread_cpu_nanoseconds();
  auto started = std::chrono::steady_clock::now();
  for (int index = 0; index < iterations; ++index) body();
  auto elapsed =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - started).count();
  double cpu = thread_cpu_nanoseconds() - cpu_started;
  auto allocations = allocation_count.load() - allocations_before;
  std::printf("span_%s %.1f ns\n", name, elapsed / iterations);
  std::printf("span_%s_cpu %.1f ns\n", name, cpu / iterations);
  std::printf("span_%s_allocations %.2f per_span\n", name,
              static_cast<double>(allocations) / iterations);
}

}  // namespace

// span_bench [iterations, default 2000000] [off|unsampled|sampled|deferred: only that one, to
// profile]
int main(int argc, char** argv) {
  int iterations = argc > 1 ? std::atoi(argv[1]) : 2000000;
  std::string only = argc > 2 ? argv[2] : "";
  auto wanted = [&](const char* name) {
    return only.empty() || only == name;
  };
  micro::Context context;

  set_tracer(nullptr);
  if (wanted("off"))
    measure("tracing_off", iterations, [&] { start_span("Cache.Get", context)->end(); });

  BatchSettings settings;
  settings.max_queue_size = 1 << 16;  // room, so the bench measures queueing rather than drops
  settings.schedule_delay = std::chrono::milliseconds(100);
  auto processor =
      std::make_shared<BatchProcessor>(std::make_unique<DiscardingExporter>(), settings);

  set_tracer(
      std::make_shared<SdkTracer>(make_parent_based_sampler(make_always_off_sampler()), processor));
  if (wanted("unsampled"))
    measure("unsampled", iterations, [&] { start_span("Cache.Get", context)->end(); });

  set_tracer(std::make_shared<SdkTracer>(make_always_on_sampler(), processor));
  auto before = statistics();
  if (wanted("sampled"))
    measure("sampled_4_attributes", iterations, [&] {
      auto span = start_span("Cache.Get", context);
      span->set_attribute("db.system", std::string("redis"));
      span->set_attribute("db.operation", std::string("GET"));
      span->set_attribute("server.port", std::int64_t{6379});
      span->set_attribute("cache.hit", true);
      span->end();
    });
  // sampler=deferred, each span a clean local root that ratio 0 discards: recorded, held
  // until its end, decided, its data given back.
  auto deferred = std::make_shared<DeferredProcessor>(processor, DeferredSettings{});
  set_tracer(std::make_shared<SdkTracer>(make_deferred_sampler(0.0), deferred));
  if (wanted("deferred"))
    measure("deferred_discarded_4_attributes", iterations, [&] {
      auto span = start_span("Cache.Get", context);
      span->set_attribute("db.system", std::string("redis"));
      span->set_attribute("db.operation", std::string("GET"));
      span->set_attribute("server.port", std::int64_t{6379});
      span->set_attribute("cache.hit", true);
      span->end();
    });
  set_tracer(nullptr);
  processor->shutdown();
  auto after = statistics();
  std::printf("span_sampled_dropped %llu count\n",
              static_cast<unsigned long long>(after.spans_dropped - before.spans_dropped));
  return 0;
}
