// wrappers/trace — OTLP binary protobuf encoding of spans (an ExportTraceServiceRequest),
// written by hand from the .proto field numbers so the plugin needs no libprotobuf.
#pragma once

#include <span>
#include <string>

#include "span_data.hpp"

namespace micro::trace::sdk {

std::string encode_otlp_protobuf(std::span<const SpanData> spans, const Resource& resource,
                                 const InstrumentationScope& scope);
// The same into `out` (replacing its contents, reusing its capacity).
void encode_otlp_protobuf(std::span<const SpanData> spans, const Resource& resource,
                          const InstrumentationScope& scope, std::string& out);

}  // namespace micro::trace::sdk
