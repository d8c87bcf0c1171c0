// test/support/wait.hpp — the one way a test waits for something another thread or process does.
#pragma once

#include <chrono>
#include <thread>
#include <utility>

namespace test_support {

// Polls `condition` every `poll` until it holds or `limit` passes; returns whether it held. For
// results that arrive on other threads or from other processes: a wait for a condition, never a
// sleep. Bounded: every caller either passes a limit or gets 10 s.
template <class Condition>
bool wait_until(Condition&& condition, std::chrono::milliseconds limit = std::chrono::seconds(10),
                std::chrono::milliseconds poll = std::chrono::milliseconds(1)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(poll);
  }
  return true;
}

}  // namespace test_support
