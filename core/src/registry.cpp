// Registry data model: Go-Micro-compatible JSON for Value/Endpoint/Node/Service, merging of
// per-node registrations into services, and the names of watch actions.
#include <micro/error.hpp>
#include <micro/registry.hpp>

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

}  // namespace micro
