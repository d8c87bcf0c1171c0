// wrappers/trace — the Resource every exported span carries: service.name and
// service.version, host.name, process.pid, telemetry.sdk.*, plus OTEL_RESOURCE_ATTRIBUTES.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "span_data.hpp"

namespace micro::trace::sdk {

inline constexpr const char* sdk_name = "micro-cpp";
#ifdef MICRO_VERSION
inline constexpr const char* sdk_version = MICRO_VERSION;
#else
inline constexpr const char* sdk_version = "0.0.0";
#endif

// Parses OTEL_RESOURCE_ATTRIBUTES ("k=v,k2=v%2C2": W3C-baggage-like, values percent-decoded,
// whitespace around keys and values trimmed). A malformed entry (no '=', empty key, bad
// percent escape) is skipped and described in `warnings`; the others are kept.
std::vector<Attribute> parse_resource_attributes(std::string_view text,
                                                 std::vector<std::string>* warnings = nullptr);

// Builds the resource. service.name: `service_name` if not empty, else OTEL_SERVICE_NAME,
// else service.name from OTEL_RESOURCE_ATTRIBUTES, else "unknown_service:<executable>".
// Warnings about OTEL_RESOURCE_ATTRIBUTES go to stderr.
Resource make_resource(std::string_view service_name, std::string_view service_version);

// The value of a string attribute, or nullptr.
const std::string* find_attribute(const Resource& resource, std::string_view key) noexcept;

}  // namespace micro::trace::sdk
