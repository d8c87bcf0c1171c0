// test/fuzz/error_json.cpp — Go-Micro's error JSON (<micro/error.hpp> Error::from_json), what
// every peer's failed call carries. Never throws; what it prints reads back alike.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <micro/error.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto error = micro::Error::from_json(text);
  (void)error.message();
  // What it prints reads back to the same print (bytes that are no UTF-8 print as U+FFFD, so
  // the Error itself may differ from the one read back).
  const auto json = error.to_json();
  const auto again = micro::Error::from_json(json);
  if (again.to_json() != json || again.code != error.code) __builtin_trap();
  return 0;
}
