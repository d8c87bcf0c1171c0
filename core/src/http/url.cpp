// http/url.cpp — URLs for the HTTP client: parsing with errors that name the bad part, the
// forms messages and the pool use, and header lookup.
#include <algorithm>
#include <charconv>
#include <optional>

#include <micro/error.hpp>
#include <micro/http_client.hpp>

namespace micro::http {

namespace {

// What is wrong with a URL; thrown inside this file only, caught by try_parse_url.
struct Problem {
  std::string text;
};

[[noreturn]] void refuse(std::string_view, const std::string& problem) {
  throw Problem{problem};
}

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    auto lower = [](char c) {
      return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c;
    };
    return lower(x) == lower(y);
  });
}

// "host", "host:port", "[v6]" or "[v6]:port" into host and port (empty when absent).
void split_authority(std::string_view url, std::string_view authority, std::string_view& host,
                     std::string_view& port) {
  if (authority.empty()) refuse(url, "no host after the scheme");
  if (authority.find('@') != std::string_view::npos) {
    refuse(url, "user information (\"…@\") is not supported; put credentials in headers");
  }
  if (authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) refuse(url, "the IPv6 address has no closing ']'");
    host = authority.substr(1, close - 1);
    const auto after = authority.substr(close + 1);
    if (!after.empty() && after.front() != ':') {
      refuse(url,
             "expected ':' and a port after the IPv6 address, not \"" + std::string(after) + "\"");
    }
    port = after.empty() ? after : after.substr(1);
    if (!after.empty() && port.empty()) refuse(url, "empty port after ':'");
  } else {
    const auto colon = authority.rfind(':');
    host = authority.substr(0, colon);
    port = colon == std::string_view::npos ? std::string_view() : authority.substr(colon + 1);
    if (colon != std::string_view::npos && port.empty()) refuse(url, "empty port after ':'");
  }
  if (host.empty()) refuse(url, "empty host");
}

void check_port(std::string_view url, std::string_view port) {
  int number = 0;
  const auto [end, error] = std::from_chars(port.data(), port.data() + port.size(), number);
  if (error != std::errc() || end != port.data() + port.size() || number < 1 || number > 65535) {
    refuse(url, "port \"" + std::string(port) + "\" is not a number from 1 to 65535");
  }
}

}  // namespace

std::string Url::authority() const {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + port;
}

std::string Url::origin() const {
  return (https ? "https://" : "http://") + authority();
}

namespace {

// The URL, or a Problem thrown.
Url parse(std::string_view text) {
  Url url;
  std::string_view rest = text;
  if (rest.starts_with("https://")) {
    url.https = true;
    rest.remove_prefix(8);
  } else if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
  } else {
    const auto scheme_end = rest.find("://");
    refuse(text,
           scheme_end == std::string_view::npos
               ? "expected http:// or https:// before the host"
               : "scheme \"" + std::string(rest.substr(0, scheme_end)) + "\" is not http or https");
  }
  const auto target_start = rest.find_first_of("/?#");
  if (target_start != std::string_view::npos && rest[target_start] == '#') {
    refuse(text, "a fragment (\"#…\") is not sent to servers; leave it out");
  }
  std::string_view host, port;
  split_authority(text, rest.substr(0, target_start), host, port);
  if (!port.empty()) check_port(text, port);
  url.host = std::string(host);
  url.port = port.empty() ? (url.https ? "443" : "80") : std::string(port);
  if (target_start != std::string_view::npos) {
    const std::string_view target = rest.substr(target_start);
    const auto bad = std::find_if(target.begin(), target.end(), [](char c) {
      return static_cast<unsigned char>(c) <= 0x20 || c == 0x7F || c == '#';
    });
    if (bad != target.end()) {
      const auto offset = text.size() - target.size() + std::size_t(bad - target.begin());
      refuse(text, "space, control character or '#' at offset " + std::to_string(offset) +
                       " in the path (percent-encode it)");
    }
    url.target = std::string(target);
    if (url.target.front() == '?') url.target.insert(0, "/");
  }
  return url;
}

}  // namespace

std::optional<Url> try_parse_url(std::string_view text, std::string* problem) {
  try {
    return parse(text);
  } catch (const Problem& found) {
    if (problem) *problem = found.text;
    return std::nullopt;
  }
}

Url parse_url(std::string_view text) {
  std::string problem;
  auto url = try_parse_url(text, &problem);
  if (!url)
    throw Exception(bad_request("micro.http", "URL \"" + std::string(text) + "\": " + problem));
  return std::move(*url);
}

std::string_view find_field(const Fields& fields, std::string_view name) {
  for (const auto& field : fields) {
    if (equal_ignoring_case(field.name, name)) return field.value;
  }
  return {};
}

}  // namespace micro::http
