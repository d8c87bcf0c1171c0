// W3C Trace Context and Baggage: every parsing rule (valid and malformed inputs with their
// exact error text), a test case per rule of levels 1 and 2 as the W3C test suite checks it
// (HTTP header fields through extract_trace_context and inject_trace_context), formatting,
// inject/extract through Metadata, ids, and the no-op tracer (one shared span, no allocation)
// with the global tracer slot.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include <micro/http_tracing.hpp>
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
  CHECK(traceparent_error(".0-" + tail) ==
        "traceparent: invalid character '.' at offset 0 in the version (lowercase hex expected)");
  // Offsets count from the start of the value as received, OWS included.
  CHECK(traceparent_error(" \t0A-" + tail) ==
        "traceparent: invalid character 'A' at offset 3 in the version (lowercase hex expected)");
  CHECK(traceparent_error("  00-00000000000000000000000000000000-b7ad6b7169203331-01") ==
        "traceparent: the trace id at offset 5 is all zeros");
  CHECK(traceparent_error(valid_traceparent + "-extra") ==
        "traceparent: version 00 must be exactly 55 characters, got 61 (unexpected data at "
        "offset 55)");
  CHECK(traceparent_error(valid_traceparent + ".") ==
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
  // Exactly 32 members is fine; the longest key and the longest value are fine.
  CHECK(micro::trace::normalize_tracestate(members(32)) == members(32));
  std::string long_key = "a" + std::string(255, 'b') + "=1";
  CHECK(micro::trace::normalize_tracestate(long_key) == long_key);
  std::string long_value = "a=" + std::string(256, 'v');
  CHECK(micro::trace::normalize_tracestate(long_value) == long_value);
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

// ---- The rules of W3C Trace Context levels 1 and 2, as the W3C test suite (w3c/trace-context,
// test/test.py) checks them: request headers as they arrive over HTTP (any name case, fields
// repeated), through extract_trace_context, the function the HTTP server side uses. ----

namespace {

using micro::http::Fields;

const std::string suite_trace_id = "12345678901234567890123456789012";
const std::string suite_parent_id = "1234567890123456";
const std::string suite_traceparent = "00-" + suite_trace_id + "-" + suite_parent_id + "-01";

std::optional<SpanContext> from_headers(const Fields& headers) {
  return micro::http::extract_trace_context(headers);
}

// The trace id a service continues with `headers`, or "" when it must start a new trace.
std::string continued_trace_id(const std::string& traceparent) {
  auto context = from_headers({{"traceparent", traceparent}});
  return context ? context->trace_id.to_hex() : "";
}

// The tracestate passed on with a valid traceparent and these tracestate fields.
std::string propagated_tracestate(const std::vector<std::string>& tracestates) {
  Fields headers{{"traceparent", "00-" + suite_trace_id + "-" + suite_parent_id + "-00"}};
  for (const auto& value : tracestates) headers.push_back({"tracestate", value});
  auto context = from_headers(headers);
  REQUIRE(context);
  return context->trace_state;
}

}  // namespace

TEST_CASE("rule: traceparent and tracestate header names are matched in any case") {
  for (const char* name : {"traceparent", "TraceParent", "TrAcEpArEnT", "TRACEPARENT"}) {
    auto context = from_headers({{name, suite_traceparent}, {"TrAcEsTaTe", "foo=1"}});
    REQUIRE_MESSAGE(context, name);
    CHECK(context->trace_id.to_hex() == suite_trace_id);
    CHECK(context->trace_state == "foo=1");
  }
  CHECK(micro::trace::extract(micro::Metadata{{"TRACEPARENT", suite_traceparent}}));
}

TEST_CASE("rule: other header names are not traceparent or tracestate") {
  CHECK_FALSE(from_headers({{"trace-parent", suite_traceparent}}));
  CHECK_FALSE(from_headers({{"trace.parent", suite_traceparent}}));
  for (const char* name : {"trace-state", "trace.state"}) {
    auto context = from_headers({{"traceparent", suite_traceparent}, {name, "foo=1"}});
    REQUIRE(context);
    CHECK(context->trace_state.empty());
  }
}

TEST_CASE("rule: a traceparent sent twice is invalid and the trace restarts") {
  auto context = from_headers(
      {{"traceparent", "00-" + suite_trace_id + "-" + suite_parent_id + "-01"},
       {"traceparent", "00-12345678901234567890123456789011-" + suite_parent_id + "-01"},
       {"tracestate", "foo=1"}});
  CHECK_FALSE(context);
  // The same value twice is still two fields.
  CHECK_FALSE(
      from_headers({{"traceparent", suite_traceparent}, {"Traceparent", suite_traceparent}}));
}

TEST_CASE("rule: version 00 has exactly 55 characters") {
  CHECK(continued_trace_id(suite_traceparent) == suite_trace_id);
  CHECK(continued_trace_id(suite_traceparent + ".") == "");
  CHECK(continued_trace_id(suite_traceparent + "-what-the-future-will-be-like") == "");
}

TEST_CASE("rule: a higher version is read at version 00's offsets, more fields after a dash") {
  const std::string tail = suite_trace_id + "-" + suite_parent_id + "-01";
  CHECK(continued_trace_id("cc-" + tail) == suite_trace_id);
  CHECK(continued_trace_id("cc-" + tail + "-what-the-future-will-be-like") == suite_trace_id);
  CHECK(continued_trace_id("cc-" + tail + ".what-the-future-will-be-like") == "");
  // Shorter than 55 characters: not parsed.
  CHECK(continued_trace_id("cc-" + tail.substr(1)) == "");
  // And passed on as version 00, the highest version we know.
  auto context = from_headers({{"traceparent", "cc-" + tail + "-more"}});
  REQUIRE(context);
  CHECK(micro::trace::format_traceparent(*context) == suite_traceparent);
}

TEST_CASE("rule: version ff is invalid") {
  CHECK(continued_trace_id("ff-" + suite_trace_id + "-" + suite_parent_id + "-01") == "");
}

TEST_CASE("rule: the version is two lowercase hex digits") {
  const std::string tail = "-" + suite_trace_id + "-" + suite_parent_id + "-01";
  for (const char* version : {".0", "0.", "000", "0000", "0", "0A", "A0"})
    CHECK_MESSAGE(continued_trace_id(version + tail) == "", version);
}

TEST_CASE("rule: the trace id is 32 lowercase hex digits, not all zeros") {
  const std::string tail = "-" + suite_parent_id + "-01";
  CHECK(continued_trace_id("00-00000000000000000000000000000000" + tail) == "");
  CHECK(continued_trace_id("00-.2345678901234567890123456789012" + tail) == "");
  CHECK(continued_trace_id("00-1234567890123456789012345678901." + tail) == "");
  CHECK(continued_trace_id("00-123456789012345678901234567890123" + tail) == "");
  CHECK(continued_trace_id("00-1234567890123456789012345678901" + tail) == "");
  CHECK(continued_trace_id("00-ABCDEF7890123456789012345678901a" + tail) == "");
}

TEST_CASE("rule: the parent id is 16 lowercase hex digits, not all zeros") {
  const std::string head = "00-" + suite_trace_id + "-";
  CHECK(continued_trace_id(head + "0000000000000000-01") == "");
  CHECK(continued_trace_id(head + ".234567890123456-01") == "");
  CHECK(continued_trace_id(head + "123456789012345.-01") == "");
  CHECK(continued_trace_id(head + "12345678901234567-01") == "");
  CHECK(continued_trace_id(head + "123456789012345-01") == "");
  CHECK(continued_trace_id(head + "ABCDEF7890123456-01") == "");
}

TEST_CASE("rule: trace flags are two lowercase hex digits") {
  const std::string head = "00-" + suite_trace_id + "-" + suite_parent_id + "-";
  for (const char* flags : {".0", "0.", "001", "1", "0A"})
    CHECK_MESSAGE(continued_trace_id(head + flags) == "", flags);
}

TEST_CASE("rule: optional white space around traceparent is ignored") {
  for (const char* before : {"", " ", "\t", "\t "})
    for (const char* after : {"", " ", "\t", " \t"})
      CHECK(continued_trace_id(before + suite_traceparent + after) == suite_trace_id);
}

TEST_CASE("rule: sampled and random flags are read and passed on; other flags are sent as 0") {
  const std::string head = "00-" + suite_trace_id + "-" + suite_parent_id + "-";
  auto flags_of = [&](const char* flags) {
    auto context = from_headers({{"traceparent", head + flags}});
    REQUIRE(context);
    return micro::trace::format_traceparent(*context).substr(53);
  };
  CHECK(flags_of("00") == "00");
  CHECK(flags_of("01") == "01");
  CHECK(flags_of("02") == "02");  // level 2: random trace id, not sampled
  CHECK(flags_of("03") == "03");
  CHECK(flags_of("09") == "01");
  CHECK(flags_of("fe") == "02");
}

TEST_CASE("rule: without a valid traceparent the tracestate is not parsed") {
  CHECK_FALSE(from_headers({{"tracestate", "foo=1"}}));
  CHECK_FALSE(from_headers({{"tracestate", "foo=1,bar=2"}}));
  CHECK_FALSE(from_headers(
      {{"traceparent", "00-00000000000000000000000000000000-" + suite_parent_id + "-01"},
       {"tracestate", "foo=1"}}));
}

TEST_CASE("rule: an invalid tracestate does not affect the traceparent") {
  auto context = from_headers({{"traceparent", suite_traceparent}, {"tracestate", "FOO=1"}});
  REQUIRE(context);
  CHECK(context->trace_id.to_hex() == suite_trace_id);
  CHECK(context->trace_state.empty());
}

TEST_CASE("rule: a tracestate is passed on with its traceparent") {
  CHECK(propagated_tracestate({"foo=1,bar=2"}) == "foo=1,bar=2");
}

TEST_CASE("rule: empty tracestate fields are accepted and add nothing") {
  CHECK(propagated_tracestate({""}) == "");
  CHECK(propagated_tracestate({"foo=1", ""}) == "foo=1");
  CHECK(propagated_tracestate({"", "foo=1"}) == "foo=1");
}

TEST_CASE("rule: tracestate fields combine in the order they came") {
  CHECK(propagated_tracestate({"foo=1,bar=2", "rojo=1,congo=2", "baz=3"}) ==
        "foo=1,bar=2,rojo=1,congo=2,baz=3");
}

TEST_CASE("rule: a key present twice drops the tracestate") {
  CHECK(propagated_tracestate({"foo=1,foo=1"}) == "");
  CHECK(propagated_tracestate({"foo=1,foo=2"}) == "");
  CHECK(propagated_tracestate({"foo=1", "foo=1"}) == "");
  CHECK(propagated_tracestate({"foo=1", "foo=2"}) == "");
}

TEST_CASE("rule: every character the key and value grammars allow is kept") {
  std::string key;
  for (char c = 'a'; c <= 'z'; ++c) key += c;
  key += "0123456789_-*/";
  std::string value;  // 0x20-0x2b, 0x2d-0x3c, 0x3e-0x7e: printable but ',' and '='
  for (int c = 0x20; c <= 0x7e; ++c)
    if (c != ',' && c != '=') value += static_cast<char>(c);
  CHECK(propagated_tracestate({key + "=" + value}) == key + "=" + value);
  std::string tenant_key = key + "@a-z0-9_-*/";
  CHECK(propagated_tracestate({tenant_key + "=" + value}) == tenant_key + "=" + value);
  // A value's leading spaces are part of it; trailing ones are white space.
  CHECK(propagated_tracestate({"foo=  1  "}) == "foo=  1");
}

TEST_CASE("rule: white space around tracestate members is ignored") {
  CHECK(propagated_tracestate({"foo=1 \t , \t bar=2, \t baz=3"}) == "foo=1,bar=2,baz=3");
  CHECK(propagated_tracestate({"foo=1\t \t,\t \tbar=2,\t \tbaz=3"}) == "foo=1,bar=2,baz=3");
  for (const char* value : {" foo=1", "\tfoo=1", "foo=1 ", "foo=1\t", "\t foo=1 \t"})
    CHECK_MESSAGE(propagated_tracestate({value}) == "foo=1", value);
}

TEST_CASE("rule: a key with characters outside the grammar drops the tracestate") {
  for (const char* value : {"foo =1", "FOO=1", "foo.bar=1", "foo=1,Bar=2"})
    CHECK_MESSAGE(propagated_tracestate({value}) == "", value);
}

TEST_CASE("rule: a multi-tenant key is tenant@system, one @ with both sides") {
  for (const char* value :
       {"foo@=1,bar=2", "@foo=1,bar=2", "foo@@bar=1,bar=2", "foo@bar@baz=1,bar=2"})
    CHECK_MESSAGE(propagated_tracestate({value}) == "", value);
  CHECK(propagated_tracestate({"0tenant@vendor=1"}) == "0tenant@vendor=1");
}

TEST_CASE("rule: at most 32 tracestate members") {
  std::vector<std::string> fields{
      "bar01=01,bar02=02,bar03=03,bar04=04,bar05=05,bar06=06,bar07=07,bar08=08,bar09=09,bar10=10",
      "bar11=11,bar12=12,bar13=13,bar14=14,bar15=15,bar16=16,bar17=17,bar18=18,bar19=19,bar20=20",
      "bar21=21,bar22=22,bar23=23,bar24=24,bar25=25,bar26=26,bar27=27,bar28=28,bar29=29,bar30=30",
      "bar31=31,bar32=32"};
  std::string kept = propagated_tracestate(fields);
  CHECK(std::count(kept.begin(), kept.end(), '=') == 32);
  fields.back() += ",bar33=33";
  CHECK(propagated_tracestate(fields) == "");
}

TEST_CASE("rule: keys are at most 256 characters, tenant 241 and system 14") {
  CHECK(propagated_tracestate({"foo=1", std::string(256, 'z') + "=1"}) ==
        "foo=1," + std::string(256, 'z') + "=1");
  CHECK(propagated_tracestate({"foo=1", std::string(257, 'z') + "=1"}) == "");
  std::string longest_tenant_key = std::string(241, 't') + "@" + std::string(14, 'v');
  CHECK(propagated_tracestate({"foo=1", longest_tenant_key + "=1"}) ==
        "foo=1," + longest_tenant_key + "=1");
  CHECK(propagated_tracestate({"foo=1", std::string(242, 't') + "@v=1"}) == "");
  CHECK(propagated_tracestate({"foo=1", "t@" + std::string(15, 'v') + "=1"}) == "");
}

TEST_CASE("rule: values are 1 to 256 characters without ',' or '='") {
  CHECK(propagated_tracestate({"foo=bar=baz"}) == "");
  CHECK(propagated_tracestate({"foo=,bar=3"}) == "");
  CHECK(propagated_tracestate({"foo=" + std::string(256, 'v')}) == "foo=" + std::string(256, 'v'));
  CHECK(propagated_tracestate({"foo=" + std::string(257, 'v')}) == "");
}

TEST_CASE("rule: a tracestate over 512 characters loses whole members, big ones first") {
  // 120-character members: five are 604 characters, four fit (483).
  auto member = [](char key, std::size_t length) {
    return std::string(1, key) + "=" + std::string(length - 2, 'v');
  };
  std::string error;
  std::string five = member('a', 120) + "," + member('b', 120) + "," + member('c', 120) + "," +
                     member('d', 120) + "," + member('e', 120);
  CHECK(micro::trace::normalize_tracestate(five, &error) ==
        five.substr(0, 4 * 120 + 3));  // the right-most goes
  CHECK(error ==
        "tracestate: 604 characters, more than the 512 propagated; dropped the list-members 'e'");

  // Members over 128 characters go first, right to left, only as many as needed.
  std::string mixed = member('a', 250) + "," + member('b', 50) + "," + member('c', 250) + "," +
                      member('d', 50) + "," + member('e', 250);
  error.clear();
  CHECK(micro::trace::normalize_tracestate(mixed, &error) ==
        member('a', 250) + "," + member('b', 50) + "," + member('d', 50));
  CHECK(error ==
        "tracestate: 854 characters, more than the 512 propagated; dropped the "
        "list-members 'c', 'e'");

  // Exactly 512 stays whole; a single member over 512 cannot be passed on.
  std::string exactly = member('a', 256) + "," + member('b', 255);
  REQUIRE(exactly.size() == 512);
  error.clear();
  CHECK(micro::trace::normalize_tracestate(exactly, &error) == exactly);
  CHECK(error.empty());
  std::string widest = "a" + std::string(255, 'k') + "=" + std::string(256, 'v');
  CHECK(micro::trace::normalize_tracestate(widest) == "");

  // Through the headers too.
  CHECK(propagated_tracestate({member('a', 250), member('b', 250), member('c', 250)}) ==
        member('a', 250) + "," + member('b', 250));
}

TEST_CASE("rule: the context is injected into HTTP headers under lowercase names") {
  SpanContext context;
  context.trace_id = *micro::trace::TraceId::from_hex(trace_hex);
  context.span_id = *micro::trace::SpanId::from_hex(span_hex);
  context.flags = micro::trace::flag_sampled | micro::trace::flag_random;
  context.trace_state = "rojo=1";
  Fields headers{{"Traceparent", valid_traceparent}, {"TRACESTATE", "old=1"}, {"Accept", "*/*"}};
  micro::http::inject_trace_context(context, headers);
  CHECK(micro::http::find_field(headers, "accept") == "*/*");
  int traceparents = 0, tracestates = 0;
  for (const auto& field : headers) {
    if (micro::iequals(field.name, "traceparent")) {
      ++traceparents;
      CHECK(field.name == "traceparent");
      CHECK(field.value == std::string("00-") + trace_hex + "-" + span_hex + "-03");
    }
    if (micro::iequals(field.name, "tracestate")) {
      ++tracestates;
      CHECK(field.name == "tracestate");
      CHECK(field.value == "rojo=1");
    }
  }
  CHECK(traceparents == 1);
  CHECK(tracestates == 1);
  // No tracestate in the context: none is sent.
  context.trace_state.clear();
  micro::http::inject_trace_context(context, headers);
  CHECK(micro::http::find_field(headers, "tracestate") == "");
  CHECK(headers.size() == 2);
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
