// Tests of micro::Config: the string form, plugin items, environment, flags, JSON, the
// precedence between them, to_string round trips, and the exact text of every error.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <micro/client.hpp>
#include <micro/config.hpp>
#include <micro/server.hpp>

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Options = std::vector<std::pair<std::string, std::string>>;

// The message of the ConfigError that parsing `text` throws.
std::string parse_error(std::string_view text) {
  try {
    micro::Config::parse(text);
  } catch (const micro::ConfigError& error) {
    CHECK(error.error().code == 400);
    CHECK(std::string(error.what()) == error.error().detail);
    return error.what();
  }
  FAIL("no error for: " << text);
  return {};
}

void check_same(const micro::Config& a, const micro::Config& b) {
  CHECK(a.registry == b.registry);
  CHECK(a.broker == b.broker);
  CHECK(a.selector == b.selector);
  CHECK(a.transport == b.transport);
  CHECK(a.wrappers == b.wrappers);
  CHECK(a.server_name == b.server_name);
  CHECK(a.server_version == b.server_version);
  CHECK(a.server_address == b.server_address);
  CHECK(a.server_advertise == b.server_advertise);
  CHECK(a.register_ttl == b.register_ttl);
  CHECK(a.register_interval == b.register_interval);
  CHECK(a.drain_timeout == b.drain_timeout);
  CHECK(a.client_request_timeout == b.client_request_timeout);
  CHECK(a.client_retries == b.client_retries);
  CHECK(a.threads == b.threads);
  CHECK(a.log_level == b.log_level);
}

// A writable argv built from strings, as main() receives it.
struct Arguments {
  std::vector<std::string> storage;
  std::vector<char*> pointers;
  int argc = 0;
  explicit Arguments(std::vector<std::string> words) : storage(std::move(words)) {
    for (auto& word : storage) pointers.push_back(word.data());
    pointers.push_back(nullptr);
    argc = static_cast<int>(storage.size());
  }
  char** argv() { return pointers.data(); }
  std::vector<std::string> remaining() const {
    std::vector<std::string> result;
    for (int index = 0; index < argc; ++index) result.emplace_back(pointers[index]);
    CHECK(pointers[argc] == nullptr);
    return result;
  }
};

// Sets environment variables for one test and restores them afterwards; also clears every
// MICRO_* key so the machine's own environment cannot leak in.
struct EnvironmentScope {
  std::map<std::string, std::optional<std::string>> saved;
  EnvironmentScope() {
    for (const auto& [key, help] : micro::Config::keys()) {
      std::string name = "MICRO_";
      for (char character : key) name += static_cast<char>(std::toupper(character));
      unset(name);
    }
    unset("MICRO_CONFIG_FILE");
  }
  void remember(const std::string& name) {
    if (saved.count(name)) return;
    const char* value = std::getenv(name.c_str());
    saved[name] = value ? std::optional<std::string>(value) : std::nullopt;
  }
  void set(const std::string& name, const std::string& value) {
    remember(name);
    ::setenv(name.c_str(), value.c_str(), 1);
  }
  void unset(const std::string& name) {
    remember(name);
    ::unsetenv(name.c_str());
  }
  ~EnvironmentScope() {
    for (const auto& [name, value] : saved) {
      if (value) {
        ::setenv(name.c_str(), value->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
  }
};

struct TemporaryFile {
  std::filesystem::path path;
  TemporaryFile(std::string_view name, std::string_view contents) {
    path = std::filesystem::temp_directory_path() /
           ("micro-config-test-" + std::to_string(::getpid()) + "-" + std::string(name));
    std::ofstream(path) << contents;
  }
  ~TemporaryFile() {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
};

}  // namespace

TEST_CASE("defaults") {
  micro::Config config;
  CHECK(config.registry.name == "file");
  CHECK(config.broker.name == "memory");
  CHECK(config.selector.name == "random");
  CHECK(config.transport.name == "tcp");
  CHECK(config.wrappers.empty());
  CHECK(config.register_ttl == seconds(30));
  CHECK(config.client_retries == 1);
  CHECK(config.to_string() ==
        "registry=file broker=memory selector=random transport=tcp server_version=latest "
        "server_address=127.0.0.1:0 register_ttl=30s register_interval=10s drain_timeout=10s "
        "client_request_timeout=5s client_retries=1 client_retry_budget=20 threads=0");
  auto empty = micro::Config::parse("  \t\n ");
  check_same(empty, config);
}

TEST_CASE("every key in the string form") {
  auto config = micro::Config::parse(
      "registry=etcd://127.0.0.1:2379?ttl=30s broker=nats://127.0.0.1:4222 selector=p2c "
      "transport=http?keepalive=true wrappers=trace?sampler=parentbased_traceidratio&ratio=0.1,log "
      "server_name=greeter server_version=1.2.0 server_address=0.0.0.0:8080 "
      "server_advertise=10.1.2.3:8080 register_ttl=1m register_interval=15s drain_timeout=2s "
      "client_request_timeout=250ms client_retries=3 threads=4");
  CHECK(config.registry == micro::PluginChoice{"etcd", "127.0.0.1:2379", {{"ttl", "30s"}}});
  CHECK(config.broker == micro::PluginChoice{"nats", "127.0.0.1:4222", {}});
  CHECK(config.selector == micro::PluginChoice{"p2c", "", {}});
  CHECK(config.transport == micro::PluginChoice{"http", "", {{"keepalive", "true"}}});
  REQUIRE(config.wrappers.size() == 2);
  CHECK(config.wrappers[0] ==
        micro::PluginChoice{
            "trace", "", {{"sampler", "parentbased_traceidratio"}, {"ratio", "0.1"}}});
  CHECK(config.wrappers[1] == micro::PluginChoice{"log", "", {}});
  CHECK(config.server_name == "greeter");
  CHECK(config.server_version == "1.2.0");
  CHECK(config.server_address == "0.0.0.0:8080");
  CHECK(config.server_advertise == "10.1.2.3:8080");
  CHECK(config.register_ttl == seconds(60));
  CHECK(config.register_interval == seconds(15));
  CHECK(config.drain_timeout == seconds(2));
  CHECK(config.client_request_timeout == milliseconds(250));
  CHECK(config.client_retries == 3);
  CHECK(config.threads == 4u);
  CHECK(config.registry.origin == "config string at position 9");
  CHECK(config.broker.origin == "config string at position 46");
}

TEST_CASE("addresses: clusters, separate address keys, escapes") {
  auto cluster = micro::Config::parse(
      "registry=etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379?ttl=30s&prefix=/micro "
      "broker=nats://a:4222,b:4222");
  CHECK(cluster.registry.address == "10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379");
  CHECK(cluster.registry.options == Options{{"ttl", "30s"}, {"prefix", "/micro"}});
  CHECK(cluster.broker.address == "a:4222,b:4222");

  // The address keys apply after their plugin key whichever way round they are written.
  auto separate = micro::Config::parse(
      "registry_address=e1:2379,e2:2379 registry=etcd broker_address=n:4222 broker=nats");
  CHECK(separate.registry == micro::PluginChoice{"etcd", "e1:2379,e2:2379", {}});
  CHECK(separate.broker == micro::PluginChoice{"nats", "n:4222", {}});
  CHECK(separate.transport == micro::PluginChoice{"tcp", "", {}});

  auto escaped = micro::Config::parse(
      "registry=file:///var/lib/micro%20registry?mode=a%26b%3Dc%25 server_name=hello%20world "
      "wrappers=auth?token=x%2Cy,log");
  CHECK(escaped.registry.address == "/var/lib/micro registry");
  CHECK(escaped.registry.options == Options{{"mode", "a&b=c%"}});
  CHECK(escaped.server_name == "hello world");
  REQUIRE(escaped.wrappers.size() == 2);
  CHECK(escaped.wrappers[0].options == Options{{"token", "x,y"}});

  // '=' inside a value is fine (base64 tokens end with it); an empty value is allowed.
  auto values = micro::Config::parse("broker=nats?token=abc==&user=");
  CHECK(values.broker.options == Options{{"token", "abc=="}, {"user", ""}});
}

TEST_CASE("wrappers: lists, options, and clearing") {
  auto config = micro::Config::parse(
      "wrappers=trace?ratio=0.1&sampler=always_on,log?level=debug,metrics,ratelimit://"
      "limiter:1?rate=100");
  REQUIRE(config.wrappers.size() == 4);
  CHECK(config.wrappers[0].name == "trace");
  CHECK(config.wrappers[0].options == Options{{"ratio", "0.1"}, {"sampler", "always_on"}});
  CHECK(config.wrappers[1] == micro::PluginChoice{"log", "", {{"level", "debug"}}});
  CHECK(config.wrappers[2] == micro::PluginChoice{"metrics", "", {}});
  CHECK(config.wrappers[3] == micro::PluginChoice{"ratelimit", "limiter:1", {{"rate", "100"}}});
  CHECK(config.wrappers[2].origin == "config string at position 59");

  config.apply_string("wrappers=");
  CHECK(config.wrappers.empty());
}

TEST_CASE("parse_plugin_choice on its own") {
  auto choice = micro::parse_plugin_choice("etcd://a:1,b:2?ttl=30s", "MICRO_REGISTRY");
  CHECK(choice == micro::PluginChoice{"etcd", "a:1,b:2", {{"ttl", "30s"}}});
  CHECK(choice.origin == "MICRO_REGISTRY");
  try {
    micro::parse_plugin_choice("etcd?ttl", "somewhere", 100);
    FAIL("no error");
  } catch (const micro::ConfigError& error) {
    CHECK(error.origin() == "somewhere");
    CHECK(error.position() == 108);
    CHECK(std::string(error.what()) ==
          "somewhere, position 108: option 'ttl' has no '='; expected ttl=value");
  }
}

TEST_CASE("malformed strings: position and expectation in every message") {
  const std::string all_keys =
      "registry, registry_address, broker, broker_address, selector, transport, wrappers, "
      "server_name, server_version, server_address, server_advertise, register_ttl, "
      "register_interval, drain_timeout, client_request_timeout, client_retries, "
      "client_retry_budget, threads, log_level, admin, admin_token, shutdown_delay";
  const std::string name_rule =
      "a plugin name: a lower-case letter, then lower-case letters, digits or '_'";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"regsitry=etcd", "config string, position 0: unknown key 'regsitry'; expected one of: " +
                            all_keys + " (did you mean 'registry'?)"},
      {"selector=p2c colour=red",
       "config string, position 13: unknown key 'colour'; expected one of: " + all_keys},
      {"Registry=etcd", "config string, position 0: unknown key 'Registry'; expected one of: " +
                            all_keys + " (did you mean 'registry'?)"},
      {"registry",
       "config string, position 8: 'registry' has no '='; expected key=value, like "
       "registry=etcd"},
      {"=etcd", "config string, position 0: empty key before '='; expected one of: " + all_keys},
      {"registry=etcd registry=file",
       "config string, position 14: key 'registry' is set twice (first at position 0); "
       "expected each key at most once"},
      {"registry=", "config string, position 9: empty plugin name; expected " + name_rule},
      {"registry=Etcd",
       "config string, position 9: 'Etcd' is not a plugin name (bad character 'E'); expected " +
           name_rule},
      {"selector=round-robin",
       "config string, position 14: 'round-robin' is not a plugin name (bad character '-'); "
       "expected " +
           name_rule},
      {"registry=../evil",
       "config string, position 9: '../evil' is not a plugin name (bad character '.'); "
       "expected " +
           name_rule},
      {"registry=etcd:2379",
       "config string, position 13: ':' after the plugin name 'etcd' does not start '://'; "
       "expected name://address, like etcd://127.0.0.1:2379"},
      {"registry=etcd://",
       "config string, position 16: empty address after 'etcd://'; expected an address like "
       "127.0.0.1:2379, or no '://' at all"},
      {"registry=etcd://a:1,,b:2",
       "config string, position 20: empty address in the list 'a:1,,b:2'; expected host:port "
       "entries separated by single commas"},
      {"broker=nats://a:1,",
       "config string, position 18: empty address in the list 'a:1,'; expected host:port "
       "entries separated by single commas"},
      {"registry=etcd?",
       "config string, position 14: nothing after '?'; expected options as key=value pairs "
       "joined by '&'"},
      {"registry=etcd?ttl",
       "config string, position 17: option 'ttl' has no '='; expected ttl=value"},
      {"registry=etcd?=30s",
       "config string, position 14: empty option key before '='; expected key=value"},
      {"registry=etcd?ttl=1s&&prefix=x",
       "config string, position 21: empty option; expected key=value pairs joined by single "
       "'&'"},
      {"registry=etcd?ttl=1s&",
       "config string, position 21: empty option; expected key=value pairs joined by single "
       "'&'"},
      {"registry=etcd?ttl=1s&ttl=2s",
       "config string, position 21: option 'ttl' is given twice; expected each option once"},
      {"registry=etcd?9lives=1",
       "config string, position 14: '9lives' is not an option name (bad character '9'); "
       "expected a letter, then letters, digits, '_', '-' or '.'"},
      {"registry=etcd?prefix=%2",
       "config string, position 21: unterminated %-escape '%2'; expected '%' and two hex "
       "digits, like %2C"},
      {"server_name=a%zzb",
       "config string, position 13: bad %-escape '%zz'; expected '%' and two hex digits, like "
       "%2C"},
      {"registry=etcd://a%2",
       "config string, position 17: unterminated %-escape '%2'; expected '%' and two hex "
       "digits, like %2C"},
      {"wrappers=trace,,log",
       "config string, position 15: empty item in the wrappers list; expected plugin items "
       "separated by single commas, like trace?ratio=0.1,log (a comma inside a value is "
       "written %2C)"},
      {"wrappers=,log",
       "config string, position 9: empty item in the wrappers list; expected plugin items "
       "separated by single commas, like trace?ratio=0.1,log (a comma inside a value is "
       "written %2C)"},
      {"wrappers=log,",
       "config string, position 13: empty item in the wrappers list; expected plugin items "
       "separated by single commas, like trace?ratio=0.1,log (a comma inside a value is "
       "written %2C)"},
      {"wrappers=trace?ratio=0.1,Log",
       "config string, position 25: 'Log' is not a plugin name (bad character 'L'); expected " +
           name_rule},
      {"registry=etcd,file",
       "config string, position 13: 'etcd,file' is not a plugin name (bad character ','); "
       "expected " +
           name_rule},
      {"register_ttl=30x",
       "config string, position 13: bad duration '30x' for register_ttl; expected a duration "
       "like 30s, 250ms, 5m or 1h"},
      {"drain_timeout=-1s",
       "config string, position 14: bad duration '-1s' for drain_timeout; expected a duration "
       "like 30s, 250ms, 5m or 1h"},
      {"client_request_timeout=",
       "config string, position 23: bad duration '' for client_request_timeout; expected a "
       "duration like 30s, 250ms, 5m or 1h"},
      {"client_retries=-1",
       "config string, position 15: client_retries must not be negative, got -1; expected a "
       "whole number from 0 to 100"},
      {"client_retries=three",
       "config string, position 15: bad number 'three' for client_retries; expected a whole "
       "number from 0 to 100"},
      {"client_retries=2.5",
       "config string, position 15: bad number '2.5' for client_retries; expected a whole "
       "number from 0 to 100"},
      {"threads=5000",
       "config string, position 8: threads 5000 is too large; expected a whole number from 0 "
       "(one per hardware thread) to 1024"},
      {"threads=99999999999999999999",
       "config string, position 8: threads 99999999999999999999 is too large; expected a whole "
       "number from 0 (one per hardware thread) to 1024"},
      {"threads=",
       "config string, position 8: bad number '' for threads; expected a whole number from 0 "
       "(one per hardware thread) to 1024"},
      {"registry_address=a:1,,b:2",
       "config string, position 21: empty address in the list 'a:1,,b:2'; expected host:port "
       "entries separated by single commas"},
  };
  for (const auto& [text, expected] : cases) {
    CAPTURE(text);
    CHECK(parse_error(text) == expected);
  }
  CHECK(cases.size() >= 20);
  // A bare number is a duration in seconds, not an error.
  CHECK(micro::Config::parse("register_ttl=30").register_ttl == seconds(30));
}

TEST_CASE("a string that fails leaves the configuration as it was") {
  micro::Config config;
  config.apply_string("registry=memory");
  CHECK_THROWS_AS(config.apply_string("broker=nats registry=etcd threads=x"), micro::ConfigError);
  CHECK(config.registry.name == "memory");
  CHECK(config.broker.name == "memory");
}

TEST_CASE("the origin names where the string came from") {
  micro::Config config;
  try {
    config.apply_string("broker=NATS", "program config string");
    FAIL("no error");
  } catch (const micro::ConfigError& error) {
    CHECK(error.origin() == "program config string");
    CHECK(error.position() == 7);
    CHECK(std::string(error.what()) ==
          "program config string, position 7: 'NATS' is not a plugin name (bad character 'N'); "
          "expected a plugin name: a lower-case letter, then lower-case letters, digits or '_'");
    // As a micro::Exception it is a 400 from micro.config.
    CHECK(error.error().id == "micro.config");
    CHECK(error.error().message() ==
          "micro.config: 400 Bad Request: program config string, position 7: 'NATS' is not a "
          "plugin name (bad character 'N'); expected a plugin name: a lower-case letter, then "
          "lower-case letters, digits or '_'");
  }
}

TEST_CASE("environment variables use Go-Micro's names") {
  std::map<std::string, std::string> environment = {
      {"MICRO_REGISTRY", "etcd"},
      {"MICRO_REGISTRY_ADDRESS", "10.0.0.1:2379,10.0.0.2:2379"},
      {"MICRO_BROKER", "nats://127.0.0.1:4222"},
      {"MICRO_BROKER_ADDRESS", ""},  // empty: as if unset
      {"MICRO_SELECTOR", "roundrobin"},
      {"MICRO_TRANSPORT", "http"},
      {"MICRO_WRAPPERS", "trace,log"},
      {"MICRO_SERVER_NAME", "greeter"},
      {"MICRO_SERVER_VERSION", "2"},
      {"MICRO_SERVER_ADDRESS", "0.0.0.0:0"},
      {"MICRO_SERVER_ADVERTISE", "10.9.9.9:1"},
      {"MICRO_REGISTER_TTL", "45s"},
      {"MICRO_REGISTER_INTERVAL", "15s"},
      {"MICRO_DRAIN_TIMEOUT", "1s"},
      {"MICRO_CLIENT_REQUEST_TIMEOUT", "750ms"},
      {"MICRO_CLIENT_RETRIES", "0"},
      {"MICRO_THREADS", "2"},
  };
  auto lookup = [&](const char* name) -> const char* {
    auto found = environment.find(name);
    return found == environment.end() ? nullptr : found->second.c_str();
  };
  micro::Config config;
  config.apply_environment(lookup);
  CHECK(config.registry == micro::PluginChoice{"etcd", "10.0.0.1:2379,10.0.0.2:2379", {}});
  CHECK(config.registry.origin == "MICRO_REGISTRY");
  CHECK(config.broker == micro::PluginChoice{"nats", "127.0.0.1:4222", {}});
  CHECK(config.selector.name == "roundrobin");
  CHECK(config.transport == micro::PluginChoice{"http", "", {}});
  CHECK(config.wrappers.size() == 2);
  CHECK(config.server_name == "greeter");
  CHECK(config.server_version == "2");
  CHECK(config.server_address == "0.0.0.0:0");
  CHECK(config.server_advertise == "10.9.9.9:1");
  CHECK(config.register_ttl == seconds(45));
  CHECK(config.register_interval == seconds(15));
  CHECK(config.drain_timeout == seconds(1));
  CHECK(config.client_request_timeout == milliseconds(750));
  CHECK(config.client_retries == 0);
  CHECK(config.threads == 2u);

  // Errors name the variable and point into its value.
  environment = {{"MICRO_REGISTER_TTL", "soon"}};
  try {
    config.apply_environment(lookup);
    FAIL("no error");
  } catch (const micro::ConfigError& error) {
    CHECK(std::string(error.what()) ==
          "MICRO_REGISTER_TTL, position 0: bad duration 'soon' for register_ttl; expected a "
          "duration like 30s, 250ms, 5m or 1h");
  }
  environment = {{"MICRO_REGISTRY", "etcd://a?ttl=1s&ttl=2s"}};
  CHECK_THROWS_WITH(config.apply_environment(lookup),
                    "MICRO_REGISTRY, position 16: option 'ttl' is given twice; expected each "
                    "option once");

  // The real environment through getenv.
  EnvironmentScope scope;
  scope.set("MICRO_SELECTOR", "p2c");
  micro::Config from_getenv;
  from_getenv.apply_environment();
  CHECK(from_getenv.selector.name == "p2c");
}

TEST_CASE("flags set keys, accept '-' for '_', and are removed from argv") {
  Arguments arguments({"program", "--registry=etcd://a:1", "positional", "--server-name", "greeter",
                       "--own-flag=1", "--client_retries=3", "-v", "--client-request-timeout=2s",
                       "--threads=2", "--threads=3", "--", "--broker=nats"});
  micro::Config config;
  config.apply_flags(arguments.argc, arguments.argv());
  CHECK(config.registry == micro::PluginChoice{"etcd", "a:1", {}});
  CHECK(config.registry.origin == "flag --registry");
  CHECK(config.server_name == "greeter");
  CHECK(config.client_retries == 3);
  CHECK(config.client_request_timeout == seconds(2));
  CHECK(config.threads == 3u);            // the later flag wins
  CHECK(config.broker.name == "memory");  // after "--": not ours
  CHECK(arguments.remaining() == std::vector<std::string>{"program", "positional", "--own-flag=1",
                                                          "-v", "--", "--broker=nats"});

  Arguments bad({"program", "--register-ttl=forever"});
  CHECK_THROWS_WITH(config.apply_flags(bad.argc, bad.argv()),
                    "flag --register-ttl, position 0: bad duration 'forever' for register_ttl; "
                    "expected a duration like 30s, 250ms, 5m or 1h");
  Arguments missing({"program", "--selector"});
  CHECK_THROWS_WITH(config.apply_flags(missing.argc, missing.argv()),
                    "flag --selector, position 0: no value; expected --selector=VALUE or "
                    "--selector VALUE");
  Arguments followed_by_flag({"program", "--selector", "--threads=2"});
  CHECK_THROWS_WITH(config.apply_flags(followed_by_flag.argc, followed_by_flag.argv()),
                    "flag --selector, position 0: no value; expected --selector=VALUE or "
                    "--selector VALUE");
  Arguments no_file({"program", "--config=/nonexistent/micro.json"});
  CHECK_THROWS_WITH(config.apply_flags(no_file.argc, no_file.argv()),
                    "flag --config, position 0: cannot read config file "
                    "'/nonexistent/micro.json': No such file or directory; expected a readable "
                    "JSON file");
}

TEST_CASE("JSON objects set the same keys") {
  micro::Config config;
  config.apply_json(R"({
    "registry": "etcd://127.0.0.1:2379?ttl=30s",
    "broker_address": "n1:4222,n2:4222",
    "wrappers": ["trace?ratio=0.5", "auth?token=a%2Cb"],
    "server_name": "greeter",
    "register_ttl": 90,
    "drain_timeout": "1500ms",
    "client_request_timeout": 0.25,
    "client_retries": 4,
    "threads": "8"
  })");
  CHECK(config.registry == micro::PluginChoice{"etcd", "127.0.0.1:2379", {{"ttl", "30s"}}});
  CHECK(config.broker == micro::PluginChoice{"memory", "n1:4222,n2:4222", {}});
  REQUIRE(config.wrappers.size() == 2);
  CHECK(config.wrappers[0] == micro::PluginChoice{"trace", "", {{"ratio", "0.5"}}});
  CHECK(config.wrappers[1] == micro::PluginChoice{"auth", "", {{"token", "a,b"}}});
  CHECK(config.server_name == "greeter");
  CHECK(config.register_ttl == seconds(90));
  CHECK(config.drain_timeout == milliseconds(1500));
  CHECK(config.client_request_timeout == milliseconds(250));
  CHECK(config.client_retries == 4);
  CHECK(config.threads == 8u);

  config.apply_json(R"({"wrappers": "log,metrics"})");
  CHECK(config.wrappers.size() == 2);
  CHECK(config.wrappers[1].name == "metrics");
}

TEST_CASE("malformed JSON") {
  micro::Config config;
  CHECK_THROWS_WITH(config.apply_json(R"({"registry": "etcd",})", "JSON file app.json"),
                    "JSON file app.json, position 20: malformed JSON (parse error at line 1, "
                    "column 21: syntax error while parsing object key - unexpected '}'; "
                    "expected string literal); expected a JSON object like {\"registry\": "
                    "\"etcd://127.0.0.1:2379\"}");
  // A number too large for a double escaped as nlohmann's out_of_range, not a ConfigError
  // (found by test/fuzz/config_json).
  CHECK_THROWS_WITH_AS(config.apply_json(R"({"client_retries": 9e999})", "JSON file app.json"),
                       "JSON file app.json, position 0: unreadable JSON (number overflow parsing "
                       "'9e999'); expected a JSON object like {\"registry\": "
                       "\"etcd://127.0.0.1:2379\"}",
                       micro::ConfigError);
  CHECK_THROWS_WITH(config.apply_json("[1, 2]", "JSON file app.json"),
                    "JSON file app.json, position 0: the JSON is an array; expected a JSON "
                    "object like {\"registry\": \"etcd://127.0.0.1:2379\"}");
  CHECK_THROWS_WITH(
      config.apply_json(R"({"selector": "p2c", "regsitry": "etcd"})", "JSON file app.json"),
      "JSON file app.json, position 20: unknown key 'regsitry'; expected one of: registry, "
      "registry_address, broker, broker_address, selector, transport, "
      "wrappers, server_name, server_version, server_address, server_advertise, register_ttl, "
      "register_interval, drain_timeout, client_request_timeout, client_retries, "
      "client_retry_budget, threads, log_level, admin, admin_token, shutdown_delay (did "
      "you mean 'registry'?)");
  CHECK_THROWS_WITH(config.apply_json(R"({"registry": "etcd?ttl"})", "JSON file app.json"),
                    "JSON file app.json, key \"registry\", position 8: option 'ttl' has no '='; "
                    "expected ttl=value");
  CHECK_THROWS_WITH(config.apply_json(R"({"registry": true})", "JSON file app.json"),
                    "JSON file app.json, key \"registry\", position 0: the value is a boolean; "
                    "expected a string like \"etcd://127.0.0.1:2379\"");
  CHECK_THROWS_WITH(config.apply_json(R"({"client_retries": 1.5})", "JSON file app.json"),
                    "JSON file app.json, key \"client_retries\", position 0: bad number 1.5 for "
                    "client_retries; expected a whole number from 0 to 100");
  CHECK_THROWS_WITH(config.apply_json(R"({"client_retries": -2})", "JSON file app.json"),
                    "JSON file app.json, key \"client_retries\", position 0: client_retries "
                    "must not be negative, got -2; expected a whole number from 0 to 100");
  CHECK_THROWS_WITH(config.apply_json(R"({"register_ttl": -5})", "JSON file app.json"),
                    "JSON file app.json, key \"register_ttl\", position 0: bad duration -5; "
                    "expected a duration like 30s, 250ms, 5m or 1h, or a non-negative number of "
                    "seconds");
  CHECK_THROWS_WITH(config.apply_json(R"({"wrappers": ["log", 3]})", "JSON file app.json"),
                    "JSON file app.json, key \"wrappers\"[1], position 0: the element is a "
                    "number; expected a string like \"trace?ratio=0.1\"");
  CHECK_THROWS_WITH(config.apply_json(R"({"wrappers": ["log,trace"]})", "JSON file app.json"),
                    "JSON file app.json, key \"wrappers\"[0], position 3: ',' inside one "
                    "wrappers element; expected one plugin item per element (a comma inside a "
                    "value is written %2C)");
}

TEST_CASE("load: defaults < program string < JSON file < environment < flags") {
  EnvironmentScope environment;
  TemporaryFile file("precedence.json",
                     R"({"broker": "nats", "selector": "p2c", "server_name": "from-json",
                         "threads": 3})");
  environment.set("MICRO_CONFIG_FILE", file.path.string());
  environment.set("MICRO_SELECTOR", "roundrobin");
  environment.set("MICRO_SERVER_NAME", "from-env");

  Arguments arguments({"program", "--server-name=from-flag", "keep-me"});
  auto config = micro::Config::load(arguments.argc, arguments.argv(),
                                    "registry=memory broker=memory selector=random "
                                    "server_name=from-program client_retries=5 threads=1");
  CHECK(config.transport.name == "tcp");        // default
  CHECK(config.registry.name == "memory");      // program string
  CHECK(config.client_retries == 5);            // program string
  CHECK(config.broker.name == "nats");          // JSON over program string
  CHECK(config.threads == 3u);                  // JSON over program string
  CHECK(config.selector.name == "roundrobin");  // environment over JSON
  CHECK(config.server_name == "from-flag");     // flag over environment
  CHECK(arguments.remaining() == std::vector<std::string>{"program", "keep-me"});

  // --config wins over MICRO_CONFIG_FILE, and is taken out of argv.
  TemporaryFile other("other.json", R"({"broker": "memory", "drain_timeout": "3s"})");
  Arguments with_config({"program", "--config", other.path.string(), "--threads=7"});
  auto from_flag_file = micro::Config::load(with_config.argc, with_config.argv());
  CHECK(from_flag_file.broker.name == "memory");
  CHECK(from_flag_file.drain_timeout == seconds(3));
  CHECK(from_flag_file.threads == 7u);
  CHECK(with_config.remaining() == std::vector<std::string>{"program"});

  // An unreadable MICRO_CONFIG_FILE is named as such.
  environment.set("MICRO_CONFIG_FILE", "/nonexistent/micro.json");
  Arguments plain({"program"});
  CHECK_THROWS_WITH(micro::Config::load(plain.argc, plain.argv()),
                    "MICRO_CONFIG_FILE, position 0: cannot read config file "
                    "'/nonexistent/micro.json': No such file or directory; expected a readable "
                    "JSON file");

  // Errors in the JSON file name the file.
  TemporaryFile broken("broken.json", R"({"threads": "many"})");
  environment.set("MICRO_CONFIG_FILE", broken.path.string());
  CHECK_THROWS_WITH(micro::Config::load(plain.argc, plain.argv()),
                    ("JSON file " + broken.path.string() +
                     ", key \"threads\", position 0: bad number 'many' for threads; expected a "
                     "whole number from 0 (one per hardware thread) to 1024")
                        .c_str());
}

TEST_CASE("to_string round-trips") {
  std::vector<std::string> texts = {
      "",
      "registry=etcd://10.0.0.1:2379,10.0.0.2:2379?ttl=30s&prefix=/micro broker=nats://n:4222 "
      "selector=p2c transport=http wrappers=trace?sampler=always_on&ratio=0.1,log",
      "server_name=hello%20world server_advertise=10.0.0.9:1 register_ttl=90s "
      "register_interval=1500ms drain_timeout=0 client_request_timeout=1h client_retries=0 "
      "threads=16",
      "wrappers=auth?token=a%2Cb%26c%3D%25,ratelimit://x%2Cy?rate=5 registry=file:///tmp/a%3Fb",
      "registry_address=e1:1,e2:2 server_version= log_level=debug",
  };
  for (const auto& text : texts) {
    CAPTURE(text);
    auto config = micro::Config::parse(text);
    auto again = micro::Config::parse(config.to_string());
    check_same(config, again);
    CHECK(again.to_string() == config.to_string());
  }
  // Values the string form needs escaped, set from code.
  micro::Config config;
  config.server_name = "name with spaces & 100%";
  config.wrappers.push_back({"log", "a,b?c", {{"format", "x,y&z w"}}});
  config.registry.options = {{"path", "/tmp/dir with space"}};
  auto again = micro::Config::parse(config.to_string());
  check_same(config, again);
}

TEST_CASE("keys() lists every key with help") {
  const auto& keys = micro::Config::keys();
  REQUIRE(keys.size() == 22);
  CHECK(keys.front().first == "registry");
  CHECK(keys.back().first == "shutdown_delay");
  for (const auto& [key, help] : keys) {
    CAPTURE(key);
    CHECK(!help.empty());
    CHECK(help.find('\n') == std::string_view::npos);
    // Every listed key parses in the string form (with some valid value).
    micro::Config config;
    std::string value = "1";
    if (key == "registry" || key == "broker" || key == "selector" || key == "transport" ||
        key == "wrappers") {
      value = "memory";
    }
    if (key == "log_level") value = "warn";
    if (key == "shutdown_delay") value = "1s";
    CHECK_NOTHROW(config.apply_string(std::string(key) + "=" + value));
  }
}

TEST_CASE("the key table fills the server's and the client's options") {
  auto config = micro::Config::parse(
      "server_name=greeter server_version=2 server_address=127.0.0.1:7000 "
      "server_advertise=10.0.0.1:7000 register_ttl=90s register_interval=20s drain_timeout=3s "
      "client_request_timeout=250ms client_retries=4");
  micro::ServerOptions server = config.server_options();
  CHECK(server.name == "greeter");
  CHECK(server.version == "2");
  CHECK(server.address == "127.0.0.1:7000");
  CHECK(server.advertise == "10.0.0.1:7000");
  CHECK(server.register_ttl == std::chrono::seconds(90));
  CHECK(server.register_interval == std::chrono::seconds(20));
  CHECK(server.drain_timeout == std::chrono::seconds(3));
  micro::ClientOptions client = config.client_options();
  CHECK(client.timeout == std::chrono::milliseconds(250));
  CHECK(client.retries == 4);
  // Options no key sets keep their defaults.
  CHECK(client.retry_on == micro::ClientOptions{}.retry_on);
  // And the defaults of Config and of the option structs agree.
  micro::Config defaults;
  CHECK(defaults.server_options().version == micro::ServerOptions{}.version);
  CHECK(defaults.server_options().register_ttl == micro::ServerOptions{}.register_ttl);
  CHECK(defaults.client_options().timeout == micro::ClientOptions{}.timeout);
  CHECK(defaults.client_options().retries == micro::ClientOptions{}.retries);
}

TEST_CASE("log_level: a level name, checked; MICRO_LOG_LEVEL and --log_level set it too") {
  CHECK(micro::Config::parse("log_level=debug").log_level == "debug");
  CHECK(parse_error("log_level=loud") ==
        "config string, position 10: bad value 'loud' for log_level; expected one of: trace, "
        "debug, info, warn, error, off");
  micro::Config config;
  config.apply_environment([](const char* name) -> const char* {
    return std::string_view(name) == "MICRO_LOG_LEVEL" ? "error" : nullptr;
  });
  CHECK(config.log_level == "error");
}
