// micro/error.hpp — the one error type that crosses process and language boundaries.
//
// An Error is Go-Micro's {id, code, detail, status}: `code` is HTTP-like, `status` its
// reason phrase, `id` names who raised it (a service or "micro.client"). Its JSON form
// is Go-Micro's, so a Go service and a C++ service understand each other's failures.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace micro {

// The documented code set. Other values are carried through unchanged.
enum class ErrorCode : std::int32_t {
  bad_request = 400,
  unauthorized = 401,
  forbidden = 403,
  not_found = 404,
  timeout = 408,  // the call's deadline passed
  conflict = 409,
  too_many_requests = 429,
  // The caller cancelled the call (Context::cancel()): id "micro.client", detail "call
  // cancelled". Not HTTP's but nginx's "Client Closed Request", as grpc-gateway maps gRPC's
  // CANCELLED. Never retried.
  cancelled = 499,
  internal = 500,
  bad_gateway = 502,
  unavailable = 503,  // no node, connection refused or lost
  gateway_timeout = 504,
};

// The reason phrase Go-Micro puts into `status` for a code ("Request Timeout" for 408).
std::string_view status_text(std::int32_t code) noexcept;

struct Error {
  std::string id;
  std::int32_t code = 500;
  std::string detail;
  std::string status;

  Error() = default;
  Error(std::string id, std::int32_t code, std::string detail);
  Error(std::string id, ErrorCode code, std::string detail)
      : Error(std::move(id), static_cast<std::int32_t>(code), std::move(detail)) {}

  // Go-Micro's JSON: {"id":"…","code":408,"detail":"…","status":"Request Timeout"}.
  std::string to_json() const;
  // Parses Go-Micro's JSON. Text that is not such an object becomes a 500 whose detail
  // is the text itself, as Go-Micro does, so nothing a peer said is lost.
  static Error from_json(std::string_view text);

  // "greeter: 404 Not Found: no endpoint Greeter.Helo" — for logs and exceptions.
  std::string message() const;

  friend bool operator==(const Error&, const Error&) = default;
};

// Shorthands for the common codes.
Error bad_request(std::string id, std::string detail);
Error not_found(std::string id, std::string detail);
Error timeout_error(std::string id, std::string detail);
Error internal_error(std::string id, std::string detail);
Error unavailable(std::string id, std::string detail);
Error cancelled_error(std::string id, std::string detail = "call cancelled");

// gRPC status codes (grpc's doc/statuscodes.md) and the one mapping between them and Error
// codes: the grpc transport uses it both ways, tracing for rpc.grpc.status_code. Error → status:
// 400 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 NOT_FOUND (UNIMPLEMENTED
// when the detail says "has no endpoint", the server's routing), 408 DEADLINE_EXCEEDED,
// 409 ALREADY_EXISTS, 412 FAILED_PRECONDITION, 413 and 429 RESOURCE_EXHAUSTED, 499 CANCELLED,
// 500 INTERNAL, 501 UNIMPLEMENTED, 503 UNAVAILABLE, any other UNKNOWN.
int grpc_status_for(const Error& error);
// Status → Error code, for peers that send the status alone. Some statuses share a code:
// ALREADY_EXISTS and ABORTED 409, INVALID_ARGUMENT and OUT_OF_RANGE 400, UNKNOWN, INTERNAL,
// DATA_LOSS (and codes not in the table) 500.
std::int32_t error_code_for_grpc_status(int status) noexcept;

// Thrown by the blocking API and by handlers that want to answer with a specific code.
// Anything else a handler throws becomes a 500 with the exception's what().
class Exception : public std::runtime_error {
 public:
  explicit Exception(Error error);
  const Error& error() const noexcept { return error_; }

 private:
  Error error_;
};

}  // namespace micro
