// micro/base64.hpp — base64 (RFC 4648) for plugins and services: the standard alphabet with
// padding (what etcd's gateway and Go's encoding/json use for bytes) and the URL-safe alphabet
// without padding (what JWT uses). Decoding is strict: a character outside the alphabet, padding
// in the middle or a length no encoder produces is an error saying what is wrong and where.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace micro::base64 {

// Standard alphabet ("+/"), padded with '=' to a multiple of four characters.
std::string encode(std::string_view bytes);
// URL-safe alphabet ("-_"), no padding.
std::string encode_url(std::string_view bytes);

// What is wrong with a text that is not base64 ("character '%' at offset 5 is not in the
// standard base64 alphabet").
struct DecodeError {
  std::size_t offset = 0;  // where the problem is (the length, for a bad length)
  std::string message;
};

// Decodes padded standard base64. Throws micro::Exception (400, id "micro.base64") with the
// DecodeError's message.
std::string decode(std::string_view text);
// Decodes unpadded URL-safe base64 (a trailing '=' padding is accepted too). Throws as decode.
std::string decode_url(std::string_view text);

// The same without exceptions, for callers that try whether a text is base64: the bytes, or
// nullopt with `error` (when given) saying why not.
std::optional<std::string> try_decode(std::string_view text, DecodeError* error = nullptr);
std::optional<std::string> try_decode_url(std::string_view text, DecodeError* error = nullptr);

}  // namespace micro::base64
