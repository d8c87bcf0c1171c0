// test/fuzz/broker_envelope.cpp — the Go-Micro broker envelope (<micro/broker.hpp>),
// {"Header":{…},"Body":"<base64>"}, as brokers with encoding=gomicro receive it, and the topic
// matcher. A decoded envelope encodes back to one that decodes alike.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <micro/broker.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  micro::Message message;
  if (micro::decode_gomicro_envelope(text, message)) {
    micro::Message again;
    if (!micro::decode_gomicro_envelope(micro::encode_gomicro_envelope(message), again))
      __builtin_trap();
    if (again.body != message.body) __builtin_trap();
  }
  const auto split = text.find('\n');
  if (split != std::string_view::npos)
    (void)micro::topic_matches(text.substr(0, split), text.substr(split + 1));
  return 0;
}
