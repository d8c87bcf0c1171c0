// micro/schema.hpp — the shape of a request or response type, in Go-Micro's registry form
// (micro::Value: name, type, values), derived from the C++ type.
//
// Typed handlers register schema_of<Req>() and schema_of<Resp>() for their endpoint, so
// `micro describe`, `GET /<service>` of `micro api`, and the tools that build forms and tool
// schemas from the registry see every field. The form:
//
//   - type is a JSON type: "string", "integer", "number", "boolean", "object", "array", or ""
//     when it is not known (a JSON value of any type, or a field that serialises as null);
//   - the top level is named after the C++ type without its namespaces ("HelloRequest");
//   - an object's values are its fields, each named by its JSON key;
//   - an array has one value, its element, named after the element's type when that is
//     known ("Item", "string"); no value when nothing is known of the element;
//   - a map with string keys is an "object" with one value named "*" (any key) describing
//     its values;
//   - nesting stops after `depth` levels (default_schema_depth): deeper values keep their
//     type and lose their values, so recursive types end too.
//
// What is known at compile time is exact: arithmetic types, strings, std::optional<E> (E's
// schema), sequences (std::vector, std::list, std::deque, std::set, std::array) and maps of E.
// Any other type convertible to JSON is described from the JSON of a value-initialised T:
// its object keys become fields, each with the type its value has. That sample cannot say
// what an empty vector member would hold, so such a field is an "array" without values.
// Two ways to say more:
//
//   struct Order { std::string id; std::vector<Item> items; };
//   NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Order, id, items)
//   MICRO_DEFINE_SCHEMA(Order, id, items)   // members' own types: items is an array of Item
//
// or specialise the customisation point for full control:
//
//   template <> struct micro::schema_traits<Money> {
//     static micro::Value describe(std::size_t) { return {"Money", "string", {}}; }
//   };
#pragma once

#include <array>
#include <cstddef>
#include <deque>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include <micro/registry.hpp>

namespace micro {

// Levels of values below the top one that a schema describes.
inline constexpr std::size_t default_schema_depth = 4;

// The customisation point: specialise for a type to describe it yourself. `depth` is how many
// levels of values may still follow (0: give the type, no values).
template <class T, class Enable = void>
struct schema_traits;

// The schema of T, nested at most `depth` levels.
template <class T>
Value schema_of(std::size_t depth = default_schema_depth);

// The C++ type's name without namespaces: "HelloRequest", "Pair<Key, Item>".
std::string readable_type_name(const std::type_info& type);

// Describes a JSON value as schema_of does a type: objects by their keys, arrays by their
// first element when they have one. The top level is named `name`.
Value schema_from_json(const nlohmann::json& sample, std::string name,
                       std::size_t depth = default_schema_depth);

namespace detail {

template <class T>
struct is_optional : std::false_type {};
template <class E>
struct is_optional<std::optional<E>> : std::true_type {};

template <class T>
struct is_sequence : std::false_type {};
template <class E, class A>
struct is_sequence<std::vector<E, A>> : std::true_type {};
template <class E, class A>
struct is_sequence<std::list<E, A>> : std::true_type {};
template <class E, class A>
struct is_sequence<std::deque<E, A>> : std::true_type {};
template <class E, class C, class A>
struct is_sequence<std::set<E, C, A>> : std::true_type {};
template <class E, class H, class Q, class A>
struct is_sequence<std::unordered_set<E, H, Q, A>> : std::true_type {};
template <class E, std::size_t N>
struct is_sequence<std::array<E, N>> : std::true_type {};

// Maps whose keys are strings become JSON objects; nlohmann writes other maps as arrays of
// pairs, which the JSON-sample default describes.
template <class T>
struct is_string_map : std::false_type {};
template <class V, class C, class A>
struct is_string_map<std::map<std::string, V, C, A>> : std::true_type {};
template <class V, class H, class Q, class A>
struct is_string_map<std::unordered_map<std::string, V, H, Q, A>> : std::true_type {};

template <class T>
inline constexpr bool is_string_like_v =
    std::is_same_v<T, std::string> || std::is_same_v<T, std::string_view> ||
    std::is_same_v<T, const char*> || std::is_same_v<T, char*>;

// Go-like names for the built-in types ("int32", "string"), as Go-Micro's registry shows
// its fields' types by name.
template <class T>
std::string builtin_type_name() {
  if constexpr (std::is_same_v<T, bool>) {
    return "bool";
  } else if constexpr (std::is_integral_v<T>) {
    return std::string(std::is_signed_v<T> ? "int" : "uint") + std::to_string(sizeof(T) * 8);
  } else if constexpr (std::is_floating_point_v<T>) {
    return sizeof(T) == 4 ? "float32" : "float64";
  } else {
    return "string";
  }
}

// Describes T from the JSON of a value-initialised T.
template <class T>
Value describe_from_sample(std::size_t depth) {
  std::string name = readable_type_name(typeid(T));
  if constexpr (std::is_default_constructible_v<T> &&
                std::is_constructible_v<nlohmann::json, const T&>) {
    try {
      nlohmann::json sample = T{};  // first: the name stays ours if to_json throws
      return schema_from_json(sample, std::move(name), depth);
    } catch (const nlohmann::json::exception&) {
      // A to_json that refuses the empty value: nothing is known but the name.
    }
  }
  return Value{std::move(name), "", {}};
}

}  // namespace detail

// The built-in descriptions; a specialisation for a user type takes precedence.
template <class T, class Enable>
struct schema_traits {
  static Value describe(std::size_t depth) {
    if constexpr (std::is_same_v<T, nlohmann::json>) {
      (void)depth;
      return Value{"json", "", {}};  // any JSON value
    } else if constexpr (std::is_same_v<T, bool>) {
      return Value{"bool", "boolean", {}};
    } else if constexpr (std::is_arithmetic_v<T>) {
      return Value{
          detail::builtin_type_name<T>(), std::is_integral_v<T> ? "integer" : "number", {}};
    } else if constexpr (detail::is_string_like_v<T>) {
      return Value{"string", "string", {}};
    } else if constexpr (detail::is_optional<T>::value) {
      return schema_of<typename T::value_type>(depth);
    } else if constexpr (detail::is_sequence<T>::value) {
      Value value{"", "array", {}};
      if (depth > 0) value.values.push_back(schema_of<typename T::value_type>(depth - 1));
      value.name = "[]" + (value.values.empty() ? schema_of<typename T::value_type>(0).name
                                                : value.values.front().name);
      return value;
    } else if constexpr (detail::is_string_map<T>::value) {
      Value element = schema_of<typename T::mapped_type>(depth > 0 ? depth - 1 : 0);
      Value value{"map[string]" + element.name, "object", {}};
      if (depth > 0) {
        element.name = "*";
        value.values.push_back(std::move(element));
      }
      return value;
    } else {
      return detail::describe_from_sample<T>(depth);
    }
  }
};

template <class T>
Value schema_of(std::size_t depth) {
  return schema_traits<std::remove_cv_t<std::remove_reference_t<T>>>::describe(depth);
}

namespace detail {

// One field of a MICRO_DEFINE_SCHEMA type: the member's own type, the key its name.
template <class Member>
void add_schema_field(Value& object, const char* key, std::size_t depth) {
  Value field = schema_of<Member>(depth);
  field.name = key;
  object.values.push_back(std::move(field));
}

}  // namespace detail

}  // namespace micro

#define MICRO_DETAIL_SCHEMA_FIELD(member)                                                \
  ::micro::detail::add_schema_field<decltype(std::declval<const SchemaType&>().member)>( \
      object, #member, depth - 1);

// Describes `Type` by its members' own C++ types, keyed by the members' names (as
// NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE names them), in the order given. Use it at global scope
// (outside every namespace), with the type's qualified name: it specialises
// micro::schema_traits.
#define MICRO_DEFINE_SCHEMA(Type, ...)                                                  \
  template <>                                                                           \
  struct micro::schema_traits<Type> {                                                   \
    using SchemaType = Type;                                                            \
    static ::micro::Value describe(std::size_t depth) {                                 \
      ::micro::Value object{::micro::readable_type_name(typeid(Type)), "object", {}};   \
      if (depth == 0) return object;                                                    \
      NLOHMANN_JSON_EXPAND(NLOHMANN_JSON_PASTE(MICRO_DETAIL_SCHEMA_FIELD, __VA_ARGS__)) \
      return object;                                                                    \
    }                                                                                   \
  }
