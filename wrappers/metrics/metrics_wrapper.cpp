// wrappers/metrics — counts requests, errors and latency per endpoint and per topic.
//
// Counted, per chain: handler (requests this service handled, by endpoint), client
// (logical calls, by service and endpoint), call (attempts, by service, endpoint and
// node), publish and deliver (by topic). The counters are printed every `report`
// interval (0: never) and once more when the wrapper is destroyed, if anything was
// counted. A line:
//   [micro] metrics handler greeter Greeter.Hello requests=3 errors=1 latency_total=1.204ms
//     latency_mean=0.401ms latency_max=0.950ms          (one line in the output)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>

#include <micro/error.hpp>
#include <micro/plugin.hpp>
#include <micro/text.hpp>
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

// Wraps a request/response function: counts when the response passes by, or when
// `next` throws before answering.
template <class Function, class... Arguments>
void run_counted(const std::shared_ptr<Registry>& registry, Counters& counters,
                 const Function& next, const micro::RequestPtr& request,
                 micro::ResponseHandler done, const Arguments&... arguments) {
  auto start = Clock::now();
  auto answered = std::make_shared<std::atomic<bool>>(false);
  // The registry rides along: a late response must still find its counters.
  auto on_response = [registry, &counters, start, answered,
                      done = std::move(done)](micro::Response&& response) {
    answered->store(true);
    counters.record(!response.error, Clock::now() - start);
    done(std::move(response));
  };
  try {
    next(request, arguments..., std::move(on_response));
  } catch (...) {
    if (!answered->load()) counters.record(false, Clock::now() - start);
    throw;
  }
}

template <class Function>
void run_counted_message(Counters& counters, const Function& next, micro::Context& context,
                         micro::Message& message) {
  auto start = Clock::now();
  try {
    next(context, message);
  } catch (...) {
    counters.record(false, Clock::now() - start);
    throw;
  }
  counters.record(true, Clock::now() - start);
}

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
      : registry_(std::make_shared<Registry>()),
        prefix_(arguments.get_string("prefix")),
        interval_(arguments.get_duration("report")) {
    file_ = open_stream(arguments.get_string("stream"), owned_);
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
    print();
    if (owned_) std::fclose(file_);
  }

  micro::WrapperSet wrappers(const micro::WrapperScope& scope) override {
    micro::WrapperSet set;
    auto registry = registry_;
    set.handler = [registry, service = scope.service_name](micro::HandlerFunction next) {
      return micro::HandlerFunction(
          [registry, service, next = std::move(next)](const micro::RequestPtr& request,
                                                      micro::ResponseHandler respond) {
            Counters& counters = registry->counters(key_of("handler", service, request->endpoint));
            run_counted(registry, counters, next, request, std::move(respond));
          });
    };
    set.client = [registry](micro::ClientFunction next) {
      return micro::ClientFunction(
          [registry, next = std::move(next)](const micro::RequestPtr& request,
                                             const micro::CallOptions& options,
                                             micro::ResponseHandler done) {
            Counters& counters =
                registry->counters(key_of("client", request->service, request->endpoint));
            run_counted(registry, counters, next, request, std::move(done), options);
          });
    };
    set.call = [registry](micro::CallFunction next) {
      return micro::CallFunction([registry, next = std::move(next)](
                                     const micro::RequestPtr& request,
                                     const micro::Attempt& attempt, micro::ResponseHandler done) {
        Counters& counters = registry->counters(
            key_of("call", request->service + " " + request->endpoint, attempt.node.address));
        run_counted(registry, counters, next, request, std::move(done), attempt);
      });
    };
    set.publish = [registry](micro::PublishFunction next) {
      return micro::PublishFunction(
          [registry, next = std::move(next)](micro::Context& context, micro::Message& message) {
            Counters& counters = registry->counters(key_of("publish", message.topic));
            run_counted_message(counters, next, context, message);
          });
    };
    set.subscriber = [registry](micro::SubscriberFunction next) {
      return micro::SubscriberFunction(
          [registry, next = std::move(next)](micro::Context& context, micro::Message& message) {
            Counters& counters = registry->counters(key_of("deliver", message.topic));
            run_counted_message(counters, next, context, message);
          });
    };
    return set;
  }

 private:
  void print() {
    std::string text = registry_->dump(prefix_);
    if (text.empty()) return;
    std::fwrite(text.data(), 1, text.size(), file_);
    std::fflush(file_);
  }

  std::shared_ptr<Registry> registry_;
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
    {"report", "duration", "0", "print the counters this often (0: only when destroyed)"},
    {"stream", "string", "stderr", "where reports go: stderr, stdout or a file path (appended)"},
    {"prefix", "string", "[micro]", "text at the start of every line"},
};

}  // namespace

MICRO_PLUGIN(wrapper, metrics, "request, error and latency counters per endpoint and topic",
             options, [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new MetricsWrapper(arguments);
             })
