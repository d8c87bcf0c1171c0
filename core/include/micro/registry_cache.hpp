// micro/registry_cache.hpp — a Registry that wraps another and answers lookups from memory.
//
// Watch-driven (changes from the backend update entries at once), TTL-bounded (an entry
// older than the TTL is fetched again), one lookup in flight per service (concurrent
// misses wait for the same fetch), and stale entries are served while the backend errors,
// so a registry outage does not take calls down with it.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>

#include <boost/asio/any_io_executor.hpp>

#include <micro/error.hpp>
#include <micro/registry.hpp>

namespace micro {

struct RegistryCacheOptions {
  std::chrono::milliseconds ttl{std::chrono::minutes(1)};
};

// The nodes of a service as one immutable snapshot, shared by every call that reads it.
using ServiceSnapshot = std::shared_ptr<const std::vector<Service>>;

class RegistryCache : public Registry {
 public:
  // Lookups that miss run on `blocking_executor`, never on the caller's thread.
  RegistryCache(std::shared_ptr<Registry> backend, boost::asio::any_io_executor blocking_executor,
                RegistryCacheOptions options = {});
  ~RegistryCache() override;

  // Completes at once from memory on a hit; otherwise after one fetch shared by every
  // waiter. `done` receives a snapshot, or an error when the backend failed and nothing
  // (not even stale) was cached; 404 when the service has no nodes.
  void async_get_service(
      std::string name,
      std::function<void(ServiceSnapshot snapshot, std::optional<Error> error)> done);

  // The snapshot of `name` when it is cached and fresh at `now` (counted as a hit), else null;
  // never fetches. Lets a caller that has just read the clock skip the callback on a hit.
  ServiceSnapshot cached_service(const std::string& name,
                                 std::chrono::steady_clock::time_point now);

  // Registry: register/deregister/list/watch pass through; get_service reads the cache.
  void register_service(const Service& service, const RegisterOptions& options) override;
  void deregister_service(const Service& service) override;
  std::vector<Service> get_service(std::string_view name) override;
  std::vector<Service> list_services() override;
  std::unique_ptr<Watch> watch(const WatchOptions& options,
                               std::function<void(const WatchEvent&)> on_event) override;

  // Drops every entry (tests; after a known topology change).
  void clear();
  const std::shared_ptr<Registry>& backend() const noexcept;

  struct Statistics {
    std::uint64_t hits = 0, misses = 0, fetches = 0, stale_served = 0, watch_events = 0;
  };
  Statistics statistics() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace micro
