// wrappers/auth — Bearer JWTs: the handler wrapper verifies `Authorization: Bearer <JWT>`
// from the request's metadata (401 / 403 otherwise) and hands the verified claims to the
// handler as the metadata entry `Micro-Auth-Claims` (their JSON); the client wrapper attaches
// a configured token, or forwards the one already in the call's metadata.
//
// Keys and the token come from files and are reloaded when a file changes (its mtime, size
// or inode): at most once per `reload` interval, checked by whichever request comes first
// after it, so a rotation needs no signal and no restart.
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <micro/error.hpp>
#include <micro/log.hpp>
#include <micro/plugin.hpp>
#include <micro/text.hpp>
#include <micro/wrapper.hpp>

#include "jwt.hpp"

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::string_view log_component = "wrapper auth";
constexpr std::string_view claims_key = "Micro-Auth-Claims";
constexpr std::string_view authorization_key = "Authorization";

// What identifies a version of a file: a rewrite changes the mtime, a rename-over the inode.
struct FileStamp {
  std::int64_t mtime_ns = -1, size = -1;
  std::uint64_t inode = 0;
  friend bool operator==(const FileStamp&, const FileStamp&) = default;
};

FileStamp stamp_of(const std::string& path) {
  struct stat status {};
  if (::stat(path.c_str(), &status) != 0) return {};
  return {static_cast<std::int64_t>(status.st_mtim.tv_sec) * 1000000000 + status.st_mtim.tv_nsec,
          static_cast<std::int64_t>(status.st_size), static_cast<std::uint64_t>(status.st_ino)};
}

// A value built from files, rebuilt when one of them changes. get() is a load and a compare
// on the hot path; the check (a stat per file) runs at most once per interval, on the thread
// that finds it due, and a failed rebuild keeps the previous value (logged once per change).
template <class Value>
class Reloading {
 public:
  using Load = std::function<std::shared_ptr<const Value>()>;

  Reloading(std::vector<std::string> paths, Load load, Clock::duration interval, std::string what)
      : paths_(std::move(paths)),
        load_(std::move(load)),
        interval_(interval),
        what_(std::move(what)) {
    stamps_ = stamps();
    value_ = load_();  // throws: a plugin with unreadable files is not created
    next_check_.store((Clock::now() + interval_).time_since_epoch().count());
  }

  std::shared_ptr<const Value> get(Clock::time_point now) {
    auto due = next_check_.load(std::memory_order_relaxed);
    if (now.time_since_epoch().count() >= due &&
        next_check_.compare_exchange_strong(due, (now + interval_).time_since_epoch().count()))
      check();
    std::lock_guard lock(mutex_);
    return value_;
  }

 private:
  std::vector<FileStamp> stamps() const {
    std::vector<FileStamp> result;
    for (const auto& path : paths_) result.push_back(stamp_of(path));
    return result;
  }

  void check() {
    auto current = stamps();
    if (current == stamps_) return;
    stamps_ = current;  // only this thread (the CAS winner) touches stamps_
    try {
      auto fresh = load_();
      {
        std::lock_guard lock(mutex_);
        value_ = std::move(fresh);
      }
      micro::log::info(log_component, "reloaded " + what_);
    } catch (const std::exception& error) {
      micro::log::warn(log_component,
                       "cannot reload " + what_ + ", keeping the previous ones: " + error.what());
    }
  }

  const std::vector<std::string> paths_;
  const Load load_;
  const Clock::duration interval_;
  const std::string what_;
  std::vector<FileStamp> stamps_;
  std::atomic<Clock::rep> next_check_{0};
  std::mutex mutex_;
  std::shared_ptr<const Value> value_;
};

struct KeyFile {
  std::string id, path;
};

// "main:/etc/jwt/a.pem;/etc/jwt/b.secret": `[kid:]path` entries separated by ';'. A ':' is
// taken as the kid's end only when no '/' comes before it.
std::vector<KeyFile> parse_keys(const std::string& text, const std::string& error_id) {
  std::vector<KeyFile> files;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t end = std::min(text.find(';', start), text.size());
    std::string entry = text.substr(start, end - start);
    if (entry.empty())
      throw micro::Exception(micro::bad_request(
          error_id, "option keys: empty entry at offset " + std::to_string(start) +
                        "; expected [kid:]path entries separated by ';'"));
    KeyFile file;
    std::size_t colon = entry.find(':');
    if (colon != std::string::npos && entry.substr(0, colon).find('/') == std::string::npos) {
      file.id = entry.substr(0, colon);
      file.path = entry.substr(colon + 1);
    } else {
      file.path = entry;
    }
    if (file.path.empty())
      throw micro::Exception(micro::bad_request(
          error_id, "option keys: key id '" + file.id + "' has no path; expected kid:path"));
    files.push_back(std::move(file));
    start = end + 1;
  }
  return files;
}

// "Greeter.Hello:greet.read+greet.write;*:api" → endpoint → scopes ('+' or ' ' between
// scopes, all required; '*' applies to every endpoint).
micro::StringMap<std::vector<std::string>> parse_scopes(const std::string& text,
                                                        const std::string& error_id) {
  micro::StringMap<std::vector<std::string>> scopes;
  if (text.empty()) return scopes;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t end = std::min(text.find(';', start), text.size());
    std::string entry = text.substr(start, end - start);
    std::size_t colon = entry.find(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == entry.size())
      throw micro::Exception(micro::bad_request(
          error_id, "option scopes: entry '" + entry + "' at offset " + std::to_string(start) +
                        " is not endpoint:scope; expected like Greeter.Hello:greet.read"));
    auto& list = scopes[entry.substr(0, colon)];
    std::string names = entry.substr(colon + 1);
    for (char& character : names)
      if (character == '+') character = ' ';
    std::istringstream words(names);
    for (std::string word; words >> word;) list.push_back(word);
    start = end + 1;
  }
  return scopes;
}

std::string read_token(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read token file '" + path + "'");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  std::string token = buffer.str();
  auto is_space = [](char c) {
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
  };
  while (!token.empty() && is_space(token.back())) token.pop_back();
  std::size_t first = 0;
  while (first < token.size() && is_space(token[first])) ++first;
  token.erase(0, first);
  if (token.empty()) throw std::runtime_error("token file '" + path + "' is empty");
  if (token.size() > auth::max_token_size)
    throw std::runtime_error("token file '" + path + "' holds more than " +
                             std::to_string(auth::max_token_size) + " bytes");
  return token;
}

// The detail of a refusal, shaped like RFC 6750's WWW-Authenticate challenge.
std::string challenge(const std::string& realm, const auth::Refusal& refusal) {
  std::string text = "Bearer realm=\"" + realm + "\"";
  if (!refusal.error.empty()) text += ", error=\"" + refusal.error + "\"";
  if (!refusal.scope.empty()) text += ", scope=\"" + refusal.scope + "\"";
  text += ", error_description=\"" + refusal.description + "\"";
  return text;
}

// What a verified token leaves behind, so that the next request with the same token skips the
// parsing and the signature: the claims as JSON, the scopes, the expiry (checked on every hit)
// and the key set it was verified with (a reload of the keys makes every entry a miss).
struct VerifiedToken {
  std::shared_ptr<const auth::KeySet> keys;
  std::optional<double> expiry;  // seconds since the epoch
  std::vector<std::string> scopes;
  std::string claims;
};

// Verified tokens by their text, at most `capacity` (when full it starts again empty: clients
// reuse few tokens, and a flood of distinct ones must not grow memory). One small critical
// section per request.
class TokenCache {
 public:
  explicit TokenCache(std::size_t capacity) : capacity_(capacity) {}

  std::shared_ptr<const VerifiedToken> find(std::string_view token,
                                            const std::shared_ptr<const auth::KeySet>& keys,
                                            std::chrono::system_clock::time_point now,
                                            std::chrono::seconds leeway) {
    std::shared_ptr<const VerifiedToken> entry;
    {
      std::lock_guard lock(mutex_);
      auto found = entries_.find(token);
      if (found == entries_.end()) return nullptr;
      entry = found->second;
    }
    if (entry->keys != keys) return nullptr;
    double seconds = std::chrono::duration<double>(now.time_since_epoch()).count();
    if (entry->expiry && seconds >= *entry->expiry + static_cast<double>(leeway.count()))
      return nullptr;  // verify() says how long ago it expired
    return entry;
  }

  void insert(std::string_view token, std::shared_ptr<const VerifiedToken> entry) {
    std::lock_guard lock(mutex_);
    if (entries_.size() >= capacity_) entries_.clear();
    entries_[std::string(token)] = std::move(entry);
  }

 private:
  const std::size_t capacity_;
  std::mutex mutex_;
  micro::StringMap<std::shared_ptr<const VerifiedToken>> entries_;
};

struct Authenticator {
  std::unique_ptr<TokenCache> cache;
  std::string error_id;
  std::string realm;
  auth::Expectations expectations;
  micro::StringMap<std::vector<std::string>> scopes;
  std::unique_ptr<Reloading<auth::KeySet>> keys;
  std::unique_ptr<Reloading<std::string>> token;
  bool forward = true;

  // The scopes `endpoint` requires: its own and those of '*'.
  std::vector<std::string> required(std::string_view endpoint) const {
    std::vector<std::string> result;
    for (std::string_view name : {endpoint, std::string_view("*")}) {
      auto found = scopes.find(name);
      if (found != scopes.end())
        result.insert(result.end(), found->second.begin(), found->second.end());
    }
    return result;
  }

  // Checks the request; returns the refusal, or nullopt after putting the claims in.
  std::optional<auth::Refusal> check(micro::Request& request) const {
    auto& metadata = request.context.metadata();
    metadata.erase(claims_key);  // only this wrapper says what the claims are
    const std::string* header = metadata.find(authorization_key);
    if (!header)
      return auth::Refusal{401,
                           "invalid_request",
                           "no Authorization metadata; expected 'Authorization: Bearer <JWT>'",
                           {}};
    std::string_view value = *header;
    std::size_t space = value.find(' ');
    std::string_view scheme = value.substr(0, space);
    if (!micro::iequals(scheme, "Bearer") || space == std::string_view::npos)
      return auth::Refusal{401,
                           "invalid_request",
                           "Authorization scheme '" + std::string(scheme.substr(0, 32)) +
                               "' is not Bearer; expected 'Authorization: Bearer <JWT>'",
                           {}};
    std::string_view token = value.substr(space + 1);
    while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
    auto key_set = keys->get(Clock::now());
    auto now = std::chrono::system_clock::now();
    std::shared_ptr<const VerifiedToken> verified;
    if (cache) verified = cache->find(token, key_set, now, expectations.leeway);
    if (!verified) {
      auth::Refusal refusal;
      auto result = auth::verify(token, *key_set, expectations, now, refusal);
      if (!result) return refusal;
      auto fresh = std::make_shared<VerifiedToken>();
      fresh->keys = key_set;
      if (auto exp = result->claims.find("exp"); exp != result->claims.end())
        fresh->expiry = exp->get<double>();
      fresh->scopes = auth::scopes_of(result->claims);
      fresh->claims = result->claims.dump();
      verified = fresh;
      if (cache) cache->insert(token, std::move(fresh));
    }
    auto needed = required(request.endpoint);
    if (!needed.empty()) {
      const auto& granted = verified->scopes;
      std::string missing;
      for (const auto& scope : needed)
        if (std::find(granted.begin(), granted.end(), scope) == granted.end())
          missing += (missing.empty() ? "" : " ") + scope;
      if (!missing.empty()) {
        std::string held;
        for (const auto& scope : granted) held += (held.empty() ? "" : " ") + scope;
        return auth::Refusal{403, "insufficient_scope",
                             "token lacks scope '" + missing + "' required by " + request.endpoint +
                                 " (token scopes: " + (held.empty() ? "none" : held) + ")",
                             missing};
      }
    }
    metadata.set(claims_key, verified->claims);
    return std::nullopt;
  }
};

class AuthWrapper final : public micro::Wrapper {
 public:
  explicit AuthWrapper(const micro::PluginArguments& arguments)
      : authenticator_(std::make_shared<Authenticator>()) {
    auto& self = *authenticator_;
    self.error_id = arguments.error_id();
    std::string side = arguments.get_string("side");
    if (side != "server" && side != "client" && side != "both")
      throw micro::Exception(micro::bad_request(
          self.error_id, "option side: '" + side + "' is not server, client or both"));
    server_ = side != "client";
    client_ = side != "server";
    Clock::duration interval = arguments.get_duration("reload");
    if (arguments.has("issuer")) self.expectations.issuer = arguments.get_string("issuer");
    if (arguments.has("audience")) self.expectations.audience = arguments.get_string("audience");
    self.expectations.leeway =
        std::chrono::duration_cast<std::chrono::seconds>(arguments.get_duration("leeway"));
    self.expectations.require_expiry = arguments.get_bool("require_exp");
    self.forward = arguments.get_bool("forward");
    if (auto capacity = arguments.get_int("cache"); capacity > 0)
      self.cache = std::make_unique<TokenCache>(static_cast<std::size_t>(capacity));
    if (arguments.has("realm")) realm_ = arguments.get_string("realm");
    if (arguments.has("scopes"))
      self.scopes = parse_scopes(arguments.get_string("scopes"), self.error_id);
    try {
      if (server_) {
        if (!arguments.has("keys"))
          throw micro::Exception(
              micro::bad_request(self.error_id,
                                 "no keys: the server side verifies tokens and needs "
                                 "keys=[kid:]path;… (PEM public keys, certificates or HMAC secret "
                                 "files), or side=client"));
        auto files = parse_keys(arguments.get_string("keys"), self.error_id);
        std::vector<std::string> paths;
        for (const auto& file : files) paths.push_back(file.path);
        self.keys = std::make_unique<Reloading<auth::KeySet>>(
            paths,
            [files] {
              auto set = std::make_shared<auth::KeySet>();
              for (const auto& file : files)
                set->keys.push_back(auth::load_key(file.id, file.path));
              return std::shared_ptr<const auth::KeySet>(std::move(set));
            },
            interval, "keys");
      }
      if (client_ && arguments.has("token_file")) {
        std::string path = arguments.get_string("token_file");
        self.token = std::make_unique<Reloading<std::string>>(
            std::vector<std::string>{path},
            [path] { return std::make_shared<const std::string>("Bearer " + read_token(path)); },
            interval, "token");
      }
    } catch (const std::runtime_error& error) {
      if (dynamic_cast<const micro::Exception*>(&error)) throw;
      throw micro::Exception(micro::bad_request(self.error_id, error.what()));
    }
  }

  micro::WrapperSet wrappers(const micro::WrapperScope& scope) override {
    micro::WrapperSet set;
    auto authenticator = authenticator_;
    if (server_) {
      std::string realm = realm_.empty() ? scope.service_name : realm_;
      set.handler = [authenticator, realm](micro::HandlerFunction next) {
        return micro::HandlerFunction(
            [authenticator, realm, next = std::move(next)](const micro::RequestPtr& request,
                                                           micro::ResponseHandler respond) {
              auto refusal = authenticator->check(*request);
              if (!refusal) {
                next(request, std::move(respond));
                return;
              }
              std::string detail = challenge(realm, *refusal);
              auto response = micro::Response::failure(
                  micro::Error(authenticator->error_id, refusal->code, detail));
              response.metadata.set("WWW-Authenticate", std::move(detail));
              respond(std::move(response));
            });
      };
    }
    if (client_) {
      set.client = [authenticator](micro::ClientFunction next) {
        return micro::ClientFunction(
            [authenticator, next = std::move(next)](const micro::RequestPtr& request,
                                                    const micro::CallOptions& options,
                                                    micro::ResponseHandler done) {
              auto& metadata = request->context.metadata();
              metadata.erase(claims_key);  // the next service derives its own
              bool keep = authenticator->forward && metadata.contains(authorization_key);
              if (!keep) {
                if (authenticator->token)
                  metadata.set(authorization_key, *authenticator->token->get(Clock::now()));
                else
                  metadata.erase(authorization_key);
              }
              next(request, options, std::move(done));
            });
      };
    }
    return set;
  }

 private:
  std::shared_ptr<Authenticator> authenticator_;
  std::string realm_;
  bool server_ = true, client_ = true;
};

const micro::PluginOption options[] = {
    {"keys", "string", nullptr,
     "verification keys: [kid:]path entries separated by ';' (PEM public key, certificate or "
     "private key for RS*/ES*; any other file is an HMAC secret for HS*)"},
    {"issuer", "string", nullptr, "required 'iss' claim"},
    {"audience", "string", nullptr, "required in the 'aud' claim (a string or an array)"},
    {"leeway", "duration", "30s", "clock skew allowed for exp and nbf", "0", "1h"},
    {"require_exp", "bool", "true", "refuse tokens without an 'exp' claim"},
    {"scopes", "string", nullptr,
     "required scopes per endpoint: Endpoint:scope+scope;…, '*' for every endpoint"},
    {"realm", "string", nullptr, "realm named in refusals (default: the service name)"},
    {"token_file", "string", nullptr, "client side: the token to attach (reloaded on change)"},
    {"forward", "bool", "true",
     "client side: keep an Authorization already in the call's metadata (the incoming one, "
     "when the handler passes its context on); false: replace it with token_file or drop it"},
    {"side", "string", "both", "server (verify), client (attach) or both"},
    {"cache", "int", "1024", "verified tokens remembered (0: verify every request in full)", "0",
     "1000000"},
    {"reload", "duration", "10s", "how often key and token files are checked for changes", "0",
     "1h"},
};

}  // namespace

MICRO_PLUGIN(wrapper, auth, "Bearer JWT verification (HS/RS/ES) and token forwarding", options,
             [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new AuthWrapper(arguments);
             })
