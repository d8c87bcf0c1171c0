// test/fuzz/registry_service.cpp — registry service JSON (<micro/registry.hpp> from_json), as
// the file registry reads it from its directory and the etcd registry from a key's value
// (Go-Micro's layout). Only nlohmann's exceptions may leave; what parses encodes back alike.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include <micro/registry.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto json = nlohmann::json::parse(text, nullptr, false);
  if (json.is_discarded()) return 0;
  try {
    auto service = json.get<micro::Service>();
    nlohmann::json again = service;
    if (again.get<micro::Service>().nodes.size() != service.nodes.size()) __builtin_trap();
  } catch (const nlohmann::json::exception&) {
  }
  return 0;
}
