// registry/etcd/values.hpp — what the etcd registry reads from the gateway's key/value JSON: a
// key/value pair (base64 key and value, version and revision) and a value as a Service. Apart
// from etcd_registry.cpp so test/fuzz/etcd_gateway compiles the very code. Internal.
#pragma once

#include <cstdint>
#include <exception>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include <micro/base64.hpp>
#include <micro/registry.hpp>

#include "etcd_client.hpp"

namespace micro::etcd {

// One key/value pair from a range or a watch event.
struct KeyValue {
  std::string key;
  std::string value;
  std::int64_t version = 0;
  std::int64_t mod_revision = 0;
};

inline KeyValue decode_key_value(const nlohmann::json& kv) {
  KeyValue decoded;
  decoded.key = micro::base64::decode(kv.value("key", ""));
  decoded.value = micro::base64::decode(kv.value("value", ""));
  decoded.version = json_int64(kv, "version");
  decoded.mod_revision = json_int64(kv, "mod_revision");
  return decoded;
}

// A registry value parsed back into a Service; nullopt for a value that is not one (another
// program's key under our prefix must not break lookups).
inline std::optional<micro::Service> parse_service(const std::string& value) {
  auto json = nlohmann::json::parse(value, nullptr, false);
  if (json.is_discarded() || !json.is_object()) return std::nullopt;
  try {
    return json.get<micro::Service>();
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace micro::etcd
