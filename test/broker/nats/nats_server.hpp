// test/broker/nats/nats_server.hpp — real nats-server processes for tests (header-only).
//
// NatsServer starts /usr/sbin/nats-server (or the one on PATH) on a free loopback port and
// stops it when it goes out of scope (SIGTERM, bounded wait, then SIGKILL), so a failing
// test never leaves one behind. NatsCluster runs three routed together. BrokerServer is for
// suites that run over several broker plugins: it starts a server only for "nats".
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/wait.hpp"

#include <micro/error.hpp>
#include <micro/plugin_loader.hpp>

namespace micro_test {

// The nats-server binary: the first on PATH, else the Debian location.
inline std::string nats_server_binary() {
  if (const char* path = std::getenv("PATH")) {
    std::stringstream directories(path);
    std::string directory;
    while (std::getline(directories, directory, ':')) {
      std::filesystem::path candidate = std::filesystem::path(directory) / "nats-server";
      if (!directory.empty() && ::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
  }
  return "/usr/sbin/nats-server";
}

// `count` distinct free loopback ports (all held open while choosing, so they differ).
inline std::vector<int> free_loopback_ports(int count) {
  std::vector<int> sockets, ports;
  for (int i = 0; i < count; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0)
      throw std::runtime_error("cannot find a free loopback port");
    sockets.push_back(fd);
    ports.push_back(ntohs(address.sin_port));
  }
  for (int fd : sockets) ::close(fd);
  return ports;
}

inline bool port_accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool accepted = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return accepted;
}

class NatsServer {
 public:
  // `extra` arguments go after `-a 127.0.0.1 -p <port>` (e.g. {"--user", "u", "--pass", "p"}).
  explicit NatsServer(std::vector<std::string> extra = {}, int port = 0)
      : extra_(std::move(extra)), port_(port ? port : free_loopback_ports(1)[0]) {
    char pattern[] = "/tmp/micro-nats-test-XXXXXX";
    if (!::mkdtemp(pattern)) throw std::runtime_error("cannot create a temporary directory");
    directory_ = pattern;
    start();
  }
  ~NatsServer() {
    stop();
    std::error_code ignored;
    std::filesystem::remove_all(directory_, ignored);
  }
  NatsServer(const NatsServer&) = delete;
  NatsServer& operator=(const NatsServer&) = delete;

  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  bool running() const { return pid_ > 0; }

  // Starts (again, on the same port) and waits until it accepts connections (at most 10 s).
  void start() {
    if (running()) return;
    std::vector<std::string> arguments = {nats_server_binary(), "-a", "127.0.0.1", "-p",
                                          std::to_string(port_)};
    arguments.insert(arguments.end(), extra_.begin(), extra_.end());
    std::vector<char*> argv;
    for (auto& argument : arguments) argv.push_back(argument.data());
    argv.push_back(nullptr);
    std::string log = log_path();
    int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) throw std::runtime_error("cannot open " + log);
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid == 0) {
      // Only async-signal-safe calls until exec. The server dies with this test process,
      // even if it crashes (the death signal follows the thread that started it: the main
      // thread in these tests).
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      ::dup2(log_fd, 1);
      ::dup2(log_fd, 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(log_fd);
    if (pid < 0) throw std::runtime_error("cannot start " + arguments[0]);
    pid_ = pid;
    bool exited = false;
    bool listening = test_support::wait_until(
        [&] {
          int status = 0;
          exited = ::waitpid(pid_, &status, WNOHANG) == pid_;
          return exited || port_accepts(port_);
        },
        std::chrono::seconds(10), std::chrono::milliseconds(5));
    if (exited) {
      pid_ = -1;
      throw std::runtime_error("nats-server exited at start:\n" + log_text());
    }
    if (!listening) {
      kill();
      throw std::runtime_error("nats-server did not listen within 10 s:\n" + log_text());
    }
  }

  // SIGTERM (the server closes its clients), then SIGKILL if it takes over 5 s.
  void stop() { end(SIGTERM); }
  // SIGKILL: the server vanishes as in a crash.
  void kill() { end(SIGKILL); }

  std::string log_path() const { return directory_ + "/nats-server.log"; }
  std::string log_text() const {
    std::ifstream file(log_path());
    return std::string(std::istreambuf_iterator<char>(file), {});
  }

 private:
  void end(int signal_number) {
    if (!running()) return;
    ::kill(pid_, signal_number);
    int status = 0;
    bool reaped = test_support::wait_until([&] { return ::waitpid(pid_, &status, WNOHANG) != 0; },
                                           std::chrono::seconds(5), std::chrono::milliseconds(2));
    if (!reaped) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
    pid_ = -1;
  }

  std::vector<std::string> extra_;
  int port_;
  std::string directory_;
  pid_t pid_ = -1;
};

// Three nats-servers routed into one cluster on loopback.
class NatsCluster {
 public:
  NatsCluster() {
    std::vector<int> ports = free_loopback_ports(6);  // 3 client ports, 3 route ports
    for (int i = 0; i < 3; ++i) {
      std::string routes;
      for (int j = 0; j < 3; ++j)
        if (j != i)
          routes += (routes.empty() ? "" : ",") + std::string("nats://127.0.0.1:") +
                    std::to_string(ports[3 + j]);
      servers_.push_back(std::make_unique<NatsServer>(
          std::vector<std::string>{"--cluster_name", "micro-test", "--cluster",
                                   "nats://127.0.0.1:" + std::to_string(ports[3 + i]), "--routes",
                                   routes},
          ports[i]));
    }
  }
  NatsServer& server(int index) { return *servers_.at(index); }
  // "a:1,b:2,c:3" in server order.
  std::string addresses() const {
    std::string text;
    for (const auto& server : servers_) text += (text.empty() ? "" : ",") + server->address();
    return text;
  }

 private:
  std::vector<std::unique_ptr<NatsServer>> servers_;
};

// One nats-server for a whole test program, started on first use and stopped at exit; null
// (after saying why on stderr) if it cannot start, so the tests using it fail to connect.
inline NatsServer* shared_nats_server() {
  static std::unique_ptr<NatsServer> server = []() -> std::unique_ptr<NatsServer> {
    try {
      return std::make_unique<NatsServer>();
    } catch (const std::exception& error) {
      std::fprintf(stderr, "cannot start the shared nats-server: %s\n", error.what());
      return nullptr;
    }
  }();
  return server.get();
}

// Whether the nats broker plugin was built (it needs libnats at build time).
inline bool nats_plugin_available() {
  try {
    micro::PluginLoader::instance().describe(micro::PluginKind::broker, "nats");
    return true;
  } catch (const micro::Exception&) {
    return false;
  }
}

// `names` without "nats" when its plugin was not built.
inline std::vector<std::string> buildable_brokers(std::vector<std::string> names) {
  if (!nats_plugin_available()) std::erase(names, std::string("nats"));
  return names;
}

// For suites over a list of brokers with {name, address, options} entries: `entries` plus a
// "nats" entry on the shared nats-server, when the nats plugin was built.
template <class Entry>
std::vector<Entry> with_nats_broker(std::vector<Entry> entries) {
  if (!nats_plugin_available()) return entries;
  NatsServer* server = shared_nats_server();
  entries.push_back(Entry{"nats", server ? server->address() : "127.0.0.1:1", {}});
  return entries;
}

// For suites over several brokers: the address broker `name` needs, with a nats-server
// started (and stopped at scope end) when `name` is "nats".
struct BrokerServer {
  explicit BrokerServer(const std::string& name) {
    if (name == "nats") {
      server.emplace();
      address = server->address();
    }
  }
  std::optional<NatsServer> server;
  std::string address;
};

}  // namespace micro_test
