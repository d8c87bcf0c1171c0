// wrappers/trace — OTLP/JSON encoding and decoding of spans (see otlp_json.hpp).
#include "otlp_json.hpp"

#include <cmath>
#include <type_traits>

#include <nlohmann/json.hpp>

#include <micro/error.hpp>

namespace micro::trace::sdk {

namespace {

using Json = nlohmann::ordered_json;

constexpr char hex_digits[] = "0123456789abcdef";

std::uint64_t unix_nanos(std::chrono::system_clock::time_point time) {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(time.time_since_epoch()).count());
}

std::chrono::system_clock::time_point from_unix_nanos(std::uint64_t nanos) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::nanoseconds(static_cast<std::int64_t>(nanos))));
}

// Protobuf's JSON mapping spells non-finite doubles as strings.
Json double_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  return value;
}

Json scalar_any_value(bool value) {
  return Json{{"boolValue", value}};
}
Json scalar_any_value(std::int64_t value) {
  return Json{{"intValue", std::to_string(value)}};
}
Json scalar_any_value(double value) {
  return Json{{"doubleValue", double_value(value)}};
}
Json scalar_any_value(const std::string& value) {
  return Json{{"stringValue", value}};
}

Json any_value(const AttributeValue& value) {
  return std::visit(
      [](const auto& held) -> Json {
        using Held = std::decay_t<decltype(held)>;
        if constexpr (std::is_same_v<Held, bool> || std::is_same_v<Held, std::int64_t> ||
                      std::is_same_v<Held, double> || std::is_same_v<Held, std::string>) {
          return scalar_any_value(held);
        } else {
          Json values = Json::array();
          for (const auto& element : held) {
            // vector<bool> hands out proxies; name the element type explicitly.
            values.push_back(scalar_any_value(typename Held::value_type(element)));
          }
          return Json{{"arrayValue", Json{{"values", std::move(values)}}}};
        }
      },
      value);
}

Json attributes_json(const std::vector<Attribute>& attributes) {
  Json list = Json::array();
  for (const auto& [key, value] : attributes) {
    list.push_back(Json{{"key", key}, {"value", any_value(value)}});
  }
  return list;
}

Json span_json(const SpanData& span) {
  Json out;
  out["traceId"] = bytes_to_hex(span.context.trace_id.bytes);
  out["spanId"] = bytes_to_hex(span.context.span_id.bytes);
  if (!span.context.trace_state.empty()) out["traceState"] = span.context.trace_state;
  bool has_parent = false;
  for (auto byte : span.parent_span_id.bytes) has_parent = has_parent || byte != 0;
  if (has_parent) out["parentSpanId"] = bytes_to_hex(span.parent_span_id.bytes);
  out["flags"] = otlp_span_flags(span.context.flags, has_parent && span.parent_remote);
  out["name"] = span.name;
  out["kind"] = static_cast<int>(span.kind);
  out["startTimeUnixNano"] = std::to_string(unix_nanos(span.start_time));
  out["endTimeUnixNano"] = std::to_string(unix_nanos(span.end_time));
  if (!span.attributes.empty()) out["attributes"] = attributes_json(span.attributes);
  if (span.dropped_attributes != 0) out["droppedAttributesCount"] = span.dropped_attributes;
  if (!span.events.empty()) {
    Json events = Json::array();
    for (const auto& event : span.events) {
      Json item;
      item["timeUnixNano"] = std::to_string(unix_nanos(event.time));
      item["name"] = event.name;
      if (!event.attributes.empty()) item["attributes"] = attributes_json(event.attributes);
      if (event.dropped_attributes != 0) item["droppedAttributesCount"] = event.dropped_attributes;
      events.push_back(std::move(item));
    }
    out["events"] = std::move(events);
  }
  if (span.dropped_events != 0) out["droppedEventsCount"] = span.dropped_events;
  if (!span.links.empty()) {
    Json links = Json::array();
    for (const auto& link : span.links) {
      Json item;
      item["traceId"] = bytes_to_hex(link.context.trace_id.bytes);
      item["spanId"] = bytes_to_hex(link.context.span_id.bytes);
      if (!link.context.trace_state.empty()) item["traceState"] = link.context.trace_state;
      if (!link.attributes.empty()) item["attributes"] = attributes_json(link.attributes);
      if (link.dropped_attributes != 0) item["droppedAttributesCount"] = link.dropped_attributes;
      item["flags"] = otlp_span_flags(link.context.flags, link.context.remote);
      links.push_back(std::move(item));
    }
    out["links"] = std::move(links);
  }
  if (span.dropped_links != 0) out["droppedLinksCount"] = span.dropped_links;
  Json status = Json::object();
  if (!span.status_message.empty()) status["message"] = span.status_message;
  if (span.status != StatusCode::unset) status["code"] = static_cast<int>(span.status);
  out["status"] = std::move(status);
  return out;
}

// ---- decoding ----

[[noreturn]] void malformed(const std::string& what) {
  throw Exception(Error("micro.trace", ErrorCode::bad_request, "OTLP JSON: " + what));
}

const Json& member(const Json& object, const char* key, const std::string& where) {
  auto found = object.find(key);
  if (found == object.end()) malformed(where + " has no \"" + key + "\"");
  return *found;
}

std::string string_member(const Json& object, const char* key, const std::string& where) {
  auto found = object.find(key);
  if (found == object.end()) return {};
  if (!found->is_string()) malformed(where + "." + key + " is not a string");
  return found->get<std::string>();
}

// 64-bit integers arrive as strings (the spec) or, from lenient writers, as numbers.
std::uint64_t uint64_member(const Json& object, const char* key, const std::string& where) {
  auto found = object.find(key);
  if (found == object.end()) return 0;
  if (found->is_number_unsigned()) return found->get<std::uint64_t>();
  if (found->is_string()) {
    const auto& text = found->get_ref<const std::string&>();
    std::uint64_t value = 0;
    if (text.empty()) malformed(where + "." + key + " is empty");
    for (char c : text) {
      if (c < '0' || c > '9') malformed(where + "." + key + " is not an unsigned integer");
      value = value * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return value;
  }
  malformed(where + "." + key + " is not an integer");
}

std::int64_t int_value(const Json& value, const std::string& where) {
  if (value.is_number_integer()) return value.get<std::int64_t>();
  if (value.is_string()) {
    const auto& text = value.get_ref<const std::string&>();
    std::size_t used = 0;
    try {
      auto parsed = std::stoll(text, &used);
      if (used == text.size()) return parsed;
    } catch (const std::exception&) {
    }
  }
  malformed(where + ".intValue is not an integer");
}

double double_of(const Json& value, const std::string& where) {
  if (value.is_number()) return value.get<double>();
  if (value == "NaN") return std::nan("");
  if (value == "Infinity") return INFINITY;
  if (value == "-Infinity") return -INFINITY;
  malformed(where + ".doubleValue is not a number");
}

AttributeValue attribute_value(const Json& value, const std::string& where) {
  if (!value.is_object()) malformed(where + " is not an object");
  if (auto found = value.find("stringValue"); found != value.end() && found->is_string()) {
    return found->get<std::string>();
  }
  if (auto found = value.find("boolValue"); found != value.end() && found->is_boolean()) {
    return found->get<bool>();
  }
  if (auto found = value.find("intValue"); found != value.end()) return int_value(*found, where);
  if (auto found = value.find("doubleValue"); found != value.end()) {
    return double_of(*found, where);
  }
  if (auto found = value.find("arrayValue"); found != value.end()) {
    auto values = found->find("values");
    if (values == found->end() || !values->is_array() || values->empty()) {
      return std::vector<std::string>{};
    }
    const Json& first = values->front();
    // Arrays are homogeneous in the API; the first element says which kind.
    if (first.contains("boolValue")) {
      std::vector<bool> out;
      for (const auto& element : *values) out.push_back(element.value("boolValue", false));
      return out;
    }
    if (first.contains("intValue")) {
      std::vector<std::int64_t> out;
      for (const auto& element : *values) {
        out.push_back(int_value(member(element, "intValue", where), where));
      }
      return out;
    }
    if (first.contains("doubleValue")) {
      std::vector<double> out;
      for (const auto& element : *values) {
        out.push_back(double_of(member(element, "doubleValue", where), where));
      }
      return out;
    }
    std::vector<std::string> out;
    for (const auto& element : *values) out.push_back(element.value("stringValue", ""));
    return out;
  }
  // kvlist and bytes values have no counterpart in the API: keep them as their JSON text.
  return value.dump();
}

std::vector<Attribute> attributes_of(const Json& object, const std::string& where) {
  std::vector<Attribute> out;
  auto found = object.find("attributes");
  if (found == object.end()) return out;
  if (!found->is_array()) malformed(where + ".attributes is not an array");
  for (const auto& item : *found) {
    std::string key = string_member(item, "key", where + ".attributes");
    out.emplace_back(key, attribute_value(member(item, "value", where + ".attributes"),
                                          where + ".attributes[" + key + "]"));
  }
  return out;
}

template <std::size_t N>
void id_member(const Json& object, const char* key, const std::string& where,
               std::array<std::uint8_t, N>& out, bool required) {
  std::string text = string_member(object, key, where);
  if (text.empty() && !required) return;
  if (!hex_to_bytes(text, out)) {
    malformed(where + "." + key + " \"" + text + "\" is not " + std::to_string(2 * N) +
              " lowercase hex digits");
  }
}

std::uint32_t uint32_member(const Json& object, const char* key) {
  auto found = object.find(key);
  return found != object.end() && found->is_number_unsigned() ? found->get<std::uint32_t>() : 0;
}

SpanData span_of(const Json& item) {
  SpanData span;
  std::string where = "span";
  span.name = string_member(item, "name", where);
  if (!span.name.empty()) where = "span \"" + span.name + "\"";
  id_member(item, "traceId", where, span.context.trace_id.bytes, true);
  id_member(item, "spanId", where, span.context.span_id.bytes, true);
  id_member(item, "parentSpanId", where, span.parent_span_id.bytes, false);
  span.context.trace_state = string_member(item, "traceState", where);
  std::uint32_t flags = uint32_member(item, "flags");
  span.context.flags = static_cast<std::uint8_t>(flags & 0xff);
  span.parent_remote = (flags & 0x300) == 0x300;
  int kind = item.value("kind", 1);
  span.kind = kind >= 1 && kind <= 5 ? static_cast<SpanKind>(kind) : SpanKind::internal;
  span.start_time = from_unix_nanos(uint64_member(item, "startTimeUnixNano", where));
  span.end_time = from_unix_nanos(uint64_member(item, "endTimeUnixNano", where));
  span.attributes = attributes_of(item, where);
  span.dropped_attributes = uint32_member(item, "droppedAttributesCount");
  if (auto events = item.find("events"); events != item.end() && events->is_array()) {
    for (const auto& entry : *events) {
      Event event;
      event.name = string_member(entry, "name", where + ".events");
      event.time = from_unix_nanos(uint64_member(entry, "timeUnixNano", where + ".events"));
      event.attributes = attributes_of(entry, where + ".events");
      event.dropped_attributes = uint32_member(entry, "droppedAttributesCount");
      span.events.push_back(std::move(event));
    }
  }
  span.dropped_events = uint32_member(item, "droppedEventsCount");
  if (auto links = item.find("links"); links != item.end() && links->is_array()) {
    for (const auto& entry : *links) {
      LinkData link;
      id_member(entry, "traceId", where + ".links", link.context.trace_id.bytes, true);
      id_member(entry, "spanId", where + ".links", link.context.span_id.bytes, true);
      link.context.trace_state = string_member(entry, "traceState", where + ".links");
      std::uint32_t link_flags = uint32_member(entry, "flags");
      link.context.flags = static_cast<std::uint8_t>(link_flags & 0xff);
      link.context.remote = (link_flags & 0x300) == 0x300;
      link.attributes = attributes_of(entry, where + ".links");
      link.dropped_attributes = uint32_member(entry, "droppedAttributesCount");
      span.links.push_back(std::move(link));
    }
  }
  span.dropped_links = uint32_member(item, "droppedLinksCount");
  if (auto status = item.find("status"); status != item.end() && status->is_object()) {
    int code = status->value("code", 0);
    span.status = code >= 0 && code <= 2 ? static_cast<StatusCode>(code) : StatusCode::unset;
    span.status_message = string_member(*status, "message", where + ".status");
  }
  return span;
}

const Json& array_member(const Json& object, const char* key, const std::string& where) {
  const Json& found = member(object, key, where);
  if (!found.is_array()) malformed(where + "." + key + " is not an array");
  return found;
}

void decode_request(const Json& request, std::vector<SpanData>& out);

}  // namespace

std::string bytes_to_hex(std::span<const std::uint8_t> bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (auto byte : bytes) {
    out.push_back(hex_digits[byte >> 4]);
    out.push_back(hex_digits[byte & 0x0f]);
  }
  return out;
}

bool hex_to_bytes(std::string_view hex, std::span<std::uint8_t> out) noexcept {
  if (hex.size() != out.size() * 2) return false;
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < out.size(); ++i) {
    int high = digit(hex[2 * i]), low = digit(hex[2 * i + 1]);
    if (high < 0 || low < 0) return false;
    out[i] = static_cast<std::uint8_t>(high << 4 | low);
  }
  return true;
}

std::uint32_t otlp_span_flags(std::uint8_t trace_flags, bool remote) noexcept {
  return std::uint32_t{trace_flags} | 0x100u | (remote ? 0x200u : 0u);
}

std::string encode_otlp_json(std::span<const SpanData> spans, const Resource& resource,
                             const InstrumentationScope& scope) {
  Json spans_json = Json::array();
  for (const auto& span : spans) spans_json.push_back(span_json(span));
  Json scope_json = Json{{"name", scope.name}};
  if (!scope.version.empty()) scope_json["version"] = scope.version;
  Json resource_json = Json::object();
  if (!resource.attributes.empty())
    resource_json["attributes"] = attributes_json(resource.attributes);
  Json request = {
      {"resourceSpans",
       Json::array({Json{{"resource", std::move(resource_json)},
                         {"scopeSpans", Json::array({Json{{"scope", std::move(scope_json)},
                                                          {"spans", std::move(spans_json)}}})}}})}};
  // Attribute values may hold bytes that are not UTF-8; replace rather than throw.
  return request.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::vector<SpanData> decode_otlp_json(std::string_view text) {
  Json request = Json::parse(text, nullptr, false);
  if (request.is_discarded()) malformed("not valid JSON");
  if (!request.is_object()) malformed("not an object");
  std::vector<SpanData> out;
  try {
    decode_request(request, out);
  } catch (const nlohmann::json::exception& error) {  // a member of an unexpected type
    malformed(error.what());
  }
  return out;
}

namespace {

void decode_request(const Json& request, std::vector<SpanData>& out) {
  for (const auto& resource_spans : array_member(request, "resourceSpans", "request")) {
    auto scopes = resource_spans.find("scopeSpans");
    if (scopes == resource_spans.end()) continue;
    if (!scopes->is_array()) malformed("resourceSpans.scopeSpans is not an array");
    for (const auto& scope_spans : *scopes) {
      auto spans = scope_spans.find("spans");
      if (spans == scope_spans.end()) continue;
      if (!spans->is_array()) malformed("scopeSpans.spans is not an array");
      for (const auto& item : *spans) {
        if (!item.is_object()) malformed("a span is not an object");
        out.push_back(span_of(item));
      }
    }
  }
}

}  // namespace

}  // namespace micro::trace::sdk
