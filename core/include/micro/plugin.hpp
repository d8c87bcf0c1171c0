// micro/plugin.hpp — what a plugin is: the object it makes, the options it declares, the
// arguments its factory receives and the one C entry point it exports. This is the header a
// plugin author includes; finding and loading plugins is <micro/plugin_loader.hpp>.
//
// A plugin is a `.so` exporting `micro_plugin_descriptor`, which returns a PluginDescriptor:
// ABI version first (checked before anything else is read), kind, name, a one-line summary,
// the options it accepts and a factory. Option defaults and ranges are declared once, here in
// the descriptor: the loader fills defaults in and checks types and ranges before the factory
// runs, so a factory only reads values (no fallbacks repeated in code).
//
// Writing one:
//   static const micro::PluginOption options[] = {
//       {"dir", "string", "/tmp/micro", "where the files live"},
//       {"poll", "duration", "500ms", "how often to look for changes", "10ms", "1m"}};
//   MICRO_PLUGIN(registry, file, "one JSON file per node", options,
//                [](const micro::PluginArguments& args) { return new FileRegistry(args); })
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/any_io_executor.hpp>

namespace micro {

// Bumped whenever a public interface a plugin implements changes layout or meaning.
// 2: PluginOption gained min and max.
// 3: Transport gained node_metadata().
// 4: Transport gained open_stream() and statistics().
// 5: http::ServerOptions (handed by the http plugin to core) gained connection_table_name.
// 6: http::ClientOptions (handed by the http plugin to core) gained connection_table_name.
inline constexpr std::uint32_t plugin_abi_version = 7;

enum class PluginKind { registry, selector, broker, transport, wrapper };
std::string_view to_string(PluginKind kind) noexcept;
std::optional<PluginKind> plugin_kind_from_string(std::string_view text) noexcept;

// The base of every object a plugin factory returns. Each interface derived from it names its
// kind (`static constexpr PluginKind plugin_kind`), so the loader can deduce the kind from the
// type asked for and check the object's dynamic type against it.
class PluginObject {
 public:
  virtual ~PluginObject() = default;
};

// One option a plugin accepts. Types a value is checked against before the factory sees it:
//   "string", "int", "bool" (true/false), "double", "duration" (e.g. 250ms, 30s, 5m; a bare
//   number is seconds)
// `min` and `max`, when set, bound int, double and duration values (inclusive), written in
// the option's type ("1", "0.5", "10ms"); the loader refuses values outside with one message.
struct PluginOption {
  const char* name;
  const char* type;
  const char* default_value;  // nullptr: no default (the option is optional and absent)
  const char* help;
  const char* min = nullptr;
  const char* max = nullptr;
};

// What a factory receives: validated options with defaults filled in, the address part of
// the config item ("etcd://127.0.0.1:2379" → "127.0.0.1:2379"), and the runtime's executor.
class PluginArguments {
 public:
  PluginArguments() = default;
  PluginArguments(PluginKind kind, std::string name, std::string address,
                  std::map<std::string, std::string> options,
                  boost::asio::any_io_executor executor);

  PluginKind kind() const noexcept { return kind_; }
  const std::string& name() const noexcept { return name_; }
  // "micro.<kind>.<name>", the id of every micro::Error the plugin raises.
  std::string error_id() const;
  const std::string& address() const noexcept { return address_; }
  const boost::asio::any_io_executor& executor() const noexcept { return executor_; }
  const std::map<std::string, std::string>& options() const noexcept { return options_; }

  // Whether the option has a value: given, or declared with a default.
  bool has(std::string_view name) const;
  // Typed values; the loader has already checked type and range and filled in defaults.
  // Reading an option without a value (no default and not given: check has() first) throws
  // micro::Exception 500 naming the option, as it is a bug in the plugin.
  std::string get_string(std::string_view name) const;
  std::int64_t get_int(std::string_view name) const;
  double get_double(std::string_view name) const;
  bool get_bool(std::string_view name) const;
  std::chrono::milliseconds get_duration(std::string_view name) const;

 private:
  const std::string& value_of(std::string_view name) const;

  PluginKind kind_ = PluginKind::registry;
  std::string name_;
  std::string address_;
  std::map<std::string, std::string> options_;
  boost::asio::any_io_executor executor_;
};

// Parses "250ms", "30s", "5m", "1h", "1.5s", "100us", "2" (seconds). nullopt if malformed.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) noexcept;

extern "C" {
// Plain C layout: the loader reads abi_version before trusting any other field.
struct micro_plugin_descriptor_v2 {
  std::uint32_t abi_version;
  const char* kind;
  const char* name;
  const char* summary;
  const micro::PluginOption* options;
  std::size_t option_count;
  // Returns a new object of the declared kind, or throws micro::Exception / std::exception.
  micro::PluginObject* (*create)(const micro::PluginArguments& arguments);
};
}

using PluginDescriptor = micro_plugin_descriptor_v2;

// The name of the one symbol every plugin exports.
inline constexpr const char* plugin_entry_point = "micro_plugin_descriptor";

}  // namespace micro

#define MICRO_PLUGIN_STRINGIFY_(x) #x
#define MICRO_PLUGIN_STRINGIFY(x) MICRO_PLUGIN_STRINGIFY_(x)

// Defines the plugin's entry point. `options` is an array of micro::PluginOption (or use
// MICRO_PLUGIN_NO_OPTIONS); `factory` is anything convertible to the create pointer.
#define MICRO_PLUGIN(kind_, name_, summary_, options_, factory_)                   \
  extern "C" __attribute__((visibility("default"))) const micro::PluginDescriptor* \
  micro_plugin_descriptor() {                                                      \
    static const micro::PluginDescriptor descriptor{                               \
        micro::plugin_abi_version,                                                 \
        MICRO_PLUGIN_STRINGIFY(kind_),                                             \
        MICRO_PLUGIN_STRINGIFY(name_),                                             \
        summary_,                                                                  \
        options_,                                                                  \
        sizeof(options_) / sizeof(micro::PluginOption),                            \
        factory_};                                                                 \
    return &descriptor;                                                            \
  }

// For plugins without options (a zero-length array is not valid C++).
#define MICRO_PLUGIN_NO_OPTIONS(kind_, name_, summary_, factory_)                  \
  extern "C" __attribute__((visibility("default"))) const micro::PluginDescriptor* \
  micro_plugin_descriptor() {                                                      \
    static const micro::PluginDescriptor descriptor{micro::plugin_abi_version,     \
                                                    MICRO_PLUGIN_STRINGIFY(kind_), \
                                                    MICRO_PLUGIN_STRINGIFY(name_), \
                                                    summary_,                      \
                                                    nullptr,                       \
                                                    0,                             \
                                                    factory_};                     \
    return &descriptor;                                                            \
  }
