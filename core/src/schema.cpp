// Schemas of request and response types (see <micro/schema.hpp>): readable type names from the
// demangled C++ names, and the description of a JSON sample.
#include <micro/schema.hpp>

#include <cxxabi.h>

#include <cstdlib>
#include <memory>

namespace micro {

namespace {

bool is_identifier_char(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

// Drops every namespace or enclosing-class qualifier: "ns::Outer::Inner<std::vector<ns::X>>"
// → "Inner<vector<X>>"; "(anonymous namespace)::" goes too.
std::string strip_qualifiers(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (name[i] == ':' && i + 1 < name.size() && name[i + 1] == ':') {
      // Remove the qualifier just written: back to the start of its identifier (or of a
      // parenthesised "(anonymous namespace)").
      if (!out.empty() && out.back() == ')') {
        std::size_t open = out.rfind('(');
        out.erase(open == std::string::npos ? 0 : open);
      } else {
        while (!out.empty() && is_identifier_char(out.back())) out.pop_back();
      }
      ++i;
      continue;
    }
    out += name[i];
  }
  return out;
}

void replace_all(std::string& text, std::string_view from, std::string_view to) {
  for (std::size_t at = text.find(from); at != std::string::npos;
       at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
}

std::string_view json_type(const nlohmann::json& value) noexcept {
  switch (value.type()) {
    case nlohmann::json::value_t::object:
      return "object";
    case nlohmann::json::value_t::array:
      return "array";
    case nlohmann::json::value_t::string:
      return "string";
    case nlohmann::json::value_t::boolean:
      return "boolean";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
      return "integer";
    case nlohmann::json::value_t::number_float:
      return "number";
    default:  // null (an empty optional, a null pointer), binary, discarded: not known
      return "";
  }
}

}  // namespace

std::string readable_type_name(const std::type_info& type) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> demangled(
      abi::__cxa_demangle(type.name(), nullptr, nullptr, &status), std::free);
  std::string name = (status == 0 && demangled) ? demangled.get() : type.name();
  // The standard library's spelling of its own types says nothing to a reader of a schema.
  replace_all(name,
              "std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >",
              "string");
  replace_all(name, "std::basic_string<char, std::char_traits<char>, std::allocator<char> >",
              "string");
  return strip_qualifiers(name);
}

Value schema_from_json(const nlohmann::json& sample, std::string name, std::size_t depth) {
  Value value{std::move(name), std::string(json_type(sample)), {}};
  if (depth == 0) return value;
  if (sample.is_object()) {
    value.values.reserve(sample.size());
    for (const auto& [key, member] : sample.items())
      value.values.push_back(schema_from_json(member, key, depth - 1));
  } else if (sample.is_array() && !sample.empty()) {
    value.values.push_back(schema_from_json(sample.front(), "", depth - 1));
  }
  return value;
}

}  // namespace micro
