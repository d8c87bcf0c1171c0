// Config: the configuration string, MICRO_* environment variables, command-line flags and
// JSON files, all setting the same keys, plus the plugin item grammar
// `name[://address][?key=value&…]` and the error messages that point into the text.
#include <micro/config.hpp>

#include <micro/plugin.hpp>
#include <micro/text.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

namespace micro {

namespace {

using std::chrono::milliseconds;

enum class KeyType { plugin, plugin_address, plugin_list, text, duration, retries, threads };

// One configuration key. Exactly one member pointer is set, matching `type`.
struct KeySpec {
  std::string_view name;
  KeyType type;
  std::string_view help;
  PluginChoice Config::*plugin = nullptr;
  std::string Config::*text = nullptr;
  milliseconds Config::*duration = nullptr;
};

// In the order values are applied within one source: a plugin before its address, so
// "registry_address=a registry=etcd" keeps the address whichever way round it is written.
const KeySpec key_specs[] = {
    {"registry", KeyType::plugin,
     "where services are registered and found: name[://address][?options], e.g. "
     "etcd://127.0.0.1:2379",
     &Config::registry},
    {"registry_address", KeyType::plugin_address,
     "the registry's address (a comma-separated cluster is fine)", &Config::registry},
    {"broker", KeyType::plugin,
     "the pub/sub broker: name[://address][?options], e.g. nats://127.0.0.1:4222", &Config::broker},
    {"broker_address", KeyType::plugin_address,
     "the broker's address (a comma-separated cluster is fine)", &Config::broker},
    {"selector", KeyType::plugin, "how a node is picked for each call: random, roundrobin, p2c, …",
     &Config::selector},
    {"transport", KeyType::plugin, "how requests travel: tcp or http, with ?options",
     &Config::transport},
    {"transport_address", KeyType::plugin_address, "the transport's own address, if it takes one",
     &Config::transport},
    {"wrappers", KeyType::plugin_list,
     "comma-separated wrapper plugins, outermost first, e.g. trace?ratio=0.1,log"},
    {"server_name", KeyType::text, "the service's name, e.g. greeter", nullptr,
     &Config::server_name},
    {"server_version", KeyType::text, "the service's version (default latest)", nullptr,
     &Config::server_version},
    {"server_address", KeyType::text, "host:port to listen on (port 0: any free port)", nullptr,
     &Config::server_address},
    {"server_advertise", KeyType::text, "host:port to register instead of the listen address",
     nullptr, &Config::server_advertise},
    {"register_ttl", KeyType::duration, "how long a registration lives without refresh (30s)",
     nullptr, nullptr, &Config::register_ttl},
    {"register_interval", KeyType::duration, "how often the registration is refreshed (10s)",
     nullptr, nullptr, &Config::register_interval},
    {"drain_timeout", KeyType::duration,
     "how long a stopping server waits for in-flight work (10s)", nullptr, nullptr,
     &Config::drain_timeout},
    {"client_request_timeout", KeyType::duration, "a call's default deadline (5s)", nullptr,
     nullptr, &Config::client_request_timeout},
    {"client_retries", KeyType::retries, "how many times a failed call is retried (1)"},
    {"threads", KeyType::threads, "I/O threads (0: one per hardware thread)"},
};

constexpr int max_retries = 100;
constexpr unsigned max_threads = 1024;

constexpr std::string_view plugin_name_expectation =
    "a plugin name: a lower-case letter, then lower-case letters, digits or '_'";
constexpr std::string_view duration_expectation = "a duration like 30s, 250ms, 5m or 1h";

const KeySpec* find_key(std::string_view name) {
  for (const auto& spec : key_specs) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

std::size_t key_index(const KeySpec* spec) {
  return static_cast<std::size_t>(spec - key_specs);
}

std::string all_key_names() {
  std::string names;
  for (const auto& spec : key_specs) {
    if (!names.empty()) names += ", ";
    names += spec.name;
  }
  return names;
}

// "unknown key 'regsitry'; expected one of: … (did you mean 'registry'?)"
std::string unknown_key_message(std::string_view key) {
  std::string lowered(key);
  for (auto& character : lowered) {
    if (character >= 'A' && character <= 'Z') character = static_cast<char>(character - 'A' + 'a');
    if (character == '-') character = '_';
  }
  std::vector<std::string> names;
  for (const auto& spec : key_specs) names.emplace_back(spec.name);
  return "unknown key '" + std::string(key) + "'; expected one of: " + all_key_names() +
         did_you_mean(lowered, names);
}

[[noreturn]] void fail(std::string_view origin, std::size_t position, std::string message) {
  throw ConfigError(std::string(origin), position, std::move(message));
}

int hex_value(char character) {
  if (character >= '0' && character <= '9') return character - '0';
  if (character >= 'a' && character <= 'f') return character - 'a' + 10;
  if (character >= 'A' && character <= 'F') return character - 'A' + 10;
  return -1;
}

// Decodes %XX escapes; `offset` is where `raw` starts in the text, for errors.
std::string decode(std::string_view raw, std::string_view origin, std::size_t offset) {
  std::string decoded;
  decoded.reserve(raw.size());
  for (std::size_t index = 0; index < raw.size(); ++index) {
    if (raw[index] != '%') {
      decoded += raw[index];
      continue;
    }
    if (index + 2 >= raw.size()) {  // fewer than two characters follow the '%'
      fail(origin, offset + index,
           "unterminated %-escape '" + std::string(raw.substr(index)) +
               "'; expected '%' and two hex digits, like %2C");
    }
    int high = hex_value(raw[index + 1]);
    int low = hex_value(raw[index + 2]);
    if (high < 0 || low < 0) {
      fail(origin, offset + index,
           "bad %-escape '" + std::string(raw.substr(index, 3)) +
               "'; expected '%' and two hex digits, like %2C");
    }
    decoded += static_cast<char>(high * 16 + low);
    index += 2;
  }
  return decoded;
}

// Escapes what the parser would otherwise read as structure: '%', white space, control
// characters and `special`.
std::string encode(std::string_view text, std::string_view special) {
  static constexpr char digits[] = "0123456789ABCDEF";
  std::string encoded;
  for (char character : text) {
    auto byte = static_cast<unsigned char>(character);
    if (character == '%' || byte <= 0x20 || byte == 0x7f ||
        special.find(character) != std::string_view::npos) {
      encoded += '%';
      encoded += digits[byte >> 4];
      encoded += digits[byte & 0x0f];
    } else {
      encoded += character;
    }
  }
  return encoded;
}

bool is_name_character(char character) {
  return (character >= 'a' && character <= 'z') || (character >= '0' && character <= '9') ||
         character == '_';
}

bool is_option_key_character(char character) {
  return (character >= 'a' && character <= 'z') || (character >= 'A' && character <= 'Z') ||
         (character >= '0' && character <= '9') || character == '_' || character == '-' ||
         character == '.';
}

std::string quote_character(char character) {
  auto byte = static_cast<unsigned char>(character);
  if (byte < 0x20 || byte >= 0x7f) {
    static constexpr char digits[] = "0123456789ABCDEF";
    return std::string("byte 0x") + digits[byte >> 4] + digits[byte & 0x0f];
  }
  return "'" + std::string(1, character) + "'";
}

// Checks a comma-separated cluster list has no empty member; `raw` is undecoded text.
void check_address_list(std::string_view raw, std::string_view origin, std::size_t offset) {
  std::size_t start = 0;
  while (true) {
    std::size_t comma = raw.find(',', start);
    std::size_t end = comma == std::string_view::npos ? raw.size() : comma;
    if (end == start) {
      fail(origin, offset + start,
           "empty address in the list '" + std::string(raw) +
               "'; expected host:port entries separated by single commas");
    }
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
}

// Parses `text` as one plugin item. In a wrappers list a ',' has already split the items,
// so none remains here.
PluginChoice parse_item(std::string_view text, std::string_view origin, std::size_t offset) {
  PluginChoice choice;
  std::size_t name_end = text.find_first_of(":?");
  if (name_end == std::string_view::npos) name_end = text.size();
  std::string_view name = text.substr(0, name_end);
  if (name.empty()) {
    fail(origin, offset, "empty plugin name; expected " + std::string(plugin_name_expectation));
  }
  for (std::size_t index = 0; index < name.size(); ++index) {
    bool allowed =
        index == 0 ? (name[index] >= 'a' && name[index] <= 'z') : is_name_character(name[index]);
    if (!allowed) {
      fail(origin, offset + index,
           "'" + std::string(name) + "' is not a plugin name (bad character " +
               quote_character(name[index]) + "); expected " +
               std::string(plugin_name_expectation));
    }
  }
  choice.name = std::string(name);

  std::size_t position = name_end;
  if (position < text.size() && text[position] == ':') {
    if (text.substr(position, 3) != "://") {
      fail(origin, offset + position,
           "':' after the plugin name '" + choice.name +
               "' does not start '://'; expected name://address, like etcd://127.0.0.1:2379");
    }
    position += 3;
    std::size_t address_end = text.find('?', position);
    if (address_end == std::string_view::npos) address_end = text.size();
    std::string_view raw_address = text.substr(position, address_end - position);
    if (raw_address.empty()) {
      fail(origin, offset + position,
           "empty address after '" + choice.name +
               "://'; expected an address like 127.0.0.1:2379, or no '://' at all");
    }
    check_address_list(raw_address, origin, offset + position);
    choice.address = decode(raw_address, origin, offset + position);
    position = address_end;
  }

  if (position < text.size()) {
    // Only '?' can be here: the name and address stop at ':' or '?'.
    ++position;
    if (position == text.size()) {
      fail(origin, offset + position,
           "nothing after '?'; expected options as key=value pairs joined by '&'");
    }
    while (position <= text.size()) {
      std::size_t end = text.find('&', position);
      if (end == std::string_view::npos) end = text.size();
      std::string_view pair = text.substr(position, end - position);
      if (pair.empty()) {
        fail(origin, offset + position,
             "empty option; expected key=value pairs joined by single '&'");
      }
      std::size_t equals = pair.find('=');
      std::string_view key = pair.substr(0, equals);
      if (key.empty()) {
        fail(origin, offset + position, "empty option key before '='; expected key=value");
      }
      for (std::size_t index = 0; index < key.size(); ++index) {
        bool allowed = index == 0 ? ((key[index] >= 'a' && key[index] <= 'z') ||
                                     (key[index] >= 'A' && key[index] <= 'Z'))
                                  : is_option_key_character(key[index]);
        if (!allowed) {
          fail(origin, offset + position + index,
               "'" + std::string(key) + "' is not an option name (bad character " +
                   quote_character(key[index]) +
                   "); expected a letter, then letters, digits, '_', '-' or '.'");
        }
      }
      if (equals == std::string_view::npos) {
        fail(origin, offset + position + key.size(),
             "option '" + std::string(key) + "' has no '='; expected " + std::string(key) +
                 "=value");
      }
      for (const auto& existing : choice.options) {
        if (existing.first == key) {
          fail(origin, offset + position,
               "option '" + std::string(key) + "' is given twice; expected each option once");
        }
      }
      std::string value = decode(pair.substr(equals + 1), origin, offset + position + equals + 1);
      choice.options.emplace_back(std::string(key), std::move(value));
      if (end == text.size()) break;
      position = end + 1;
    }
  }
  choice.origin = std::string(origin);
  if (offset > 0) choice.origin += " at position " + std::to_string(offset);
  return choice;
}

std::vector<PluginChoice> parse_item_list(std::string_view text, std::string_view origin,
                                          std::size_t offset) {
  std::vector<PluginChoice> items;
  if (text.empty()) return items;  // "wrappers=" clears the list
  std::size_t start = 0;
  while (true) {
    std::size_t comma = text.find(',', start);
    std::size_t end = comma == std::string_view::npos ? text.size() : comma;
    if (end == start) {
      fail(origin, offset + start,
           "empty item in the wrappers list; expected plugin items separated by single commas, "
           "like trace?ratio=0.1,log (a comma inside a value is written %2C)");
    }
    items.push_back(parse_item(text.substr(start, end - start), origin, offset + start));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return items;
}

// A whole number from `minimum` to `maximum`, or a ConfigError saying so.
long long parse_whole_number(std::string_view text, std::string_view key, long long minimum,
                             long long maximum, std::string_view range_text,
                             std::string_view origin, std::size_t offset) {
  long long value = 0;
  std::string_view digits = text;
  if (digits.starts_with('+')) digits.remove_prefix(1);
  auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  bool parsed = !digits.empty() && error != std::errc::invalid_argument &&
                end == digits.data() + digits.size();
  if (!parsed) {
    fail(origin, offset,
         "bad number '" + std::string(text) + "' for " + std::string(key) + "; expected " +
             std::string(range_text));
  }
  if (error == std::errc::result_out_of_range || value > maximum) {
    fail(origin, offset,
         std::string(key) + " " + std::string(text) + " is too large; expected " +
             std::string(range_text));
  }
  if (value < minimum) {
    fail(origin, offset,
         std::string(key) + " must not be negative, got " + std::string(text) + "; expected " +
             std::string(range_text));
  }
  return value;
}

const std::string retries_range = "a whole number from 0 to " + std::to_string(max_retries);
const std::string threads_range =
    "a whole number from 0 (one per hardware thread) to " + std::to_string(max_threads);

// Applies one key's value, given as text. `offset` is where the value starts in its source.
void apply_text(Config& config, const KeySpec& spec, std::string_view value,
                std::string_view origin, std::size_t offset) {
  switch (spec.type) {
    case KeyType::plugin:
      config.*spec.plugin = parse_item(value, origin, offset);
      break;
    case KeyType::plugin_address:
      if (!value.empty()) check_address_list(value, origin, offset);
      (config.*spec.plugin).address = decode(value, origin, offset);
      break;
    case KeyType::plugin_list:
      config.wrappers = parse_item_list(value, origin, offset);
      break;
    case KeyType::text:
      config.*spec.text = decode(value, origin, offset);
      break;
    case KeyType::duration: {
      std::string decoded = decode(value, origin, offset);
      auto duration = parse_duration(decoded);
      if (!duration) {
        fail(origin, offset,
             "bad duration '" + decoded + "' for " + std::string(spec.name) + "; expected " +
                 std::string(duration_expectation));
      }
      config.*spec.duration = *duration;
      break;
    }
    case KeyType::retries:
      config.client_retries = static_cast<int>(parse_whole_number(
          decode(value, origin, offset), spec.name, 0, max_retries, retries_range, origin, offset));
      break;
    case KeyType::threads:
      config.threads = static_cast<unsigned>(parse_whole_number(
          decode(value, origin, offset), spec.name, 0, max_threads, threads_range, origin, offset));
      break;
  }
}

// A key=value found in some source, to be applied once the whole source has been checked.
struct Assignment {
  const KeySpec* spec;
  std::string value;
  std::string origin;
  std::size_t value_offset;
};

void apply_in_key_order(Config& config, std::vector<Assignment> assignments) {
  std::stable_sort(assignments.begin(), assignments.end(),
                   [](const Assignment& a, const Assignment& b) {
                     return key_index(a.spec) < key_index(b.spec);
                   });
  // Apply to a copy: a source either applies whole or not at all.
  Config updated = config;
  for (const auto& assignment : assignments) {
    apply_text(updated, *assignment.spec, assignment.value, assignment.origin,
               assignment.value_offset);
  }
  config = std::move(updated);
}

std::string format_duration(milliseconds duration) {
  auto count = duration.count();
  if (count == 0) return "0s";
  if (count % 3600000 == 0) return std::to_string(count / 3600000) + "h";
  if (count % 60000 == 0) return std::to_string(count / 60000) + "m";
  if (count % 1000 == 0) return std::to_string(count / 1000) + "s";
  return std::to_string(count) + "ms";
}

// A plugin item back to text; in a list, commas are escaped too.
std::string format_item(const PluginChoice& choice, bool in_list) {
  std::string text = choice.name;
  if (!choice.address.empty()) text += "://" + encode(choice.address, in_list ? "?," : "?");
  char separator = '?';
  for (const auto& [key, value] : choice.options) {
    text += separator;
    text += key + "=" + encode(value, "&,");
    separator = '&';
  }
  return text;
}

std::string environment_name(std::string_view key) {
  std::string name = "MICRO_";
  for (char character : key) {
    name += (character >= 'a' && character <= 'z') ? static_cast<char>(character - 'a' + 'A')
                                                   : character;
  }
  return name;
}

std::string json_type_name(const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::null:
      return "null";
    case nlohmann::json::value_t::boolean:
      return "a boolean";
    case nlohmann::json::value_t::object:
      return "an object";
    case nlohmann::json::value_t::array:
      return "an array";
    case nlohmann::json::value_t::string:
      return "a string";
    default:
      return "a number";
  }
}

// Where `"key"` first appears in the JSON text, for messages about that key.
std::size_t json_key_position(std::string_view text, std::string_view key) {
  auto found = text.find("\"" + std::string(key) + "\"");
  return found == std::string_view::npos ? 0 : found;
}

// Reads a file whole, or fails naming the setting that pointed at it.
std::string read_config_file(const std::string& path, std::string_view setting) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    fail(setting, 0,
         "cannot read config file '" + path + "': " + std::strerror(errno) +
             "; expected a readable JSON file");
  }
  std::ostringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

// Removes argv[index] (count entries), keeping argv[argc] == nullptr.
void remove_arguments(int& argc, char** argv, int index, int count) {
  for (int from = index + count; from <= argc; ++from) argv[from - count] = argv[from];
  argc -= count;
}

// Takes --config=FILE / --config FILE out of argv; the path, and the flag as written.
std::optional<std::pair<std::string, std::string>> take_config_flag(int& argc, char** argv) {
  std::optional<std::pair<std::string, std::string>> result;
  for (int index = 1; index < argc;) {
    std::string_view argument = argv[index] ? argv[index] : "";
    if (argument == "--") break;
    if (argument.starts_with("--config=")) {
      result.emplace(std::string(argument.substr(9)), "flag --config");
      remove_arguments(argc, argv, index, 1);
      continue;
    }
    if (argument == "--config") {
      if (index + 1 >= argc) fail("flag --config", 0, "no file name; expected --config=FILE");
      result.emplace(std::string(argv[index + 1]), "flag --config");
      remove_arguments(argc, argv, index, 2);
      continue;
    }
    ++index;
  }
  return result;
}

}  // namespace

ConfigError::ConfigError(std::string origin, std::size_t position, std::string message)
    : Exception(bad_request("micro.config", origin +
                                                (position == std::string::npos
                                                     ? std::string()
                                                     : ", position " + std::to_string(position)) +
                                                ": " + message)),
      origin_(std::move(origin)),
      position_(position) {}

const char* ConfigError::what() const noexcept {
  return error().detail.c_str();
}

PluginChoice parse_plugin_choice(std::string_view text, std::string_view origin,
                                 std::size_t offset) {
  return parse_item(text, origin, offset);
}

void Config::apply_string(std::string_view text, std::string_view origin) {
  std::vector<Assignment> assignments;
  std::map<std::string_view, std::size_t> first_seen;
  auto is_space = [](char character) {
    return character == ' ' || character == '\t' || character == '\n' || character == '\r' ||
           character == '\v' || character == '\f';
  };
  std::size_t position = 0;
  while (position < text.size()) {
    if (is_space(text[position])) {
      ++position;
      continue;
    }
    std::size_t start = position;
    while (position < text.size() && !is_space(text[position])) ++position;
    std::string_view item = text.substr(start, position - start);
    std::size_t equals = item.find('=');
    if (equals == std::string_view::npos) {
      fail(origin, start + item.size(),
           "'" + std::string(item) + "' has no '='; expected key=value, like registry=etcd");
    }
    std::string_view key = item.substr(0, equals);
    if (key.empty()) {
      fail(origin, start, "empty key before '='; expected one of: " + all_key_names());
    }
    const KeySpec* spec = find_key(key);
    if (spec == nullptr) fail(origin, start, unknown_key_message(key));
    if (auto seen = first_seen.find(spec->name); seen != first_seen.end()) {
      fail(origin, start,
           "key '" + std::string(key) + "' is set twice (first at position " +
               std::to_string(seen->second) + "); expected each key at most once");
    }
    first_seen.emplace(spec->name, start);
    assignments.push_back(
        {spec, std::string(item.substr(equals + 1)), std::string(origin), start + equals + 1});
  }
  apply_in_key_order(*this, std::move(assignments));
}

void Config::apply_environment() {
  apply_environment([](const char* name) { return std::getenv(name); });
}

void Config::apply_environment(const std::function<const char*(const char*)>& lookup) {
  std::vector<Assignment> assignments;
  for (const auto& spec : key_specs) {
    std::string name = environment_name(spec.name);
    const char* value = lookup(name.c_str());
    // Empty counts as unset, as a shell's `MICRO_REGISTRY= program` intends.
    if (value == nullptr || *value == '\0') continue;
    assignments.push_back({&spec, value, name, 0});
  }
  apply_in_key_order(*this, std::move(assignments));
}

void Config::apply_json(std::string_view json_text, std::string_view origin) {
  nlohmann::json document;
  try {
    document = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::parse_error& error) {
    std::string message = error.what();
    // nlohmann's text starts "[json.exception.parse_error.101] parse error at line 1, …".
    if (auto bracket = message.find("] "); bracket != std::string::npos) {
      message = message.substr(bracket + 2);
    }
    std::size_t position = error.byte > 0 ? error.byte - 1 : 0;
    fail(origin, position,
         "malformed JSON (" + message +
             "); expected a JSON object like {\"registry\": \"etcd://127.0.0.1:2379\"}");
  }
  if (!document.is_object()) {
    fail(origin, 0,
         "the JSON is " + json_type_name(document) +
             "; expected a JSON object like {\"registry\": \"etcd://127.0.0.1:2379\"}");
  }

  std::vector<Assignment> assignments;
  Config updated = *this;
  for (const auto& [key, value] : document.items()) {
    const KeySpec* spec = find_key(key);
    if (spec == nullptr) fail(origin, json_key_position(json_text, key), unknown_key_message(key));
    std::string value_origin = std::string(origin) + ", key \"" + key + "\"";

    if (value.is_string()) {
      assignments.push_back({spec, value.get<std::string>(), value_origin, 0});
      continue;
    }
    if (spec->type == KeyType::plugin_list && value.is_array()) {
      // ["trace?ratio=0.1", "log"]: one item per element, each parsed on its own.
      std::vector<PluginChoice> items;
      for (std::size_t index = 0; index < value.size(); ++index) {
        std::string element_origin = value_origin + "[" + std::to_string(index) + "]";
        if (!value[index].is_string()) {
          fail(element_origin, 0,
               "the element is " + json_type_name(value[index]) +
                   "; expected a string like \"trace?ratio=0.1\"");
        }
        auto text = value[index].get<std::string>();
        if (text.find(',') != std::string::npos) {
          // One element is one item; a comma would silently make it two.
          fail(element_origin, text.find(','),
               "',' inside one wrappers element; expected one plugin item per element "
               "(a comma inside a value is written %2C)");
        }
        items.push_back(parse_item(text, element_origin, 0));
      }
      // Applied with the rest, in key order: keep as a pre-parsed assignment by re-encoding.
      std::string joined;
      for (const auto& item : items) {
        if (!joined.empty()) joined += ',';
        joined += format_item(item, true);
      }
      assignments.push_back({spec, joined, value_origin, 0});
      continue;
    }
    bool numeric = value.is_number();
    if (numeric && spec->type == KeyType::duration) {
      // A bare number is seconds, as in the string form.
      double seconds = value.get<double>();
      if (!std::isfinite(seconds) || seconds < 0 || seconds > 1e9) {
        fail(value_origin, 0,
             "bad duration " + value.dump() + "; expected " + std::string(duration_expectation) +
                 ", or a non-negative number of seconds");
      }
      auto count = static_cast<long long>(std::llround(seconds * 1000));
      assignments.push_back({spec, std::to_string(count) + "ms", value_origin, 0});
      continue;
    }
    if (numeric && (spec->type == KeyType::retries || spec->type == KeyType::threads)) {
      if (!value.is_number_integer()) {
        fail(value_origin, 0,
             "bad number " + value.dump() + " for " + key + "; expected " +
                 (spec->type == KeyType::retries ? retries_range : threads_range));
      }
      assignments.push_back({spec, value.dump(), value_origin, 0});
      continue;
    }
    std::string_view expected = "a string";
    if (spec->type == KeyType::plugin) expected = "a string like \"etcd://127.0.0.1:2379\"";
    if (spec->type == KeyType::plugin_list) {
      expected = "a string like \"trace,log\" or an array of such items";
    }
    if (spec->type == KeyType::duration) expected = "a string like \"30s\" or a number of seconds";
    if (spec->type == KeyType::retries || spec->type == KeyType::threads) {
      expected = "a whole number";
    }
    fail(value_origin, 0,
         "the value is " + json_type_name(value) + "; expected " + std::string(expected));
  }
  apply_in_key_order(*this, std::move(assignments));
}

void Config::apply_flags(int& argc, char** argv) {
  if (argv == nullptr) return;
  if (auto config_file = take_config_flag(argc, argv)) {
    apply_json(read_config_file(config_file->first, config_file->second),
               "JSON file " + config_file->first);
  }
  // Later flags win over earlier ones, as on any command line.
  std::map<const KeySpec*, Assignment> latest;
  for (int index = 1; index < argc;) {
    std::string_view argument = argv[index] ? argv[index] : "";
    if (argument == "--") break;
    if (!argument.starts_with("--")) {
      ++index;
      continue;
    }
    std::string_view body = argument.substr(2);
    std::size_t equals = body.find('=');
    std::string key(body.substr(0, equals));
    std::replace(key.begin(), key.end(), '-', '_');
    const KeySpec* spec = find_key(key);
    if (spec == nullptr) {
      ++index;  // the program's own flag
      continue;
    }
    std::string flag = "flag --" + std::string(body.substr(0, equals));
    if (equals != std::string_view::npos) {
      latest[spec] = {spec, std::string(body.substr(equals + 1)), flag, 0};
      remove_arguments(argc, argv, index, 1);
    } else {
      // "--selector --threads=2" is a missing value, not a selector named "--threads=2".
      if (index + 1 >= argc || argv[index + 1] == nullptr ||
          std::string_view(argv[index + 1]).starts_with("--")) {
        fail(flag, 0,
             "no value; expected --" + std::string(body) + "=VALUE or --" + std::string(body) +
                 " VALUE");
      }
      latest[spec] = {spec, argv[index + 1], flag, 0};
      remove_arguments(argc, argv, index, 2);
    }
  }
  std::vector<Assignment> assignments;
  for (auto& [spec, assignment] : latest) assignments.push_back(std::move(assignment));
  apply_in_key_order(*this, std::move(assignments));
}

Config Config::load(int& argc, char** argv, std::string_view program_string) {
  Config config;
  if (!program_string.empty()) config.apply_string(program_string, "program config string");
  std::optional<std::pair<std::string, std::string>> config_file;
  if (argv != nullptr) config_file = take_config_flag(argc, argv);
  if (!config_file) {
    const char* from_environment = std::getenv("MICRO_CONFIG_FILE");
    if (from_environment != nullptr && *from_environment != '\0') {
      config_file.emplace(from_environment, "MICRO_CONFIG_FILE");
    }
  }
  if (config_file) {
    config.apply_json(read_config_file(config_file->first, config_file->second),
                      "JSON file " + config_file->first);
  }
  config.apply_environment();
  config.apply_flags(argc, argv);
  return config;
}

const std::vector<std::pair<std::string_view, std::string_view>>& Config::keys() {
  static const auto all = [] {
    std::vector<std::pair<std::string_view, std::string_view>> result;
    for (const auto& spec : key_specs) result.emplace_back(spec.name, spec.help);
    return result;
  }();
  return all;
}

std::string Config::to_string() const {
  std::string text;
  auto add = [&text](std::string_view key, const std::string& value) {
    if (!text.empty()) text += ' ';
    text += std::string(key) + "=" + value;
  };
  add("registry", format_item(registry, false));
  add("broker", format_item(broker, false));
  add("selector", format_item(selector, false));
  add("transport", format_item(transport, false));
  if (!wrappers.empty()) {
    std::string list;
    for (const auto& wrapper : wrappers) {
      if (!list.empty()) list += ',';
      list += format_item(wrapper, true);
    }
    add("wrappers", list);
  }
  if (!server_name.empty()) add("server_name", encode(server_name, ""));
  add("server_version", encode(server_version, ""));
  add("server_address", encode(server_address, ""));
  if (!server_advertise.empty()) add("server_advertise", encode(server_advertise, ""));
  add("register_ttl", format_duration(register_ttl));
  add("register_interval", format_duration(register_interval));
  add("drain_timeout", format_duration(drain_timeout));
  add("client_request_timeout", format_duration(client_request_timeout));
  add("client_retries", std::to_string(client_retries));
  add("threads", std::to_string(threads));
  return text;
}

}  // namespace micro
