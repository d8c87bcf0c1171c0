// core/src/plugin_options.hpp — option checks the loader applies to a descriptor's options
// (internal to libmicro; defined in plugin.cpp beside the option parsers).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <micro/plugin.hpp>

namespace micro::detail {

// What a value of `type` looks like, for messages: "a whole number like 42".
std::string_view option_type_expectation(std::string_view type);
// Whether `value` parses as `type` ("string" and unknown types take any text).
bool option_value_fits(std::string_view type, std::string_view value);
// Whether min/max mean anything for `type` (int, double, duration).
bool option_type_is_ranged(std::string_view type);
// A message when `value` (already of the right type) lies outside the option's min/max.
std::optional<std::string> option_range_problem(const PluginOption& option, std::string_view value);

}  // namespace micro::detail
