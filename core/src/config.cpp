// Config: the configuration string, MICRO_* environment variables, command-line flags and
// JSON files, all setting the same keys, plus the plugin item grammar
// `name[://address][?key=value&…]` and the error messages that point into the text.
#include <micro/config.hpp>

#include <micro/client.hpp>
#include <micro/log.hpp>
#include <micro/plugin.hpp>
#include <micro/server.hpp>
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
#include <type_traits>
#include <variant>

#include <nlohmann/json.hpp>

namespace micro {

namespace {

using std::chrono::milliseconds;

// ---- the key table: one entry per configuration key ----
//
// A key is its name, its help line, where its value lives in Config (the field type decides
// how text, JSON values and to_string are handled) and, optionally, which ServerOptions or
// ClientOptions member it fills. Adding a key is one Config member and one entry here; the
// environment variable (MICRO_<KEY>) and the flag (--key, --key-with-dashes) follow from the
// name.

// "etcd://a:1?ttl=30s": a whole plugin choice.
struct PluginField {
  PluginChoice Config::*member;
};
// The address part of a plugin choice, on its own ("registry_address").
struct AddressField {
  PluginChoice Config::*member;
};
// Comma-separated plugin items ("wrappers").
struct ListField {
  std::vector<PluginChoice> Config::*member;
};
// Free text, optionally checked by `valid` (what it expects is said in `expected`).
struct TextField {
  std::string Config::*member;
  bool (*valid)(std::string_view text) = nullptr;
  std::string_view expected = {};
  bool omit_when_empty = false;  // to_string leaves the key out while it is empty
};
struct DurationField {
  milliseconds Config::*member;
  bool omit_when_zero = false;  // to_string leaves the key out while it is 0
};
// A whole number in [min, max]; `range` says so in words.
template <typename Number>
struct NumberField {
  Number Config::*member;
  long long min;
  long long max;
  std::string_view range;
};

using Field = std::variant<PluginField, AddressField, ListField, TextField, DurationField,
                           NumberField<int>, NumberField<unsigned>>;

// Which option member a key fills when a Microservice builds its server and client.
using OptionTarget =
    std::variant<std::monostate, std::string ServerOptions::*, milliseconds ServerOptions::*,
                 milliseconds ClientOptions::*, int ClientOptions::*>;

struct KeySpec {
  std::string_view name;
  std::string_view help;
  Field field;
  OptionTarget target = {};
  // The environment variable when it is not MICRO_<KEY>.
  std::string_view environment = {};
};

bool is_log_level(std::string_view text) {
  return log::level_from_string(text).has_value();
}

constexpr int max_retries = 100;
constexpr unsigned max_threads = 1024;

// In the order values are applied within one source: a plugin before its address, so
// "registry_address=a registry=etcd" keeps the address whichever way round it is written.
// to_string writes keys in this order too.
const KeySpec key_specs[] = {
    {"registry",
     "where services are registered and found: name[://address][?options], e.g. "
     "etcd://127.0.0.1:2379",
     PluginField{&Config::registry}},
    {"registry_address", "the registry's address (a comma-separated cluster is fine)",
     AddressField{&Config::registry}},
    {"broker", "the pub/sub broker: name[://address][?options], e.g. nats://127.0.0.1:4222",
     PluginField{&Config::broker}},
    {"broker_address", "the broker's address (a comma-separated cluster is fine)",
     AddressField{&Config::broker}},
    {"selector", "how a node is picked for each call: random or roundrobin, with ?options",
     PluginField{&Config::selector}},
    {"transport", "how requests travel between services: tcp, with ?options",
     PluginField{&Config::transport}},
    {"wrappers", "comma-separated wrapper plugins, outermost first, e.g. trace?ratio=0.1,log",
     ListField{&Config::wrappers}},
    {"server_name", "the service's name, e.g. greeter",
     TextField{&Config::server_name, nullptr, {}, true}, &ServerOptions::name},
    {"server_version", "the service's version (default latest)", TextField{&Config::server_version},
     &ServerOptions::version},
    {"server_address", "host:port to listen on (port 0: any free port)",
     TextField{&Config::server_address}, &ServerOptions::address},
    {"server_advertise", "host:port to register instead of the listen address",
     TextField{&Config::server_advertise, nullptr, {}, true}, &ServerOptions::advertise},
    {"register_ttl", "how long a registration lives without refresh (30s)",
     DurationField{&Config::register_ttl}, &ServerOptions::register_ttl},
    {"register_interval", "how often the registration is refreshed (10s)",
     DurationField{&Config::register_interval}, &ServerOptions::register_interval},
    {"drain_timeout", "how long a stopping server waits for in-flight work (10s)",
     DurationField{&Config::drain_timeout}, &ServerOptions::drain_timeout},
    {"client_request_timeout", "a call's default deadline (5s)",
     DurationField{&Config::client_request_timeout}, &ClientOptions::timeout},
    {"client_retries", "how many times a failed call is retried (1)",
     NumberField<int>{&Config::client_retries, 0, max_retries, "a whole number from 0 to 100"},
     &ClientOptions::retries},
    {"client_retry_budget",
     "retries may add at most this share of the calls, in percent (20), plus a reserve of 10",
     NumberField<int>{&Config::client_retry_budget, 0, 100, "a whole number from 0 to 100"},
     &ClientOptions::retry_budget_percent},
    {"threads", "I/O threads (0: one per hardware thread)",
     NumberField<unsigned>{&Config::threads, 0, max_threads,
                           "a whole number from 0 (one per hardware thread) to 1024"}},
    {"log_level", "how much the toolkit logs: trace, debug, info, warn, error or off (info)",
     TextField{&Config::log_level, is_log_level, "one of: trace, debug, info, warn, error, off",
               true}},
    {"admin",
     "host:port of the admin endpoint (/metrics, /health/live, /health/ready, /); empty: off",
     TextField{&Config::admin_address, nullptr, {}, true},
     {},
     "MICRO_ADMIN_ADDRESS"},
    {"admin_token", "bearer token the admin endpoint asks for (all but /health/*); empty: none",
     TextField{&Config::admin_token, nullptr, {}, true}},
    {"shutdown_delay",
     "how long a stopping service answers not ready before it deregisters and drains (0s)",
     DurationField{&Config::shutdown_delay, true}},
};

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

// Overloaded lambdas for std::visit.
template <class... Handlers>
struct Overloaded : Handlers... {
  using Handlers::operator()...;
};
template <class... Handlers>
Overloaded(Handlers...) -> Overloaded<Handlers...>;

// Applies one key's value, given as text. `offset` is where the value starts in its source.
void apply_text(Config& config, const KeySpec& spec, std::string_view value,
                std::string_view origin, std::size_t offset) {
  std::visit(Overloaded{
                 [&](const PluginField& field) {
                   config.*field.member = parse_item(value, origin, offset);
                 },
                 [&](const AddressField& field) {
                   if (!value.empty()) check_address_list(value, origin, offset);
                   (config.*field.member).address = decode(value, origin, offset);
                 },
                 [&](const ListField& field) {
                   config.*field.member = parse_item_list(value, origin, offset);
                 },
                 [&](const TextField& field) {
                   std::string decoded = decode(value, origin, offset);
                   if (field.valid && !decoded.empty() && !field.valid(decoded)) {
                     fail(origin, offset,
                          "bad value '" + decoded + "' for " + std::string(spec.name) +
                              "; expected " + std::string(field.expected));
                   }
                   config.*field.member = std::move(decoded);
                 },
                 [&](const DurationField& field) {
                   std::string decoded = decode(value, origin, offset);
                   auto duration = parse_duration(decoded);
                   if (!duration) {
                     fail(origin, offset,
                          "bad duration '" + decoded + "' for " + std::string(spec.name) +
                              "; expected " + std::string(duration_expectation));
                   }
                   config.*field.member = *duration;
                 },
                 [&](const auto& number) {  // NumberField<int> / NumberField<unsigned>
                   using Number = std::remove_reference_t<decltype(config.*number.member)>;
                   config.*number.member = static_cast<Number>(
                       parse_whole_number(decode(value, origin, offset), spec.name, number.min,
                                          number.max, number.range, origin, offset));
                 },
             },
             spec.field);
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

// The text form of a key's value for to_string, or nullopt when the key is left out
// (addresses travel inside their plugin item; optional text while empty).
std::optional<std::string> format_value(const Config& config, const KeySpec& spec) {
  return std::visit(
      Overloaded{
          [&](const PluginField& field) -> std::optional<std::string> {
            return format_item(config.*field.member, false);
          },
          [&](const AddressField&) -> std::optional<std::string> { return std::nullopt; },
          [&](const ListField& field) -> std::optional<std::string> {
            const auto& items = config.*field.member;
            if (items.empty()) return std::nullopt;
            std::string list;
            for (const auto& item : items) {
              if (!list.empty()) list += ',';
              list += format_item(item, true);
            }
            return list;
          },
          [&](const TextField& field) -> std::optional<std::string> {
            const std::string& text = config.*field.member;
            if (field.omit_when_empty && text.empty()) return std::nullopt;
            return encode(text, "");
          },
          [&](const DurationField& field) -> std::optional<std::string> {
            if (field.omit_when_zero && (config.*field.member).count() == 0) return std::nullopt;
            return format_duration(config.*field.member);
          },
          [&](const auto& number) -> std::optional<std::string> {
            return std::to_string(config.*number.member);
          },
      },
      spec.field);
}

// What a JSON value of the key must look like, for messages.
std::string_view json_expectation(const KeySpec& spec) {
  return std::visit(
      Overloaded{
          [](const PluginField&) { return "a string like \"etcd://127.0.0.1:2379\""; },
          [](const ListField&) { return "a string like \"trace,log\" or an array of such items"; },
          [](const DurationField&) { return "a string like \"30s\" or a number of seconds"; },
          [](const NumberField<int>&) { return "a whole number"; },
          [](const NumberField<unsigned>&) { return "a whole number"; },
          [](const auto&) { return "a string"; },
      },
      spec.field);
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

// ["trace?ratio=0.1", "log"]: one item per element, each parsed on its own, joined back into
// the string form so the list is applied with the other keys, in key order.
std::string joined_list_element(const nlohmann::json& value, const std::string& value_origin) {
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
  std::string joined;
  for (const auto& item : items) {
    if (!joined.empty()) joined += ',';
    joined += format_item(item, true);
  }
  return joined;
}

// The class and type of a pointer to member.
template <typename Pointer>
struct MemberPointer;
template <typename Member, typename Owner>
struct MemberPointer<Member Owner::*> {
  using member = Member;
  using owner = Owner;
};

// Copies the key's value into `options` when the key's target is a member of Options.
template <typename Options>
void copy_to_options(const Config& config, const KeySpec& spec, Options& options) {
  std::visit(
      [&](auto target) {
        using Target = decltype(target);
        if constexpr (!std::is_same_v<Target, std::monostate>) {
          if constexpr (std::is_same_v<typename MemberPointer<Target>::owner, Options>) {
            using Member = typename MemberPointer<Target>::member;
            std::visit(
                [&](const auto& field) {
                  using Value = std::remove_cvref_t<decltype(config.*field.member)>;
                  if constexpr (std::is_same_v<Value, Member>)
                    options.*target = config.*field.member;
                },
                spec.field);
          }
        }
      },
      spec.target);
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
    std::string name =
        spec.environment.empty() ? environment_name(spec.name) : std::string(spec.environment);
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
  } catch (const nlohmann::json::exception& error) {
    // A number out of range ("9e999": out_of_range 406) is well-formed but unrepresentable; it
    // escaped as nlohmann's exception instead of a ConfigError (found by test/fuzz/config_json).
    std::string message = error.what();
    if (auto bracket = message.find("] "); bracket != std::string::npos) {
      message = message.substr(bracket + 2);
    }
    fail(origin, 0,
         "unreadable JSON (" + message +
             "); expected a JSON object like {\"registry\": \"etcd://127.0.0.1:2379\"}");
  }
  if (!document.is_object()) {
    fail(origin, 0,
         "the JSON is " + json_type_name(document) +
             "; expected a JSON object like {\"registry\": \"etcd://127.0.0.1:2379\"}");
  }

  std::vector<Assignment> assignments;
  for (const auto& [key, value] : document.items()) {
    const KeySpec* spec = find_key(key);
    if (spec == nullptr) fail(origin, json_key_position(json_text, key), unknown_key_message(key));
    std::string value_origin = std::string(origin) + ", key \"" + key + "\"";

    if (value.is_string()) {
      assignments.push_back({spec, value.get<std::string>(), value_origin, 0});
      continue;
    }
    if (std::holds_alternative<ListField>(spec->field) && value.is_array()) {
      assignments.push_back({spec, joined_list_element(value, value_origin), value_origin, 0});
      continue;
    }
    if (value.is_number() && std::holds_alternative<DurationField>(spec->field)) {
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
    const auto* as_int = std::get_if<NumberField<int>>(&spec->field);
    const auto* as_unsigned = std::get_if<NumberField<unsigned>>(&spec->field);
    if (value.is_number() && (as_int || as_unsigned)) {
      if (!value.is_number_integer()) {
        fail(value_origin, 0,
             "bad number " + value.dump() + " for " + key + "; expected " +
                 std::string(as_int ? as_int->range : as_unsigned->range));
      }
      assignments.push_back({spec, value.dump(), value_origin, 0});
      continue;
    }
    fail(value_origin, 0,
         "the value is " + json_type_name(value) + "; expected " +
             std::string(json_expectation(*spec)));
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
  for (const auto& spec : key_specs) {
    auto value = format_value(*this, spec);
    if (!value) continue;
    if (!text.empty()) text += ' ';
    text += std::string(spec.name) + "=" + *value;
  }
  return text;
}

ServerOptions Config::server_options() const {
  ServerOptions options;
  for (const auto& spec : key_specs) copy_to_options(*this, spec, options);
  return options;
}

ClientOptions Config::client_options() const {
  ClientOptions options;
  for (const auto& spec : key_specs) copy_to_options(*this, spec, options);
  return options;
}

}  // namespace micro
