// test/broker/rabbitmq/rabbitmq_server.hpp — a real rabbitmq-server for tests (header-only).
//
// RabbitServer starts Debian's rabbitmq-server as this process's child on free loopback ports
// (AMQP, optionally AMQPS, the Erlang distribution port) with its own node name, Mnesia and log
// directories in a temporary directory, and its own epmd on a free port (started here, so
// stopping it touches no other Erlang node). stop() is an orderly shutdown (SIGTERM), start()
// brings it back on the same ports with the same data (durable queues survive); the destructor
// stops both processes and removes the directory.
#pragma once

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "broker/nats/nats_server.hpp"  // free_loopback_ports, port_accepts
#include "support/wait.hpp"

namespace micro_test {

// Where the server is, for TLS: PEM files of the server's certificate, key and the CA
// client certificates must chain to.
struct RabbitTls {
  std::string certificate, key, ca;
};

class RabbitServer {
 public:
  explicit RabbitServer(std::optional<RabbitTls> tls = std::nullopt) : tls_(std::move(tls)) {
    std::vector<int> ports = free_loopback_ports(4);
    port_ = ports[0];
    distribution_port_ = ports[1];
    epmd_port_ = ports[2];
    tls_port_ = ports[3];
    char pattern[] = "/tmp/micro-rabbitmq-test-XXXXXX";
    if (!::mkdtemp(pattern)) throw std::runtime_error("cannot create a temporary directory");
    directory_ = pattern;
    node_name_ =
        "micro-test-" + std::to_string(::getpid()) + "-" + std::to_string(port_) + "@localhost";
    write_configuration();
    start_epmd();
    try {
      start();
    } catch (...) {
      end(epmd_pid_, SIGTERM);
      throw;
    }
  }
  ~RabbitServer() {
    stop();
    end(epmd_pid_, SIGTERM);
    std::error_code ignored;
    std::filesystem::remove_all(directory_, ignored);
  }
  RabbitServer(const RabbitServer&) = delete;
  RabbitServer& operator=(const RabbitServer&) = delete;

  int port() const { return port_; }
  int tls_port() const { return tls_port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  bool running() const { return pid_ > 0; }

  // Starts (again) and returns once the server says it has started and accepts AMQP clients
  // (at most 60 s: an Erlang node takes some seconds to boot).
  void start() {
    if (running()) return;
    std::ofstream(log_path(), std::ios::app) << "---- start ----\n";
    std::vector<std::string> environment = {
        "HOME=" + directory_,  // the Erlang cookie goes here
        "PATH=/usr/lib/rabbitmq/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "LANG=C.UTF-8",
        "RABBITMQ_NODENAME=" + node_name_,
        "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
        "RABBITMQ_NODE_PORT=" + std::to_string(port_),
        "RABBITMQ_DIST_PORT=" + std::to_string(distribution_port_),
        "ERL_EPMD_PORT=" + std::to_string(epmd_port_),
        "ERL_EPMD_ADDRESS=127.0.0.1",
        "RABBITMQ_MNESIA_BASE=" + directory_ + "/mnesia",
        "RABBITMQ_LOG_BASE=" + directory_ + "/log",
        "RABBITMQ_LOGS=-",
        "RABBITMQ_CONFIG_FILE=" + directory_ + "/rabbitmq",
        "RABBITMQ_CONF_ENV_FILE=" + directory_ + "/rabbitmq-env.conf",
        "RABBITMQ_ENABLED_PLUGINS_FILE=" + directory_ + "/enabled_plugins",
        "RABBITMQ_PID_FILE=" + directory_ + "/rabbitmq.pid",
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}",
    };
    pid_ = spawn({"/usr/lib/rabbitmq/bin/rabbitmq-server"}, environment);
    bool exited = false;
    bool ready = test_support::wait_until(
        [&] {
          int status = 0;
          exited = ::waitpid(pid_, &status, WNOHANG) == pid_;
          return exited || (port_accepts(port_) && started_count() > starts_);
        },
        std::chrono::seconds(60), std::chrono::milliseconds(20));
    if (exited) {
      pid_ = -1;
      throw std::runtime_error("rabbitmq-server exited at start:\n" + log_text());
    }
    if (!ready) {
      end(pid_, SIGKILL);
      throw std::runtime_error("rabbitmq-server did not start within 60 s:\n" + log_text());
    }
    ++starts_;
  }

  // An orderly shutdown: the server closes its clients' connections first.
  void stop() { end(pid_, SIGTERM); }
  // SIGKILL: the server vanishes as in a crash.
  void kill() { end(pid_, SIGKILL); }

  std::string log_path() const { return directory_ + "/rabbitmq-server.log"; }
  std::string log_text() const {
    std::ifstream file(log_path());
    return std::string(std::istreambuf_iterator<char>(file), {});
  }

 private:
  void write_configuration() {
    std::ofstream configuration(directory_ + "/rabbitmq.conf");
    configuration << "loopback_users = none\n"
                  << "listeners.tcp.default = 127.0.0.1:" << port_ << "\n"
                  << "disk_free_limit.absolute = 1MB\n";
    if (tls_) {
      configuration << "listeners.ssl.default = 127.0.0.1:" << tls_port_ << "\n"
                    << "ssl_options.cacertfile = " << tls_->ca << "\n"
                    << "ssl_options.certfile = " << tls_->certificate << "\n"
                    << "ssl_options.keyfile = " << tls_->key << "\n"
                    << "ssl_options.verify = verify_peer\n"
                    << "ssl_options.fail_if_no_peer_cert = true\n";
    }
    std::ofstream(directory_ + "/enabled_plugins") << "[].\n";
    std::ofstream(directory_ + "/rabbitmq-env.conf") << "";
  }

  void start_epmd() {
    epmd_pid_ =
        spawn({"/usr/bin/epmd", "-port", std::to_string(epmd_port_), "-address", "127.0.0.1"},
              {"PATH=/usr/bin:/bin"});
    if (!test_support::wait_until([&] { return port_accepts(epmd_port_); },
                                  std::chrono::seconds(10), std::chrono::milliseconds(5)))
      throw std::runtime_error("epmd did not listen on port " + std::to_string(epmd_port_));
  }

  // How many times the log says the server finished starting.
  int started_count() const {
    std::string text = log_text();
    int count = 0;
    for (auto at = text.find("Server startup complete"); at != std::string::npos;
         at = text.find("Server startup complete", at + 1))
      ++count;
    return count;
  }

  pid_t spawn(std::vector<std::string> arguments, std::vector<std::string> environment) {
    std::vector<char*> argv, envp;
    for (auto& argument : arguments) argv.push_back(argument.data());
    argv.push_back(nullptr);
    for (auto& variable : environment) envp.push_back(variable.data());
    envp.push_back(nullptr);
    std::string log = log_path();
    int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) throw std::runtime_error("cannot open " + log);
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid == 0) {
      // Only async-signal-safe calls until exec; the child dies with this test process.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      ::dup2(log_fd, 1);
      ::dup2(log_fd, 2);
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
    ::close(log_fd);
    if (pid < 0) throw std::runtime_error("cannot start " + arguments[0]);
    return pid;
  }

  // Signals `pid` and reaps it (SIGKILL after 30 s); sets it to -1.
  static void end(pid_t& pid, int signal_number) {
    if (pid <= 0) return;
    ::kill(pid, signal_number);
    int status = 0;
    bool reaped = test_support::wait_until([&] { return ::waitpid(pid, &status, WNOHANG) != 0; },
                                           std::chrono::seconds(30), std::chrono::milliseconds(5));
    if (!reaped) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
    }
    pid = -1;
  }

  std::optional<RabbitTls> tls_;
  int port_ = 0, distribution_port_ = 0, epmd_port_ = 0, tls_port_ = 0;
  std::string directory_, node_name_;
  pid_t pid_ = -1, epmd_pid_ = -1;
  int starts_ = 0;
};

}  // namespace micro_test
