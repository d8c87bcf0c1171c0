// wrappers/trace — the OTLP/HTTP exporter: encoded batches POSTed with libmicro's HTTP client
// (<micro/http_client.hpp>: kept-alive connections, http or https), gzip, and the retry policy,
// which is OTLP's and stays here (429/502/503/504 and connection failures, exponential backoff
// with jitter, Retry-After honoured, bounded by the timeout).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <micro/http_client.hpp>

#include "exporters.hpp"

namespace micro::trace::sdk {

// The endpoint URL checked (http:// or https://); throws micro::Exception (400) "trace exporter:
// endpoint \"…\": <what is wrong>".
micro::http::Url parse_endpoint(std::string_view url);

// The TLS context for an https endpoint, from the tls_* settings; throws micro::Exception (400)
// naming the file that cannot be used.
std::shared_ptr<const micro::http::TlsContext> make_exporter_tls(const ExporterSettings& settings);

// How long a Retry-After value asks to wait: delay-seconds, or an HTTP-date relative to
// `now`. nullopt when malformed; a date in the past is zero.
std::optional<std::chrono::milliseconds> parse_retry_after(
    std::string_view value, std::chrono::system_clock::time_point now);

std::unique_ptr<SpanExporter> make_otlp_http_exporter(
    const ExporterSettings& settings, const Resource& resource, const InstrumentationScope& scope,
    std::shared_ptr<ExporterStatistics> statistics);

}  // namespace micro::trace::sdk
