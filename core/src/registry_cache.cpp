// RegistryCache: lookups answered from memory, kept fresh by the backend's watch, bounded by
// a TTL, with one fetch in flight per service and stale entries served while the backend fails.
//
// Concurrency: hits take only a shared lock on the entry table (many readers at once); the
// in-flight table has its own mutex and is touched only on a miss. Everything lives in a
// State held by shared_ptr: fetches hold it strongly (they finish even if the cache is
// destroyed meanwhile), the watch callback holds it weakly.
#include <micro/registry_cache.hpp>

#include <atomic>
#include <future>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include <boost/asio/post.hpp>

namespace micro {

namespace {

constexpr const char* cache_error_id = "micro.registry.cache";

using Clock = std::chrono::steady_clock;
using DoneCallback = std::function<void(ServiceSnapshot, std::optional<Error>)>;

bool has_nodes(const std::vector<Service>& services) {
  for (const auto& service : services) {
    if (!service.nodes.empty()) return true;
  }
  return false;
}

// Applies one watch event to a cached list of versions, returning the new list.
std::vector<Service> apply_event(std::vector<Service> services, const WatchEvent& event) {
  Service* version = nullptr;
  for (auto& candidate : services) {
    if (candidate.version == event.service.version) {
      version = &candidate;
      break;
    }
  }
  if (event.action == WatchAction::remove) {
    if (version == nullptr) return services;
    for (const auto& gone : event.service.nodes) {
      std::erase_if(version->nodes, [&](const Node& node) { return node.id == gone.id; });
    }
    if (version->nodes.empty()) {
      std::erase_if(services, [&](const Service& service) {
        return service.version == event.service.version;
      });
    }
    return services;
  }
  // create and update both mean "this node now looks like this".
  services.push_back(event.service);
  return merge_services(std::move(services));
}

}  // namespace

struct RegistryCache::State : std::enable_shared_from_this<RegistryCache::State> {
  struct Entry {
    ServiceSnapshot snapshot;
    Clock::time_point fetched_at;
  };
  struct InFlight {
    bool started = false;  // claimed by a thread that is running the fetch
    std::vector<DoneCallback> waiters;
    std::vector<WatchEvent> events_during_fetch;  // replayed on the fetched result
  };

  std::shared_ptr<Registry> backend;
  boost::asio::any_io_executor blocking_executor;
  RegistryCacheOptions options;

  mutable std::shared_mutex entries_mutex;
  std::unordered_map<std::string, Entry> entries;

  std::mutex in_flight_mutex;
  std::unordered_map<std::string, InFlight> in_flight;

  std::mutex watch_mutex;
  std::unique_ptr<Watch> watch;

  std::atomic<std::uint64_t> hits{0}, misses{0}, fetches{0}, stale_served{0}, watch_events{0};

  bool fresh(const Entry& entry, Clock::time_point now) const {
    // A zero TTL means entries are bounded by the watch only.
    return options.ttl.count() <= 0 || now - entry.fetched_at < options.ttl;
  }

  // A fresh snapshot, or null.
  ServiceSnapshot lookup_fresh(const std::string& name, Clock::time_point now) const {
    std::shared_lock lock(entries_mutex);
    auto found = entries.find(name);
    if (found == entries.end() || !fresh(found->second, now)) return nullptr;
    return found->second.snapshot;
  }

  // Any snapshot, however old (stale serving).
  ServiceSnapshot lookup_any(const std::string& name) const {
    std::shared_lock lock(entries_mutex);
    auto found = entries.find(name);
    return found == entries.end() ? nullptr : found->second.snapshot;
  }

  // Joins the fetch for `name`, starting one on the executor when none is in flight.
  void join_fetch(const std::string& name, DoneCallback done) {
    bool start = false;
    {
      std::lock_guard lock(in_flight_mutex);
      auto [position, inserted] = in_flight.try_emplace(name);
      position->second.waiters.push_back(std::move(done));
      start = inserted;
    }
    if (start) {
      boost::asio::post(blocking_executor,
                        [self = shared_from_this(), name] { self->run_fetch(name); });
    }
  }

  // Claims the fetch for `name` if nobody has yet; true when this thread must run it.
  bool claim(const std::string& name) {
    std::lock_guard lock(in_flight_mutex);
    auto found = in_flight.find(name);
    if (found == in_flight.end() || found->second.started) return false;
    found->second.started = true;
    return true;
  }

  void run_fetch(const std::string& name) {
    if (!claim(name)) return;  // a blocking caller ran it inline already
    fetch(name);
  }

  // Asks the backend, stores the result, and answers every waiter.
  void fetch(const std::string& name) {
    fetches.fetch_add(1, std::memory_order_relaxed);
    std::vector<Service> services;
    std::optional<Error> error;
    try {
      services = backend->get_service(name);
    } catch (const Exception& exception) {
      error = exception.error();
    } catch (const std::exception& exception) {
      error = unavailable(cache_error_id, exception.what());
    }

    std::vector<DoneCallback> waiters;
    ServiceSnapshot snapshot;
    {
      // Hold the in-flight lock while publishing so that a watch event lands either in
      // events_during_fetch (replayed here) or on the entry published here, never neither.
      std::lock_guard in_flight_lock(in_flight_mutex);
      auto record = in_flight.extract(name);
      waiters = std::move(record.mapped().waiters);
      const auto& events = record.mapped().events_during_fetch;

      std::unique_lock entries_lock(entries_mutex);
      if (!error) {
        for (const auto& event : events) services = apply_event(std::move(services), event);
        if (has_nodes(services)) {
          snapshot = std::make_shared<const std::vector<Service>>(std::move(services));
          entries[name] = Entry{snapshot, Clock::now()};
        } else {
          entries.erase(name);
          error = not_found(cache_error_id, "service " + name + " not found");
        }
      } else if (error->code == static_cast<std::int32_t>(ErrorCode::not_found)) {
        // The backend says the service is gone: that is an answer, not an outage.
        entries.erase(name);
      } else {
        auto found = entries.find(name);
        if (found != entries.end()) {
          snapshot = found->second.snapshot;
          error.reset();
          stale_served.fetch_add(waiters.size(), std::memory_order_relaxed);
        }
      }
    }
    for (auto& waiter : waiters) {
      try {
        waiter(snapshot, error);
      } catch (...) {
        // One waiter's failure must not starve the others.
      }
    }
  }

  void on_watch_event(const WatchEvent& event) {
    watch_events.fetch_add(1, std::memory_order_relaxed);
    const std::string& name = event.service.name;
    std::lock_guard in_flight_lock(in_flight_mutex);
    auto pending = in_flight.find(name);
    if (pending != in_flight.end()) pending->second.events_during_fetch.push_back(event);

    std::unique_lock entries_lock(entries_mutex);
    auto found = entries.find(name);
    // Services nobody asked for are not cached: the first lookup fetches them whole.
    if (found == entries.end()) return;
    auto updated = apply_event(*found->second.snapshot, event);
    if (updated.empty()) {
      entries.erase(found);
    } else {
      found->second.snapshot = std::make_shared<const std::vector<Service>>(std::move(updated));
    }
  }
};

RegistryCache::RegistryCache(std::shared_ptr<Registry> backend,
                             boost::asio::any_io_executor blocking_executor,
                             RegistryCacheOptions options)
    : state_(std::make_shared<State>()) {
  state_->backend = std::move(backend);
  state_->blocking_executor = std::move(blocking_executor);
  state_->options = options;
  std::weak_ptr<State> weak = state_;
  try {
    auto watch = state_->backend->watch({}, [weak](const WatchEvent& event) {
      if (auto state = weak.lock()) state->on_watch_event(event);
    });
    std::lock_guard lock(state_->watch_mutex);
    state_->watch = std::move(watch);
  } catch (const std::exception&) {
    // A backend that cannot watch still works: entries are then bounded by the TTL alone.
  }
}

RegistryCache::~RegistryCache() {
  std::unique_ptr<Watch> watch;
  {
    std::lock_guard lock(state_->watch_mutex);
    watch = std::move(state_->watch);
  }
  if (watch) watch->stop();
}

void RegistryCache::async_get_service(std::string name, DoneCallback done) {
  if (auto snapshot = state_->lookup_fresh(name, Clock::now())) {
    state_->hits.fetch_add(1, std::memory_order_relaxed);
    done(std::move(snapshot), std::nullopt);
    return;
  }
  state_->misses.fetch_add(1, std::memory_order_relaxed);
  state_->join_fetch(name, std::move(done));
}

ServiceSnapshot RegistryCache::cached_service(const std::string& name, Clock::time_point now) {
  auto snapshot = state_->lookup_fresh(name, now);
  if (snapshot) state_->hits.fetch_add(1, std::memory_order_relaxed);
  return snapshot;
}

void RegistryCache::register_service(const Service& service, const RegisterOptions& options) {
  state_->backend->register_service(service, options);
}

void RegistryCache::deregister_service(const Service& service) {
  state_->backend->deregister_service(service);
}

std::vector<Service> RegistryCache::get_service(std::string_view name_view) {
  std::string name(name_view);
  if (auto snapshot = state_->lookup_fresh(name, Clock::now())) {
    state_->hits.fetch_add(1, std::memory_order_relaxed);
    return *snapshot;
  }
  state_->misses.fetch_add(1, std::memory_order_relaxed);
  // The caller is willing to block, so it may run the fetch itself; that keeps a caller on
  // the blocking executor from waiting on work queued behind it.
  auto promise = std::make_shared<std::promise<std::vector<Service>>>();
  auto result = promise->get_future();
  state_->join_fetch(name, [promise](ServiceSnapshot snapshot, std::optional<Error> error) {
    if (error) {
      promise->set_exception(std::make_exception_ptr(Exception(*error)));
    } else {
      promise->set_value(*snapshot);
    }
  });
  if (state_->claim(name)) state_->fetch(name);
  return result.get();
}

std::vector<Service> RegistryCache::list_services() {
  return state_->backend->list_services();
}

std::unique_ptr<Watch> RegistryCache::watch(const WatchOptions& options,
                                            std::function<void(const WatchEvent&)> on_event) {
  return state_->backend->watch(options, std::move(on_event));
}

void RegistryCache::clear() {
  std::unique_lock lock(state_->entries_mutex);
  state_->entries.clear();
}

const std::shared_ptr<Registry>& RegistryCache::backend() const noexcept {
  return state_->backend;
}

RegistryCache::Statistics RegistryCache::statistics() const {
  Statistics statistics;
  statistics.hits = state_->hits.load(std::memory_order_relaxed);
  statistics.misses = state_->misses.load(std::memory_order_relaxed);
  statistics.fetches = state_->fetches.load(std::memory_order_relaxed);
  statistics.stale_served = state_->stale_served.load(std::memory_order_relaxed);
  statistics.watch_events = state_->watch_events.load(std::memory_order_relaxed);
  return statistics;
}

}  // namespace micro
