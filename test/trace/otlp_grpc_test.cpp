// test/trace/otlp_grpc_test.cpp — the OTLP/gRPC exporter (protocol=grpc): its settings, the
// decoding of RetryInfo and partial success, and, in the "otlp grpc receiver" suite, exports to
// a Python grpcio TraceService (otlp_grpc_receiver.py, stubs from the official schema) that
// decodes them strictly: span names, ids, attributes, resource, metadata, deadline; the OTLP
// retry rules (UNAVAILABLE then OK, ABORTED retried, ALREADY_EXISTS and INVALID_ARGUMENT not,
// RESOURCE_EXHAUSTED only with RetryInfo, whose delay is waited); partial success not retried.
//
//   otlp_grpc_test <python3 with grpcio> <otlp_grpc_receiver.py> <otlp proto dir> [doctest options]
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include <micro/plugin.hpp>

#include "exporters.hpp"
#include "otlp_grpc.hpp"
#include "support/child_process.hpp"

using namespace micro::trace;
using namespace micro::trace::sdk;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

std::string python, receiver_script, proto_dir;

ExporterSettings settings_from(std::map<std::string, std::string> options) {
  return ExporterSettings::from(
      micro::PluginArguments(micro::PluginKind::wrapper, "trace", "", std::move(options), {}));
}

std::string bytes(std::initializer_list<int> values) {
  std::string out;
  for (int value : values) out.push_back(static_cast<char>(value));
  return out;
}

SpanData make_span(std::uint8_t id, std::uint8_t parent, const char* name, SpanKind kind) {
  SpanData span;
  for (std::size_t i = 0; i < 16; ++i)
    span.context.trace_id.bytes[i] = static_cast<std::uint8_t>(0xa0 + i);
  for (std::size_t i = 0; i < 8; ++i)
    span.context.span_id.bytes[i] = static_cast<std::uint8_t>(id + i);
  if (parent != 0)
    for (std::size_t i = 0; i < 8; ++i)
      span.parent_span_id.bytes[i] = static_cast<std::uint8_t>(parent + i);
  span.context.flags = flag_sampled;
  span.name = name;
  span.kind = kind;
  span.start_time = std::chrono::system_clock::now() - 5ms;
  span.end_time = std::chrono::system_clock::now();
  return span;
}

std::vector<SpanData> sample_spans() {
  auto client = make_span(0x10, 0, "Greeter.Hello", SpanKind::client);
  client.attributes = {{"rpc.system", std::string("grpc")},
                       {"rpc.grpc.status_code", std::int64_t{0}},
                       {"server.port", std::int64_t{4000}}};
  auto server = make_span(0x20, 0x10, "Greeter.Hello", SpanKind::server);
  server.attributes = {{"ratio", 0.5}, {"names", std::vector<std::string>{"a", "b"}}};
  server.status = StatusCode::error;
  return {client, server};
}

Resource sample_resource() {
  return {{{"service.name", std::string("greeter")}, {"service.version", std::string("1.2")}}};
}

// The receiver as a child process, answering Exports as `script` says.
class Receiver {
 public:
  explicit Receiver(const std::string& script)
      : child_({python, receiver_script, proto_dir, script}) {
    auto line = child_.read_line(60s);
    REQUIRE(line);
    REQUIRE(line->rfind("port ", 0) == 0);
    port_ = line->substr(5);
  }
  std::string endpoint() const { return "http://127.0.0.1:" + port_; }
  // The next Export the receiver decoded (FAIL lines fail the test).
  json next_export() {
    auto line = child_.read_line(30s);
    REQUIRE(line);
    INFO("receiver: " << *line);
    REQUIRE(line->rfind("export ", 0) == 0);
    return json::parse(line->substr(7));
  }
  // Nothing more arrives within `quiet`.
  bool silent_for(std::chrono::milliseconds quiet) {
    auto line = child_.read_line(quiet);
    if (line) MESSAGE("unexpected from the receiver: " << *line);
    return !line;
  }

 private:
  micro_test::Child child_;
  std::string port_;
};

std::unique_ptr<SpanExporter> grpc_exporter(const Receiver& receiver,
                                            std::shared_ptr<ExporterStatistics> statistics,
                                            std::map<std::string, std::string> options = {}) {
  options.emplace("protocol", "grpc");
  options.emplace("endpoint", receiver.endpoint());
  return make_exporter(settings_from(options), sample_resource(), {"micro-cpp", "0.1.0"},
                       std::move(statistics));
}

}  // namespace

TEST_CASE("RetryInfo in grpc-status-details-bin, and the OTLP gRPC retry table") {
  // google.rpc.Status{code 8, message "x", details [Any{RetryInfo{retry_delay 1.5 s}}]}
  const std::string type_url = "type.googleapis.com/google.rpc.RetryInfo";
  const std::string duration =
      bytes({0x08, 0x01, 0x10, 0x80, 0xCA, 0xB5, 0xEE, 0x01});  // 1 s 500000000 ns
  const std::string retry_info = bytes({0x0a, static_cast<int>(duration.size())}) + duration;
  const std::string any = bytes({0x0a, static_cast<int>(type_url.size())}) + type_url +
                          bytes({0x12, static_cast<int>(retry_info.size())}) + retry_info;
  const std::string status =
      bytes({0x08, 0x08, 0x12, 0x01, 'x', 0x1a, static_cast<int>(any.size())}) + any;
  auto hint = parse_retry_hint(status);
  CHECK(hint.retry_info);
  REQUIRE(hint.delay);
  CHECK(*hint.delay == 1500ms);
  // Another detail type is no RetryInfo; garbage is no hint.
  CHECK_FALSE(parse_retry_hint(bytes({0x08, 0x08})).retry_info);
  CHECK_FALSE(parse_retry_hint(bytes({0x1a, 0x05, 0x0a})).retry_info);
  CHECK_FALSE(parse_retry_hint("").retry_info);

  for (int retryable : {1, 4, 10, 11, 14, 15}) CHECK(otlp_grpc_retryable(retryable, {}));
  for (int final : {2, 3, 5, 6, 7, 9, 12, 13, 16}) CHECK_FALSE(otlp_grpc_retryable(final, {}));
  CHECK_FALSE(otlp_grpc_retryable(8, {}));
  CHECK(otlp_grpc_retryable(8, hint));
}

TEST_CASE("ExportTraceServiceResponse partial_success") {
  CHECK_FALSE(parse_partial_success(""));
  auto partial = parse_partial_success(bytes({0x0a, 0x05, 0x08, 0x03, 0x12, 0x01, 'z'}));
  REQUIRE(partial);
  CHECK(partial->rejected_spans == 3);
  CHECK(partial->error_message == "z");
  CHECK_FALSE(parse_partial_success(bytes({0x0a, 0x09, 0x08})));  // truncated
}

TEST_SUITE("otlp grpc receiver") {
  TEST_CASE("a Python grpcio TraceService decodes our export strictly") {
    Receiver receiver("OK");
    auto statistics = std::make_shared<ExporterStatistics>();
    auto exporter = grpc_exporter(receiver, statistics, {{"headers", "Authorization=Bearer x"}});
    auto spans = sample_spans();
    REQUIRE(exporter->export_spans(spans) == ExportResult::success);
    auto got = receiver.next_export();
    CHECK(got["answer"] == "OK");
    CHECK(got["deadline"] == true);  // grpc-timeout from the export timeout
    CHECK(got["metadata"]["authorization"] == "Bearer x");
    REQUIRE(got["resources"].size() == 1);
    auto& resource = got["resources"][0];
    CHECK(resource["attributes"]["service.name"] == "greeter");
    CHECK(resource["attributes"]["service.version"] == "1.2");
    REQUIRE(resource["scopes"].size() == 1);
    CHECK(resource["scopes"][0]["name"] == "micro-cpp");
    auto& exported = resource["scopes"][0]["spans"];
    REQUIRE(exported.size() == 2);
    CHECK(exported[0]["name"] == "Greeter.Hello");
    CHECK(exported[0]["trace_id"] == "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
    CHECK(exported[0]["span_id"] == "1011121314151617");
    CHECK(exported[0]["parent_span_id"] == "");
    CHECK(exported[0]["kind"] == 3);  // SPAN_KIND_CLIENT
    CHECK(exported[0]["attributes"]["rpc.system"] == "grpc");
    CHECK(exported[0]["attributes"]["rpc.grpc.status_code"] == 0);
    CHECK(exported[0]["attributes"]["server.port"] == 4000);
    CHECK(exported[1]["span_id"] == "2021222324252627");
    CHECK(exported[1]["parent_span_id"] == "1011121314151617");
    CHECK(exported[1]["kind"] == 2);  // SPAN_KIND_SERVER
    CHECK(exported[1]["attributes"]["ratio"] == 0.5);
    CHECK(exported[1]["attributes"]["names"] == json::array({"a", "b"}));
    CHECK(exported[1]["status"] == 2);  // STATUS_CODE_ERROR
    CHECK(statistics->exported == 2);
    // A second batch on the same connection.
    REQUIRE(exporter->export_spans(std::span(spans).first(1)) == ExportResult::success);
    CHECK(receiver.next_export()["resources"][0]["scopes"][0]["spans"].size() == 1);
    CHECK(statistics->exported == 3);
    CHECK(statistics->retries == 0);
  }

  TEST_CASE("compression=gzip: the Python TraceService inflates our gzip export") {
    Receiver receiver("OK");
    auto statistics = std::make_shared<ExporterStatistics>();
    auto exporter = grpc_exporter(receiver, statistics, {{"compression", "gzip"}});
    auto spans = sample_spans();
    REQUIRE(exporter->export_spans(spans) == ExportResult::success);
    auto got = receiver.next_export();
    CHECK(got["answer"] == "OK");
    REQUIRE(got["resources"].size() == 1);
    CHECK(got["resources"][0]["scopes"][0]["spans"].size() == 2);
    CHECK(statistics->exported == 2);
  }

  TEST_CASE("UNAVAILABLE, then OK: retried after a backoff; ABORTED is retried too") {
    Receiver receiver("UNAVAILABLE,OK,ABORTED,OK");
    auto statistics = std::make_shared<ExporterStatistics>();
    auto exporter = grpc_exporter(receiver, statistics);
    auto spans = sample_spans();
    auto started = std::chrono::steady_clock::now();
    REQUIRE(exporter->export_spans(spans) == ExportResult::success);
    CHECK(std::chrono::steady_clock::now() - started >= 500ms);  // the first backoff, [½, 1] s
    CHECK(receiver.next_export()["answer"] == "UNAVAILABLE");
    CHECK(receiver.next_export()["answer"] == "OK");
    CHECK(statistics->retries == 1);
    // ABORTED is 409 as a micro code, like ALREADY_EXISTS: the exporter reads the status sent.
    REQUIRE(exporter->export_spans(spans) == ExportResult::success);
    CHECK(receiver.next_export()["answer"] == "ABORTED");
    CHECK(receiver.next_export()["answer"] == "OK");
    CHECK(statistics->retries == 2);
    CHECK(statistics->exported == 4);
  }

  TEST_CASE("ALREADY_EXISTS, INVALID_ARGUMENT and RESOURCE_EXHAUSTED without RetryInfo are final") {
    Receiver receiver("ALREADY_EXISTS,INVALID_ARGUMENT,RESOURCE_EXHAUSTED");
    auto statistics = std::make_shared<ExporterStatistics>();
    auto exporter = grpc_exporter(receiver, statistics);
    auto spans = sample_spans();
    for (const char* answer : {"ALREADY_EXISTS", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}) {
      CAPTURE(answer);
      CHECK(exporter->export_spans(spans) == ExportResult::failure);
      CHECK(receiver.next_export()["answer"] == answer);
    }
    CHECK(receiver.silent_for(300ms));  // no retry arrived
    CHECK(statistics->retries == 0);
    CHECK(statistics->failed_exports == 3);
    CHECK(statistics->dropped_on_failure == 6);
  }

  TEST_CASE("RESOURCE_EXHAUSTED with RetryInfo waits its retry_delay, then retries") {
    Receiver receiver("RETRY_AFTER_MS=1700,OK");
    auto statistics = std::make_shared<ExporterStatistics>();
    auto exporter = grpc_exporter(receiver, statistics);
    auto spans = sample_spans();
    auto started = std::chrono::steady_clock::now();
    REQUIRE(exporter->export_spans(spans) == ExportResult::success);
    // Longer than any jittered first backoff (≤ 1 s): the server's delay was used.
    CHECK(std::chrono::steady_clock::now() - started >= 1700ms);
    CHECK(receiver.next_export()["answer"] == "RETRY_AFTER_MS=1700");
    CHECK(receiver.next_export()["answer"] == "OK");
    CHECK(statistics->retries == 1);
  }

  TEST_CASE("a partial success is final: counted, not retried") {
    Receiver receiver("PARTIAL");
    auto statistics = std::make_shared<ExporterStatistics>();
    auto exporter = grpc_exporter(receiver, statistics);
    auto spans = sample_spans();
    CHECK(exporter->export_spans(spans) == ExportResult::success);
    CHECK(receiver.next_export()["answer"] == "PARTIAL");
    CHECK(receiver.silent_for(300ms));
    CHECK(statistics->exported == 1);
    CHECK(statistics->dropped_on_failure == 1);
    CHECK(statistics->retries == 0);
  }

  TEST_CASE("an unreachable collector is UNAVAILABLE: retried until max_attempts") {
    auto statistics = std::make_shared<ExporterStatistics>();
    auto exporter = make_exporter(
        settings_from(
            {{"protocol", "grpc"}, {"endpoint", "http://127.0.0.1:1"}, {"max_attempts", "2"}}),
        sample_resource(), {"micro-cpp", "0.1.0"}, statistics);
    auto spans = sample_spans();
    CHECK(exporter->export_spans(spans) == ExportResult::failure_retryable);
    CHECK(statistics->retries == 1);
    CHECK(statistics->failed_exports == 1);
  }
}

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr,
                 "usage: otlp_grpc_test PYTHON3 OTLP_GRPC_RECEIVER_PY OTLP_PROTO_DIR [options]\n");
    return 2;
  }
  python = argv[1];
  receiver_script = argv[2];
  proto_dir = argv[3];
  std::vector<char*> rest = {argv[0]};
  bool receiver_suite = false;
  for (int i = 4; i < argc; ++i) {
    rest.push_back(argv[i]);
    if (std::string_view(argv[i]) == "--test-suite=otlp grpc receiver") receiver_suite = true;
  }
  // The receiver needs the official schema; without it that suite cannot run (exit 77: SKIP).
  if (receiver_suite &&
      !std::filesystem::exists(std::filesystem::path(proto_dir) /
                               "opentelemetry/proto/collector/trace/v1/trace_service.proto")) {
    std::fprintf(stderr,
                 "SKIP: the OTLP schema is not at %s (no "
                 "opentelemetry/proto/collector/trace/v1/trace_service.proto there). Get "
                 "https://github.com/open-telemetry/opentelemetry-proto and configure "
                 "-Dotlp_proto_dir=PATH\n",
                 proto_dir.c_str());
    return 77;
  }
  doctest::Context context(static_cast<int>(rest.size()), rest.data());
  return context.run();
}
