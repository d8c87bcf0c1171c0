// test/broker/broker_test_support.hpp — small helpers the broker test programs share.
#pragma once

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <thread>

#include <micro/broker.hpp>

#include "support/wait.hpp"

namespace broker_test {

// Deliveries arrive on other threads: the tests wait for them with the one wait_until.
using test_support::wait_until;

inline micro::Message message_on(std::string topic, std::string body) {
  micro::Message message;
  message.topic = std::move(topic);
  message.body = std::move(body);
  return message;
}

// Counts deliveries, thread-safely.
struct Counter {
  std::atomic<int> count{0};
  micro::MessageHandler handler() {
    return [this](micro::Message&) {
      count.fetch_add(1);
    };
  }
};

// Sends this process's stderr to a file while alive, so a test can read the broker's
// connection-event log as an operator would.
class StderrCapture {
 public:
  StderrCapture() {
    char pattern[] = "/tmp/micro-broker-stderr-XXXXXX";
    int fd = ::mkstemp(pattern);
    path_ = pattern;
    std::fflush(stderr);
    saved_ = ::dup(2);
    ::dup2(fd, 2);
    ::close(fd);
  }
  ~StderrCapture() {
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    std::string text = this->text();
    std::fwrite(text.data(), 1, text.size(), stderr);  // still visible in the test log
    ::unlink(path_.c_str());
  }
  std::string text() const {
    std::ifstream file(path_);
    return std::string(std::istreambuf_iterator<char>(file), {});
  }
  int occurrences(const std::string& needle) const {
    std::string all = text();
    int count = 0;
    for (auto at = all.find(needle); at != std::string::npos; at = all.find(needle, at + 1))
      ++count;
    return count;
  }

 private:
  std::string path_;
  int saved_ = -1;
};

}  // namespace broker_test
