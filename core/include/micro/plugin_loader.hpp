// micro/plugin_loader.hpp — finding plugins on disk, checking them and making objects.
//
// Search order: each directory of MICRO_PLUGIN_PATH (':'-separated), then, only in a program
// run uninstalled from the build tree (tests, examples, build/cli/micro: they link
// core/uninstalled/in_build_tree.cpp), that build tree, then the install directory. libmicro
// itself holds no build-tree path (docs/design.md, "Plugin search path"). A plugin of kind K
// and name N lives in a file `micro-K-N.so`.
//
// Unload policy, the same for every plugin: a plugin once loaded stays loaded until the
// process exits (dlopen with RTLD_NODELETE; the loader never calls dlclose). Objects a plugin
// made, handlers it queued on the runtime, threads of the C libraries it wraps, thread-local
// destructors and atexit handlers can all outlive whoever held the object; unmapping their
// code under them is a crash at exit. A plugin costs its pages of address space, nothing more.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include <micro/error.hpp>
#include <micro/plugin.hpp>

namespace micro {

// A plugin found on disk, with where it came from.
struct PluginInfo {
  PluginKind kind;
  std::string name;
  std::string summary;
  std::vector<PluginOption> options;
  std::filesystem::path path;
};

using PluginOptions = std::vector<std::pair<std::string, std::string>>;

class PluginLoaderImpl;

// Thread-safe.
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

  // Loads plugin `name` of the kind of `Interface` (micro::Registry, micro::Broker, …) and
  // makes an object with `options` (checked against the descriptor: unknown names, ill-typed
  // and out-of-range values are errors) and `address`. Throws micro::Exception with code 400
  // (bad name, option or plugin) or 404 (not found), saying what it found and where it looked.
  template <class Interface>
  std::shared_ptr<Interface> create(std::string_view name, std::string_view address = {},
                                    const PluginOptions& options = {},
                                    boost::asio::any_io_executor executor = {}) {
    static_assert(std::is_base_of_v<PluginObject, Interface>,
                  "create<T>: T must be a plugin interface such as micro::Registry");
    auto object = create(Interface::plugin_kind, name, address, options, std::move(executor));
    auto typed = std::dynamic_pointer_cast<Interface>(object);
    if (!typed) throw_not_a(typeid(Interface).name(), *object);
    return typed;
  }

  // The same with the kind given at run time; the object is of that kind's interface.
  std::shared_ptr<PluginObject> create(PluginKind kind, std::string_view name,
                                       std::string_view address, const PluginOptions& options,
                                       boost::asio::any_io_executor executor);

  // The descriptor of a plugin, loading it if needed (same errors as create).
  PluginInfo describe(PluginKind kind, std::string_view name);
  // Every plugin the search path holds, sorted by kind then name. Files that fail to load
  // are reported in `problems` rather than thrown.
  std::vector<PluginInfo> list(std::vector<std::string>* problems = nullptr);

 private:
  [[noreturn]] static void throw_not_a(const char* wanted_type, const PluginObject& object);

  std::unique_ptr<PluginLoaderImpl> impl_;
};

}  // namespace micro
