// micro/plugin.hpp — plugins: shared objects loaded at run time by kind and name.
//
// A plugin is a `.so` exporting one C entry point, `micro_plugin_descriptor`, which returns
// a PluginDescriptor: ABI version first (checked before anything else is read), kind,
// name, a one-line summary, the options it accepts and a factory. The loader keeps the
// `.so` loaded for as long as any object it made is alive.
//
// Writing one:
//   static const micro::PluginOption options[] = {{"dir", "string", "/tmp/micro", "where"}};
//   MICRO_PLUGIN(registry, file, "one JSON file per node", options,
//                [](const micro::PluginArguments& args) { return new FileRegistry(args); })
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

namespace micro {

// Bumped whenever a public interface a plugin implements changes layout or meaning.
inline constexpr std::uint32_t plugin_abi_version = 1;

// The base of every object a plugin factory returns; the loader checks its dynamic type
// against the declared kind.
class PluginObject {
 public:
  virtual ~PluginObject() = default;
};

enum class PluginKind { registry, selector, broker, transport, wrapper };
std::string_view to_string(PluginKind kind) noexcept;
std::optional<PluginKind> plugin_kind_from_string(std::string_view text) noexcept;

// Types an option value is checked against before the factory sees it.
//   "string", "int", "bool" (true/false), "double", "duration" (e.g. 250ms, 30s, 5m; a bare
//   number is seconds)
struct PluginOption {
  const char* name;
  const char* type;
  const char* default_value;  // nullptr: no default (the option is optional and absent)
  const char* help;
};

// What a factory receives: validated options with defaults filled in, the address part of
// the config item ("etcd://127.0.0.1:2379" → "127.0.0.1:2379"), and the runtime's executor.
class PluginArguments {
 public:
  PluginArguments() = default;
  PluginArguments(std::string address, std::map<std::string, std::string> options,
                  boost::asio::any_io_executor executor);

  const std::string& address() const noexcept { return address_; }
  const boost::asio::any_io_executor& executor() const noexcept { return executor_; }
  const std::map<std::string, std::string>& options() const noexcept { return options_; }

  bool has(std::string_view name) const;
  // Typed getters; the loader has already checked the text parses as the declared type.
  std::string get_string(std::string_view name, std::string_view fallback = {}) const;
  std::int64_t get_int(std::string_view name, std::int64_t fallback = 0) const;
  double get_double(std::string_view name, double fallback = 0) const;
  bool get_bool(std::string_view name, bool fallback = false) const;
  std::chrono::milliseconds get_duration(std::string_view name,
                                         std::chrono::milliseconds fallback = {}) const;

 private:
  std::string address_;
  std::map<std::string, std::string> options_;
  boost::asio::any_io_executor executor_;
};

// Parses "250ms", "30s", "5m", "1h", "1.5s", "100us", "2" (seconds). nullopt if malformed.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) noexcept;

extern "C" {
// Plain C layout: the loader reads abi_version before trusting any other field.
struct micro_plugin_descriptor_v1 {
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

using PluginDescriptor = micro_plugin_descriptor_v1;

// The name of the one symbol every plugin exports.
inline constexpr const char* plugin_entry_point = "micro_plugin_descriptor";

// A plugin found on disk (or linked in statically), with where it came from.
struct PluginInfo {
  PluginKind kind;
  std::string name;
  std::string summary;
  std::vector<PluginOption> options;
  std::filesystem::path path;  // empty for built-in plugins
};

class PluginLoaderImpl;

// Finds and loads plugins. Search order: each directory of MICRO_PLUGIN_PATH (':'-separated),
// then the install directory, then the build tree. A plugin of kind K and name N lives in a
// file `micro-K-N.so`. Thread-safe.
class PluginLoader {
 public:
  PluginLoader();  // the default search path
  explicit PluginLoader(std::vector<std::filesystem::path> search_path);
  ~PluginLoader();
  PluginLoader(const PluginLoader&) = delete;
  PluginLoader& operator=(const PluginLoader&) = delete;

  // The process-wide loader with the default search path.
  static PluginLoader& instance();

  const std::vector<std::filesystem::path>& search_path() const noexcept;

  // Loads the plugin and makes an object with `options` (checked against the descriptor:
  // unknown names and ill-typed values are errors) and `address`. Throws micro::Exception
  // with code 400 (bad name/option) or 404 (not found), saying what it found and where it
  // looked. The returned object keeps the shared object loaded.
  std::shared_ptr<PluginObject> create(
      PluginKind kind, std::string_view name, std::string_view address,
      const std::vector<std::pair<std::string, std::string>>& options,
      boost::asio::any_io_executor executor);

  template <class T>
  std::shared_ptr<T> create_as(PluginKind kind, std::string_view name, std::string_view address,
                               const std::vector<std::pair<std::string, std::string>>& options,
                               boost::asio::any_io_executor executor) {
    return std::static_pointer_cast<T>(create(kind, name, address, options, std::move(executor)));
  }

  // The descriptor of a plugin, loading it if needed (same errors as create).
  PluginInfo describe(PluginKind kind, std::string_view name);
  // Every plugin the search path holds, sorted by kind then name. Files that fail to load
  // are reported in `problems` rather than thrown.
  std::vector<PluginInfo> list(std::vector<std::string>* problems = nullptr);

 private:
  std::unique_ptr<PluginLoaderImpl> impl_;
};

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
