// plugins/grpc/wire.cpp — the shared gRPC wire rules (wire.hpp).
#include "wire.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

#include <micro/base64.hpp>
#include <micro/gzip.hpp>

namespace micro::grpc {

IoExecutor io_executor(const asio::any_io_executor& executor) {
  if (const auto* io = executor.target<IoExecutor>()) return *io;
  throw Exception(
      bad_request(server_error_id, "grpc: the runtime's executor is not an io_context's"));
}

int grpc_status_for_http(int http_status) {
  switch (http_status) {
    case 400:
      return status_internal;
    case 401:
      return status_unauthenticated;
    case 403:
      return status_permission_denied;
    case 404:
      return status_unimplemented;
    case 429:
    case 502:
    case 503:
    case 504:
      return status_unavailable;
    default:
      return status_unknown;
  }
}

std::string encode_timeout(std::chrono::nanoseconds timeout) {
  auto count = std::max<std::int64_t>(1, timeout.count());
  // Finest unit whose value fits in 8 digits, rounded up so the server never gets more time.
  struct Unit {
    std::int64_t nanoseconds;
    char name;
  };
  static constexpr Unit units[] = {{1, 'n'},
                                   {1000, 'u'},
                                   {1000000, 'm'},
                                   {1000000000, 'S'},
                                   {60LL * 1000000000, 'M'},
                                   {3600LL * 1000000000, 'H'}};
  for (const auto& unit : units) {
    // Rounded up without count + unit - 1, which overflowed near nanoseconds::max() (UBSan,
    // test/fuzz/grpc_wire, encoding a saturated timeout).
    std::int64_t value = count / unit.nanoseconds + (count % unit.nanoseconds != 0);
    if (value <= 99999999) return std::to_string(value) + unit.name;
  }
  return "99999999H";
}

std::optional<std::chrono::nanoseconds> parse_timeout(std::string_view text, std::string& problem) {
  if (text.size() < 2 || text.size() > 9) {
    problem = "grpc-timeout \"" + std::string(text) + "\" is not 1 to 8 digits and a unit";
    return std::nullopt;
  }
  std::int64_t value = 0;
  for (char c : text.substr(0, text.size() - 1)) {
    if (c < '0' || c > '9') {
      problem = "grpc-timeout \"" + std::string(text) + "\" has a non-digit '" + c + "'";
      return std::nullopt;
    }
    value = value * 10 + (c - '0');
  }
  std::int64_t scale = 0;
  switch (text.back()) {
    case 'H':
      scale = 3600LL * 1000000000;
      break;
    case 'M':
      scale = 60LL * 1000000000;
      break;
    case 'S':
      scale = 1000000000;
      break;
    case 'm':
      scale = 1000000;
      break;
    case 'u':
      scale = 1000;
      break;
    case 'n':
      scale = 1;
      break;
    default:
      problem = "grpc-timeout \"" + std::string(text) + "\" has unit '" + text.back() +
                "'; expected one of H M S m u n";
      return std::nullopt;
  }
  // 8 digits of hours (or minutes) overflow int64 nanoseconds: value * scale was undefined
  // (UBSan, test/fuzz/grpc_wire). Such a timeout, thousands of years, saturates.
  if (value > std::numeric_limits<std::int64_t>::max() / scale) {
    return std::chrono::nanoseconds::max();
  }
  return std::chrono::nanoseconds(value * scale);
}

std::string percent_encode(std::string_view text) {
  static const char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c >= 0x20 && c <= 0x7e && c != '%') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

namespace {
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string lowercase(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = lower(c);
  return out;
}

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

std::string percent_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      int high = hex_value(text[i + 1]), low = hex_value(text[i + 2]);
      if (high >= 0 && low >= 0) {
        out.push_back(static_cast<char>(high * 16 + low));
        i += 2;
        continue;
      }
    }
    out.push_back(text[i]);
  }
  return out;
}

std::string grpc_content_type(std::string_view micro_type) {
  if (micro_type.empty() || micro_type == "application/protobuf" ||
      micro_type == "application/proto" || micro_type == "application/x-protobuf")
    return "application/grpc";
  constexpr std::string_view application = "application/";
  if (micro_type.rfind(application, 0) == 0)
    return "application/grpc+" + std::string(micro_type.substr(application.size()));
  return "application/grpc";
}

std::optional<std::string> micro_content_type(std::string_view grpc_type) {
  // Parameters (";charset=…") are ignored.
  grpc_type = grpc_type.substr(0, grpc_type.find(';'));
  constexpr std::string_view base = "application/grpc";
  if (grpc_type.size() < base.size() || lowercase(grpc_type.substr(0, base.size())) != base)
    return std::nullopt;
  std::string_view rest = grpc_type.substr(base.size());
  if (rest.empty() || rest == "+proto") return std::string("application/protobuf");
  if (rest.front() != '+') return std::nullopt;
  return "application/" + std::string(rest.substr(1));
}

bool reserved_header(std::string_view name) {
  if (name.empty() || name.front() == ':') return true;
  if (name == "content-type" || name == "te" || name == "user-agent" || name == "content-length" ||
      name == "host" || name == "connection")
    return true;
  if (name.rfind("grpc-", 0) == 0) return name != "grpc-status-details-bin";
  return name.rfind("micro-", 0) == 0;
}

void append_metadata(const Metadata& metadata, HeaderList& headers) {
  std::string spellings;
  for (const auto& [key, value] : metadata) {
    std::string name = lowercase(key);
    if (reserved_header(name)) continue;
    if (name != key) {
      if (!spellings.empty()) spellings.push_back(',');
      spellings += key;
    }
    if (ends_with(name, "-bin")) {
      std::string encoded = base64::encode(value);
      while (!encoded.empty() && encoded.back() == '=') encoded.pop_back();
      headers.emplace_back(std::move(name), std::move(encoded));
    } else {
      headers.emplace_back(std::move(name), value);
    }
  }
  if (!spellings.empty()) headers.emplace_back("micro-key-case", std::move(spellings));
}

bool add_metadata(Metadata& metadata, std::string_view name, std::string_view value,
                  std::string& problem) {
  if (reserved_header(name)) return true;
  if (ends_with(name, "-bin")) {
    std::string padded(value);
    while (padded.size() % 4 != 0) padded.push_back('=');
    base64::DecodeError error;
    auto bytes = base64::try_decode(padded, &error);
    if (!bytes) {
      problem = "metadata " + std::string(name) + " is not base64: " + error.message;
      return false;
    }
    metadata.set(name, std::move(*bytes));
    return true;
  }
  metadata.set(name, std::string(value));
  return true;
}

void restore_key_case(Metadata& metadata, std::string_view case_list) {
  while (!case_list.empty()) {
    auto comma = case_list.find(',');
    std::string_view spelling = case_list.substr(0, comma);
    case_list = comma == std::string_view::npos ? std::string_view{} : case_list.substr(comma + 1);
    std::string lower_name = lowercase(spelling);
    if (const std::string* value = metadata.find(lower_name)) {
      std::string kept = *value;
      metadata.erase(lower_name);
      metadata.set(spelling, std::move(kept));
    }
  }
}

void append_message(std::string& out, std::string_view message, bool gzip) {
  if (gzip) {
    std::string compressed = micro::gzip::compress(message);
    auto length = static_cast<std::uint32_t>(compressed.size());
    char prefix[prefix_size] = {1, static_cast<char>(length >> 24), static_cast<char>(length >> 16),
                                static_cast<char>(length >> 8), static_cast<char>(length)};
    out.append(prefix, prefix_size);
    out.append(compressed);
    return;
  }
  auto length = static_cast<std::uint32_t>(message.size());
  char prefix[prefix_size] = {0, static_cast<char>(length >> 24), static_cast<char>(length >> 16),
                              static_cast<char>(length >> 8), static_cast<char>(length)};
  out.append(prefix, prefix_size);
  out.append(message);
}

bool accepts_gzip(std::string_view accept_encoding) {
  while (!accept_encoding.empty()) {
    auto comma = accept_encoding.find(',');
    std::string_view item = accept_encoding.substr(0, comma);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (item == "gzip") return true;
    if (comma == std::string_view::npos) break;
    accept_encoding.remove_prefix(comma + 1);
  }
  return false;
}

Deframer::Result Deframer::feed(const std::uint8_t* data, std::size_t size, std::size_t& used) {
  used = 0;
  while (used < size) {
    if (!in_body_) {
      std::size_t take = std::min(prefix_size - header_have_, size - used);
      std::memcpy(header_ + header_have_, data + used, take);
      header_have_ += take;
      used += take;
      if (header_have_ < prefix_size) return Result::more;
      header_have_ = 0;
      if (header_[0] > 1) return Result::bad_flag;
      compressed_ = header_[0] == 1;
      length_ = (std::uint32_t(header_[1]) << 24) | (std::uint32_t(header_[2]) << 16) |
                (std::uint32_t(header_[3]) << 8) | std::uint32_t(header_[4]);
      // Refused before a byte is allocated for it.
      if (length_ > max_message_) return Result::too_large;
      in_body_ = true;
      message_.clear();
      message_.reserve(length_);
      if (length_ == 0) {
        in_body_ = false;
        return Result::message;
      }
      continue;
    }
    std::size_t take = std::min<std::size_t>(length_ - message_.size(), size - used);
    message_.append(reinterpret_cast<const char*>(data + used), take);
    used += take;
    if (message_.size() == length_) {
      in_body_ = false;
      return Result::message;
    }
  }
  return Result::more;
}

std::optional<HostPort> split_address(std::string_view address) {
  std::string_view host, port;
  if (!address.empty() && address.front() == '[') {
    auto close = address.find(']');
    if (close == std::string_view::npos || close + 1 >= address.size() || address[close + 1] != ':')
      return std::nullopt;
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    auto colon = address.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
  }
  if (port.empty() || port.size() > 5) return std::nullopt;
  unsigned value = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value > 65535) return std::nullopt;
  return HostPort{std::string(host), static_cast<std::uint16_t>(value)};
}

std::string path_for(std::string_view service, std::string_view endpoint) {
  auto dot = endpoint.find('.');
  std::string_view type = dot == std::string_view::npos ? endpoint : endpoint.substr(0, dot);
  std::string_view method =
      dot == std::string_view::npos ? std::string_view{} : endpoint.substr(dot + 1);
  std::string path = "/";
  if (!service.empty()) {
    path += service;
    path += '.';
  }
  path += type;
  path += '/';
  path += method;
  return path;
}

bool parse_path(std::string_view path, std::string& service, std::string& endpoint) {
  if (path.size() < 4 || path.front() != '/') return false;
  auto slash = path.find('/', 1);
  if (slash == std::string_view::npos || slash == 1 || slash + 1 >= path.size()) return false;
  std::string_view full = path.substr(1, slash - 1);
  std::string_view method = path.substr(slash + 1);
  if (method.find('/') != std::string_view::npos) return false;
  auto dot = full.rfind('.');
  std::string_view type = dot == std::string_view::npos ? full : full.substr(dot + 1);
  if (type.empty()) return false;
  service = dot == std::string_view::npos ? std::string{} : std::string(full.substr(0, dot));
  endpoint.assign(type);
  endpoint += '.';
  endpoint += method;
  return true;
}

Error error_from_status(int status, std::string message, const std::string& id) {
  return Error(id.empty() ? std::string(client_error_id) : id, micro_code_for(status),
               std::move(message));
}

}  // namespace micro::grpc
