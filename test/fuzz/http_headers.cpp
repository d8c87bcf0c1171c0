// test/fuzz/http_headers.cpp — the http transport's header handling (plugins/http/wire.hpp):
// Micro-* headers into metadata, the Timeout header, header name and value checks. The input
// is lines "name: value"; the first line's value is also read as a Timeout.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "plugins/http/wire.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  micro::http::Fields fields;
  while (!text.empty()) {
    const auto end = text.find('\n');
    const auto line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    const auto colon = line.find(':');
    auto name = line.substr(0, colon);
    auto value = colon == std::string_view::npos ? std::string_view{} : line.substr(colon + 1);
    (void)micro::http_transport::is_header_name(name);
    (void)micro::http_transport::is_header_value(value);
    (void)micro::http_transport::is_call_header(name, value);
    if (fields.empty()) (void)micro::http_transport::parse_timeout(value);
    fields.push_back({std::string(name), std::string(value)});
  }
  micro::Metadata metadata;
  micro::http_transport::headers_to_metadata(fields, metadata);
  (void)micro::http_transport::micro_header(fields, "Id");
  return 0;
}
