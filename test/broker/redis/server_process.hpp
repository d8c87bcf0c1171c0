// test/broker/redis/server_process.hpp — a server program (redis-server, mosquitto) run for a
// test on a loopback port: started with a bounded readiness wait (it accepts connections),
// stopped (SIGTERM, bounded wait, then SIGKILL) when the object goes or on stop(), and
// startable again on the same port. Its output goes to a log file in a temporary directory,
// which is also where it may keep files (removed at the end). Header-only.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "broker/nats/nats_server.hpp"  // free_loopback_ports, port_accepts
#include "support/wait.hpp"

namespace micro_test {

class ServerProcess {
 public:
  // `arguments_of(directory)`: the program and its arguments (the directory is the server's).
  ServerProcess(std::string label, int port,
                std::function<std::vector<std::string>(const std::string&)> arguments_of)
      : label_(std::move(label)), port_(port), arguments_of_(std::move(arguments_of)) {
    std::string pattern = "/tmp/micro-" + label_ + "-test-XXXXXX";
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("cannot create a temporary directory");
    directory_ = pattern;
  }
  ~ServerProcess() {
    stop();
    std::error_code ignored;
    std::filesystem::remove_all(directory_, ignored);
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  const std::string& directory() const { return directory_; }
  bool running() const { return pid_ > 0; }

  // Starts (again, on the same port) and waits until it accepts connections (at most 10 s).
  void start() {
    if (running()) return;
    std::vector<std::string> arguments = arguments_of_(directory_);
    std::vector<char*> argv;
    for (auto& argument : arguments) argv.push_back(argument.data());
    argv.push_back(nullptr);
    std::string log = log_path();
    int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) throw std::runtime_error("cannot open " + log);
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid == 0) {
      // Only async-signal-safe calls until exec; the server dies with the test process.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      ::dup2(log_fd, 1);
      ::dup2(log_fd, 2);
      ::execvp(argv[0], argv.data());
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
      throw std::runtime_error(arguments[0] + " exited at start:\n" + log_text());
    }
    if (!listening) {
      kill();
      throw std::runtime_error(arguments[0] + " did not listen within 10 s:\n" + log_text());
    }
  }

  // SIGTERM (an orderly shutdown), then SIGKILL if it takes over 5 s.
  void stop() { end(SIGTERM); }
  // SIGKILL: the server vanishes as in a crash.
  void kill() { end(SIGKILL); }

  std::string log_path() const { return directory_ + "/server.log"; }
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

  std::string label_;
  int port_;
  std::function<std::vector<std::string>(const std::string&)> arguments_of_;
  std::string directory_;
  pid_t pid_ = -1;
};

}  // namespace micro_test
