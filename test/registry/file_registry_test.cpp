// The file registry beyond the conformance suite: its on-disk layout, how the directory is
// chosen, expired and foreign files, and two processes sharing one directory.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include <micro/error.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/registry.hpp>

#include "registry/registry_test_support.hpp"

using namespace registry_test;
namespace fs = std::filesystem;

namespace {

std::shared_ptr<micro::Registry> make_file_registry(
    const std::string& address, std::vector<std::pair<std::string, std::string>> options) {
  static boost::asio::io_context io_context;  // never run: the file registry needs no executor
  return micro::PluginLoader::instance().create<micro::Registry>("file", address, options,
                                                                 io_context.get_executor());
}

std::shared_ptr<micro::Registry> make_file_registry(const fs::path& directory) {
  return make_file_registry("", {{"dir", directory.string()}, {"poll", "20ms"}});
}

std::string read_text(const fs::path& path) {
  std::ifstream input(path);
  std::stringstream buffer;
  buffer << input.rdbuf();
  return buffer.str();
}

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

std::int64_t now_unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::vector<std::string> file_names(const fs::path& directory) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(directory)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_CASE("file registry: one Go-Micro JSON file per node, with an expiry") {
  TemporaryDirectory directory;
  auto registry = make_file_registry(directory.path());
  auto service = make_service("team/greeter", "1.0.0", {"node/1", ".hidden"});
  service.metadata["owner"] = "edge";
  const auto before = now_unix_ms();
  registry->register_service(service, {.ttl = 10s});
  const auto after = now_unix_ms();

  const auto folder = directory.path() / "team-greeter";
  // Sanitized names; no temporary file left behind.
  CHECK(file_names(folder) == std::vector<std::string>{"_hidden.json", "node-1.json"});

  auto json = nlohmann::json::parse(read_text(folder / "node-1.json"));
  CHECK(json["name"] == "team/greeter");
  CHECK(json["version"] == "1.0.0");
  CHECK(json["metadata"] == nlohmann::json{{"owner", "edge"}});
  CHECK(json["endpoints"] == nlohmann::json::array());
  REQUIRE(json["nodes"].size() == 1);
  CHECK(json["nodes"][0]["id"] == "node/1");
  CHECK(json["nodes"][0]["address"] == service.nodes[0].address);
  const auto expiry = json["expiry_unix_ms"].get<std::int64_t>();
  CHECK(expiry >= before + 10000);
  CHECK(expiry <= after + 10000);

  // The service still answers to its real name.
  auto found = registry->get_service("team/greeter");
  REQUIRE(found.size() == 1);
  CHECK(node_ids(found[0]) == std::vector<std::string>{".hidden", "node/1"});

  // Without a TTL the expiry is 0: never.
  registry->register_service(make_service("forever", "1", {"f-1"}), {});
  auto forever = nlohmann::json::parse(read_text(directory.path() / "forever" / "f-1.json"));
  CHECK(forever["expiry_unix_ms"] == 0);
}

TEST_CASE("file registry: the address file:///path chooses the directory") {
  TemporaryDirectory directory;
  auto nested = directory.path() / "from-address";
  auto registry = make_file_registry("file://" + nested.string(), {{"dir", "/nonexistent/x"}});
  registry->register_service(make_service("greeter", "1", {"g-1"}), {});
  CHECK(fs::exists(nested / "greeter" / "g-1.json"));

  // A bare path works as the address too.
  auto bare = make_file_registry(nested.string(), {});
  CHECK(bare->get_service("greeter").size() == 1);
}

TEST_CASE("file registry: the dir option defaults to /tmp/micro-registry") {
  auto info = micro::PluginLoader::instance().describe(micro::PluginKind::registry, "file");
  std::map<std::string, std::string> defaults;
  for (const auto& option : info.options) defaults[option.name] = option.default_value;
  CHECK(defaults ==
        std::map<std::string, std::string>{{"dir", "/tmp/micro-registry"}, {"poll", "500ms"}});
}

TEST_CASE("file registry: an unusable directory is a 503 naming it") {
  TemporaryDirectory directory;
  write_text(directory.path() / "plain-file", "x");
  try {
    make_file_registry("", {{"dir", (directory.path() / "plain-file" / "sub").string()}});
    FAIL("a registry was made over a file");
  } catch (const micro::Exception& exception) {
    CHECK(exception.error().code == 503);
    CHECK(exception.error().detail.find("plain-file/sub") != std::string::npos);
  }
}

TEST_CASE("file registry: expired files are ignored and removed by lookups") {
  TemporaryDirectory directory;
  auto registry = make_file_registry(directory.path());
  registry->register_service(make_service("greeter", "1", {"live"}), {});
  // An expired node as another process would have left it.
  auto stale = make_service("greeter", "1", {"dead"});
  nlohmann::json json = stale;
  json["nodes"] = nlohmann::json::array({stale.nodes[0]});
  json["expiry_unix_ms"] = now_unix_ms() - 1000;
  write_text(directory.path() / "greeter" / "dead.json", json.dump());

  auto found = registry->get_service("greeter");
  REQUIRE(found.size() == 1);
  CHECK(node_ids(found[0]) == std::vector<std::string>{"live"});
  CHECK_FALSE(fs::exists(directory.path() / "greeter" / "dead.json"));
}

TEST_CASE("file registry: foreign and malformed files are skipped, Go-Micro's form is read") {
  TemporaryDirectory directory;
  auto registry = make_file_registry(directory.path());
  write_text(directory.path() / "greeter" / "garbage.json", "{ not json");
  write_text(directory.path() / "greeter" / "array.json", "[1,2,3]");
  write_text(directory.path() / "greeter" / "notes.txt", "hello");
  // A plain Go-Micro registration (no expiry field) lives until removed.
  write_text(directory.path() / "greeter" / "go-node.json",
             R"({"name":"greeter","version":"latest","metadata":null,"endpoints":null,
                 "nodes":[{"id":"go-node","address":"127.0.0.1:8080","metadata":null}]})");
  auto found = registry->get_service("greeter");
  REQUIRE(found.size() == 1);
  CHECK(node_ids(found[0]) == std::vector<std::string>{"go-node"});
  CHECK(found[0].version == "latest");
  CHECK(registry->list_services().size() == 1);
}

TEST_CASE("file registry: another process's registration is seen, and its watch event") {
  TemporaryDirectory directory;
  auto child_registry = make_file_registry(directory.path());  // used only by the child
  auto registry = make_file_registry(directory.path());
  EventRecorder recorder;
  auto watch = registry->watch({.service = "greeter"}, recorder.callback());

  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    int status = 0;
    try {
      child_registry->register_service(make_service("greeter", "1", {"from-child"}), {});
    } catch (...) {
      status = 1;
    }
    _exit(status);
  }
  int status = -1;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);

  auto found = registry->get_service("greeter");
  REQUIRE(found.size() == 1);
  CHECK(node_ids(found[0]) == std::vector<std::string>{"from-child"});
  CHECK(recorder.wait_for_event([](const micro::WatchEvent& event) {
    return is_event(event, micro::WatchAction::create, "greeter", "from-child");
  }));
  watch->stop();
}
