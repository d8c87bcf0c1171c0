// Registry data model: Go-Micro-compatible JSON for Value/Endpoint/Node/Service, merging of
// per-node registrations into services, the names of watch actions, and the watch-stop
// semantics every registry shares (WatchDelivery, DeliveryWatch).
#include <micro/error.hpp>
#include <micro/registry.hpp>

#include <thread>
#include <utility>

#include <nlohmann/json.hpp>

namespace micro {

namespace {

// Go peers write `null` for nil maps, slices and pointers, and may leave fields out
// entirely; both read as empty here.
template <class T>
void read_optional(const nlohmann::json& json, const char* key, T& target) {
  auto found = json.find(key);
  if (found == json.end() || found->is_null()) {
    target = T{};
    return;
  }
  found->get_to(target);
}

void require_object(const nlohmann::json& json, const char* what) {
  if (!json.is_object()) {
    throw nlohmann::json::type_error::create(
        302, std::string(what) + " must be a JSON object, not " + json.type_name(), &json);
  }
}

}  // namespace

void to_json(nlohmann::json& json, const Value& value) {
  json = nlohmann::json{{"name", value.name}, {"type", value.type}, {"values", value.values}};
}

void from_json(const nlohmann::json& json, Value& value) {
  if (json.is_null()) {  // a nil *Value
    value = Value{};
    return;
  }
  require_object(json, "value");
  read_optional(json, "name", value.name);
  read_optional(json, "type", value.type);
  read_optional(json, "values", value.values);
}

void to_json(nlohmann::json& json, const Endpoint& endpoint) {
  json = nlohmann::json{{"name", endpoint.name},
                        {"request", endpoint.request},
                        {"response", endpoint.response},
                        {"metadata", endpoint.metadata}};
}

void from_json(const nlohmann::json& json, Endpoint& endpoint) {
  require_object(json, "endpoint");
  read_optional(json, "name", endpoint.name);
  read_optional(json, "request", endpoint.request);
  read_optional(json, "response", endpoint.response);
  read_optional(json, "metadata", endpoint.metadata);
}

void to_json(nlohmann::json& json, const Node& node) {
  json = nlohmann::json{{"id", node.id}, {"address", node.address}, {"metadata", node.metadata}};
}

void from_json(const nlohmann::json& json, Node& node) {
  require_object(json, "node");
  read_optional(json, "id", node.id);
  read_optional(json, "address", node.address);
  read_optional(json, "metadata", node.metadata);
}

void to_json(nlohmann::json& json, const Service& service) {
  json = nlohmann::json{{"name", service.name},
                        {"version", service.version},
                        {"metadata", service.metadata},
                        {"endpoints", service.endpoints},
                        {"nodes", service.nodes}};
}

void from_json(const nlohmann::json& json, Service& service) {
  require_object(json, "service");
  read_optional(json, "name", service.name);
  read_optional(json, "version", service.version);
  read_optional(json, "metadata", service.metadata);
  read_optional(json, "endpoints", service.endpoints);
  read_optional(json, "nodes", service.nodes);
}

std::vector<Service> merge_services(std::vector<Service> registrations) {
  std::vector<Service> merged;
  for (auto& registration : registrations) {
    Service* target = nullptr;
    for (auto& candidate : merged) {
      if (candidate.name == registration.name && candidate.version == registration.version) {
        target = &candidate;
        break;
      }
    }
    if (target == nullptr) {
      merged.push_back(std::move(registration));
      continue;
    }
    // A later registration describes the service as it is now: its metadata and endpoints
    // win when it carries any.
    if (!registration.metadata.empty()) target->metadata = std::move(registration.metadata);
    if (!registration.endpoints.empty()) target->endpoints = std::move(registration.endpoints);
    for (auto& node : registration.nodes) {
      bool replaced = false;
      for (auto& existing : target->nodes) {
        if (existing.id == node.id) {
          existing = std::move(node);
          replaced = true;
          break;
        }
      }
      if (!replaced) target->nodes.push_back(std::move(node));
    }
  }
  return merged;
}

std::string_view to_string(WatchAction action) noexcept {
  switch (action) {
    case WatchAction::create:
      return "create";
    case WatchAction::update:
      return "update";
    case WatchAction::remove:
      return "delete";
  }
  return "unknown";
}

void validate_registration(const Service& service, std::string_view error_id) {
  std::string id(error_id);
  if (service.name.empty()) throw Exception(bad_request(id, "service name is empty"));
  if (service.nodes.empty())
    throw Exception(bad_request(id, "service " + service.name + " has no nodes to register"));
  for (const auto& node : service.nodes)
    if (node.id.empty())
      throw Exception(bad_request(id, "a node of service " + service.name + " has no id"));
}

WatchDelivery::WatchDelivery(Callback on_event) : on_event_(std::move(on_event)) {}

bool WatchDelivery::deliver(const WatchEvent& event) {
  if (stopped_.load(std::memory_order_acquire)) return false;
  std::lock_guard lock(mutex_);
  // Checked again under the lock: a stop() that waited for the previous callback must not see
  // this one start after it returned.
  if (stopped_.load(std::memory_order_acquire)) return false;
  delivering_.store(std::this_thread::get_id(), std::memory_order_release);
  try {
    on_event_(event);
  } catch (...) {
    // A throwing callback must not end the watch nor the registry's delivery thread.
  }
  delivering_.store(std::thread::id{}, std::memory_order_release);
  return !stopped_.load(std::memory_order_acquire);
}

void WatchDelivery::stop() noexcept {
  stopped_.store(true, std::memory_order_release);
  // Only this thread can have stored its own id, and only while inside the callback: then the
  // flag is enough (and waiting for ourselves would deadlock).
  if (delivering_.load(std::memory_order_acquire) == std::this_thread::get_id()) return;
  // Wait out a callback in progress; every later deliver() sees the flag under this lock.
  std::lock_guard lock(mutex_);
}

bool WatchDelivery::stopped() const noexcept {
  return stopped_.load(std::memory_order_acquire);
}

DeliveryWatch::DeliveryWatch(std::shared_ptr<WatchDelivery> delivery, std::function<void()> on_stop,
                             std::thread worker)
    : delivery_(std::move(delivery)), on_stop_(std::move(on_stop)), worker_(std::move(worker)) {}

DeliveryWatch::~DeliveryWatch() {
  stop();
  // Still joinable only when destroyed on the worker itself (inside a callback): it finishes
  // that callback and ends on its own, holding what it needs by shared_ptr.
  if (worker_.joinable()) worker_.detach();
}

void DeliveryWatch::stop() {
  // First: from here on no callback starts, and one in progress elsewhere has finished.
  delivery_->stop();
  std::lock_guard lock(stop_mutex_);
  if (on_stop_) {
    auto on_stop = std::move(on_stop_);
    on_stop_ = nullptr;
    on_stop();
  }
  if (worker_.joinable() && worker_.get_id() != std::this_thread::get_id()) worker_.join();
}

}  // namespace micro
