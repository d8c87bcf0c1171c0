// test/broker/broker_test_support.hpp — small helpers the broker test programs share.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include <micro/broker.hpp>

namespace broker_test {

// Polls `condition` every millisecond until it holds or `limit` passes; returns whether it
// held. For deliveries that arrive on other threads: a wait for a condition, never a sleep.
inline bool wait_until(const std::function<bool()>& condition,
                       std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

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
