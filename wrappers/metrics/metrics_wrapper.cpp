// wrappers/metrics — counts requests, errors and latency per endpoint and per topic.
//
// Recorded in the process's metrics registry (<micro/metrics.hpp>, shown at /metrics on the
// admin endpoint): micro_requests_total and micro_request_duration_seconds (a histogram with
// the `buckets` option's bounds) by chain (server, client, call), service, endpoint and
// status ("success" or the error code), and micro_messages_total by chain (publish, deliver),
// topic and status. A traced call's observation becomes its bucket's exemplar (trace id).
// A stream is one request of its chain when it ends, and its messages each way are counted in
// micro_stream_messages_total.
//
// With `stream` set, the older text report is kept too, per chain: handler (requests this
// service handled, by endpoint), client (logical calls, by service and endpoint), call
// (attempts, by service, endpoint and node), publish and deliver (by topic), printed every
// `report` interval (0: never) and once more when the wrapper is destroyed, if anything was
// counted. A line:
//   [micro] metrics handler greeter Greeter.Hello requests=3 errors=1 latency_total=1.204ms
//     latency_mean=0.401ms latency_max=0.950ms          (one line in the output)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>

#include <micro/error.hpp>
#include <micro/metrics.hpp>
#include <micro/plugin.hpp>
#include <micro/stream.hpp>
#include <micro/text.hpp>
#include <micro/trace.hpp>
#include <micro/wrapper.hpp>

namespace {

constexpr const char* error_id = "micro.wrapper.metrics";

using Clock = std::chrono::steady_clock;

struct Counters {
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> latency_total{0};  // nanoseconds
  std::atomic<std::uint64_t> latency_max{0};    // nanoseconds

  void record(bool ok, Clock::duration elapsed) {
    auto nanoseconds = static_cast<std::uint64_t>(
        std::max<std::int64_t>(0, std::chrono::nanoseconds(elapsed).count()));
    requests.fetch_add(1, std::memory_order_relaxed);
    if (!ok) errors.fetch_add(1, std::memory_order_relaxed);
    latency_total.fetch_add(nanoseconds, std::memory_order_relaxed);
    std::uint64_t seen = latency_max.load(std::memory_order_relaxed);
    while (seen < nanoseconds &&
           !latency_max.compare_exchange_weak(seen, nanoseconds, std::memory_order_relaxed)) {
    }
  }
};

// Every counter, keyed "<chain> <subject>". Entries are never removed, so a Counters
// reference stays valid; lookups of known keys take only a read lock.
class Registry {
 public:
  Counters& counters(std::string_view key) {
    {
      std::shared_lock lock(mutex_);
      auto found = table_.find(key);
      if (found != table_.end()) return *found->second;
    }
    std::unique_lock lock(mutex_);
    auto& slot = table_[std::string(key)];
    if (!slot) slot = std::make_unique<Counters>();
    return *slot;
  }

  // The lines of a dump, sorted by key; empty when nothing was counted.
  std::string dump(const std::string& prefix) const {
    std::map<std::string, const Counters*> sorted;
    {
      std::shared_lock lock(mutex_);
      for (const auto& [key, counters] : table_) sorted.emplace(key, counters.get());
    }
    std::string text;
    for (const auto& [key, counters] : sorted) {
      std::uint64_t requests = counters->requests.load(std::memory_order_relaxed);
      if (requests == 0) continue;
      std::uint64_t errors = counters->errors.load(std::memory_order_relaxed);
      double total = static_cast<double>(counters->latency_total.load()) / 1e6;
      double maximum = static_cast<double>(counters->latency_max.load()) / 1e6;
      char numbers[160];
      std::snprintf(numbers, sizeof numbers,
                    " requests=%llu errors=%llu latency_total=%.3fms latency_mean=%.3fms "
                    "latency_max=%.3fms\n",
                    static_cast<unsigned long long>(requests),
                    static_cast<unsigned long long>(errors), total,
                    total / static_cast<double>(requests), maximum);
      if (!prefix.empty()) text.append(prefix).push_back(' ');
      text.append("metrics ").append(key).append(numbers);
    }
    return text;
  }

 private:
  mutable std::shared_mutex mutex_;
  micro::StringMap<std::unique_ptr<Counters>> table_;
};

std::FILE* open_stream(const std::string& stream, bool& owned) {
  owned = false;
  if (stream == "stderr") return stderr;
  if (stream == "stdout") return stdout;
  if (stream.find('/') == std::string::npos)
    throw micro::Exception(micro::bad_request(
        error_id, "stream must be stderr, stdout or a file path, got '" + stream + "'"));
  std::FILE* file = std::fopen(stream.c_str(), "a");
  if (!file)
    throw micro::Exception(
        micro::bad_request(error_id, "cannot open metrics file '" + stream + "'"));
  owned = true;
  return file;
}

// "0.005,0.01,0.1" (seconds) → bounds; empty: the Prometheus client default.
std::vector<double> parse_buckets(const std::string& text) {
  // Finer than the Prometheus default at the low end: RPCs inside a host take microseconds.
  if (text.empty())
    return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
            0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
  std::vector<double> bounds;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t comma = text.find(',', start);
    std::string item =
        text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    char* end = nullptr;
    double bound = std::strtod(item.c_str(), &end);
    if (item.empty() || end != item.c_str() + item.size() || !std::isfinite(bound) || bound <= 0 ||
        (!bounds.empty() && bound <= bounds.back()))
      throw micro::Exception(micro::bad_request(
          error_id, "buckets: bad bound '" + item + "' (bound " +
                        std::to_string(bounds.size() + 1) +
                        "); expected increasing positive numbers of seconds like "
                        "0.005,0.01,0.1,1"));
    bounds.push_back(bound);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return bounds;
}

// The families this wrapper records into, in the process's registry, which lives as long as the
// process: a copy of this (three pointers) is all a call carries.
struct Families {
  micro::metrics::Histogram* duration;
  micro::metrics::Counter* messages;
  micro::metrics::Counter* stream_messages;
};

// micro_requests_total is the histogram's _count under its own name, read at scrape time: one
// cell lookup per call instead of two. Registered once per process (plugins stay loaded).
void expose_request_counter(micro::metrics::Histogram* duration) {
  static micro::metrics::Registration registration =
      micro::metrics::default_registry().add_collector(
          [duration](micro::metrics::Collector& collector) {
            const auto& names = duration->label_names();
            for (const auto& [values, snapshot] : duration->snapshots()) {
              micro::metrics::Labels labels;
              for (std::size_t i = 0; i < names.size(); ++i)
                labels.emplace_back(names[i], values[i]);
              collector.counter("micro_requests_total",
                                "requests by chain (server, client, call), service, endpoint and "
                                "status (success or the error code)",
                                labels, static_cast<double>(snapshot.count));
            }
          });
}

Families make_families(std::vector<double> bounds) {
  auto& registry = micro::metrics::default_registry();
  Families families{
      &registry.histogram("micro_request_duration_seconds", "request latency in seconds",
                          {"chain", "service", "endpoint", "status"}, std::move(bounds)),
      &registry.counter("micro_messages_total",
                        "messages by chain (publish, deliver), topic and status",
                        {"chain", "topic", "status"}),
      &registry.counter("micro_stream_messages_total",
                        "stream messages by chain (server, client), service, endpoint and "
                        "direction (sent, received)",
                        {"chain", "service", "endpoint", "direction"})};
  expose_request_counter(families.duration);
  return families;
}

// Service names live as long as the process, so a late response can still label with one.
std::string_view interned(const std::string& name) {
  static std::mutex mutex;
  static auto* names = new std::set<std::string, std::less<>>();
  std::lock_guard lock(mutex);
  return *names->insert(name).first;
}

struct StatusText {
  char text[12];
  std::string_view view;
  explicit StatusText(const micro::Response& response) {
    if (!response.error) {
      view = "success";
      return;
    }
    int length = std::snprintf(text, sizeof text, "%d", static_cast<int>(response.error->code));
    view = std::string_view(text, static_cast<std::size_t>(std::max(length, 0)));
  }
};

// One call in flight: what its response needs, in one allocation.
struct CallState {
  Families families;
  std::string_view chain, service;
  micro::RequestPtr request;
  Counters* counters;                // the text report's, null without `stream`
  std::shared_ptr<Registry> report;  // keeps `counters` alive for a late response
  Clock::time_point start;
  std::atomic<bool> answered{false};
  micro::ResponseHandler done;

  void record(std::string_view status, bool ok) {
    auto elapsed = Clock::now() - start;
    if (counters) counters->record(ok, elapsed);
    double seconds = std::chrono::duration<double>(elapsed).count();
    auto& cell = families.duration->with({chain, service, request->endpoint, status});
    const auto& span = request->context.span();
    if (span && span->context().valid()) {
      // Exemplars link a bucket to a trace (OpenMetrics); only traced calls pay for the ids.
      cell.observe(seconds, span->context().trace_id.to_hex(), span->context().span_id.to_hex());
    } else {
      cell.observe(seconds);
    }
  }
};

// Wraps a request/response function: records when the response passes by, or when `next`
// throws before answering.
template <class Function, class... Arguments>
void run_counted(const std::shared_ptr<Registry>& report, Counters* counters, Families families,
                 std::string_view chain, std::string_view service, const Function& next,
                 const micro::RequestPtr& request, micro::ResponseHandler done,
                 const Arguments&... arguments) {
  auto state = std::make_shared<CallState>();
  state->families = families;
  state->chain = chain;
  state->service = service;
  state->request = request;
  state->counters = counters;
  if (counters) state->report = report;
  state->done = std::move(done);
  state->start = Clock::now();
  auto on_response = [state](micro::Response&& response) {
    state->answered.store(true, std::memory_order_relaxed);
    state->record(StatusText(response).view, !response.error);
    auto finish = std::move(state->done);
    finish(std::move(response));
  };
  try {
    next(request, arguments..., std::move(on_response));
  } catch (...) {
    if (!state->answered.load()) state->record("500", false);
    throw;
  }
}

template <class Function>
void run_counted_message(Counters* counters, Families families, std::string_view chain,
                         const Function& next, micro::Context& context, micro::Message& message) {
  auto start = Clock::now();
  try {
    next(context, message);
  } catch (...) {
    if (counters) counters->record(false, Clock::now() - start);
    families.messages->with({chain, message.topic, "failure"}).add();
    throw;
  }
  if (counters) counters->record(true, Clock::now() - start);
  families.messages->with({chain, message.topic, "success"}).add();
}

// A stream seen by the wrapper: its messages counted each way as they pass, and the stream
// itself recorded as one request of its chain (its status, its lifetime) when it ends.
class CountedStream final : public micro::ForwardingStream {
 public:
  CountedStream(micro::MessageStreamPtr inner, const Families& families, std::string_view chain,
                std::string_view service)
      : ForwardingStream(std::move(inner)),
        sent_(
            &families.stream_messages->with({chain, service, inner_->request().endpoint, "sent"})),
        received_(&families.stream_messages->with(
            {chain, service, inner_->request().endpoint, "received"})) {
    // The callback must not hold the stream (the stream holds its callbacks).
    inner_->on_end([duration = families.duration, chain, service,
                    endpoint = inner_->request().endpoint,
                    start = Clock::now()](micro::Response&& status) {
      double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      duration->with({chain, service, endpoint, StatusText(status).view}).observe(seconds);
    });
  }

  void async_read(micro::StreamReadHandler done) override {
    inner_->async_read(
        [received = received_, done = std::move(done)](std::optional<std::string> message) {
          if (message) received->add();
          done(std::move(message));
        });
  }
  void async_write(std::string message, micro::StreamWriteHandler done) override {
    inner_->async_write(std::move(message),
                        [sent = sent_, done = std::move(done)](std::optional<micro::Error> error) {
                          if (!error) sent->add();
                          done(std::move(error));
                        });
  }

 private:
  micro::metrics::CounterCell* sent_;
  micro::metrics::CounterCell* received_;
};

std::string key_of(std::string_view chain, std::string_view first, std::string_view second = {}) {
  std::string key;
  key.reserve(chain.size() + first.size() + second.size() + 2);
  key.append(chain).push_back(' ');
  key.append(first);
  if (!second.empty()) key.append(" ").append(second);
  return key;
}

class MetricsWrapper final : public micro::Wrapper {
 public:
  explicit MetricsWrapper(const micro::PluginArguments& arguments)
      : families_(make_families(parse_buckets(arguments.get_string("buckets")))),
        prefix_(arguments.get_string("prefix")),
        interval_(arguments.get_duration("report")) {
    std::string stream = arguments.get_string("stream");
    if (stream.empty()) return;  // the registry only
    report_ = std::make_shared<Registry>();
    file_ = open_stream(stream, owned_);
    if (interval_ > std::chrono::milliseconds(0)) {
      // A thread of its own: reporting must not sit on an I/O thread, and nothing of
      // this plugin is left queued on the runtime once the object is gone.
      reporter_ = std::thread([this] {
        std::unique_lock lock(mutex_);
        while (!stopping_) {
          if (stop_signal_.wait_for(lock, interval_, [this] { return stopping_; })) break;
          lock.unlock();
          print();
          lock.lock();
        }
      });
    }
  }

  ~MetricsWrapper() override {
    if (reporter_.joinable()) {
      {
        std::lock_guard lock(mutex_);
        stopping_ = true;
      }
      stop_signal_.notify_all();
      reporter_.join();
    }
    if (report_) print();
    if (owned_) std::fclose(file_);
  }

  micro::WrapperSet wrappers(const micro::WrapperScope& scope) override {
    micro::WrapperSet set;
    auto report = report_;
    auto families = families_;
    std::string_view service = interned(scope.service_name);
    set.handler = [report, families, service](micro::HandlerFunction next) {
      return micro::HandlerFunction(
          [report, families, service, next = std::move(next)](const micro::RequestPtr& request,
                                                              micro::ResponseHandler respond) {
            Counters* counters =
                report ? &report->counters(key_of("handler", service, request->endpoint)) : nullptr;
            run_counted(report, counters, families, "server", service, next, request,
                        std::move(respond));
          });
    };
    set.client = [report, families](micro::ClientFunction next) {
      return micro::ClientFunction(
          [report, families, next = std::move(next)](const micro::RequestPtr& request,
                                                     const micro::CallOptions& options,
                                                     micro::ResponseHandler done) {
            Counters* counters =
                report ? &report->counters(key_of("client", request->service, request->endpoint))
                       : nullptr;
            run_counted(report, counters, families, "client", request->service, next, request,
                        std::move(done), options);
          });
    };
    set.call = [report, families](micro::CallFunction next) {
      return micro::CallFunction([report, families, next = std::move(next)](
                                     const micro::RequestPtr& request,
                                     const micro::Attempt& attempt, micro::ResponseHandler done) {
        Counters* counters =
            report ? &report->counters(key_of("call", request->service + " " + request->endpoint,
                                              attempt.node.address))
                   : nullptr;
        run_counted(report, counters, families, "call", request->service, next, request,
                    std::move(done), attempt);
      });
    };
    set.publish = [report, families](micro::PublishFunction next) {
      return micro::PublishFunction([report, families, next = std::move(next)](
                                        micro::Context& context, micro::Message& message) {
        Counters* counters = report ? &report->counters(key_of("publish", message.topic)) : nullptr;
        run_counted_message(counters, families, "publish", next, context, message);
      });
    };
    set.subscriber = [report, families](micro::SubscriberFunction next) {
      return micro::SubscriberFunction([report, families, next = std::move(next)](
                                           micro::Context& context, micro::Message& message) {
        Counters* counters = report ? &report->counters(key_of("deliver", message.topic)) : nullptr;
        run_counted_message(counters, families, "deliver", next, context, message);
      });
    };
    set.handler_stream = [families, service](micro::StreamHandlerFunction next) {
      return micro::StreamHandlerFunction(
          [families, service, next = std::move(next)](const micro::MessageStreamPtr& stream) {
            next(std::make_shared<CountedStream>(stream, families, "server", service));
          });
    };
    set.client_stream = [families](micro::ClientStreamFunction next) {
      return micro::ClientStreamFunction([families, next = std::move(next)](
                                             const micro::RequestPtr& head,
                                             const micro::CallOptions& options,
                                             micro::OpenStreamHandler done) {
        std::string_view service = interned(head->service);
        auto start = Clock::now();
        next(head, options,
             [families, service, head, start, done = std::move(done)](
                 micro::MessageStreamPtr stream, std::optional<micro::Error> error) mutable {
               if (!stream) {
                 // Never opened: one failed request of the client chain.
                 micro::Response failed = micro::Response::failure(
                     error ? *error : micro::Error("micro.client", 500, "stream not opened"));
                 double seconds = std::chrono::duration<double>(Clock::now() - start).count();
                 families.duration
                     ->with({"client", service, head->endpoint, StatusText(failed).view})
                     .observe(seconds);
                 done(nullptr, std::move(error));
                 return;
               }
               done(std::make_shared<CountedStream>(std::move(stream), families, "client", service),
                    std::nullopt);
             });
      });
    };
    return set;
  }

 private:
  void print() {
    std::string text = report_->dump(prefix_);
    if (text.empty()) return;
    std::fwrite(text.data(), 1, text.size(), file_);
    std::fflush(file_);
  }

  Families families_;
  std::shared_ptr<Registry> report_;  // the text report's counters; null without `stream`
  std::string prefix_;
  std::chrono::milliseconds interval_;
  std::FILE* file_ = nullptr;
  bool owned_ = false;

  std::mutex mutex_;
  std::condition_variable stop_signal_;
  bool stopping_ = false;
  std::thread reporter_;
};

const micro::PluginOption options[] = {
    {"buckets", "string", "",
     "histogram bounds in seconds, comma-separated (empty: 0.0001,0.00025,…,10)"},
    {"report", "duration", "0", "print the text report this often (0: only when destroyed)"},
    {"stream", "string", "",
     "where the text report goes: stderr, stdout or a file path (appended); empty: no report"},
    {"prefix", "string", "[micro]", "text at the start of every report line"},
};

}  // namespace

MICRO_PLUGIN(wrapper, metrics,
             "request counters and latency histograms for /metrics, per chain, endpoint and "
             "status",
             options, [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new MetricsWrapper(arguments);
             })
