// test/fuzz/jwt.cpp — JWT parsing in the auth wrapper (wrappers/auth/jwt.hpp): a bearer token as
// any client may send it. Raw tokens reach the structure and header checks; for the claims
// checks past the signature, an input "header\npayload" (JSON texts) is signed with the key.
#include <unistd.h>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <micro/base64.hpp>

#include "wrappers/auth/jwt.hpp"

namespace {

const std::string secret = "fuzzing-secret-of-at-least-32-bytes!";

const auth::KeySet& keys() {
  static const auth::KeySet set = [] {
    char path[] = "/tmp/micro-fuzz-jwt-XXXXXX";
    const int fd = mkstemp(path);
    if (fd < 0 || write(fd, secret.data(), secret.size()) != static_cast<ssize_t>(secret.size()))
      __builtin_trap();
    close(fd);
    auth::KeySet result;
    result.keys.push_back(auth::load_key("k1", path));
    unlink(path);
    return result;
  }();
  return set;
}

std::string sign(std::string_view input) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned length = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &length);
  return micro::base64::encode_url(std::string_view(reinterpret_cast<char*>(mac), length));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const bool signed_input = data[0] & 1;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string token(text);
  if (signed_input) {
    const auto split = text.find('\n');
    if (split == std::string_view::npos) return 0;
    token = micro::base64::encode_url(text.substr(0, split)) + "." +
            micro::base64::encode_url(text.substr(split + 1));
    token += "." + sign(token);
  }
  auth::Expectations expectations;
  expectations.issuer = "issuer";
  expectations.audience = "audience";
  auth::Refusal refusal;
  if (auto verified = auth::verify(token, keys(), expectations,
                                   std::chrono::system_clock::from_time_t(1700000000), refusal)) {
    (void)auth::scopes_of(verified->claims);
  } else if (refusal.description.empty()) {
    __builtin_trap();  // a refusal says why
  }
  return 0;
}
