// test/fuzz/tcp_frame.cpp — the tcp transport's frame decoders (plugins/tcp/frame.hpp): the
// 20-byte header, request, response and stream window frames, as a peer may send them.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "plugins/tcp/frame.hpp"

using namespace micro::tcp;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view frame(reinterpret_cast<const char*>(data), size);
  if (size >= header_size) {
    // Every frame type the header may be expected as, with a small limit so too_large is hit.
    for (auto type : {FrameType::request, FrameType::response, FrameType::stream_open,
                      FrameType::stream_message, FrameType::stream_window}) {
      FrameHeader header;
      (void)parse_header(frame.data(), type, 1 << 20, header);
    }
  }
  micro::Request request;
  std::uint64_t timeout = 0;
  if (!decode_request(frame, request, timeout)) {
    // A decoded request must encode back to a frame that decodes alike.
    std::string again;
    encode_request(again, 1, request, timeout);
    micro::Request second;
    std::uint64_t second_timeout = 0;
    if (decode_request(again, second, second_timeout)) __builtin_trap();
    if (second.service != request.service || second.endpoint != request.endpoint ||
        second.body != request.body || second_timeout != timeout)
      __builtin_trap();
  }
  micro::Response response;
  (void)decode_response(frame, response);
  std::uint32_t increment = 0;
  (void)decode_stream_window(frame, increment);
  return 0;
}
