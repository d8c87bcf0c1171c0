// plugins/tcp/frame.hpp — the tcp transport's wire format: a fixed 20-byte header followed
// by a request or response payload. README.md in this folder is the specification; this
// file and frame.cpp are its only implementation, shared by the client and server sides.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <micro/transport.hpp>

namespace micro::tcp {

// Every frame starts with the two bytes "MT", then the protocol version.
inline constexpr char magic_first = 'M';
inline constexpr char magic_second = 'T';
inline constexpr std::uint8_t protocol_version = 1;
inline constexpr std::size_t header_size = 20;

// A cancel frame (client to server, header only) names a request or stream the client gave
// up on. Streams (README.md, "Streams") add open, message, close-send, end and window frames,
// all carrying the stream's id in the request id field.
enum class FrameType : std::uint8_t {
  request = 1,
  response = 2,
  cancel = 3,
  stream_open = 4,        // client to server: a request's payload, the stream's head
  stream_message = 5,     // both ways: the payload is one message
  stream_close_send = 6,  // client to server, header only: the client sends no more
  stream_end = 7,         // server to client: a response's payload, the final status
  stream_window = 8,      // both ways: u32 more bytes the sender of this frame will accept
};

// Each direction of a stream starts with this window (bytes of messages the receiver
// accepts before granting more); a receiver configured larger grants the rest at once.
inline constexpr std::uint32_t initial_stream_window = 65536;
// The window frame's size: header and a u32 increment.
inline constexpr std::size_t window_frame_size = 24;

// Response flag: the sender closes the connection after this frame (it could not go on
// reading the stream, e.g. after an oversize or unreadable header).
inline constexpr std::uint16_t flag_closing = 0x0001;

struct FrameHeader {
  FrameType type = FrameType::request;
  std::uint16_t flags = 0;
  std::uint64_t request_id = 0;
  std::uint32_t length = 0;  // the whole frame, header included
};

// Why a header was refused. `too_large` tells the caller the framing itself was sound (the
// request id can be trusted) but the length is over the limit.
struct HeaderProblem {
  std::string what;
  bool too_large = false;
};

// Reads and checks the 20 bytes at `data`: magic, version, expected type (a side expecting
// requests takes cancel and the client's stream frames; one expecting responses takes the
// server's stream frames), reserved bits and the length against [header_size, max_frame].
// Returns the problem, or nullopt when sound (then `header` is filled).
std::optional<HeaderProblem> parse_header(const char* data, FrameType expected,
                                          std::uint32_t max_frame, FrameHeader& header);

// Sizes before encoding, so an oversize frame is refused before anything is allocated.
std::size_t request_frame_size(const Request& request) noexcept;
std::size_t response_frame_size(const Response& response, std::string_view error_json) noexcept;

// Replaces `out` with a complete frame. The caller checked the size against the limit
// (it must fit in the u32 length field).
void encode_request(std::string& out, std::uint64_t request_id, const Request& request,
                    std::uint64_t timeout_nanoseconds);
// A header-only cancel frame for `request_id`.
void encode_cancel(std::string& out, std::uint64_t request_id);
// Stream frames. The open frame is a request frame of type stream_open (body empty), the end
// frame a response frame of type stream_end (body empty).
void encode_stream_open(std::string& out, std::uint64_t stream_id, const Request& head,
                        std::uint64_t timeout_nanoseconds);
void encode_stream_end(std::string& out, std::uint64_t stream_id, const Response& status,
                       std::string_view error_json);
void encode_stream_message(std::string& out, std::uint64_t stream_id, std::string_view message);
void encode_stream_close_send(std::string& out, std::uint64_t stream_id);
void encode_stream_window(std::string& out, std::uint64_t stream_id, std::uint32_t increment);
// The same frames appended to `out` (a batch of frames written together).
void append_stream_message(std::string& out, std::uint64_t stream_id, std::string_view message);
void append_stream_window(std::string& out, std::uint64_t stream_id, std::uint32_t increment);
// The window frame's increment, or what is wrong with the frame.
std::optional<std::string> decode_stream_window(std::string_view frame, std::uint32_t& increment);
inline std::size_t stream_message_frame_size(std::size_t message) noexcept {
  return header_size + message;
}
// `error_json` is response.error->to_json() when the response is a failure, else empty.
void encode_response(std::string& out, std::uint64_t request_id, std::uint16_t flags,
                     const Response& response, std::string_view error_json);

// Decodes the payload of a whole frame (`frame` includes the header). On a malformed
// payload returns what was wrong and at which offset from the frame's first byte.
std::optional<std::string> decode_request(std::string_view frame, Request& request,
                                          std::uint64_t& timeout_nanoseconds);
std::optional<std::string> decode_response(std::string_view frame, Response& response);

}  // namespace micro::tcp
