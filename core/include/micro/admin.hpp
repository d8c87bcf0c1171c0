// micro/admin.hpp — the operator's endpoint of a service: /metrics (Prometheus text or
// OpenMetrics), /health/live and /health/ready (200/503 with the checks as JSON), and pages
// for people: / (HTML for browsers, plain text otherwise), /connections, /registry, /traces (the
// last spans the trace SDK recorded into recent_spans(), as a waterfall per trace in HTML).
//
// The admin server runs on a thread and io_context of its own, never on the I/O threads that
// serve calls: a slow scrape or page cannot delay a call, and a busy service still answers its
// probes. Pages and checks are functions the owner (micro::Microservice) gives; they run on the
// admin thread and may block briefly.
//
// With a token set, every path but /health/* needs "Authorization: Bearer <token>" (compared
// in constant time); probes stay open, as Kubernetes probes carry no secrets.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <micro/metrics.hpp>

namespace micro::admin {

struct CheckResult {
  bool ok = true;
  std::string detail;  // what was seen: "listening on 127.0.0.1:4000", "broker not connected"
};
using CheckFunction = std::function<CheckResult()>;

enum class Probe { liveness, readiness };

struct AdminOptions {
  std::string address = "127.0.0.1:9100";  // "host:port"; port 0 picks a free one
  std::string token;                       // "" : no authentication
  metrics::Registry* registry = nullptr;   // null: metrics::default_registry()
};

class AdminServer {
 public:
  explicit AdminServer(AdminOptions options);
  ~AdminServer();  // close()
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Binds and starts answering; throws micro::Exception naming the address when it cannot.
  void listen();
  std::string address() const;  // the bound "host:port"

  // Checks are evaluated at each probe, in the order added. A readiness check does not make
  // a service unlive; a liveness check counts for both.
  void add_check(std::string name, Probe probe, CheckFunction check);
  // While draining, /health/ready answers 503 whatever the checks say.
  void set_draining(bool draining);
  bool draining() const noexcept;

  // The summary shown on / ("service", "version", "node", "config", "plugins": [...]).
  void set_summary(std::function<nlohmann::json()> summary);
  // A JSON page at `path` ("/connections", "/registry"); shown as JSON, or as HTML to browsers.
  void set_page(std::string path, std::function<nlohmann::json()> page);

  void close();

 private:
  struct State;
  std::shared_ptr<State> state_;
};

// One finished span, as /traces shows it.
struct SpanRecord {
  std::string trace_id, span_id, parent_span_id;  // hex; parent "" for a root
  std::string name;
  std::string kind;     // "server", "client", "producer", "consumer", "internal"
  std::string status;   // "ok", "error", "unset"
  double start = 0;     // seconds since the epoch
  double duration = 0;  // seconds
};

// The last spans this process finished, for /traces: a bounded ring, oldest dropped. The trace
// SDK (wrappers/trace) is to record each span it ends while enabled() — true once an admin
// server has started, so a process without one pays a relaxed load per span. Any thread;
// record() takes a short lock.
class SpanRing {
 public:
  explicit SpanRing(std::size_t capacity = 512);
  bool enabled() const noexcept { return enabled_.load(std::memory_order_relaxed); }
  void set_enabled(bool enabled) noexcept { enabled_.store(enabled, std::memory_order_relaxed); }
  void record(SpanRecord span);
  std::vector<SpanRecord> recent() const;  // oldest first
  std::uint64_t recorded() const;          // ever, dropped ones included

 private:
  std::atomic<bool> enabled_{false};
  mutable std::mutex mutex_;
  std::size_t capacity_;
  std::vector<SpanRecord> ring_;
  std::size_t next_ = 0;
  std::uint64_t recorded_ = 0;
};

// The process's ring.
SpanRing& recent_spans();

// The config string with secret values replaced by "***": every key or plugin option whose name
// contains password, passwd, secret, token, credential or key (admin_token, api_key, tls_key) —
// except names ending in _file, _path or _dir, which name where a secret is, not the secret —
// and the password of user-info in addresses ("nats://user:***@host:4222").
std::string redact_secrets(std::string_view config_text);

// True when a and b are equal, taking the same time whatever they hold (for their length).
bool constant_time_equal(std::string_view a, std::string_view b) noexcept;

// The estimated q-quantile (0..1) of per-bucket counts over `bounds` (+Inf last), by linear
// interpolation inside the bucket, as Prometheus' histogram_quantile does; NaN when empty.
double bucket_quantile(double q, const std::vector<double>& bounds,
                       const std::vector<std::uint64_t>& counts);

}  // namespace micro::admin
