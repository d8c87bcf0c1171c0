// The "etcd" registry plugin: services registered in an etcd v3 cluster with Go-Micro's layout
// (`<prefix><service>/<node-id>` → the service's JSON carrying that one node), each node under
// its own lease. Leases are kept alive by the process-wide keep-alive stream (lease_keeper.hpp),
// shared by every registry of the process that talks to the same cluster; a node whose lease
// etcd lost is re-registered by its registry. Watches follow a /v3/watch stream and resume from
// the last revision they saw after a reconnect.
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include <micro/base64.hpp>
#include <micro/error.hpp>
#include <micro/plugin.hpp>
#include <micro/registry.hpp>

#include "etcd_client.hpp"
#include "lease_keeper.hpp"
#include "stream_session.hpp"
#include "values.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using namespace std::chrono_literals;
namespace base64 = micro::base64;
using micro::etcd::decode_key_value;
using micro::etcd::json_int64;
using micro::etcd::KeyValue;
using micro::etcd::parse_service;

constexpr const char* error_id = "micro.registry.etcd";

// Go-Micro replaces '/' inside names so that a name is one path segment.
std::string key_segment(std::string_view name) {
  std::string segment(name);
  std::replace(segment.begin(), segment.end(), '/', '-');
  return segment;
}

// ---------------------------------------------------------------------------------------------
// Watch

struct WatchShared {
  std::shared_ptr<micro::etcd::Client> client;
  std::string root_prefix;                         // the registry's prefix
  std::string key_prefix;                          // "<prefix>" or "<prefix><service>/"
  std::shared_ptr<micro::WatchDelivery> delivery;  // stopped: the thread ends

  std::mutex state_mutex;  // guards `session` and `wake`
  std::condition_variable wake;
  micro::etcd::StreamSession* session = nullptr;

  // Owned by the watch thread (and by the constructor before the thread starts).
  std::map<std::string, std::string> known;  // key → last value seen
  std::int64_t last_revision = 0;            // every event up to this one was delivered
  bool synced = false;
};

// A watch's thread and what it does: range the prefix, then follow /v3/watch streams from the
// revision after the last one seen, delivering each change.
class EtcdWatch {
 public:
  EtcdWatch() = delete;

  static std::unique_ptr<micro::Watch> start(
      std::shared_ptr<micro::etcd::Client> client, std::string root_prefix, std::string key_prefix,
      std::function<void(const micro::WatchEvent&)> on_event) {
    auto shared = std::make_shared<WatchShared>();
    shared->client = std::move(client);
    shared->root_prefix = std::move(root_prefix);
    shared->key_prefix = std::move(key_prefix);
    shared->delivery = std::make_shared<micro::WatchDelivery>(std::move(on_event));
    // Learn the current state and revision first, so every change after watch() returns is
    // seen; if etcd is unreachable now, the thread keeps trying.
    try {
      synchronize(*shared, false);
    } catch (const std::exception&) {
    }
    std::thread thread([shared] { run(*shared); });
    // Once the delivery is stopped: end the stream being read and the pause between streams.
    auto on_stop = [shared] {
      std::lock_guard lock(shared->state_mutex);
      if (shared->session) shared->session->cancel();
      shared->wake.notify_all();
    };
    return std::make_unique<micro::DeliveryWatch>(shared->delivery, std::move(on_stop),
                                                  std::move(thread));
  }

 private:
  static bool stopped(const WatchShared& shared) { return shared.delivery->stopped(); }

  static void deliver(WatchShared& shared, micro::WatchAction action, micro::Service service) {
    shared.delivery->deliver(micro::WatchEvent{action, std::move(service)});
  }

  // The service and node a key names, for a delete whose value we never saw (names come back
  // as stored: with '/' already replaced by '-').
  static micro::Service service_from_key(const WatchShared& shared, const std::string& key) {
    micro::Service service;
    std::string_view rest(key);
    rest.remove_prefix(std::min(rest.size(), shared.root_prefix.size()));
    const auto slash = rest.find('/');
    service.name = std::string(rest.substr(0, slash));
    const std::string node_id =
        slash == std::string_view::npos ? std::string() : std::string(rest.substr(slash + 1));
    service.nodes.push_back({node_id, "", {}});
    return service;
  }

  // Ranges the prefix: records every key's value and the revision. With `emit`, first reports
  // the difference from what was known (used after etcd compacted away our resume point).
  static void synchronize(WatchShared& shared, bool emit) {
    const nlohmann::json request = {
        {"key", base64::encode(shared.key_prefix)},
        {"range_end", base64::encode(micro::etcd::prefix_range_end(shared.key_prefix))}};
    const auto answer = shared.client->call("/v3/kv/range", request);
    std::map<std::string, std::string> now;
    for (const auto& kv : answer.value("kvs", nlohmann::json::array())) {
      auto decoded = decode_key_value(kv);
      now[decoded.key] = decoded.value;
    }
    if (emit) {
      for (const auto& [key, value] : shared.known) {
        if (now.contains(key)) continue;
        auto service = parse_service(value);
        deliver(shared, micro::WatchAction::remove,
                service ? *service : service_from_key(shared, key));
      }
      for (const auto& [key, value] : now) {
        auto previous = shared.known.find(key);
        if (previous != shared.known.end() && previous->second == value) continue;
        if (auto service = parse_service(value)) {
          deliver(shared,
                  previous == shared.known.end() ? micro::WatchAction::create
                                                 : micro::WatchAction::update,
                  *service);
        }
      }
    }
    shared.known = std::move(now);
    shared.last_revision = json_int64(answer.value("header", nlohmann::json::object()), "revision");
    shared.synced = true;
  }

  static void handle_event(WatchShared& shared, const nlohmann::json& event) {
    const auto kv = decode_key_value(event.value("kv", nlohmann::json::object()));
    if (kv.mod_revision <= shared.last_revision) return;  // already delivered before a reconnect
    if (event.value("type", "PUT") == "DELETE") {
      std::optional<micro::Service> service;
      if (event.contains("prev_kv"))
        service = parse_service(decode_key_value(event["prev_kv"]).value);
      auto known = shared.known.find(kv.key);
      if (!service && known != shared.known.end()) service = parse_service(known->second);
      if (known != shared.known.end()) shared.known.erase(known);
      deliver(shared, micro::WatchAction::remove,
              service ? *service : service_from_key(shared, kv.key));
    } else {
      auto& known = shared.known[kv.key];
      // Same value again (a lease renewed by a re-put): not a change.
      const bool unchanged = known == kv.value && kv.version > 1;
      known = kv.value;
      if (!unchanged) {
        if (auto service = parse_service(kv.value)) {
          deliver(shared, kv.version == 1 ? micro::WatchAction::create : micro::WatchAction::update,
                  *service);
        }
      }
    }
  }

  // Waits `pause` unless stopped meanwhile; returns whether the watch is still running.
  static bool pause(WatchShared& shared, milliseconds pause) {
    std::unique_lock lock(shared.state_mutex);
    return !shared.wake.wait_for(lock, pause, [&] { return stopped(shared); });
  }

  // Handles one message of the watch stream; false when the stream must end (`resynchronize`
  // set when etcd compacted away our resume point).
  static bool handle_message(WatchShared& shared, const nlohmann::json& message,
                             bool& resynchronize) {
    if (const auto error = micro::etcd::gateway_error(message)) {
      // The stream failed after it began: an expired auth token (log in again before the next
      // stream), a lost leader.
      if (error->code == micro::etcd::grpc_unauthenticated) {
        try {
          shared.client->authenticate();
        } catch (const std::exception&) {
        }
      }
      return false;
    }
    const auto& result = message.contains("result") ? message["result"] : message;
    if (json_int64(result, "compact_revision") > 0) {
      // Our resume point was compacted away: start over from a fresh range.
      resynchronize = true;
      return false;
    }
    if (result.value("canceled", false)) return false;
    std::int64_t highest = shared.last_revision;
    for (const auto& event : result.value("events", nlohmann::json::array())) {
      handle_event(shared, event);
      highest = std::max(highest,
                         json_int64(event.value("kv", nlohmann::json::object()), "mod_revision"));
    }
    shared.last_revision = highest;
    return true;
  }

  // Reads the open stream until it ends, fails or the watch stops; true when etcd asked for a
  // resynchronization.
  static bool read_stream(WatchShared& shared, micro::etcd::StreamSession& session) {
    bool resynchronize = false;
    while (!stopped(shared)) {
      const auto update = session.wait(Clock::now() + 1s);
      if (update.status != 0 && update.status != 200) {
        if (update.status == 401) shared.client->authenticate();
        return false;
      }
      for (const auto& message : update.messages) {
        if (!handle_message(shared, message, resynchronize)) return resynchronize;
      }
      if (update.ended) return false;
    }
    return false;
  }

  // One stream, from connect to its end. Returns normally when the stream ended or failed.
  static void follow_stream(WatchShared& shared) {
    auto& client = *shared.client;
    micro::etcd::StreamSession session(client, "/v3/watch", false);
    {
      std::lock_guard lock(shared.state_mutex);
      if (stopped(shared)) return;
      shared.session = &session;
    }
    struct Unpublish {
      WatchShared& shared;
      ~Unpublish() {
        std::lock_guard lock(shared.state_mutex);
        shared.session = nullptr;
      }
    } unpublish{shared};

    bool resynchronize = false;
    try {
      const nlohmann::json create = {
          {"create_request",
           {{"key", base64::encode(shared.key_prefix)},
            {"range_end", base64::encode(micro::etcd::prefix_range_end(shared.key_prefix))},
            {"start_revision", std::to_string(shared.last_revision + 1)},
            {"prev_kv", true}}}};
      session.open(create.dump());
      resynchronize = read_stream(shared, session);
    } catch (const std::exception&) {
    }
    // A stream that ended or broke moves the watch to the next member (not when it was stopped).
    if (!resynchronize && !stopped(shared)) client.endpoint_failed(session.endpoint());
    if (resynchronize && !stopped(shared)) {
      try {
        synchronize(shared, true);
      } catch (const std::exception&) {
        shared.synced = false;
      }
    }
  }

  static void run(WatchShared& shared) {
    milliseconds backoff = 50ms;
    while (!stopped(shared)) {
      if (!shared.synced) {
        try {
          synchronize(shared, false);
        } catch (const std::exception&) {
          if (!pause(shared, backoff)) return;
          backoff = std::min<milliseconds>(backoff * 2, 1s);
          continue;
        }
      }
      const auto started = Clock::now();
      follow_stream(shared);
      // A stream that lived a while was healthy: reconnect at once, else back off.
      if (Clock::now() - started > 2s) backoff = 50ms;
      if (!pause(shared, backoff)) return;
      backoff = std::min<milliseconds>(backoff * 2, 1s);
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Registry

struct Settings {
  micro::etcd::ClientOptions client;
  // Endpoints, credentials and TLS files: registries with the same one share a keep-alive stream.
  std::string keeper_identity;
  bool batched_keepalive = false;  // keepalive=batch
  milliseconds default_ttl{30s};
  std::string prefix = "/micro/registry/";
};

// One node this process registered.
struct Registration {
  std::string value;
  milliseconds ttl{0};  // as asked; 0: kept alive until deregistered
  std::int64_t lease = 0;
  Clock::time_point lease_alive_until;  // per etcd's last answer
  Clock::time_point owner_deadline;     // keep-alives stop when the owner stopped refreshing
  bool lost = false;                    // etcd forgot the lease: re-grant and re-put

  bool wanted(Clock::time_point now) const { return ttl.count() == 0 || owner_deadline > now; }
};

class EtcdRegistry final : public micro::Registry {
 public:
  explicit EtcdRegistry(Settings settings)
      : settings_(std::move(settings)),
        client_(shared_client(settings_)),
        keeper_(micro::etcd::LeaseKeeper::shared_for(settings_.keeper_identity, settings_.client,
                                                     settings_.batched_keepalive)) {
    repair_thread_ = std::thread([this] { repair_loop(); });
  }

  // Leaves registrations in etcd: a process that ends without deregistering is one that
  // crashed, and its nodes expire with their leases.
  ~EtcdRegistry() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    // The repair thread may be handing a new lease to the keeper: it ends first, then the
    // keeper forgets our leases and waits out a listener of ours that is running.
    repair_thread_.join();
    keeper_->forget_owner(this);
  }

  void register_service(const micro::Service& service,
                        const micro::RegisterOptions& options) override {
    micro::validate_registration(service, error_id);
    const milliseconds ttl = options.ttl;
    const milliseconds lease_ttl = ttl.count() > 0 ? ttl : settings_.default_ttl;
    for (const auto& node : service.nodes) {
      micro::Service single = service;
      single.nodes = {node};
      const std::string key = node_key(service.name, node.id);
      const std::string value = nlohmann::json(single).dump();
      const auto now = Clock::now();
      std::int64_t refreshed_lease = 0;
      {
        std::lock_guard lock(mutex_);
        auto existing = registrations_.find(key);
        // A refresh of an unchanged node whose lease is alive costs no request: the
        // keep-alive stream keeps the lease until the owner stops refreshing.
        if (existing != registrations_.end() && existing->second.value == value &&
            existing->second.ttl == ttl && !existing->second.lost &&
            existing->second.lease_alive_until > now + 200ms) {
          existing->second.owner_deadline = now + ttl;
          refreshed_lease = existing->second.lease;
        }
      }
      if (refreshed_lease != 0) {
        keeper_->extend(refreshed_lease, keep_until(ttl, now + ttl));
        continue;
      }
      put_with_new_lease(key, value, ttl, lease_ttl);
    }
  }

  void deregister_service(const micro::Service& service) override {
    for (const auto& node : service.nodes) {
      const std::string key = node_key(service.name, node.id);
      std::int64_t lease = 0;
      {
        std::lock_guard lock(mutex_);
        auto existing = registrations_.find(key);
        if (existing != registrations_.end()) {
          lease = existing->second.lease;
          registrations_.erase(existing);
        }
      }
      if (lease != 0) keeper_->remove(lease);
      call("/v3/kv/deleterange", {{"key", base64::encode(key)}});
      if (lease != 0) revoke(lease);
    }
  }

  std::vector<micro::Service> get_service(std::string_view name) override {
    std::vector<micro::Service> found;
    for (auto& service : range(settings_.prefix + key_segment(name) + "/")) {
      if (service.name == name) found.push_back(std::move(service));
    }
    auto merged = micro::merge_services(std::move(found));
    if (merged.empty()) {
      throw micro::Exception(
          micro::not_found(error_id, "service " + std::string(name) + " not found"));
    }
    return merged;
  }

  std::vector<micro::Service> list_services() override {
    auto merged = micro::merge_services(range(settings_.prefix));
    for (auto& service : merged) service.nodes.clear();
    return merged;
  }

  std::unique_ptr<micro::Watch> watch(
      const micro::WatchOptions& options,
      std::function<void(const micro::WatchEvent&)> on_event) override {
    std::string key_prefix = settings_.prefix;
    if (!options.service.empty()) key_prefix += key_segment(options.service) + "/";
    return EtcdWatch::start(client_, settings_.prefix, std::move(key_prefix), std::move(on_event));
  }

 private:
  // Registries of a process that reach the same cluster the same way (and with the same
  // timeouts) share one client: one pool of connections, one idea of the preferred member.
  static std::shared_ptr<micro::etcd::Client> shared_client(const Settings& settings) {
    static std::mutex clients_mutex;
    static std::map<std::string, std::weak_ptr<micro::etcd::Client>> clients;
    const std::string identity = settings.keeper_identity + "\n" +
                                 std::to_string(settings.client.dial_timeout.count()) + " " +
                                 std::to_string(settings.client.request_timeout.count());
    std::lock_guard lock(clients_mutex);
    std::erase_if(clients, [](const auto& item) { return item.second.expired(); });
    auto& slot = clients[identity];
    if (auto existing = slot.lock()) return existing;
    auto client = std::make_shared<micro::etcd::Client>(settings.client);
    slot = client;
    return client;
  }

  // Until when the keep-alive stream renews a lease: for ever for a node registered with TTL
  // zero, else until the owner's next refresh is overdue.
  static Clock::time_point keep_until(milliseconds ttl, Clock::time_point owner_deadline) {
    return ttl.count() == 0 ? Clock::time_point::max() : owner_deadline;
  }

  std::string node_key(std::string_view service, std::string_view node) const {
    return settings_.prefix + key_segment(service) + "/" + key_segment(node);
  }

  // A call whose etcd-level errors become micro::Exceptions (transport failures already are).
  nlohmann::json call(std::string_view path, const nlohmann::json& body) {
    try {
      return client_->call(path, body);
    } catch (const micro::etcd::EtcdError& error) {
      throw micro::Exception(
          micro::Error(error_id, micro::ErrorCode::bad_gateway,
                       std::string("etcd refused ") + std::string(path) + ": " + error.what()));
    }
  }

  std::vector<micro::Service> range(const std::string& prefix) {
    const auto answer = call(
        "/v3/kv/range", {{"key", base64::encode(prefix)},
                         {"range_end", base64::encode(micro::etcd::prefix_range_end(prefix))}});
    std::vector<micro::Service> services;
    for (const auto& kv : answer.value("kvs", nlohmann::json::array())) {
      if (auto service = parse_service(decode_key_value(kv).value)) {
        services.push_back(std::move(*service));
      }
    }
    return services;
  }

  void revoke(std::int64_t lease) {
    try {
      client_->call("/v3/lease/revoke", {{"ID", std::to_string(lease)}});
    } catch (const std::exception&) {
      // Already gone, or etcd unreachable: either way the lease expires on its own.
    }
  }

  // Grants a lease, puts the node under it and records the registration; the lease the key
  // had before (if ours) is revoked afterwards.
  // `repair`: the keep-alive sender putting back a node whose lease etcd lost; it must neither
  // resurrect a node deregistered meanwhile nor extend how long its owner may stay silent.
  void put_with_new_lease(const std::string& key, const std::string& value, milliseconds ttl,
                          milliseconds lease_ttl, bool repair = false) {
    if (repair) {
      std::lock_guard lock(mutex_);
      auto existing = registrations_.find(key);
      if (existing == registrations_.end() || !existing->second.lost) return;
    }
    const auto seconds = std::max<std::int64_t>(
        1, static_cast<std::int64_t>(std::ceil(static_cast<double>(lease_ttl.count()) / 1000.0)));
    const auto sent = Clock::now();
    const auto grant = call("/v3/lease/grant", {{"TTL", std::to_string(seconds)}});
    const std::int64_t lease = json_int64(grant, "ID");
    const std::int64_t granted = std::max<std::int64_t>(1, json_int64(grant, "TTL"));
    if (lease == 0) {
      throw micro::Exception(micro::Error(error_id, micro::ErrorCode::bad_gateway,
                                          "etcd granted no lease: " + grant.dump()));
    }
    call("/v3/kv/put", {{"key", base64::encode(key)},
                        {"value", base64::encode(value)},
                        {"lease", std::to_string(lease)}});
    std::int64_t previous = 0;
    Clock::time_point keep_alive_until;
    {
      std::unique_lock lock(mutex_);
      if (repair && !registrations_.contains(key)) {
        lock.unlock();
        call("/v3/kv/deleterange", {{"key", base64::encode(key)}});
        revoke(lease);
        return;
      }
      auto& registration = registrations_[key];
      const bool refreshed_by_owner = !repair || registration.value.empty();
      if (registration.lease != lease) previous = registration.lease;
      registration.value = value;
      registration.ttl = ttl;
      registration.lease = lease;
      registration.lost = false;
      registration.lease_alive_until = sent + std::chrono::seconds(granted);
      if (refreshed_by_owner) registration.owner_deadline = Clock::now() + ttl;
      keep_alive_until = keep_until(ttl, registration.owner_deadline);
    }
    keeper_->add(this, lease, granted, keep_alive_until,
                 [this](std::int64_t renewed, std::int64_t ttl_seconds) {
                   on_keepalive_answer(renewed, ttl_seconds);
                 });
    if (previous != 0) {
      keeper_->remove(previous);
      revoke(previous);
    }
  }

  // The keep-alive stream's answer about one of our leases (on its thread).
  void on_keepalive_answer(std::int64_t lease, std::int64_t ttl_seconds) {
    std::lock_guard lock(mutex_);
    for (auto& [key, registration] : registrations_) {
      if (registration.lease != lease) continue;
      if (ttl_seconds > 0) {
        registration.lease_alive_until = Clock::now() + std::chrono::seconds(ttl_seconds);
      } else {
        registration.lost = true;  // etcd no longer knows the lease (restarted, expired, revoked)
        wake_.notify_all();
      }
      return;
    }
  }

  // Puts back nodes whose lease etcd lost, as long as their owner still wants them.
  void repair_loop() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      std::map<std::string, std::pair<std::string, milliseconds>> to_reregister;
      const auto now = Clock::now();
      Clock::time_point next = now + 1s;
      for (auto& [key, registration] : registrations_) {
        if (!registration.lost) continue;
        if (registration.wanted(now)) {
          to_reregister[key] = {registration.value, registration.ttl};
        }
      }
      if (to_reregister.empty()) {
        wake_.wait_until(lock, next);
        continue;
      }
      lock.unlock();
      for (const auto& [key, what] : to_reregister) {
        {
          std::lock_guard stopping(mutex_);
          if (stopping_) return;
        }
        try {
          const auto& [value, ttl] = what;
          put_with_new_lease(key, value, ttl, ttl.count() > 0 ? ttl : settings_.default_ttl, true);
        } catch (const std::exception&) {
          // Still unreachable; the next round tries again.
        }
      }
      lock.lock();
      // Failed re-registrations wait a little before the next attempt.
      wake_.wait_for(lock, 250ms, [&] { return stopping_; });
    }
  }

  Settings settings_;
  std::shared_ptr<micro::etcd::Client> client_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::map<std::string, Registration> registrations_;  // by key
  std::shared_ptr<micro::etcd::LeaseKeeper> keeper_;   // shared by the process's registries
  std::thread repair_thread_;
};

Settings settings_from(const micro::PluginArguments& arguments) {
  Settings settings;
  settings.client.endpoints = micro::etcd::parse_endpoints(arguments.address());
  settings.client.dial_timeout = arguments.get_duration("dial_timeout");
  settings.client.request_timeout = arguments.get_duration("request_timeout");
  settings.client.username = arguments.get_string("username");
  settings.client.password = arguments.get_string("password");
  settings.default_ttl = arguments.get_duration("ttl");
  settings.prefix = arguments.get_string("prefix");

  auto refuse = [](const std::string& detail) {
    throw micro::Exception(micro::bad_request(error_id, detail));
  };
  if (!settings.prefix.starts_with('/')) {
    refuse("prefix \"" + settings.prefix + "\" must start with \"/\"");
  }
  if (!settings.prefix.ends_with('/')) settings.prefix += '/';
  const std::string keepalive = arguments.get_string("keepalive");
  if (keepalive != "stream" && keepalive != "batch") {
    refuse("keepalive \"" + keepalive + "\" must be \"stream\" or \"batch\"");
  }
  settings.batched_keepalive = keepalive == "batch";
  if (settings.client.username.empty() != settings.client.password.empty()) {
    refuse("username and password go together: give both or neither");
  }
  // TLS for every endpoint when asked for in any way: tls=true, a tls_* file, an https:// endpoint.
  const bool https_endpoint =
      std::any_of(settings.client.endpoints.begin(), settings.client.endpoints.end(),
                  [](const auto& endpoint) { return endpoint.https; });
  if (arguments.get_bool("tls") || https_endpoint || !arguments.get_string("tls_ca").empty() ||
      !arguments.get_string("tls_cert").empty() || !arguments.get_string("tls_key").empty()) {
    micro::http::TlsOptions tls;
    tls.ca_file = arguments.get_string("tls_ca");
    tls.cert_file = arguments.get_string("tls_cert");
    tls.key_file = arguments.get_string("tls_key");
    settings.client.tls = micro::http::make_tls_context(tls);
  }
  // Registries share a keep-alive stream only when they reach the same members the same way.
  settings.keeper_identity = keepalive + (settings.client.tls ? " https" : " http");
  for (const auto& endpoint : settings.client.endpoints)
    settings.keeper_identity += " " + endpoint.authority();
  for (const auto& part :
       {settings.client.username, settings.client.password, arguments.get_string("tls_ca"),
        arguments.get_string("tls_cert"), arguments.get_string("tls_key")}) {
    settings.keeper_identity += '\n' + part;
  }
  return settings;
}

const micro::PluginOption etcd_options[] = {
    // etcd leases count whole seconds.
    {"ttl", "duration", "30s", "lease TTL when RegisterOptions.ttl is zero", "1s"},
    {"dial_timeout", "duration", "5s", "how long connecting to one endpoint may take", "1ms"},
    {"request_timeout", "duration", "5s", "how long one call may take, across endpoints", "1ms"},
    {"username", "string", "", "etcd user (with password)"},
    {"password", "string", "", "etcd user's password"},
    {"tls", "bool", "false", "use https for every endpoint (implied by tls_* or https://)"},
    {"tls_ca", "string", "", "CA bundle (PEM) the server certificate must chain to"},
    {"tls_cert", "string", "", "client certificate chain (PEM), with tls_key"},
    {"tls_key", "string", "", "client private key (PEM), with tls_cert"},
    {"prefix", "string", "/micro/registry/", "key prefix, Go-Micro's by default"},
    {"keepalive", "string", "stream",
     "stream: one held-open keep-alive stream per process; batch: one request per interval"},
};

}  // namespace

MICRO_PLUGIN(registry, etcd,
             "etcd v3 cluster, Go-Micro's key layout (JSON gateway over HTTP/HTTPS)", etcd_options,
             [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new EtcdRegistry(settings_from(arguments));
             })
