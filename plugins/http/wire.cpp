// plugins/http/wire.cpp — Go-Micro's RPC-over-HTTP headers: names, metadata, Timeout, errors.
#include "wire.hpp"

#include <charconv>

namespace micro::http_transport {

namespace {

// RFC 9110 §7.6.1 (and Proxy-Connection, which RFC 9112 §9.6 says to treat the same).
constexpr std::string_view hop_by_hop[] = {"Connection", "Keep-Alive", "Proxy-Connection",
                                           "TE",         "Trailer",    "Transfer-Encoding",
                                           "Upgrade"};

constexpr std::string_view call_headers[] = {"Content-Type", "Accept",         "Timeout",
                                             "Host",         "Content-Length", "Expect"};

bool starts_with_ignoring_case(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && iequals(text.substr(0, prefix.size()), prefix);
}

// Whether `name` is one of the comma-separated names in `list` (a Connection header).
bool listed(std::string_view list, std::string_view name) {
  while (!list.empty()) {
    auto comma = list.find(',');
    auto item = list.substr(0, comma);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (!item.empty() && iequals(item, name)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

std::string_view micro_header(const http::Fields& fields, std::string_view name) {
  for (const auto& field : fields) {
    std::string_view field_name = field.name;
    if (starts_with_ignoring_case(field_name, "X-")) field_name.remove_prefix(2);
    if (iequals(field_name, name)) return field.value;
  }
  return {};
}

bool is_call_header(std::string_view name, std::string_view connection_list) {
  // Micro-Id, Micro-Service, Micro-Endpoint, Micro-Method, Micro-Error, as X-Micro-* too. Other
  // Micro-* names are metadata (Go-Micro's own metadata keys do not start with it).
  std::string_view bare = name;
  if (starts_with_ignoring_case(bare, "X-")) bare.remove_prefix(2);
  for (auto own : {header_id, header_service, header_endpoint, header_method, header_error}) {
    if (iequals(bare, own)) return true;
  }
  for (auto own : call_headers) {
    if (iequals(name, own)) return true;
  }
  for (auto hop : hop_by_hop) {
    if (iequals(name, hop)) return true;
  }
  return !connection_list.empty() && listed(connection_list, name);
}

bool is_header_name(std::string_view name) {
  if (name.empty()) return false;
  for (unsigned char c : name) {
    if (c <= 0x20 || c >= 0x7f) return false;
    if (std::string_view("()<>@,;:\\\"/[]?={}").find(static_cast<char>(c)) !=
        std::string_view::npos)
      return false;
  }
  return true;
}

bool is_header_value(std::string_view value) {
  // RFC 9110 §5.5: visible characters, space, tab and obs-text; no other control character.
  for (unsigned char c : value) {
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  }
  if (value.empty()) return true;
  auto blank = [](char c) {
    return c == ' ' || c == '\t';
  };
  return !blank(value.front()) && !blank(value.back());
}

std::optional<std::uint64_t> parse_timeout(std::string_view text) {
  std::uint64_t nanoseconds = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), nanoseconds);
  if (text.empty() || error != std::errc() || end != text.data() + text.size()) {
    return std::nullopt;
  }
  return nanoseconds;
}

std::string format_timeout(Context::Clock::duration left) {
  auto nanoseconds = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
  char digits[24];
  auto end = std::to_chars(digits, digits + sizeof digits, std::max<std::int64_t>(1, nanoseconds));
  return std::string(digits, end.ptr);
}

void headers_to_metadata(const http::Fields& headers, Metadata& metadata) {
  const std::string_view connection_list = http::find_field(headers, "Connection");
  for (const auto& field : headers) {
    if (is_call_header(field.name, connection_list)) continue;
    if (const std::string* earlier = metadata.find(field.name)) {
      metadata.set(field.name, *earlier + "," + field.value);
    } else {
      metadata.set(field.name, field.value);
    }
  }
}

http::ServerResponse error_response(const Error& error, int status) {
  http::ServerResponse response;
  response.status = status;
  std::string json = error.to_json();
  if (status != 200) {
    response.headers.push_back({"Content-Type", "application/json"});
    response.body = json;
  }
  response.headers.push_back({std::string(header_error), std::move(json)});
  return response;
}

}  // namespace micro::http_transport
