// test/registry/etcd/etcd_values_test.cpp — the etcd registry's reading of gateway JSON on its
// own (registry/etcd/etcd_client.cpp compiled in), for the inputs test/fuzz/etcd_gateway found.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "registry/etcd/etcd_client.hpp"
#include "registry/etcd/values.hpp"

TEST_CASE("a gateway error whose message is no string is read, not thrown (found by fuzzing)") {
  // "message": 8 threw nlohmann's type_error out of gateway_error.
  auto error = micro::etcd::gateway_error(
      nlohmann::json::parse(R"({"error": "etcdserver: not found", "code": 4, "message": 8})"));
  REQUIRE(error);
  CHECK(error->code == 4);
  CHECK(error->message == "8");
  auto streamed = micro::etcd::gateway_error(
      nlohmann::json::parse(R"({"error": {"grpc_code": 5, "message": ["x"]}})"));
  REQUIRE(streamed);
  CHECK(streamed->code == 5);
  CHECK(streamed->message == R"(["x"])");
  auto plain = micro::etcd::gateway_error(
      nlohmann::json::parse(R"({"error": "lease not found", "code": 5, "message": "lease"})"));
  REQUIRE(plain);
  CHECK(plain->message == "lease");
}

TEST_CASE("an int64 field past int64 reads as 0") {
  // 1e20 converted to int64 was undefined behaviour.
  auto object = nlohmann::json::parse(
      R"({"a": 1e20, "b": 18446744073709551615, "c": "42", "d": 42, "e": -7, "f": 3.0})");
  CHECK(micro::etcd::json_int64(object, "a") == 0);
  CHECK(micro::etcd::json_int64(object, "b") == 0);
  CHECK(micro::etcd::json_int64(object, "c") == 42);
  CHECK(micro::etcd::json_int64(object, "d") == 42);
  CHECK(micro::etcd::json_int64(object, "e") == -7);
  CHECK(micro::etcd::json_int64(object, "f") == 3);
  CHECK(micro::etcd::json_int64(object, "absent") == 0);
}
