// wrappers/auth — JWS compact serialization checks and signature verification with OpenSSL.
#include "jwt.hpp"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <micro/base64.hpp>

namespace auth {

namespace {

struct Algorithm {
  std::string_view name;
  Key::Type type;
  const EVP_MD* (*digest)();
  std::size_t ec_half = 0;  // ES*: bytes of r and of s
};

// HS256, HS384, HS512 → Key::hmac_contexts index, and the digest names OpenSSL knows them by.
constexpr const char* hmac_digests[3] = {"SHA256", "SHA384", "SHA512"};
std::size_t hmac_index(std::string_view algorithm) {
  return algorithm == "HS256" ? 0 : algorithm == "HS384" ? 1 : 2;
}

const Algorithm algorithms[] = {
    {"HS256", Key::Type::hmac, EVP_sha256},   {"HS384", Key::Type::hmac, EVP_sha384},
    {"HS512", Key::Type::hmac, EVP_sha512},   {"RS256", Key::Type::rsa, EVP_sha256},
    {"RS384", Key::Type::rsa, EVP_sha384},    {"RS512", Key::Type::rsa, EVP_sha512},
    {"ES256", Key::Type::ec, EVP_sha256, 32}, {"ES384", Key::Type::ec, EVP_sha384, 48},
    {"ES512", Key::Type::ec, EVP_sha512, 66},
};

const Algorithm* find_algorithm(std::string_view name) {
  for (const auto& algorithm : algorithms)
    if (algorithm.name == name) return &algorithm;
  return nullptr;
}

std::string supported_names() {
  std::string names;
  for (const auto& algorithm : algorithms) {
    if (!names.empty()) names += ", ";
    names += algorithm.name;
  }
  return names;
}

std::string openssl_error() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "no OpenSSL detail";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

// A value from a token, quoted for a message: at most 64 characters, no quotes or controls
// (the description ends up inside a quoted WWW-Authenticate-like parameter).
std::string quote(std::string_view value) {
  std::string text = "'";
  for (char character : value.substr(0, 64)) {
    auto byte = static_cast<unsigned char>(character);
    text +=
        (byte < 0x20 || byte == 0x7f || character == '"' || character == '\\') ? '?' : character;
  }
  if (value.size() > 64) text += "...";
  return text + "'";
}

std::string quote_json(const nlohmann::json& value) {
  return value.is_string() ? quote(value.get<std::string>()) : quote(value.dump());
}

std::string utc_text(double seconds) {
  std::time_t time = static_cast<std::time_t>(seconds);
  std::tm parts{};
  gmtime_r(&time, &parts);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read key file '" + path + "'");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::shared_ptr<void> own(EVP_PKEY* key) {
  return std::shared_ptr<void>(
      key, [](void* pointer) { EVP_PKEY_free(static_cast<EVP_PKEY*>(pointer)); });
}

// The public key of a PEM text: a public key, a certificate or a private key.
EVP_PKEY* read_pem_key(const std::string& text) {
  auto read = [&](auto reader) -> EVP_PKEY* {
    BIO* bio = BIO_new_mem_buf(text.data(), static_cast<int>(text.size()));
    if (!bio) return nullptr;
    EVP_PKEY* key = reader(bio);
    BIO_free(bio);
    return key;
  };
  if (EVP_PKEY* key =
          read([](BIO* bio) { return PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr); }))
    return key;
  if (EVP_PKEY* key = read([](BIO* bio) -> EVP_PKEY* {
        X509* certificate = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
        if (!certificate) return nullptr;
        EVP_PKEY* public_key = X509_get_pubkey(certificate);
        X509_free(certificate);
        return public_key;
      }))
    return key;
  return read([](BIO* bio) { return PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr); });
}

std::string part_name(int index) {
  static const char* names[] = {"header (part 1)", "payload (part 2)", "signature (part 3)"};
  return names[index];
}

Refusal invalid(std::string description) {
  return Refusal{401, "invalid_token", std::move(description), {}};
}

bool verify_hmac(const Key& key, const Algorithm& algorithm, std::string_view input,
                 std::string_view signature) {
  auto* keyed = static_cast<EVP_MAC_CTX*>(key.hmac_contexts[hmac_index(algorithm.name)].get());
  EVP_MAC_CTX* context = keyed ? EVP_MAC_CTX_dup(keyed) : nullptr;
  if (!context) return false;
  unsigned char mac[EVP_MAX_MD_SIZE];
  std::size_t length = 0;
  bool ok = EVP_MAC_update(context, reinterpret_cast<const unsigned char*>(input.data()),
                           input.size()) == 1 &&
            EVP_MAC_final(context, mac, &length, sizeof mac) == 1;
  EVP_MAC_CTX_free(context);
  return ok && signature.size() == length && CRYPTO_memcmp(mac, signature.data(), length) == 0;
}

// One keyed HMAC context per digest.
void key_hmac(Key& key) {
  EVP_MAC* hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (!hmac) throw std::runtime_error("OpenSSL has no HMAC (" + openssl_error() + ")");
  for (std::size_t index = 0; index < 3; ++index) {
    EVP_MAC_CTX* context = EVP_MAC_CTX_new(hmac);
    OSSL_PARAM parameters[] = {
        OSSL_PARAM_construct_utf8_string("digest", const_cast<char*>(hmac_digests[index]), 0),
        OSSL_PARAM_construct_end()};
    if (!context || EVP_MAC_init(context, reinterpret_cast<const unsigned char*>(key.secret.data()),
                                 key.secret.size(), parameters) != 1) {
      EVP_MAC_CTX_free(context);
      EVP_MAC_free(hmac);
      throw std::runtime_error("key file '" + key.path + "': cannot key HMAC-" +
                               hmac_digests[index] + " (" + openssl_error() + ")");
    }
    key.hmac_contexts[index] = std::shared_ptr<void>(
        context, [](void* pointer) { EVP_MAC_CTX_free(static_cast<EVP_MAC_CTX*>(pointer)); });
  }
  EVP_MAC_free(hmac);
}

// JWS carries an ECDSA signature as r || s, each padded to the curve's size; OpenSSL verifies
// DER (a SEQUENCE of two INTEGERs).
std::optional<std::string> ecdsa_der(std::string_view signature, std::size_t half) {
  if (signature.size() != 2 * half) return std::nullopt;
  auto bytes = reinterpret_cast<const unsigned char*>(signature.data());
  BIGNUM* r = BN_bin2bn(bytes, static_cast<int>(half), nullptr);
  BIGNUM* s = BN_bin2bn(bytes + half, static_cast<int>(half), nullptr);
  ECDSA_SIG* pair = ECDSA_SIG_new();
  if (!r || !s || !pair || ECDSA_SIG_set0(pair, r, s) != 1) {
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(pair);
    return std::nullopt;
  }
  unsigned char* der = nullptr;
  int length = i2d_ECDSA_SIG(pair, &der);
  ECDSA_SIG_free(pair);
  if (length <= 0) return std::nullopt;
  std::string result(reinterpret_cast<char*>(der), static_cast<std::size_t>(length));
  OPENSSL_free(der);
  return result;
}

bool verify_public(const Key& key, const Algorithm& algorithm, std::string_view input,
                   std::string_view signature) {
  std::string der;
  if (key.type == Key::Type::ec) {
    auto converted = ecdsa_der(signature, algorithm.ec_half);
    if (!converted) return false;
    der = std::move(*converted);
    signature = der;
  }
  EVP_MD_CTX* context = EVP_MD_CTX_new();
  if (!context) return false;
  bool ok = EVP_DigestVerifyInit(context, nullptr, algorithm.digest(), nullptr,
                                 static_cast<EVP_PKEY*>(key.public_key.get())) == 1 &&
            EVP_DigestVerify(context, reinterpret_cast<const unsigned char*>(signature.data()),
                             signature.size(), reinterpret_cast<const unsigned char*>(input.data()),
                             input.size()) == 1;
  EVP_MD_CTX_free(context);
  ERR_clear_error();
  return ok;
}

// A NumericDate claim: nullopt when absent; throws a refusal when not a number.
std::optional<double> numeric_date(const nlohmann::json& claims, const char* name, Refusal& refusal,
                                   bool& bad) {
  auto found = claims.find(name);
  if (found == claims.end()) return std::nullopt;
  if (!found->is_number()) {
    refusal = invalid(std::string("token claim '") + name + "' is not a number (NumericDate)");
    bad = true;
    return std::nullopt;
  }
  return found->get<double>();
}

}  // namespace

bool Key::accepts(std::string_view algorithm) const {
  const Algorithm* found = find_algorithm(algorithm);
  if (!found || found->type != type) return false;
  return type != Type::ec || ec_algorithm == algorithm;
}

std::string Key::description() const {
  switch (type) {
    case Type::hmac:
      return "an HMAC secret (HS256, HS384, HS512)";
    case Type::rsa:
      return "an RSA key (RS256, RS384, RS512)";
    case Type::ec:
      return "an EC key (" + ec_algorithm + ")";
  }
  return "?";
}

Key load_key(std::string id, const std::string& path) {
  Key key;
  key.id = std::move(id);
  key.path = path;
  std::string text = read_file(path);
  if (text.find("-----BEGIN ") == std::string::npos) {
    if (text.ends_with("\r\n"))
      text.resize(text.size() - 2);
    else if (text.ends_with("\n"))
      text.pop_back();
    // RFC 7518 3.2: a key at least as long as the hash output; HS256's is 32 bytes.
    if (text.size() < 32)
      throw std::runtime_error("key file '" + path + "' holds an HMAC secret of " +
                               std::to_string(text.size()) +
                               " bytes; at least 32 are needed (RFC 7518 section 3.2)");
    key.type = Key::Type::hmac;
    key.secret = std::move(text);
    key_hmac(key);
    return key;
  }
  EVP_PKEY* pkey = read_pem_key(text);
  if (!pkey)
    throw std::runtime_error("key file '" + path +
                             "' is PEM but holds no public key, certificate or private key (" +
                             openssl_error() + ")");
  key.public_key = own(pkey);
  ERR_clear_error();
  switch (EVP_PKEY_get_base_id(pkey)) {
    case EVP_PKEY_RSA: {
      int bits = EVP_PKEY_get_bits(pkey);
      if (bits < 2048)
        throw std::runtime_error("key file '" + path + "' holds a " + std::to_string(bits) +
                                 "-bit RSA key; at least 2048 bits are needed (RFC 7518 "
                                 "section 3.3)");
      key.type = Key::Type::rsa;
      return key;
    }
    case EVP_PKEY_EC: {
      char group[64] = {};
      std::size_t length = 0;
      if (EVP_PKEY_get_group_name(pkey, group, sizeof group, &length) != 1)
        throw std::runtime_error("key file '" + path + "': cannot read the EC key's curve");
      std::string_view curve(group, length);
      if (curve == "prime256v1" || curve == "P-256")
        key.ec_algorithm = "ES256";
      else if (curve == "secp384r1" || curve == "P-384")
        key.ec_algorithm = "ES384";
      else if (curve == "secp521r1" || curve == "P-521")
        key.ec_algorithm = "ES512";
      else
        throw std::runtime_error("key file '" + path + "' holds an EC key on curve " +
                                 std::string(curve) +
                                 "; JWS uses P-256 (ES256), P-384 (ES384) or P-521 (ES512)");
      key.type = Key::Type::ec;
      return key;
    }
    default:
      throw std::runtime_error("key file '" + path +
                               "' holds a key that is neither RSA nor EC; JWS verification "
                               "needs RSA (RS*), EC (ES*) or an HMAC secret (HS*)");
  }
}

std::optional<Verified> verify(std::string_view token, const KeySet& keys,
                               const Expectations& expectations,
                               std::chrono::system_clock::time_point now, Refusal& refusal) {
  if (token.size() > max_token_size) {
    refusal = invalid("token of " + std::to_string(token.size()) + " bytes is longer than the " +
                      std::to_string(max_token_size) + " allowed");
    return std::nullopt;
  }
  // Structure: header.payload.signature, nothing more (a JWE has five parts).
  std::string_view parts[3];
  std::size_t count = 0, start = 0;
  for (std::size_t index = 0; index <= token.size(); ++index) {
    if (index == token.size() || token[index] == '.') {
      if (count < 3) parts[count] = token.substr(start, index - start);
      ++count;
      start = index + 1;
    }
  }
  if (count != 3) {
    refusal = invalid("malformed token: " + std::to_string(count) +
                      " part(s) separated by '.', expected 3 (header.payload.signature)");
    return std::nullopt;
  }
  std::string decoded[3];
  for (int index = 0; index < 3; ++index) {
    if (parts[index].empty() && index < 2) {
      refusal = invalid("malformed token " + part_name(index) + ": empty");
      return std::nullopt;
    }
    micro::base64::DecodeError error;
    auto bytes = micro::base64::try_decode_url(parts[index], &error);
    if (!bytes) {
      refusal =
          invalid("malformed token " + part_name(index) + ": not base64url: " + error.message);
      return std::nullopt;
    }
    decoded[index] = std::move(*bytes);
  }
  nlohmann::json header, claims;
  for (int index = 0; index < 2; ++index) {
    auto& target = index == 0 ? header : claims;
    target = nlohmann::json::parse(decoded[index], nullptr, /*allow_exceptions=*/false);
    if (!target.is_object()) {
      refusal = invalid("malformed token " + part_name(index) + ": not a JSON object");
      return std::nullopt;
    }
  }

  // Algorithm: named by the header, but only ever checked against what the key allows.
  auto alg = header.find("alg");
  if (alg == header.end() || !alg->is_string()) {
    refusal = invalid("malformed token header (part 1): no 'alg' string");
    return std::nullopt;
  }
  std::string algorithm_name = alg->get<std::string>();
  if (algorithm_name == "none" || algorithm_name == "None" || algorithm_name == "NONE") {
    refusal = invalid("token algorithm 'none' is refused: unsigned tokens are never accepted");
    return std::nullopt;
  }
  const Algorithm* algorithm = find_algorithm(algorithm_name);
  if (!algorithm) {
    refusal = invalid("token algorithm " + quote(algorithm_name) +
                      " is not supported; expected one of " + supported_names());
    return std::nullopt;
  }
  if (header.contains("crit")) {
    refusal = invalid(
        "token header lists critical extensions ('crit') this verifier does not understand");
    return std::nullopt;
  }

  // Keys: those with the token's kid and those configured without one.
  std::string kid;
  if (auto found = header.find("kid"); found != header.end()) {
    if (!found->is_string()) {
      refusal = invalid("malformed token header (part 1): 'kid' is not a string");
      return std::nullopt;
    }
    kid = found->get<std::string>();
  }
  std::vector<const Key*> candidates;
  for (const Key& key : keys.keys)
    if (key.id.empty() || kid.empty() || key.id == kid) candidates.push_back(&key);
  if (candidates.empty()) {
    std::string known;
    for (const Key& key : keys.keys) known += (known.empty() ? "" : ", ") + key.id;
    refusal = invalid("token key id " + quote(kid) +
                      " matches no configured key (configured: " + known + ")");
    return std::nullopt;
  }
  std::vector<const Key*> usable;
  for (const Key* key : candidates)
    if (key->accepts(algorithm->name)) usable.push_back(key);
  if (usable.empty()) {
    std::string which;
    for (const Key* key : candidates)
      which += (which.empty() ? "" : "; ") + key->name() + " is " + key->description();
    refusal = invalid("token algorithm " + std::string(algorithm->name) +
                      " does not fit the configured key(s): " + which +
                      "; the key's type decides the algorithm, never the token");
    return std::nullopt;
  }
  std::string_view input = token.substr(0, parts[0].size() + 1 + parts[1].size());
  bool verified = false;
  for (const Key* key : usable) {
    verified = key->type == Key::Type::hmac ? verify_hmac(*key, *algorithm, input, decoded[2])
                                            : verify_public(*key, *algorithm, input, decoded[2]);
    if (verified) break;
  }
  if (!verified) {
    refusal =
        invalid("token signature does not verify (" + std::string(algorithm->name) +
                (usable.size() == 1 ? " with key " + usable[0]->name()
                                    : " with any of " + std::to_string(usable.size()) + " keys") +
                ")");
    return std::nullopt;
  }

  // Claims, now that they are known to come from the key's holder.
  double seconds = std::chrono::duration<double>(now.time_since_epoch()).count();
  double leeway = static_cast<double>(expectations.leeway.count());
  std::string leeway_text = "leeway " + std::to_string(expectations.leeway.count()) + "s";
  bool bad = false;
  auto expiry = numeric_date(claims, "exp", refusal, bad);
  if (bad) return std::nullopt;
  if (!expiry && expectations.require_expiry) {
    refusal = invalid("token has no 'exp' claim; an expiry is required");
    return std::nullopt;
  }
  if (expiry && seconds >= *expiry + leeway) {
    refusal = invalid("token expired at " + utc_text(*expiry) + " (" +
                      std::to_string(static_cast<long long>(seconds - *expiry)) + "s ago, " +
                      leeway_text + ")");
    return std::nullopt;
  }
  auto not_before = numeric_date(claims, "nbf", refusal, bad);
  if (bad) return std::nullopt;
  if (not_before && seconds + leeway < *not_before) {
    refusal = invalid("token not valid before " + utc_text(*not_before) + " (in " +
                      std::to_string(static_cast<long long>(*not_before - seconds)) + "s, " +
                      leeway_text + ")");
    return std::nullopt;
  }
  if (expectations.issuer) {
    auto issuer = claims.find("iss");
    if (issuer == claims.end()) {
      refusal = invalid("token has no 'iss' claim; expected " + quote(*expectations.issuer));
      return std::nullopt;
    }
    if (!issuer->is_string() || issuer->get<std::string>() != *expectations.issuer) {
      refusal = invalid("token issuer " + quote_json(*issuer) + " is not the expected " +
                        quote(*expectations.issuer));
      return std::nullopt;
    }
  }
  if (expectations.audience) {
    auto audience = claims.find("aud");
    if (audience == claims.end()) {
      refusal = invalid("token has no 'aud' claim; expected " + quote(*expectations.audience));
      return std::nullopt;
    }
    bool found = false;
    if (audience->is_string()) {
      found = audience->get<std::string>() == *expectations.audience;
    } else if (audience->is_array()) {
      for (const auto& each : *audience)
        if (each.is_string() && each.get<std::string>() == *expectations.audience) found = true;
    }
    if (!found) {
      refusal = invalid("token audience " + quote_json(*audience) + " does not include " +
                        quote(*expectations.audience));
      return std::nullopt;
    }
  }
  return Verified{std::move(claims)};
}

std::vector<std::string> scopes_of(const nlohmann::json& claims) {
  std::vector<std::string> scopes;
  auto split = [&](const std::string& text) {
    std::istringstream words(text);
    for (std::string word; words >> word;) scopes.push_back(word);
  };
  for (const char* name : {"scope", "scp"}) {
    auto found = claims.find(name);
    if (found == claims.end()) continue;
    if (found->is_string()) {
      split(found->get<std::string>());
    } else if (found->is_array()) {
      for (const auto& each : *found)
        if (each.is_string()) scopes.push_back(each.get<std::string>());
    }
  }
  return scopes;
}

}  // namespace auth
