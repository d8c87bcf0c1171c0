// The "file" registry plugin: many processes on one host share a directory holding one JSON
// file per node, <dir>/<service>/<node-id>.json. Each file is Go-Micro's service JSON with that
// one node plus our wall-clock expiry; files are replaced atomically (write a temporary file,
// then rename), lookups skip expired files, and watches poll the directory and diff.
#include <atomic>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <system_error>
#include <thread>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <micro/error.hpp>
#include <micro/plugin.hpp>
#include <micro/registry.hpp>

namespace {

namespace fs = std::filesystem;
using WallClock = std::chrono::system_clock;
constexpr const char* error_id = "micro.registry.file";
// The field we add to Go-Micro's service JSON: when the node expires, in Unix milliseconds
// (0: never).
constexpr const char* expiry_field = "expiry_unix_ms";

std::int64_t now_unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(WallClock::now().time_since_epoch())
      .count();
}

// A service or node name as a file name: no '/', and no leading '.' (those are our
// temporary files).
std::string sanitize(std::string_view name) {
  std::string result(name);
  for (auto& character : result) {
    if (character == '/' || character == '\0') character = '-';
  }
  if (!result.empty() && result.front() == '.') result.front() = '_';
  return result;
}

// One node as read from its file.
struct NodeFile {
  micro::Service service;  // with exactly one node
  std::int64_t expiry = 0;
  std::string content;  // the JSON without the expiry: what a change is judged by

  bool expired(std::int64_t now) const { return expiry != 0 && expiry <= now; }
};

std::optional<NodeFile> read_node_file(const fs::path& path) {
  std::ifstream input(path, std::ios::binary);
  if (!input) return std::nullopt;
  std::stringstream buffer;
  buffer << input.rdbuf();
  try {
    auto json = nlohmann::json::parse(buffer.str());
    NodeFile file;
    file.expiry = json.value(expiry_field, std::int64_t{0});
    json.erase(expiry_field);
    file.service = json.get<micro::Service>();
    if (file.service.nodes.size() != 1) return std::nullopt;
    file.content = json.dump();
    return file;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;  // not one of ours: ignore rather than fail every lookup
  }
}

// Reads every node file under `directory` (one service's folder).
void read_service_folder(const fs::path& directory, std::map<fs::path, NodeFile>& files) {
  std::error_code error;
  for (fs::directory_iterator it(directory, error), end; !error && it != end; it.increment(error)) {
    const auto& path = it->path();
    const auto file_name = path.filename().string();
    if (file_name.empty() || file_name.front() == '.' || path.extension() != ".json") continue;
    if (auto file = read_node_file(path)) files.emplace(path, std::move(*file));
  }
}

// Every node file in the registry.
std::map<fs::path, NodeFile> read_all(const fs::path& root, const std::string& only_service) {
  std::map<fs::path, NodeFile> files;
  if (!only_service.empty()) {
    read_service_folder(root / sanitize(only_service), files);
    return files;
  }
  std::error_code error;
  for (fs::directory_iterator it(root, error), end; !error && it != end; it.increment(error)) {
    if (it->is_directory(error)) read_service_folder(it->path(), files);
  }
  return files;
}

// The polling side of a watch, run by the watch's own thread, which holds it by shared_ptr
// (a Watch destroyed from inside its callback leaves the thread something valid to return to).
class Poller {
 public:
  Poller(fs::path root, std::string service, std::chrono::milliseconds interval,
         std::shared_ptr<micro::WatchDelivery> delivery)
      : root_(std::move(root)),
        service_(std::move(service)),
        interval_(interval),
        delivery_(std::move(delivery)) {
    seen_ = live(read_all(root_, service_));  // events are for changes from now on
  }

  // Ends the wait between scans early; the delivery is already stopped.
  void wake() {
    // Under the lock, so the thread is either before its check of stopped() or waiting.
    { std::lock_guard lock(mutex_); }
    wake_.notify_all();
  }

  void run() {
    while (true) {
      {
        std::unique_lock lock(mutex_);
        if (wake_.wait_for(lock, interval_, [this] { return delivery_->stopped(); })) return;
      }
      for (const auto& event : poll()) {
        if (!delivery_->deliver(event)) return;
      }
    }
  }

 private:
  std::map<fs::path, NodeFile> live(std::map<fs::path, NodeFile> files) const {
    const auto now = now_unix_ms();
    std::erase_if(files, [&](const auto& entry) {
      return entry.second.expired(now) ||
             (!service_.empty() && entry.second.service.name != service_);
    });
    return files;
  }

  // Rescans and returns what changed since the last scan.
  std::vector<micro::WatchEvent> poll() {
    auto current = live(read_all(root_, service_));
    std::vector<micro::WatchEvent> events;
    for (const auto& [path, file] : current) {
      auto before = seen_.find(path);
      if (before == seen_.end()) {
        events.push_back({micro::WatchAction::create, file.service});
      } else if (before->second.content != file.content) {
        events.push_back({micro::WatchAction::update, file.service});
      }
    }
    for (const auto& [path, file] : seen_) {
      if (!current.contains(path)) events.push_back({micro::WatchAction::remove, file.service});
    }
    seen_ = std::move(current);
    return events;
  }

  fs::path root_;
  std::string service_;
  std::chrono::milliseconds interval_;
  std::shared_ptr<micro::WatchDelivery> delivery_;
  std::map<fs::path, NodeFile> seen_;
  std::mutex mutex_;  // only for wake_
  std::condition_variable wake_;
};

class FileRegistry final : public micro::Registry {
 public:
  explicit FileRegistry(const micro::PluginArguments& arguments)
      : root_(directory_from(arguments)), poll_interval_(arguments.get_duration("poll")) {
    std::error_code error;
    fs::create_directories(root_, error);
    if (error) {
      throw micro::Exception(micro::unavailable(
          error_id, "cannot create registry directory " + root_.string() + ": " + error.message()));
    }
  }

  void register_service(const micro::Service& service,
                        const micro::RegisterOptions& options) override {
    micro::validate_registration(service, error_id);
    const auto folder = root_ / sanitize(service.name);
    std::error_code error;
    fs::create_directories(folder, error);
    if (error) fail("cannot create " + folder.string(), error);
    const std::int64_t expiry = options.ttl.count() > 0 ? now_unix_ms() + options.ttl.count() : 0;
    for (const auto& node : service.nodes) {
      micro::Service one = service;
      one.nodes = {node};
      nlohmann::json json = one;
      json[expiry_field] = expiry;
      write_atomically(folder / (sanitize(node.id) + ".json"), json.dump());
    }
  }

  void deregister_service(const micro::Service& service) override {
    const auto folder = root_ / sanitize(service.name);
    for (const auto& node : service.nodes) {
      std::error_code error;
      fs::remove(folder / (sanitize(node.id) + ".json"), error);
    }
    // The folder stays: removing it could race another process writing a node into it.
  }

  std::vector<micro::Service> get_service(std::string_view name) override {
    const std::string wanted(name);
    auto files = read_all(root_, wanted);
    const auto now = now_unix_ms();
    std::vector<micro::Service> registrations;
    for (auto& [path, file] : files) {
      if (file.expired(now)) {
        remove_if_still_expired(path);
        continue;
      }
      if (file.service.name == wanted) registrations.push_back(std::move(file.service));
    }
    if (registrations.empty()) {
      throw micro::Exception(micro::not_found(error_id, "service " + wanted + " not found"));
    }
    return micro::merge_services(std::move(registrations));
  }

  std::vector<micro::Service> list_services() override {
    auto files = read_all(root_, {});
    const auto now = now_unix_ms();
    std::vector<micro::Service> registrations;
    for (auto& [path, file] : files) {
      if (file.expired(now)) continue;
      micro::Service service;
      service.name = file.service.name;
      service.version = file.service.version;
      registrations.push_back(std::move(service));
    }
    return micro::merge_services(std::move(registrations));
  }

  std::unique_ptr<micro::Watch> watch(
      const micro::WatchOptions& options,
      std::function<void(const micro::WatchEvent&)> on_event) override {
    auto delivery = std::make_shared<micro::WatchDelivery>(std::move(on_event));
    auto poller = std::make_shared<Poller>(root_, options.service, poll_interval_, delivery);
    std::thread thread([poller] { poller->run(); });
    return std::make_unique<micro::DeliveryWatch>(
        std::move(delivery), [poller] { poller->wake(); }, std::move(thread));
  }

 private:
  static fs::path directory_from(const micro::PluginArguments& arguments) {
    std::string address = arguments.address();
    constexpr std::string_view scheme = "file://";
    if (address.starts_with(scheme)) address.erase(0, scheme.size());
    if (!address.empty()) return fs::path(address);
    return fs::path(arguments.get_string("dir"));
  }

  [[noreturn]] static void fail(const std::string& what, const std::error_code& error) {
    throw micro::Exception(micro::unavailable(error_id, what + ": " + error.message()));
  }

  // Readers see either the old file or the new one, never a half-written one.
  void write_atomically(const fs::path& target, const std::string& content) {
    const auto temporary =
        target.parent_path() / ("." + target.filename().string() + "." + std::to_string(getpid()) +
                                "." + std::to_string(temporary_counter_.fetch_add(1)) + ".tmp");
    {
      std::ofstream output(temporary, std::ios::binary | std::ios::trunc);
      output << content;
      output.flush();
      if (!output) {
        std::error_code ignored;
        fs::remove(temporary, ignored);
        throw micro::Exception(micro::unavailable(error_id, "cannot write " + temporary.string()));
      }
    }
    std::error_code error;
    fs::rename(temporary, target, error);
    if (error) {
      std::error_code ignored;
      fs::remove(temporary, ignored);
      fail("cannot rename " + temporary.string() + " to " + target.string(), error);
    }
  }

  // Another process may have refreshed the file since we read it: look once more first. A
  // refresh racing this final check is undone at most until that node's next heartbeat.
  static void remove_if_still_expired(const fs::path& path) {
    auto again = read_node_file(path);
    if (again && again->expired(now_unix_ms())) {
      std::error_code ignored;
      fs::remove(path, ignored);
    }
  }

  fs::path root_;
  std::chrono::milliseconds poll_interval_;
  std::atomic<std::uint64_t> temporary_counter_{0};
};

const micro::PluginOption file_registry_options[] = {
    {"dir", "string", "/tmp/micro-registry",
     "directory holding <service>/<node-id>.json (the address file:///path overrides it)"},
    {"poll", "duration", "500ms", "how often a watch rescans the directory", "1ms"},
};

}  // namespace

MICRO_PLUGIN(registry, file, "one JSON file per node in a shared directory (one host)",
             file_registry_options,
             [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new FileRegistry(arguments);
             })
