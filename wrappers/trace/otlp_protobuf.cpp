// wrappers/trace — hand-written protobuf encoding of ExportTraceServiceRequest. Field numbers
// follow opentelemetry/proto/{collector/trace,trace,common,resource}/v1 exactly.
#include "otlp_protobuf.hpp"

#include <bit>
#include <cstring>
#include <type_traits>

#include "otlp_json.hpp"  // otlp_span_flags

namespace micro::trace::sdk {

namespace {

enum WireType : std::uint32_t { varint = 0, fixed64 = 1, length_delimited = 2, fixed32 = 5 };

// Appends protobuf fields to one buffer. A nested message is written in place after a
// one-byte length placeholder, which is widened afterwards only when the message reached
// 128 bytes; so no temporary buffer per level, and small messages (attributes) never move.
class Writer {
 public:
  explicit Writer(std::string& buffer) : buffer_(buffer) {}

  void tag(std::uint32_t field, WireType type) { raw_varint(std::uint64_t{field} << 3 | type); }

  void varint_field(std::uint32_t field, std::uint64_t value) {
    tag(field, varint);
    raw_varint(value);
  }
  void fixed64_field(std::uint32_t field, std::uint64_t value) {
    tag(field, fixed64);
    for (int i = 0; i < 8; ++i) buffer_.push_back(static_cast<char>(value >> (8 * i) & 0xff));
  }
  void fixed32_field(std::uint32_t field, std::uint32_t value) {
    tag(field, fixed32);
    for (int i = 0; i < 4; ++i) buffer_.push_back(static_cast<char>(value >> (8 * i) & 0xff));
  }
  void double_field(std::uint32_t field, double value) {
    fixed64_field(field, std::bit_cast<std::uint64_t>(value));
  }
  void bytes_field(std::uint32_t field, std::string_view bytes) {
    tag(field, length_delimited);
    raw_varint(bytes.size());
    buffer_.append(bytes);
  }
  template <std::size_t N>
  void bytes_field(std::uint32_t field, const std::array<std::uint8_t, N>& bytes) {
    bytes_field(field, std::string_view(reinterpret_cast<const char*>(bytes.data()), N));
  }
  // proto3 leaves default-valued scalars out.
  void string_if_set(std::uint32_t field, std::string_view text) {
    if (!text.empty()) bytes_field(field, text);
  }
  void uint32_if_set(std::uint32_t field, std::uint32_t value) {
    if (value != 0) varint_field(field, value);
  }

  template <class Body>
  void message(std::uint32_t field, Body&& body) {
    tag(field, length_delimited);
    std::size_t placeholder = buffer_.size();
    buffer_.push_back('\0');
    body();
    std::size_t length = buffer_.size() - placeholder - 1;
    if (length < 0x80) {
      buffer_[placeholder] = static_cast<char>(length);
      return;
    }
    char prefix[10];
    std::size_t prefix_size = encode_varint(length, prefix);
    buffer_.replace(placeholder, 1, prefix, prefix_size);
  }

 private:
  static std::size_t encode_varint(std::uint64_t value, char* out) {
    std::size_t size = 0;
    while (value >= 0x80) {
      out[size++] = static_cast<char>((value & 0x7f) | 0x80);
      value >>= 7;
    }
    out[size++] = static_cast<char>(value);
    return size;
  }
  void raw_varint(std::uint64_t value) {
    char bytes[10];
    buffer_.append(bytes, encode_varint(value, bytes));
  }

  std::string& buffer_;
};

std::uint64_t unix_nanos(std::chrono::system_clock::time_point time) {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(time.time_since_epoch()).count());
}

// common.v1.AnyValue: string 1, bool 2, int 3, double 4, array 5 (ArrayValue.values = 1).
// A oneof member is written even when it holds its default value.
void scalar_any_value(Writer& writer, bool value) {
  writer.varint_field(2, value ? 1 : 0);
}
void scalar_any_value(Writer& writer, std::int64_t value) {
  writer.varint_field(3, static_cast<std::uint64_t>(value));  // int64: two's complement varint
}
void scalar_any_value(Writer& writer, double value) {
  writer.double_field(4, value);
}
void scalar_any_value(Writer& writer, const std::string& value) {
  writer.bytes_field(1, value);
}

void any_value(Writer& writer, const AttributeValue& value) {
  std::visit(
      [&writer](const auto& held) {
        using Held = std::decay_t<decltype(held)>;
        if constexpr (std::is_same_v<Held, bool> || std::is_same_v<Held, std::int64_t> ||
                      std::is_same_v<Held, double> || std::is_same_v<Held, std::string>) {
          scalar_any_value(writer, held);
        } else {
          writer.message(5, [&] {
            for (const auto& element : held) {
              writer.message(1,
                             [&] { scalar_any_value(writer, typename Held::value_type(element)); });
            }
          });
        }
      },
      value);
}

// common.v1.KeyValue: key 1, value 2.
void attributes(Writer& writer, std::uint32_t field, const std::vector<Attribute>& list) {
  for (const auto& [key, value] : list) {
    writer.message(field, [&] {
      writer.bytes_field(1, key);
      writer.message(2, [&] { any_value(writer, value); });
    });
  }
}

// trace.v1.Span.
void span_message(Writer& writer, const SpanData& span) {
  writer.bytes_field(1, span.context.trace_id.bytes);
  writer.bytes_field(2, span.context.span_id.bytes);
  writer.string_if_set(3, span.context.trace_state);
  bool has_parent = false;
  for (auto byte : span.parent_span_id.bytes) has_parent = has_parent || byte != 0;
  if (has_parent) writer.bytes_field(4, span.parent_span_id.bytes);
  writer.fixed32_field(16, otlp_span_flags(span.context.flags, has_parent && span.parent_remote));
  writer.string_if_set(5, span.name);
  writer.varint_field(6, static_cast<std::uint64_t>(span.kind));
  writer.fixed64_field(7, unix_nanos(span.start_time));
  writer.fixed64_field(8, unix_nanos(span.end_time));
  attributes(writer, 9, span.attributes);
  writer.uint32_if_set(10, span.dropped_attributes);
  for (const auto& event : span.events) {  // Span.Event: time 1, name 2, attributes 3, dropped 4
    writer.message(11, [&] {
      writer.fixed64_field(1, unix_nanos(event.time));
      writer.string_if_set(2, event.name);
      attributes(writer, 3, event.attributes);
      writer.uint32_if_set(4, event.dropped_attributes);
    });
  }
  writer.uint32_if_set(12, span.dropped_events);
  for (const auto& link : span.links) {
    // Span.Link: trace id 1, span id 2, trace state 3, attributes 4, dropped 5, flags 6
    writer.message(13, [&] {
      writer.bytes_field(1, link.context.trace_id.bytes);
      writer.bytes_field(2, link.context.span_id.bytes);
      writer.string_if_set(3, link.context.trace_state);
      attributes(writer, 4, link.attributes);
      writer.uint32_if_set(5, link.dropped_attributes);
      writer.fixed32_field(6, otlp_span_flags(link.context.flags, link.context.remote));
    });
  }
  writer.uint32_if_set(14, span.dropped_links);
  writer.message(15, [&] {  // Status: message 2, code 3
    writer.string_if_set(2, span.status_message);
    if (span.status != StatusCode::unset) writer.varint_field(3, static_cast<int>(span.status));
  });
}

}  // namespace

std::string encode_otlp_protobuf(std::span<const SpanData> spans, const Resource& resource,
                                 const InstrumentationScope& scope) {
  std::string out;
  encode_otlp_protobuf(spans, resource, scope, out);
  return out;
}

void encode_otlp_protobuf(std::span<const SpanData> spans, const Resource& resource,
                          const InstrumentationScope& scope, std::string& out) {
  out.clear();
  Writer writer(out);
  // ExportTraceServiceRequest.resource_spans = 1
  writer.message(1, [&] {
    // ResourceSpans: resource 1 (Resource.attributes = 1), scope_spans 2
    writer.message(1, [&] { attributes(writer, 1, resource.attributes); });
    writer.message(2, [&] {
      // ScopeSpans: scope 1 (InstrumentationScope: name 1, version 2), spans 2
      writer.message(1, [&] {
        writer.string_if_set(1, scope.name);
        writer.string_if_set(2, scope.version);
      });
      for (const auto& span : spans) writer.message(2, [&] { span_message(writer, span); });
    });
  });
}

}  // namespace micro::trace::sdk
