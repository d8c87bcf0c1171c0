// Error: Go-Micro's error model and its JSON.
#include <micro/error.hpp>

#include <cstdint>
#include <limits>
#include <optional>

#include <nlohmann/json.hpp>

namespace micro {

std::string_view status_text(std::int32_t code) noexcept {
  switch (code) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 408:
      return "Request Timeout";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 413:
      return "Payload Too Large";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 499:
      return "Client Closed Request";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "";
  }
}

Error::Error(std::string id_, std::int32_t code_, std::string detail_)
    : id(std::move(id_)), code(code_), detail(std::move(detail_)), status(status_text(code_)) {}

std::string Error::to_json() const {
  nlohmann::json json{{"id", id}, {"code", code}, {"detail", detail}, {"status", status}};
  // A detail taken from a peer's text may hold bytes that are no UTF-8: dump() threw
  // type_error 316 on them (test/fuzz/error_json). They become U+FFFD; the rest is kept.
  return json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {

// Go-Micro's code is an int32. One that is no such integer (1e20, 4294967296, 408.5) makes the
// object no Go-Micro error: converting it was undefined (a double out of int's range, found by
// test/fuzz/error_json) or wrapped around.
std::optional<std::int32_t> int32_code(const nlohmann::json& code) {
  constexpr auto low = std::numeric_limits<std::int32_t>::min();
  constexpr auto high = std::numeric_limits<std::int32_t>::max();
  if (code.is_number_unsigned()) {
    const auto value = code.get<std::uint64_t>();
    if (value <= static_cast<std::uint64_t>(high)) return static_cast<std::int32_t>(value);
  } else if (code.is_number_integer()) {
    const auto value = code.get<std::int64_t>();
    if (value >= low && value <= high) return static_cast<std::int32_t>(value);
  }
  return std::nullopt;
}

}  // namespace

Error Error::from_json(std::string_view text) {
  Error error;
  error.code = 500;
  try {
    auto json = nlohmann::json::parse(text);
    if (json.is_object() && (json.contains("code") || json.contains("detail"))) {
      const auto code = json.contains("code") ? int32_code(json.at("code")) : 500;
      if (code) {
        error.id = json.value("id", "");
        error.code = *code;
        error.detail = json.value("detail", "");
        error.status = json.value("status", std::string(status_text(error.code)));
        return error;
      }
    }
  } catch (const nlohmann::json::exception&) {
    // Not JSON: the text itself is the detail, below.
  }
  error.detail = std::string(text);
  error.status = std::string(status_text(500));
  return error;
}

std::string Error::message() const {
  std::string text;
  if (!id.empty()) text += id + ": ";
  text += std::to_string(code);
  if (!status.empty()) text += " " + status;
  if (!detail.empty()) text += ": " + detail;
  return text;
}

Error bad_request(std::string id, std::string detail) {
  return Error(std::move(id), ErrorCode::bad_request, std::move(detail));
}
Error not_found(std::string id, std::string detail) {
  return Error(std::move(id), ErrorCode::not_found, std::move(detail));
}
Error timeout_error(std::string id, std::string detail) {
  return Error(std::move(id), ErrorCode::timeout, std::move(detail));
}
Error internal_error(std::string id, std::string detail) {
  return Error(std::move(id), ErrorCode::internal, std::move(detail));
}
Error unavailable(std::string id, std::string detail) {
  return Error(std::move(id), ErrorCode::unavailable, std::move(detail));
}

Error cancelled_error(std::string id, std::string detail) {
  return Error(std::move(id), ErrorCode::cancelled, std::move(detail));
}

namespace {
// The gRPC status codes the mapping names.
constexpr int grpc_cancelled = 1;
constexpr int grpc_unknown = 2;
constexpr int grpc_invalid_argument = 3;
constexpr int grpc_deadline_exceeded = 4;
constexpr int grpc_not_found = 5;
constexpr int grpc_already_exists = 6;
constexpr int grpc_permission_denied = 7;
constexpr int grpc_resource_exhausted = 8;
constexpr int grpc_failed_precondition = 9;
constexpr int grpc_aborted = 10;
constexpr int grpc_out_of_range = 11;
constexpr int grpc_unimplemented = 12;
constexpr int grpc_internal = 13;
constexpr int grpc_unavailable = 14;
constexpr int grpc_data_loss = 15;
constexpr int grpc_unauthenticated = 16;
}  // namespace

int grpc_status_for(const Error& error) {
  switch (error.code) {
    case 400:
      return grpc_invalid_argument;
    case 401:
      return grpc_unauthenticated;
    case 403:
      return grpc_permission_denied;
    case 404:
      return error.detail.find("has no endpoint") != std::string::npos ? grpc_unimplemented
                                                                       : grpc_not_found;
    case 408:
      return grpc_deadline_exceeded;
    case 409:
      return grpc_already_exists;
    case 412:
      return grpc_failed_precondition;
    case 413:
    case 429:
      return grpc_resource_exhausted;
    case 499:
      return grpc_cancelled;
    case 500:
      return grpc_internal;
    case 501:
      return grpc_unimplemented;
    case 503:
      return grpc_unavailable;
    default:
      return grpc_unknown;
  }
}

std::int32_t error_code_for_grpc_status(int status) noexcept {
  switch (status) {
    case grpc_cancelled:
      return 499;
    case grpc_invalid_argument:
      return 400;
    case grpc_deadline_exceeded:
      return 408;
    case grpc_not_found:
      return 404;
    case grpc_already_exists:
      return 409;
    case grpc_permission_denied:
      return 403;
    case grpc_resource_exhausted:
      return 429;
    case grpc_failed_precondition:
      return 412;
    case grpc_aborted:
      return 409;
    case grpc_out_of_range:
      return 400;
    case grpc_unimplemented:
      return 501;
    case grpc_unavailable:
      return 503;
    case grpc_unauthenticated:
      return 401;
    default:
      return 500;  // UNKNOWN, INTERNAL, DATA_LOSS and codes we do not know
  }
}

Exception::Exception(Error error) : std::runtime_error(error.message()), error_(std::move(error)) {}

}  // namespace micro
