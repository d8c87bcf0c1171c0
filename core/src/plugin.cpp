// The plugin side of plugins: kind names, option types and ranges, durations and the
// PluginArguments a factory reads. The loader (plugin_loader.cpp) checks options with the
// helpers declared in plugin_options.hpp.
#include <micro/plugin.hpp>
#include "plugin_options.hpp"

#include <charconv>
#include <cmath>
#include <system_error>
#include <type_traits>

#include <micro/error.hpp>

namespace micro {

namespace {

constexpr std::string_view kind_names[] = {"registry", "selector", "broker", "transport",
                                           "wrapper"};

// Parsers of option values, one overload per C++ type an option type maps to. Each accepts
// the whole text or nothing (false, `value` unspecified).

bool parse_option_text(std::string_view text, bool& value) {
  if (text != "true" && text != "false") return false;
  value = text == "true";
  return true;
}

// Numbers: an optional '+', then what std::from_chars takes, to the end; doubles finite.
template <typename Number>
requires std::is_arithmetic_v<Number>
bool parse_option_text(std::string_view text, Number& value) {
  if (text.starts_with('+')) text.remove_prefix(1);
  if (text.empty()) return false;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return false;
  if constexpr (std::is_floating_point_v<Number>) return std::isfinite(value);
  return true;
}

bool parse_option_text(std::string_view text, std::chrono::milliseconds& value) {
  auto parsed = parse_duration(text);
  if (parsed) value = *parsed;
  return parsed.has_value();
}

template <typename Value>
bool accepts_text(std::string_view text) {
  Value value{};
  return parse_option_text(text, value);
}

// The option types a descriptor may declare besides "string", and what their values look
// like (for messages). "string" and unknown types take any text.
struct OptionType {
  std::string_view name;
  std::string_view expectation;
  bool (*accepts)(std::string_view text);
};

constexpr OptionType option_types[] = {
    {"int", "a whole number like 42", accepts_text<std::int64_t>},
    {"bool", "true or false", accepts_text<bool>},
    {"double", "a number like 0.25", accepts_text<double>},
    {"duration", "a duration like 250ms, 30s, 5m or 1h", accepts_text<std::chrono::milliseconds>},
};

const OptionType* find_option_type(std::string_view type) {
  for (const OptionType& known : option_types)
    if (known.name == type) return &known;
  return nullptr;
}

// What a value of each option type looks like, for messages.
std::string_view type_expectation(std::string_view type) {
  const OptionType* known = find_option_type(type);
  return known ? known->expectation : "a string";
}

bool value_fits_type(std::string_view type, std::string_view value) {
  const OptionType* known = find_option_type(type);
  return !known || known->accepts(value);
}

// `text` parsed as the option's type and compared with `bound`, also in that type: negative
// when below, positive when above, 0 inside; nullopt when either does not parse.
template <typename Value>
std::optional<int> compare_as(std::string_view text, std::string_view bound) {
  Value value{}, limit{};
  if (!parse_option_text(text, value) || !parse_option_text(bound, limit)) return std::nullopt;
  return value < limit ? -1 : (limit < value ? 1 : 0);
}

std::optional<int> compare_option_values(std::string_view type, std::string_view text,
                                         std::string_view bound) {
  if (type == "int") return compare_as<std::int64_t>(text, bound);
  if (type == "double") return compare_as<double>(text, bound);
  if (type == "duration") return compare_as<std::chrono::milliseconds>(text, bound);
  return std::nullopt;
}

}  // namespace

// ---- kinds and durations ----

std::string_view to_string(PluginKind kind) noexcept {
  auto index = static_cast<std::size_t>(kind);
  return index < std::size(kind_names) ? kind_names[index] : "unknown";
}

std::optional<PluginKind> plugin_kind_from_string(std::string_view text) noexcept {
  for (std::size_t index = 0; index < std::size(kind_names); ++index)
    if (kind_names[index] == text) return static_cast<PluginKind>(index);
  return std::nullopt;
}

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) noexcept {
  if (text.empty()) return std::nullopt;
  // Accepts one or more number+unit parts ("1m30s", as Go does), or one bare number of
  // seconds. Summed in nanoseconds as a double, then bounded, so nothing overflows.
  double total_nanoseconds = 0;
  std::size_t position = 0;
  bool bare_number = false;
  while (position < text.size()) {
    std::size_t number_start = position;
    bool seen_digit = false;
    bool seen_point = false;
    while (position < text.size()) {
      char character = text[position];
      if (character >= '0' && character <= '9') {
        seen_digit = true;
      } else if (character == '.' && !seen_point) {
        seen_point = true;
      } else {
        break;
      }
      ++position;
    }
    if (!seen_digit) return std::nullopt;
    double number = 0;
    std::string_view number_text = text.substr(number_start, position - number_start);
    auto [end, error] =
        std::from_chars(number_text.data(), number_text.data() + number_text.size(), number);
    if (error != std::errc() || end != number_text.data() + number_text.size()) {
      return std::nullopt;
    }
    std::size_t unit_start = position;
    while (position < text.size() && ((text[position] >= 'a' && text[position] <= 'z') ||
                                      text[position] == '\xc2' || text[position] == '\xb5')) {
      ++position;
    }
    std::string_view unit = text.substr(unit_start, position - unit_start);
    double scale = 0;
    if (unit.empty()) {
      // A bare number is seconds, and only on its own.
      if (number_start != 0 || position != text.size()) return std::nullopt;
      bare_number = true;
      scale = 1e9;
    } else if (unit == "ns") {
      scale = 1;
    } else if (unit == "us" || unit == "\xc2\xb5s") {
      scale = 1e3;
    } else if (unit == "ms") {
      scale = 1e6;
    } else if (unit == "s") {
      scale = 1e9;
    } else if (unit == "m") {
      scale = 60e9;
    } else if (unit == "h") {
      scale = 3600e9;
    } else {
      return std::nullopt;
    }
    total_nanoseconds += number * scale;
    if (bare_number) break;
  }
  // About 290 years in milliseconds fits easily; anything beyond is surely a mistake.
  constexpr double limit_nanoseconds = 1e19 / 2;
  if (!std::isfinite(total_nanoseconds) || total_nanoseconds > limit_nanoseconds) {
    return std::nullopt;
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(total_nanoseconds / 1e6));
}

// ---- option checks, for the loader ----

namespace detail {

std::string_view option_type_expectation(std::string_view type) {
  return type_expectation(type);
}

bool option_value_fits(std::string_view type, std::string_view value) {
  return value_fits_type(type, value);
}

bool option_type_is_ranged(std::string_view type) {
  return type == "int" || type == "double" || type == "duration";
}

std::optional<std::string> option_range_problem(const PluginOption& option,
                                                std::string_view value) {
  std::string_view type = option.type ? option.type : "string";
  auto range = [&] {
    std::string text = type == "int"      ? "a whole number"
                       : type == "double" ? "a number"
                                          : "a duration";
    if (option.min && option.max) return text + " from " + option.min + " to " + option.max;
    if (option.min) return text + " of at least " + option.min;
    return text + " of at most " + std::string(option.max);
  };
  if (option.min) {
    auto order = compare_option_values(type, value, option.min);
    if (order && *order < 0)
      return "option '" + std::string(option.name) + "' is " + std::string(value) +
             ", below its minimum " + option.min + "; expected " + range();
  }
  if (option.max) {
    auto order = compare_option_values(type, value, option.max);
    if (order && *order > 0)
      return "option '" + std::string(option.name) + "' is " + std::string(value) +
             ", above its maximum " + option.max + "; expected " + range();
  }
  return std::nullopt;
}

}  // namespace detail

// ---- arguments ----

PluginArguments::PluginArguments(PluginKind kind, std::string name, std::string address,
                                 std::map<std::string, std::string> options,
                                 boost::asio::any_io_executor executor)
    : kind_(kind),
      name_(std::move(name)),
      address_(std::move(address)),
      options_(std::move(options)),
      executor_(std::move(executor)) {}

std::string PluginArguments::error_id() const {
  return "micro." + std::string(to_string(kind_)) + "." + name_;
}

bool PluginArguments::has(std::string_view name) const {
  return options_.find(std::string(name)) != options_.end();
}

const std::string& PluginArguments::value_of(std::string_view name) const {
  auto found = options_.find(std::string(name));
  if (found == options_.end()) {
    throw Exception(internal_error(
        error_id(), "option '" + std::string(name) +
                        "' has no value: it has no default and was not given; expected the "
                        "plugin to check has(\"" +
                        std::string(name) + "\") first"));
  }
  return found->second;
}

namespace {

template <typename Value>
Value parsed_value(const std::string& text, std::string_view name, const std::string& id) {
  Value value{};
  if (!parse_option_text(text, value)) {
    // The loader checked the type: this is a getter of the wrong type for the option.
    throw Exception(internal_error(id, "option '" + std::string(name) + "' is '" + text +
                                           "', which the getter cannot read; expected the "
                                           "getter of the option's declared type"));
  }
  return value;
}

}  // namespace

std::string PluginArguments::get_string(std::string_view name) const {
  return value_of(name);
}

std::int64_t PluginArguments::get_int(std::string_view name) const {
  return parsed_value<std::int64_t>(value_of(name), name, error_id());
}

double PluginArguments::get_double(std::string_view name) const {
  return parsed_value<double>(value_of(name), name, error_id());
}

bool PluginArguments::get_bool(std::string_view name) const {
  return parsed_value<bool>(value_of(name), name, error_id());
}

std::chrono::milliseconds PluginArguments::get_duration(std::string_view name) const {
  return parsed_value<std::chrono::milliseconds>(value_of(name), name, error_id());
}

}  // namespace micro
