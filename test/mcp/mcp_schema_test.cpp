// `micro mcp`'s pieces without I/O: JSON Schema 2020-12 from registry shapes, validation of
// tool arguments against it (messages naming the field), tool names within the spec's grammar,
// filters, and the tool list built from a registry listing.
#include <doctest/doctest.h>

#include <micro/schema.hpp>

#include "mcp_gateway.hpp"

namespace {

struct Inner {
  std::vector<std::string> tags;
  bool flag = false;
};
struct Outer {
  std::string name;
  std::int32_t count = 0;
  Inner inner;
  std::vector<Inner> list;
  std::map<std::string, double> weights;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Inner, tags, flag)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Outer, name, count, inner, list, weights)

}  // namespace

MICRO_DEFINE_SCHEMA(Inner, tags, flag);
MICRO_DEFINE_SCHEMA(Outer, name, count, inner, list, weights);

using micro::mcp::json_schema_of;
using micro::mcp::validate_against;
using nlohmann::json;

TEST_CASE("input schemas are JSON Schema objects with nested objects, arrays, maps, required") {
  json schema = json_schema_of(micro::schema_of<Outer>(), true);
  CHECK(schema["type"] == "object");
  CHECK(schema["required"] == json::array({"name", "count", "inner", "list", "weights"}));
  CHECK(schema["additionalProperties"] == false);
  CHECK(schema["properties"]["name"] == json{{"type", "string"}});
  CHECK(schema["properties"]["count"] == json{{"type", "integer"}});
  CHECK(schema["properties"]["inner"]["type"] == "object");
  CHECK(schema["properties"]["inner"]["properties"]["tags"] ==
        json{{"type", "array"}, {"items", {{"type", "string"}}}});
  CHECK(schema["properties"]["list"]["items"]["properties"]["flag"] == json{{"type", "boolean"}});
  CHECK(schema["properties"]["weights"] ==
        json{{"type", "object"}, {"additionalProperties", {{"type", "number"}}}});
  // Output schemas let a service add fields and need none.
  json output = json_schema_of(micro::schema_of<Outer>(), false);
  CHECK_FALSE(output.contains("required"));
  CHECK_FALSE(output.contains("additionalProperties"));
  // Any JSON value: the empty schema.
  CHECK(json_schema_of(micro::schema_of<json>(), true) == json::object());
}

TEST_CASE("arguments that do not fit are refused naming the field and what was expected") {
  json schema = json_schema_of(micro::schema_of<Outer>(), true);
  json good = {{"name", "a"},
               {"count", 2},
               {"inner", {{"tags", {"x"}}, {"flag", true}}},
               {"list", json::array()},
               {"weights", {{"w", 0.5}}}};
  CHECK(validate_against(schema, good, "arguments") == "");
  json two_point_zero = good;
  two_point_zero["count"] = 2.0;  // an integer in JSON Schema's sense
  CHECK(validate_against(schema, two_point_zero, "arguments") == "");

  json wrong = good;
  wrong["count"] = "two";
  CHECK(validate_against(schema, wrong, "arguments") ==
        "arguments.count: expected integer, got string \"two\"");
  wrong = good;
  wrong.erase("name");
  CHECK(validate_against(schema, wrong, "arguments") == "arguments: missing required field 'name'");
  wrong = good;
  wrong["nmae"] = "typo";
  std::string problem = validate_against(schema, wrong, "arguments");
  CHECK(problem.find("arguments: unknown field 'nmae'") == 0);
  CHECK(problem.find("did you mean 'name'") != std::string::npos);
  wrong = good;
  wrong["inner"]["tags"] = json::array({"ok", 3});
  CHECK(validate_against(schema, wrong, "arguments") ==
        "arguments.inner.tags[1]: expected string, got integer 3");
  wrong = good;
  wrong["weights"]["w"] = true;
  CHECK(validate_against(schema, wrong, "arguments") ==
        "arguments.weights.w: expected number, got boolean true");
}

TEST_CASE("tool names keep to the 2025-11-25 grammar") {
  using micro::mcp::tool_name_of;
  CHECK(tool_name_of("greeter", "Greeter.Hello") == "greeter.Greeter.Hello");
  CHECK(tool_name_of("my service", "A/B") == "my_service.A_B");
  std::string long_name = tool_name_of(std::string(200, 's'), "E");
  CHECK(long_name.size() == 128);
  CHECK(long_name != tool_name_of(std::string(201, 's'), "E"));  // the hash tells them apart
  for (char c : long_name)
    CHECK(((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == 's'));
}

TEST_CASE("filters: a service, a tool, or a glob; deny wins; the list is sorted") {
  using micro::mcp::matches_filter;
  CHECK(matches_filter("greeter", "greeter", "greeter.Greeter.Hello"));
  CHECK(matches_filter("greeter.Greeter.*", "greeter", "greeter.Greeter.Hello"));
  CHECK(matches_filter("*.Hello", "greeter", "greeter.Greeter.Hello"));
  CHECK_FALSE(matches_filter("greet", "greeter", "greeter.Greeter.Hello"));

  micro::Service b{"b", "1", {}, {{"B.Two", micro::schema_of<Inner>(), {}, {}}}, {}};
  micro::Service a{"a",
                   "1",
                   {},
                   {{"A.One",
                     micro::schema_of<Inner>(),
                     micro::schema_of<Outer>(),
                     {{"description", "does one"}}},
                    {"A.Raw", micro::Value{"string", "string", {}}, {}, {}}},
                   {}};
  micro::mcp::McpOptions options;
  auto tools = micro::mcp::build_tools({b, a}, options);
  REQUIRE(tools.size() == 2);  // A.Raw takes a bare string: no tool
  CHECK(tools[0].name == "a.A.One");
  CHECK(tools[0].definition["description"] == "does one");
  CHECK(tools[0].definition["outputSchema"]["type"] == "object");
  CHECK(tools[0].definition["inputSchema"]["$schema"] ==
        "https://json-schema.org/draft/2020-12/schema");
  CHECK(tools[1].name == "b.B.Two");
  CHECK_FALSE(tools[1].definition.contains("outputSchema"));

  options.deny = {"b"};
  CHECK(micro::mcp::build_tools({b, a}, options).size() == 1);
  options.deny.clear();
  options.allow = {"b.*"};
  auto allowed = micro::mcp::build_tools({b, a}, options);
  REQUIRE(allowed.size() == 1);
  CHECK(allowed[0].name == "b.B.Two");
}
