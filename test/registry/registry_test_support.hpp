// Helpers shared by the registry tests: building services, waiting for a condition with a
// bounded deadline, recording watch events, holding a callback at a gate, and temporary
// directories.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <micro/registry.hpp>

#include "support/wait.hpp"

namespace registry_test {

using namespace std::chrono_literals;

// A service with one node per id; addresses are distinct but never dialled.
inline micro::Service make_service(const std::string& name, const std::string& version,
                                   const std::vector<std::string>& node_ids) {
  micro::Service service;
  service.name = name;
  service.version = version;
  int port = 40000;
  for (const auto& id : node_ids) {
    service.nodes.push_back({id, "127.0.0.1:" + std::to_string(port++), {{"protocol", "tcp"}}});
  }
  return service;
}

// Node ids of a service, sorted (registries promise no order).
inline std::vector<std::string> node_ids(const micro::Service& service) {
  std::vector<std::string> ids;
  for (const auto& node : service.nodes) ids.push_back(node.id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

// Watches and expiries land on other threads: the tests wait with the one wait_until.
using test_support::wait_until;

// Collects watch events from whatever thread the registry calls back on.
class EventRecorder {
 public:
  std::function<void(const micro::WatchEvent&)> callback() {
    return [this](const micro::WatchEvent& event) {
      std::lock_guard lock(mutex_);
      events_.push_back(event);
      changed_.notify_all();
    };
  }

  // Waits until at least `count` events arrived; false on timeout.
  bool wait_for(std::size_t count, std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return events_.size() >= count; });
  }

  // Waits for an event matching `predicate`; false on timeout.
  bool wait_for_event(const std::function<bool(const micro::WatchEvent&)>& predicate,
                      std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(
        lock, timeout, [&] { return std::any_of(events_.begin(), events_.end(), predicate); });
  }

  std::vector<micro::WatchEvent> events() const {
    std::lock_guard lock(mutex_);
    return events_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<micro::WatchEvent> events_;
};

// Where a callback is held until the test lets it go: the test learns that it arrived, then
// opens the gate. Waits are bounded, so a broken registry fails the test instead of hanging it.
class Gate {
 public:
  // Called by the held thread: marks the arrival, then waits until open (or `timeout`).
  void arrive_and_wait(std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mutex_);
    arrived_ = true;
    changed_.notify_all();
    changed_.wait_for(lock, timeout, [&] { return open_; });
  }

  bool wait_arrived(std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return arrived_; });
  }

  void open() {
    {
      std::lock_guard lock(mutex_);
      open_ = true;
    }
    changed_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool arrived_ = false;
  bool open_ = false;
};

inline bool is_event(const micro::WatchEvent& event, micro::WatchAction action,
                     const std::string& service, const std::string& node_id) {
  return event.action == action && event.service.name == service &&
         event.service.nodes.size() == 1 && event.service.nodes.front().id == node_id;
}

// A fresh directory under the system's temporary directory, removed on destruction.
class TemporaryDirectory {
 public:
  TemporaryDirectory() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "micro-registry-test-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TemporaryDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TemporaryDirectory(const TemporaryDirectory&) = delete;
  TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;

  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace registry_test
