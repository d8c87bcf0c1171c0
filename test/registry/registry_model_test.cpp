// The registry data model: Go-Micro-compatible JSON both ways, tolerance of what Go peers
// write (null, missing fields), errors for malformed JSON, merging, and watch action names.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <micro/registry.hpp>

namespace {

// What a Go-Micro service writes into its registry (etcd value of one node): nil maps and
// slices come out as null.
constexpr const char* go_micro_service_json = R"({
  "name": "helloworld",
  "version": "latest",
  "metadata": null,
  "endpoints": [
    {
      "name": "Helloworld.Call",
      "request": {
        "name": "CallRequest",
        "type": "CallRequest",
        "values": [{"name": "name", "type": "string", "values": null}]
      },
      "response": {
        "name": "CallResponse",
        "type": "CallResponse",
        "values": [{"name": "msg", "type": "string", "values": null}]
      },
      "metadata": {}
    },
    {
      "name": "Helloworld.Stream",
      "request": null,
      "response": null,
      "metadata": {"stream": "true"}
    }
  ],
  "nodes": [
    {
      "id": "helloworld-7f3c1f4e-2b1a-4c55-9d43-0a6f2c1e9b11",
      "address": "192.168.1.20:38411",
      "metadata": {
        "broker": "http",
        "protocol": "grpc",
        "registry": "etcd",
        "server": "grpc",
        "transport": "grpc"
      }
    }
  ]
})";

std::string type_error_of(const char* text) {
  try {
    nlohmann::json::parse(text).get<micro::Service>();
  } catch (const nlohmann::json::exception& exception) {
    return exception.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("model: a service as Go-Micro writes it parses") {
  auto service = nlohmann::json::parse(go_micro_service_json).get<micro::Service>();
  CHECK(service.name == "helloworld");
  CHECK(service.version == "latest");
  CHECK(service.metadata.empty());
  REQUIRE(service.endpoints.size() == 2);
  CHECK(service.endpoints[0].name == "Helloworld.Call");
  CHECK(service.endpoints[0].request.name == "CallRequest");
  REQUIRE(service.endpoints[0].request.values.size() == 1);
  CHECK(service.endpoints[0].request.values[0] == micro::Value{"name", "string", {}});
  CHECK(service.endpoints[0].response.values[0].name == "msg");
  CHECK(service.endpoints[1].request == micro::Value{});
  CHECK(service.endpoints[1].metadata.at("stream") == "true");
  REQUIRE(service.nodes.size() == 1);
  CHECK(service.nodes[0].id == "helloworld-7f3c1f4e-2b1a-4c55-9d43-0a6f2c1e9b11");
  CHECK(service.nodes[0].address == "192.168.1.20:38411");
  CHECK(service.nodes[0].metadata.at("protocol") == "grpc");
}

TEST_CASE("model: missing and null fields read as empty") {
  auto service = nlohmann::json::parse(R"({"name":"bare"})").get<micro::Service>();
  CHECK(service == micro::Service{"bare", "", {}, {}, {}});

  auto nulls =
      nlohmann::json::parse(
          R"({"name":null,"version":null,"metadata":null,"endpoints":null,"nodes":[{"id":"n"}]})")
          .get<micro::Service>();
  CHECK(nulls.name.empty());
  REQUIRE(nulls.nodes.size() == 1);
  CHECK(nulls.nodes[0] == micro::Node{"n", "", {}});
}

TEST_CASE("model: JSON uses Go-Micro's field names") {
  micro::Service service{"greeter",
                         "1.0.0",
                         {{"team", "edge"}},
                         {{"Greeter.Hello", {"Request", "Request", {}}, {}, {{"stream", "false"}}}},
                         {{"greeter-1", "127.0.0.1:9000", {{"protocol", "tcp"}}}}};
  nlohmann::json json = service;
  CHECK(json == nlohmann::json::parse(R"({
    "name": "greeter", "version": "1.0.0", "metadata": {"team": "edge"},
    "endpoints": [{"name": "Greeter.Hello",
                   "request": {"name": "Request", "type": "Request", "values": []},
                   "response": {"name": "", "type": "", "values": []},
                   "metadata": {"stream": "false"}}],
    "nodes": [{"id": "greeter-1", "address": "127.0.0.1:9000", "metadata": {"protocol": "tcp"}}]
  })"));
  CHECK(json.get<micro::Service>() == service);
}

TEST_CASE("model: the Go-Micro literal survives a round trip") {
  auto service = nlohmann::json::parse(go_micro_service_json).get<micro::Service>();
  nlohmann::json again = service;
  CHECK(again.get<micro::Service>() == service);
}

TEST_CASE("model: malformed JSON is an error that says what is wrong") {
  CHECK(type_error_of("[1, 2]") ==
        "[json.exception.type_error.302] service must be a JSON object, not array");
  CHECK(type_error_of(R"({"name": 7})") ==
        "[json.exception.type_error.302] type must be string, but is number");
  CHECK(type_error_of(R"({"nodes": "node-1"})") ==
        "[json.exception.type_error.302] type must be array, but is string");
  CHECK(type_error_of(R"({"nodes": [42]})") ==
        "[json.exception.type_error.302] node must be a JSON object, not number");
  CHECK(type_error_of(R"({"nodes": [{"id": "a", "metadata": {"port": 80}}]})") ==
        "[json.exception.type_error.302] type must be string, but is number");
  CHECK(type_error_of(R"({"endpoints": [{"name": "E", "request": "text"}]})") ==
        "[json.exception.type_error.302] value must be a JSON object, not string");
  CHECK(type_error_of(R"({"endpoints": [true]})") ==
        "[json.exception.type_error.302] endpoint must be a JSON object, not boolean");
  CHECK(type_error_of(R"({"name": "truncated")") ==
        "[json.exception.parse_error.101] parse error at line 1, column 21: syntax error while "
        "parsing object - unexpected end of input; expected '}'");
}

TEST_CASE("model: merge_services groups by name and version, later nodes replace earlier") {
  auto node = [](const std::string& id, const std::string& address) {
    return micro::Node{id, address, {}};
  };
  std::vector<micro::Service> registrations = {
      {"greeter", "1", {}, {}, {node("a", "old")}},
      {"greeter", "2", {}, {}, {node("c", "x")}},
      {"greeter", "1", {{"team", "edge"}}, {}, {node("b", "y")}},
      {"greeter", "1", {}, {}, {node("a", "new")}},
      {"other", "1", {}, {}, {node("d", "z")}},
  };
  auto merged = micro::merge_services(registrations);
  REQUIRE(merged.size() == 3);
  CHECK(merged[0].name == "greeter");
  CHECK(merged[0].version == "1");
  CHECK(merged[0].metadata == micro::MetadataMap{{"team", "edge"}});
  CHECK(merged[0].nodes == std::vector<micro::Node>{node("a", "new"), node("b", "y")});
  CHECK(merged[1].version == "2");
  CHECK(merged[2].name == "other");
  CHECK(micro::merge_services({}).empty());
}

TEST_CASE("model: watch actions are named as Go-Micro names them") {
  CHECK(micro::to_string(micro::WatchAction::create) == "create");
  CHECK(micro::to_string(micro::WatchAction::update) == "update");
  CHECK(micro::to_string(micro::WatchAction::remove) == "delete");
}
