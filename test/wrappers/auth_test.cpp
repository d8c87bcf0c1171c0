// The auth wrapper with real keys made by the openssl CLI (RSA 2048, EC P-256, an HMAC secret)
// and tokens signed here with OpenSSL's EVP: HS256, RS256 and ES256 tokens accepted and their
// claims seen by the handler; every kind of bad token refused, each with its own message
// (expired, not yet valid, wrong issuer, wrong audience, wrong signature, alg none, HS/RS key
// confusion, unknown kid, each malformed part, missing or non-Bearer Authorization) and a
// missing scope answered 403; forged claims dropped; key rotation by rewriting the key file;
// and, over a real tcp server, the client side attaching a token from a file.
#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "jwt_signer.hpp"
#include "resilience_support.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
using resilience_test::answer_of;
using resilience_test::request_for;
using test_support::wait_until;

namespace {

namespace fs = std::filesystem;
using jwt_signer::b64;
using jwt_signer::now_seconds;
using jwt_signer::read_text;
using jwt_signer::sign_hmac;
using jwt_signer::write_text;

const jwt_signer::Keys& keys() {
  static jwt_signer::Keys made("micro-auth-test");
  return made;
}

json good_claims() {
  return {{"sub", "alice"},
          {"iss", "https://issuer.example"},
          {"aud", "greeter"},
          {"exp", now_seconds() + 600},
          {"nbf", now_seconds() - 10},
          {"scope", "greet.read profile"}};
}

std::string token(const std::string& signer, json claims = good_claims(), json header = {}) {
  return jwt_signer::token(keys(), signer, claims, std::move(header));
}

struct Guarded {
  micro::Runtime runtime{1};
  std::shared_ptr<micro::Wrapper> wrapper;
  micro::HandlerFunction handler;
  std::string claims_seen;
  int handled = 0;

  explicit Guarded(resilience_test::Options options) {
    options.emplace_back("side", "server");
    wrapper = resilience_test::load_wrapper("auth", options, runtime.executor());
    micro::WrapperChains chains;
    chains.add(wrapper->wrappers({"greeter", "1", "tcp", ""}));
    handler = chains.wrap_handler(
        [this](const micro::RequestPtr& request, micro::ResponseHandler respond) {
          ++handled;
          claims_seen = request->context.metadata().get("Micro-Auth-Claims");
          micro::Response response;
          response.body = "{}";
          respond(std::move(response));
        });
  }

  micro::Response call(const std::optional<std::string>& authorization,
                       const std::string& endpoint = "Greeter.Hello") {
    auto request = request_for("greeter", endpoint);
    if (authorization) request->context.metadata().set("authorization", *authorization);
    return answer_of(handler, request);
  }
  micro::Response bearer(const std::string& token, const std::string& endpoint = "Greeter.Hello") {
    return call("Bearer " + token, endpoint);
  }
};

resilience_test::Options standard_options() {
  return {{"keys", "hs:" + keys().path("hs", "secret") + ";rsa:" + keys().path("rsa", "pub") +
                       ";ec:" + keys().path("ec", "pub")},
          {"issuer", "https://issuer.example"},
          {"audience", "greeter"},
          {"leeway", "5s"},
          {"scopes", "Greeter.Admin:admin+greet.read;Greeter.Hello:greet.read"}};
}

// The description inside the WWW-Authenticate-like detail.
std::string description_of(const micro::Response& response) {
  REQUIRE(response.error);
  const std::string& detail = response.error->detail;
  auto start = detail.find("error_description=\"");
  REQUIRE(start != std::string::npos);
  start += 19;
  return detail.substr(start, detail.rfind('"') - start);
}

}  // namespace

TEST_CASE("auth: HS256, RS256 and ES256 tokens are accepted; the handler sees the claims") {
  Guarded guarded(standard_options());
  for (const char* signer : {"hs", "rsa", "ec"}) {
    CAPTURE(signer);
    auto response = guarded.bearer(token(signer));
    CHECK_FALSE(response.error);
    json claims = json::parse(guarded.claims_seen);
    CHECK(claims["sub"] == "alice");
    CHECK(claims["iss"] == "https://issuer.example");
  }
  // kid picks the key; an audience array including ours is fine.
  json claims = good_claims();
  claims["aud"] = json::array({"other", "greeter"});
  CHECK_FALSE(guarded.bearer(token("rsa", claims, {{"alg", "RS256"}, {"kid", "rsa"}})).error);
  // The scheme is case-insensitive.
  CHECK_FALSE(guarded.call("bearer " + token("ec")).error);
  CHECK(guarded.handled == 5);
}

TEST_CASE("auth: each bad token is refused with its own message") {
  Guarded guarded(standard_options());
  std::string good = token("rsa");
  auto dot = good.find('.');
  auto second_dot = good.find('.', dot + 1);
  std::string header_part = good.substr(0, dot);
  std::string payload_part = good.substr(dot + 1, second_dot - dot - 1);

  auto with = [](json claims, const char* key, json value) {
    if (value.is_null())
      claims.erase(key);
    else
      claims[key] = value;
    return claims;
  };
  // The RSA public key's PEM text used as an HMAC secret: the classic key confusion.
  std::string confused_input =
      b64(json{{"alg", "HS256"}, {"kid", "rsa"}}.dump()) + "." + b64(good_claims().dump());
  std::string confused =
      confused_input + "." + b64(sign_hmac(read_text(keys().path("rsa", "pub")), confused_input));

  struct Case {
    const char* name;
    std::optional<std::string> authorization;
    std::string expected;  // a part of the description
  };
  const std::vector<Case> cases = {
      {"missing", std::nullopt,
       "no Authorization metadata; expected 'Authorization: Bearer <JWT>'"},
      {"not bearer", "Basic YWxpY2U6c2VjcmV0", "Authorization scheme 'Basic' is not Bearer"},
      {"expired", "Bearer " + token("rsa", with(good_claims(), "exp", now_seconds() - 60)),
       "token expired at "},
      {"not yet valid", "Bearer " + token("rsa", with(good_claims(), "nbf", now_seconds() + 600)),
       "token not valid before "},
      {"no expiry", "Bearer " + token("rsa", with(good_claims(), "exp", nullptr)),
       "token has no 'exp' claim; an expiry is required"},
      {"wrong issuer", "Bearer " + token("rsa", with(good_claims(), "iss", "https://evil.example")),
       "token issuer 'https://evil.example' is not the expected 'https://issuer.example'"},
      {"wrong audience", "Bearer " + token("rsa", with(good_claims(), "aud", "billing")),
       "token audience 'billing' does not include 'greeter'"},
      {"wrong signature",
       "Bearer " + token("rsa2", good_claims(), {{"alg", "RS256"}, {"kid", "rsa"}}),
       "token signature does not verify (RS256 with key 'rsa')"},
      {"alg none", "Bearer " + token("none"),
       "token algorithm 'none' is refused: unsigned tokens are never accepted"},
      {"HS/RS confusion", "Bearer " + confused, "token algorithm HS256 does not fit"},
      {"unsupported alg", "Bearer " + token("rsa", good_claims(), {{"alg", "PS256"}}),
       "token algorithm 'PS256' is not supported"},
      {"unknown kid", "Bearer " + token("rsa", good_claims(), {{"alg", "RS256"}, {"kid", "gone"}}),
       "token key id 'gone' matches no configured key (configured: hs, rsa, ec)"},
      {"two parts", "Bearer " + header_part + "." + payload_part,
       "malformed token: 2 part(s) separated by '.', expected 3"},
      {"header not base64url", "Bearer h%d." + payload_part + ".c2ln",
       "malformed token header (part 1): not base64url"},
      {"header not JSON", "Bearer " + b64("not json") + "." + payload_part + ".c2ln",
       "malformed token header (part 1): not a JSON object"},
      {"payload not base64url", "Bearer " + header_part + ".p*y.c2ln",
       "malformed token payload (part 2): not base64url"},
      {"payload not JSON", "Bearer " + header_part + "." + b64("[1,2]") + ".c2ln",
       "malformed token payload (part 2): not a JSON object"},
      {"signature not base64url", "Bearer " + header_part + "." + payload_part + ".s+g",
       "malformed token signature (part 3): not base64url"},
      {"header without alg", "Bearer " + b64("{}") + "." + payload_part + ".c2ln",
       "malformed token header (part 1): no 'alg' string"},
  };
  std::set<std::string> descriptions;
  for (const auto& each : cases) {
    CAPTURE(each.name);
    auto response = guarded.call(each.authorization);
    REQUIRE(response.error);
    CHECK(response.error->code == 401);
    CHECK(response.error->id == "micro.wrapper.auth");
    CHECK(response.error->detail.starts_with("Bearer realm=\"greeter\", error=\""));
    CHECK(response.metadata.get("WWW-Authenticate") == response.error->detail);
    std::string description = description_of(response);
    CHECK(description.find(each.expected) != std::string::npos);
    descriptions.insert(description);
  }
  CHECK(descriptions.size() == cases.size());  // no two refusals read alike
  CHECK(guarded.handled == 0);
}

TEST_CASE("auth: a missing scope is 403 naming the scope; scopes from scope or scp") {
  Guarded guarded(standard_options());
  auto refused = guarded.bearer(token("hs"), "Greeter.Admin");
  REQUIRE(refused.error);
  CHECK(refused.error->code == 403);
  CHECK(refused.error->detail.find("error=\"insufficient_scope\", scope=\"admin\"") !=
        std::string::npos);
  CHECK(description_of(refused) ==
        "token lacks scope 'admin' required by Greeter.Admin (token scopes: greet.read profile)");
  json claims = good_claims();
  claims.erase("scope");
  claims["scp"] = json::array({"admin", "greet.read"});
  CHECK_FALSE(guarded.bearer(token("hs", claims), "Greeter.Admin").error);
  claims.erase("scp");
  auto none = guarded.bearer(token("hs", claims), "Greeter.Hello");
  REQUIRE(none.error);
  CHECK(description_of(none) ==
        "token lacks scope 'greet.read' required by Greeter.Hello (token scopes: none)");
}

TEST_CASE("auth: claims forged by the caller never reach the handler") {
  Guarded guarded(standard_options());
  auto request = request_for("greeter", "Greeter.Hello");
  request->context.metadata().set("Micro-Auth-Claims", R"({"sub":"root"})");
  request->context.metadata().set("Authorization", "Bearer " + token("ec"));
  CHECK_FALSE(answer_of(guarded.handler, request).error);
  CHECK(json::parse(guarded.claims_seen)["sub"] == "alice");
}

TEST_CASE("auth: keys are reloaded when their file changes (rotation)") {
  fs::path rotating = keys().directory / "rotating.pub";
  fs::copy_file(keys().path("rsa", "pub"), rotating, fs::copy_options::overwrite_existing);
  Guarded guarded({{"keys", "main:" + rotating.string()}, {"reload", "10ms"}});
  json header = {{"alg", "RS256"}, {"kid", "main"}};
  std::string old_token = token("rsa", good_claims(), header);
  std::string new_token = token("rsa2", good_claims(), header);
  CHECK_FALSE(guarded.bearer(old_token).error);
  CHECK(description_of(guarded.bearer(new_token)).find("does not verify") != std::string::npos);

  // Rotate: the new public key replaces the old one (a new file renamed over it).
  fs::path staged = keys().directory / "rotating.pub.new";
  fs::copy_file(keys().path("rsa2", "pub"), staged, fs::copy_options::overwrite_existing);
  fs::rename(staged, rotating);
  REQUIRE(wait_until([&] { return !guarded.bearer(new_token).error; }));
  CHECK(guarded.bearer(old_token).error);

  // A broken file keeps the keys that work.
  {
    resilience_test::CapturedLog log;
    write_text(rotating, "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n");
    // Files are looked at when a request comes, at most every `reload`.
    REQUIRE(wait_until([&] {
      guarded.bearer(new_token);
      return log.count({"cannot reload keys"}) == 1;
    }));
    CHECK_FALSE(guarded.bearer(new_token).error);
  }
}

TEST_CASE("auth: bad key files and options are refused when the plugin is made") {
  micro::Runtime runtime{1};
  auto load = [&](resilience_test::Options options) {
    return resilience_test::load_wrapper("auth", options, runtime.executor());
  };
  CHECK_THROWS_WITH_AS(load({{"side", "server"}}), doctest::Contains("no keys"), micro::Exception);
  CHECK_THROWS_WITH_AS(load({{"keys", keys().path("short", "secret")}}),
                       doctest::Contains("HMAC secret of 9 bytes; at least 32"), micro::Exception);
  CHECK_THROWS_WITH_AS(load({{"keys", keys().path("small", "key")}}),
                       doctest::Contains("1024-bit RSA key; at least 2048"), micro::Exception);
  CHECK_THROWS_WITH_AS(load({{"keys", "/nonexistent/key.pem"}}),
                       doctest::Contains("cannot read key file '/nonexistent/key.pem'"),
                       micro::Exception);
  CHECK_THROWS_WITH_AS(load({{"keys", keys().path("ec", "pub")}, {"scopes", "Greeter.Hello"}}),
                       doctest::Contains("entry 'Greeter.Hello' at offset 0 is not endpoint:scope"),
                       micro::Exception);
}

TEST_CASE("auth over a real tcp server: the client attaches the token from its file") {
  fs::path token_file = keys().directory / "client.token";
  write_text(token_file, token("ec") + "\n");
  micro::Runtime runtime{1};
  auto server_auth = resilience_test::load_wrapper("auth", standard_options(), runtime.executor());
  auto client_auth = resilience_test::load_wrapper(
      "auth", {{"side", "client"}, {"token_file", token_file.string()}}, runtime.executor());
  micro::WrapperChains server_chains, client_chains, bare_client_chains;
  server_chains.add(server_auth->wrappers({"flaky", "1", "tcp", ""}));
  client_chains.add(client_auth->wrappers({"caller", "1", "tcp", ""}));
  std::string seen;
  resilience_test::Services services(
      std::move(server_chains), std::move(client_chains), [&](micro::Server& server) {
        server.handle("Greeter.Hello",
                      [&](const micro::RequestPtr& request, micro::ResponseHandler respond) {
                        seen = request->context.metadata().get("Micro-Auth-Claims");
                        micro::Response response;
                        response.body = "{}";
                        respond(std::move(response));
                      });
      });
  micro::Request request;
  request.service = "flaky";
  request.endpoint = "Greeter.Hello";
  request.body = "{}";
  auto response = services.client->call(std::move(request));
  CHECK_FALSE(response.error);
  REQUIRE_FALSE(seen.empty());
  CHECK(json::parse(seen)["sub"] == "alice");

  // Without the client side, the server's 401 and its challenge reach the caller.
  micro::Client bare(micro::ClientOptions{}, services.transport, services.cache, services.selector,
                     nullptr, {}, services.runtime.executor());
  micro::Request unauthenticated;
  unauthenticated.service = "flaky";
  unauthenticated.endpoint = "Greeter.Hello";
  unauthenticated.body = "{}";
  try {
    bare.call(std::move(unauthenticated));
    FAIL("expected a 401");
  } catch (const micro::Exception& error) {
    CHECK(error.error().code == 401);
    CHECK(error.error().detail.find("no Authorization metadata") != std::string::npos);
  }
}

TEST_CASE("auth client side: forwards an incoming token, or replaces it when forward=false") {
  fs::path token_file = keys().directory / "service.token";
  write_text(token_file, "service-token");
  micro::Runtime runtime{1};
  auto seen_by = [&](resilience_test::Options options, std::optional<std::string> incoming) {
    auto wrapper = resilience_test::load_wrapper("auth", options, runtime.executor());
    micro::WrapperChains chains;
    chains.add(wrapper->wrappers({"caller", "1", "tcp", ""}));
    std::string seen = "<none>";
    bool claims_left = true;
    auto client = chains.wrap_client([&](const micro::RequestPtr& request,
                                         const micro::CallOptions&, micro::ResponseHandler done) {
      seen = request->context.metadata().get("Authorization", "<none>");
      claims_left = request->context.metadata().contains("Micro-Auth-Claims");
      done(micro::Response{});
    });
    auto request = request_for("billing", "Billing.Charge");
    request->context.metadata().set("Micro-Auth-Claims", "{}");
    if (incoming) request->context.metadata().set("Authorization", *incoming);
    client(request, {}, [](micro::Response&&) {});
    CHECK_FALSE(claims_left);
    return seen;
  };
  std::string file = token_file.string();
  CHECK(seen_by({{"side", "client"}, {"token_file", file}}, "Bearer user") == "Bearer user");
  CHECK(seen_by({{"side", "client"}, {"token_file", file}}, std::nullopt) ==
        "Bearer service-token");
  CHECK(seen_by({{"side", "client"}, {"token_file", file}, {"forward", "false"}}, "Bearer user") ==
        "Bearer service-token");
  CHECK(seen_by({{"side", "client"}, {"forward", "false"}}, "Bearer user") == "<none>");
}

TEST_CASE("auth: a token remembered as verified still expires") {
  auto options = standard_options();
  for (auto& [name, value] : options)
    if (name == "leeway") value = "0";
  Guarded guarded(options);
  json claims = good_claims();
  claims["exp"] = now_seconds() + 1;
  std::string short_lived = token("rsa", claims);
  CHECK_FALSE(guarded.bearer(short_lived).error);
  CHECK_FALSE(guarded.bearer(short_lived).error);  // from the cache
  REQUIRE(wait_until([&] { return guarded.bearer(short_lived).error.has_value(); }, 10s, 20ms));
  CHECK(description_of(guarded.bearer(short_lived)).find("token expired at ") != std::string::npos);
}
