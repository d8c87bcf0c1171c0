// plugins/tcp/frame.cpp — encoding and decoding of tcp transport frames (see README.md).
// All integers are little-endian; strings are a u32 length then that many bytes; the body
// is whatever remains of the frame after the last field.
#include "frame.hpp"

#include <bit>
#include <cstring>

namespace micro::tcp {

namespace {

// Little-endian stores and loads: one move on a little-endian host (GCC 12 does not merge
// the byte-wise loop at -O2: it was ~100 instructions a header), byte-wise elsewhere.
template <class Integer>
void store(char* at, Integer value) noexcept {
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(at, &value, sizeof(Integer));
  } else {
    for (std::size_t i = 0; i < sizeof(Integer); ++i)
      at[i] = static_cast<char>(static_cast<std::uint8_t>(value >> (8 * i)));
  }
}

template <class Integer>
Integer load(const char* at) noexcept {
  Integer value = 0;
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(&value, at, sizeof(Integer));
  } else {
    for (std::size_t i = 0; i < sizeof(Integer); ++i)
      value |= static_cast<Integer>(static_cast<std::uint8_t>(at[i])) << (8 * i);
  }
  return value;
}

std::string hex_byte(std::uint8_t byte) {
  static constexpr char digits[] = "0123456789abcdef";
  return std::string("0x") + digits[byte >> 4] + digits[byte & 15];
}

// Appends fields at a cursor into a buffer already sized for the whole frame.
class Writer {
 public:
  explicit Writer(char* at) noexcept : at_(at) {}
  template <class Integer>
  void integer(Integer value) noexcept {
    store(at_, value);
    at_ += sizeof(Integer);
  }
  void string(std::string_view text) noexcept {
    integer(static_cast<std::uint32_t>(text.size()));
    bytes(text);
  }
  void bytes(std::string_view text) noexcept {
    if (!text.empty()) std::memcpy(at_, text.data(), text.size());
    at_ += text.size();
  }

 private:
  char* at_;
};

// Reads fields of one frame, turning any overrun into a description with the offset.
struct DecodeProblem {
  std::string what;
};

class Reader {
 public:
  // A frame shorter than its header made left() wrap around and the first field read past the
  // buffer (ASan, test/fuzz/tcp_frame); the connection never passes one, a caller might.
  explicit Reader(std::string_view frame) : frame_(frame), offset_(header_size) {
    if (frame.size() < header_size) {
      throw DecodeProblem{"frame of " + std::to_string(frame.size()) +
                          " bytes is shorter than its " + std::to_string(header_size) +
                          "-byte header"};
    }
  }

  template <class Integer>
  Integer integer(const char* field) {
    need(sizeof(Integer), field);
    Integer value = load<Integer>(frame_.data() + offset_);
    offset_ += sizeof(Integer);
    return value;
  }

  std::string_view string(const char* field) {
    std::size_t length_offset = offset_;
    auto length = integer<std::uint32_t>(field);
    if (length > left()) {
      throw DecodeProblem{std::string(field) + " length " + std::to_string(length) + " at offset " +
                          std::to_string(length_offset) + " runs past the end of the frame (" +
                          std::to_string(left()) + " bytes left of " +
                          std::to_string(frame_.size()) + ")"};
    }
    std::string_view text = frame_.substr(offset_, length);
    offset_ += length;
    return text;
  }

  std::uint32_t count(const char* field, std::size_t smallest_entry) {
    std::size_t count_offset = offset_;
    auto value = integer<std::uint32_t>(field);
    // Each entry needs at least `smallest_entry` bytes; refuse counts that cannot fit
    // rather than looping over a peer's huge number.
    if (static_cast<std::uint64_t>(value) * smallest_entry > left()) {
      throw DecodeProblem{std::string(field) + " " + std::to_string(value) + " at offset " +
                          std::to_string(count_offset) + " cannot fit in the " +
                          std::to_string(left()) + " bytes left of the frame"};
    }
    return value;
  }

  std::string_view rest() noexcept {
    std::string_view text = frame_.substr(offset_);
    offset_ = frame_.size();
    return text;
  }

 private:
  std::size_t left() const noexcept { return frame_.size() - offset_; }
  void need(std::size_t size, const char* field) {
    if (size > left()) {
      throw DecodeProblem{"truncated " + std::string(field) + " at offset " +
                          std::to_string(offset_) + ": needs " + std::to_string(size) + " bytes, " +
                          std::to_string(left()) + " left of " + std::to_string(frame_.size())};
    }
  }

  std::string_view frame_;
  std::size_t offset_;
};

std::size_t metadata_size(const Metadata& metadata) noexcept {
  std::size_t size = 4;
  for (const auto& [key, value] : metadata) size += 8 + key.size() + value.size();
  return size;
}

void write_header(Writer& writer, FrameType type, std::uint16_t flags, std::uint64_t request_id,
                  std::size_t length) noexcept {
  writer.bytes(std::string_view("MT", 2));
  writer.integer(protocol_version);
  writer.integer(static_cast<std::uint8_t>(type));
  writer.integer(flags);
  writer.integer(std::uint16_t{0});
  writer.integer(request_id);
  writer.integer(static_cast<std::uint32_t>(length));
}

void write_metadata(Writer& writer, const Metadata& metadata) noexcept {
  writer.integer(static_cast<std::uint32_t>(metadata.size()));
  for (const auto& [key, value] : metadata) {
    writer.string(key);
    writer.string(value);
  }
}

void read_metadata(Reader& reader, Metadata& metadata) {
  auto count = reader.count("metadata count", 8);
  for (std::uint32_t i = 0; i < count; ++i) {
    std::string_view key = reader.string("metadata key");
    std::string_view value = reader.string("metadata value");
    metadata.set(key, std::string(value));
  }
}

}  // namespace

std::optional<HeaderProblem> parse_header(const char* data, FrameType expected,
                                          std::uint32_t max_frame, FrameHeader& header) {
  if (data[0] != magic_first || data[1] != magic_second) {
    return HeaderProblem{"bad magic " + hex_byte(static_cast<std::uint8_t>(data[0])) + " " +
                         hex_byte(static_cast<std::uint8_t>(data[1])) +
                         " at offset 0 (expected \"MT\", 0x4d 0x54)"};
  }
  auto version = load<std::uint8_t>(data + 2);
  if (version != protocol_version) {
    return HeaderProblem{"unsupported version " + std::to_string(version) +
                         " at offset 2 (this side speaks version " +
                         std::to_string(protocol_version) + ")"};
  }
  auto type = load<std::uint8_t>(data + 3);
  // The side that reads requests also reads their cancellations and the client's stream
  // frames; the side that reads responses also reads the server's stream frames.
  bool accepted = false;
  if (expected == FrameType::request) {
    accepted = type == static_cast<std::uint8_t>(FrameType::request) ||
               type == static_cast<std::uint8_t>(FrameType::cancel) ||
               type == static_cast<std::uint8_t>(FrameType::stream_open) ||
               type == static_cast<std::uint8_t>(FrameType::stream_message) ||
               type == static_cast<std::uint8_t>(FrameType::stream_close_send) ||
               type == static_cast<std::uint8_t>(FrameType::stream_window);
  } else {
    accepted = type == static_cast<std::uint8_t>(FrameType::response) ||
               type == static_cast<std::uint8_t>(FrameType::stream_message) ||
               type == static_cast<std::uint8_t>(FrameType::stream_end) ||
               type == static_cast<std::uint8_t>(FrameType::stream_window);
  }
  if (!accepted) {
    return HeaderProblem{"unexpected frame type " + std::to_string(type) +
                         " at offset 3 (expected " +
                         (expected == FrameType::request
                              ? "1 request, 3 cancel, 4 stream open, 5 stream message, 6 stream "
                                "close-send or 8 stream window)"
                              : "2 response, 5 stream message, 7 stream end or 8 stream window)")};
  }
  auto reserved = load<std::uint16_t>(data + 6);
  if (reserved != 0) {
    return HeaderProblem{"reserved field at offset 6 is " + std::to_string(reserved) +
                         " (must be 0)"};
  }
  header.type = static_cast<FrameType>(type);
  header.flags = load<std::uint16_t>(data + 4);
  header.request_id = load<std::uint64_t>(data + 8);
  header.length = load<std::uint32_t>(data + 16);
  if (header.length < header_size) {
    return HeaderProblem{"frame length " + std::to_string(header.length) +
                         " at offset 16 is smaller than the " + std::to_string(header_size) +
                         "-byte header"};
  }
  if (header.length > max_frame) {
    return HeaderProblem{"frame of " + std::to_string(header.length) + " bytes exceeds max_frame " +
                             std::to_string(max_frame),
                         true};
  }
  return std::nullopt;
}

std::size_t request_frame_size(const Request& request) noexcept {
  return header_size + 4 + request.service.size() + 4 + request.endpoint.size() + 4 +
         request.content_type.size() + 8 + metadata_size(request.context.metadata()) +
         request.body.size();
}

std::size_t response_frame_size(const Response& response, std::string_view error_json) noexcept {
  return header_size + 4 + error_json.size() + 4 + response.content_type.size() +
         metadata_size(response.metadata) + response.body.size();
}

namespace {
void encode_request_as(std::string& out, FrameType type, std::uint64_t request_id,
                       const Request& request, std::string_view body,
                       std::uint64_t timeout_nanoseconds) {
  std::size_t size = request_frame_size(request) - request.body.size() + body.size();
  out.resize(size);
  Writer writer(out.data());
  write_header(writer, type, 0, request_id, size);
  writer.string(request.service);
  writer.string(request.endpoint);
  writer.string(request.content_type);
  writer.integer(timeout_nanoseconds);
  write_metadata(writer, request.context.metadata());
  writer.bytes(body);
}

void encode_response_as(std::string& out, FrameType type, std::uint64_t request_id,
                        std::uint16_t flags, const Response& response, std::string_view body,
                        std::string_view error_json) {
  std::size_t size = response_frame_size(response, error_json) - response.body.size() + body.size();
  out.resize(size);
  Writer writer(out.data());
  write_header(writer, type, flags, request_id, size);
  writer.string(error_json);
  writer.string(response.content_type);
  write_metadata(writer, response.metadata);
  writer.bytes(body);
}
}  // namespace

void encode_request(std::string& out, std::uint64_t request_id, const Request& request,
                    std::uint64_t timeout_nanoseconds) {
  encode_request_as(out, FrameType::request, request_id, request, request.body,
                    timeout_nanoseconds);
}

void encode_stream_open(std::string& out, std::uint64_t stream_id, const Request& head,
                        std::uint64_t timeout_nanoseconds) {
  encode_request_as(out, FrameType::stream_open, stream_id, head, {}, timeout_nanoseconds);
}

void encode_stream_end(std::string& out, std::uint64_t stream_id, const Response& status,
                       std::string_view error_json) {
  encode_response_as(out, FrameType::stream_end, stream_id, 0, status, {}, error_json);
}

void encode_stream_message(std::string& out, std::uint64_t stream_id, std::string_view message) {
  out.clear();
  append_stream_message(out, stream_id, message);
}

void append_stream_message(std::string& out, std::uint64_t stream_id, std::string_view message) {
  std::size_t size = stream_message_frame_size(message.size());
  char header[header_size];
  Writer writer(header);
  write_header(writer, FrameType::stream_message, 0, stream_id, size);
  out.append(header, header_size);
  out.append(message);
}

void encode_stream_close_send(std::string& out, std::uint64_t stream_id) {
  out.resize(header_size);
  Writer writer(out.data());
  write_header(writer, FrameType::stream_close_send, 0, stream_id, header_size);
}

void encode_stream_window(std::string& out, std::uint64_t stream_id, std::uint32_t increment) {
  out.clear();
  append_stream_window(out, stream_id, increment);
}

void append_stream_window(std::string& out, std::uint64_t stream_id, std::uint32_t increment) {
  char frame[window_frame_size];
  Writer writer(frame);
  write_header(writer, FrameType::stream_window, 0, stream_id, window_frame_size);
  writer.integer(increment);
  out.append(frame, window_frame_size);
}

std::optional<std::string> decode_stream_window(std::string_view frame, std::uint32_t& increment) {
  try {
    Reader reader(frame);
    increment = reader.integer<std::uint32_t>("window increment");
  } catch (const DecodeProblem& problem) {
    return problem.what;
  }
  return std::nullopt;
}

void encode_response(std::string& out, std::uint64_t request_id, std::uint16_t flags,
                     const Response& response, std::string_view error_json) {
  encode_response_as(out, FrameType::response, request_id, flags, response, response.body,
                     error_json);
}

void encode_cancel(std::string& out, std::uint64_t request_id) {
  out.resize(header_size);
  Writer writer(out.data());
  write_header(writer, FrameType::cancel, 0, request_id, header_size);
}

std::optional<std::string> decode_request(std::string_view frame, Request& request,
                                          std::uint64_t& timeout_nanoseconds) {
  try {
    Reader reader(frame);
    request.service = reader.string("service");
    request.endpoint = reader.string("endpoint");
    request.content_type = reader.string("content type");
    timeout_nanoseconds = reader.integer<std::uint64_t>("timeout");
    read_metadata(reader, request.context.metadata());
    request.body = reader.rest();
  } catch (const DecodeProblem& problem) {
    return problem.what;
  }
  return std::nullopt;
}

std::optional<std::string> decode_response(std::string_view frame, Response& response) {
  try {
    Reader reader(frame);
    std::string_view error_json = reader.string("error");
    response.content_type = reader.string("content type");
    read_metadata(reader, response.metadata);
    response.body = reader.rest();
    if (!error_json.empty()) response.error = Error::from_json(error_json);
  } catch (const DecodeProblem& problem) {
    return problem.what;
  }
  return std::nullopt;
}

}  // namespace micro::tcp
