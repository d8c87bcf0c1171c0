// W3C Trace Context and Baggage: every parsing rule (valid and malformed inputs with their
// exact error text), formatting, inject/extract through Metadata, ids, and the no-op tracer
// (one shared span, no allocation) with the global tracer slot.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <string>

#include <micro/trace.hpp>

#include "support/allocation_counter.hpp"  // one per program: this file

// Counts every operator new of this program, to prove the no-op path allocates nothing.
using test_support::allocations;

using micro::trace::Baggage;
using micro::trace::SpanContext;

namespace {

constexpr const char* trace_hex = "0af7651916cd43dd8448eb211c80319c";
constexpr const char* span_hex = "b7ad6b7169203331";
const std::string valid_traceparent = std::string("00-") + trace_hex + "-" + span_hex + "-01";

// Parses a value that must be invalid, and returns the error text.
std::string traceparent_error(std::string_view value) {
  std::string error;
  auto context = micro::trace::parse_traceparent(value, &error);
  CHECK_MESSAGE(!context, "accepted: ", std::string(value));
  CHECK_MESSAGE(!error.empty(), "no error for: ", std::string(value));
  return error;
}

std::string tracestate_error(std::string_view value) {
  std::string error;
  std::string normalized = micro::trace::normalize_tracestate(value, &error);
  CHECK_MESSAGE(normalized.empty(), "accepted: ", std::string(value));
  return error;
}

std::string baggage_error(std::string_view value) {
  std::string error;
  Baggage baggage = micro::trace::parse_baggage(value, &error);
  CHECK_MESSAGE(baggage.empty(), "accepted: ", std::string(value));
  return error;
}

// "k0=v,k1=v,…" with `count` members.
std::string members(int count, const std::string& value = "v") {
  std::string list;
  for (int i = 0; i < count; ++i) list += (i ? "," : "") + ("k" + std::to_string(i)) + "=" + value;
  return list;
}

// A tracer that counts starts and hands out a span it was given: enough to see
// set_tracer/tracer() swap implementations.
class CountingTracer : public micro::trace::Tracer {
 public:
  explicit CountingTracer(std::shared_ptr<micro::trace::Span> span) : span_(std::move(span)) {}
  std::shared_ptr<micro::trace::Span> start_span(std::string_view, const micro::Context&,
                                                 const micro::trace::StartOptions&) override {
    ++started;
    return span_;
  }
  bool enabled() const noexcept override { return true; }
  int started = 0;

 private:
  std::shared_ptr<micro::trace::Span> span_;
};

}  // namespace

TEST_CASE("trace and span ids: lowercase hex, all zeros invalid") {
  auto trace_id = micro::trace::TraceId::from_hex(trace_hex);
  REQUIRE(trace_id);
  CHECK(trace_id->valid());
  CHECK(trace_id->to_hex() == trace_hex);
  CHECK(trace_id->bytes[0] == 0x0a);
  CHECK(trace_id->bytes[15] == 0x9c);
  auto span_id = micro::trace::SpanId::from_hex(span_hex);
  REQUIRE(span_id);
  CHECK(span_id->to_hex() == span_hex);

  CHECK_FALSE(micro::trace::TraceId::from_hex("0AF7651916CD43DD8448EB211C80319C"));
  CHECK_FALSE(micro::trace::TraceId::from_hex("0af7651916cd43dd8448eb211c80319"));
  CHECK_FALSE(micro::trace::SpanId::from_hex("b7ad6b716920333g"));
  CHECK_FALSE(micro::trace::SpanId::from_hex(""));
  auto zero = micro::trace::SpanId::from_hex("0000000000000000");
  REQUIRE(zero);
  CHECK_FALSE(zero->valid());
  CHECK_FALSE(micro::trace::TraceId{}.valid());
  CHECK(micro::trace::TraceId{}.to_hex() == std::string(32, '0'));
}

TEST_CASE("traceparent: valid values") {
  SUBCASE("version 00, sampled") {
    auto context = micro::trace::parse_traceparent(valid_traceparent);
    REQUIRE(context);
    CHECK(context->trace_id.to_hex() == trace_hex);
    CHECK(context->span_id.to_hex() == span_hex);
    CHECK(context->flags == 0x01);
    CHECK(context->sampled());
    CHECK_FALSE(context->remote);
    CHECK(micro::trace::format_traceparent(*context) == valid_traceparent);
  }
  SUBCASE("not sampled") {
    auto context =
        micro::trace::parse_traceparent(std::string("00-") + trace_hex + "-" + span_hex + "-00");
    REQUIRE(context);
    CHECK_FALSE(context->sampled());
  }
  SUBCASE("the level 2 random flag is kept and written back") {
    std::string value = std::string("00-") + trace_hex + "-" + span_hex + "-03";
    auto context = micro::trace::parse_traceparent(value);
    REQUIRE(context);
    CHECK(context->flags == (micro::trace::flag_sampled | micro::trace::flag_random));
    CHECK(micro::trace::format_traceparent(*context) == value);
  }
  SUBCASE("unknown flags are kept when read but written as zero") {
    auto context =
        micro::trace::parse_traceparent(std::string("00-") + trace_hex + "-" + span_hex + "-ff");
    REQUIRE(context);
    CHECK(context->flags == 0xff);
    CHECK(micro::trace::format_traceparent(*context) ==
          std::string("00-") + trace_hex + "-" + span_hex + "-03");
  }
  SUBCASE("a higher version is read at the fixed offsets, with or without more fields") {
    auto exact =
        micro::trace::parse_traceparent(std::string("01-") + trace_hex + "-" + span_hex + "-01");
    REQUIRE(exact);
    CHECK(exact->trace_id.to_hex() == trace_hex);
    auto extended = micro::trace::parse_traceparent(std::string("cc-") + trace_hex + "-" +
                                                    span_hex + "-01-what-the-future-holds");
    REQUIRE(extended);
    CHECK(extended->span_id.to_hex() == span_hex);
    CHECK(extended->sampled());
    // Written back as version 00, the only one we speak.
    CHECK(micro::trace::format_traceparent(*extended) == valid_traceparent);
  }
}

TEST_CASE("traceparent: malformed values are refused with the offset of the fault") {
  const std::string tail = std::string(trace_hex) + "-" + span_hex + "-01";
  CHECK(traceparent_error("") == "traceparent: too short: 0 characters, at least 55 expected");
  CHECK(traceparent_error("0") == "traceparent: too short: 1 characters, at least 55 expected");
  CHECK(traceparent_error(valid_traceparent.substr(0, 54)) ==
        "traceparent: too short: 54 characters, at least 55 expected");
  CHECK(traceparent_error("ff-" + tail) == "traceparent: version ff at offset 0 is invalid");
  CHECK(traceparent_error("0G-" + tail) ==
        "traceparent: invalid character 'G' at offset 1 in the version (lowercase hex expected)");
  CHECK(traceparent_error("0A-" + tail) ==
        "traceparent: invalid character 'A' at offset 1 in the version (lowercase hex expected)");
  CHECK(traceparent_error(" 00-" + tail) ==
        "traceparent: invalid character ' ' at offset 0 in the version (lowercase hex expected)");
  CHECK(traceparent_error(valid_traceparent + "-extra") ==
        "traceparent: version 00 must be exactly 55 characters, got 61 (unexpected data at "
        "offset 55)");
  CHECK(traceparent_error(valid_traceparent + " ") ==
        "traceparent: version 00 must be exactly 55 characters, got 56 (unexpected data at "
        "offset 55)");
  CHECK(traceparent_error("01-" + tail + "x") ==
        "traceparent: expected '-' or the end at offset 55 after a version 01 value, found 'x'");
  CHECK(traceparent_error("00_" + tail) == "traceparent: expected '-' at offset 2, found '_'");
  CHECK(traceparent_error(std::string("00-") + trace_hex + "_" + span_hex + "-01") ==
        "traceparent: expected '-' at offset 35, found '_'");
  CHECK(traceparent_error(std::string("00-") + trace_hex + "-" + span_hex + ".01") ==
        "traceparent: expected '-' at offset 52, found '.'");
  CHECK(traceparent_error("00-0AF7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") ==
        "traceparent: invalid character 'A' at offset 4 in the trace id (lowercase hex expected)");
  CHECK(traceparent_error("00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01") ==
        "traceparent: invalid character 'g' at offset 34 in the trace id (lowercase hex "
        "expected)");
  CHECK(traceparent_error(std::string("00-0af7651916cd43dd8448eb211c80319\x01-") + span_hex +
                          "-01") ==
        "traceparent: invalid character '\\x01' at offset 34 in the trace id (lowercase hex "
        "expected)");
  CHECK(traceparent_error(std::string("00-") + trace_hex + "-B7ad6b7169203331-01") ==
        "traceparent: invalid character 'B' at offset 36 in the parent id (lowercase hex "
        "expected)");
  CHECK(traceparent_error(std::string("00-") + trace_hex + "-" + span_hex + "-0A") ==
        "traceparent: invalid character 'A' at offset 54 in the flags (lowercase hex expected)");
  CHECK(traceparent_error(std::string("00-") + trace_hex + "-" + span_hex + "-+1") ==
        "traceparent: invalid character '+' at offset 53 in the flags (lowercase hex expected)");
  CHECK(traceparent_error("00-00000000000000000000000000000000-b7ad6b7169203331-01") ==
        "traceparent: the trace id at offset 3 is all zeros");
  CHECK(traceparent_error(std::string("00-") + trace_hex + "-0000000000000000-01") ==
        "traceparent: the parent id at offset 36 is all zeros");
  // Without an error sink it just says no.
  CHECK_FALSE(micro::trace::parse_traceparent("garbage"));
}

TEST_CASE("tracestate: valid lists are normalised") {
  std::string error;
  CHECK(micro::trace::normalize_tracestate("", &error) == "");
  CHECK(error.empty());
  CHECK(micro::trace::normalize_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE") ==
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
  // OWS around members is trimmed; empty members are skipped.
  CHECK(micro::trace::normalize_tracestate(" a=1 ,\tb=2\t") == "a=1,b=2");
  CHECK(micro::trace::normalize_tracestate("a=1,,b=2, ,") == "a=1,b=2");
  CHECK(micro::trace::normalize_tracestate(",") == "");
  // Spaces inside a value are allowed; every key character class.
  CHECK(micro::trace::normalize_tracestate("a_-*/9=x y") == "a_-*/9=x y");
  // Multi-tenant keys: the tenant may start with a digit, the system may not.
  CHECK(micro::trace::normalize_tracestate("0tenant@vendor=1,t@s-*/_9=2") ==
        "0tenant@vendor=1,t@s-*/_9=2");
  // Exactly 32 members is fine; the longest key and value are fine.
  CHECK(micro::trace::normalize_tracestate(members(32)) == members(32));
  std::string long_member = "a" + std::string(255, 'b') + "=" + std::string(256, 'v');
  CHECK(micro::trace::normalize_tracestate(long_member) == long_member);
  // Several tracestate headers are combined with ',' before normalising.
  CHECK(micro::trace::normalize_tracestate(std::string("a=1") + "," + "b=2") == "a=1,b=2");
}

TEST_CASE("tracestate: a malformed list is dropped entirely, saying why and where") {
  CHECK(tracestate_error(members(33)) ==
        "tracestate: more than 32 list-members (member 33 at offset 182)");
  CHECK(tracestate_error("a=1,b=2,a=3") == "tracestate: duplicate key 'a' at offset 8");
  CHECK(tracestate_error("a=1,b=2" + std::string(",") + "a=1") ==
        "tracestate: duplicate key 'a' at offset 8");
  CHECK(tracestate_error("abc") == "tracestate: list-member without '=' at offset 0");
  CHECK(tracestate_error("a=1, xyz") == "tracestate: list-member without '=' at offset 5");
  CHECK(tracestate_error("=1") == "tracestate: empty key at offset 0");
  CHECK(tracestate_error("Abc=1") ==
        "tracestate: invalid character 'A' at offset 0 (a key starts with a lowercase letter) "
        "in key 'Abc'");
  CHECK(tracestate_error("a=1,1abc=1") ==
        "tracestate: invalid character '1' at offset 4 (a key starts with a lowercase letter) "
        "in key '1abc'");
  CHECK(tracestate_error("aBc=1") ==
        "tracestate: invalid character 'B' at offset 1 (expected a-z 0-9 _ - * /) in key 'aBc'");
  CHECK(tracestate_error("a c=1") ==
        "tracestate: invalid character ' ' at offset 1 (expected a-z 0-9 _ - * /) in key 'a c'");
  CHECK(tracestate_error("a" + std::string(256, 'b') + "=1") ==
        "tracestate: too long at offset 0 (257 characters, at most 256) in key 'a" +
            std::string(256, 'b') + "'");
  CHECK(tracestate_error("@vendor=1") ==
        "tracestate: empty tenant id before '@' at offset 0 in key '@vendor'");
  CHECK(tracestate_error("tenant@=1") ==
        "tracestate: empty system id after '@' at offset 7 in key 'tenant@'");
  CHECK(tracestate_error("tenant@Vendor=1") ==
        "tracestate: invalid character 'V' at offset 7 (a system id starts with a lowercase "
        "letter) in key 'tenant@Vendor'");
  CHECK(tracestate_error("tenant@9vendor=1") ==
        "tracestate: invalid character '9' at offset 7 (a system id starts with a lowercase "
        "letter) in key 'tenant@9vendor'");
  CHECK(tracestate_error("_tenant@vendor=1") ==
        "tracestate: invalid character '_' at offset 0 (a tenant id starts with a lowercase "
        "letter or digit) in key '_tenant@vendor'");
  CHECK(tracestate_error("t@abcdefghijklmno=1") ==
        "tracestate: system id too long at offset 2 (15 characters, at most 14) in key "
        "'t@abcdefghijklmno'");
  CHECK(tracestate_error("t@v@w=1") ==
        "tracestate: invalid character '@' at offset 3 (expected a-z 0-9 _ - * /) in key "
        "'t@v@w'");
  CHECK(tracestate_error("abc=") == "tracestate: value of key 'abc' is empty at offset 4");
  CHECK(tracestate_error("abc=a=b") ==
        "tracestate: value of key 'abc' has an invalid character '=' at offset 5");
  CHECK(tracestate_error("abc=a\x01z") ==
        "tracestate: value of key 'abc' has an invalid character '\\x01' at offset 5");
  CHECK(tracestate_error("abc=\xc3\xa4") ==
        "tracestate: value of key 'abc' has an invalid character '\\xc3' at offset 4");
  CHECK(tracestate_error("a=" + std::string(257, 'v')) ==
        "tracestate: value of key 'a' is too long at offset 2 (257 characters, at most 256)");
}

TEST_CASE("baggage: parse, percent-decoding, properties dropped") {
  std::string error;
  Baggage baggage = micro::trace::parse_baggage(
      "userId=alice, serverNode = DF%2028 ,isProduction=false;prop1;prop2=x", &error);
  CHECK(error.empty());
  CHECK(baggage ==
        Baggage{{"userId", "alice"}, {"serverNode", "DF 28"}, {"isProduction", "false"}});
  CHECK(micro::trace::parse_baggage("k=%C3%a4") == Baggage{{"k", "\xc3\xa4"}});
  CHECK(micro::trace::parse_baggage("k=") == Baggage{{"k", ""}});
  CHECK(micro::trace::parse_baggage("a=1,,b=2") == Baggage{{"a", "1"}, {"b", "2"}});
  // A repeated key: the last value wins, in the first one's place.
  CHECK(micro::trace::parse_baggage("a=1,b=2,a=3") == Baggage{{"a", "3"}, {"b", "2"}});
  CHECK(micro::trace::parse_baggage("").empty());
}

TEST_CASE("baggage: malformed members drop the header with the offset") {
  CHECK(baggage_error("key1") == "baggage: list-member without '=' at offset 0");
  CHECK(baggage_error("a=1, key2;p=1") == "baggage: list-member without '=' at offset 5");
  CHECK(baggage_error("=v") == "baggage: empty key at offset 0");
  CHECK(baggage_error("a=1,k ey=v") ==
        "baggage: invalid character ' ' at offset 5 in key 'k ey' (a key is an HTTP token)");
  CHECK(baggage_error("k(=v") ==
        "baggage: invalid character '(' at offset 1 in key 'k(' (a key is an HTTP token)");
  CHECK(baggage_error("k=v\"x") ==
        "baggage: invalid character '\"' at offset 3 in the value of key 'k'");
  CHECK(baggage_error("k=a b") ==
        "baggage: invalid character ' ' at offset 3 in the value of key 'k'");
  CHECK(baggage_error("k=a\\b") ==
        "baggage: invalid character '\\' at offset 3 in the value of key 'k'");
  CHECK(baggage_error("k=%zz") ==
        "baggage: invalid percent-encoding at offset 2 in the value of key 'k' (expected %XX)");
  CHECK(baggage_error("k=ab%4") ==
        "baggage: invalid percent-encoding at offset 4 in the value of key 'k' (expected %XX)");
}

TEST_CASE("baggage: limits keep whole members only") {
  std::string error;
  Baggage kept = micro::trace::parse_baggage(members(65), &error);
  CHECK(kept.size() == 64);
  CHECK(kept.back().first == "k63");
  CHECK(error == "baggage: more than 64 list-members; dropped members from offset 374");

  // Two 5000-byte members: the second would end past 8192 bytes.
  std::string big = std::string("a=") + std::string(4998, 'x') + ",b=" + std::string(4998, 'y');
  error.clear();
  kept = micro::trace::parse_baggage(big, &error);
  REQUIRE(kept.size() == 1);
  CHECK(kept[0].first == "a");
  CHECK(error == "baggage: longer than 8192 bytes; dropped members from offset 5001");

  // Formatting honours the same limits.
  Baggage many;
  for (int i = 0; i < 70; ++i) many.push_back({"k" + std::to_string(i), "v"});
  CHECK(micro::trace::format_baggage(many) == members(64));
  CHECK(micro::trace::format_baggage(
            {{"a", std::string(4998, 'x')}, {"b", std::string(4998, 'y')}, {"c", "1"}}) ==
        "a=" + std::string(4998, 'x') + ",c=1");
}

TEST_CASE("baggage: format percent-encodes and round-trips") {
  Baggage baggage{{"user", "a b,c;d%e\"f\\g"}, {"city", "M\xc3\xbcnchen"}, {"plain", "x=y/z"}};
  std::string header = micro::trace::format_baggage(baggage);
  CHECK(header == "user=a%20b%2Cc%3Bd%25e%22f%5Cg,city=M%C3%BCnchen,plain=x=y/z");
  CHECK(micro::trace::parse_baggage(header) == baggage);
  // A key that is not an HTTP token cannot be written and is left out.
  CHECK(micro::trace::format_baggage({{"bad key", "1"}, {"ok", "2"}}) == "ok=2");
}

TEST_CASE("inject and extract through metadata, any key case") {
  SpanContext context;
  context.trace_id = *micro::trace::TraceId::from_hex(trace_hex);
  context.span_id = *micro::trace::SpanId::from_hex(span_hex);
  context.flags = micro::trace::flag_sampled | micro::trace::flag_random;
  context.trace_state = "congo=t61rcWkgMzE";

  micro::Metadata metadata;
  micro::trace::inject(context, metadata);
  CHECK(metadata.get("traceparent") == std::string("00-") + trace_hex + "-" + span_hex + "-03");
  CHECK(metadata.get("tracestate") == "congo=t61rcWkgMzE");
  auto extracted = micro::trace::extract(metadata);
  REQUIRE(extracted);
  CHECK(extracted->remote);
  extracted->remote = false;
  CHECK(*extracted == context);

  SUBCASE("a Go peer's Traceparent/Tracestate are found and replaced in place") {
    micro::Metadata from_go{{"Traceparent", valid_traceparent}, {"Tracestate", "go=1"}};
    auto parent = micro::trace::extract(from_go);
    REQUIRE(parent);
    CHECK(parent->remote);
    CHECK(parent->span_id.to_hex() == span_hex);
    CHECK(parent->trace_state == "go=1");
    CHECK(micro::trace::extract(micro::Metadata{{"TRACEPARENT", valid_traceparent}}));

    SpanContext child = *parent;
    child.span_id = *micro::trace::SpanId::from_hex("00f067aa0ba902b7");
    child.trace_state.clear();
    micro::trace::inject(child, from_go);
    CHECK(from_go.size() == 1);  // replaced, not duplicated; the stale tracestate is gone
    CHECK(from_go.begin()->first == "Traceparent");
    CHECK(from_go.get("traceparent") == std::string("00-") + trace_hex + "-00f067aa0ba902b7-01");
  }
  SUBCASE("an invalid traceparent gives nothing, and its tracestate is ignored") {
    micro::Metadata bad{{"traceparent", "ff-" + valid_traceparent.substr(3)},
                        {"tracestate", "a=1"}};
    CHECK_FALSE(micro::trace::extract(bad));
    CHECK_FALSE(micro::trace::extract(micro::Metadata{}));
    CHECK_FALSE(micro::trace::extract(micro::Metadata{{"tracestate", "a=1"}}));
  }
  SUBCASE("an invalid tracestate is dropped but the traceparent kept") {
    auto parent = micro::trace::extract(
        micro::Metadata{{"traceparent", valid_traceparent}, {"tracestate", "A=1"}});
    REQUIRE(parent);
    CHECK(parent->trace_state.empty());
  }
  SUBCASE("an invalid context is not injected") {
    micro::Metadata untouched{{"traceparent", valid_traceparent}};
    micro::trace::inject(SpanContext{}, untouched);
    CHECK(untouched.get("traceparent") == valid_traceparent);
  }
}

TEST_CASE("no-op tracer: one shared span, invalid context, no allocation") {
  micro::trace::set_tracer(nullptr);
  CHECK_FALSE(micro::trace::tracer().enabled());
  micro::Context context;
  auto first = micro::trace::start_span("warm up", context);
  REQUIRE(first);
  CHECK_FALSE(first->recording());
  CHECK_FALSE(first->context().valid());

  micro::trace::StartOptions options;
  options.kind = micro::trace::SpanKind::client;
  long before = allocations.load();
  for (int i = 0; i < 1000; ++i) {
    auto span = micro::trace::start_span("Database.Insert", context, options);
    span->set_attribute("db.system", std::int64_t{1});
    span->set_status(micro::trace::StatusCode::error, "ignored");
    span->end();
    CHECK(span.get() == first.get());
  }
  CHECK(allocations.load() == before);
}

TEST_CASE("set_tracer swaps the global tracer; null restores the no-op") {
  micro::trace::set_tracer(nullptr);
  micro::Context context;
  auto counting = std::make_shared<CountingTracer>(micro::trace::start_span("noop", context));
  micro::trace::set_tracer(counting);
  CHECK(&micro::trace::tracer() == counting.get());
  CHECK(micro::trace::tracer().enabled());
  CHECK(micro::trace::tracer().start_span("x", context));
  CHECK(counting->started == 1);

  // The slot keeps installed tracers alive even when the installer lets go.
  std::weak_ptr<CountingTracer> weak = counting;
  counting.reset();
  CHECK_FALSE(weak.expired());
  CHECK(&micro::trace::tracer() == weak.lock().get());

  micro::trace::set_tracer(nullptr);
  CHECK_FALSE(micro::trace::tracer().enabled());
  auto span = micro::trace::start_span("after", context);
  REQUIRE(span);
  CHECK_FALSE(span->context().valid());
}
