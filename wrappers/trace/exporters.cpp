// wrappers/trace — exporter settings (plugin options and OTEL_EXPORTER_OTLP_*), and the
// console, file and none exporters; make_exporter picks one.
//
// Precedence, per setting: explicit plugin option > per-signal environment variable
// (OTEL_EXPORTER_OTLP_TRACES_*) > generic one (OTEL_EXPORTER_OTLP_*) > default. Header lists
// merge key by key in that same order.
#include "exporters.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>

#include <micro/error.hpp>
#include <micro/log.hpp>

#include "otlp_grpc.hpp"
#include "otlp_http.hpp"
#include "otlp_json.hpp"
#include "waterfall.hpp"

namespace micro::trace::sdk {

namespace {

[[noreturn]] void bad_setting(const std::string& detail) {
  throw Exception(Error("micro.trace", ErrorCode::bad_request, "trace exporter: " + detail));
}

std::optional<std::string> environment(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

std::string percent_decode(std::string_view text, const std::string& source) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    if (i + 2 >= text.size()) {
      bad_setting(source + ": bad percent-encoding in \"" + std::string(text) + "\"");
    }
    int high = hex(text[i + 1]), low = hex(text[i + 2]);
    if (high < 0 || low < 0) {
      bad_setting(source + ": bad percent-encoding in \"" + std::string(text) + "\"");
    }
    out.push_back(static_cast<char>(high << 4 | low));
    i += 2;
  }
  return out;
}

// "k=v,k2=v2" (the OTel spec's W3C-baggage-like list), values percent-decoded, merged
// into `headers` (later lists override earlier keys).
void merge_headers(std::string_view list, const std::string& source,
                   std::map<std::string, std::string>& headers) {
  while (!list.empty()) {
    auto comma = list.find(',');
    std::string_view item = trim(list.substr(0, comma));
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
    if (item.empty()) continue;
    auto equals = item.find('=');
    if (equals == std::string_view::npos || trim(item.substr(0, equals)).empty()) {
      bad_setting(source + ": malformed header \"" + std::string(item) + "\" (expected key=value)");
    }
    std::string key = percent_decode(trim(item.substr(0, equals)), source);
    std::string value = percent_decode(trim(item.substr(equals + 1)), source);
    // A token for the name; no control characters anywhere (they would split the request).
    for (char c : key) {
      if (c <= ' ' || c == ':' || c == '(' || c == ')' || c == '"' || c == '/' || c == '\x7f') {
        bad_setting(source + ": header name \"" + key + "\" has a character not allowed there");
      }
    }
    for (char c : value) {
      if ((static_cast<unsigned char>(c) < ' ' && c != '\t') || c == '\x7f') {
        bad_setting(source + ": header \"" + key + "\" has a control character in its value");
      }
    }
    headers[key] = value;
  }
}

std::chrono::milliseconds timeout_milliseconds(const std::string& text, const std::string& source) {
  bool digits = !text.empty() && text.size() <= 12 &&
                text.find_first_not_of("0123456789") == std::string::npos;
  if (!digits || std::stoll(text) <= 0) {
    bad_setting(source + ": \"" + text + "\" is not a positive number of milliseconds");
  }
  return std::chrono::milliseconds(std::stoll(text));
}

std::string checked_protocol(const std::string& value, const std::string& source) {
  if (value == "http/protobuf" || value == "http/json" || value == "grpc") return value;
  bad_setting(source + ": unknown protocol \"" + value +
              "\" (expected http/protobuf, http/json or grpc)");
}

std::string checked_compression(const std::string& value, const std::string& source) {
  if (value == "gzip" || value == "none") return value;
  bad_setting(source + ": unknown compression \"" + value + "\" (expected gzip or none)");
}

// The generic endpoint is a base URL: "v1/traces" is appended after exactly one slash.
std::string with_traces_path(std::string base) {
  if (base.empty() || base.back() != '/') base.push_back('/');
  return base + "v1/traces";
}

bool has_path(std::string_view url) {
  auto scheme = url.find("://");
  if (scheme == std::string_view::npos) return false;
  auto slash = url.find('/', scheme + 3);
  return slash != std::string_view::npos && slash + 1 < url.size();
}

// Console and file exporters build a batch's text first and write it in one call, so other
// writers of the same stream interleave between batches rather than mid-line.
class ConsoleExporter final : public SpanExporter {
 public:
  ConsoleExporter(std::ostream& out, std::shared_ptr<ExporterStatistics> statistics)
      : out_(out), statistics_(std::move(statistics)) {}
  ExportResult export_spans(std::span<const SpanData> spans) override {
    std::string text;
    for (const auto& span : spans) text += format_console_line(span) + "\n";
    out_ << text << std::flush;
    statistics_->exported += spans.size();
    return ExportResult::success;
  }
  void shutdown(std::chrono::milliseconds) override { out_.flush(); }

 private:
  std::ostream& out_;
  std::shared_ptr<ExporterStatistics> statistics_;
};

class FileExporter final : public SpanExporter {
 public:
  FileExporter(const std::string& path, Resource resource, InstrumentationScope scope,
               std::shared_ptr<ExporterStatistics> statistics)
      : path_(path),
        out_(path, std::ios::app | std::ios::binary),
        resource_(std::move(resource)),
        scope_(std::move(scope)),
        statistics_(std::move(statistics)) {
    if (!out_) bad_setting("file \"" + path + "\" cannot be opened for appending");
  }
  ExportResult export_spans(std::span<const SpanData> spans) override {
    if (spans.empty()) return ExportResult::success;
    errno = 0;
    out_ << encode_otlp_json(spans, resource_, scope_) << '\n' << std::flush;
    if (!out_) {
      const int cause = errno;
      ++statistics_->failed_exports;
      statistics_->dropped_on_failure += spans.size();
      out_.clear();
      // One line when writes start failing (a full disk, a removed mount) and one when they
      // work again, as the OTLP exporter does; failures in between are only counted.
      if (!failing_) {
        failing_ = true;
        micro::log::warn("trace", "writing spans to file \"" + path_ + "\" failed (" +
                                      (cause ? std::strerror(cause) : "write error") +
                                      "); dropped " + std::to_string(spans.size()) +
                                      " spans, further failures are counted silently");
      }
      return ExportResult::failure;
    }
    if (failing_) {
      failing_ = false;
      micro::log::info("trace", "writing spans to file \"" + path_ + "\" works again");
    }
    statistics_->exported += spans.size();
    return ExportResult::success;
  }
  void shutdown(std::chrono::milliseconds) override { out_.flush(); }

 private:
  std::string path_;
  std::ofstream out_;
  Resource resource_;
  InstrumentationScope scope_;
  std::shared_ptr<ExporterStatistics> statistics_;
  bool failing_ = false;  // the export worker's only
};

class NoneExporter final : public SpanExporter {
 public:
  ExportResult export_spans(std::span<const SpanData>) override { return ExportResult::success; }
  void shutdown(std::chrono::milliseconds) override {}
};

// The TLS files: option > per-signal variable > generic variable (the OTel spec's names); each
// remembers where it came from, for messages.
template <class Option>
void read_tls_files(Option& option, micro::http::TlsOptions& tls) {
  auto pick = [&](const char* option_name, const char* per_signal, const char* generic,
                  std::string& path, std::string& name) {
    if (auto value = option(option_name)) {
      path = *value;
      name = std::string(option_name) + " option";
    } else if (auto specific = environment(per_signal)) {
      path = *specific;
      name = per_signal;
    } else if (auto common = environment(generic)) {
      path = *common;
      name = generic;
    }
  };
  pick("tls_ca", "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE",
       tls.ca_file, tls.ca_name);
  pick("tls_cert", "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
       "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", tls.cert_file, tls.cert_name);
  pick("tls_key", "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_KEY",
       tls.key_file, tls.key_name);
}

}  // namespace

ExporterSettings ExporterSettings::from(const PluginArguments& arguments) {
  ExporterSettings settings;
  auto option = [&](const char* name) -> std::optional<std::string> {
    if (!arguments.has(name)) return std::nullopt;
    return arguments.get_string(name);
  };

  if (auto kind = option("exporter")) {
    settings.kind = *kind;
  } else if (auto from_environment = environment("OTEL_TRACES_EXPORTER")) {
    settings.kind = *from_environment;
  }
  if (settings.kind != "otlp" && settings.kind != "console" && settings.kind != "file" &&
      settings.kind != "none") {
    bad_setting("unknown exporter \"" + settings.kind +
                "\" (expected otlp, console, file or none)");
  }

  // The protocol first: over gRPC the endpoint is the collector's address as given (default
  // port 4317), with no "v1/traces" path.
  if (auto protocol = option("protocol")) {
    settings.protocol = checked_protocol(*protocol, "protocol option");
  } else if (auto per_signal = environment("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")) {
    settings.protocol = checked_protocol(*per_signal, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL");
  } else if (auto generic = environment("OTEL_EXPORTER_OTLP_PROTOCOL")) {
    settings.protocol = checked_protocol(*generic, "OTEL_EXPORTER_OTLP_PROTOCOL");
  }

  const bool grpc = settings.protocol == "grpc";
  if (grpc) settings.endpoint = "http://localhost:4317";
  if (auto endpoint = option("endpoint")) {
    // A bare "http://host:4318" means the collector; a URL with a path is used as is.
    bool base_only = endpoint->find("://") != std::string::npos && !has_path(*endpoint);
    settings.endpoint = base_only && !grpc ? with_traces_path(*endpoint) : *endpoint;
  } else if (auto per_signal = environment("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
    settings.endpoint = *per_signal;
  } else if (auto generic = environment("OTEL_EXPORTER_OTLP_ENDPOINT")) {
    settings.endpoint = grpc ? *generic : with_traces_path(*generic);
  }

  if (auto generic = environment("OTEL_EXPORTER_OTLP_HEADERS")) {
    merge_headers(*generic, "OTEL_EXPORTER_OTLP_HEADERS", settings.headers);
  }
  if (auto per_signal = environment("OTEL_EXPORTER_OTLP_TRACES_HEADERS")) {
    merge_headers(*per_signal, "OTEL_EXPORTER_OTLP_TRACES_HEADERS", settings.headers);
  }
  if (auto headers = option("headers")) merge_headers(*headers, "headers option", settings.headers);

  if (auto timeout = option("timeout")) {
    auto parsed = parse_duration(*timeout);
    if (!parsed || parsed->count() <= 0) {
      bad_setting("timeout option: \"" + *timeout + "\" is not a positive duration");
    }
    settings.timeout = *parsed;
  } else if (auto per_signal = environment("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")) {
    settings.timeout = timeout_milliseconds(*per_signal, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT");
  } else if (auto generic = environment("OTEL_EXPORTER_OTLP_TIMEOUT")) {
    settings.timeout = timeout_milliseconds(*generic, "OTEL_EXPORTER_OTLP_TIMEOUT");
  }

  if (auto compression = option("compression")) {
    settings.compression = checked_compression(*compression, "compression option");
  } else if (auto per_signal = environment("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION")) {
    settings.compression =
        checked_compression(*per_signal, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION");
  } else if (auto generic = environment("OTEL_EXPORTER_OTLP_COMPRESSION")) {
    settings.compression = checked_compression(*generic, "OTEL_EXPORTER_OTLP_COMPRESSION");
  }

  if (auto file = option("file")) settings.file_path = *file;
  if (arguments.has("max_attempts")) {
    auto attempts = arguments.get_int("max_attempts");
    if (attempts < 1 || attempts > 100) bad_setting("max_attempts must be between 1 and 100");
    settings.max_attempts = static_cast<int>(attempts);
  }

  if (settings.kind == "file" && settings.file_path.empty()) {
    bad_setting("exporter=file needs the file option (the path to append OTLP JSON lines to)");
  }
  read_tls_files(option, settings.tls);
  // Fail at load, not at the first export.
  if (settings.kind == "otlp" && parse_endpoint(settings.endpoint).https) {
    make_exporter_tls(settings);
  }
  return settings;
}

std::unique_ptr<SpanExporter> make_exporter(const ExporterSettings& settings,
                                            const Resource& resource,
                                            const InstrumentationScope& scope,
                                            std::shared_ptr<ExporterStatistics> statistics) {
  if (!statistics) statistics = std::make_shared<ExporterStatistics>();
  if (settings.kind == "none") return std::make_unique<NoneExporter>();
  if (settings.kind == "console") {
    // file=stdout sends the lines to standard output; stderr otherwise, out of the
    // program's own output.
    return std::make_unique<ConsoleExporter>(settings.file_path == "stdout" ? std::cout : std::cerr,
                                             std::move(statistics));
  }
  if (settings.kind == "file") {
    return std::make_unique<FileExporter>(settings.file_path, resource, scope,
                                          std::move(statistics));
  }
  if (settings.protocol == "grpc")
    return make_otlp_grpc_exporter(settings, resource, scope, std::move(statistics));
  return make_otlp_http_exporter(settings, resource, scope, std::move(statistics));
}

}  // namespace micro::trace::sdk
