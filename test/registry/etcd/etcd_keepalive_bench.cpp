// What keeping leases alive costs etcd: R registry objects × N nodes each in one process, kept
// alive for a window of W seconds against a real etcd on loopback. Figures come from etcd's own
// /metrics (keep-alive requests = LeaseKeepAlive streams the gateway started; keep-alive
// messages = lease IDs it received) and from /proc (this process's connections to etcd), so the
// same program measures any build of the plugin (MICRO_PLUGIN_PATH picks which). Prints one
// line per figure: `name value unit`.
//
//   etcd_keepalive_bench [registries, default 50] [nodes each, default 2] [window s, default 6]
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "registry/etcd/etcd_fixture.hpp"

namespace {

// The value of the LeaseKeepAlive series of `metric` in etcd's /metrics.
double lease_keepalive_metric(int port, const std::string& metric) {
  std::istringstream lines(etcd_test::http_get(port, "/metrics"));
  std::string line;
  while (std::getline(lines, line)) {
    if (line.starts_with(metric + "{") &&
        line.find("grpc_method=\"LeaseKeepAlive\"") != std::string::npos) {
      return std::atof(line.substr(line.rfind(' ') + 1).c_str());
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const int registry_count = argc > 1 ? std::max(1, std::atoi(argv[1])) : 50;
  const int nodes_each = argc > 2 ? std::max(1, std::atoi(argv[2])) : 2;
  const int window_seconds = argc > 3 ? std::max(1, std::atoi(argv[3])) : 6;
  etcd_test::EtcdCluster etcd;
  const int port = etcd.member(0).client_port();

  std::vector<std::shared_ptr<micro::Registry>> registries;
  for (int index = 0; index < registry_count; ++index) {
    registries.push_back(etcd_test::make_registry(etcd.address(), {{"ttl", "3s"}}));
    std::vector<std::string> ids;
    for (int node = 0; node < nodes_each; ++node) {
      ids.push_back("node-" + std::to_string(index) + "-" + std::to_string(node));
    }
    registries.back()->register_service(
        registry_test::make_service("bench.keepalive" + std::to_string(index), "1", ids), {});
  }
  // Let every sender settle into its rhythm before measuring.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const double streams_before = lease_keepalive_metric(port, "grpc_server_started_total");
  const double messages_before = lease_keepalive_metric(port, "grpc_server_msg_received_total");
  std::this_thread::sleep_for(std::chrono::seconds(window_seconds));
  const double streams = lease_keepalive_metric(port, "grpc_server_started_total") - streams_before;
  const double messages =
      lease_keepalive_metric(port, "grpc_server_msg_received_total") - messages_before;
  const std::string name =
      "etcd_keepalive_" + std::to_string(registry_count) + "x" + std::to_string(nodes_each) + "_";
  std::printf("%srequests_per_second %.2f 1/s\n", name.c_str(), streams / window_seconds);
  std::printf("%smessages_per_second %.2f 1/s\n", name.c_str(), messages / window_seconds);
  std::printf("%sconnections_to_etcd %zu connections\n", name.c_str(),
              etcd_test::connections_to(port));
  registries.clear();
  return 0;
}
