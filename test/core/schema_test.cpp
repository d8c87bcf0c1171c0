// Endpoint schemas (<micro/schema.hpp>): what schema_of says of built-in types, of structs
// described from their JSON and by MICRO_DEFINE_SCHEMA, the depth bound, readable names, and
// that typed handlers register their schemas in the server's registration.
#include <doctest/doctest.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <micro/schema.hpp>
#include <micro/server.hpp>

#include <nlohmann/json.hpp>

namespace shop {

struct Item {
  std::string sku;
  std::int32_t quantity = 0;
  double price = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Item, sku, quantity, price)

struct Address {
  std::string city;
  bool verified = false;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Address, city, verified)

struct Order {
  std::string id;
  Address shipping;
  std::vector<Item> items;
  std::map<std::string, std::string> labels;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Order, id, shipping, items, labels)

// The same members, described by their own types.
struct TypedOrder {
  std::string id;
  std::vector<Item> items;
  std::optional<std::int64_t> priority;
  std::map<std::string, Item> by_sku;
};
void to_json(nlohmann::json& json, const TypedOrder& order) {
  json = {{"id", order.id}, {"items", order.items}, {"by_sku", order.by_sku}};
  json["priority"] = order.priority ? nlohmann::json(*order.priority) : nlohmann::json();
}
void from_json(const nlohmann::json& json, TypedOrder& order) {
  json.at("id").get_to(order.id);
}

// Recursive: ends at the depth bound.
struct Tree {
  std::string label;
  std::vector<Tree> children;
};

struct Money {
  std::int64_t cents = 0;
};
void to_json(nlohmann::json& json, const Money& money) {
  json = std::to_string(money.cents);
}
void from_json(const nlohmann::json&, Money&) {}

// A type whose to_json refuses the empty value.
struct Picky {};
void to_json(nlohmann::json&, const Picky&) {
  throw nlohmann::json::other_error::create(501, "no", nullptr);
}
void from_json(const nlohmann::json&, Picky&) {}

}  // namespace shop

MICRO_DEFINE_SCHEMA(shop::TypedOrder, id, items, priority, by_sku);
MICRO_DEFINE_SCHEMA(shop::Tree, label, children);

template <>
struct micro::schema_traits<shop::Money> {
  static micro::Value describe(std::size_t) { return {"Money", "string", {}}; }
};

// Failed checks print the Value as its registry JSON.
template <>
struct doctest::StringMaker<micro::Value> {
  static doctest::String convert(const micro::Value& value) {
    return nlohmann::json(value).dump().c_str();
  }
};

namespace {

using micro::Value;

const Value* field(const Value& object, std::string_view name) {
  for (const auto& value : object.values)
    if (value.name == name) return &value;
  return nullptr;
}

std::size_t depth_of(const Value& value) {
  std::size_t deepest = 0;
  for (const auto& child : value.values) deepest = std::max(deepest, 1 + depth_of(child));
  return deepest;
}

}  // namespace

TEST_CASE("built-in types have their JSON types and Go-like names") {
  CHECK(micro::schema_of<bool>() == Value{"bool", "boolean", {}});
  CHECK(micro::schema_of<std::int32_t>() == Value{"int32", "integer", {}});
  CHECK(micro::schema_of<std::uint64_t>() == Value{"uint64", "integer", {}});
  CHECK(micro::schema_of<double>() == Value{"float64", "number", {}});
  CHECK(micro::schema_of<float>() == Value{"float32", "number", {}});
  CHECK(micro::schema_of<std::string>() == Value{"string", "string", {}});
  CHECK(micro::schema_of<const std::string&>() == Value{"string", "string", {}});
  CHECK(micro::schema_of<std::optional<std::string>>() == Value{"string", "string", {}});
  CHECK(micro::schema_of<nlohmann::json>() == Value{"json", "", {}});
  CHECK(micro::schema_of<std::vector<std::string>>() ==
        Value{"[]string", "array", {Value{"string", "string", {}}}});
  CHECK(micro::schema_of<std::map<std::string, double>>() ==
        Value{"map[string]float64", "object", {Value{"*", "number", {}}}});
}

TEST_CASE("a struct is described from the JSON of a value-initialised one") {
  Value order = micro::schema_of<shop::Order>();
  CHECK(order.name == "Order");  // namespaces dropped
  CHECK(order.type == "object");
  REQUIRE(order.values.size() == 4);
  REQUIRE(field(order, "id") != nullptr);
  CHECK(*field(order, "id") == Value{"id", "string", {}});
  REQUIRE(field(order, "shipping") != nullptr);
  CHECK(
      *field(order, "shipping") ==
      Value{"shipping", "object", {Value{"city", "string", {}}, Value{"verified", "boolean", {}}}});
  // An empty vector says nothing of its elements: an array, honestly without an element.
  CHECK(*field(order, "items") == Value{"items", "array", {}});
  CHECK(*field(order, "labels") == Value{"labels", "object", {}});

  Value item = micro::schema_of<shop::Item>();
  CHECK(*field(item, "quantity") == Value{"quantity", "integer", {}});
  CHECK(*field(item, "price") == Value{"price", "number", {}});  // 0.0 is a float in JSON
}

TEST_CASE("MICRO_DEFINE_SCHEMA describes members by their own types, in declaration order") {
  Value order = micro::schema_of<shop::TypedOrder>();
  CHECK(order.name == "TypedOrder");
  REQUIRE(order.values.size() == 4);
  CHECK(order.values[0] == Value{"id", "string", {}});
  const Value& items = order.values[1];
  CHECK(items.name == "items");
  CHECK(items.type == "array");
  REQUIRE(items.values.size() == 1);
  CHECK(items.values[0].name == "Item");
  CHECK(items.values[0].type == "object");
  CHECK(field(items.values[0], "sku") != nullptr);
  CHECK(order.values[2] == Value{"priority", "integer", {}});  // optional: its element's type
  const Value& by_sku = order.values[3];
  CHECK(by_sku.type == "object");
  REQUIRE(by_sku.values.size() == 1);
  CHECK(by_sku.values[0].name == "*");
  CHECK(by_sku.values[0].type == "object");
}

TEST_CASE("nesting stops at the depth bound, so recursive types end") {
  Value tree = micro::schema_of<shop::Tree>();
  CHECK(depth_of(tree) == micro::default_schema_depth);
  Value shallow = micro::schema_of<shop::Tree>(1);
  CHECK(shallow ==
        Value{"Tree", "object", {Value{"label", "string", {}}, Value{"children", "array", {}}}});
  CHECK(micro::schema_of<shop::Tree>(0) == Value{"Tree", "object", {}});
  CHECK(micro::schema_of<shop::Order>(1).values.size() == 4);
  CHECK(field(micro::schema_of<shop::Order>(1), "shipping")->values.empty());
}

TEST_CASE("a specialisation wins; a refusing to_json leaves the name") {
  CHECK(micro::schema_of<shop::Money>() == Value{"Money", "string", {}});
  CHECK(micro::schema_of<shop::Picky>() == Value{"Picky", "", {}});
}

TEST_CASE("readable type names drop namespaces, also inside template arguments") {
  CHECK(micro::readable_type_name(typeid(shop::Item)) == "Item");
  CHECK(micro::readable_type_name(typeid(std::vector<shop::Item>)) ==
        "vector<Item, allocator<Item> >");
  CHECK(micro::readable_type_name(typeid(std::string)) == "string");
  CHECK(micro::readable_type_name(typeid(int)) == "int");
}

TEST_CASE("schema_from_json describes arrays by their first element") {
  auto sample = nlohmann::json::parse(R"({"tags":["a"],"n":null,"point":{"x":1.5}})");
  Value value = micro::schema_from_json(sample, "Sample");
  CHECK(value == Value{"Sample",
                       "object",
                       {Value{"n", "", {}}, Value{"point", "object", {Value{"x", "number", {}}}},
                        Value{"tags", "array", {Value{"", "string", {}}}}}});
}

TEST_CASE("typed handlers register their schemas; explicit ones win") {
  micro::ServerOptions options;
  options.name = "shop";
  micro::Server server(options, nullptr, nullptr, nullptr, {});
  server.handle("Shop.Order",
                [](micro::Context&, const shop::Order& order) { return shop::Item{order.id}; });
  server.handle("Shop.Typed",
                std::function<shop::Item(micro::Context&, const shop::TypedOrder&)>(
                    [](micro::Context&, const shop::TypedOrder&) { return shop::Item{}; }));
  micro::EndpointOptions explicit_options;
  explicit_options.request = Value{"Custom", "object", {Value{"x", "integer", {}}}};
  server.handle(
      "Shop.Explicit", [](micro::Context&, const shop::Order&) { return shop::Item{}; },
      explicit_options);
  server.handle("Shop.Raw", [](const micro::RequestPtr&, micro::ResponseHandler) {});

  micro::Service registration = server.registration();
  REQUIRE(registration.endpoints.size() == 4);
  const auto& explicit_endpoint = registration.endpoints[0];
  CHECK(explicit_endpoint.name == "Shop.Explicit");
  CHECK(explicit_endpoint.request == explicit_options.request);
  CHECK(explicit_endpoint.response == micro::schema_of<shop::Item>());
  const auto& order = registration.endpoints[1];
  CHECK(order.name == "Shop.Order");
  CHECK(order.request == micro::schema_of<shop::Order>());
  CHECK(order.response.name == "Item");
  const auto& raw = registration.endpoints[2];
  CHECK(raw.name == "Shop.Raw");
  CHECK(raw.request == Value{});  // a raw handler says nothing of its bytes
  const auto& typed = registration.endpoints[3];
  CHECK(typed.request == micro::schema_of<shop::TypedOrder>());

  // The registry's JSON carries the schema recursively in Go-Micro's form.
  nlohmann::json json = registration;
  const auto& request = json["endpoints"][3]["request"];
  CHECK(request["name"] == "TypedOrder");
  // items → its element Item → Item's fields (from its JSON sample, in key order).
  CHECK(request["values"][1]["values"][0]["values"][2] ==
        nlohmann::json{{"name", "sku"}, {"type", "string"}, {"values", nlohmann::json::array()}});
  CHECK(json.get<micro::Service>() == registration);
}

TEST_CASE("a Go-Micro service's endpoint schema reads back, nil values included") {
  // As Go-Micro's registry writes it: nested values, nil slices as null.
  auto json = nlohmann::json::parse(R"({
    "name": "Greeter.Hello",
    "request": {"name": "Request", "type": "Request", "values": [
      {"name": "name", "type": "string", "values": null},
      {"name": "tags", "type": "[]string", "values": null},
      {"name": "meta", "type": "Meta", "values": [{"name": "id", "type": "int64", "values": null}]}
    ]},
    "response": null,
    "metadata": {"stream": "false"}
  })");
  auto endpoint = json.get<micro::Endpoint>();
  REQUIRE(endpoint.request.values.size() == 3);
  CHECK(endpoint.request.values[2] == Value{"meta", "Meta", {Value{"id", "int64", {}}}});
  CHECK(endpoint.response == Value{});
  // And writes back in the same shape (empty lists where Go wrote null, which Go reads alike).
  CHECK(nlohmann::json(endpoint)["request"]["values"][2]["values"][0] ==
        nlohmann::json{{"name", "id"}, {"type", "int64"}, {"values", nlohmann::json::array()}});
}
