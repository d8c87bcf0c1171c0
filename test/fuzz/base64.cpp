// test/fuzz/base64.cpp — base64 (<micro/base64.hpp>), standard and URL-safe: what decodes
// encodes back to the same text.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <micro/base64.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  micro::base64::DecodeError error;
  if (auto bytes = micro::base64::try_decode(text, &error)) {
    if (micro::base64::decode(micro::base64::encode(*bytes)) != *bytes) __builtin_trap();
  } else if (error.offset > size) {
    __builtin_trap();
  }
  if (auto bytes = micro::base64::try_decode_url(text, &error)) {
    if (micro::base64::decode_url(micro::base64::encode_url(*bytes)) != *bytes) __builtin_trap();
  }
  return 0;
}
