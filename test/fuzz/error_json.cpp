// test/fuzz/error_json.cpp — Go-Micro's error JSON (<micro/error.hpp> Error::from_json), what
// every peer's failed call carries. Never throws; what it returns prints back alike.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <micro/error.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto error = micro::Error::from_json(text);
  (void)error.message();
  if (!(micro::Error::from_json(error.to_json()) == error)) __builtin_trap();
  return 0;
}
