// wrappers/trace — the Resource: detected attributes (host, process, SDK) and the ones the
// environment gives (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES).
#include "resource.hpp"

#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

#include <micro/log.hpp>

namespace micro::trace::sdk {

namespace {

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

int hex_value(char digit) {
  if (digit >= '0' && digit <= '9') return digit - '0';
  if (digit >= 'a' && digit <= 'f') return digit - 'a' + 10;
  if (digit >= 'A' && digit <= 'F') return digit - 'A' + 10;
  return -1;
}

// Percent-decodes; false on a '%' not followed by two hex digits.
bool percent_decode(std::string_view text, std::string& out) {
  out.clear();
  out.reserve(text.size());
  for (std::size_t index = 0; index < text.size(); ++index) {
    if (text[index] != '%') {
      out += text[index];
      continue;
    }
    if (index + 2 >= text.size()) return false;
    int high = hex_value(text[index + 1]), low = hex_value(text[index + 2]);
    if (high < 0 || low < 0) return false;
    out += static_cast<char>(high * 16 + low);
    index += 2;
  }
  return true;
}

void set_attribute(std::vector<Attribute>& attributes, std::string key, AttributeValue value) {
  for (auto& [name, existing] : attributes)
    if (name == key) {
      existing = std::move(value);
      return;
    }
  attributes.emplace_back(std::move(key), std::move(value));
}

std::string executable_name() {
  std::error_code error;
  auto path = std::filesystem::read_symlink("/proc/self/exe", error);
  return error ? std::string() : path.filename().string();
}

}  // namespace

std::vector<Attribute> parse_resource_attributes(std::string_view text,
                                                 std::vector<std::string>* warnings) {
  std::vector<Attribute> attributes;
  std::size_t number = 0;
  while (!text.empty()) {
    auto end = text.find(',');
    std::string_view item = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    ++number;
    if (trim(item).empty()) continue;
    auto warn = [&](const char* what) {
      if (warnings != nullptr)
        warnings->push_back("OTEL_RESOURCE_ATTRIBUTES entry " + std::to_string(number) + " \"" +
                            std::string(item) + "\" ignored: " + what);
    };
    auto equals = item.find('=');
    if (equals == std::string_view::npos) {
      warn("expected key=value");
      continue;
    }
    std::string key, value;
    if (!percent_decode(trim(item.substr(0, equals)), key) ||
        !percent_decode(trim(item.substr(equals + 1)), value)) {
      warn("bad percent-encoding");
      continue;
    }
    if (key.empty()) {
      warn("empty key");
      continue;
    }
    set_attribute(attributes, std::move(key), std::move(value));
  }
  return attributes;
}

const std::string* find_attribute(const Resource& resource, std::string_view key) noexcept {
  for (const auto& [name, value] : resource.attributes)
    if (name == key) return std::get_if<std::string>(&value);
  return nullptr;
}

Resource make_resource(std::string_view service_name, std::string_view service_version) {
  Resource resource;
  auto& attributes = resource.attributes;

  // Lowest precedence first: OTEL_RESOURCE_ATTRIBUTES, then what is detected, then the
  // service name from the service or OTEL_SERVICE_NAME.
  if (const char* text = std::getenv("OTEL_RESOURCE_ATTRIBUTES")) {
    std::vector<std::string> warnings;
    attributes = parse_resource_attributes(text, &warnings);
    for (const auto& warning : warnings) micro::log::warn("trace", warning);
  }

  char host[HOST_NAME_MAX + 1] = {};
  if (gethostname(host, sizeof host - 1) == 0 && host[0] != '\0')
    set_attribute(attributes, "host.name", std::string(host));
  set_attribute(attributes, "process.pid", static_cast<std::int64_t>(getpid()));
  set_attribute(attributes, "telemetry.sdk.name", std::string(sdk_name));
  set_attribute(attributes, "telemetry.sdk.language", std::string("cpp"));
  set_attribute(attributes, "telemetry.sdk.version", std::string(sdk_version));

  if (!service_version.empty())
    set_attribute(attributes, "service.version", std::string(service_version));

  const char* environment_name = std::getenv("OTEL_SERVICE_NAME");
  if (!service_name.empty()) {
    set_attribute(attributes, "service.name", std::string(service_name));
  } else if (environment_name != nullptr && *environment_name != '\0') {
    set_attribute(attributes, "service.name", std::string(environment_name));
  } else if (find_attribute(resource, "service.name") == nullptr) {
    // The spec's fallback: "unknown_service:" and the executable's name when known.
    std::string executable = executable_name();
    set_attribute(
        attributes, "service.name",
        executable.empty() ? std::string("unknown_service") : "unknown_service:" + executable);
  }
  return resource;
}

}  // namespace micro::trace::sdk
