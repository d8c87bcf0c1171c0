// micro/grpc_reflection.hpp — gRPC server reflection for services whose handlers are typed with
// protoc-generated messages, so grpcurl, Postman, grpcui and Python/Go reflection clients can
// list and describe them without the .proto files.
//
//   micro::serve_grpc_reflection(service.server());   // before start(); transport=grpc
//
// Registers the bidirectional stream endpoint ServerReflection.ServerReflectionInfo, which the
// gRPC paths /grpc.reflection.v1.ServerReflection/ServerReflectionInfo and its v1alpha twin
// reach (the two revisions share their messages). It answers from the descriptors linked into
// the program (protobuf's generated pool):
//   - list_services: the proto services with a method served here — an endpoint Svc.Method
//     whose request message ("protobuf.request" in its metadata, <micro/protobuf.hpp>) lives
//     in a file declaring service Svc with method Method taking that message;
//   - file_by_filename, file_containing_symbol, file_containing_extension: the file and every
//     file it imports, serialized FileDescriptorProtos;
//   - all_extension_numbers_of_type.
// Unknown symbols and files are answered with an error_response (NOT_FOUND) and the stream
// goes on; bytes that are not a ServerReflectionRequest end the stream with 400.
//
// Header-only, as <micro/protobuf.hpp>: libmicro does not depend on libprotobuf.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/wire_format_lite.h>

#include <micro/error.hpp>
#include <micro/protobuf.hpp>
#include <micro/server.hpp>

namespace micro {

inline constexpr std::string_view grpc_reflection_endpoint =
    "ServerReflection.ServerReflectionInfo";

namespace detail::reflection {

using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedInputStream;
using google::protobuf::io::CodedOutputStream;
using google::protobuf::io::StringOutputStream;

// ServerReflectionRequest (reflection.proto): which question, and its argument.
struct Question {
  std::string host;
  int kind = 0;                // the oneof's field number: 3 file_by_filename … 7 list_services
  std::string text;            // filename, symbol, type name, or list_services' content
  std::string extension_type;  // file_containing_extension: containing_type
  std::int32_t extension_number = 0;
};

// Reads the ExtensionRequest {containing_type = 1; extension_number = 2;}.
inline bool read_extension_request(const std::string& bytes, Question& question) {
  CodedInputStream input(reinterpret_cast<const std::uint8_t*>(bytes.data()),
                         static_cast<int>(bytes.size()));
  while (std::uint32_t tag = input.ReadTag()) {
    int field = WireFormatLite::GetTagFieldNumber(tag);
    auto type = WireFormatLite::GetTagWireType(tag);
    if (field == 1 && type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      if (!WireFormatLite::ReadString(&input, &question.extension_type)) return false;
    } else if (field == 2 && type == WireFormatLite::WIRETYPE_VARINT) {
      std::uint32_t number = 0;
      if (!input.ReadVarint32(&number)) return false;
      question.extension_number = static_cast<std::int32_t>(number);
    } else if (!WireFormatLite::SkipField(&input, tag)) {
      return false;
    }
  }
  return input.ConsumedEntireMessage();
}

// Parses a ServerReflectionRequest; nullopt when the bytes are not one.
inline std::optional<Question> read_question(const std::string& bytes) {
  if (bytes.size() > static_cast<std::size_t>(INT32_MAX)) return std::nullopt;
  CodedInputStream input(reinterpret_cast<const std::uint8_t*>(bytes.data()),
                         static_cast<int>(bytes.size()));
  Question question;
  while (std::uint32_t tag = input.ReadTag()) {
    int field = WireFormatLite::GetTagFieldNumber(tag);
    bool delimited =
        WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
    if (field == 1 && delimited) {
      if (!WireFormatLite::ReadString(&input, &question.host)) return std::nullopt;
    } else if (field >= 3 && field <= 7 && delimited) {
      question.kind = field;  // a oneof: the last one given wins
      question.text.clear();
      if (!WireFormatLite::ReadString(&input, &question.text)) return std::nullopt;
      if (field == 5 && !read_extension_request(question.text, question)) return std::nullopt;
    } else if (!WireFormatLite::SkipField(&input, tag)) {
      return std::nullopt;
    }
  }
  if (!input.ConsumedEntireMessage()) return std::nullopt;
  return question;
}

inline void write_bytes(CodedOutputStream& out, int field, std::string_view bytes) {
  out.WriteTag(WireFormatLite::MakeTag(field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
  out.WriteVarint32(static_cast<std::uint32_t>(bytes.size()));
  out.WriteRaw(bytes.data(), static_cast<int>(bytes.size()));
}

inline void write_varint(CodedOutputStream& out, int field, std::uint64_t value) {
  out.WriteTag(WireFormatLite::MakeTag(field, WireFormatLite::WIRETYPE_VARINT));
  out.WriteVarint64(value);
}

// Encodes a message body with `write`, so nested messages are length-delimited fields.
template <class Write>
std::string encode(Write write) {
  std::string bytes;
  {
    StringOutputStream stream(&bytes);
    CodedOutputStream out(&stream);
    write(out);
  }
  return bytes;
}

// `file` and every file it imports, each once, dependencies first.
inline void collect_files(const google::protobuf::FileDescriptor* file,
                          std::set<const google::protobuf::FileDescriptor*>& seen,
                          std::vector<std::string>& out) {
  if (!seen.insert(file).second) return;
  for (int i = 0; i < file->dependency_count(); ++i) collect_files(file->dependency(i), seen, out);
  google::protobuf::FileDescriptorProto proto;
  file->CopyTo(&proto);
  out.push_back(proto.SerializeAsString());
}

// The proto service an endpoint `Svc.Method` typed with `request` serves: a service Svc with
// a method Method taking that message, looked up where it may be declared, in this order: the
// package named as the registered service (the path our client sends is
// /<service name>.<Svc>/<Method>), the package of the request message, the file of the request
// message, the file of the response message (a service may live apart from its messages).
inline const google::protobuf::ServiceDescriptor* served_service(
    const Service& registration, const Endpoint& endpoint,
    const google::protobuf::Descriptor* request, const google::protobuf::Descriptor* response) {
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  const auto dot = endpoint.name.find('.');
  if (dot == std::string::npos) return nullptr;
  const std::string service_name = endpoint.name.substr(0, dot);
  const std::string method_name = endpoint.name.substr(dot + 1);
  auto serves = [&](const google::protobuf::ServiceDescriptor* service) {
    if (!service || service->name() != service_name) return false;
    const auto* method = service->FindMethodByName(method_name);
    return method && method->input_type() == request;
  };
  auto qualified = [&](const std::string& package) {
    return package.empty() ? service_name : package + "." + service_name;
  };
  for (const std::string& package : {registration.name, request->file()->package()})
    if (const auto* service = pool->FindServiceByName(qualified(package)); serves(service))
      return service;
  for (const auto* file : {request->file(), response ? response->file() : nullptr}) {
    if (!file) continue;
    for (int i = 0; i < file->service_count(); ++i)
      if (serves(file->service(i))) return file->service(i);
  }
  return nullptr;
}

// The proto services of which this server serves a method, by full name. Endpoints whose
// request is not a protobuf message (raw or JSON handlers) have no descriptor to show.
inline std::vector<std::string> served_services(const Service& registration) {
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  std::set<std::string> names;
  for (const Endpoint& endpoint : registration.endpoints) {
    auto request = endpoint.metadata.find("protobuf.request");
    if (request == endpoint.metadata.end()) continue;
    const auto* message = pool->FindMessageTypeByName(request->second);
    if (!message) continue;
    auto response = endpoint.metadata.find("protobuf.response");
    const auto* answer = response == endpoint.metadata.end()
                             ? nullptr
                             : pool->FindMessageTypeByName(response->second);
    if (const auto* service = served_service(registration, endpoint, message, answer))
      names.insert(service->full_name());
  }
  return {names.begin(), names.end()};
}

// The ServerReflectionResponse to one question.
inline std::string answer(const Question& question, const std::string& original,
                          const Service& registration) {
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  const google::protobuf::FileDescriptor* file = nullptr;
  std::string missing;  // what was not found, for the error_response
  int field = 0;
  std::string body;
  switch (question.kind) {
    case 7:  // list_services → list_services_response (6)
      field = 6;
      body = encode([&](CodedOutputStream& out) {
        for (const std::string& name : served_services(registration))
          write_bytes(out, 1,
                      encode([&](CodedOutputStream& service) { write_bytes(service, 1, name); }));
      });
      break;
    case 3:
      file = pool->FindFileByName(question.text);
      if (!file) missing = "no file named '" + question.text + "'";
      break;
    case 4:
      file = pool->FindFileContainingSymbol(question.text);
      if (!file) missing = "no symbol named '" + question.text + "'";
      break;
    case 5: {
      const auto* type = pool->FindMessageTypeByName(question.extension_type);
      const auto* extension =
          type ? pool->FindExtensionByNumber(type, question.extension_number) : nullptr;
      if (extension) file = extension->file();
      if (!file)
        missing = "no extension " + std::to_string(question.extension_number) + " of '" +
                  question.extension_type + "'";
      break;
    }
    case 6: {
      const auto* type = pool->FindMessageTypeByName(question.text);
      if (!type) {
        missing = "no message type named '" + question.text + "'";
        break;
      }
      std::vector<const google::protobuf::FieldDescriptor*> extensions;
      pool->FindAllExtensions(type, &extensions);
      field = 5;  // all_extension_numbers_response
      body = encode([&](CodedOutputStream& out) {
        write_bytes(out, 1, type->full_name());
        for (const auto* extension : extensions)
          write_varint(out, 2, static_cast<std::uint32_t>(extension->number()));
      });
      break;
    }
    default:
      break;
  }
  if (file) {
    field = 4;  // file_descriptor_response
    std::set<const google::protobuf::FileDescriptor*> seen;
    std::vector<std::string> files;
    collect_files(file, seen, files);
    body = encode([&](CodedOutputStream& out) {
      for (const std::string& bytes : files) write_bytes(out, 1, bytes);
    });
  }
  if (field == 0) {  // error_response (7): NOT_FOUND, or UNIMPLEMENTED for an unknown question
    field = 7;
    const bool unknown = question.kind == 0;
    body = encode([&](CodedOutputStream& out) {
      write_varint(out, 1, unknown ? 12 : 5);
      write_bytes(out, 2, unknown ? "the request asks nothing this server knows" : missing);
    });
  }
  return encode([&](CodedOutputStream& out) {
    write_bytes(out, 1, question.host);
    write_bytes(out, 2, original);  // original_request: the bytes as they came
    write_bytes(out, field, body);
  });
}

// Answers each request of the stream in turn until the client closes its side.
inline void serve(const MessageStreamPtr& stream, std::shared_ptr<const Server*> server) {
  stream->async_read([stream, server](std::optional<std::string> message) {
    if (!message) {
      if (!stream->ended()) stream->finish(Response{});
      return;
    }
    std::optional<Question> question = read_question(*message);
    if (!question) {
      stream->finish(Response::failure(
          bad_request("micro.grpc_reflection",
                      std::to_string(message->size()) +
                          " bytes are not a grpc.reflection ServerReflectionRequest")));
      return;
    }
    std::string reply = answer(*question, *message, (*server)->registration());
    stream->async_write(std::move(reply), [stream, server](std::optional<Error> error) {
      if (!error) serve(stream, server);
    });
  });
}

}  // namespace detail::reflection

// Serves gRPC server reflection on `server` (register before start()).
inline void serve_grpc_reflection(Server& server) {
  auto self = std::make_shared<const Server*>(&server);
  server.handle_stream(
      std::string(grpc_reflection_endpoint),
      [self](const MessageStreamPtr& stream) { detail::reflection::serve(stream, self); });
}

}  // namespace micro
