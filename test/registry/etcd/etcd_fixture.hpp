// Test fixtures that run a real etcd (Debian's etcd-server): one member or a 3-member cluster on
// free loopback ports with temporary data directories. Each member is a child process started
// and stopped RAII-style; every wait is bounded, and a member dies with the test process.
// A cluster may serve clients over TLS only (https, client certificates required).
// Also the helpers every etcd test shares: making an etcd registry through the plugin loader,
// looking nodes up, the plugin's keep-alive counters and this process's connections to a port.
#pragma once

#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>

#include <micro/error.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/registry.hpp>

#include "registry/registry_test_support.hpp"
#include "support/shell.hpp"

namespace etcd_test {

using namespace std::chrono_literals;

inline const char* etcd_binary() {
  const char* configured = std::getenv("ETCD_BINARY");
  return configured ? configured : "/usr/bin/etcd";
}

// A loopback port nobody listens on right now. Chosen below the kernel's ephemeral range
// (32768+), so outgoing connections do not take it before etcd binds it.
inline int free_port() {
  static std::atomic<unsigned> sequence{static_cast<unsigned>(::getpid()) * 7919u};
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const int port = 20000 + static_cast<int>(sequence.fetch_add(7) % 12000);
    const int socket_fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (socket_fd < 0) throw std::runtime_error("socket failed");
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    const bool bound =
        ::bind(socket_fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
    ::close(socket_fd);
    if (bound) return port;
  }
  throw std::runtime_error("cannot find a free port");
}

// GET `path` on 127.0.0.1:port with a short timeout; the raw response, or "" on failure.
inline std::string http_get(int port, const std::string& path) {
  const int socket_fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (socket_fd < 0) return {};
  timeval timeout{1, 0};
  ::setsockopt(socket_fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setsockopt(socket_fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  std::string response;
  if (::connect(socket_fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(socket_fd, request.data(), request.size(), MSG_NOSIGNAL) ==
        static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      ssize_t received;
      while ((received = ::recv(socket_fd, buffer, sizeof(buffer), 0)) > 0) {
        response.append(buffer, static_cast<std::size_t>(received));
      }
    }
  }
  ::close(socket_fd);
  return response;
}

using micro_test::run_command;  // etcdctl

// PEM files for an etcd serving clients over TLS only: its certificate and key, and the CA
// client certificates must chain to (--client-cert-auth).
struct ServerTls {
  std::string ca;
  std::string cert;
  std::string key;
};

// One etcd process. The ports and data directory stay the same across restarts.
class EtcdMember {
 public:
  EtcdMember(std::string name, std::filesystem::path data_directory, int client_port, int peer_port,
             std::optional<ServerTls> tls = std::nullopt)
      : name_(std::move(name)),
        data_directory_(std::move(data_directory)),
        client_port_(client_port),
        peer_port_(peer_port),
        tls_(std::move(tls)),
        // Over TLS, /health is read on a plain metrics port instead.
        health_port_(tls_ ? free_port() : client_port) {}
  ~EtcdMember() { stop(); }
  EtcdMember(const EtcdMember&) = delete;
  EtcdMember& operator=(const EtcdMember&) = delete;

  std::string client_endpoint() const {
    return (tls_ ? "https://127.0.0.1:" : "127.0.0.1:") + std::to_string(client_port_);
  }
  std::string peer_url() const { return "http://127.0.0.1:" + std::to_string(peer_port_); }
  int client_port() const noexcept { return client_port_; }
  const std::string& name() const noexcept { return name_; }
  bool running() const noexcept { return pid_ > 0; }
  // Where this member keeps its data (members of a cluster share a parent directory).
  std::filesystem::path data_path() const { return data_directory_ / (name_ + ".data"); }

  // Starts the process (not waiting for it to serve). `initial_cluster` is etcd's
  // --initial-cluster ("a=http://127.0.0.1:p1,b=…").
  void start(const std::string& initial_cluster, const std::string& cluster_token) {
    if (pid_ > 0) return;
    const std::string client_url = tls_ ? client_endpoint() : "http://" + client_endpoint();
    std::vector<std::string> arguments = {
        etcd_binary(), "--name", name_, "--data-dir", data_path().string(), "--listen-client-urls",
        client_url, "--advertise-client-urls", client_url, "--listen-peer-urls", peer_url(),
        "--initial-advertise-peer-urls", peer_url(), "--initial-cluster", initial_cluster,
        "--initial-cluster-token", cluster_token, "--initial-cluster-state", "new",
        // Fast elections; the shortest lease becomes 1s.
        "--heartbeat-interval", "50", "--election-timeout", "500"};
    if (tls_) {
      for (const char* argument :
           {"--cert-file", tls_->cert.c_str(), "--key-file", tls_->key.c_str(), "--trusted-ca-file",
            tls_->ca.c_str(), "--client-cert-auth", "--listen-metrics-urls"}) {
        arguments.push_back(argument);
      }
      arguments.push_back("http://127.0.0.1:" + std::to_string(health_port_));
    }
    const std::string log_path = (data_directory_ / (name_ + ".log")).string();
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      // The member must not outlive the test, even when the test crashes.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(1);
      const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (log >= 0) {
        ::dup2(log, 1);
        ::dup2(log, 2);
        ::close(log);
      }
      std::vector<char*> argv;
      for (auto& argument : arguments) argv.push_back(argument.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    pid_ = pid;
  }

  // Whether the member answers /health with "true" (needs a quorum in a cluster).
  bool healthy() const {
    return http_get(health_port_, "/health").find("\"health\":\"true\"") != std::string::npos;
  }

  // Whether the process ended on its own (etcd exits at once when a port is taken).
  bool exited() {
    if (pid_ <= 0) return true;
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return true;
    }
    return false;
  }

  // SIGTERM, then SIGKILL if it lingers; bounded.
  void stop() { end_process(SIGTERM); }
  // As a crash or power loss would.
  void kill() { end_process(SIGKILL); }

 private:
  void end_process(int signal_number) {
    if (pid_ <= 0) return;
    ::kill(pid_, signal_number);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (::waitpid(pid_, nullptr, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(10ms);
    }
    pid_ = -1;
  }

  std::string name_;
  std::filesystem::path data_directory_;
  int client_port_;
  int peer_port_;
  std::optional<ServerTls> tls_;
  int health_port_;
  pid_t pid_ = -1;
};

inline std::string unique_token(const std::string& base) {
  static std::atomic<int> counter{0};
  return base + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
}

// A cluster of `size` members (1 for a single server) on loopback, started and healthy when
// the constructor returns; stopped and its data removed on destruction.
class EtcdCluster {
 public:
  explicit EtcdCluster(std::size_t size = 1, std::optional<ServerTls> tls = std::nullopt)
      : tls_(std::move(tls)) {
    // Another test may take a port between our check and etcd's bind: start over on new ports.
    for (int attempt = 1;; ++attempt) {
      try {
        start_all(size);
        return;
      } catch (const std::exception&) {
        for (auto& member : members_) member->stop();
        if (attempt == 3) throw;
      }
    }
  }
  ~EtcdCluster() {
    for (auto& member : members_) member->stop();
  }
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  std::size_t size() const noexcept { return members_.size(); }
  EtcdMember& member(std::size_t index) { return *members_.at(index); }

  // "127.0.0.1:p1,127.0.0.1:p2,…": the registry's address.
  std::string address() const {
    std::string joined;
    for (const auto& member : members_) {
      if (!joined.empty()) joined += ",";
      joined += member->client_endpoint();
    }
    return joined;
  }

  // Waits (bounded) until member `index` reports healthy; throws otherwise.
  void wait_healthy(std::size_t index, std::chrono::milliseconds timeout = 20s) {
    bool exited = false;
    const bool healthy = registry_test::wait_until(
        [&] {
          exited = members_[index]->exited();
          return exited || members_[index]->healthy();
        },
        timeout);
    if (!healthy || exited) {
      std::ifstream log(directory_.path() / (members_[index]->name() + ".log"));
      std::stringstream text;
      text << log.rdbuf();
      std::string tail = text.str();
      if (tail.size() > 2000) tail = tail.substr(tail.size() - 2000);
      throw std::runtime_error("etcd " + members_[index]->name() +
                               " did not become healthy: " + tail);
    }
  }

  void start_all(std::size_t size) {
    members_.clear();
    initial_cluster_.clear();
    token_ = unique_token("micro-test");
    for (std::size_t index = 0; index < size; ++index) {
      members_.push_back(std::make_unique<EtcdMember>(
          "member" + std::to_string(index), directory_.path(), free_port(), free_port(), tls_));
      std::filesystem::remove_all(members_.back()->data_path());
    }
    for (auto& member : members_) {
      if (!initial_cluster_.empty()) initial_cluster_ += ",";
      initial_cluster_ += member->name() + "=" + member->peer_url();
    }
    for (auto& member : members_) member->start(initial_cluster_, token_);
    for (std::size_t index = 0; index < members_.size(); ++index) wait_healthy(index);
  }

  void restart(std::size_t index) {
    members_[index]->stop();
    members_[index]->start(initial_cluster_, token_);
    wait_healthy(index);
  }

  // Stops a single-member cluster, wipes its data (every key and lease is lost) and starts it
  // again empty, as if the cluster had been rebuilt.
  void restart_empty() {
    if (members_.size() != 1) throw std::logic_error("restart_empty needs one member");
    members_[0]->stop();
    std::filesystem::remove_all(members_[0]->data_path());
    token_ = unique_token("micro-test");
    members_[0]->start(initial_cluster_, token_);
    wait_healthy(0);
  }

  // etcdctl against the cluster, e.g. etcdctl("get --prefix /micro/registry/").
  std::string etcdctl(const std::string& arguments) const {
    return run_command("ETCDCTL_API=3 etcdctl --endpoints=" + address() + " --command-timeout=5s " +
                       arguments + " 2>&1");
  }

 private:
  registry_test::TemporaryDirectory directory_;
  std::optional<ServerTls> tls_;
  std::string token_;
  std::string initial_cluster_;
  std::vector<std::unique_ptr<EtcdMember>> members_;
};

// One etcd shared by the tests of a process (the conformance suite gives each test its own
// key prefix instead of its own server). Started on first use, stopped at exit.
inline std::shared_ptr<EtcdCluster> shared_server() {
  static std::shared_ptr<EtcdCluster> server = std::make_shared<EtcdCluster>(1);
  return server;
}

// A key prefix no other test uses: "/micro-test-<n>/registry/".
inline std::string unique_prefix() {
  static std::atomic<int> counter{0};
  return "/micro-test-" + std::to_string(counter.fetch_add(1)) + "/registry/";
}

// ---------------------------------------------------------------------------------------------
// Registry helpers

using Options = std::vector<std::pair<std::string, std::string>>;

// An etcd registry made through the plugin loader, as an application makes one.
inline std::shared_ptr<micro::Registry> make_registry(const std::string& address,
                                                      Options options = {}) {
  static boost::asio::io_context io_context;
  return micro::PluginLoader::instance().create<micro::Registry>("etcd", address, options,
                                                                 io_context.get_executor());
}

// The error detail creating an etcd registry fails with: "" when it does not fail; prefixed
// with the code when that is not the 400 a bad option must give.
inline std::string creation_error(const std::string& address, Options options = {}) {
  try {
    make_registry(address, std::move(options));
  } catch (const micro::Exception& exception) {
    if (exception.error().code != 400) {
      return "code " + std::to_string(exception.error().code) + ": " + exception.error().detail;
    }
    return exception.error().detail;
  }
  return {};
}

// How many nodes `service` has in `registry` (0 when the lookup fails).
inline std::size_t node_count(micro::Registry& registry, const std::string& service) {
  try {
    std::size_t count = 0;
    for (const auto& version : registry.get_service(service)) count += version.nodes.size();
    return count;
  } catch (const micro::Exception&) {
    return 0;
  }
}

inline bool has_node(micro::Registry& registry, const std::string& service, const std::string& id) {
  try {
    for (const auto& version : registry.get_service(service)) {
      for (const auto& node : version.nodes) {
        if (node.id == id) return true;
      }
    }
  } catch (const micro::Exception&) {
  }
  return false;
}

// The plugin's process-wide keep-alive counts (mirrors micro::etcd::KeepAliveStatistics).
struct KeepAliveStatistics {
  std::uint64_t streams_opened = 0;
  std::uint64_t streams_open = 0;
  std::uint64_t keepalives_sent = 0;
  std::uint64_t answers = 0;
  std::uint64_t leases_lost = 0;
  std::uint64_t priming_bytes = 0;
  std::uint64_t batches_sent = 0;
};

// Read from the plugin (loaded first if no etcd registry was made yet).
inline KeepAliveStatistics keepalive_statistics() {
  using Reader = void (*)(KeepAliveStatistics*);
  static Reader reader = [] {
    make_registry("127.0.0.1:1");  // loads the plugin; connects nowhere until used
    std::ifstream maps("/proc/self/maps");
    std::string line;
    while (std::getline(maps, line)) {
      const auto at = line.find('/');
      if (at == std::string::npos || line.find("micro-registry-etcd.so") == std::string::npos) {
        continue;
      }
      void* library = ::dlopen(line.substr(at).c_str(), RTLD_NOW | RTLD_NOLOAD);
      if (!library) break;
      return reinterpret_cast<Reader>(::dlsym(library, "micro_registry_etcd_keepalive_statistics"));
    }
    throw std::runtime_error("the etcd registry plugin is not loaded");
  }();
  KeepAliveStatistics statistics;
  reader(&statistics);
  return statistics;
}

// How many established TCP connections this process has to 127.0.0.1:`port` (its own sockets,
// found by inode in /proc/net/tcp).
inline std::size_t connections_to(int port) {
  std::vector<std::string> own_sockets;
  if (DIR* directory = ::opendir("/proc/self/fd")) {
    while (const dirent* entry = ::readdir(directory)) {
      char target[256];
      const std::string link = std::string("/proc/self/fd/") + entry->d_name;
      const auto length = ::readlink(link.c_str(), target, sizeof(target) - 1);
      if (length <= 0) continue;
      const std::string text(target, static_cast<std::size_t>(length));
      if (text.starts_with("socket:[")) own_sockets.push_back(text.substr(8, text.size() - 9));
    }
    ::closedir(directory);
  }
  std::ifstream table("/proc/net/tcp");
  std::string line;
  std::getline(table, line);  // header
  std::size_t count = 0;
  char remote_port[8];
  std::snprintf(remote_port, sizeof(remote_port), ":%04X", port);
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
    fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >>
        timeout >> inode;
    if (state != "01" || !remote.ends_with(remote_port)) continue;  // 01: ESTABLISHED
    if (std::find(own_sockets.begin(), own_sockets.end(), inode) != own_sockets.end()) ++count;
  }
  return count;
}

}  // namespace etcd_test
