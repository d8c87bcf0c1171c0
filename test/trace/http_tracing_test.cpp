// The trace-aware HTTP client (<micro/http_tracing.hpp>) against a real Beast server on
// loopback, with the trace SDK installed: the headers the server receives (traceparent of the
// CLIENT span, tracestate, baggage; the context's own headers passed through with tracing off)
// and the span recorded (name, kind, parent, the HTTP client attributes, status for 4xx/5xx,
// failures, the context's deadline and cancellation).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <boost/asio/use_future.hpp>

#include <micro/error.hpp>
#include <micro/http_tracing.hpp>
#include <micro/trace.hpp>

#include "http/http_test_server.hpp"
#include "sdk_tracer.hpp"
#include "support/wait.hpp"

namespace mh = micro::http;
using namespace std::chrono_literals;
using micro::trace::AttributeValue;
using micro::trace::SpanContext;
using micro::trace::SpanKind;
using micro::trace::StatusCode;
using micro::trace::sdk::SpanData;

namespace {

// Keeps every ended span in memory.
class CollectingProcessor final : public micro::trace::sdk::SpanProcessor {
 public:
  void on_end(SpanData&& span) noexcept override {
    std::lock_guard lock(mutex_);
    spans_.push_back(std::move(span));
  }
  bool force_flush(std::chrono::milliseconds) override { return true; }
  bool shutdown() override { return true; }
  std::vector<SpanData> spans() {
    std::lock_guard lock(mutex_);
    return spans_;
  }
  // The one span named `name` (fails the test when there is not exactly one).
  SpanData span(const std::string& name) {
    std::vector<SpanData> found;
    for (auto& span : spans())
      if (span.name == name) found.push_back(span);
    REQUIRE_MESSAGE(found.size() == 1, "spans named ", name, ": ", found.size());
    return found.front();
  }

 private:
  std::mutex mutex_;
  std::vector<SpanData> spans_;
};

const AttributeValue* attribute(const SpanData& span, std::string_view key) {
  for (const auto& [name, value] : span.attributes)
    if (name == key) return &value;
  return nullptr;
}
std::string text(const SpanData& span, std::string_view key) {
  const AttributeValue* value = attribute(span, key);
  return value && std::holds_alternative<std::string>(*value) ? std::get<std::string>(*value)
                                                              : "<missing>";
}
std::int64_t number(const SpanData& span, std::string_view key) {
  const AttributeValue* value = attribute(span, key);
  return value && std::holds_alternative<std::int64_t>(*value) ? std::get<std::int64_t>(*value)
                                                               : -1;
}

// The trace SDK installed for one test (parent-based always_on), and a traced client.
struct Fixture {
  std::shared_ptr<CollectingProcessor> processor = std::make_shared<CollectingProcessor>();
  mh::BlockingClient blocking;
  mh::TracedClient traced{blocking.client()};

  Fixture() {
    micro::trace::set_tracer(std::make_shared<micro::trace::sdk::SdkTracer>(
        micro::trace::sdk::make_parent_based_sampler(micro::trace::sdk::make_always_on_sampler()),
        processor));
  }
  ~Fixture() { micro::trace::set_tracer(nullptr); }

  mh::Response call(const micro::Context& context, mh::Request request,
                    mh::RequestOptions options = {}) {
    return traced.async_request(context, std::move(request), options, boost::asio::use_future)
        .get();
  }
};

// A server that answers every request with `status` and remembers the headers it received.
struct RecordingServer {
  std::mutex mutex;
  std::vector<mh::Fields> received;
  unsigned status = 200;
  http_test::Server server{[this](http_test::Peer& peer) {
    while (auto request = peer.read_request()) {
      mh::Fields headers;
      for (const auto& field : request->base())
        headers.push_back({std::string(field.name_string()), std::string(field.value())});
      {
        std::lock_guard lock(mutex);
        received.push_back(std::move(headers));
      }
      peer.answer("{}", status);
    }
  }};

  mh::Fields last() {
    std::lock_guard lock(mutex);
    REQUIRE(!received.empty());
    return received.back();
  }
};

mh::Request post(const std::string& url, std::string body = "{}") {
  return {.method = "POST", .url = mh::parse_url(url), .headers = {}, .body = std::move(body)};
}

// How many fields of `headers` are named `name`, any case.
int count(const mh::Fields& headers, std::string_view name) {
  int found = 0;
  for (const auto& field : headers) found += micro::iequals(field.name, name);
  return found;
}

// A handler's context: the server span started from a caller's traceparent, as the trace
// wrappers start it, with the caller's headers in the metadata.
micro::Context handler_context(const std::string& traceparent, const std::string& tracestate,
                               const std::string& baggage) {
  micro::Context context;
  context.metadata().set("traceparent", traceparent);
  context.metadata().set("tracestate", tracestate);
  context.metadata().set("baggage", baggage);
  auto remote = micro::trace::extract(context.metadata());
  micro::trace::StartOptions options;
  options.kind = SpanKind::server;
  options.parent = remote ? &*remote : nullptr;
  context.set_span(micro::trace::start_span("Orders.Place", context, options));
  return context;
}

const std::string caller_trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
const std::string caller_traceparent = "00-" + caller_trace_id + "-00f067aa0ba902b7-03";

}  // namespace

TEST_CASE("traced HTTP client: the request carries the CLIENT span's context, the span its call") {
  Fixture fixture;
  RecordingServer server;
  micro::Context context =
      handler_context(caller_traceparent, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
                      "userId=alice,isProduction=false");
  mh::Request request = post(server.server.url("/items?sig=s3cret&page=2"));
  request.headers.push_back({"Content-Type", "application/json"});
  mh::Response response = fixture.call(context, std::move(request));
  CHECK(response.status == 200);
  context.span()->end();

  SpanData span = fixture.processor->span("POST");
  SpanData parent = fixture.processor->span("Orders.Place");
  CHECK(span.kind == SpanKind::client);
  CHECK(span.context.trace_id.to_hex() == caller_trace_id);
  CHECK(span.parent_span_id == parent.context.span_id);
  CHECK(span.status == StatusCode::unset);
  CHECK(text(span, "http.request.method") == "POST");
  CHECK(text(span, "url.full") == server.server.url("/items?sig=REDACTED&page=2"));
  CHECK(text(span, "server.address") == "127.0.0.1");
  CHECK(number(span, "server.port") == std::stoll(mh::parse_url(server.server.url()).port));
  CHECK(number(span, "http.response.status_code") == 200);
  CHECK(attribute(span, "error.type") == nullptr);

  // What the server received: one traceparent naming the CLIENT span (the random and sampled
  // flags carried on), the tracestate, the baggage, and the request's own headers.
  mh::Fields headers = server.last();
  CHECK(count(headers, "traceparent") == 1);
  CHECK(mh::find_field(headers, "traceparent") ==
        "00-" + caller_trace_id + "-" + span.context.span_id.to_hex() + "-03");
  CHECK(mh::find_field(headers, "tracestate") == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
  CHECK(mh::find_field(headers, "baggage") == "userId=alice,isProduction=false");
  CHECK(mh::find_field(headers, "content-type") == "application/json");
}

TEST_CASE("traced HTTP client: each exchange is a span of its own, each a new parent id") {
  Fixture fixture;
  RecordingServer server;
  micro::Context context = handler_context(caller_traceparent, "", "");
  for (int index = 0; index < 3; ++index) fixture.call(context, post(server.server.url("/")));
  std::vector<std::string> parents;
  for (const auto& headers : server.received) {
    auto remote = mh::extract_trace_context(headers);
    REQUIRE(remote);
    CHECK(remote->trace_id.to_hex() == caller_trace_id);
    parents.push_back(remote->span_id.to_hex());
    CHECK(count(headers, "tracestate") == 0);  // none came in, none goes out
  }
  REQUIRE(parents.size() == 3);
  CHECK(parents[0] != parents[1]);
  CHECK(parents[1] != parents[2]);
  CHECK(parents[0] != parents[2]);
}

TEST_CASE("traced HTTP client: a status of 400 or more is an error, with the code as error.type") {
  Fixture fixture;
  RecordingServer server;
  server.status = 503;
  micro::Context context;  // no active span: the client span starts a trace
  mh::Response response = fixture.call(context, post(server.server.url("/")));
  CHECK(response.status == 503);
  SpanData span = fixture.processor->span("POST");
  CHECK_FALSE(span.parent_span_id.valid());
  CHECK(span.status == StatusCode::error);
  CHECK(text(span, "error.type") == "503");
  CHECK(number(span, "http.response.status_code") == 503);
  // A new trace from random ids: the level 2 random flag is set.
  CHECK(mh::find_field(server.last(), "traceparent").substr(53) == "03");
}

TEST_CASE("traced HTTP client: a connection refused ends the span with connection_error") {
  Fixture fixture;
  std::string url;
  {
    RecordingServer closed;  // a port that was just free
    url = closed.server.url("/");
  }
  micro::Context context;
  micro::Error error;
  try {
    fixture.call(context, post(url));
  } catch (const micro::Exception& e) {
    error = e.error();
  }
  CHECK(error.code == 503);
  SpanData span = fixture.processor->span("POST");
  CHECK(span.status == StatusCode::error);
  CHECK(text(span, "error.type") == "connection_error");
  CHECK(span.status_message == error.detail);
  CHECK(attribute(span, "http.response.status_code") == nullptr);
}

TEST_CASE("traced HTTP client: the context's deadline and cancellation apply to the exchange") {
  Fixture fixture;
  http_test::Signal release;
  std::atomic<int> arrived{0};
  http_test::Server slow([&](http_test::Peer& peer) {
    while (peer.read_request()) {
      ++arrived;
      release.wait(10s);  // answers only once the test is done
      peer.answer("late");
    }
  });

  SUBCASE("deadline") {
    micro::Context context;
    context.set_timeout(200ms);
    micro::Error error;
    try {
      fixture.call(context, post(slow.url("/")));
    } catch (const micro::Exception& e) {
      error = e.error();
    }
    CHECK(error.code == 408);
    SpanData span = fixture.processor->span("POST");
    CHECK(text(span, "error.type") == "timeout");
    CHECK(span.status == StatusCode::error);
  }
  SUBCASE("the options' own deadline wins") {
    micro::Context context;
    context.set_timeout(10s);
    mh::RequestOptions options;
    options.deadline = mh::Clock::now() + 100ms;
    CHECK_THROWS_AS(fixture.call(context, post(slow.url("/")), options), micro::Exception);
  }
  SUBCASE("cancellation") {
    micro::Context context;
    auto cancellation = context.cancellation();
    auto pending =
        fixture.traced.async_request(context, post(slow.url("/")), {}, boost::asio::use_future);
    REQUIRE(test_support::wait_until([&] { return arrived.load() == 1; }));
    cancellation->cancel();
    micro::Error error;
    try {
      pending.get();
    } catch (const micro::Exception& e) {
      error = e.error();
    }
    CHECK(error.code == 499);
    CHECK(error.detail == "POST " + slow.url("/") + ": cancelled");
    SpanData span = fixture.processor->span("POST");
    CHECK(text(span, "error.type") == "cancelled");
  }
  release.raise();
}

TEST_CASE("traced HTTP client: a traceparent in the metadata is the parent when no span is") {
  Fixture fixture;
  RecordingServer server;
  micro::Context context;
  context.metadata().set("Traceparent", caller_traceparent);  // as a Go peer writes it
  context.metadata().set("Tracestate", "go=1");
  fixture.call(context, post(server.server.url("/")));
  SpanData span = fixture.processor->span("POST");
  CHECK(span.context.trace_id.to_hex() == caller_trace_id);
  CHECK(span.parent_span_id.to_hex() == "00f067aa0ba902b7");
  CHECK(span.parent_remote);
  mh::Fields headers = server.last();
  CHECK(mh::find_field(headers, "traceparent") ==
        "00-" + caller_trace_id + "-" + span.context.span_id.to_hex() + "-03");
  CHECK(mh::find_field(headers, "tracestate") == "go=1");
}

TEST_CASE("traced HTTP client: methods the conventions do not know are _OTHER, span HTTP") {
  Fixture fixture;
  RecordingServer server;
  micro::Context context;
  mh::Request request = post(server.server.url("/cache"));
  request.method = "PURGE";
  fixture.call(context, std::move(request));
  SpanData span = fixture.processor->span("HTTP");
  CHECK(text(span, "http.request.method") == "_OTHER");
  CHECK(text(span, "http.request.method_original") == "PURGE");
}

TEST_CASE("traced HTTP client: with tracing off the context's headers pass through unchanged") {
  micro::trace::set_tracer(nullptr);
  mh::BlockingClient blocking;
  mh::TracedClient traced(blocking.client());
  RecordingServer server;
  micro::Context context;
  // A future version with more fields: a pass-through does not rewrite what it cannot read.
  const std::string future = "cc-" + caller_trace_id + "-00f067aa0ba902b7-01-extra";
  context.metadata().set("traceparent", future);
  context.metadata().set("tracestate", "congo=t61rcWkgMzE, rojo=1");
  context.metadata().set("baggage", "k=v%20w;p=1");
  traced.async_request(context, post(server.server.url("/")), {}, boost::asio::use_future).get();
  mh::Fields headers = server.last();
  CHECK(mh::find_field(headers, "traceparent") == future);
  CHECK(mh::find_field(headers, "tracestate") == "congo=t61rcWkgMzE, rojo=1");
  CHECK(mh::find_field(headers, "baggage") == "k=v%20w");  // re-encoded; properties dropped

  SUBCASE("an invalid traceparent is not passed on, nor its tracestate") {
    micro::Context bad;
    bad.metadata().set("traceparent", "00-" + std::string(32, '0') + "-00f067aa0ba902b7-01");
    bad.metadata().set("tracestate", "congo=1");
    traced.async_request(bad, post(server.server.url("/")), {}, boost::asio::use_future).get();
    CHECK(count(server.last(), "traceparent") == 0);
    CHECK(count(server.last(), "tracestate") == 0);
  }
}

TEST_CASE("traced HTTP client: the request's own baggage and stale trace headers") {
  Fixture fixture;
  RecordingServer server;
  micro::Context context = handler_context(caller_traceparent, "", "from=context");
  mh::Request request = post(server.server.url("/"));
  request.headers.push_back({"Baggage", "from=request"});
  request.headers.push_back(
      {"TraceParent", "00-" + std::string(32, 'a') + "-" + std::string(16, 'b') + "-01"});
  request.headers.push_back({"TRACESTATE", "stale=1"});
  fixture.call(context, std::move(request));
  mh::Fields headers = server.last();
  CHECK(mh::find_field(headers, "baggage") == "from=request");  // the caller's choice stays
  CHECK(count(headers, "traceparent") == 1);                    // ours replaces theirs
  CHECK(mh::find_field(headers, "traceparent").substr(3, 32) == caller_trace_id);
  CHECK(count(headers, "tracestate") == 0);
}
