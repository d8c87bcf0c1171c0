// The greeter's messages, shared by its server and client: plain structs with JSON mappings.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace greeter {

struct HelloRequest {
  std::string name;
};
struct HelloResponse {
  std::string greeting;
  std::string served_by;  // the node's address, so a reader can see the balancing
};

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(HelloRequest, name)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(HelloResponse, greeting, served_by)

}  // namespace greeter
