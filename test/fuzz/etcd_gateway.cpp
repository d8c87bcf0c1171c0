// test/fuzz/etcd_gateway.cpp — the etcd registry's reading of the gateway's JSON answers
// (registry/etcd): watch streams cut into JSON lines as chunks arrive, gateway errors, int64
// fields sent as strings, range kvs and watch events (base64 key and value, the value a
// Go-Micro service), and the endpoint list. The first byte picks the chunk size.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <micro/error.hpp>

#include "registry/etcd/etcd_client.hpp"
#include "registry/etcd/values.hpp"

namespace {

void read_kv(const nlohmann::json& kv) {
  if (!kv.is_object()) return;
  try {
    auto decoded = micro::etcd::decode_key_value(kv);
    (void)micro::etcd::parse_service(decoded.value);
  } catch (const micro::Exception&) {
    // Bad base64 or a malformed int64: an error naming it, which the registry reports.
  }
}

void read_answer(const nlohmann::json& answer) {
  if (!answer.is_object()) return;
  (void)micro::etcd::gateway_error(answer);
  const auto& body = answer.contains("result") ? answer["result"] : answer;
  if (!body.is_object()) return;
  try {
    if (body.contains("header") && body["header"].is_object())
      (void)micro::etcd::json_int64(body["header"], "revision");
    (void)micro::etcd::json_int64(body, "compact_revision");
  } catch (const micro::Exception&) {
  }
  if (auto kvs = body.find("kvs"); kvs != body.end() && kvs->is_array())
    for (const auto& kv : *kvs) read_kv(kv);
  if (auto events = body.find("events"); events != body.end() && events->is_array())
    for (const auto& event : *events) {
      if (!event.is_object()) continue;
      if (event.contains("kv")) read_kv(event["kv"]);
      if (event.contains("prev_kv")) read_kv(event["prev_kv"]);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t piece = data[0] % 64 + 1;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  // One whole answer (range, lease grant, put), then the same bytes as a watch stream.
  auto whole = nlohmann::json::parse(text, nullptr, false);
  if (!whole.is_discarded()) read_answer(whole);
  std::string pending;
  try {
    for (std::size_t at = 0; at < text.size(); at += piece) {
      pending.append(text.substr(at, piece));
      for (const auto& line : micro::etcd::take_json_lines(pending)) read_answer(line);
    }
  } catch (const micro::Exception&) {
    // A line that is not JSON: a 502 naming it, and the stream is dropped.
  }
  const auto end = text.find('\n');
  try {
    (void)micro::etcd::parse_endpoints(text.substr(0, end));
  } catch (const micro::Exception&) {
  }
  return 0;
}
