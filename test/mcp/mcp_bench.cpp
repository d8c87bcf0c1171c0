// What `micro mcp` adds: tools/call over Streamable HTTP (2026-07-28 stateless request, JSON
// answer) → the greeter over tcp, beside calling the greeter directly with the client; p50/p99
// at c=1 and calls/s at c=16 (closed loops, one thread each), and the time of one tools/list
// of 500+ tools. The greeter, a 500-endpoint service and the gateway run in this process on
// loopback tcp with a file registry. Prints `name value unit` lines like the other benchmarks.
//
//   mcp-bench [seconds per point, default 2]
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <micro/http_client.hpp>
#include <micro/log.hpp>
#include <micro/service.hpp>

#include "mcp_gateway.hpp"

namespace {

struct HelloRequest {
  std::string name;
};
struct HelloResponse {
  std::string greeting;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(HelloRequest, name)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(HelloResponse, greeting)

using Clock = std::chrono::steady_clock;

struct Point {
  std::vector<std::int64_t> latencies_ns;
  std::uint64_t errors = 0;
  double seconds = 0;
};

// `concurrency` threads call `once(thread index)` back to back for `seconds`.
template <class Once>
Point run_point(int concurrency, double seconds, Once once) {
  std::vector<Point> parts(static_cast<std::size_t>(concurrency));
  auto start = Clock::now();
  auto deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::vector<std::thread> threads;
  for (int t = 0; t < concurrency; ++t)
    threads.emplace_back([&, t] {
      Point& part = parts[static_cast<std::size_t>(t)];
      while (Clock::now() < deadline) {
        auto begin = Clock::now();
        bool ok = once(t);
        auto took = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - begin);
        if (ok)
          part.latencies_ns.push_back(took.count());
        else
          ++part.errors;
      }
    });
  for (auto& thread : threads) thread.join();
  Point total;
  total.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (auto& part : parts) {
    total.latencies_ns.insert(total.latencies_ns.end(), part.latencies_ns.begin(),
                              part.latencies_ns.end());
    total.errors += part.errors;
  }
  std::sort(total.latencies_ns.begin(), total.latencies_ns.end());
  return total;
}

double percentile_us(const Point& point, double fraction) {
  if (point.latencies_ns.empty()) return 0;
  auto index =
      static_cast<std::size_t>(fraction * static_cast<double>(point.latencies_ns.size() - 1));
  return static_cast<double>(point.latencies_ns[index]) / 1000.0;
}

void emit(const std::string& name, double value, const char* unit) {
  std::printf("%s %.2f %s\n", name.c_str(), value, unit);
}

micro::http::Request mcp_post(const micro::http::Url& url, const std::string& method,
                              const nlohmann::json& params, const std::string& name = {}) {
  nlohmann::json body = {{"jsonrpc", "2.0"}, {"id", 1}, {"method", method}, {"params", params}};
  body["params"]["_meta"] = {
      {"io.modelcontextprotocol/protocolVersion", "2026-07-28"},
      {"io.modelcontextprotocol/clientCapabilities", nlohmann::json::object()}};
  micro::http::Request request;
  request.method = "POST";
  request.url = url;
  request.headers = {{"Content-Type", "application/json"},
                     {"Accept", "application/json"},
                     {"MCP-Protocol-Version", "2026-07-28"},
                     {"Mcp-Method", method}};
  if (!name.empty()) request.headers.push_back({"Mcp-Name", name});
  request.body = body.dump();
  return request;
}

}  // namespace

int main(int argc, char** argv) try {
  double seconds = argc > 1 ? std::atof(argv[1]) : 2.0;
  char pattern[] = "/tmp/mcp-bench-XXXXXX";
  if (mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
  std::string registry_dir = pattern;
  micro::log::set_level(micro::log::Level::warn);
  auto config = micro::Config::parse("registry=file?dir=" + registry_dir + " transport=tcp");

  micro::Microservice greeter("greeter", config);
  greeter.handle("Greeter.Hello", [](micro::Context&, const HelloRequest& request) {
    return HelloResponse{"Hello, " + request.name + "!"};
  });
  greeter.start();
  micro::Microservice bulk("bulk", config);
  constexpr int bulk_endpoints = 500;
  for (int i = 0; i < bulk_endpoints; ++i) {
    char endpoint[32];
    std::snprintf(endpoint, sizeof endpoint, "Bulk.Op%03d", i);
    bulk.handle(endpoint, [](micro::Context&, const HelloRequest& request) {
      return HelloResponse{request.name};
    });
  }
  bulk.start();

  micro::Microservice caller("", config);
  micro::mcp::McpOptions options;
  options.address = "127.0.0.1:0";
  options.page_size = 1000;
  micro::mcp::Gateway gateway(caller, options);
  gateway.start();
  auto ready_by = Clock::now() + std::chrono::seconds(20);
  while (gateway.statistics().tools < bulk_endpoints + 1 && Clock::now() < ready_by)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::size_t tools = gateway.statistics().tools;
  if (tools < bulk_endpoints + 1) throw std::runtime_error("the gateway lists too few tools");

  auto url = micro::http::parse_url("http://" + gateway.address() + "/mcp");
  std::vector<std::unique_ptr<micro::http::BlockingClient>> http_clients;
  for (int i = 0; i < 16; ++i)
    http_clients.push_back(std::make_unique<micro::http::BlockingClient>());
  auto direct = [&](int) {
    try {
      auto response =
          caller.client().call<HelloResponse>("greeter", "Greeter.Hello", HelloRequest{"bench"});
      return response.greeting == "Hello, bench!";
    } catch (const std::exception&) {
      return false;
    }
  };
  auto tool_call = [&](int thread) {
    try {
      auto response = http_clients[static_cast<std::size_t>(thread)]->request(
          mcp_post(url, "tools/call",
                   {{"name", "greeter.Greeter.Hello"}, {"arguments", {{"name", "bench"}}}},
                   "greeter.Greeter.Hello"));
      return response.status == 200 && response.body.find("Hello, bench!") != std::string::npos &&
             response.body.find("\"isError\":false") != std::string::npos;
    } catch (const std::exception&) {
      return false;
    }
  };
  auto tools_list = [&](int thread) {
    try {
      auto response = http_clients[static_cast<std::size_t>(thread)]->request(
          mcp_post(url, "tools/list", nlohmann::json::object()));
      return response.status == 200 && response.body.find("bulk.Bulk.Op499") != std::string::npos;
    } catch (const std::exception&) {
      return false;
    }
  };

  run_point(1, std::min(0.5, seconds), direct);  // warm-up: connections, caches
  run_point(1, std::min(0.5, seconds), tool_call);
  Point direct_c1 = run_point(1, seconds, direct);
  Point mcp_c1 = run_point(1, seconds, tool_call);
  Point direct_c16 = run_point(16, seconds, direct);
  Point mcp_c16 = run_point(16, seconds, tool_call);
  Point list = run_point(1, seconds, tools_list);

  emit("mcp_direct_c1_p50", percentile_us(direct_c1, 0.5), "us");
  emit("mcp_direct_c1_p99", percentile_us(direct_c1, 0.99), "us");
  emit("mcp_tools_call_c1_p50", percentile_us(mcp_c1, 0.5), "us");
  emit("mcp_tools_call_c1_p99", percentile_us(mcp_c1, 0.99), "us");
  emit("mcp_added_c1_p50", percentile_us(mcp_c1, 0.5) - percentile_us(direct_c1, 0.5), "us");
  emit("mcp_added_c1_p99", percentile_us(mcp_c1, 0.99) - percentile_us(direct_c1, 0.99), "us");
  emit("mcp_direct_c16_calls_per_second",
       static_cast<double>(direct_c16.latencies_ns.size()) / direct_c16.seconds, "1/s");
  emit("mcp_tools_call_c16_calls_per_second",
       static_cast<double>(mcp_c16.latencies_ns.size()) / mcp_c16.seconds, "1/s");
  emit("mcp_tools_list_tools", static_cast<double>(tools), "tools");
  emit("mcp_tools_list_p50", percentile_us(list, 0.5), "us");
  emit("mcp_tools_list_p99", percentile_us(list, 0.99), "us");
  emit("mcp_errors",
       static_cast<double>(direct_c1.errors + mcp_c1.errors + direct_c16.errors + mcp_c16.errors +
                           list.errors),
       "calls");

  gateway.stop();
  bulk.stop();
  greeter.stop();
  std::filesystem::remove_all(registry_dir);
  return 0;
} catch (const std::exception& e) {
  std::cerr << "mcp-bench: " << e.what() << "\n";
  return 1;
}
