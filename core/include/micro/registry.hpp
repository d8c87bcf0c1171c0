// micro/registry.hpp — where services are registered and found.
//
// The data model is Go-Micro's: a Service has a name, a version, metadata, endpoints and
// the nodes (running instances) that serve it. Its JSON uses Go-Micro's field names, so
// a Go-Micro service reading the same registry understands ours.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include <micro/plugin.hpp>

namespace micro {

using MetadataMap = std::map<std::string, std::string>;

// Describes a request or response type, recursively (Go-Micro's registry.Value).
struct Value {
  std::string name;
  std::string type;
  std::vector<Value> values;
  friend bool operator==(const Value&, const Value&) = default;
};

struct Endpoint {
  std::string name;  // "Greeter.Hello"
  Value request;
  Value response;
  MetadataMap metadata;
  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

struct Node {
  std::string id;        // unique per running instance: "greeter-5f0c…"
  std::string address;   // "127.0.0.1:40123"
  MetadataMap metadata;  // includes "protocol", "transport", "broker", "registry", "server"
  friend bool operator==(const Node&, const Node&) = default;
};

struct Service {
  std::string name;
  std::string version;
  MetadataMap metadata;
  std::vector<Endpoint> endpoints;
  std::vector<Node> nodes;
  friend bool operator==(const Service&, const Service&) = default;
};

void to_json(nlohmann::json& json, const Value& value);
void from_json(const nlohmann::json& json, Value& value);
void to_json(nlohmann::json& json, const Endpoint& endpoint);
void from_json(const nlohmann::json& json, Endpoint& endpoint);
void to_json(nlohmann::json& json, const Node& node);
void from_json(const nlohmann::json& json, Node& node);
void to_json(nlohmann::json& json, const Service& service);
void from_json(const nlohmann::json& json, Service& service);

// Merges registrations of the same service: nodes of equal (name, version) are grouped
// into one Service, as GetService returns them. Later entries replace earlier nodes with
// the same id.
std::vector<Service> merge_services(std::vector<Service> registrations);

// Checks what every registry refuses: an empty service name, no nodes, a node without an
// id. Throws micro::Exception (400) with `error_id` as the Error's id.
void validate_registration(const Service& service, std::string_view error_id);

struct RegisterOptions {
  // How long the registration lives without a refresh. Zero: until deregistered.
  std::chrono::milliseconds ttl{0};
};

enum class WatchAction { create, update, remove };
std::string_view to_string(WatchAction action) noexcept;

// One change: `service` carries the node(s) concerned.
struct WatchEvent {
  WatchAction action;
  Service service;
};

struct WatchOptions {
  std::string service;  // empty: every service
};

// A running watch, as Registry::watch returns it. Threading contract (every registry keeps it,
// through WatchDelivery below):
// - stop() may be called from any thread, any number of times; destroying the Watch stops it.
// - After stop() returns, no callback runs. Called from another thread, stop() waits for a
//   callback in progress to finish (so a callback must not wait for a thread that is stopping
//   its own watch).
// - Called from inside the watch's own callback, stop() returns at once: the callback in
//   progress is the last one. The Watch may also be destroyed there.
// - Callbacks of one watch never overlap. One that throws is ignored; the watch goes on.
class Watch {
 public:
  virtual ~Watch() = default;
  virtual void stop() = 0;
};

// What a registry's watch delivers through: holds the callback and keeps the Watch contract
// above, whichever threads deliver (deliveries are serialised) and whichever stops. Shared by
// the Watch and the registry's delivering threads, so either may outlive the other. Idle it
// costs nothing; a delivery costs one lock, a stop() one lock when no callback is running.
class WatchDelivery {
 public:
  using Callback = std::function<void(const WatchEvent&)>;

  explicit WatchDelivery(Callback on_event);
  WatchDelivery(const WatchDelivery&) = delete;
  WatchDelivery& operator=(const WatchDelivery&) = delete;

  // Runs the callback with `event` unless stopped, waiting for one in progress on another
  // thread first; swallows what it throws. Returns false once stopped (the caller's delivery
  // loop may end), true otherwise.
  bool deliver(const WatchEvent& event);
  // See Watch::stop(): sets stopped, then (unless called from inside this delivery's callback)
  // waits for a callback in progress.
  void stop() noexcept;
  bool stopped() const noexcept;

 private:
  Callback on_event_;
  std::atomic<bool> stopped_{false};
  std::mutex mutex_;  // held while the callback runs
  // The thread running the callback, if any (written under mutex_, read by stop() without it).
  std::atomic<std::thread::id> delivering_{};
};

// A ready-made Watch around a WatchDelivery. stop() stops the delivery, then runs `on_stop`
// once (wake a poller, cancel a stream), then joins `worker` (the thread delivering, if the
// watch has its own) unless stop() runs on it: from inside a callback the worker finishes that
// callback and ends by itself (it is detached if the Watch is destroyed there).
class DeliveryWatch final : public Watch {
 public:
  explicit DeliveryWatch(std::shared_ptr<WatchDelivery> delivery,
                         std::function<void()> on_stop = {}, std::thread worker = {});
  ~DeliveryWatch() override;
  void stop() override;

 private:
  std::shared_ptr<WatchDelivery> delivery_;
  std::mutex stop_mutex_;  // one stop() at a time runs the hook and joins
  std::function<void()> on_stop_;
  std::thread worker_;
};

// Threading contract: every method may be called from any thread at once. Methods may
// block on I/O (an etcd round trip), so the client pipeline reaches a Registry through
// RegistryCache, which keeps lookups off the I/O threads. Failures throw micro::Exception
// (503 when the backend is unreachable, 404 from get_service for an unknown name).
class Registry : public PluginObject {
 public:
  static constexpr PluginKind plugin_kind = PluginKind::registry;

  virtual void register_service(const Service& service, const RegisterOptions& options) = 0;
  virtual void deregister_service(const Service& service) = 0;
  // Every registered version of `name`, each with its live nodes.
  virtual std::vector<Service> get_service(std::string_view name) = 0;
  // Every service, by name and version; nodes may be omitted.
  virtual std::vector<Service> list_services() = 0;
  // Calls `on_event` (from a thread of the registry's) for each change from now on; the Watch
  // keeps the contract above.
  virtual std::unique_ptr<Watch> watch(const WatchOptions& options,
                                       std::function<void(const WatchEvent&)> on_event) = 0;
};

}  // namespace micro
