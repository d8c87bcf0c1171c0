// The plugin loader: finds micro-<kind>-<name>.so files along the search path, checks
// their descriptor (ABI version first, then kind, name and option table), validates options
// against it (types, ranges) and calls the factory. Plugins stay loaded (see the unload
// policy in <micro/plugin_loader.hpp>).
#include <micro/plugin_loader.hpp>
#include "build_tree.hpp"
#include "plugin_options.hpp"

#include <cxxabi.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <system_error>
#include <typeinfo>
#include <utility>

#include <micro/broker.hpp>
#include <micro/error.hpp>
#include <micro/registry.hpp>
#include <micro/selector.hpp>
#include <micro/text.hpp>
#include <micro/transport.hpp>
#include <micro/wrapper.hpp>

namespace micro {

namespace {

constexpr std::string_view error_id = "micro.plugin";

[[noreturn]] void throw_error(ErrorCode code, std::string detail) {
  throw Exception(Error(std::string(error_id), code, std::move(detail)));
}

template <typename Interface>
bool is_instance(PluginObject* object) {
  return dynamic_cast<Interface*>(object) != nullptr;
}

// Everything the loader knows per plugin kind, in the order kinds are searched and listed.
struct KindTraits {
  PluginKind kind;
  std::string_view name;            // as in file names and descriptors
  std::string_view build_folder;    // build-tree folder; transports live under plugins/ for history
  std::string_view interface_name;  // the C++ class a plugin of the kind must return, for messages
  bool (*is_of_kind)(PluginObject*);
};

constexpr KindTraits kind_traits[] = {
    {PluginKind::registry, "registry", "registry", "micro::Registry", is_instance<Registry>},
    {PluginKind::selector, "selector", "selector", "micro::Selector", is_instance<Selector>},
    {PluginKind::broker, "broker", "broker", "micro::Broker", is_instance<Broker>},
    {PluginKind::transport, "transport", "plugins", "micro::Transport", is_instance<Transport>},
    {PluginKind::wrapper, "wrapper", "wrappers", "micro::Wrapper", is_instance<Wrapper>},
};

// The traits of `kind`, or null for a value outside the enumeration.
const KindTraits* traits_of(PluginKind kind) noexcept {
  for (const KindTraits& traits : kind_traits)
    if (traits.kind == kind) return &traits;
  return nullptr;
}

std::string_view build_folder(PluginKind kind) {
  const KindTraits* traits = traits_of(kind);
  return traits ? traits->build_folder : "plugins";
}

std::string_view interface_name(PluginKind kind) {
  const KindTraits* traits = traits_of(kind);
  return traits ? traits->interface_name : "micro::PluginObject";
}

bool is_of_kind(PluginObject* object, PluginKind kind) {
  const KindTraits* traits = traits_of(kind);
  return traits && traits->is_of_kind(object);
}

std::string demangled_type_name_of(const char* mangled) {
  int status = 0;
  char* readable = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string result = (status == 0 && readable != nullptr) ? readable : mangled;
  std::free(readable);
  return result;
}

std::string demangled_type_name(const std::type_info& type) {
  return demangled_type_name_of(type.name());
}

// A plain identifier: a lower-case letter, then lower-case letters, digits or '_'. This is
// what keeps "../evil" or "a/b" from ever reaching the file system.
bool is_plain_identifier(std::string_view text) {
  if (text.empty() || text.size() > 64) return false;
  if (text.front() < 'a' || text.front() > 'z') return false;
  return std::all_of(text.begin(), text.end(), [](char character) {
    return (character >= 'a' && character <= 'z') || (character >= '0' && character <= '9') ||
           character == '_';
  });
}

std::string join(const std::vector<std::string>& items, std::string_view separator = ", ") {
  std::string text;
  for (const auto& item : items) {
    if (!text.empty()) text += separator;
    text += item;
  }
  return text;
}

std::string file_name_for(PluginKind kind, std::string_view name) {
  return "micro-" + std::string(to_string(kind)) + "-" + std::string(name) + ".so";
}

// Splits "micro-registry-etcd.so" into its kind and name; false for other file names.
bool parse_file_name(std::string_view file_name, std::string& kind, std::string& name) {
  constexpr std::string_view prefix = "micro-";
  constexpr std::string_view suffix = ".so";
  if (file_name.size() <= prefix.size() + suffix.size() || !file_name.starts_with(prefix) ||
      !file_name.ends_with(suffix)) {
    return false;
  }
  std::string_view middle =
      file_name.substr(prefix.size(), file_name.size() - prefix.size() - suffix.size());
  auto dash = middle.find('-');
  if (dash == std::string_view::npos || dash == 0 || dash + 1 == middle.size()) return false;
  kind = std::string(middle.substr(0, dash));
  name = std::string(middle.substr(dash + 1));
  return true;
}

// One dlopen'ed file. Never closed: the unload policy keeps every plugin until exit.
struct SharedLibrary {
  void* handle = nullptr;
  std::filesystem::path path;
  const PluginDescriptor* descriptor = nullptr;
};

// A place to look: a flat directory of micro-*.so files, or the build tree, where each
// plugin sits in <root>/<folder>/<name>/.
struct SearchEntry {
  std::filesystem::path directory;
  bool is_build_tree = false;
};

// A file that could be the plugin (kind, name), found by scanning.
struct FoundFile {
  std::string kind;
  std::string name;
  std::filesystem::path path;
};

bool is_file(const std::filesystem::path& path) {
  std::error_code error;
  return std::filesystem::is_regular_file(path, error);
}

// Plugin-looking files directly inside `directory`, in name order for stable output.
std::vector<FoundFile> scan_directory(const std::filesystem::path& directory) {
  std::vector<FoundFile> found;
  std::error_code error;
  std::filesystem::directory_iterator iterator(directory, error);
  if (error) return found;
  for (const auto& entry : iterator) {
    std::error_code entry_error;
    if (!entry.is_regular_file(entry_error)) continue;
    FoundFile file;
    if (!parse_file_name(entry.path().filename().string(), file.kind, file.name)) continue;
    file.path = entry.path();
    found.push_back(std::move(file));
  }
  std::sort(found.begin(), found.end(),
            [](const FoundFile& a, const FoundFile& b) { return a.path < b.path; });
  return found;
}

}  // namespace

// ---- the loader ----

class PluginLoaderImpl {
 public:
  explicit PluginLoaderImpl(std::vector<SearchEntry> entries) : entries_(std::move(entries)) {
    for (const auto& entry : entries_) search_path_.push_back(entry.directory);
  }

  const std::vector<std::filesystem::path>& search_path() const noexcept { return search_path_; }

  std::shared_ptr<PluginObject> create(PluginKind kind, std::string_view name,
                                       std::string_view address, const PluginOptions& options,
                                       boost::asio::any_io_executor executor) {
    std::shared_ptr<SharedLibrary> library;
    {
      std::lock_guard lock(mutex_);
      library = find_and_load(kind, name);
    }
    const PluginDescriptor& descriptor = *library->descriptor;
    auto arguments =
        PluginArguments(kind, std::string(name), std::string(address),
                        validate_options(descriptor, kind, name, options), std::move(executor));
    std::string what = describe_plugin(kind, name, library->path);

    // The factory runs outside the lock: it may block (connect to etcd) or load plugins itself.
    PluginObject* object = nullptr;
    try {
      object = descriptor.create(arguments);
    } catch (const Exception& error) {
      Error wrapped = error.error();
      wrapped.detail = what + " failed to start: " + wrapped.detail;
      throw Exception(std::move(wrapped));
    } catch (const std::exception& error) {
      throw_error(ErrorCode::internal, what + " failed to start: " + error.what());
    } catch (...) {
      throw_error(ErrorCode::internal, what + " failed to start: unknown exception");
    }
    if (object == nullptr) throw_error(ErrorCode::internal, what + " returned no object");
    if (!is_of_kind(object, kind)) {
      std::string actual = demangled_type_name(typeid(*object));
      delete object;
      throw_error(ErrorCode::bad_request,
                  what + " made an object of type " + actual + ", which is not a " +
                      std::string(interface_name(kind)) + "; expected the factory to return a " +
                      std::string(interface_name(kind)));
    }
    return std::shared_ptr<PluginObject>(object);
  }

  PluginInfo describe(PluginKind kind, std::string_view name) {
    std::lock_guard lock(mutex_);
    auto library = find_and_load(kind, name);
    return info_of(*library);
  }

  std::vector<PluginInfo> list(std::vector<std::string>* problems) {
    std::lock_guard lock(mutex_);
    std::vector<PluginInfo> plugins;
    std::set<std::pair<std::string, std::string>> seen;
    for (const auto& file : scan_all()) {
      auto kind = plugin_kind_from_string(file.kind);
      if (!kind) {
        if (problems) {
          problems->push_back(file.path.string() + ": unknown plugin kind '" + file.kind +
                              "'; expected one of: registry, selector, broker, transport, wrapper");
        }
        continue;
      }
      if (!is_plain_identifier(file.name)) {
        if (problems) {
          problems->push_back(file.path.string() + ": '" + file.name +
                              "' is not a plain plugin name; expected a lower-case letter "
                              "followed by lower-case letters, digits or '_'");
        }
        continue;
      }
      // The first file in search order wins, as it would for create().
      if (!seen.insert({file.kind, file.name}).second) continue;
      try {
        auto library = load_checked(file.path, *kind, file.name);
        plugins.push_back(info_of(*library));
      } catch (const Exception& error) {
        if (problems) problems->push_back(error.error().detail);
      }
    }
    std::sort(plugins.begin(), plugins.end(), [](const PluginInfo& a, const PluginInfo& b) {
      return std::pair(a.kind, a.name) < std::pair(b.kind, b.name);
    });
    return plugins;
  }

 private:
  // Candidate paths for (kind, name), in search order.
  std::vector<std::filesystem::path> candidate_directories(PluginKind kind,
                                                           std::string_view name) const {
    std::vector<std::filesystem::path> directories;
    for (const auto& entry : entries_) {
      if (entry.is_build_tree) {
        directories.push_back(entry.directory / build_folder(kind) / std::string(name));
      } else {
        directories.push_back(entry.directory);
      }
    }
    return directories;
  }

  // Every plugin-looking file along the search path, in search order.
  std::vector<FoundFile> scan_all() const {
    std::vector<FoundFile> found;
    for (const auto& entry : entries_) {
      if (!entry.is_build_tree) {
        auto files = scan_directory(entry.directory);
        found.insert(found.end(), files.begin(), files.end());
        continue;
      }
      // Build tree: <root>/<folder>/<plugin folder>/micro-*.so, kinds in a fixed order.
      std::set<std::string> folders_done;
      for (const KindTraits& traits : kind_traits) {
        std::string folder(traits.build_folder);
        if (!folders_done.insert(folder).second) continue;
        std::error_code error;
        std::vector<std::filesystem::path> plugin_folders;
        std::filesystem::directory_iterator iterator(entry.directory / folder, error);
        if (error) continue;
        for (const auto& child : iterator) {
          std::error_code child_error;
          if (child.is_directory(child_error)) plugin_folders.push_back(child.path());
        }
        std::sort(plugin_folders.begin(), plugin_folders.end());
        for (const auto& plugin_folder : plugin_folders) {
          auto files = scan_directory(plugin_folder);
          found.insert(found.end(), files.begin(), files.end());
        }
      }
    }
    return found;
  }

  std::shared_ptr<SharedLibrary> find_and_load(PluginKind kind, std::string_view name) {
    if (!is_plain_identifier(name)) {
      throw_error(ErrorCode::bad_request,
                  "'" + std::string(name) + "' is not a plain " + std::string(to_string(kind)) +
                      " plugin name; expected a lower-case letter followed by lower-case letters, "
                      "digits or '_' (like 'etcd' or 'round_robin'), at most 64 characters");
    }
    std::string file_name = file_name_for(kind, name);
    auto directories = candidate_directories(kind, name);
    for (const auto& directory : directories) {
      auto path = directory / file_name;
      if (is_file(path)) return load_checked(path, kind, name);
    }

    // Not found: say where we looked and what there is instead.
    std::vector<std::string> found_names;
    for (const auto& file : scan_all()) {
      if (file.kind == to_string(kind) &&
          std::find(found_names.begin(), found_names.end(), file.name) == found_names.end()) {
        found_names.push_back(file.name);
      }
    }
    std::sort(found_names.begin(), found_names.end());
    std::vector<std::string> looked_in;
    for (const auto& directory : directories) looked_in.push_back(directory.string());
    std::string detail =
        "no " + std::string(to_string(kind)) + " plugin named '" + std::string(name) + "'" +
        did_you_mean(name, found_names) + ": no " + file_name + " in " +
        (looked_in.empty() ? std::string("(an empty search path)") : join(looked_in)) +
        "; expected one of the " + std::string(to_string(kind)) +
        " plugins found: " + (found_names.empty() ? std::string("(none)") : join(found_names));
    throw_error(ErrorCode::not_found, detail);
  }

  // Opens `path` (or reuses it) and checks its descriptor: ABI version, then kind, then name.
  std::shared_ptr<SharedLibrary> load_checked(const std::filesystem::path& path, PluginKind kind,
                                              std::string_view name) {
    auto library = open(path);
    const PluginDescriptor& descriptor = *library->descriptor;
    std::string where = path.string();
    std::string declared_kind = descriptor.kind ? descriptor.kind : "(null)";
    std::string declared_name = descriptor.name ? descriptor.name : "(null)";
    if (declared_kind != to_string(kind)) {
      throw_error(ErrorCode::bad_request,
                  where + ": the file is named as a " + std::string(to_string(kind)) +
                      " plugin but its descriptor declares kind '" + declared_kind +
                      "'; expected kind '" + std::string(to_string(kind)) + "'");
    }
    if (declared_name != name) {
      throw_error(ErrorCode::bad_request,
                  where + ": the file is named for " + std::string(to_string(kind)) + " plugin '" +
                      std::string(name) + "' but its descriptor declares name '" + declared_name +
                      "'; expected name '" + std::string(name) + "'");
    }
    if (descriptor.create == nullptr) {
      throw_error(ErrorCode::bad_request,
                  where + ": the descriptor has no factory; expected a create function");
    }
    if (descriptor.option_count > 0 && descriptor.options == nullptr) {
      throw_error(ErrorCode::bad_request, where + ": the descriptor declares " +
                                              std::to_string(descriptor.option_count) +
                                              " options but no option table; expected both");
    }
    for (std::size_t index = 0; index < descriptor.option_count; ++index) {
      check_declared_option(descriptor.options[index], where);
    }
    return library;
  }

  // A descriptor's own option entry must make sense: a name, a default and bounds that parse
  // as the option's type, and a default within its bounds.
  static void check_declared_option(const PluginOption& option, const std::string& where) {
    if (option.name == nullptr || *option.name == '\0') {
      throw_error(ErrorCode::bad_request,
                  where + ": an option in the descriptor has no name; expected every option named");
    }
    std::string what = where + ": option '" + option.name + "'";
    std::string_view type = option.type ? option.type : "string";
    for (const char* text : {option.default_value, option.min, option.max}) {
      if (text != nullptr && !detail::option_value_fits(type, text)) {
        throw_error(ErrorCode::bad_request,
                    what + " declares '" + text + "', which is not " +
                        std::string(detail::option_type_expectation(type)) +
                        "; expected its default and bounds to be of its type " + std::string(type));
      }
    }
    if ((option.min || option.max) && !detail::option_type_is_ranged(type)) {
      throw_error(ErrorCode::bad_request, what + " of type " + std::string(type) +
                                              " declares a min or max; expected bounds only on "
                                              "int, double and duration options");
    }
    if (option.default_value != nullptr) {
      if (auto problem = detail::option_range_problem(option, option.default_value)) {
        throw_error(ErrorCode::bad_request, where + ": the default of " + *problem);
      }
    }
  }

  // dlopen + entry point + ABI check, cached by path. The cache keeps a library loaded for
  // the loader's lifetime, so a second create() does not reopen it.
  std::shared_ptr<SharedLibrary> open(const std::filesystem::path& path) {
    std::error_code error;
    auto canonical = std::filesystem::weakly_canonical(path, error);
    std::string key = error ? path.string() : canonical.string();
    if (auto cached = libraries_.find(key); cached != libraries_.end()) return cached->second;

    auto library = std::make_shared<SharedLibrary>();
    library->path = path;
    dlerror();  // clear any stale message
    // RTLD_NODELETE: the unload policy, for every plugin alike (see plugin_loader.hpp).
    library->handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (library->handle == nullptr) {
      const char* reason = dlerror();
      throw_error(ErrorCode::bad_request, path.string() + ": cannot load it: " +
                                              (reason ? reason : "unknown dlopen error") +
                                              "; expected a shared object built against libmicro");
    }
    using EntryPoint = const PluginDescriptor* (*)();
    void* symbol = dlsym(library->handle, plugin_entry_point);
    if (symbol == nullptr) {
      throw_error(ErrorCode::bad_request,
                  path.string() + ": no entry point '" + plugin_entry_point +
                      "'; expected a plugin defined with MICRO_PLUGIN or MICRO_PLUGIN_NO_OPTIONS");
    }
    auto entry_point = reinterpret_cast<EntryPoint>(symbol);
    const PluginDescriptor* descriptor = entry_point();
    if (descriptor == nullptr) {
      throw_error(ErrorCode::bad_request,
                  path.string() + ": '" + plugin_entry_point +
                      "' returned no descriptor; expected a pointer to a static descriptor");
    }
    // Only abi_version is read before this check: the rest of the layout may differ.
    if (descriptor->abi_version != plugin_abi_version) {
      throw_error(ErrorCode::bad_request, path.string() + ": plugin ABI version " +
                                              std::to_string(descriptor->abi_version) +
                                              "; expected ABI version " +
                                              std::to_string(plugin_abi_version) +
                                              " (rebuild the plugin against this libmicro)");
    }
    library->descriptor = descriptor;
    libraries_.emplace(key, library);
    return library;
  }

  static std::string describe_plugin(PluginKind kind, std::string_view name,
                                     const std::filesystem::path& path) {
    return std::string(to_string(kind)) + " plugin '" + std::string(name) + "' (" + path.string() +
           ")";
  }

  static PluginInfo info_of(const SharedLibrary& library) {
    const PluginDescriptor& descriptor = *library.descriptor;
    PluginInfo info;
    info.kind = plugin_kind_from_string(descriptor.kind).value_or(PluginKind::registry);
    info.name = descriptor.name;
    info.summary = descriptor.summary ? descriptor.summary : "";
    if (descriptor.options != nullptr) {
      info.options.assign(descriptor.options, descriptor.options + descriptor.option_count);
    }
    info.path = library.path;
    return info;
  }

  // Checks `given` against the descriptor and fills in defaults.
  static std::map<std::string, std::string> validate_options(const PluginDescriptor& descriptor,
                                                             PluginKind kind, std::string_view name,
                                                             const PluginOptions& given) {
    std::string plugin = std::string(to_string(kind)) + " plugin '" + std::string(name) + "'";
    std::vector<std::string> accepted;
    for (std::size_t index = 0; index < descriptor.option_count; ++index) {
      accepted.push_back(descriptor.options[index].name);
    }
    auto find_option = [&](std::string_view option_name) -> const PluginOption* {
      for (std::size_t index = 0; index < descriptor.option_count; ++index) {
        if (option_name == descriptor.options[index].name) return &descriptor.options[index];
      }
      return nullptr;
    };

    std::map<std::string, std::string> values;
    for (const auto& [key, value] : given) {
      const PluginOption* option = find_option(key);
      if (option == nullptr) {
        throw_error(ErrorCode::bad_request, plugin + " has no option '" + key + "'; expected " +
                                                (accepted.empty() ? std::string("no options at all")
                                                                  : "one of: " + join(accepted)) +
                                                did_you_mean(key, accepted));
      }
      if (values.count(key) != 0) {
        throw_error(ErrorCode::bad_request,
                    plugin + ": option '" + key + "' is given twice; expected it at most once");
      }
      std::string_view type = option->type ? option->type : "string";
      if (!detail::option_value_fits(type, value)) {
        throw_error(ErrorCode::bad_request,
                    plugin + ": option '" + key + "' is " + std::string(type) + ", got '" + value +
                        "'; expected " + std::string(detail::option_type_expectation(type)));
      }
      if (auto problem = detail::option_range_problem(*option, value)) {
        throw_error(ErrorCode::bad_request, plugin + ": " + *problem);
      }
      values.emplace(key, value);
    }
    for (std::size_t index = 0; index < descriptor.option_count; ++index) {
      const PluginOption& option = descriptor.options[index];
      if (option.default_value != nullptr && values.count(option.name) == 0) {
        values.emplace(option.name, option.default_value);
      }
    }
    return values;
  }

  std::mutex mutex_;
  std::vector<SearchEntry> entries_;
  std::vector<std::filesystem::path> search_path_;
  std::map<std::string, std::shared_ptr<SharedLibrary>> libraries_;
};

namespace {

// MICRO_PLUGIN_PATH, then the build trees an uninstalled program registered (build_tree.hpp;
// none in an installed program), then the install directory.
std::vector<SearchEntry> default_search_entries() {
  std::vector<SearchEntry> entries;
  if (const char* plugin_path = std::getenv("MICRO_PLUGIN_PATH")) {
    std::string_view rest(plugin_path);
    while (true) {
      auto colon = rest.find(':');
      std::string_view directory = rest.substr(0, colon);
      if (!directory.empty()) entries.push_back({std::filesystem::path(directory), false});
      if (colon == std::string_view::npos) break;
      rest.remove_prefix(colon + 1);
    }
  }
  for (auto& root : detail::build_tree_roots()) entries.push_back({std::move(root), true});
#ifdef MICRO_PLUGIN_INSTALL_DIR
  entries.push_back({std::filesystem::path(MICRO_PLUGIN_INSTALL_DIR), false});
#endif
  return entries;
}

std::vector<SearchEntry> flat_entries(std::vector<std::filesystem::path> directories) {
  std::vector<SearchEntry> entries;
  for (auto& directory : directories) entries.push_back({std::move(directory), false});
  return entries;
}

}  // namespace

PluginLoader::PluginLoader()
    : impl_(std::make_unique<PluginLoaderImpl>(default_search_entries())) {}

PluginLoader::PluginLoader(std::vector<std::filesystem::path> search_path)
    : impl_(std::make_unique<PluginLoaderImpl>(flat_entries(std::move(search_path)))) {}

PluginLoader::~PluginLoader() = default;

PluginLoader& PluginLoader::instance() {
  static PluginLoader loader;
  return loader;
}

const std::vector<std::filesystem::path>& PluginLoader::search_path() const noexcept {
  return impl_->search_path();
}

std::shared_ptr<PluginObject> PluginLoader::create(PluginKind kind, std::string_view name,
                                                   std::string_view address,
                                                   const PluginOptions& options,
                                                   boost::asio::any_io_executor executor) {
  return impl_->create(kind, name, address, options, std::move(executor));
}

void PluginLoader::throw_not_a(const char* wanted_type, const PluginObject& object) {
  throw_error(ErrorCode::bad_request,
              "the plugin made an object of type " + demangled_type_name(typeid(object)) +
                  ", which is not a " + demangled_type_name_of(wanted_type) +
                  "; expected create<T>() with a plugin interface T such as micro::Registry");
}

PluginInfo PluginLoader::describe(PluginKind kind, std::string_view name) {
  return impl_->describe(kind, name);
}

std::vector<PluginInfo> PluginLoader::list(std::vector<std::string>* problems) {
  return impl_->list(problems);
}

}  // namespace micro
