// plugins/http/wire.hpp — Go-Micro's RPC-over-HTTP format (README.md is its specification): the
// header names, which headers are the call's own and which are metadata, the Timeout header,
// and the error answers. Shared by the client and the server side.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <micro/context.hpp>
#include <micro/error.hpp>
#include <micro/http_client.hpp>
#include <micro/http_server.hpp>

namespace micro::http_transport {

// Go's canonical spelling of the call's headers; matched case-insensitively, `X-` + name too.
inline constexpr std::string_view header_id = "Micro-Id";
inline constexpr std::string_view header_service = "Micro-Service";
inline constexpr std::string_view header_endpoint = "Micro-Endpoint";
inline constexpr std::string_view header_method = "Micro-Method";  // older Go-Micro's Endpoint
inline constexpr std::string_view header_error = "Micro-Error";
inline constexpr std::string_view header_timeout = "Timeout";

// Who raised an error the transport makes itself (Go-Micro's ids).
inline constexpr const char* client_error_id = "micro.client";
inline constexpr const char* server_error_id = "micro.server";

// The value of `name` or of `X-` + `name`, "" when neither is there.
std::string_view micro_header(const http::Fields& fields, std::string_view name);

// Whether a header describes the call or its framing rather than carrying metadata: the Micro-*
// headers (and X-Micro-*), Content-Type, Accept, Timeout, Host, Content-Length, Expect and the
// hop-by-hop ones (RFC 9110 §7.6.1). `connection_list` is the request's Connection header,
// whose listed names are hop-by-hop too.
bool is_call_header(std::string_view name, std::string_view connection_list = {});

// Whether `name` can be sent as a header name (an RFC 9110 token) and `value` as its value
// (no control character but tab; no leading or trailing white space, which HTTP would strip).
bool is_header_name(std::string_view name);
bool is_header_value(std::string_view value);

// "Timeout": decimal nanoseconds. nullopt when `text` is not a whole number (no sign, no unit).
std::optional<std::uint64_t> parse_timeout(std::string_view text);
// Nanoseconds left until `deadline` (at least 1), as the Timeout value.
std::string format_timeout(Context::Clock::duration left);

// Every header that is not the call's own, as metadata: names keep their case, a name that
// comes more than once gets its values joined with "," (RFC 9110 §5.3).
void headers_to_metadata(const http::Fields& headers, Metadata& metadata);

// An answer carrying `error` as Go-Micro's servers send it: 200 with the error JSON in
// Micro-Error. With `status` not 200 (an HTTP-level refusal), that status, and the JSON as the
// body too, for callers that are not Go-Micro.
http::ServerResponse error_response(const Error& error, int status = 200);

}  // namespace micro::http_transport
