// base64.cpp — the two base64 alphabets of <micro/base64.hpp>, one table-driven codec for both.
#include <micro/base64.hpp>

#include <array>
#include <cstdint>
#include <cstdio>

#include <micro/error.hpp>

namespace micro::base64 {

namespace {

struct Alphabet {
  std::string_view name;  // for messages
  std::string_view characters;
  bool padded;  // the encoder pads, and the decoder insists on it
};

constexpr Alphabet standard{
    "standard", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", true};
constexpr Alphabet url_safe{
    "URL-safe", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", false};

constexpr std::int8_t not_in_alphabet = -1;

// Character → its 6-bit value, or not_in_alphabet.
constexpr std::array<std::int8_t, 256> values_of(std::string_view characters) {
  std::array<std::int8_t, 256> values{};
  values.fill(not_in_alphabet);
  for (std::size_t index = 0; index < characters.size(); ++index) {
    values[static_cast<unsigned char>(characters[index])] = static_cast<std::int8_t>(index);
  }
  return values;
}

constexpr auto standard_values = values_of(standard.characters);
constexpr auto url_safe_values = values_of(url_safe.characters);

std::string encode_with(std::string_view bytes, const Alphabet& alphabet) {
  std::string text;
  text.reserve((bytes.size() + 2) / 3 * 4);
  auto byte = [&](std::size_t index) {
    return std::uint32_t(std::uint8_t(bytes[index]));
  };
  std::size_t index = 0;
  for (; index + 3 <= bytes.size(); index += 3) {
    const std::uint32_t group = byte(index) << 16 | byte(index + 1) << 8 | byte(index + 2);
    for (int shift = 18; shift >= 0; shift -= 6) text += alphabet.characters[(group >> shift) & 63];
  }
  const std::size_t rest = bytes.size() - index;
  if (rest == 0) return text;
  std::uint32_t group = byte(index) << 16;
  if (rest == 2) group |= byte(index + 1) << 8;
  // One byte left makes two characters, two bytes three.
  for (std::size_t written = 0; written <= rest; ++written) {
    text += alphabet.characters[(group >> (18 - 6 * written)) & 63];
  }
  if (alphabet.padded) text.append(3 - rest, '=');
  return text;
}

// How a character looks in a message: 'x', or \xNN for one that does not print.
std::string shown(char character) {
  const auto code = static_cast<unsigned char>(character);
  if (code >= 0x20 && code < 0x7F) return std::string("'") + character + "'";
  char escaped[8];
  std::snprintf(escaped, sizeof(escaped), "\\x%02X", code);
  return escaped;
}

bool fail(DecodeError* error, std::size_t offset, std::string message) {
  if (error) *error = {offset, std::move(message)};
  return false;
}

// How many '=' end `text` (at most two: padding fills the last group to four characters).
std::size_t padding_of(std::string_view text) {
  std::size_t padding = 0;
  while (padding < text.size() && padding < 2 && text[text.size() - 1 - padding] == '=') ++padding;
  return padding;
}

// The length checked once every character is known to be good.
bool check_length(std::string_view text, std::size_t padding, const Alphabet& alphabet,
                  DecodeError* error) {
  const std::size_t data = text.size() - padding;
  if (data % 4 == 1) {
    return fail(error, text.size(),
                "length " + std::to_string(text.size()) +
                    " leaves one character over, which no base64 encoder writes");
  }
  const bool must_pad = alphabet.padded || padding > 0;
  if (must_pad && text.size() % 4 != 0) {
    return fail(error, text.size(),
                "length " + std::to_string(text.size()) +
                    " is not a multiple of 4 (padded base64 comes in groups of four characters)");
  }
  return true;
}

std::optional<std::string> decode_with(std::string_view text, const Alphabet& alphabet,
                                       const std::array<std::int8_t, 256>& values,
                                       DecodeError* error) {
  const std::size_t padding = padding_of(text);
  const std::string_view data = text.substr(0, text.size() - padding);
  std::string bytes;
  bytes.reserve(data.size() / 4 * 3 + 2);
  std::uint32_t group = 0;
  int bits = 0;
  for (std::size_t offset = 0; offset < data.size(); ++offset) {
    const auto value = values[static_cast<unsigned char>(data[offset])];
    if (value == not_in_alphabet) {
      fail(error, offset,
           data[offset] == '='
               ? "padding '=' at offset " + std::to_string(offset) + " before the end"
               : "character " + shown(data[offset]) + " at offset " + std::to_string(offset) +
                     " is not in the " + std::string(alphabet.name) + " base64 alphabet");
      return std::nullopt;
    }
    group = (group << 6) | std::uint32_t(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes += char((group >> bits) & 0xFF);
    }
  }
  if (!check_length(text, padding, alphabet, error)) return std::nullopt;
  return bytes;
}

std::string decode_or_throw(std::string_view text, const Alphabet& alphabet,
                            const std::array<std::int8_t, 256>& values) {
  DecodeError error;
  auto bytes = decode_with(text, alphabet, values, &error);
  if (!bytes) throw Exception(bad_request("micro.base64", "not base64: " + error.message));
  return std::move(*bytes);
}

}  // namespace

std::string encode(std::string_view bytes) {
  return encode_with(bytes, standard);
}
std::string encode_url(std::string_view bytes) {
  return encode_with(bytes, url_safe);
}

std::string decode(std::string_view text) {
  return decode_or_throw(text, standard, standard_values);
}
std::string decode_url(std::string_view text) {
  return decode_or_throw(text, url_safe, url_safe_values);
}

std::optional<std::string> try_decode(std::string_view text, DecodeError* error) {
  return decode_with(text, standard, standard_values, error);
}
std::optional<std::string> try_decode_url(std::string_view text, DecodeError* error) {
  return decode_with(text, url_safe, url_safe_values, error);
}

}  // namespace micro::base64
