// Selector benchmark: what the choice of selector does to a service with one bad node, and
// what a pick costs. Three greeter nodes in this process (memory registry, tcp transport),
// loaded through the whole client pipeline at concurrency 16:
// - slow node: one node's handler answers 10× later (10 ms instead of 1 ms, on a timer):
//   p50/p99 of each selector, and the ratio p2c p99 / roundrobin p99 (target ≤ 1/3).
// - failing node: one node fails every other call (503), no retries: the success rate of
//   roundrobin with penalty and ejection off, with ejection alone, and with the defaults.
// - cost of select_node alone, single thread, every node healthy and with one node ejected.
// Prints one line per figure: `name value unit`.
//
//   selector_bench [seconds per point, default 3] [--cost-only]
//
// --cost-only prints the cost of a pick alone (of whichever selector plugins are built), e.g.
// to compare a build before a change with one after.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/steady_timer.hpp>

#include <micro/client.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/runtime.hpp>
#include <micro/server.hpp>

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

using Options = std::vector<std::pair<std::string, std::string>>;

struct Cluster {
  micro::Runtime runtime{2};
  micro::PluginLoader& loader = micro::PluginLoader::instance();
  std::shared_ptr<micro::Registry> registry =
      loader.create<micro::Registry>("memory", "", {}, runtime.executor());
  std::shared_ptr<micro::Transport> transport =
      loader.create<micro::Transport>("tcp", "", {}, runtime.executor());
  std::shared_ptr<micro::RegistryCache> cache =
      std::make_shared<micro::RegistryCache>(registry, runtime.blocking_executor());
  std::vector<std::unique_ptr<micro::Server>> servers;

  ~Cluster() {
    for (auto& server : servers) server->stop();
    transport->close();
  }

  // A node of `service` answering after `delay`; every second call fails with 503 when
  // `flaky`.
  void add_node(const std::string& service, std::chrono::milliseconds delay, bool flaky) {
    micro::ServerOptions options;
    options.name = service;
    auto server = std::make_unique<micro::Server>(options, transport, registry, nullptr,
                                                  micro::WrapperChains{});
    auto executor = runtime.executor();
    auto calls = std::make_shared<std::atomic<std::uint64_t>>(0);
    server->handle(
        "Greeter.Hello", [executor, delay, flaky, calls](const micro::RequestPtr& request,
                                                         micro::ResponseHandler respond) {
          bool fail = flaky && calls->fetch_add(1, std::memory_order_relaxed) % 2 == 0;
          auto answer = [fail, body = request->body, respond = std::move(respond)]() {
            if (fail) {
              respond(micro::Response::failure(micro::unavailable("greeter", "flaky node")));
              return;
            }
            micro::Response response;
            response.content_type = "application/json";
            response.body = body;
            respond(std::move(response));
          };
          if (delay.count() == 0) {
            answer();
            return;
          }
          auto timer = std::make_shared<boost::asio::steady_timer>(executor, delay);
          timer->async_wait(
              [timer, answer = std::move(answer)](boost::system::error_code) mutable { answer(); });
        });
    server->start();
    servers.push_back(std::move(server));
  }

  std::shared_ptr<micro::Selector> selector(const std::string& name, const Options& options) {
    return loader.create<micro::Selector>(name, "", options, runtime.executor());
  }

  micro::Client client(std::shared_ptr<micro::Selector> selector, int retries) {
    micro::ClientOptions options;
    options.retries = retries;
    return micro::Client(options, transport, cache, std::move(selector), nullptr,
                         micro::WrapperChains{}, runtime.executor());
  }
};

// Keeps `concurrency` calls in flight until the deadline; each completion starts the next.
struct Load {
  micro::Client& client;
  std::string service;
  Clock::time_point deadline;
  std::mutex mutex;
  std::vector<std::int64_t> latencies_ns;
  std::atomic<std::uint64_t> completed{0}, failed{0};
  std::atomic<int> running{0};
  std::promise<void> finished;

  void start_one() {
    micro::Request request;
    request.service = service;
    request.endpoint = "Greeter.Hello";
    request.body = R"({"name":"World"})";
    auto started = Clock::now();
    client.async_call(std::move(request), micro::CallOptions{},
                      [this, started](micro::Response&& response) {
                        auto now = Clock::now();
                        if (response.error) {
                          failed++;
                        } else {
                          completed++;
                          std::lock_guard lock(mutex);
                          latencies_ns.push_back((now - started).count());
                        }
                        if (now < deadline)
                          start_one();
                        else if (--running == 0)
                          finished.set_value();
                      });
  }

  void run(int concurrency, std::chrono::nanoseconds duration) {
    deadline = Clock::now() + duration;
    running = concurrency;
    for (int i = 0; i < concurrency; ++i) start_one();
    finished.get_future().wait();
  }

  double percentile_us(double share) {
    std::sort(latencies_ns.begin(), latencies_ns.end());
    if (latencies_ns.empty()) return 0;
    auto index =
        std::min(latencies_ns.size() - 1,
                 static_cast<std::size_t>(share * static_cast<double>(latencies_ns.size())));
    return static_cast<double>(latencies_ns[index]) / 1000.0;
  }
};

void print(const std::string& name, double value, const char* unit) {
  std::printf("%s %.3f %s\n", name.c_str(), value, unit);
  std::fflush(stdout);
}

constexpr int concurrency = 16;

// p99 through the pipeline for one selector over the slow-node service.
double slow_node_point(Cluster& cluster, const std::string& name, const Options& options,
                       std::chrono::nanoseconds duration) {
  auto client = cluster.client(cluster.selector(name, options), 1);
  Load warm{client, "slow", {}, {}, {}, {}, {}, {}, {}};
  warm.run(concurrency, duration / 10);
  Load load{client, "slow", {}, {}, {}, {}, {}, {}, {}};
  load.run(concurrency, duration);
  double seconds = std::chrono::duration<double>(duration).count();
  std::string prefix = "selector_slow_node_" + name + "_c16";
  print(prefix + "_requests_per_second", static_cast<double>(load.completed) / seconds, "req/s");
  print(prefix + "_p50", load.percentile_us(0.50), "us");
  double p99 = load.percentile_us(0.99);
  print(prefix + "_p99", p99, "us");
  // The share of calls the slow node answered (those past 5 ms: the fast nodes take 1 ms).
  auto slow = std::count_if(load.latencies_ns.begin(), load.latencies_ns.end(),
                            [](std::int64_t latency) { return latency > 5'000'000; });
  print(prefix + "_slow_share",
        load.latencies_ns.empty()
            ? 0
            : 100.0 * static_cast<double>(slow) / static_cast<double>(load.latencies_ns.size()),
        "%");
  return p99;
}

void failing_node_point(Cluster& cluster, const std::string& label, const Options& options,
                        std::chrono::nanoseconds duration) {
  auto client = cluster.client(cluster.selector("roundrobin", options), 0);
  Load load{client, "flaky", {}, {}, {}, {}, {}, {}, {}};
  load.run(concurrency, duration);
  double total = static_cast<double>(load.completed + load.failed);
  print("selector_failing_node_" + label + "_success_rate",
        total > 0 ? 100.0 * static_cast<double>(load.completed) / total : 0, "%");
}

// Nanoseconds per select_node, single thread, over three nodes.
void select_cost(Cluster& cluster, const std::string& name, bool one_ejected) {
  auto selector = cluster.selector(name, {});
  std::vector<micro::Node> nodes;
  for (int i = 0; i < 3; ++i)
    nodes.push_back({"node-" + std::to_string(i), "127.0.0.1:" + std::to_string(1000 + i), {}});
  micro::Context context;
  micro::Outcome failure{false, 503, 1ms}, success{true, 0, 1ms};
  if (one_ejected)
    for (int i = 0; i < 5; ++i) selector->report("bench", nodes[2], failure);
  constexpr int picks = 2'000'000;
  std::uint64_t sum = 0;
  auto started = Clock::now();
  for (int i = 0; i < picks; ++i) {
    std::size_t index = selector->select_node("bench", nodes, context, 1);
    sum += index;
    if (name == "p2c") selector->report("bench", nodes[index], success);  // ends its in-flight
  }
  double ns = std::chrono::duration<double, std::nano>(Clock::now() - started).count() / picks;
  if (sum == 1) std::printf("#\n");  // keeps the loop
  print("selector_" + name + (one_ejected ? "_one_ejected" : "_healthy") +
            (name == "p2c" ? "_select_and_report_ns" : "_select_ns"),
        ns, "ns");
}

}  // namespace

int main(int argc, char** argv) try {
  double seconds = 3.0;
  bool cost_only = false;
  for (int index = 1; index < argc; ++index) {
    if (std::string_view(argv[index]) == "--cost-only")
      cost_only = true;
    else
      seconds = std::atof(argv[index]);
  }
  auto duration = std::chrono::nanoseconds(static_cast<long>(seconds * 1e9));
  Cluster cluster;
  cluster.add_node("slow", 1ms, false);
  cluster.add_node("slow", 1ms, false);
  cluster.add_node("slow", 10ms, false);
  cluster.add_node("flaky", 0ms, false);
  cluster.add_node("flaky", 0ms, false);
  cluster.add_node("flaky", 0ms, true);

  for (const char* name : {"random", "roundrobin", "weighted", "p2c", "hash"}) {
    try {
      select_cost(cluster, name, false);
      select_cost(cluster, name, true);
    } catch (const micro::Exception&) {  // not built in this tree
    }
  }
  if (cost_only) return 0;

  const Options no_health{
      {"penalty", "0"}, {"eject_consecutive", "0"}, {"eject_error_percent", "0"}};
  double roundrobin_p99 = slow_node_point(cluster, "roundrobin", no_health, duration);
  double p2c_p99 = slow_node_point(cluster, "p2c", no_health, duration);
  print("selector_slow_node_p2c_over_roundrobin_p99", p2c_p99 / roundrobin_p99, "ratio");

  failing_node_point(cluster, "roundrobin_no_ejection", no_health, duration);
  failing_node_point(cluster, "roundrobin_ejection",
                     {{"penalty", "0"}, {"eject_consecutive", "5"}, {"eject_error_percent", "50"}},
                     duration);
  failing_node_point(cluster, "roundrobin_defaults", {}, duration);
  return 0;
} catch (const std::exception& e) {
  std::cerr << "selector_bench: " << e.what() << "\n";
  return 1;
}
