// wrappers/trace — what a finished span is, and the interface every exporter implements.
// Shared by the SDK half (tracer, samplers, batch processor) and the exporter half (OTLP
// JSON/protobuf over HTTP, console, file) of the trace plugin.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <micro/trace.hpp>

namespace micro::trace::sdk {

struct Event {
  std::string name;
  std::chrono::system_clock::time_point time;
  std::vector<Attribute> attributes;
  std::uint32_t dropped_attributes = 0;
};

struct LinkData {
  SpanContext context;
  std::vector<Attribute> attributes;
  std::uint32_t dropped_attributes = 0;
};

// A finished span, immutable once handed to the processor.
struct SpanData {
  SpanContext context;
  SpanId parent_span_id;  // invalid (all zero) for a root
  bool parent_remote = false;
  // sampler=deferred: the local root of this span's local trace (itself for a root: no
  // parent, or a remote one); invalid under other samplers.
  SpanId local_root;
  std::string name;
  SpanKind kind = SpanKind::internal;
  std::chrono::system_clock::time_point start_time;
  std::chrono::system_clock::time_point end_time;
  std::vector<Attribute> attributes;
  std::vector<Event> events;
  std::vector<LinkData> links;
  StatusCode status = StatusCode::unset;
  std::string status_message;
  std::uint32_t dropped_attributes = 0, dropped_events = 0, dropped_links = 0;
};

// service.name, service.version, host.name, process.pid, telemetry.sdk.*, and
// OTEL_RESOURCE_ATTRIBUTES.
struct Resource {
  std::vector<Attribute> attributes;
};

struct InstrumentationScope {
  std::string name = "micro-cpp";
  std::string version;
};

enum class ExportResult { success, failure_retryable, failure };

// Called from the batch processor's own thread only, one batch at a time.
class SpanExporter {
 public:
  virtual ~SpanExporter() = default;
  virtual ExportResult export_spans(std::span<const SpanData> spans) = 0;
  // Bounded by `timeout`; after it, export_spans is not called again.
  virtual void shutdown(std::chrono::milliseconds timeout) = 0;
};

}  // namespace micro::trace::sdk
