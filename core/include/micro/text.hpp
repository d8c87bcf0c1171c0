// micro/text.hpp — small text helpers every part of micro-cpp (and any plugin) shares:
// hashing for string-keyed tables searched by string_view, and "did you mean" suggestions
// for error messages.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace micro {

// A transparent hash: a table keyed by std::string can be searched with a string_view
// without building a std::string per lookup.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view text) const noexcept {
    return std::hash<std::string_view>{}(text);
  }
};

// An unordered_map keyed by std::string that finds string_view keys.
template <typename Value>
using StringMap = std::unordered_map<std::string, Value, StringHash, std::equal_to<>>;

// Levenshtein distance between two texts.
std::size_t edit_distance(std::string_view a, std::string_view b);

// The candidate closest to `wrong` when it is close enough to be a likely typo (within a third
// of its length, at least two edits), else "". Ties go to the earlier candidate.
std::string closest_match(std::string_view wrong, const std::vector<std::string>& candidates);

// " (did you mean 'x'?)" for closest_match(wrong, candidates), or "" when nothing is close:
// the tail of a "what; expected …" message.
std::string did_you_mean(std::string_view wrong, const std::vector<std::string>& candidates);

}  // namespace micro
