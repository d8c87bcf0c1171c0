// test/wrappers/jwt_signer.hpp — makes JWTs for the auth tests and the wrapper benchmark: keys
// from the openssl CLI (RSA 2048, EC P-256, an HMAC secret) in a temporary directory, and
// HS256, RS256 and ES256 signatures with OpenSSL's EVP (ES256 converted from DER to JWS's
// r || s). Free of doctest; failures throw std::runtime_error.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include <nlohmann/json.hpp>

#include <micro/base64.hpp>

#include "support/shell.hpp"

namespace jwt_signer {

namespace fs = std::filesystem;

inline std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
inline void write_text(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

inline void openssl(const std::string& arguments) {
  std::string output = micro_test::run_command("openssl " + arguments + " 2>&1; echo rc=$?");
  if (output.find("rc=0") == std::string::npos)
    throw std::runtime_error("openssl " + arguments + " failed: " + output);
}

// rsa, rsa2 (RSA 2048), ec (P-256), small (RSA 1024): <name>.key and <name>.pub; hs.secret
// (40 bytes and a newline) and short.secret (9 bytes).
struct Keys {
  fs::path directory;
  explicit Keys(const std::string& label) {
    directory = fs::temp_directory_path() / (label + "-" + std::to_string(::getpid()));
    fs::create_directories(directory);
    for (const char* name : {"rsa", "rsa2"}) {
      openssl("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " + path(name, "key"));
      openssl("pkey -in " + path(name, "key") + " -pubout -out " + path(name, "pub"));
    }
    openssl("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out " + path("ec", "key"));
    openssl("pkey -in " + path("ec", "key") + " -pubout -out " + path("ec", "pub"));
    openssl("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out " + path("small", "key"));
    write_text(directory / "hs.secret", secret() + "\n");
    write_text(directory / "short.secret", "too short\n");
  }
  ~Keys() { fs::remove_all(directory); }
  Keys(const Keys&) = delete;
  Keys& operator=(const Keys&) = delete;

  std::string path(const std::string& name, const std::string& extension) const {
    return (directory / (name + "." + extension)).string();
  }
  static std::string secret() { return "0123456789abcdef0123456789abcdef-secret"; }
};

inline std::string b64(std::string_view bytes) {
  return micro::base64::encode_url(bytes);
}

inline std::string sign_hmac(const std::string& secret, const std::string& input) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &length);
  return std::string(reinterpret_cast<char*>(mac), length);
}

// RS256, or ES256 when `ec`, with the private key in `pem_path`.
inline std::string sign_private(const std::string& pem_path, const std::string& input, bool ec) {
  std::string pem = read_text(pem_path);
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (!key) throw std::runtime_error("cannot read private key " + pem_path);
  EVP_MD_CTX* context = EVP_MD_CTX_new();
  std::size_t length = 0;
  auto data = reinterpret_cast<const unsigned char*>(input.data());
  std::string signature;
  bool ok = EVP_DigestSignInit(context, nullptr, EVP_sha256(), nullptr, key) == 1 &&
            EVP_DigestSign(context, nullptr, &length, data, input.size()) == 1;
  if (ok) {
    signature.resize(length);
    ok = EVP_DigestSign(context, reinterpret_cast<unsigned char*>(signature.data()), &length, data,
                        input.size()) == 1;
    signature.resize(length);
  }
  EVP_MD_CTX_free(context);
  EVP_PKEY_free(key);
  if (!ok) throw std::runtime_error("cannot sign with " + pem_path);
  if (!ec) return signature;
  auto der = reinterpret_cast<const unsigned char*>(signature.data());
  ECDSA_SIG* pair = d2i_ECDSA_SIG(nullptr, &der, static_cast<long>(signature.size()));
  if (!pair) throw std::runtime_error("cannot read an ECDSA signature");
  std::string raw(64, '\0');
  BN_bn2binpad(ECDSA_SIG_get0_r(pair), reinterpret_cast<unsigned char*>(raw.data()), 32);
  BN_bn2binpad(ECDSA_SIG_get0_s(pair), reinterpret_cast<unsigned char*>(raw.data()) + 32, 32);
  ECDSA_SIG_free(pair);
  return raw;
}

inline std::int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A token signed by `signer`: "hs" (Keys::secret()), "rsa", "rsa2", "ec", or "none"
// (unsigned). Without a header, {"typ":"JWT","alg":<the signer's>}.
inline std::string token(const Keys& keys, const std::string& signer, const nlohmann::json& claims,
                         nlohmann::json header = {}) {
  if (header.is_null()) {
    header = {{"typ", "JWT"}};
    header["alg"] = signer == "hs" ? "HS256" : signer == "ec" ? "ES256" : "RS256";
    if (signer == "none") header["alg"] = "none";
  }
  std::string input = b64(header.dump()) + "." + b64(claims.dump());
  if (signer == "none") return input + ".";
  std::string signature = signer == "hs"
                              ? sign_hmac(Keys::secret(), input)
                              : sign_private(keys.path(signer, "key"), input, signer == "ec");
  return input + "." + b64(signature);
}

}  // namespace jwt_signer
