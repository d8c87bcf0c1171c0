// Tests of the plugin loader against the fixture plugins built beside this test: a good
// registry with typed options, and one plugin for each way a plugin can be wrong.
#include <doctest/doctest.h>

#include <dlfcn.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

#include <micro/broker.hpp>
#include <micro/error.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/registry.hpp>

namespace {

const std::filesystem::path fixture_dir = LOADER_FIXTURE_DIR;

std::string fixture(std::string_view file_name) {
  return (fixture_dir / file_name).string();
}

using Options = std::vector<std::pair<std::string, std::string>>;

// The error create() throws, or a failed check if it throws none.
micro::Error create_error(micro::PluginLoader& loader, micro::PluginKind kind,
                          std::string_view name, const Options& options = {},
                          std::string_view address = {}) {
  try {
    loader.create(kind, name, address, options, {});
  } catch (const micro::Exception& error) {
    return error.error();
  }
  FAIL("create(" << name << ") did not throw");
  return {};
}

// A scratch directory removed at the end of the test.
struct ScratchDirectory {
  std::filesystem::path path;
  ScratchDirectory() {
    path = std::filesystem::temp_directory_path() /
           ("micro-loader-test-" + std::to_string(::getpid()));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~ScratchDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};

// Clears MICRO_PLUGIN_PATH for a test and restores it afterwards.
struct EnvironmentFreeLoader {
  std::optional<std::string> saved;
  EnvironmentFreeLoader() {
    if (const char* value = std::getenv("MICRO_PLUGIN_PATH")) saved = value;
    ::unsetenv("MICRO_PLUGIN_PATH");
  }
  ~EnvironmentFreeLoader() {
    if (saved) ::setenv("MICRO_PLUGIN_PATH", saved->c_str(), 1);
  }
};

bool is_loaded(const std::string& path) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (handle == nullptr) return false;
  dlclose(handle);
  return true;
}

}  // namespace

TEST_CASE("kinds convert to and from their names") {
  CHECK(micro::to_string(micro::PluginKind::transport) == "transport");
  CHECK(micro::to_string(micro::PluginKind::wrapper) == "wrapper");
  CHECK(micro::plugin_kind_from_string("selector") == micro::PluginKind::selector);
  CHECK(micro::plugin_kind_from_string("broker") == micro::PluginKind::broker);
  CHECK_FALSE(micro::plugin_kind_from_string("Registry").has_value());
  CHECK_FALSE(micro::plugin_kind_from_string("").has_value());
}

TEST_CASE("durations parse like Go's, and malformed ones are refused") {
  using std::chrono::milliseconds;
  CHECK(micro::parse_duration("250ms") == milliseconds(250));
  CHECK(micro::parse_duration("30s") == milliseconds(30000));
  CHECK(micro::parse_duration("5m") == milliseconds(300000));
  CHECK(micro::parse_duration("1h") == milliseconds(3600000));
  CHECK(micro::parse_duration("1.5s") == milliseconds(1500));
  CHECK(micro::parse_duration("2") == milliseconds(2000));
  CHECK(micro::parse_duration("1m30s") == milliseconds(90000));
  CHECK(micro::parse_duration("2500us") == milliseconds(2));
  CHECK(micro::parse_duration("0") == milliseconds(0));
  for (const char* bad :
       {"", "s", "ms", "-1s", "1x", "1.2.3s", "30 s", "1s2", "abc", ".s", "99999999999999999h"}) {
    CAPTURE(bad);
    CHECK_FALSE(micro::parse_duration(bad).has_value());
  }
}

TEST_CASE("PluginArguments getters read typed values; a value the plugin never got is its bug") {
  micro::PluginArguments arguments(
      micro::PluginKind::registry, "good", "host:1",
      {{"count", "42"}, {"flag", "true"}, {"ratio", "0.25"}, {"ttl", "2s"}, {"junk", "x"}}, {});
  CHECK(arguments.address() == "host:1");
  CHECK(arguments.error_id() == "micro.registry.good");
  CHECK(arguments.has("count"));
  CHECK_FALSE(arguments.has("missing"));
  CHECK(arguments.get_int("count") == 42);
  CHECK(arguments.get_bool("flag"));
  CHECK(arguments.get_double("ratio") == doctest::Approx(0.25));
  CHECK(arguments.get_duration("ttl") == std::chrono::seconds(2));
  CHECK(arguments.get_string("junk") == "x");
  // No fallbacks in code: defaults live in the descriptor, so an absent value is a plugin bug.
  try {
    arguments.get_string("missing");
    FAIL("an absent option was read");
  } catch (const micro::Exception& e) {
    CHECK(e.error().code == 500);
    CHECK(e.error().id == "micro.registry.good");
    CHECK(e.error().detail ==
          "option 'missing' has no value: it has no default and was not given; expected the "
          "plugin to check has(\"missing\") first");
  }
  try {
    arguments.get_int("junk");
    FAIL("a string was read as a number");
  } catch (const micro::Exception& e) {
    CHECK(e.error().code == 500);
    CHECK(e.error().detail.starts_with("option 'junk' is 'x', which the getter cannot read"));
  }
}

TEST_CASE("a good plugin loads with defaults filled and typed options passed") {
  micro::PluginLoader loader({fixture_dir});
  REQUIRE(loader.search_path().size() == 1);

  auto registry = loader.create<micro::Registry>("good", "10.0.0.1:2379", {}, {});
  REQUIRE(registry);
  auto services = registry->list_services();
  REQUIRE(services.size() == 1);
  CHECK(services[0].name == "good");
  CHECK(services[0].metadata["address"] == "10.0.0.1:2379");
  CHECK(services[0].metadata["count"] == "3");
  CHECK(services[0].metadata["enabled"] == "yes");
  CHECK(services[0].metadata["ratio"] == "absent");
  CHECK(services[0].metadata["ttl_ms"] == "30000");
  CHECK(services[0].metadata["error_id"] == "micro.registry.good");

  auto configured = loader.create<micro::Registry>("good", "",
                                                   {{"count", "-12"},
                                                    {"enabled", "false"},
                                                    {"ratio", "0.5"},
                                                    {"ttl", "250ms"},
                                                    {"label", "custom"}},
                                                   {});
  auto custom = configured->list_services().at(0);
  CHECK(custom.name == "custom");
  CHECK(custom.metadata["count"] == "-12");
  CHECK(custom.metadata["enabled"] == "no");
  CHECK(custom.metadata["ratio"] == "0.500000");
  CHECK(custom.metadata["ttl_ms"] == "250");

  auto info = loader.describe(micro::PluginKind::registry, "good");
  CHECK(info.kind == micro::PluginKind::registry);
  CHECK(info.name == "good");
  CHECK(info.summary == "a test registry that reports its options");
  CHECK(info.path == fixture_dir / "micro-registry-good.so");
  REQUIRE(info.options.size() == 5);
  CHECK(std::string(info.options[0].name) == "count");
  CHECK(std::string(info.options[3].type) == "duration");
}

TEST_CASE("options are checked against the descriptor") {
  micro::PluginLoader loader({fixture_dir});
  using micro::PluginKind;

  auto unknown = create_error(loader, PluginKind::registry, "good", {{"cuont", "1"}});
  CHECK(unknown.code == 400);
  CHECK(unknown.detail ==
        "registry plugin 'good' has no option 'cuont'; expected one of: count, enabled, ratio, "
        "ttl, label (did you mean 'count'?)");

  auto far_off = create_error(loader, PluginKind::registry, "good", {{"colour", "red"}});
  CHECK(far_off.detail ==
        "registry plugin 'good' has no option 'colour'; expected one of: count, enabled, ratio, "
        "ttl, label");

  auto bad_int = create_error(loader, PluginKind::registry, "good", {{"count", "three"}});
  CHECK(bad_int.code == 400);
  CHECK(bad_int.detail ==
        "registry plugin 'good': option 'count' is int, got 'three'; expected a whole number "
        "like 42");

  auto bad_bool = create_error(loader, PluginKind::registry, "good", {{"enabled", "yes"}});
  CHECK(bad_bool.detail ==
        "registry plugin 'good': option 'enabled' is bool, got 'yes'; expected true or false");

  auto bad_double = create_error(loader, PluginKind::registry, "good", {{"ratio", "half"}});
  CHECK(bad_double.detail ==
        "registry plugin 'good': option 'ratio' is double, got 'half'; expected a number like "
        "0.25");

  auto bad_duration = create_error(loader, PluginKind::registry, "good", {{"ttl", "30 sec"}});
  CHECK(bad_duration.detail ==
        "registry plugin 'good': option 'ttl' is duration, got '30 sec'; expected a duration "
        "like 250ms, 30s, 5m or 1h");

  auto twice = create_error(loader, PluginKind::registry, "good", {{"count", "1"}, {"count", "2"}});
  CHECK(twice.detail ==
        "registry plugin 'good': option 'count' is given twice; expected it at most once");

  auto too_small = create_error(loader, PluginKind::registry, "good", {{"count", "-101"}});
  CHECK(too_small.code == 400);
  CHECK(too_small.detail ==
        "registry plugin 'good': option 'count' is -101, below its minimum -100; expected a whole "
        "number from -100 to 100");
  auto too_long = create_error(loader, PluginKind::registry, "good", {{"ttl", "2h"}});
  CHECK(too_long.detail ==
        "registry plugin 'good': option 'ttl' is 2h, above its maximum 1h; expected a duration "
        "from 1ms to 1h");
  CHECK(loader.create<micro::Registry>("good", "", {{"count", "100"}, {"ttl", "1h"}}));

  auto none_accepted = create_error(loader, PluginKind::registry, "wrongtype", {{"any", "1"}});
  CHECK(none_accepted.detail ==
        "registry plugin 'wrongtype' has no option 'any'; expected no options at all");
}

TEST_CASE("names that are not plain identifiers are refused before any file is touched") {
  // The search path points nowhere real: refusal must not depend on the file system.
  micro::PluginLoader loader({"/nonexistent/micro-test"});
  for (const char* bad :
       {"../evil", "a/b", "", "Upper", "1st", "with-dash", "dot.ted", "/abs", "sp ace"}) {
    CAPTURE(bad);
    auto error = create_error(loader, micro::PluginKind::registry, bad);
    CHECK(error.code == 400);
    CHECK(error.detail == "'" + std::string(bad) +
                              "' is not a plain registry plugin name; expected a lower-case "
                              "letter followed by lower-case letters, digits or '_' (like 'etcd' "
                              "or 'round_robin'), at most 64 characters");
  }
  auto long_name = create_error(loader, micro::PluginKind::selector, std::string(65, 'a'));
  CHECK(long_name.code == 400);
}

TEST_CASE("an unknown name lists what was found and everywhere the loader looked") {
  micro::PluginLoader loader({"/nonexistent/first", fixture_dir});
  auto error = create_error(loader, micro::PluginKind::registry, "goood");
  CHECK(error.code == 404);
  CHECK(error.detail ==
        "no registry plugin named 'goood' (did you mean 'good'?): no micro-registry-goood.so in "
        "/nonexistent/first, " +
            fixture_dir.string() +
            "; expected one of the registry plugins found: badabi, badoption, good, misnamed, "
            "noentry, "
            "throwing, wrongkind, wrongtype");

  auto none = create_error(loader, micro::PluginKind::broker, "nats");
  CHECK(none.code == 404);
  CHECK(none.detail ==
        "no broker plugin named 'nats': no micro-broker-nats.so in "
        "/nonexistent/first, " +
            fixture_dir.string() + "; expected one of the broker plugins found: (none)");
}

TEST_CASE("a wrong ABI version is refused first, naming the file and both versions") {
  micro::PluginLoader loader({fixture_dir});
  auto error = create_error(loader, micro::PluginKind::registry, "badabi");
  CHECK(error.code == 400);
  // The descriptor also claims kind 'selector': the ABI check must come before that is read.
  CHECK(error.detail == fixture("micro-registry-badabi.so") + ": plugin ABI version " +
                            std::to_string(micro::plugin_abi_version + 98) +
                            "; expected ABI version " + std::to_string(micro::plugin_abi_version) +
                            " (rebuild the plugin against this libmicro)");
}

TEST_CASE("a descriptor of the wrong kind is refused, naming both kinds") {
  micro::PluginLoader loader({fixture_dir});
  auto error = create_error(loader, micro::PluginKind::registry, "wrongkind");
  CHECK(error.code == 400);
  CHECK(error.detail == fixture("micro-registry-wrongkind.so") +
                            ": the file is named as a registry plugin but its descriptor declares "
                            "kind 'selector'; expected kind 'registry'");
}

TEST_CASE("a descriptor naming another plugin is refused") {
  micro::PluginLoader loader({fixture_dir});
  auto error = create_error(loader, micro::PluginKind::registry, "misnamed");
  CHECK(error.code == 400);
  CHECK(error.detail == fixture("micro-registry-misnamed.so") +
                            ": the file is named for registry plugin 'misnamed' but its "
                            "descriptor declares name 'othername'; expected name 'misnamed'");
}

TEST_CASE("a shared object without the entry point is refused") {
  micro::PluginLoader loader({fixture_dir});
  auto error = create_error(loader, micro::PluginKind::registry, "noentry");
  CHECK(error.code == 400);
  CHECK(error.detail == fixture("micro-registry-noentry.so") +
                            ": no entry point 'micro_plugin_descriptor'; expected a plugin "
                            "defined with MICRO_PLUGIN or MICRO_PLUGIN_NO_OPTIONS");
}

TEST_CASE("a factory that throws is reported with the plugin and its cause") {
  micro::PluginLoader loader({fixture_dir});
  auto from_micro = create_error(loader, micro::PluginKind::registry, "throwing", {}, "db:1");
  CHECK(from_micro.code == 503);
  CHECK(from_micro.detail == "registry plugin 'throwing' (" +
                                 fixture("micro-registry-throwing.so") +
                                 ") failed to start: backend at db:1 is unreachable");

  auto plain =
      create_error(loader, micro::PluginKind::registry, "throwing", {{"fail_with", "std"}});
  CHECK(plain.code == 500);
  CHECK(plain.detail == "registry plugin 'throwing' (" + fixture("micro-registry-throwing.so") +
                            ") failed to start: plain failure");
}

TEST_CASE("an object of the wrong dynamic type is refused") {
  micro::PluginLoader loader({fixture_dir});
  auto error = create_error(loader, micro::PluginKind::registry, "wrongtype");
  CHECK(error.code == 400);
  CHECK(error.detail == "registry plugin 'wrongtype' (" + fixture("micro-registry-wrongtype.so") +
                            ") made an object of type (anonymous namespace)::NotARegistry, which "
                            "is not a micro::Registry; expected the factory to return a "
                            "micro::Registry");
}

TEST_CASE("a plugin stays loaded after its objects and its loader are gone (the unload policy)") {
  const std::string path = fixture("micro-registry-good.so");
  std::shared_ptr<micro::Registry> registry;
  {
    micro::PluginLoader loader({fixture_dir});
    registry = loader.create<micro::Registry>("good", "", {{"label", "survivor"}});
  }
  // The loader is gone; the object's code must still be mapped.
  CHECK(is_loaded(path));
  auto services = registry->list_services();
  REQUIRE(services.size() == 1);
  CHECK(services[0].name == "survivor");
  registry.reset();
  // Handlers, threads and thread-locals of a plugin may outlive its objects: it stays mapped.
  CHECK(is_loaded(path));
}

namespace {
// A registry interface of its own: a plugin's object is not one of these.
class SpecialRegistry : public micro::Registry {};
}  // namespace

TEST_CASE("create<T> deduces the kind from T and checks the object is a T") {
  micro::PluginLoader loader({fixture_dir});
  CHECK(loader.create<micro::Registry>("good"));
  try {
    loader.create<SpecialRegistry>("good");
    FAIL("a GoodRegistry was handed out as a SpecialRegistry");
  } catch (const micro::Exception& e) {
    CHECK(e.error().code == 400);
    CHECK(e.error().detail.find("which is not a (anonymous namespace)::SpecialRegistry") !=
          std::string::npos);
  }
  // The kind comes from the type: a broker named 'good' is looked for, not the registry.
  try {
    loader.create<micro::Broker>("good");
    FAIL("found a broker named good");
  } catch (const micro::Exception& e) {
    CHECK(e.error().code == 404);
    CHECK(e.error().detail.starts_with("no broker plugin named 'good'"));
  }
}

TEST_CASE("a descriptor whose default breaks its own range is refused at load") {
  micro::PluginLoader loader({fixture_dir});
  auto error = create_error(loader, micro::PluginKind::registry, "badoption");
  CHECK(error.code == 400);
  CHECK(error.detail == fixture("micro-registry-badoption.so") +
                            ": the default of option 'workers' is 500, above its maximum 100; "
                            "expected a whole number from 1 to 100");
}

TEST_CASE("list() finds every plugin once, in search order, and reports broken files") {
  ScratchDirectory scratch;
  // An earlier copy of 'good' shadows the fixture one; a garbage file and a file of an
  // unknown kind are problems, not exceptions.
  std::filesystem::copy_file(fixture_dir / "micro-registry-good.so",
                             scratch.path / "micro-registry-good.so");
  { std::ofstream(scratch.path / "micro-broker-garbage.so") << "not an ELF file\n"; }
  { std::ofstream(scratch.path / "micro-gadget-thing.so") << "\n"; }
  { std::ofstream(scratch.path / "unrelated.txt") << "\n"; }

  micro::PluginLoader loader({scratch.path, fixture_dir});
  std::vector<std::string> problems;
  auto plugins = loader.list(&problems);

  std::vector<std::string> names;
  for (const auto& plugin : plugins) {
    names.push_back(std::string(micro::to_string(plugin.kind)) + "/" + plugin.name);
  }
  CHECK(names ==
        std::vector<std::string>{"registry/good", "registry/throwing", "registry/wrongtype"});
  REQUIRE(plugins.size() == 3);
  CHECK(plugins[0].path == scratch.path / "micro-registry-good.so");
  CHECK(plugins[0].options.size() == 5);

  REQUIRE(problems.size() == 7);
  CHECK(problems[0].starts_with((scratch.path / "micro-broker-garbage.so").string() +
                                ": cannot load it: "));
  CHECK(problems[0].ends_with("; expected a shared object built against libmicro"));
  CHECK(problems[1] == (scratch.path / "micro-gadget-thing.so").string() +
                           ": unknown plugin kind 'gadget'; expected one of: registry, selector, "
                           "broker, transport, wrapper");
  CHECK(problems[2].starts_with(fixture("micro-registry-badabi.so") + ": plugin ABI version"));
  CHECK(problems[3].starts_with(fixture("micro-registry-badoption.so") + ": the default of"));
  CHECK(problems[4] == fixture("micro-registry-misnamed.so") +
                           ": the file is named for registry plugin 'misnamed' but its "
                           "descriptor declares name 'othername'; expected name 'misnamed'");
  CHECK(problems[5].starts_with(fixture("micro-registry-noentry.so") + ": no entry point"));
  CHECK(problems[6].starts_with(fixture("micro-registry-wrongkind.so") +
                                ": the file is named as a registry plugin"));

  // Without a problems vector list() still succeeds.
  CHECK(loader.list().size() == 3);
}

TEST_CASE("the default search path is MICRO_PLUGIN_PATH, the build tree, then the install dir") {
  const char* saved = std::getenv("MICRO_PLUGIN_PATH");
  std::string saved_value = saved ? saved : "";
  ::setenv("MICRO_PLUGIN_PATH", ":/first/dir::/second/dir:", 1);
  micro::PluginLoader loader;
  const auto& path = loader.search_path();
  REQUIRE(path.size() == 4);
  CHECK(path[0] == "/first/dir");
  CHECK(path[1] == "/second/dir");
  // This test runs uninstalled: its build tree registered itself (core/uninstalled), and comes
  // before the install directory so the plugins of this build win over an installed copy.
  CHECK(path[2] == std::filesystem::canonical(LOADER_BUILD_ROOT));
  CHECK(path[3].string().ends_with("micro/plugins"));
  if (saved) {
    ::setenv("MICRO_PLUGIN_PATH", saved_value.c_str(), 1);
  } else {
    ::unsetenv("MICRO_PLUGIN_PATH");
  }

  // The build tree is searched per kind folder: a plugin the project builds is found.
  micro::PluginLoader build_tree_loader;
  auto error = create_error(build_tree_loader, micro::PluginKind::transport, "nosuchthing");
  CHECK(error.code == 404);
  CHECK(error.detail.find("/plugins/nosuchthing") != std::string::npos);
}

TEST_CASE("the default loader finds plugins the project builds in the build tree") {
  EnvironmentFreeLoader scope;
  micro::PluginLoader loader;
  auto registry = loader.create<micro::Registry>("memory", "", {}, {});
  REQUIRE(registry);
  CHECK(registry->list_services().empty());

  auto info = loader.describe(micro::PluginKind::registry, "memory");
  CHECK(info.path.filename() == "micro-registry-memory.so");
  CHECK(info.path.parent_path().filename() == "memory");
  CHECK(info.path.parent_path().parent_path().filename() == "registry");

  std::vector<std::string> problems;
  auto plugins = loader.list(&problems);
  std::string all_problems;
  for (const auto& problem : problems) all_problems += problem + "\n";
  CHECK_MESSAGE(problems.empty(), all_problems);
  bool listed = false;
  for (const auto& plugin : plugins) {
    if (plugin.kind == micro::PluginKind::registry && plugin.name == "memory") listed = true;
  }
  CHECK(listed);
  // Sorted by kind, then name.
  for (std::size_t index = 1; index < plugins.size(); ++index) {
    CHECK(std::pair(plugins[index - 1].kind, plugins[index - 1].name) <
          std::pair(plugins[index].kind, plugins[index].name));
  }
}

TEST_CASE("one loader serves many threads at once") {
  micro::PluginLoader loader({fixture_dir});
  std::atomic<int> made{0};
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  for (int thread = 0; thread < 4; ++thread) {
    threads.emplace_back([&, thread] {
      for (int round = 0; round < 25; ++round) {
        auto registry = loader.create<micro::Registry>(
            "good", "", {{"label", "t" + std::to_string(thread)}}, {});
        if (registry->list_services().at(0).name == "t" + std::to_string(thread)) ++made;
        try {
          loader.create(micro::PluginKind::registry, "badabi", "", {}, {});
        } catch (const micro::Exception&) {
          ++refused;
        }
        loader.list();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(made == 100);
  CHECK(refused == 100);
}
