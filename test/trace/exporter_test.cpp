// The trace plugin's exporters: OTLP JSON and protobuf payloads decoded strictly against the
// official schema (protoc + python3-protobuf; the "otlp schema" suite, run as a meson test of
// its own that is SKIPPED when the schema is absent), the OTLP/HTTP client against a loopback
// receiver (retries, Retry-After, 400, receiver down, gzip, headers), settings from plugin
// options and OTEL_EXPORTER_OTLP_*, the console, file and none exporters, and the waterfall.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <micro/error.hpp>
#include <micro/plugin.hpp>

#include "exporters.hpp"
#include "otlp_http.hpp"
#include "otlp_json.hpp"
#include "otlp_protobuf.hpp"
#include "waterfall.hpp"

using namespace std::chrono_literals;
using namespace micro::trace;
using namespace micro::trace::sdk;
using nlohmann::json;

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

// ---- a small trace with every kind of span and value ----

template <std::size_t N>
std::array<std::uint8_t, N> id_bytes(std::uint8_t first) {
  std::array<std::uint8_t, N> out{};
  for (std::size_t i = 0; i < N; ++i) out[i] = static_cast<std::uint8_t>(first + i);
  return out;
}

constexpr std::int64_t base_nanos = 1700000000123456789;  // 2023-11-14T22:13:20.123456789Z

std::chrono::system_clock::time_point at_micros(std::int64_t micros) {
  return std::chrono::system_clock::time_point(std::chrono::nanoseconds(base_nanos) +
                                               std::chrono::microseconds(micros));
}

SpanData make_span(std::uint8_t id, std::uint8_t parent, const char* name, SpanKind kind,
                   std::int64_t start_micros, std::int64_t end_micros) {
  SpanData span;
  span.context.trace_id.bytes = id_bytes<16>(0xa0);
  span.context.span_id.bytes = id_bytes<8>(id);
  span.context.flags = flag_sampled;
  if (parent != 0) span.parent_span_id.bytes = id_bytes<8>(parent);
  span.name = name;
  span.kind = kind;
  span.start_time = at_micros(start_micros);
  span.end_time = at_micros(end_micros);
  return span;
}

// client → server (remote parent, error) → producer, internal; consumer (child of the
// producer, linked to it).
std::vector<SpanData> sample_trace() {
  std::vector<SpanData> spans;
  auto client = make_span(0x10, 0, "Greeter.Hello", SpanKind::client, 0, 10000);
  client.attributes = {{"rpc.system", std::string("micro")},
                       {"server.port", std::int64_t{8080}},
                       {"server.address", std::string("127.0.0.1")}};
  client.context.flags = flag_sampled | flag_random;
  spans.push_back(client);

  auto server = make_span(0x20, 0x10, "Greeter.Hello", SpanKind::server, 1000, 9000);
  server.parent_remote = true;
  server.context.trace_state = "vendor=abc,other=x";
  server.attributes = {{"flag", true},
                       {"off", false},
                       {"ratio", 3.25},
                       {"negative", std::int64_t{-42}},
                       {"big", std::int64_t{9223372036854775807}},
                       {"zero", std::int64_t{0}},
                       {"empty", std::string()},
                       {"names", std::vector<std::string>{"a", "b"}},
                       {"counts", std::vector<std::int64_t>{1, -2, 3}},
                       {"weights", std::vector<double>{0.5, -1.5}},
                       {"checks", std::vector<bool>{true, false}}};
  server.status = StatusCode::error;
  server.status_message = "boom";
  server.dropped_attributes = 2;
  server.events.push_back(
      {"exception", at_micros(8500), {{"exception.message", std::string("boom")}}, 0});
  spans.push_back(server);

  auto producer = make_span(0x30, 0x20, "greetings publish", SpanKind::producer, 2000, 3000);
  producer.attributes = {{"messaging.destination.name", std::string("greetings")},
                         {"messaging.message.body.size", std::int64_t{42}}};
  producer.events.push_back({"sent", at_micros(2500), {}, 0});
  producer.dropped_events = 1;
  spans.push_back(producer);

  auto insert = make_span(0x40, 0x20, "Database.Insert", SpanKind::internal, 5000, 6000);
  spans.push_back(insert);

  auto consumer = make_span(0x50, 0x30, "greetings process", SpanKind::consumer, 4000, 8000);
  consumer.parent_remote = true;
  LinkData link;
  link.context = producer.context;
  link.context.remote = true;
  link.context.trace_state = "vendor=abc";
  link.attributes = {{"messaging.operation.type", std::string("receive")}};
  consumer.links.push_back(link);
  consumer.dropped_links = 3;
  consumer.status = StatusCode::ok;
  spans.push_back(consumer);
  return spans;
}

Resource sample_resource() {
  return Resource{{{"service.name", std::string("greeter")}, {"process.pid", std::int64_t{4242}}}};
}

InstrumentationScope sample_scope() {
  return InstrumentationScope{"micro-cpp", "0.1.0"};
}

std::string nanos(std::int64_t micros) {
  return std::to_string(base_nanos + micros * 1000);
}

// What the official schema must decode the sample trace to (the decoder's summary form).
json expected_summary() {
  const std::string trace = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf";
  auto span = [&](const char* id, const char* parent, const char* name, int kind,
                  std::int64_t start, std::int64_t end, std::uint32_t flags) {
    return json{{"trace_id", trace},
                {"span_id", id},
                {"parent_span_id", parent},
                {"trace_state", ""},
                {"flags", flags},
                {"name", name},
                {"kind", kind},
                {"start", nanos(start)},
                {"end", nanos(end)},
                {"attributes", json::object()},
                {"dropped_attributes", 0},
                {"events", json::array()},
                {"dropped_events", 0},
                {"links", json::array()},
                {"dropped_links", 0},
                {"status", {{"code", 0}, {"message", ""}}}};
  };
  json client = span("1011121314151617", "", "Greeter.Hello", 3, 0, 10000, 0x103);
  client["attributes"] = {{"rpc.system", {{"string", "micro"}}},
                          {"server.port", {{"int", 8080}}},
                          {"server.address", {{"string", "127.0.0.1"}}}};
  json server = span("2021222324252627", "1011121314151617", "Greeter.Hello", 2, 1000, 9000, 0x301);
  server["trace_state"] = "vendor=abc,other=x";
  server["attributes"] = {{"flag", {{"bool", true}}},
                          {"off", {{"bool", false}}},
                          {"ratio", {{"double", 3.25}}},
                          {"negative", {{"int", -42}}},
                          {"big", {{"int", 9223372036854775807}}},
                          {"zero", {{"int", 0}}},
                          {"empty", {{"string", ""}}},
                          {"names", {{"array", {{{"string", "a"}}, {{"string", "b"}}}}}},
                          {"counts", {{"array", {{{"int", 1}}, {{"int", -2}}, {{"int", 3}}}}}},
                          {"weights", {{"array", {{{"double", 0.5}}, {{"double", -1.5}}}}}},
                          {"checks", {{"array", {{{"bool", true}}, {{"bool", false}}}}}}};
  server["dropped_attributes"] = 2;
  server["events"] = {{{"time", nanos(8500)},
                       {"name", "exception"},
                       {"attributes", {{"exception.message", {{"string", "boom"}}}}}}};
  server["status"] = {{"code", 2}, {"message", "boom"}};
  json producer =
      span("3031323334353637", "2021222324252627", "greetings publish", 4, 2000, 3000, 0x101);
  producer["attributes"] = {{"messaging.destination.name", {{"string", "greetings"}}},
                            {"messaging.message.body.size", {{"int", 42}}}};
  producer["events"] = {{{"time", nanos(2500)}, {"name", "sent"}, {"attributes", json::object()}}};
  producer["dropped_events"] = 1;
  json insert =
      span("4041424344454647", "2021222324252627", "Database.Insert", 1, 5000, 6000, 0x101);
  json consumer =
      span("5051525354555657", "3031323334353637", "greetings process", 5, 4000, 8000, 0x301);
  consumer["links"] = {{{"trace_id", trace},
                        {"span_id", "3031323334353637"},
                        {"trace_state", "vendor=abc"},
                        {"flags", 0x301},
                        {"attributes", {{"messaging.operation.type", {{"string", "receive"}}}}}}};
  consumer["dropped_links"] = 3;
  consumer["status"] = {{"code", 1}, {"message", ""}};
  return json{{"resources",
               {{{"attributes",
                  {{"service.name", {{"string", "greeter"}}}, {"process.pid", {{"int", 4242}}}}},
                 {"scopes",
                  {{{"name", "micro-cpp"},
                    {"version", "0.1.0"},
                    {"spans", {client, server, producer, insert, consumer}}}}}}}}};
}

// ---- running the schema decoder ----

struct TemporaryFile {
  std::filesystem::path path;
  TemporaryFile() {
    static std::atomic<int> counter{0};
    path = std::filesystem::temp_directory_path() /
           ("micro-exporter-test-" + std::to_string(::getpid()) + "-" +
            std::to_string(counter.fetch_add(1)));
    std::filesystem::remove(path);
  }
  ~TemporaryFile() { std::filesystem::remove(path); }
  void write(const std::string& bytes) const {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes;
  }
  std::string read() const {
    std::ifstream in(path, std::ios::binary);
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
  }
};

struct DecodeResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

// The schema tests run as their own meson test (the "otlp schema" suite). Without the schema
// they cannot run: the test program says where to get it and exits 77, which meson reports as
// SKIP (only that test: the other exporter tests run in a test of their own).
void require_schema() {
  const std::filesystem::path directory = OTLP_PROTO_DIR;
  if (std::filesystem::exists(directory / "opentelemetry/proto/trace/v1/trace.proto")) return;
  std::fprintf(stderr,
               "SKIP: the OTLP schema is not at %s (no opentelemetry/proto/trace/v1/trace.proto "
               "there). Get it from https://github.com/open-telemetry/opentelemetry-proto (a git "
               "clone anywhere) and point the build at it: meson configure <build> "
               "-Dotlp_proto_dir=/path/to/opentelemetry-proto (the default is "
               "../shared/otlp-proto beside the source tree)\n",
               directory.c_str());
  std::fflush(stderr);
  std::exit(77);
}

DecodeResult run_decoder(const char* mode, const std::string& payload) {
  TemporaryFile file;
  file.write(payload);
  std::string command = std::string("/usr/bin/python3 ") + OTLP_DECODE_SCRIPT + " " + mode + " " +
                        file.path.string() + " " + OTLP_PROTO_DIR + " 2>&1";
  DecodeResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buffer[4096];
  std::size_t read = 0;
  while ((read = std::fread(buffer, 1, sizeof buffer, pipe)) > 0)
    result.output.append(buffer, read);
  int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

json decode_strictly(const char* mode, const std::string& payload) {
  auto result = run_decoder(mode, payload);
  INFO("decoder output: " << result.output);
  REQUIRE(result.exit_code == 0);
  return json::parse(result.output);
}

// ---- a loopback OTLP receiver ----

struct ReceivedRequest {
  std::chrono::steady_clock::time_point time;
  std::string target;
  std::map<std::string, std::string> headers;  // names lowercased
  std::string body;
};

struct ScriptedResponse {
  int status = 200;
  std::string retry_after;
};

// Answers each request with the next scripted response (200 once the script is used up) on
// its own thread; stopped and joined by the destructor.
class Receiver {
 public:
  explicit Receiver(std::vector<ScriptedResponse> script = {})
      : script_(script.begin(), script.end()),
        acceptor_(io_, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    accept();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~Receiver() {
    io_.stop();
    thread_.join();
  }
  std::string url(const std::string& path = "/v1/traces") const {
    return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()) + path;
  }
  std::vector<ReceivedRequest> requests() {
    std::lock_guard lock(mutex_);
    return requests_;
  }

 private:
  void accept() {
    acceptor_.async_accept([this](boost::system::error_code error, asio::ip::tcp::socket socket) {
      if (error) return;
      serve(std::move(socket));
      accept();
    });
  }
  void serve(asio::ip::tcp::socket socket) {
    beast::flat_buffer buffer;
    http::request<http::string_body> request;
    boost::system::error_code error;
    http::read(socket, buffer, request, error);
    if (error) return;
    ReceivedRequest received{
        std::chrono::steady_clock::now(), std::string(request.target()), {}, request.body()};
    for (const auto& field : request) {
      std::string name(field.name_string());
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      received.headers[name] = std::string(field.value());
    }
    ScriptedResponse answer;
    {
      std::lock_guard lock(mutex_);
      requests_.push_back(std::move(received));
      if (!script_.empty()) {
        answer = script_.front();
        script_.pop_front();
      }
    }
    http::response<http::string_body> response{static_cast<http::status>(answer.status), 11};
    if (!answer.retry_after.empty()) response.set(http::field::retry_after, answer.retry_after);
    response.set(http::field::content_type, "application/json");
    response.body() = answer.status == 200 ? "{}" : "{\"message\":\"scripted\"}";
    response.prepare_payload();
    http::write(socket, response, error);
    socket.shutdown(asio::ip::tcp::socket::shutdown_both, error);
  }

  std::mutex mutex_;
  std::deque<ScriptedResponse> script_;
  std::vector<ReceivedRequest> requests_;
  asio::io_context io_;
  asio::ip::tcp::acceptor acceptor_;
  std::thread thread_;
};

ExporterSettings otlp_settings(const std::string& endpoint, const std::string& protocol) {
  ExporterSettings settings;
  settings.endpoint = endpoint;
  settings.protocol = protocol;
  settings.timeout = 10s;
  return settings;
}

std::string gunzip(const std::string& data) {
  z_stream stream{};
  REQUIRE(inflateInit2(&stream, 15 + 16) == Z_OK);
  std::string out(data.size() * 20 + 1024, '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  int result = inflate(&stream, Z_FINISH);
  out.resize(stream.total_out);
  inflateEnd(&stream);
  REQUIRE(result == Z_STREAM_END);
  return out;
}

// ---- settings ----

const char* const otel_variables[] = {
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
};

// Clears every OTEL_* variable the settings read, sets the given ones, clears again after.
struct Environment {
  Environment() { clear(); }
  explicit Environment(std::initializer_list<std::pair<const char*, const char*>> values) {
    clear();
    for (const auto& [name, value] : values) ::setenv(name, value, 1);
  }
  ~Environment() { clear(); }
  static void clear() {
    for (const char* name : otel_variables) ::unsetenv(name);
  }
};

ExporterSettings settings_from(std::map<std::string, std::string> options) {
  return ExporterSettings::from(
      micro::PluginArguments(micro::PluginKind::wrapper, "trace", "", std::move(options), {}));
}

std::string settings_error(std::map<std::string, std::string> options) {
  try {
    settings_from(std::move(options));
  } catch (const micro::Exception& error) {
    CHECK(error.error().code == 400);
    return error.error().detail;
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("OTLP JSON decodes strictly against the official schema" *
          doctest::test_suite("otlp schema")) {
  require_schema();
  auto spans = sample_trace();
  std::string payload = encode_otlp_json(spans, sample_resource(), sample_scope());
  CHECK(decode_strictly("json", payload) == expected_summary());
  // The OTLP JSON rules the protobuf mapping alone would not insist on.
  auto document = json::parse(payload);
  const auto& server = document["resourceSpans"][0]["scopeSpans"][0]["spans"][1];
  CHECK(server["traceId"] == "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
  CHECK(server["parentSpanId"] == "1011121314151617");
  CHECK(server["kind"] == 2);
  CHECK(server["status"]["code"] == 2);
  CHECK(server["startTimeUnixNano"] == nanos(1000));
  CHECK(server["attributes"][4]["value"]["intValue"] == "9223372036854775807");
  CHECK_FALSE(document["resourceSpans"][0]["scopeSpans"][0]["spans"][0].contains("parentSpanId"));
}

TEST_CASE("OTLP protobuf decodes strictly against the official schema" *
          doctest::test_suite("otlp schema")) {
  require_schema();
  auto spans = sample_trace();
  std::string payload = encode_otlp_protobuf(spans, sample_resource(), sample_scope());
  CHECK(decode_strictly("protobuf", payload) == expected_summary());
}

TEST_CASE("the schema decoder rejects what the schema or OTLP JSON rules forbid" *
          doctest::test_suite("otlp schema")) {
  require_schema();
  // So the two tests above can fail: each of these must not decode.
  auto span_with = [](const std::string& fields) {
    return R"({"resourceSpans":[{"scopeSpans":[{"spans":[{)" + fields + "}]}]}]}";
  };
  const std::string ids =
      R"("traceId":"a0a1a2a3a4a5a6a7a8a9aaabacadaeaf","spanId":"1011121314151617")";
  CHECK(run_decoder("json", span_with(ids + R"(,"name":"ok")")).exit_code == 0);
  CHECK(
      run_decoder("json", span_with(R"("traceId":"A0A1A2A3A4A5A6A7A8A9AAABACADAEAF")")).exit_code !=
      0);
  CHECK(run_decoder("json", span_with(ids + R"(,"nme":"typo")")).exit_code != 0);
  CHECK(run_decoder("json", span_with(ids + R"(,"start_time_unix_nano":"1")")).exit_code != 0);
  CHECK(run_decoder("json", span_with(ids + R"(,"startTimeUnixNano":1)")).exit_code != 0);
  CHECK(run_decoder("json", span_with(ids + R"(,"kind":"SPAN_KIND_SERVER")")).exit_code != 0);
  // Protobuf: a field number the request does not define (99, varint).
  std::string payload = encode_otlp_protobuf(sample_trace(), sample_resource(), sample_scope());
  CHECK(run_decoder("protobuf", payload + std::string("\x98\x06\x01", 3)).exit_code != 0);
}

TEST_CASE("OTLP JSON reads back into the same spans") {
  auto spans = sample_trace();
  auto decoded = decode_otlp_json(encode_otlp_json(spans, sample_resource(), sample_scope()));
  REQUIRE(decoded.size() == spans.size());
  for (std::size_t i = 0; i < spans.size(); ++i) {
    CAPTURE(spans[i].name);
    CHECK(decoded[i].context == spans[i].context);
    CHECK(decoded[i].parent_span_id == spans[i].parent_span_id);
    CHECK(decoded[i].parent_remote == spans[i].parent_remote);
    CHECK(decoded[i].kind == spans[i].kind);
    CHECK(decoded[i].start_time == spans[i].start_time);
    CHECK(decoded[i].end_time == spans[i].end_time);
    CHECK(decoded[i].attributes == spans[i].attributes);
    CHECK(decoded[i].status == spans[i].status);
    CHECK(decoded[i].status_message == spans[i].status_message);
    CHECK(decoded[i].events.size() == spans[i].events.size());
    CHECK(decoded[i].links.size() == spans[i].links.size());
  }
  CHECK(decoded[4].links[0].context == spans[4].links[0].context);

  auto error = [](const std::string& text) {
    try {
      std::istringstream input(text);
      read_span_lines(input);
    } catch (const micro::Exception& failure) {
      return failure.error().detail;
    }
    return std::string("(no error)");
  };
  CHECK(error("\n{bad") == "line 2: OTLP JSON: not valid JSON");
  CHECK(
      error(R"({"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"x","kind":"server",)"
            R"("traceId":"a0a1a2a3a4a5a6a7a8a9aaabacadaeaf","spanId":"1011121314151617"}]}]}]})") ==
      "line 1: OTLP JSON: [json.exception.type_error.302] type must be number, but is string");
  CHECK(error("{}") == "line 1: OTLP JSON: request has no \"resourceSpans\"");
  CHECK(error(R"({"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"x","traceId":"AB"}]}]}]})") ==
        "line 1: OTLP JSON: span \"x\".traceId \"AB\" is not 32 lowercase hex digits");
}

TEST_CASE("503 with Retry-After, then 200: the export is retried after the wait and succeeds") {
  Receiver receiver({{503, "1"}, {200, ""}});
  auto statistics = std::make_shared<ExporterStatistics>();
  auto exporter = make_exporter(otlp_settings(receiver.url(), "http/json"), sample_resource(),
                                sample_scope(), statistics);
  auto spans = sample_trace();
  CHECK(exporter->export_spans(spans) == ExportResult::success);
  auto requests = receiver.requests();
  REQUIRE(requests.size() == 2);
  CHECK(requests[1].time - requests[0].time >= 990ms);
  CHECK(requests[0].body == requests[1].body);
  CHECK(requests[1].target == "/v1/traces");
  CHECK(requests[1].headers["content-type"] == "application/json");
  // Exactly the encoder's bytes, which the "otlp schema" suite decodes strictly.
  CHECK(requests[1].body == encode_otlp_json(spans, sample_resource(), sample_scope()));
  CHECK(statistics->exported == spans.size());
  CHECK(statistics->retries == 1);
  CHECK(statistics->failed_exports == 0);
  exporter->shutdown(1s);
  CHECK(exporter->export_spans(spans) == ExportResult::failure);  // after shutdown
}

TEST_CASE("400 is not retried and counts as a failed export") {
  Receiver receiver({{400, ""}});
  auto statistics = std::make_shared<ExporterStatistics>();
  auto exporter = make_exporter(otlp_settings(receiver.url(), "http/protobuf"), sample_resource(),
                                sample_scope(), statistics);
  auto spans = sample_trace();
  CHECK(exporter->export_spans(spans) == ExportResult::failure);
  CHECK(receiver.requests().size() == 1);
  CHECK(statistics->failed_exports == 1);
  CHECK(statistics->dropped_on_failure == spans.size());
  CHECK(statistics->retries == 0);
  CHECK(statistics->exported == 0);
}

TEST_CASE(
    "retryable statuses stop at max_attempts, and a Retry-After past the timeout is not awaited") {
  auto spans = sample_trace();
  {
    Receiver receiver({{503, ""}, {429, ""}, {502, ""}});
    auto statistics = std::make_shared<ExporterStatistics>();
    auto settings = otlp_settings(receiver.url(), "http/protobuf");
    settings.max_attempts = 2;
    auto exporter = make_exporter(settings, sample_resource(), sample_scope(), statistics);
    CHECK(exporter->export_spans(spans) == ExportResult::failure_retryable);
    CHECK(receiver.requests().size() == 2);
    CHECK(statistics->retries == 1);
    CHECK(statistics->failed_exports == 1);
  }
  {
    Receiver receiver({{429, "30"}});
    auto statistics = std::make_shared<ExporterStatistics>();
    auto settings = otlp_settings(receiver.url(), "http/protobuf");
    settings.timeout = 2s;
    auto exporter = make_exporter(settings, sample_resource(), sample_scope(), statistics);
    auto started = std::chrono::steady_clock::now();
    CHECK(exporter->export_spans(spans) == ExportResult::failure_retryable);
    CHECK(std::chrono::steady_clock::now() - started < 1s);
    CHECK(receiver.requests().size() == 1);
    CHECK(statistics->failed_exports == 1);
  }
}

TEST_CASE("receiver down: the export fails within the timeout and is counted") {
  // A port nobody listens on: bound once, then released.
  std::string url;
  {
    asio::io_context io;
    asio::ip::tcp::acceptor probe(io, {asio::ip::make_address("127.0.0.1"), 0});
    url = "http://127.0.0.1:" + std::to_string(probe.local_endpoint().port()) + "/v1/traces";
  }
  auto statistics = std::make_shared<ExporterStatistics>();
  auto settings = otlp_settings(url, "http/protobuf");
  settings.timeout = 1500ms;
  auto exporter = make_exporter(settings, sample_resource(), sample_scope(), statistics);
  auto spans = sample_trace();
  auto started = std::chrono::steady_clock::now();
  CHECK(exporter->export_spans(spans) == ExportResult::failure_retryable);
  CHECK(std::chrono::steady_clock::now() - started < 2s);
  CHECK(statistics->retries >= 1);  // connection failures are retried
  CHECK(statistics->failed_exports == 1);
  CHECK(statistics->dropped_on_failure == spans.size());
}

TEST_CASE("gzip body and custom headers arrive") {
  Environment environment;
  Receiver receiver;
  auto settings = settings_from({{"endpoint", receiver.url("/custom/path")},
                                 {"compression", "gzip"},
                                 {"headers", "api-key=secret%20value, x-tenant=blue"}});
  auto statistics = std::make_shared<ExporterStatistics>();
  auto exporter = make_exporter(settings, sample_resource(), sample_scope(), statistics);
  auto spans = sample_trace();
  CHECK(exporter->export_spans(spans) == ExportResult::success);
  auto requests = receiver.requests();
  REQUIRE(requests.size() == 1);
  auto& request = requests[0];
  CHECK(request.target == "/custom/path");
  CHECK(request.headers["content-encoding"] == "gzip");
  CHECK(request.headers["content-type"] == "application/x-protobuf");
  CHECK(request.headers["api-key"] == "secret value");
  CHECK(request.headers["x-tenant"] == "blue");
  std::string body = gunzip(request.body);
  // Exactly the encoder's bytes, which the "otlp schema" suite decodes strictly.
  CHECK(body == encode_otlp_protobuf(spans, sample_resource(), sample_scope()));
  CHECK(statistics->exported == spans.size());
}

TEST_CASE("Retry-After parsing: seconds and HTTP dates") {
  auto now = std::chrono::system_clock::from_time_t(784111777);  // Sun, 06 Nov 1994 08:49:37 GMT
  CHECK(parse_retry_after("1", now) == 1000ms);
  CHECK(parse_retry_after(" 120 ", now) == 120000ms);
  CHECK(parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now) == 10000ms);
  CHECK(parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now) == 0ms);
  CHECK_FALSE(parse_retry_after("soon", now));
  CHECK_FALSE(parse_retry_after("-1", now));
  CHECK_FALSE(parse_retry_after("", now));
}

TEST_CASE("endpoint settings: generic env gets /v1/traces, per-signal is used as is") {
  {
    Environment environment({{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"}});
    CHECK(settings_from({}).endpoint == "http://collector:4318/v1/traces");
  }
  {
    Environment environment({{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"}});
    CHECK(settings_from({}).endpoint == "http://collector:4318/v1/traces");
  }
  {
    Environment environment({{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/otlp"}});
    CHECK(settings_from({}).endpoint == "http://collector:4318/otlp/v1/traces");
  }
  {
    Environment environment({{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"},
                             {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/custom"}});
    CHECK(settings_from({}).endpoint == "http://traces:4318/custom");
    // An explicit plugin option wins; one without a path gets /v1/traces.
    CHECK(settings_from({{"endpoint", "http://option:1234"}}).endpoint ==
          "http://option:1234/v1/traces");
    CHECK(settings_from({{"endpoint", "http://option:1234/x"}}).endpoint == "http://option:1234/x");
  }
  {
    Environment environment;
    auto defaults = settings_from({});
    CHECK(defaults.kind == "otlp");
    CHECK(defaults.endpoint == "http://localhost:4318/v1/traces");
    CHECK(defaults.protocol == "http/protobuf");
    CHECK(defaults.timeout == 10s);
    CHECK(defaults.compression == "none");
    CHECK(defaults.headers.empty());
  }
}

TEST_CASE("other settings: precedence option > per-signal env > generic env") {
  Environment environment({{"OTEL_EXPORTER_OTLP_HEADERS", "a=generic,b=generic"},
                           {"OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=signal,c=signal"},
                           {"OTEL_EXPORTER_OTLP_TIMEOUT", "5000"},
                           {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"},
                           {"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"},
                           {"OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"},
                           {"OTEL_TRACES_EXPORTER", "console"}});
  auto from_environment = settings_from({});
  CHECK(from_environment.headers ==
        std::map<std::string, std::string>{{"a", "generic"}, {"b", "signal"}, {"c", "signal"}});
  CHECK(from_environment.timeout == 2500ms);
  CHECK(from_environment.protocol == "http/json");
  CHECK(from_environment.compression == "gzip");
  CHECK(from_environment.kind == "console");

  auto from_options = settings_from({{"headers", "c=option"},
                                     {"timeout", "3s"},
                                     {"protocol", "http/protobuf"},
                                     {"compression", "none"},
                                     {"exporter", "file"},
                                     {"file", "/tmp/spans.jsonl"}});
  CHECK(from_options.headers.at("c") == "option");
  CHECK(from_options.headers.at("a") == "generic");
  CHECK(from_options.timeout == 3s);
  CHECK(from_options.protocol == "http/protobuf");
  CHECK(from_options.compression == "none");
  CHECK(from_options.kind == "file");
  CHECK(from_options.file_path == "/tmp/spans.jsonl");
}

TEST_CASE("malformed settings are refused with exact messages") {
  Environment environment;
  CHECK(settings_error({{"protocol", "http/xml"}}) ==
        "trace exporter: protocol option: unknown protocol \"http/xml\" (expected http/protobuf, "
        "http/json or grpc)");
  CHECK(settings_error({{"headers", "a=1,novalue"}}) ==
        "trace exporter: headers option: malformed header \"novalue\" (expected key=value)");
  CHECK(settings_error({{"headers", "=x"}}) ==
        "trace exporter: headers option: malformed header \"=x\" (expected key=value)");
  CHECK(settings_error({{"headers", "a=%zz"}}) ==
        "trace exporter: headers option: bad percent-encoding in \"%zz\"");
  CHECK(settings_error({{"headers", "a=%0d%0aInjected: 1"}}) ==
        "trace exporter: headers option: header \"a\" has a control character in its value");
  CHECK(settings_error({{"timeout", "soon"}}) ==
        "trace exporter: timeout option: \"soon\" is not a positive duration");
  CHECK(settings_error({{"compression", "zstd"}}) ==
        "trace exporter: compression option: unknown compression \"zstd\" (expected gzip or none)");
  CHECK(settings_error({{"exporter", "jaeger"}}) ==
        "trace exporter: unknown exporter \"jaeger\" (expected otlp, console, file or none)");
  CHECK(settings_error({{"exporter", "file"}}) ==
        "trace exporter: exporter=file needs the file option (the path to append OTLP JSON lines "
        "to)");
  CHECK(settings_error({{"endpoint", "collector:4318"}}) ==
        "trace exporter: endpoint \"collector:4318\": expected http:// or https:// before the "
        "host");
  CHECK(settings_error({{"endpoint", "http://collector:99999/v1/traces"}}) ==
        "trace exporter: endpoint \"http://collector:99999/v1/traces\": port \"99999\" is not a "
        "number from 1 to 65535");
  // https is fine; its TLS files must be usable, named by the option or variable that set them.
  CHECK(settings_error({{"endpoint", "https://collector:4318/v1/traces"}}) == "(no error)");
  CHECK(settings_error({{"endpoint", "https://collector:4318/v1/traces"},
                        {"tls_ca", "/nonexistent/ca.pem"}}) ==
        "trace exporter: cannot use tls_ca option \"/nonexistent/ca.pem\": cannot open the file");
  {
    Environment bad({{"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/nonexistent/client.pem"}});
    CHECK(settings_error({{"endpoint", "https://collector:4318/v1/traces"}}) ==
          "trace exporter: cannot use OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE "
          "\"/nonexistent/client.pem\": cannot open the file");
  }
  {
    Environment bad({{"OTEL_EXPORTER_OTLP_TIMEOUT", "10s"}});
    CHECK(settings_error({}) ==
          "trace exporter: OTEL_EXPORTER_OTLP_TIMEOUT: \"10s\" is not a positive number of "
          "milliseconds");
  }
  {
    Environment bad({{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc/json"}});
    CHECK(settings_error({}) ==
          "trace exporter: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: unknown protocol \"grpc/json\" "
          "(expected http/protobuf, http/json or grpc)");
  }
  {
    Environment bad({{"OTEL_EXPORTER_OTLP_HEADERS", "justakey"}});
    CHECK(settings_error({}) ==
          "trace exporter: OTEL_EXPORTER_OTLP_HEADERS: malformed header \"justakey\" (expected "
          "key=value)");
  }
}

TEST_CASE("file exporter appends one OTLP JSON request per line; none drops") {
  Environment environment;
  TemporaryFile file;
  auto statistics = std::make_shared<ExporterStatistics>();
  auto settings = settings_from({{"exporter", "file"}, {"file", file.path.string()}});
  auto exporter = make_exporter(settings, sample_resource(), sample_scope(), statistics);
  auto spans = sample_trace();
  CHECK(exporter->export_spans(std::span(spans).first(2)) == ExportResult::success);
  CHECK(exporter->export_spans(std::span(spans).subspan(2)) == ExportResult::success);
  exporter->shutdown(1s);
  std::string text = file.read();
  CHECK(std::count(text.begin(), text.end(), '\n') == 2);
  auto first_line = text.substr(0, text.find('\n'));
  // One request per export, the encoder's bytes (the "otlp schema" suite decodes them strictly).
  CHECK(first_line ==
        encode_otlp_json(std::span(spans).first(2), sample_resource(), sample_scope()));
  std::istringstream input(text);
  auto read_back = read_span_lines(input);
  REQUIRE(read_back.size() == spans.size());
  CHECK(read_back[4].name == "greetings process");
  CHECK(read_back[4].parent_span_id == spans[4].parent_span_id);
  CHECK(statistics->exported == spans.size());

  auto none = make_exporter(settings_from({{"exporter", "none"}}), {}, {}, statistics);
  CHECK(none->export_spans(spans) == ExportResult::success);
  CHECK(statistics->exported == spans.size());  // dropped, not counted as exported
}

TEST_CASE("console line") {
  auto spans = sample_trace();
  CHECK(format_console_line(spans[1]) ==
        "2023-11-14T22:13:20.124456Z trace=a0a1a2a3a4a5a6a7a8a9aaabacadaeaf span=2021222324252627 "
        "parent=1011121314151617 kind=server name=\"Greeter.Hello\" duration=8.000ms "
        "status=error(\"boom\") flag=true off=false ratio=3.25 negative=-42 "
        "big=9223372036854775807 zero=0 empty=\"\" names=[\"a\",\"b\"] counts=[1,-2,3] "
        "weights=[0.5,-1.5] checks=[true,false] events=1");
  CHECK(format_console_line(spans[0]).find(" parent=- kind=client ") != std::string::npos);
}

TEST_CASE("waterfall") {
  auto spans = sample_trace();
  // A second trace, started later, with a span whose parent is elsewhere (shown as a root).
  auto other = make_span(0x60, 0x99, "Cache.Get", SpanKind::client, 20000, 20500);
  other.context.trace_id.bytes = id_bytes<16>(0xb0);
  spans.push_back(other);
  // clang-format off
  const char* expected =
"trace a0a1a2a3a4a5a6a7a8a9aaabacadaeaf  5 spans  10.000ms\n"
"Greeter.Hello (client)                  0.000ms    10.000ms  |#####################################|\n"
"  Greeter.Hello (server) !              1.000ms     8.000ms  |   ###############################   |\n"
"    greetings publish (producer)        2.000ms     1.000ms  |       #####                         |\n"
"      greetings process (consumer)      4.000ms     4.000ms  |              ################       |\n"
"    Database.Insert (internal)          5.000ms     1.000ms  |                  #####              |\n"
"\n"
"trace b0b1b2b3b4b5b6b7b8b9babbbcbdbebf  1 span  0.500ms\n"
"Cache.Get (client)      0.000ms     0.500ms  |#####################################################|\n";
  // clang-format on
  CHECK(render_waterfall(spans, 100) == expected);
  CHECK(render_waterfall({}, 80).empty());
}

TEST_CASE("protocol=grpc: endpoint defaults to port 4317 and gets no /v1/traces") {
  CHECK(settings_from({{"protocol", "grpc"}}).endpoint == "http://localhost:4317");
  CHECK(settings_from({{"protocol", "grpc"}, {"endpoint", "http://collector:4317"}}).endpoint ==
        "http://collector:4317");
  {
    Environment environment({{"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"},
                             {"OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"}});
    auto settings = settings_from({});
    CHECK(settings.protocol == "grpc");
    CHECK(settings.endpoint == "https://collector:4317");
  }
  {
    Environment environment({{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"}});
    CHECK(settings_from({}).endpoint == "http://localhost:4317");
  }
  // http/protobuf keeps its own default.
  CHECK(settings_from({}).endpoint == "http://localhost:4318/v1/traces");
}
