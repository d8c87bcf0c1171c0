// examples/pubsub on RabbitMQ by the broker string only (--broker=rabbitmq://127.0.0.1:<port>),
// against a real rabbitmq-server: in one process, and across processes — a plain subscriber
// gets every event, a queue group of two shares them (each event to exactly one member), the
// publisher reports every event published. The example's path comes in PUBSUB_EXAMPLE.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "broker/rabbitmq/rabbitmq_server.hpp"
#include "support/wait.hpp"

using namespace std::chrono_literals;

namespace {

std::string pubsub_path() {
  const char* path = std::getenv("PUBSUB_EXAMPLE");
  REQUIRE_MESSAGE(path, "PUBSUB_EXAMPLE (the examples/pubsub program) is not set");
  return path;
}

// One run of the example, its output going to a file; stopped (SIGTERM) at scope end.
class ExampleProcess {
 public:
  explicit ExampleProcess(std::vector<std::string> arguments) {
    char pattern[] = "/tmp/micro-pubsub-rabbitmq-XXXXXX";
    int fd = ::mkstemp(pattern);
    REQUIRE(fd >= 0);
    output_path_ = pattern;
    std::vector<char*> argv;
    for (auto& argument : arguments) argv.push_back(argument.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(fd);
    REQUIRE(pid_ > 0);
  }
  ~ExampleProcess() {
    terminate();
    ::unlink(output_path_.c_str());
  }

  std::string output() const {
    std::ifstream file(output_path_);
    return std::string(std::istreambuf_iterator<char>(file), {});
  }
  // Waits (bounded) for it to exit; its exit status, or -1.
  int wait_exit(std::chrono::milliseconds limit = 60s) {
    if (pid_ <= 0) return status_;
    int status = 0;
    if (!test_support::wait_until([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, limit,
                                  5ms))
      return -1;
    pid_ = -1;
    status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return status_;
  }
  int terminate() {
    if (pid_ > 0) ::kill(pid_, SIGTERM);
    return wait_exit(30s);
  }

 private:
  std::string output_path_;
  pid_t pid_ = -1;
  int status_ = -1;
};

// The order numbers `name` printed ("<name> got order <n>").
std::vector<int> orders_of(const std::string& output, const std::string& name) {
  std::vector<int> orders;
  std::regex line(name + " got order (\\d+)");
  for (auto it = std::sregex_iterator(output.begin(), output.end(), line);
       it != std::sregex_iterator(); ++it)
    orders.push_back(std::stoi((*it)[1]));
  return orders;
}

}  // namespace

TEST_CASE("rabbitmq example pubsub: all in one process, by the broker string only") {
  micro_test::RabbitServer server;
  std::string broker = "--broker=rabbitmq://" + server.address();
  ExampleProcess run({pubsub_path(), broker, "20"});
  CHECK(run.wait_exit() == 0);
  std::string output = run.output();
  INFO(output);
  CHECK(output.find("delivered 60 of 60") != std::string::npos);
  CHECK(orders_of(output, "audit").size() == 20);
  CHECK(orders_of(output, "billing-1").size() + orders_of(output, "billing-2").size() == 20);
}

TEST_CASE("rabbitmq example pubsub: across processes, a queue group shares the events") {
  micro_test::RabbitServer server;
  std::string broker = "--broker=rabbitmq://" + server.address();
  constexpr int count = 50;
  std::map<std::string, std::string> members = {
      {"audit", ""}, {"billing-1", "billing"}, {"billing-2", "billing"}};
  std::map<std::string, std::unique_ptr<ExampleProcess>> subscribers;
  for (const auto& [name, queue] : members) {
    std::vector<std::string> arguments = {pubsub_path(), broker, "--registry=memory", "subscriber",
                                          name};
    if (!queue.empty()) arguments.push_back(queue);
    auto process = std::make_unique<ExampleProcess>(arguments);
    REQUIRE(test_support::wait_until(
        [&] { return process->output().find(name + " subscribed") != std::string::npos; }, 30s));
    subscribers[name] = std::move(process);
  }

  ExampleProcess publisher({pubsub_path(), broker, "publisher", std::to_string(count)});
  CHECK(publisher.wait_exit() == 0);
  CHECK(publisher.output().find("published 50 of 50") != std::string::npos);

  auto received = [&](const std::string& name) {
    return orders_of(subscribers[name]->output(), name);
  };
  CHECK(test_support::wait_until(
      [&] {
        return received("audit").size() == count &&
               received("billing-1").size() + received("billing-2").size() == count;
      },
      30s));
  for (auto& [name, process] : subscribers) {
    CAPTURE(name);
    CHECK(process->terminate() == 0);  // SIGTERM: unsubscribes, drains, says what it received
    CHECK(process->output().find(name + " received ") != std::string::npos);
  }
  std::vector<int> audit = received("audit");
  CHECK(std::set<int>(audit.begin(), audit.end()).size() == count);
  std::vector<int> billing = received("billing-1");
  std::vector<int> second = received("billing-2");
  billing.insert(billing.end(), second.begin(), second.end());
  std::set<int> billed(billing.begin(), billing.end());
  CHECK(billed.size() == count);  // each event once within the group
  CHECK(billing.size() == count);
  CHECK(*billed.begin() == 1);
  CHECK(*billed.rbegin() == count);
}
