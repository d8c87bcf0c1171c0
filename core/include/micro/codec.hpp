// micro/codec.hpp — turns messages into bytes by content type.
//
// Typed handlers, calls, publishes and streams go through message_codec<T>. Its default goes
// through nlohmann::json as the common model, so any C++ type with to_json/from_json travels
// as JSON, MessagePack or CBOR alike; raw bytes pass through untouched. Types with an
// encoding of their own specialise message_codec (<micro/protobuf.hpp> does for protobuf
// messages).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace micro {

class Codec {
 public:
  virtual ~Codec() = default;
  virtual std::string_view content_type() const noexcept = 0;
  // Appends the encoding of `value` to `out`.
  virtual void encode(const nlohmann::json& value, std::string& out) const = 0;
  // Throws micro::Exception (400) naming the content type and what was wrong.
  virtual nlohmann::json decode(std::string_view bytes) const = 0;
};

// The built-in codecs:
//   application/json, application/msgpack (also application/x-msgpack), application/cbor,
//   application/octet-stream (raw: a binary or string json value ↔ its bytes).
// Parameters after ';' are ignored ("application/json; charset=utf-8").
// Returns nullptr for an unknown type.
const Codec* find_codec(std::string_view content_type) noexcept;
// As find_codec, but throws micro::Exception (400) listing the known types.
const Codec& codec_for(std::string_view content_type);
std::vector<std::string_view> codec_content_types();

inline constexpr std::string_view json_content_type = "application/json";

// The content type a message without one is read in: JSON, as Go-Micro's default.
inline std::string_view effective_content_type(std::string_view content_type) noexcept {
  return content_type.empty() ? json_content_type : content_type;
}

// How a typed message of type T becomes bytes of a content type and back. Specialise it for
// a family of types with `template <class T> struct micro::message_codec<T,
// std::enable_if_t<…>>`. Its three members:
//   content_type(requested): the type an answer to a message in `requested` is written in;
//   encode(type, value, out): appends value's encoding in `type` to out;
//   decode(type, bytes): the value; throws micro::Exception for a content type it does not
//     know, and any other std::exception for bytes that are not a T (the caller names the
//     endpoint and answers 400).
// and, optionally, annotate(MetadataMap&, std::string_view role): what a typed endpoint
// registers about its request ("request") and response ("response") type.
template <class T, class Enable = void>
struct message_codec {
  static std::string content_type(std::string_view requested) {
    return std::string(codec_for(effective_content_type(requested)).content_type());
  }
  static void encode(std::string_view type, const T& value, std::string& out) {
    codec_for(effective_content_type(type)).encode(nlohmann::json(value), out);
  }
  static T decode(std::string_view type, std::string_view bytes) {
    return codec_for(effective_content_type(type)).decode(bytes).template get<T>();
  }
};

}  // namespace micro
