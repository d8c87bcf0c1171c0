// wrappers/trace — the OTLP/gRPC exporter (protocol=grpc): the OTLP protobuf encoding of a
// batch sent as opentelemetry.proto.collector.trace.v1.TraceService/Export over the grpc
// transport plugin, loaded through the PluginLoader (plugins do not include each other), with
// the OTLP spec's gRPC retry rules: CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE,
// UNAVAILABLE and DATA_LOSS are retried with exponential backoff and jitter; RESOURCE_EXHAUSTED
// only when the server sends RetryInfo (in grpc-status-details-bin), whose retry_delay is then
// the wait; everything else, and a partial success, is final.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "exporters.hpp"

namespace micro::trace::sdk {

// What the server said about retrying, from the google.rpc.Status of grpc-status-details-bin.
struct RetryHint {
  bool retry_info = false;                         // a google.rpc.RetryInfo detail is present
  std::optional<std::chrono::milliseconds> delay;  // its retry_delay, when given
};
// Malformed or absent details are no hint.
RetryHint parse_retry_hint(std::string_view status_details);

// Whether an export that ended with gRPC `status` may be sent again (the OTLP spec's table).
bool otlp_grpc_retryable(int status, const RetryHint& hint);

// ExportTraceServiceResponse.partial_success; nullopt when the response has none (a full
// success) or is not such a response.
struct PartialSuccess {
  std::int64_t rejected_spans = 0;
  std::string error_message;
};
std::optional<PartialSuccess> parse_partial_success(std::string_view response);

// Throws micro::Exception: 404 when the grpc transport plugin cannot be loaded, 400 for a bad
// endpoint or TLS file.
std::unique_ptr<SpanExporter> make_otlp_grpc_exporter(
    const ExporterSettings& settings, const Resource& resource, const InstrumentationScope& scope,
    std::shared_ptr<ExporterStatistics> statistics);

}  // namespace micro::trace::sdk
