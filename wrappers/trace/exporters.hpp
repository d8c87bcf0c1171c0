// wrappers/trace — the exporters: OTLP/HTTP (JSON or protobuf, optional gzip), OTLP/gRPC, console
// (one line per span) and file (OTLP JSON lines), chosen by plugin options and the
// OTEL_EXPORTER_OTLP_* environment.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <micro/http_client.hpp>
#include <micro/plugin.hpp>

#include "span_data.hpp"

namespace micro::trace::sdk {

struct ExporterSettings {
  std::string kind = "otlp";  // otlp | console | file | none
  // The full URL spans are POSTed to, "http://127.0.0.1:4318/v1/traces".
  std::string endpoint = "http://localhost:4318/v1/traces";
  std::string protocol = "http/protobuf";  // or http/json, or grpc (endpoint http://host:4317)
  std::map<std::string, std::string> headers;
  std::chrono::milliseconds timeout{10000};
  std::string compression = "none";  // or gzip
  std::string file_path;             // for kind=file
  int max_attempts = 5;              // retries on 429/502/503/504 and connection failures
  // For an https endpoint: the CA bundle ("" → the system store), the client certificate and
  // key, each named in messages by the option or variable that set it.
  micro::http::TlsOptions tls;

  // Plugin options first, then OTEL_EXPORTER_OTLP_* as the OTel spec defines them (the
  // generic endpoint gets "v1/traces" appended; the per-signal one is used as is).
  // Throws micro::Exception (400) naming a malformed value.
  static ExporterSettings from(const PluginArguments& arguments);
};

// Counters the program can read (self-telemetry).
struct ExporterStatistics {
  std::atomic<std::uint64_t> exported{0}, failed_exports{0}, retries{0}, dropped_on_failure{0};
};

std::unique_ptr<SpanExporter> make_exporter(const ExporterSettings& settings,
                                            const Resource& resource,
                                            const InstrumentationScope& scope,
                                            std::shared_ptr<ExporterStatistics> statistics);

}  // namespace micro::trace::sdk
