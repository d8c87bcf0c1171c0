// The "memory" registry plugin: services registered in this process, with per-node TTLs and
// watches. One thread per registry delivers watch events and expires nodes, so callbacks never
// run under the registry's lock nor on the caller's thread.
#include <algorithm>
#include <condition_variable>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include <micro/error.hpp>
#include <micro/plugin.hpp>
#include <micro/registry.hpp>

namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* error_id = "micro.registry.memory";

struct NodeRecord {
  micro::Node node;
  std::optional<Clock::time_point> expires_at;  // none: lives until deregistered

  bool expired(Clock::time_point now) const { return expires_at && *expires_at <= now; }
};

// One version of a service: its description and its nodes by id.
struct VersionRecord {
  micro::Service description;  // nodes left empty
  std::map<std::string, NodeRecord> nodes;
};

// One watch as the registry sees it: its filter and where its events go. The delivery is
// shared with the Watch, so a Watch outliving the registry (or the reverse) is harmless.
struct Watcher {
  std::string service;  // empty: every service
  std::shared_ptr<micro::WatchDelivery> delivery;
};

class MemoryRegistry final : public micro::Registry {
 public:
  MemoryRegistry() : worker_([this] { run(); }) {}

  ~MemoryRegistry() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    worker_.join();
  }

  void register_service(const micro::Service& service,
                        const micro::RegisterOptions& options) override {
    micro::validate_registration(service, error_id);
    std::optional<Clock::time_point> expires_at;
    if (options.ttl.count() > 0) expires_at = Clock::now() + options.ttl;

    std::lock_guard lock(mutex_);
    auto& version = services_[service.name][service.version];
    micro::Service description = service;
    description.nodes.clear();
    const bool description_changed = version.description != description;
    version.description = std::move(description);
    for (const auto& node : service.nodes) {
      auto found = version.nodes.find(node.id);
      if (found == version.nodes.end() || found->second.expired(Clock::now())) {
        version.nodes[node.id] = NodeRecord{node, expires_at};
        queue_event(micro::WatchAction::create, version.description, node);
      } else {
        const bool changed = found->second.node != node || description_changed;
        found->second = NodeRecord{node, expires_at};
        // A plain refresh (heartbeat) is not a change worth telling watchers about.
        if (changed) queue_event(micro::WatchAction::update, version.description, node);
      }
    }
    wake_.notify_all();  // a new expiry may be earlier than the one the worker waits for
  }

  void deregister_service(const micro::Service& service) override {
    std::lock_guard lock(mutex_);
    auto by_name = services_.find(service.name);
    if (by_name == services_.end()) return;
    auto by_version = by_name->second.find(service.version);
    if (by_version == by_name->second.end()) return;
    auto& version = by_version->second;
    for (const auto& node : service.nodes) {
      auto found = version.nodes.find(node.id);
      if (found == version.nodes.end()) continue;
      queue_event(micro::WatchAction::remove, version.description, found->second.node);
      version.nodes.erase(found);
    }
    prune(by_name, by_version);
    wake_.notify_all();
  }

  std::vector<micro::Service> get_service(std::string_view name) override {
    std::vector<micro::Service> result;
    {
      std::lock_guard lock(mutex_);
      auto by_name = services_.find(std::string(name));
      if (by_name != services_.end()) {
        const auto now = Clock::now();
        for (const auto& [version_name, version] : by_name->second) {
          micro::Service service = version.description;
          for (const auto& [id, record] : version.nodes) {
            // Expiry is checked here too, so a lookup never depends on the worker's timing.
            if (!record.expired(now)) service.nodes.push_back(record.node);
          }
          if (!service.nodes.empty()) result.push_back(std::move(service));
        }
      }
    }
    if (result.empty()) {
      throw micro::Exception(
          micro::not_found(error_id, "service " + std::string(name) + " not found"));
    }
    return result;
  }

  std::vector<micro::Service> list_services() override {
    std::vector<micro::Service> result;
    std::lock_guard lock(mutex_);
    const auto now = Clock::now();
    for (const auto& [name, versions] : services_) {
      for (const auto& [version_name, version] : versions) {
        const bool alive =
            std::any_of(version.nodes.begin(), version.nodes.end(),
                        [&](const auto& entry) { return !entry.second.expired(now); });
        if (!alive) continue;
        micro::Service service;
        service.name = name;
        service.version = version_name;
        result.push_back(std::move(service));
      }
    }
    return result;
  }

  std::unique_ptr<micro::Watch> watch(
      const micro::WatchOptions& options,
      std::function<void(const micro::WatchEvent&)> on_event) override {
    auto delivery = std::make_shared<micro::WatchDelivery>(std::move(on_event));
    std::lock_guard lock(mutex_);
    // Drop watchers already stopped so the list does not grow with every watch made.
    watchers_.remove_if([](const Watcher& existing) { return existing.delivery->stopped(); });
    watchers_.push_back({options.service, delivery});
    // The worker is shared by every watch: nothing of its own to stop.
    return std::make_unique<micro::DeliveryWatch>(std::move(delivery));
  }

 private:
  using NameMap = std::map<std::string, std::map<std::string, VersionRecord>>;

  // Called with mutex_ held.
  void queue_event(micro::WatchAction action, const micro::Service& description,
                   const micro::Node& node) {
    micro::WatchEvent event{action, description};
    event.service.nodes = {node};
    events_.push_back(std::move(event));
  }

  // Removes a version without nodes, and a name without versions. Called with mutex_ held.
  void prune(NameMap::iterator by_name, std::map<std::string, VersionRecord>::iterator by_version) {
    if (!by_version->second.nodes.empty()) return;
    by_name->second.erase(by_version);
    if (by_name->second.empty()) services_.erase(by_name);
  }

  // Expires nodes past their TTL, queueing a delete event for each. Called with mutex_ held.
  // Returns when the next node expires.
  std::optional<Clock::time_point> expire(Clock::time_point now) {
    std::optional<Clock::time_point> next;
    for (auto by_name = services_.begin(); by_name != services_.end();) {
      auto& versions = by_name->second;
      for (auto by_version = versions.begin(); by_version != versions.end();) {
        auto& version = by_version->second;
        for (auto node = version.nodes.begin(); node != version.nodes.end();) {
          if (node->second.expired(now)) {
            queue_event(micro::WatchAction::remove, version.description, node->second.node);
            node = version.nodes.erase(node);
            continue;
          }
          if (node->second.expires_at && (!next || *node->second.expires_at < *next)) {
            next = node->second.expires_at;
          }
          ++node;
        }
        by_version = version.nodes.empty() ? versions.erase(by_version) : std::next(by_version);
      }
      by_name = versions.empty() ? services_.erase(by_name) : std::next(by_name);
    }
    return next;
  }

  // The worker: expire nodes, then deliver queued events outside the lock, in order.
  void run() {
    std::unique_lock lock(mutex_);
    while (true) {
      auto next_expiry = expire(Clock::now());
      if (!events_.empty()) {
        std::deque<micro::WatchEvent> batch;
        batch.swap(events_);
        std::vector<Watcher> watchers(watchers_.begin(), watchers_.end());
        lock.unlock();
        deliver(batch, watchers);
        lock.lock();
        continue;
      }
      if (stopping_) return;
      auto ready = [this] {
        return stopping_ || !events_.empty();
      };
      if (next_expiry) {
        wake_.wait_until(lock, *next_expiry, ready);
      } else {
        wake_.wait(lock, ready);
      }
    }
  }

  static void deliver(const std::deque<micro::WatchEvent>& batch,
                      const std::vector<Watcher>& watchers) {
    for (const auto& event : batch) {
      for (const auto& watcher : watchers) {
        if (!watcher.service.empty() && watcher.service != event.service.name) continue;
        watcher.delivery->deliver(event);
      }
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  NameMap services_;
  std::deque<micro::WatchEvent> events_;
  std::list<Watcher> watchers_;
  std::thread worker_;  // last: starts after every member above exists
};

}  // namespace

MICRO_PLUGIN_NO_OPTIONS(registry, memory, "in-process registry with per-node TTLs and watches",
                        [](const micro::PluginArguments&) -> micro::PluginObject* {
                          return new MemoryRegistry();
                        })
