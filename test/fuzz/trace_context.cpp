// test/fuzz/trace_context.cpp — W3C trace context (<micro/trace.hpp>): traceparent,
// tracestate and baggage as any peer may send them. The first byte picks the header.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <micro/trace.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view value(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string error;
  switch (data[0] % 3) {
    case 0:
      if (auto context = micro::trace::parse_traceparent(value, &error)) {
        // What parses formats to a traceparent that parses.
        if (!micro::trace::parse_traceparent(micro::trace::format_traceparent(*context)))
          __builtin_trap();
      }
      break;
    case 1: {
      auto normal = micro::trace::normalize_tracestate(value, &error);
      if (normal.size() > micro::trace::tracestate_max_length) __builtin_trap();
      // Normalising is idempotent.
      if (micro::trace::normalize_tracestate(normal) != normal) __builtin_trap();
      break;
    }
    default: {
      auto baggage = micro::trace::parse_baggage(value, &error);
      (void)micro::trace::parse_baggage(micro::trace::format_baggage(baggage));
      break;
    }
  }
  micro::Metadata metadata{{"traceparent", std::string(value)}, {"tracestate", std::string(value)}};
  (void)micro::trace::extract(metadata);
  return 0;
}
