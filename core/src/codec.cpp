// The built-in codecs: JSON, MessagePack, CBOR (all through nlohmann_json) and raw bytes.
#include <micro/codec.hpp>
#include <micro/context.hpp>
#include <micro/error.hpp>

#include <array>

namespace micro {
namespace {

Exception decode_error(std::string_view content_type, const std::exception& e) {
  return Exception(bad_request(
      "micro.codec", "cannot decode " + std::string(content_type) + " body: " + e.what()));
}

class JsonCodec final : public Codec {
 public:
  std::string_view content_type() const noexcept override { return "application/json"; }
  void encode(const nlohmann::json& value, std::string& out) const override {
    // Straight into `out`: dump() would build a temporary string first (one more allocation
    // per message). Same output and the same strict UTF-8 check as dump().
    nlohmann::detail::serializer<nlohmann::json> serializer(
        nlohmann::detail::output_adapter<char>(out), ' ');
    serializer.dump(value, false, false, 0);
  }
  nlohmann::json decode(std::string_view bytes) const override {
    try {
      return nlohmann::json::parse(bytes);
    } catch (const nlohmann::json::exception& e) {
      throw decode_error(content_type(), e);
    }
  }
};

class MessagePackCodec final : public Codec {
 public:
  std::string_view content_type() const noexcept override { return "application/msgpack"; }
  void encode(const nlohmann::json& value, std::string& out) const override {
    nlohmann::json::to_msgpack(value, nlohmann::detail::output_adapter<char>(out));
  }
  nlohmann::json decode(std::string_view bytes) const override {
    try {
      return nlohmann::json::from_msgpack(bytes.begin(), bytes.end());
    } catch (const nlohmann::json::exception& e) {
      throw decode_error(content_type(), e);
    }
  }
};

class CborCodec final : public Codec {
 public:
  std::string_view content_type() const noexcept override { return "application/cbor"; }
  void encode(const nlohmann::json& value, std::string& out) const override {
    nlohmann::json::to_cbor(value, nlohmann::detail::output_adapter<char>(out));
  }
  nlohmann::json decode(std::string_view bytes) const override {
    try {
      return nlohmann::json::from_cbor(bytes.begin(), bytes.end());
    } catch (const nlohmann::json::exception& e) {
      throw decode_error(content_type(), e);
    }
  }
};

// Raw bytes: a binary or string json value is written as is; decoding yields a binary value.
class RawCodec final : public Codec {
 public:
  std::string_view content_type() const noexcept override { return "application/octet-stream"; }
  void encode(const nlohmann::json& value, std::string& out) const override {
    if (value.is_binary()) {
      const auto& bytes = value.get_binary();
      out.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    } else if (value.is_string()) {
      out += value.get_ref<const std::string&>();
    } else {
      throw Exception(bad_request("micro.codec", std::string("application/octet-stream carries "
                                                             "bytes or a string, not a ") +
                                                     value.type_name()));
    }
  }
  nlohmann::json decode(std::string_view bytes) const override {
    return nlohmann::json::binary(std::vector<std::uint8_t>(bytes.begin(), bytes.end()));
  }
};

const JsonCodec json_codec;
const MessagePackCodec msgpack_codec;
const CborCodec cbor_codec;
const RawCodec raw_codec;

struct NamedCodec {
  std::string_view content_type;
  const Codec* codec;
};
const std::array<NamedCodec, 6> codecs{{
    {"application/json", &json_codec},
    {"application/msgpack", &msgpack_codec},
    {"application/x-msgpack", &msgpack_codec},
    {"application/cbor", &cbor_codec},
    {"application/octet-stream", &raw_codec},
    {"text/json", &json_codec},
}};

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

}  // namespace

const Codec* find_codec(std::string_view content_type) noexcept {
  // Nearly every call carries exactly the first type (JSON, as written by our clients): an
  // exact comparison answers it before the parameter and case-insensitive search.
  if (content_type == codecs[0].content_type) return codecs[0].codec;
  auto semicolon = content_type.find(';');
  if (semicolon != std::string_view::npos) content_type = content_type.substr(0, semicolon);
  content_type = trim(content_type);
  for (const auto& named : codecs)
    if (iequals(named.content_type, content_type)) return named.codec;
  return nullptr;
}

const Codec& codec_for(std::string_view content_type) {
  if (const Codec* codec = find_codec(content_type)) return *codec;
  std::string known;
  for (const auto& named : codecs) {
    if (!known.empty()) known += ", ";
    known += named.content_type;
  }
  throw Exception(bad_request("micro.codec", "unsupported content type '" +
                                                 std::string(content_type) + "'; known: " + known));
}

std::vector<std::string_view> codec_content_types() {
  std::vector<std::string_view> types;
  for (const auto& named : codecs) types.push_back(named.content_type);
  return types;
}

}  // namespace micro
