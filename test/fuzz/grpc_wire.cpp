// test/fuzz/grpc_wire.cpp — the grpc transport's wire (plugins/grpc/wire.hpp): message
// framing (the 5-byte prefix, fed in pieces as HTTP/2 DATA frames come), grpc-timeout,
// metadata and trailers (binary -bin values, percent-encoded grpc-message), gzip, addresses.
// The first byte picks the part, the second how the bytes are split.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <micro/gzip.hpp>

#include "plugins/grpc/wire.hpp"

using namespace micro::grpc;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const unsigned part = data[0], piece = data[1] % 16 + 1;
  data += 2;
  size -= 2;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string problem;
  switch (part % 6) {
    case 0: {
      Deframer deframer(1024);
      std::size_t at = 0;
      while (at < size) {
        std::size_t used = 0;
        const auto chunk = std::min<std::size_t>(piece, size - at);
        auto result = deframer.feed(data + at, chunk, used);
        if (used > chunk) __builtin_trap();
        at += used;
        if (result == Deframer::Result::message) {
          if (deframer.take().size() > 1024) __builtin_trap();
        } else if (result != Deframer::Result::more) {
          break;
        } else if (used == 0) {
          __builtin_trap();  // more wanted but nothing taken: would spin
        }
      }
      break;
    }
    case 1:
      if (auto timeout = parse_timeout(text, problem)) (void)encode_timeout(*timeout);
      break;
    case 2: {
      micro::Metadata metadata;
      const auto colon = text.find(':');
      if (colon != std::string_view::npos)
        (void)add_metadata(metadata, text.substr(0, colon), text.substr(colon + 1), problem);
      restore_key_case(metadata, text);
      HeaderList headers;
      append_metadata(metadata, headers);
      break;
    }
    case 3:
      if (percent_decode(percent_encode(text)) != text) __builtin_trap();
      (void)percent_decode(text);
      (void)micro_content_type(text);
      break;
    case 4:
      (void)micro::gzip::decompress(text, 1 << 16, problem);
      (void)accepts_gzip(text);
      break;
    default:
      (void)split_address(text);
      (void)reserved_header(text);
      break;
  }
  return 0;
}
