// etcd registry benchmark against a real etcd started on loopback: the cost of a cached lookup
// plus a node selection (RegistryCache over etcd, random selector), and of an uncached
// get_service round trip to etcd. Prints one line per figure: `name value unit`.
//
//   etcd_registry_bench [iterations of the uncached lookup, default 2000]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>

#include <micro/context.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/registry.hpp>
#include <micro/registry_cache.hpp>
#include <micro/selector.hpp>

#include "registry/etcd/etcd_fixture.hpp"

using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  const int uncached_iterations = argc > 1 ? std::max(1, std::atoi(argv[1])) : 2000;
  etcd_test::EtcdCluster etcd;
  boost::asio::io_context io_context;
  boost::asio::thread_pool blocking(2);
  auto& loader = micro::PluginLoader::instance();
  auto registry =
      loader.create<micro::Registry>("etcd", etcd.address(), {}, io_context.get_executor());
  auto selector = loader.create<micro::Selector>("random", "", {}, io_context.get_executor());
  registry->register_service(
      registry_test::make_service("bench", "1", {"bench-1", "bench-2", "bench-3", "bench-4"}), {});

  // Uncached: one range request to etcd per lookup.
  for (int warm = 0; warm < 100; ++warm) registry->get_service("bench");
  std::vector<double> samples;
  samples.reserve(uncached_iterations);
  for (int index = 0; index < uncached_iterations; ++index) {
    const auto started = Clock::now();
    auto found = registry->get_service("bench");
    samples.push_back(std::chrono::duration<double, std::micro>(Clock::now() - started).count());
    if (found.empty() || found[0].nodes.size() != 4) return 1;
  }
  std::sort(samples.begin(), samples.end());
  double total = 0;
  for (double sample : samples) total += sample;
  std::printf("etcd_get_service_uncached_mean %.1f us\n", total / samples.size());
  std::printf("etcd_get_service_uncached_p50 %.1f us\n", samples[samples.size() / 2]);
  std::printf("etcd_get_service_uncached_p99 %.1f us\n", samples[samples.size() * 99 / 100]);

  // Cached: served from memory, kept fresh by the etcd watch; plus picking a node.
  auto cache = std::make_shared<micro::RegistryCache>(registry, blocking.get_executor());
  cache->get_service("bench");  // fill
  micro::Context context;
  constexpr int cached_iterations = 1'000'000;
  std::size_t checksum = 0;
  const auto started = Clock::now();
  for (int index = 0; index < cached_iterations; ++index) {
    auto found = cache->get_service("bench");
    checksum += selector->select_node("bench", found[0].nodes, context, 1);
  }
  const double nanoseconds =
      std::chrono::duration<double, std::nano>(Clock::now() - started).count() / cached_iterations;
  std::printf("etcd_cached_lookup_and_select %.1f ns\n", nanoseconds);
  cache.reset();
  blocking.join();
  return checksum == static_cast<std::size_t>(-1) ? 1 : 0;
}
