// micro/protobuf.hpp — protobuf messages as typed requests, responses, stream messages and
// publishes.
//
// Include it (and link libprotobuf) to write handlers and calls with protoc-generated types:
//
//   server.handle("Greeter.Hello", [](micro::Context&, const shop::HelloRequest& request) {
//     shop::HelloReply reply;
//     reply.set_message("Hello " + request.name());
//     return reply;
//   });
//
// A message travels in the content type of the call, as Go-Micro's proto codecs do:
//   - application/protobuf (also application/x-protobuf, application/proto,
//     application/grpc, application/grpc+proto, application/octet-stream): the binary
//     encoding, what every gRPC peer sends; answers say application/protobuf;
//   - application/json: protobuf's canonical JSON mapping (lowerCamelCase keys, proto names
//     accepted too, int64 as strings, enums by name, zero values printed), so curl and
//     `micro api` callers reach protobuf handlers unchanged; fields the message does not
//     have are refused;
//   - application/msgpack and application/cbor: that JSON mapping in those codecs.
// Bytes that are not the message end the call with 400 naming the endpoint and the type.
// schema_of<M>() describes a message from its descriptor: fields by their JSON names,
// repeated fields as arrays, maps as objects, enums as strings; the endpoint's metadata
// names the messages ("protobuf.request", "protobuf.response": their full names).
//
// Header-only: libmicro itself does not depend on protobuf.
#pragma once

#include <climits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>

#include <micro/codec.hpp>
#include <micro/schema.hpp>

namespace micro {

inline constexpr std::string_view protobuf_content_type = "application/protobuf";

namespace detail {

// The content type without parameters, lower case.
inline std::string bare_content_type(std::string_view type) {
  type = type.substr(0, type.find(';'));
  while (!type.empty() && (type.back() == ' ' || type.back() == '\t')) type.remove_suffix(1);
  std::string out(type);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

// Whether a message in `type` is protobuf's binary encoding.
inline bool is_protobuf_binary(std::string_view type) {
  const std::string bare = bare_content_type(type);
  return bare == "application/protobuf" || bare == "application/x-protobuf" ||
         bare == "application/proto" || bare == "application/grpc" ||
         bare == "application/grpc+proto" || bare == "application/octet-stream";
}

inline std::string protobuf_to_json(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  std::string json;
  auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok())
    throw std::runtime_error("cannot write " + message.GetDescriptor()->full_name() +
                             " as JSON: " + status.ToString());
  return json;
}

inline void protobuf_from_json(std::string_view json, std::string_view type,
                               google::protobuf::Message& message) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), &message, options);
  if (!status.ok())
    throw std::invalid_argument(std::string(type) + " is not a valid " +
                                message.GetDescriptor()->full_name() + ": " + status.ToString());
}

inline Value protobuf_message_schema(const google::protobuf::Descriptor* descriptor,
                                     std::size_t depth);

// One value of a field (an element, for repeated fields and maps).
inline Value protobuf_single_schema(const google::protobuf::FieldDescriptor* field,
                                    std::size_t depth) {
  using Field = google::protobuf::FieldDescriptor;
  switch (field->cpp_type()) {
    case Field::CPPTYPE_INT32:
      return Value{"int32", "integer", {}};
    case Field::CPPTYPE_INT64:
      return Value{"int64", "integer", {}};
    case Field::CPPTYPE_UINT32:
      return Value{"uint32", "integer", {}};
    case Field::CPPTYPE_UINT64:
      return Value{"uint64", "integer", {}};
    case Field::CPPTYPE_FLOAT:
      return Value{"float32", "number", {}};
    case Field::CPPTYPE_DOUBLE:
      return Value{"float64", "number", {}};
    case Field::CPPTYPE_BOOL:
      return Value{"bool", "boolean", {}};
    case Field::CPPTYPE_ENUM:
      return Value{field->enum_type()->name(), "string", {}};
    case Field::CPPTYPE_STRING:
      return Value{field->type() == Field::TYPE_BYTES ? "bytes" : "string", "string", {}};
    case Field::CPPTYPE_MESSAGE:
      return protobuf_message_schema(field->message_type(), depth);
  }
  return Value{field->type_name(), "", {}};
}

inline Value protobuf_field_schema(const google::protobuf::FieldDescriptor* field,
                                   std::size_t depth) {
  if (field->is_map()) {
    Value element =
        protobuf_single_schema(field->message_type()->map_value(), depth > 0 ? depth - 1 : 0);
    Value value{"map[string]" + element.name, "object", {}};
    if (depth > 0) {
      element.name = "*";
      value.values.push_back(std::move(element));
    }
    return value;
  }
  if (field->is_repeated()) {
    Value element = protobuf_single_schema(field, depth > 0 ? depth - 1 : 0);
    Value value{"[]" + element.name, "array", {}};
    if (depth > 0) value.values.push_back(std::move(element));
    return value;
  }
  return protobuf_single_schema(field, depth);
}

// The well-known types have JSON forms of their own (RFC 3339 text, "1.5s", paths, the
// wrapped value, any JSON).
inline bool protobuf_well_known_schema(const google::protobuf::Descriptor* descriptor, Value& out) {
  const std::string& name = descriptor->full_name();
  if (name.rfind("google.protobuf.", 0) != 0) return false;
  const std::string& short_name = descriptor->name();
  if (short_name == "Timestamp" || short_name == "Duration" || short_name == "FieldMask") {
    out = Value{short_name, "string", {}};
  } else if (short_name == "Struct") {
    out = Value{short_name, "object", {}};
  } else if (short_name == "ListValue") {
    out = Value{short_name, "array", {}};
  } else if (short_name == "Value" || short_name == "Any") {
    out = Value{short_name, short_name == "Any" ? "object" : "", {}};
  } else if (short_name.size() > 5 && short_name.ends_with("Value") &&
             descriptor->field_count() == 1) {
    out = protobuf_single_schema(descriptor->field(0), 0);  // Int32Value: an int32
  } else {
    return false;
  }
  return true;
}

inline Value protobuf_message_schema(const google::protobuf::Descriptor* descriptor,
                                     std::size_t depth) {
  Value object;
  if (protobuf_well_known_schema(descriptor, object)) return object;
  object = Value{descriptor->name(), "object", {}};
  if (depth == 0) return object;
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = descriptor->field(i);
    Value value = protobuf_field_schema(field, depth - 1);
    value.name = field->json_name();
    object.values.push_back(std::move(value));
  }
  return object;
}

template <class T>
inline constexpr bool is_protobuf_message_v =
    std::is_base_of_v<google::protobuf::Message, T> && !std::is_abstract_v<T>;

}  // namespace detail

// Protobuf messages travel as protobuf or its JSON mapping, by content type.
template <class T>
struct message_codec<T, std::enable_if_t<detail::is_protobuf_message_v<T>>> {
  static std::string content_type(std::string_view requested) {
    requested = effective_content_type(requested);
    if (detail::is_protobuf_binary(requested)) return std::string(protobuf_content_type);
    return std::string(codec_for(requested).content_type());
  }

  static void encode(std::string_view type, const T& value, std::string& out) {
    type = effective_content_type(type);
    if (detail::is_protobuf_binary(type)) {
      // Partial: proto2 required fields are the handler's business, as in gRPC.
      if (!value.AppendPartialToString(&out))
        throw std::runtime_error("cannot serialize " + value.GetDescriptor()->full_name());
      return;
    }
    const Codec& codec = codec_for(type);
    std::string json = detail::protobuf_to_json(value);
    if (codec.content_type() == json_content_type)
      out += json;
    else
      codec.encode(nlohmann::json::parse(json), out);
  }

  // The endpoint's metadata names its messages ("protobuf.request": "shop.Order"), so
  // reflection (<micro/grpc_reflection.hpp>) and tools find their descriptors.
  static void annotate(MetadataMap& metadata, std::string_view role) {
    metadata["protobuf." + std::string(role)] = T::descriptor()->full_name();
  }

  static T decode(std::string_view type, std::string_view bytes) {
    type = effective_content_type(type);
    T message;
    if (detail::is_protobuf_binary(type)) {
      if (bytes.size() > static_cast<std::size_t>(INT_MAX) ||
          !message.ParsePartialFromArray(bytes.data(), static_cast<int>(bytes.size())))
        throw std::invalid_argument(std::to_string(bytes.size()) + " bytes of " +
                                    detail::bare_content_type(type) + " are not a valid " +
                                    message.GetDescriptor()->full_name());
      return message;
    }
    const Codec& codec = codec_for(type);
    if (codec.content_type() == json_content_type)
      detail::protobuf_from_json(bytes, type, message);
    else
      detail::protobuf_from_json(codec.decode(bytes).dump(), codec.content_type(), message);
    return message;
  }
};

// A message's schema from its descriptor.
template <class T>
struct schema_traits<T, std::enable_if_t<detail::is_protobuf_message_v<T>>> {
  static Value describe(std::size_t depth) {
    return detail::protobuf_message_schema(T::descriptor(), depth);
  }
};

}  // namespace micro
