// Protobuf messages as typed handler, call and stream types (<micro/protobuf.hpp>): the binary
// encoding under every protobuf content type, the canonical JSON mapping for JSON callers (and
// msgpack/CBOR through it), malformed bytes refused with an error naming endpoint and type,
// schemas from the descriptor, and the whole pipeline over tcp.
#include <doctest/doctest.h>

#include <utility>  // before Boost 1.74's awaitable.hpp, which uses std::exchange without it

#include <boost/asio/use_awaitable.hpp>

#include <micro/client.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/protobuf.hpp>
#include <micro/runtime.hpp>
#include <micro/server.hpp>

#include "protobuf_test.pb.h"

namespace {

using OrderCodec = micro::message_codec<shop::Order>;

shop::Order sample_order() {
  shop::Order order;
  order.set_order_id("A-17");
  auto* item = order.add_items();
  item->set_sku("tea");
  item->set_quantity(3);
  item = order.add_items();
  item->set_sku("cup");
  item->set_quantity(1);
  (*order.mutable_discounts())["loyal"] = 9007199254740993;  // beyond a double's integers
  order.set_priority(shop::PRIORITY_RUSH);
  order.set_note(std::string("\x00\xff", 2));
  order.set_total_cents(1250);
  order.mutable_placed_at()->set_seconds(1700000000);
  return order;
}

std::string what_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const micro::Exception& e) {
    return "micro " + std::to_string(e.error().code) + ": " + e.error().detail;
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(nothing thrown)";
}

const micro::Value* field(const micro::Value& object, std::string_view name) {
  for (const auto& value : object.values)
    if (value.name == name) return &value;
  return nullptr;
}

}  // namespace

TEST_CASE("binary protobuf under every name a protobuf or gRPC peer gives it") {
  shop::Order order = sample_order();
  std::string expected;
  REQUIRE(order.SerializeToString(&expected));
  for (std::string_view type :
       {"application/protobuf", "application/x-protobuf", "application/proto", "application/grpc",
        "application/grpc+proto", "Application/Protobuf; charset=binary"}) {
    CAPTURE(type);
    std::string bytes;
    OrderCodec::encode(type, order, bytes);
    CHECK(bytes == expected);
    CHECK(OrderCodec::decode(type, bytes).SerializeAsString() == expected);
    CHECK(OrderCodec::content_type(type) == "application/protobuf");
  }
  CHECK(OrderCodec::content_type("") == "application/json");  // Go-Micro's default
  CHECK(OrderCodec::content_type("application/cbor") == "application/cbor");
  CHECK(what_of([] { OrderCodec::content_type("text/plain"); }).starts_with("micro 400"));
}

TEST_CASE("JSON callers get protobuf's canonical JSON mapping, msgpack and CBOR through it") {
  shop::Order order = sample_order();
  std::string json;
  OrderCodec::encode("application/json", order, json);
  auto parsed = nlohmann::json::parse(json);
  CHECK(parsed["orderId"] == "A-17");  // lowerCamelCase keys
  CHECK(parsed["items"].size() == 2);
  CHECK(parsed["items"][0]["sku"] == "tea");
  CHECK(parsed["discounts"]["loyal"] == "9007199254740993");  // int64 as text, exact
  CHECK(parsed["priority"] == "PRIORITY_RUSH");
  CHECK(parsed["note"] == "AP8=");  // bytes as base64
  CHECK(parsed["totalCents"] == "1250");
  CHECK(parsed["gift"] == false);  // zero values are printed
  CHECK(parsed["placedAt"] == "2023-11-14T22:13:20Z");
  CHECK(OrderCodec::decode("application/json", json).SerializeAsString() ==
        order.SerializeAsString());

  // The proto names and plain numbers are accepted as well, as protobuf's parsers do.
  auto decoded = OrderCodec::decode(
      "application/json; charset=utf-8",
      R"({"order_id":"B-2","total_cents":77,"priority":1,"items":[{"sku":"pot"}]})");
  CHECK(decoded.order_id() == "B-2");
  CHECK(decoded.total_cents() == 77);
  CHECK(decoded.priority() == shop::PRIORITY_RUSH);
  CHECK(decoded.items(0).sku() == "pot");

  for (std::string_view type : {"application/msgpack", "application/cbor"}) {
    CAPTURE(type);
    std::string bytes;
    OrderCodec::encode(type, order, bytes);
    auto model = micro::codec_for(type).decode(bytes);
    CHECK(model["orderId"] == "A-17");
    CHECK(OrderCodec::decode(type, bytes).SerializeAsString() == order.SerializeAsString());
  }
}

TEST_CASE("bytes that are not the message are refused with what and where") {
  // A length-delimited field 1 claiming 5 bytes with 2 left.
  CHECK(what_of([] {
          OrderCodec::decode("application/protobuf", std::string("\x0a\x05"
                                                                 "ab"));
        }) == "4 bytes of application/protobuf are not a valid shop.Order");
  std::string unknown = what_of([] { OrderCodec::decode("application/json", R"({"bogus":1})"); });
  CHECK(unknown.starts_with("application/json is not a valid shop.Order: "));
  CHECK(unknown.find("bogus") != std::string::npos);
  std::string wrong_type =
      what_of([] { OrderCodec::decode("application/json", R"({"items":"tea"})"); });
  CHECK(wrong_type.starts_with("application/json is not a valid shop.Order: "));
  CHECK(what_of([] {
          OrderCodec::decode("application/json", "{\"orderId\":");
        }).starts_with("application/json is not a valid shop.Order: "));
  // Malformed CBOR is the codec's own 400.
  CHECK(
      what_of([] { OrderCodec::decode("application/cbor", "\xff\xff"); }).starts_with("micro 400"));
}

TEST_CASE("a message's schema comes from its descriptor, keyed by JSON names") {
  micro::Value schema = micro::schema_of<shop::Order>();
  CHECK(schema.name == "Order");
  CHECK(schema.type == "object");
  REQUIRE(schema.values.size() == 8);
  CHECK(schema.values[0].name == "orderId");
  CHECK(schema.values[0].type == "string");
  const micro::Value* items = field(schema, "items");
  REQUIRE(items);
  CHECK(items->type == "array");
  CHECK(items->name == "items");
  REQUIRE(items->values.size() == 1);
  CHECK(items->values[0].name == "Item");
  REQUIRE(items->values[0].values.size() == 2);
  CHECK(items->values[0].values[1].name == "quantity");
  CHECK(items->values[0].values[1].type == "integer");
  const micro::Value* discounts = field(schema, "discounts");
  REQUIRE(discounts);
  CHECK(discounts->type == "object");
  REQUIRE(discounts->values.size() == 1);
  CHECK(discounts->values[0].name == "*");
  CHECK(discounts->values[0].type == "integer");
  CHECK(field(schema, "priority")->type == "string");
  CHECK(field(schema, "note")->type == "string");
  CHECK(field(schema, "placedAt")->type == "string");  // RFC 3339 text
  CHECK(field(schema, "gift")->type == "boolean");
  // Depth bounds it as for other types.
  CHECK(micro::schema_of<shop::Order>(0).values.empty());
}

namespace {

struct Fixture {
  micro::Runtime runtime{2};
  micro::PluginLoader& loader = micro::PluginLoader::instance();
  std::shared_ptr<micro::Registry> registry =
      loader.create<micro::Registry>("memory", "", {}, runtime.executor());
  std::shared_ptr<micro::Transport> transport =
      loader.create<micro::Transport>("tcp", "", {}, runtime.executor());
  std::shared_ptr<micro::Selector> selector =
      loader.create<micro::Selector>("roundrobin", "", {}, runtime.executor());
  std::shared_ptr<micro::RegistryCache> cache =
      std::make_shared<micro::RegistryCache>(registry, runtime.blocking_executor());
  std::unique_ptr<micro::Server> server;

  Fixture() {
    micro::ServerOptions options;
    options.name = "shop";
    options.executor = runtime.executor();
    server = std::make_unique<micro::Server>(options, transport, registry, nullptr,
                                             micro::WrapperChains{});
    server->handle("Shop.Place", [](micro::Context&, const shop::Order& order) {
      if (order.order_id().empty())
        throw micro::Exception(micro::bad_request("shop", "an order needs an id"));
      shop::Receipt receipt;
      receipt.set_order_id(order.order_id());
      receipt.set_item_count(order.items_size());
      std::int64_t total = order.total_cents();
      for (const auto& [name, cents] : order.discounts()) total -= cents;
      receipt.set_total_cents(total);
      return receipt;
    });
    // Bidirectional: each item in, a running receipt out.
    server->handle_stream(
        "Shop.Basket",
        [](micro::Context&,
           micro::ServerStream<shop::Item, shop::Receipt> stream) -> boost::asio::awaitable<void> {
          shop::Receipt receipt;
          while (auto item = co_await stream.read(boost::asio::use_awaitable)) {
            receipt.set_item_count(receipt.item_count() + item->quantity());
            auto error = co_await stream.write(receipt, boost::asio::use_awaitable);
            if (error) co_return;
          }
        });
    server->start();
  }
  ~Fixture() {
    server->stop();
    transport->close();
  }

  micro::Client client(std::string content_type) {
    micro::ClientOptions options;
    options.content_type = std::move(content_type);
    return micro::Client(options, transport, cache, selector, nullptr, micro::WrapperChains{},
                         runtime.executor());
  }
};

}  // namespace

TEST_CASE("typed protobuf handlers, calls and streams over tcp, in every content type") {
  Fixture fixture;
  for (std::string type : {"application/protobuf", "application/json", "application/cbor"}) {
    CAPTURE(type);
    auto client = fixture.client(type);
    shop::Order order = sample_order();
    auto receipt = client.call<shop::Receipt>("shop", "Shop.Place", order);
    CHECK(receipt.order_id() == "A-17");
    CHECK(receipt.item_count() == 2);
    CHECK(receipt.total_cents() == 1250 - 9007199254740993);

    try {
      client.call<shop::Receipt>("shop", "Shop.Place", shop::Order{});
      FAIL("an order without an id was taken");
    } catch (const micro::Exception& e) {
      CHECK(e.error().code == 400);
      CHECK(e.error().detail == "an order needs an id");
    }

    auto basket = client.open_stream<shop::Item, shop::Receipt>("shop", "Shop.Basket");
    int expected = 0;
    for (int quantity : {2, 5, 1}) {
      shop::Item item;
      item.set_sku("s" + std::to_string(quantity));
      item.set_quantity(quantity);
      basket.send(item);
      expected += quantity;
      auto running = basket.receive();
      REQUIRE(running);
      CHECK(running->item_count() == expected);
    }
    basket.close_send();
    CHECK_FALSE(basket.receive());
    CHECK_FALSE(basket.error());
  }
  // The endpoint is registered with the messages' schemas.
  for (const auto& endpoint : fixture.server->registration().endpoints) {
    if (endpoint.name != "Shop.Place") continue;
    CHECK(endpoint.request.name == "Order");
    CHECK(endpoint.response.name == "Receipt");
  }
}

TEST_CASE("raw callers: protobuf answers say so; malformed bytes get 400 naming the endpoint") {
  Fixture fixture;
  auto client = fixture.client("application/protobuf");
  micro::Request request;
  request.service = "shop";
  request.endpoint = "Shop.Place";
  request.content_type = "application/grpc+proto";
  request.body = sample_order().SerializeAsString();
  micro::Response response = client.call(request);
  CHECK(response.content_type == "application/protobuf");
  shop::Receipt receipt;
  REQUIRE(receipt.ParseFromString(response.body));
  CHECK(receipt.order_id() == "A-17");

  request.body = std::string(
      "\x0a\x05"
      "ab");
  try {
    client.call(request);
    FAIL("malformed protobuf was taken");
  } catch (const micro::Exception& e) {
    CHECK(e.error().code == 400);
    CHECK(e.error().detail ==
          "cannot read the request of Shop.Place: 4 bytes of application/grpc+proto are not a "
          "valid shop.Order");
  }

  // A JSON caller (curl through `micro api`, a Go-Micro JSON client) reaches the same handler.
  request.content_type = "application/json";
  request.body = R"({"orderId":"J-1","items":[{"sku":"tea","quantity":2}],"totalCents":"300"})";
  response = client.call(request);
  CHECK(response.content_type == "application/json");
  auto answer = nlohmann::json::parse(response.body);
  CHECK(answer["orderId"] == "J-1");
  CHECK(answer["itemCount"] == 1);
  CHECK(answer["totalCents"] == "300");
  request.body = R"({"orderId":"J-2","colour":"red"})";
  try {
    client.call(request);
    FAIL("an unknown JSON field was taken");
  } catch (const micro::Exception& e) {
    CHECK(e.error().code == 400);
    CHECK(e.error().detail.starts_with(
        "cannot read the request of Shop.Place: application/json is not a valid shop.Order: "));
    CHECK(e.error().detail.find("colour") != std::string::npos);
  }
}
