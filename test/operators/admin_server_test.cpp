// The admin endpoint in one process: a Microservice with `admin` set, user-defined health checks
// (passing, failing, throwing), readiness while stopping, methods and pages refused with reasons,
// /traces from the span ring, and the metrics wrapper's chains and exemplars in a service.
#include <doctest/doctest.h>

#include <atomic>
#include <string>

#include <nlohmann/json.hpp>

#include <micro/admin.hpp>
#include <micro/http_client.hpp>
#include <micro/service.hpp>

#include "support/wait.hpp"

using namespace micro;

namespace {

http::Response admin_request(http::BlockingClient& client, const std::string& address,
                             const std::string& method, const std::string& path,
                             const std::string& token = {}) {
  http::Request request;
  request.method = method;
  request.url = http::parse_url("http://" + address + path);
  if (!token.empty()) request.headers.push_back({"Authorization", "Bearer " + token});
  http::RequestOptions options;
  options.deadline = http::Clock::now() + std::chrono::seconds(5);
  return client.request(std::move(request), options);
}

}  // namespace

TEST_CASE("health checks: user checks decide readiness; a throwing check fails with its reason") {
  auto config = Config::parse("registry=memory broker=memory admin=127.0.0.1:0");
  Microservice service("checked", config);
  std::atomic<bool> database_up{false};
  service.add_health_check("database", admin::Probe::readiness, [&]() -> admin::CheckResult {
    return {database_up.load(), database_up ? "connected" : "connection refused"};
  });
  service.add_health_check("disk", admin::Probe::liveness, [] {
    return admin::CheckResult{true, "42% used"};
  });
  service.handle("Checked.Ping", [](Context&, const nlohmann::json&) { return nlohmann::json{}; });
  std::string address = service.admin_address();
  REQUIRE(address.starts_with("127.0.0.1:"));
  http::BlockingClient client;

  // Before start: alive, not ready (not listening, not registered).
  CHECK(admin_request(client, address, "GET", "/health/live").status == 200);
  auto ready = admin_request(client, address, "GET", "/health/ready");
  CHECK(ready.status == 503);
  auto body = nlohmann::json::parse(ready.body);
  CHECK(body["checks"]["listening"]["ok"] == false);
  CHECK(body["checks"]["database"]["detail"] == "connection refused");
  CHECK(body["checks"]["disk"]["ok"] == true);

  service.start();
  CHECK(admin_request(client, address, "GET", "/health/ready").status == 503);  // database
  database_up = true;
  ready = admin_request(client, address, "GET", "/health/ready");
  CHECK(ready.status == 200);
  CHECK(nlohmann::json::parse(ready.body)["status"] == "ok");
  // The node advertises its admin address.
  CHECK(service.server().registration().nodes.at(0).metadata.at("admin") == address);

  service.add_health_check("flaky", admin::Probe::liveness,
                           []() -> admin::CheckResult { throw std::runtime_error("boom"); });
  auto live = admin_request(client, address, "GET", "/health/live");
  CHECK(live.status == 503);
  CHECK(nlohmann::json::parse(live.body)["checks"]["flaky"]["detail"] == "check threw: boom");

  service.stop();
  ready = admin_request(client, address, "GET", "/health/ready");
  CHECK(ready.status == 503);
  CHECK(nlohmann::json::parse(ready.body)["checks"]["draining"]["ok"] == false);
}

TEST_CASE("admin server: methods, unknown pages, HEAD, and the token's constant-time check") {
  admin::AdminOptions options;
  options.address = "127.0.0.1:0";
  options.token = "s3cret";
  metrics::Registry registry;
  registry.counter("seen_total", "seen").with({}).add(4);
  options.registry = &registry;
  admin::AdminServer server(options);
  server.set_page("/things", [] { return nlohmann::json{{"things", 2}}; });
  server.listen();
  http::BlockingClient client;
  std::string address = server.address();

  auto refused = admin_request(client, address, "GET", "/metrics");
  CHECK(refused.status == 401);
  CHECK(refused.header("WWW-Authenticate").starts_with("Bearer"));
  CHECK(admin_request(client, address, "GET", "/metrics", "s3cre").status == 401);
  auto metrics_page = admin_request(client, address, "GET", "/metrics", "s3cret");
  CHECK(metrics_page.status == 200);
  CHECK(metrics_page.body.find("seen_total 4\n") != std::string::npos);
  CHECK(admin_request(client, address, "GET", "/health/live").status == 200);  // probes open

  auto posted = admin_request(client, address, "POST", "/metrics", "s3cret");
  CHECK(posted.status == 405);
  CHECK(posted.header("Allow") == "GET, HEAD");
  auto missing = admin_request(client, address, "GET", "/nope", "s3cret");
  CHECK(missing.status == 404);
  CHECK(missing.body.find("no admin page at '/nope'") != std::string::npos);
  auto things = admin_request(client, address, "GET", "/things?x=1", "s3cret");
  CHECK(nlohmann::json::parse(things.body)["things"] == 2);

  // /traces: what was recorded into the span ring, grouped by trace.
  CHECK(admin::recent_spans().enabled());
  std::string trace_id(32, 'a');
  admin::recent_spans().record(
      {trace_id, std::string(16, '1'), "", "GET /x", "server", "ok", 1000.0, 0.004});
  admin::recent_spans().record({trace_id, std::string(16, '2'), std::string(16, '1'),
                                "Db.Query <&>", "client", "error", 1000.001, 0.002});
  auto traces =
      nlohmann::json::parse(admin_request(client, address, "GET", "/traces", "s3cret").body);
  REQUIRE(traces["traces"].size() >= 1);
  auto& newest = traces["traces"][0];
  CHECK(newest["trace_id"] == trace_id);
  REQUIRE(newest["spans"].size() == 2);
  CHECK(newest["spans"][0]["name"] == "GET /x");
  CHECK(newest["spans"][1]["parent_span_id"] == std::string(16, '1'));
  http::Request html_request;
  html_request.method = "GET";
  html_request.url = http::parse_url("http://" + address + "/traces");
  html_request.headers = {{"Accept", "text/html"}, {"Authorization", "Bearer s3cret"}};
  auto html = client.request(std::move(html_request)).body;
  CHECK(html.find("trace " + trace_id) != std::string::npos);
  CHECK(html.find("Db.Query &lt;&amp;&gt;") != std::string::npos);  // escaped
  CHECK(html.find("class=\"bar error\"") != std::string::npos);

  server.set_draining(true);
  CHECK(admin_request(client, address, "GET", "/health/ready").status == 503);
  server.close();
  CHECK_THROWS_AS(admin_request(client, address, "GET", "/health/live"), Exception);
}

TEST_CASE("metrics wrapper in a service: server, client and call chains, exemplars from traces") {
  auto config = Config::parse(
      "registry=memory broker=memory admin=127.0.0.1:0 wrappers=trace?exporter=none,metrics");
  Microservice service("echoer", config);
  service.handle("Echoer.Echo", [](Context&, const nlohmann::json& request) {
    if (request.value("fail", false))
      throw Exception(Error("echoer", ErrorCode::bad_request, "asked to fail"));
    return request;
  });
  service.start();
  for (int i = 0; i < 3; ++i)
    service.client().call<nlohmann::json>("echoer", "Echoer.Echo", nlohmann::json{{"n", i}});
  CHECK_THROWS_AS(service.client().call<nlohmann::json>("echoer", "Echoer.Echo",
                                                        nlohmann::json{{"fail", true}}),
                  Exception);
  http::BlockingClient client;
  http::Request request;
  request.method = "GET";
  request.url = http::parse_url("http://" + service.admin_address() + "/metrics");
  request.headers.push_back({"Accept", "application/openmetrics-text; version=1.0.0"});
  auto response = client.request(std::move(request));
  REQUIRE(response.status == 200);
  const std::string& text = response.body;
  auto has = [&](const std::string& line) {
    CAPTURE(line);
    CHECK(text.find(line) != std::string::npos);
  };
  has("micro_requests_total{chain=\"server\",service=\"echoer\",endpoint=\"Echoer.Echo\","
      "status=\"success\"} 3\n");
  has("micro_requests_total{chain=\"server\",service=\"echoer\",endpoint=\"Echoer.Echo\","
      "status=\"400\"} 1\n");
  has("micro_requests_total{chain=\"client\",service=\"echoer\",endpoint=\"Echoer.Echo\","
      "status=\"success\"} 3\n");
  has("micro_requests_total{chain=\"call\",service=\"echoer\",endpoint=\"Echoer.Echo\","
      "status=\"400\"} 1\n");
  has("micro_request_duration_seconds_count{chain=\"client\",service=\"echoer\","
      "endpoint=\"Echoer.Echo\",status=\"success\"} 3\n");
  // Traced calls leave exemplars: "… # {trace_id=\"<32 hex>\",span_id=\"<16 hex>\"} value ts".
  auto exemplar = text.find("micro_request_duration_seconds_bucket{chain=\"server\"");
  REQUIRE(exemplar != std::string::npos);
  auto marker = text.find(" # {trace_id=\"", exemplar);
  REQUIRE(marker != std::string::npos);
  std::string trace_id = text.substr(marker + 14, 32);
  CHECK(trace_id.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(text.ends_with("# EOF\n"));
  service.stop();
}

TEST_CASE("/traces: the spans the trace wrapper ended, client and server of one trace") {
  auto config = Config::parse(
      "registry=memory broker=memory admin=127.0.0.1:0 "
      "wrappers=trace?exporter=none&sampler=always_on");
  Microservice service("tracer", config);
  service.handle("Tracer.Echo", [](Context&, const nlohmann::json& request) { return request; });
  service.start();
  auto before = admin::recent_spans().recorded();
  service.client().call<nlohmann::json>("tracer", "Tracer.Echo", nlohmann::json{{"n", 1}});
  // The server's span may end just after the client has its answer.
  http::BlockingClient client;
  nlohmann::json body;
  std::string server_span_trace, client_span_trace, client_span_id, server_parent;
  bool found = test_support::wait_until(
      [&] {
        auto response = admin_request(client, service.admin_address(), "GET", "/traces");
        if (response.status != 200) return false;
        body = nlohmann::json::parse(response.body);
        for (const auto& trace : body["traces"])
          for (const auto& span : trace["spans"]) {
            if (span["name"] != "Tracer.Echo") continue;
            if (span["kind"] == "server") {
              server_span_trace = trace["trace_id"];
              server_parent = span["parent_span_id"];
            }
            if (span["kind"] == "client") {
              client_span_trace = trace["trace_id"];
              client_span_id = span["span_id"];
            }
          }
        return !server_span_trace.empty() && !client_span_trace.empty();
      },
      std::chrono::seconds(5), std::chrono::milliseconds(20));
  CAPTURE(body.dump());
  REQUIRE(found);
  CHECK(body["enabled"] == true);
  CHECK(body["recorded"].get<std::uint64_t>() >= before + 2);
  CHECK(server_span_trace == client_span_trace);
  CHECK(server_span_trace.size() == 32);
  CHECK(!server_parent.empty());
  service.stop();
}

TEST_CASE("toolkit gauges: transport connections, broker counts, trace span counts") {
  auto config = Config::parse(
      "registry=memory broker=memory transport=http admin=127.0.0.1:0 "
      "wrappers=trace?exporter=none&sampler=always_on");
  Microservice service("gauged", config);
  service.handle("Gauged.Echo", [](Context&, const nlohmann::json& request) { return request; });
  std::atomic<int> delivered{0};
  service.subscribe("gauged.events", [&](Context&, Message& message) {
    delivered++;
    if (message.body == "\"fail\"") throw std::runtime_error("asked to fail");
  });
  service.start();
  service.client().call<nlohmann::json>("gauged", "Gauged.Echo", nlohmann::json{{"n", 1}});
  service.client().publish("gauged.events", std::string("ok"));
  service.client().publish("gauged.events", std::string("fail"));
  REQUIRE(test_support::wait_until([&] { return delivered == 2; }));
  http::BlockingClient client;
  std::string text;
  auto has = [&](const std::string& line) {
    return text.find(line) != std::string::npos;
  };
  // The subscriber's failure is counted once its handler has returned.
  bool counted = test_support::wait_until(
      [&] {
        text = admin_request(client, service.admin_address(), "GET", "/metrics").body;
        return has("micro_broker_delivery_failures_total{service=\"gauged\"} 1\n");
      },
      std::chrono::seconds(5), std::chrono::milliseconds(20));
  CAPTURE(text);
  CHECK(counted);
  // The call's connection is kept alive in the client's pool and open on the server.
  CHECK(has("micro_transport_server_connections{service=\"gauged\",transport=\"http\"} 1\n"));
  CHECK(has("micro_transport_client_connections{service=\"gauged\",transport=\"http\"} 1\n"));
  CHECK(has("micro_broker_published_total{service=\"gauged\"} 2\n"));
  CHECK(has("micro_broker_delivered_total{service=\"gauged\"} 2\n"));
  CHECK(has("micro_trace_spans_started_total "));
  CHECK(!has("micro_trace_spans_started_total 0\n"));
  service.stop();
}

TEST_CASE("toolkit gauges: tcp and grpc connections open on both sides while kept, none after") {
  for (std::string name : {"tcp", "grpc"}) {
    CAPTURE(name);
    std::unique_ptr<Microservice> made;
    try {
      made = std::make_unique<Microservice>(
          "gauged-" + name, Config::parse("registry=memory admin=127.0.0.1:0 transport=" + name));
    } catch (const Exception& e) {
      if (name == "grpc" && e.error().code == 404) continue;  // built without nghttp2
      throw;
    }
    Microservice& service = *made;
    service.handle("Gauged.Echo", [](Context&, const nlohmann::json& request) { return request; });
    service.start();
    service.client().call<nlohmann::json>("gauged-" + name, "Gauged.Echo",
                                          nlohmann::json{{"n", 1}});
    http::BlockingClient client;
    auto gauge = [&](const std::string& side) {
      std::string text = admin_request(client, service.admin_address(), "GET", "/metrics").body;
      std::string key = "micro_transport_" + side + "_connections{service=\"gauged-" + name +
                        "\",transport=\"" + name + "\"} ";
      auto at = text.find(key);
      return at == std::string::npos ? -1.0 : std::stod(text.substr(at + key.size()));
    };
    // The call's connection stays pooled on the client and open on the server.
    CHECK(gauge("client") >= 1);
    CHECK(test_support::wait_until([&] { return gauge("server") >= 1; }, std::chrono::seconds(5)));
    service.transport().close();  // the pooled connections go
    CHECK(test_support::wait_until([&] { return gauge("client") == 0; }, std::chrono::seconds(5)));
    CHECK(test_support::wait_until([&] { return gauge("server") == 0; }, std::chrono::seconds(5)));
    service.stop();
  }
}

namespace {

// Echoes each message back; finishes when the client closes its side.
void echo_next(const MessageStreamPtr& stream) {
  stream->async_read([stream](std::optional<std::string> message) {
    if (!message) {
      stream->finish(Response{});
      return;
    }
    stream->async_write(std::move(*message), [stream](std::optional<Error> error) {
      if (error) return;
      echo_next(stream);
    });
  });
}

}  // namespace

TEST_CASE("metrics wrapper: streams count their messages each way and end as one request") {
  Microservice service("streamer", Config::parse("registry=memory admin=127.0.0.1:0 "
                                                 "wrappers=metrics"));
  service.handle_stream("Streamer.Echo", [](const MessageStreamPtr& stream) { echo_next(stream); });
  service.start();
  auto stream = service.client().open_stream("streamer", "Streamer.Echo");
  for (int i = 0; i < 3; ++i) {
    stream.send("\"m" + std::to_string(i) + "\"");
    REQUIRE(stream.receive());
  }
  stream.close_send();
  CHECK_FALSE(stream.receive());
  CHECK_FALSE(stream.error());
  http::BlockingClient client;
  std::string text;
  auto has = [&](const std::string& line) {
    return text.find(line) != std::string::npos;
  };
  const std::string labels = "service=\"streamer\",endpoint=\"Streamer.Echo\"";
  // The server's end is recorded when its stream ends, which may be just after the client's.
  bool recorded = test_support::wait_until(
      [&] {
        text = admin_request(client, service.admin_address(), "GET", "/metrics").body;
        return has("micro_requests_total{chain=\"server\"," + labels + ",status=\"success\"} 1\n");
      },
      std::chrono::seconds(5), std::chrono::milliseconds(20));
  CAPTURE(text);
  CHECK(recorded);
  CHECK(has("micro_requests_total{chain=\"client\"," + labels + ",status=\"success\"} 1\n"));
  for (const char* chain : {"server", "client"})
    for (const char* direction : {"sent", "received"})
      CHECK(has(std::string("micro_stream_messages_total{chain=\"") + chain + "\"," + labels +
                ",direction=\"" + direction + "\"} 3\n"));
  service.stop();
}
