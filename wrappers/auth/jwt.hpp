// wrappers/auth — JSON Web Tokens: verification keys (HMAC secrets, RSA and EC public keys
// through OpenSSL's EVP) and the checks of a JWS compact serialization (RFC 7515, 7518, 7519).
// Internal to the auth plugin.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace auth {

// One verification key. Its type alone decides which algorithms it verifies: an HMAC secret
// only HS*, an RSA key only RS*, an EC key only the ES* of its curve. A token's header never
// widens that (no HS256 verified with an RSA public key taken as a secret).
struct Key {
  enum class Type { hmac, rsa, ec };
  std::string id;    // the `kid` it answers to; empty: any
  std::string path;  // where it was read from, for messages
  Type type = Type::hmac;
  std::string secret;  // hmac
  // hmac: an EVP_MAC_CTX per digest (SHA-256, -384, -512), keyed once at load; each
  // verification works on a copy, so no algorithm is looked up per request.
  std::shared_ptr<void> hmac_contexts[3];
  std::shared_ptr<void> public_key;  // rsa and ec: an EVP_PKEY
  std::string ec_algorithm;          // ec: ES256, ES384 or ES512, from the curve

  bool accepts(std::string_view algorithm) const;
  // "an RSA key (RS256, RS384, RS512)", for messages.
  std::string description() const;
  std::string name() const { return id.empty() ? path : "'" + id + "'"; }
};

// Reads the key in `path`: PEM (a public key, a certificate or a private key, of which the
// public half is kept) for RSA and EC; anything else is an HMAC secret, its bytes as they are
// (one trailing newline dropped). Throws std::runtime_error saying what is wrong with the file.
Key load_key(std::string id, const std::string& path);

struct KeySet {
  std::vector<Key> keys;
};

// What the verifier checks beyond the signature.
struct Expectations {
  std::optional<std::string> issuer;
  std::optional<std::string> audience;
  std::chrono::seconds leeway{0};
  bool require_expiry = true;
};

// Why a token was refused: 401 (error "invalid_request" or "invalid_token") or 403
// ("insufficient_scope"), with a description naming the problem.
struct Refusal {
  int code = 401;
  std::string error;
  std::string description;
  std::string scope;  // 403: the scopes required
};

struct Verified {
  nlohmann::json claims;
};

// The longest token read; longer ones are refused before anything is decoded.
inline constexpr std::size_t max_token_size = 16 * 1024;

// Verifies a compact JWS `token` against `keys` and `expectations` at time `now`: the
// structure, the algorithm, the key, the signature, then exp, nbf, iss and aud.
// Returns the claims, or sets `refusal`.
std::optional<Verified> verify(std::string_view token, const KeySet& keys,
                               const Expectations& expectations,
                               std::chrono::system_clock::time_point now, Refusal& refusal);

// The token's scopes: the `scope` claim (space-separated) and the `scp` claim (an array, or
// space-separated).
std::vector<std::string> scopes_of(const nlohmann::json& claims);

}  // namespace auth
