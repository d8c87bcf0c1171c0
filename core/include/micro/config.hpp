// micro/config.hpp — one configuration for everything, from strings, environment, flags
// and JSON files.
//
// The string form is space-separated key=value items:
//   registry=etcd://127.0.0.1:2379?ttl=30s broker=nats://127.0.0.1:4222 selector=roundrobin
//   transport=tcp wrappers=trace?sampler=parentbased_traceidratio&ratio=0.1,log
// A plugin item is `name[://address][?option=value&…]`; `wrappers` is a comma-separated
// list of such items (a comma inside an option value is written %2C). Values may use
// %XX escapes.
//
// Precedence, lowest first: built-in defaults < the program's own string < a JSON file
// (--config=FILE or MICRO_CONFIG_FILE) < MICRO_* environment variables < command-line
// flags. The operator always has the last word over what the code says.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <micro/error.hpp>

namespace micro {

struct ServerOptions;  // <micro/server.hpp>
struct ClientOptions;  // <micro/client.hpp>

// One plugin choice: "etcd://127.0.0.1:2379?ttl=30s" → {etcd, 127.0.0.1:2379, {ttl: 30s}}.
struct PluginChoice {
  std::string name;
  std::string address;
  std::vector<std::pair<std::string, std::string>> options;
  // Where it was set, for error messages: "config string at position 9", "MICRO_REGISTRY".
  std::string origin = "default";
  friend bool operator==(const PluginChoice& a, const PluginChoice& b) {
    return a.name == b.name && a.address == b.address && a.options == b.options;
  }
};

// A malformed configuration. what() reads like
//   config string, position 9: unknown key 'regsitry'; expected one of: registry, broker, … (did
//   you mean 'registry'?)
class ConfigError : public Exception {
 public:
  ConfigError(std::string origin, std::size_t position, std::string message);
  // The message alone, without Exception's "micro.config: 400 Bad Request: " prefix.
  const char* what() const noexcept override;
  const std::string& origin() const noexcept { return origin_; }
  // 0-based offset into the text that was parsed; npos when not applicable.
  std::size_t position() const noexcept { return position_; }

 private:
  std::string origin_;
  std::size_t position_;
};

struct Config {
  PluginChoice registry{"file", {}, {}};
  PluginChoice broker{"memory", {}, {}};
  PluginChoice selector{"random", {}, {}};
  PluginChoice transport{"tcp", {}, {}};
  std::vector<PluginChoice> wrappers;

  std::string server_name;
  std::string server_version = "latest";
  std::string server_address = "127.0.0.1:0";
  std::string server_advertise;
  std::chrono::milliseconds register_ttl{std::chrono::seconds(30)};
  std::chrono::milliseconds register_interval{std::chrono::seconds(10)};
  std::chrono::milliseconds drain_timeout{std::chrono::seconds(10)};
  std::chrono::milliseconds client_request_timeout{std::chrono::seconds(5)};
  int client_retries = 1;
  int client_retry_budget = 20;  // percent of the calls retries may add
  unsigned threads = 0;          // 0: the hardware threads
  std::string log_level;         // "" leaves the logger's level (MICRO_LOG_LEVEL, or info) alone
  // The operator's endpoint (<micro/admin.hpp>): "" is off; "127.0.0.1:9100" serves /metrics,
  // /health/* and the admin pages there. Its bearer token, when set, guards all but /health/*.
  std::string admin_address;
  std::string admin_token;
  // How long a stopping service reports not ready before it deregisters and drains, so load
  // balancers stop sending first.
  std::chrono::milliseconds shutdown_delay{0};

  // Applies a config string on top of what is set. Throws ConfigError.
  void apply_string(std::string_view text, std::string_view origin = "config string");
  // Applies MICRO_* variables from `lookup` (defaults to getenv).
  void apply_environment();
  void apply_environment(const std::function<const char*(const char*)>& lookup);
  // Applies a JSON object whose keys are the config keys ({"registry": "etcd://…"}).
  void apply_json(std::string_view json_text, std::string_view origin = "JSON");
  // Applies --key=value / --key value flags (config keys, '-' or '_' alike) and removes them
  // from argv; other arguments are left. --config=FILE loads a JSON file first.
  void apply_flags(int& argc, char** argv);

  // Everything in precedence order: defaults, `program_string`, --config/MICRO_CONFIG_FILE,
  // environment, flags.
  static Config load(int& argc, char** argv, std::string_view program_string = {});
  static Config parse(std::string_view text) {
    Config config;
    config.apply_string(text);
    return config;
  }

  // The keys a string may set, with one line of help each, for error messages and --help.
  static const std::vector<std::pair<std::string_view, std::string_view>>& keys();

  // Back to a string that parses to the same configuration.
  std::string to_string() const;

  // The server's and the client's options as these keys set them (the key table says which
  // key fills which option); the rest keep their defaults.
  ServerOptions server_options() const;
  ClientOptions client_options() const;
};

// Parses one plugin item ("etcd://a:1,b:2?ttl=30s"); `offset` is its position in a larger
// text, for error messages. Throws ConfigError.
PluginChoice parse_plugin_choice(std::string_view text, std::string_view origin,
                                 std::size_t offset = 0);

}  // namespace micro
