// Unit tests of the small core pieces: Error JSON, Metadata, Context deadlines, codecs and
// wrapper chain order.
#include <doctest/doctest.h>

#include <micro/codec.hpp>
#include <micro/context.hpp>
#include <micro/error.hpp>
#include <micro/wrapper.hpp>

#include <nlohmann/json.hpp>

using namespace std::chrono_literals;

TEST_CASE("Error JSON is Go-Micro's") {
  micro::Error error("go.micro.srv.greeter", micro::ErrorCode::timeout, "too slow");
  CHECK(error.status == "Request Timeout");
  auto json = nlohmann::json::parse(error.to_json());
  CHECK(json == nlohmann::json{{"id", "go.micro.srv.greeter"},
                               {"code", 408},
                               {"detail", "too slow"},
                               {"status", "Request Timeout"}});
  CHECK(micro::Error::from_json(error.to_json()) == error);
  CHECK(error.message() == "go.micro.srv.greeter: 408 Request Timeout: too slow");
}

TEST_CASE("Error from a Go peer, and from text that is not an error") {
  auto error = micro::Error::from_json(
      R"({"id":"go.micro.client","code":500,"detail":"service greeter: not found","status":"Internal Server Error"})");
  CHECK(error.code == 500);
  CHECK(error.detail == "service greeter: not found");
  // Not JSON: kept whole as the detail of a 500, nothing lost.
  auto plain = micro::Error::from_json("upstream exploded {");
  CHECK(plain.code == 500);
  CHECK(plain.detail == "upstream exploded {");
  auto other_json = micro::Error::from_json("[1,2]");
  CHECK(other_json.code == 500);
  CHECK(other_json.detail == "[1,2]");
}

TEST_CASE("Error JSON whose code is no int32 is kept whole as the detail (found by fuzzing)") {
  // 1e20 converted to int was undefined behaviour (UBSan, test/fuzz/error_json); a code past
  // int32 wrapped around. Neither is a Go-Micro error: the text is the detail of a 500.
  for (const char* text :
       {R"({"id":"x","code":99999999999999999999,"detail":null})",
        R"({"id":"x","code":1e20,"detail":"d"})", R"({"id":"x","code":4294967704,"detail":"d"})",
        R"({"id":"x","code":-2147483649,"detail":"d"})",
        R"({"id":"x","code":408.5,"detail":"d"})"}) {
    CAPTURE(text);
    auto error = micro::Error::from_json(text);
    CHECK(error.code == 500);
    CHECK(error.detail == text);
  }
  CHECK(micro::Error::from_json(R"({"code":-2147483648})").code == -2147483648);
  CHECK(micro::Error::from_json(R"({"code":2147483647})").code == 2147483647);
}

TEST_CASE("Error JSON of a detail that is no UTF-8 (found by fuzzing)") {
  // A peer's non-JSON text becomes the detail as it is; to_json() threw type_error 316 on it.
  auto error = micro::Error::from_json("\xff\xfe not utf-8");
  CHECK(error.detail == "\xff\xfe not utf-8");
  CHECK(error.to_json() ==
        "{\"code\":500,\"detail\":\"\xef\xbf\xbd\xef\xbf\xbd not utf-8\",\"id\":\"\","
        "\"status\":\"Internal Server Error\"}");
  CHECK(micro::Error::from_json(error.to_json()).detail == "\xef\xbf\xbd\xef\xbf\xbd not utf-8");
}

TEST_CASE("Metadata matches keys case-insensitively and keeps their case") {
  micro::Metadata metadata;
  metadata.set("Traceparent", "00-abc");
  REQUIRE(metadata.find("traceparent") != nullptr);
  CHECK(*metadata.find("TRACEPARENT") == "00-abc");
  metadata.set("traceparent", "00-def");
  CHECK(metadata.size() == 1);
  CHECK(metadata.begin()->first == "Traceparent");
  CHECK(metadata.get("TraceParent") == "00-def");
  CHECK(metadata.get("missing", "fallback") == "fallback");
  CHECK(metadata.erase("TRACEPARENT"));
  CHECK(metadata.empty());
  CHECK_FALSE(micro::iequals("abc", "abd"));
  CHECK_FALSE(micro::iequals("abc", "ab"));
}

TEST_CASE("Context deadline only tightens; cancellation is shared by copies") {
  micro::Context context;
  CHECK_FALSE(context.has_deadline());
  CHECK_FALSE(context.expired());
  context.set_timeout(10s);
  auto first = context.deadline();
  context.set_timeout(1h);
  CHECK(context.deadline() == first);
  context.set_timeout(-1ms);
  CHECK(context.expired());
  CHECK(context.remaining() == micro::Context::Clock::duration::zero());

  micro::Context parent;
  int called = 0;
  parent.cancellation()->on_cancel([&] { ++called; });
  micro::Context copy = parent;
  copy.cancel();
  CHECK(parent.cancelled());
  CHECK(called == 1);
  copy.cancel();
  CHECK(called == 1);
}

TEST_CASE("codecs round-trip the same value") {
  nlohmann::json value{{"name", "World"}, {"count", 3}, {"tags", {"a", "b"}}};
  for (std::string_view type : {"application/json", "application/msgpack", "application/cbor",
                                "application/json; charset=utf-8", "APPLICATION/X-MSGPACK"}) {
    CAPTURE(type);
    const micro::Codec& codec = micro::codec_for(type);
    std::string bytes;
    codec.encode(value, bytes);
    CHECK(codec.decode(bytes) == value);
  }
  const micro::Codec& raw = micro::codec_for("application/octet-stream");
  std::string bytes;
  raw.encode("\x01\x02 raw", bytes);
  CHECK(bytes == "\x01\x02 raw");
  CHECK(raw.decode(bytes).get_binary().size() == bytes.size());
}

TEST_CASE("codecs refuse bad input with a clear error") {
  CHECK(micro::find_codec("text/plain") == nullptr);
  try {
    micro::codec_for("text/plain");
    FAIL("expected an exception");
  } catch (const micro::Exception& e) {
    CHECK(e.error().code == 400);
    CHECK(e.error().detail.starts_with("unsupported content type 'text/plain'; known: "));
  }
  try {
    micro::codec_for("application/json").decode("{\"name\": ");
    FAIL("expected an exception");
  } catch (const micro::Exception& e) {
    CHECK(e.error().code == 400);
    CHECK(e.error().detail.starts_with("cannot decode application/json body: "));
  }
  CHECK_THROWS_AS(micro::codec_for("application/cbor").decode("\xff\xff"), micro::Exception);
  std::string out;
  CHECK_THROWS_AS(micro::codec_for("application/octet-stream").encode(nlohmann::json{1, 2}, out),
                  micro::Exception);
}

TEST_CASE("wrapper chains run the first configured outermost") {
  std::vector<std::string> order;
  auto named = [&order](std::string name) {
    micro::WrapperSet set;
    set.handler = [&order, name](micro::HandlerFunction next) -> micro::HandlerFunction {
      return
          [&order, name, next](const micro::RequestPtr& request, micro::ResponseHandler respond) {
            order.push_back(name + " in");
            next(request, [&order, name, respond](micro::Response&& response) {
              order.push_back(name + " out");
              respond(std::move(response));
            });
          };
    };
    set.publish = [&order, name](micro::PublishFunction next) -> micro::PublishFunction {
      return [&order, name, next](micro::Context& context, micro::Message& message) {
        order.push_back(name + " publish");
        next(context, message);
      };
    };
    return set;
  };
  micro::WrapperChains chains;
  chains.add(named("a"));
  chains.add(named("b"));
  chains.add(micro::WrapperSet{});  // contributes nothing, changes nothing

  auto handler =
      chains.wrap_handler([&order](const micro::RequestPtr&, micro::ResponseHandler respond) {
        order.push_back("handler");
        respond(micro::Response{});
      });
  bool answered = false;
  handler(std::make_shared<micro::Request>(), [&](micro::Response&&) { answered = true; });
  CHECK(answered);
  CHECK(order == std::vector<std::string>{"a in", "b in", "handler", "b out", "a out"});

  order.clear();
  auto publish = chains.wrap_publish(
      [&order](micro::Context&, micro::Message&) { order.push_back("broker"); });
  micro::Context context;
  micro::Message message;
  publish(context, message);
  CHECK(order == std::vector<std::string>{"a publish", "b publish", "broker"});
}
