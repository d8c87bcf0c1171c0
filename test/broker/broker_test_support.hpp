// test/broker/broker_test_support.hpp — small helpers the broker test programs share.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
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

}  // namespace broker_test
