// <micro/base64.hpp>: RFC 4648 vectors in both alphabets, binary bytes, and malformed input
// refused with the character and offset (or the length) that is wrong.
#include <doctest/doctest.h>

#include <micro/base64.hpp>
#include <micro/error.hpp>

namespace base64 = micro::base64;

namespace {

std::string decode_error(std::string_view text) {
  try {
    base64::decode(text);
  } catch (const micro::Exception& error) {
    CHECK(error.error().code == 400);
    return error.error().detail;
  }
  return "(no error)";
}

std::string url_error(std::string_view text) {
  base64::DecodeError error;
  if (base64::try_decode_url(text, &error)) return "(no error)";
  return error.message + " @" + std::to_string(error.offset);
}

}  // namespace

TEST_CASE("base64: RFC 4648 test vectors, standard and URL-safe") {
  const std::pair<const char*, const char*> vectors[] = {{"", ""},
                                                         {"f", "Zg=="},
                                                         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},
                                                         {"foob", "Zm9vYg=="},
                                                         {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [bytes, text] : vectors) {
    CHECK(base64::encode(bytes) == text);
    CHECK(base64::decode(text) == bytes);
    std::string unpadded(text);
    while (!unpadded.empty() && unpadded.back() == '=') unpadded.pop_back();
    CHECK(base64::encode_url(bytes) == unpadded);
    CHECK(base64::decode_url(unpadded) == bytes);
  }
}

TEST_CASE("base64: every byte value round-trips; the alphabets differ in two characters") {
  std::string bytes;
  for (int value = 0; value < 256; ++value) bytes += char(value);
  CHECK(base64::decode(base64::encode(bytes)) == bytes);
  CHECK(base64::decode_url(base64::encode_url(bytes)) == bytes);
  CHECK(base64::encode("\xfb\xff") == "+/8=");
  CHECK(base64::encode_url("\xfb\xff") == "-_8");
  CHECK(base64::decode_url("-_8=") == "\xfb\xff");  // padding accepted when present
}

TEST_CASE("base64: malformed input says what is wrong and where") {
  CHECK(decode_error("Zm9v!mFy") ==
        "not base64: character '!' at offset 4 is not in the standard base64 alphabet");
  CHECK(decode_error("Zm9v\nYmFy") ==
        "not base64: character \\x0A at offset 4 is not in the standard base64 alphabet");
  CHECK(decode_error("Zm\x01v") ==
        "not base64: character \\x01 at offset 2 is not in the standard base64 alphabet");
  CHECK(decode_error("Zm9") ==
        "not base64: length 3 is not a multiple of 4 (padded base64 comes in groups of four "
        "characters)");
  CHECK(decode_error("Z===") == "not base64: padding '=' at offset 1 before the end");
  CHECK(decode_error("Zg==Zg==") == "not base64: padding '=' at offset 2 before the end");
  CHECK(decode_error("Zm9-") ==
        "not base64: character '-' at offset 3 is not in the standard base64 alphabet");
  CHECK(url_error("Zm9+") == "character '+' at offset 3 is not in the URL-safe base64 alphabet @3");
  CHECK(url_error("Zm9vY") ==
        "length 5 leaves one character over, which no base64 encoder "
        "writes @5");
  CHECK(url_error("Zg=") ==
        "length 3 is not a multiple of 4 (padded base64 comes in groups of four characters) @3");
  CHECK_FALSE(base64::try_decode("Zm9v!"));
  CHECK(base64::try_decode("Zm9v") == "foo");
}
