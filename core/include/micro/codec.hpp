// micro/codec.hpp — turns messages into bytes by content type.
//
// Typed handlers and calls go through nlohmann::json as the common model, so any C++ type
// with to_json/from_json travels as JSON, MessagePack or CBOR alike; raw bytes pass
// through untouched.
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

}  // namespace micro
