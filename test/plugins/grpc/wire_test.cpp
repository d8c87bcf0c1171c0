// test/plugins/grpc/wire_test.cpp — the grpc transport's wire helpers on their own
// (plugins/grpc/wire.cpp compiled in), for the inputs the fuzz harness test/fuzz/grpc_wire found.
#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include <micro/context.hpp>

#include "plugins/grpc/wire.hpp"

TEST_CASE("a grpc-timeout past int64 nanoseconds saturates (found by fuzzing)") {
  // 9999999H * 3600e9 ns overflowed int64: undefined behaviour (UBSan).
  std::string problem;
  for (const char* text : {"9999999H", "99999999H", "2562048H"}) {
    CAPTURE(text);
    auto timeout = micro::grpc::parse_timeout(text, problem);
    REQUIRE(timeout);
    CHECK(*timeout == std::chrono::nanoseconds::max());
  }
  CHECK(micro::grpc::parse_timeout("2562047H", problem) == std::chrono::hours(2562047));
  CHECK(micro::grpc::parse_timeout("99999999M", problem) == std::chrono::minutes(99999999));
  CHECK(micro::grpc::parse_timeout("99999999n", problem) == std::chrono::nanoseconds(99999999));
  // Encoding it rounded up with count + unit - 1, which overflowed too.
  CHECK(micro::grpc::encode_timeout(std::chrono::nanoseconds::max()) == "2562048H");
  CHECK(micro::grpc::encode_timeout(std::chrono::milliseconds(1500)) == "1500000u");
  // A saturated timeout set on a context leaves it without a deadline instead of overflowing.
  micro::Context context;
  context.set_timeout(std::chrono::nanoseconds::max());
  CHECK_FALSE(context.has_deadline());
  context.set_timeout(std::chrono::seconds(5));
  CHECK(context.has_deadline());
  const auto deadline = context.deadline();
  context.set_timeout(std::chrono::nanoseconds::max());
  CHECK(context.deadline() == deadline);
}
