// wrappers/trace — OTLP/JSON encoding of spans (an ExportTraceServiceRequest), and reading it
// back (the file exporter's lines, for the waterfall view). Follows the OTLP JSON rules: ids
// as lowercase hex, enums as integers, lowerCamelCase keys, 64-bit integers as strings.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "span_data.hpp"

namespace micro::trace::sdk {

// Lowercase hex of raw bytes (ids), and back; nullopt unless exactly 2*size lowercase digits.
std::string bytes_to_hex(std::span<const std::uint8_t> bytes);
bool hex_to_bytes(std::string_view hex, std::span<std::uint8_t> out) noexcept;

// The OTLP "flags" field of a span or link: W3C trace flags in bits 0-7, bit 8 says bit 9
// is meaningful, bit 9 says the parent (or linked) context is remote.
std::uint32_t otlp_span_flags(std::uint8_t trace_flags, bool remote) noexcept;

// One ExportTraceServiceRequest as compact JSON (no newline).
std::string encode_otlp_json(std::span<const SpanData> spans, const Resource& resource,
                             const InstrumentationScope& scope);

// Reads an ExportTraceServiceRequest in OTLP JSON back into spans (every resource and scope
// flattened). Throws micro::Exception (400) saying what is malformed.
std::vector<SpanData> decode_otlp_json(std::string_view text);

}  // namespace micro::trace::sdk
