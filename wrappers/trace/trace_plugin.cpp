// wrappers/trace — the plugin entry point (`wrappers=trace`): reads the options, and on the
// first wrappers(scope) call builds resource, exporter, batch processor and SDK tracer,
// installs the tracer process-wide, and returns the five tracing wrappers. Destroying the
// plugin object uninstalls the tracer, flushes what is queued and prints one statistics
// line on stderr.
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>

#include <micro/error.hpp>
#include <micro/log.hpp>
#include <micro/metrics.hpp>
#include <micro/plugin.hpp>
#include <micro/trace.hpp>
#include <micro/wrapper.hpp>

#include "batch_processor.hpp"
#include "deferred_processor.hpp"
#include "exporters.hpp"
#include "resource.hpp"
#include "samplers.hpp"
#include "sdk_tracer.hpp"
#include "trace_wrappers.hpp"

namespace {

using namespace micro::trace::sdk;

// No defaults here: an absent option lets the OTEL_* environment decide (see README).
const micro::PluginOption trace_options[] = {
    {"sampler", "string", nullptr,
     "always_on, always_off, traceidratio, parentbased_always_on (default), "
     "parentbased_always_off, parentbased_traceidratio, deferred (tail in process)"},
    {"ratio", "double", nullptr,
     "sampling ratio 0..1 for the traceidratio samplers; for deferred, of the traces with no "
     "error and no slow span",
     "0", "1"},
    {"keep_errors", "bool", nullptr,
     "sampler=deferred: keep every local trace with a span in error (default true)"},
    {"slower_than", "duration", nullptr,
     "sampler=deferred: keep every local trace with a span at least this long (default off)"},
    {"max_buffered", "int", nullptr,
     "sampler=deferred: spans of undecided traces held at once (default 16384)", "1"},
    {"rules", "string", nullptr, "per-subject ratios, e.g. payment.*=1.0;topic:audit.*=0"},
    {"redact", "string", nullptr, "comma list of sensitive key fragments (replaces the default)"},
    {"exporter", "string", nullptr, "otlp (default), console, file or none"},
    {"endpoint", "string", nullptr,
     "OTLP URL (default http://localhost:4318/v1/traces; http://localhost:4317 for grpc)"},
    {"protocol", "string", nullptr, "http/protobuf (default), http/json or grpc"},
    {"headers", "string", nullptr, "extra HTTP headers, k=v,k2=v2"},
    {"compression", "string", nullptr, "none (default) or gzip"},
    {"timeout", "duration", nullptr, "per-request OTLP timeout (default 10s)", "1ms"},
    {"max_attempts", "int", nullptr, "OTLP attempts per batch on retryable failures (default 5)",
     "1", "100"},
    {"tls_ca", "string", nullptr, "https endpoint: CA bundle (PEM; default the system store)"},
    {"tls_cert", "string", nullptr, "https endpoint: client certificate chain (PEM), with tls_key"},
    {"tls_key", "string", nullptr, "https endpoint: client private key (PEM), with tls_cert"},
    {"file", "string", nullptr, "path for exporter=file; stdout for exporter=console"},
    {"max_queue_size", "int", nullptr, "spans queued for export (default 2048)", "1"},
    {"max_export_batch_size", "int", nullptr, "spans per export (default 512)", "1"},
    {"schedule_delay", "duration", nullptr, "export at least this often (default 5s)", "1ms"},
    {"export_timeout", "duration", nullptr, "bound on flush at shutdown (default 30s)", "1ms"},
    {"service_name", "string", nullptr, "service.name (default: the service's own name)"},
};

// The process has one tracer slot; the first wrapper object to install wins it.
std::mutex install_mutex;
const void* installed_by = nullptr;

class TraceWrapper final : public micro::Wrapper {
 public:
  // Everything is parsed here so a bad option fails when the plugin is loaded.
  explicit TraceWrapper(const micro::PluginArguments& arguments)
      : sampler_settings_(SamplerSettings::from(arguments)),
        exporter_settings_(ExporterSettings::from(arguments)),
        batch_settings_(BatchSettings::from(arguments)),
        limits_(SpanLimits::from_environment()),
        redactor_(arguments.has("redact")
                      ? Redactor(Redactor::parse(arguments.get_string("redact")))
                      : Redactor()),
        service_name_(arguments.has("service_name") ? arguments.get_string("service_name") : "") {
    make_sampler(sampler_settings_);  // rejects a bad sampler now rather than later
  }

  ~TraceWrapper() override {
    std::lock_guard lock(install_mutex);
    if (installed_by != this) return;
    micro::trace::set_tracer(nullptr);
    installed_by = nullptr;
    metrics_.reset();
    tracer_.reset();
    processor_->shutdown();
    auto line = format_statistics(statistics());
    if (deferred_) {
      auto counts = deferred_->counts();
      line += " deferred_traces_kept=" + std::to_string(counts.traces_kept) +
              " deferred_traces_discarded=" + std::to_string(counts.traces_discarded) +
              " deferred_traces_forced=" + std::to_string(counts.traces_forced);
    }
    micro::log::info("trace",
                     line + " retries=" + std::to_string(exporter_statistics_->retries.load()));
  }

  micro::WrapperSet wrappers(const micro::WrapperScope& scope) override {
    {
      std::lock_guard lock(install_mutex);
      if (installed_by == nullptr) install(scope);
    }
    return make_trace_wrappers(scope);
  }

 private:
  void install(const micro::WrapperScope& scope) {
    std::string service_name = service_name_.empty() ? scope.service_name : service_name_;
    Resource resource = make_resource(service_name, scope.service_version);
    InstrumentationScope instrumentation{"micro-cpp", sdk_version};
    exporter_statistics_ = std::make_shared<ExporterStatistics>();
    auto exporter =
        make_exporter(exporter_settings_, resource, instrumentation, exporter_statistics_);
    const std::string* resolved_name = find_attribute(resource, "service.name");
    auto sampler = make_sampler(sampler_settings_, resolved_name ? *resolved_name : service_name);
    processor_ = std::make_shared<BatchProcessor>(std::move(exporter), batch_settings_);
    if (sampler_settings_.name == "deferred") {
      deferred_ = std::make_shared<DeferredProcessor>(
          processor_, DeferredSettings{sampler_settings_.keep_errors, sampler_settings_.slower_than,
                                       sampler_settings_.max_buffered});
      processor_ = deferred_;
    }
    tracer_ = std::make_shared<SdkTracer>(std::move(sampler), processor_, limits_, redactor_);
    micro::trace::set_tracer(tracer_);
    installed_by = this;
    // The SDK's own counts on /metrics (read at scrape time).
    metrics_ = micro::metrics::default_registry().add_collector([](micro::metrics::Collector& out) {
      auto counts = statistics();
      out.counter("micro_trace_spans_started_total", "sampled spans started", {},
                  static_cast<double>(counts.spans_started));
      out.counter("micro_trace_spans_exported_total", "spans the exporter delivered", {},
                  static_cast<double>(counts.spans_exported));
      out.counter("micro_trace_spans_dropped_total",
                  "spans dropped: the export queue was full, or after shutdown", {},
                  static_cast<double>(counts.spans_dropped));
      out.counter("micro_trace_spans_export_failed_total", "spans in batches the exporter failed",
                  {}, static_cast<double>(counts.spans_export_failed));
    });
  }

  SamplerSettings sampler_settings_;
  ExporterSettings exporter_settings_;
  BatchSettings batch_settings_;
  SpanLimits limits_;
  Redactor redactor_;
  std::string service_name_;

  std::shared_ptr<ExporterStatistics> exporter_statistics_;
  std::shared_ptr<SpanProcessor> processor_;
  std::shared_ptr<DeferredProcessor> deferred_;  // sampler=deferred: in front of the batch one
  std::shared_ptr<SdkTracer> tracer_;
  micro::metrics::Registration metrics_;
};

}  // namespace

MICRO_PLUGIN(wrapper, trace,
             "OpenTelemetry tracing: spans for every request, call, publish and delivery, "
             "exported over OTLP/HTTP",
             trace_options, [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new TraceWrapper(arguments);
             })
