// The trace wrappers over a real server and client (tcp transport, memory registry and
// broker): one connected trace from the client call through its attempt, the server span,
// a child span in the handler and a publish to the consumer; kinds, parentage, links,
// attributes, error status, a fresh parent id per hop, a Go peer's "Traceparent", and
// headers passing through untouched when tracing is off. Spans are recorded by a small
// Tracer implementation installed with set_tracer.
#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <future>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>

#include <micro/client.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/runtime.hpp>
#include <micro/server.hpp>
#include <micro/trace.hpp>

#include "trace_wrappers.hpp"

#include "support/allocation_counter.hpp"  // one per program: this file

using test_support::allocations;

using namespace std::chrono_literals;
using micro::trace::Attribute;
using micro::trace::AttributeValue;
using micro::trace::SpanContext;
using micro::trace::SpanKind;
using micro::trace::StatusCode;

namespace {

struct Echo {
  std::string text;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Echo, text)

// What the recording tracer keeps of a finished span.
struct RecordedSpan {
  std::string name;
  SpanKind kind = SpanKind::internal;
  SpanContext context;
  SpanContext parent;  // invalid for a root
  std::vector<Attribute> attributes;
  std::vector<micro::trace::Link> links;
  StatusCode status = StatusCode::unset;
  std::string status_message;

  const AttributeValue* attribute(std::string_view key) const {
    for (const auto& [name, value] : attributes)
      if (name == key) return &value;
    return nullptr;
  }
  std::string text(std::string_view key) const {
    auto* value = attribute(key);
    return value && std::holds_alternative<std::string>(*value) ? std::get<std::string>(*value)
                                                                : "<missing>";
  }
  std::int64_t number(std::string_view key) const {
    auto* value = attribute(key);
    return value && std::holds_alternative<std::int64_t>(*value) ? std::get<std::int64_t>(*value)
                                                                 : -1;
  }
};

struct SpanStore {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<RecordedSpan> finished;

  void add(RecordedSpan span) {
    {
      std::lock_guard lock(mutex);
      finished.push_back(std::move(span));
    }
    changed.notify_all();
  }
  // Waits (bounded) until `count` spans have ended; returns a copy of them.
  std::vector<RecordedSpan> wait_for(std::size_t count) {
    std::unique_lock lock(mutex);
    changed.wait_for(lock, 10s, [&] { return finished.size() >= count; });
    return finished;
  }
  std::size_t size() {
    std::lock_guard lock(mutex);
    return finished.size();
  }
  void clear() {
    std::lock_guard lock(mutex);
    finished.clear();
  }
};

class RecordingSpan : public micro::trace::Span {
 public:
  RecordingSpan(RecordedSpan data, std::shared_ptr<SpanStore> store)
      : data_(std::move(data)), store_(std::move(store)) {}
  const SpanContext& context() const noexcept override { return data_.context; }
  bool recording() const noexcept override { return true; }
  void set_attribute(std::string_view key, AttributeValue value) override {
    std::lock_guard lock(mutex_);
    if (!ended_) data_.attributes.emplace_back(std::string(key), std::move(value));
  }
  void add_event(std::string_view, std::vector<Attribute>) override {}
  void add_link(const SpanContext& context, std::vector<Attribute> attributes) override {
    std::lock_guard lock(mutex_);
    if (!ended_) data_.links.push_back({context, std::move(attributes)});
  }
  void set_status(StatusCode code, std::string_view description) override {
    std::lock_guard lock(mutex_);
    if (ended_) return;
    data_.status = code;
    data_.status_message = code == StatusCode::error ? std::string(description) : "";
  }
  void update_name(std::string_view name) override {
    std::lock_guard lock(mutex_);
    if (!ended_) data_.name = std::string(name);
  }
  void end(std::chrono::system_clock::time_point) override {
    std::unique_lock lock(mutex_);
    if (ended_) return;
    ended_ = true;
    RecordedSpan copy = data_;
    lock.unlock();
    store_->add(std::move(copy));
  }

 private:
  std::mutex mutex_;
  bool ended_ = false;
  RecordedSpan data_;
  std::shared_ptr<SpanStore> store_;
};

// Parentage as the API defines it: options.parent, else the context's span, else a root.
class RecordingTracer : public micro::trace::Tracer {
 public:
  std::shared_ptr<micro::trace::Span> start_span(
      std::string_view name, const micro::Context& context,
      const micro::trace::StartOptions& options) override {
    RecordedSpan data;
    data.name = std::string(name);
    data.kind = options.kind;
    if (!options.root) {
      if (options.parent)
        data.parent = *options.parent;
      else if (context.span())
        data.parent = context.span()->context();
    }
    std::uint64_t id = next_id_.fetch_add(1);
    if (data.parent.valid()) {
      data.context.trace_id = data.parent.trace_id;
      data.context.flags = data.parent.flags;
      data.context.trace_state = data.parent.trace_state;
    } else {
      data.context.trace_id.bytes[0] = 0x7e;
      for (int i = 0; i < 8; ++i) data.context.trace_id.bytes[15 - i] = std::uint8_t(id >> (8 * i));
      data.context.flags = micro::trace::flag_sampled;
    }
    for (int i = 0; i < 8; ++i) data.context.span_id.bytes[7 - i] = std::uint8_t(id >> (8 * i));
    data.attributes = options.attributes;
    data.links = options.links;
    return std::make_shared<RecordingSpan>(std::move(data), store);
  }
  bool enabled() const noexcept override { return true; }

  std::shared_ptr<SpanStore> store = std::make_shared<SpanStore>();

 private:
  std::atomic<std::uint64_t> next_id_{1};
};

// The span named `name` (of attempt `attempt` and kind `kind` when given).
const RecordedSpan& find_span(const std::vector<RecordedSpan>& spans, std::string_view name,
                              int attempt = 0, std::optional<SpanKind> kind = {}) {
  for (const auto& span : spans)
    if (span.name == name && (attempt == 0 || span.number("micro.attempt") == attempt) &&
        (!kind || span.kind == *kind))
      return span;
  FAIL("no span named " << std::string(name));
  static RecordedSpan none;
  return none;
}

std::vector<const RecordedSpan*> spans_named(const std::vector<RecordedSpan>& spans,
                                             std::string_view name) {
  std::vector<const RecordedSpan*> found;
  for (const auto& span : spans)
    if (span.name == name) found.push_back(&span);
  return found;
}

std::int64_t port_of(const std::string& address) {
  return std::stoll(address.substr(address.rfind(':') + 1));
}

// A server "echo" and a client, both with the trace wrappers, over real plugins (tcp, or the
// transport named).
struct Fixture {
  std::string transport_name;
  micro::Runtime runtime{4};
  micro::PluginLoader& loader = micro::PluginLoader::instance();
  std::shared_ptr<micro::Registry> registry =
      loader.create<micro::Registry>("memory", "", {}, runtime.executor());
  std::shared_ptr<micro::Transport> transport =
      loader.create<micro::Transport>(transport_name, "", {}, runtime.executor());
  std::shared_ptr<micro::Broker> broker =
      loader.create<micro::Broker>("memory", "", {}, runtime.executor());
  std::shared_ptr<micro::Selector> selector =
      loader.create<micro::Selector>("roundrobin", "", {}, runtime.executor());
  std::shared_ptr<micro::RegistryCache> cache =
      std::make_shared<micro::RegistryCache>(registry, runtime.blocking_executor());
  std::shared_ptr<RecordingTracer> recorder = std::make_shared<RecordingTracer>();
  std::unique_ptr<micro::Client> client;
  std::unique_ptr<micro::Server> server;
  std::mutex mutex;
  std::vector<std::string> traceparents_seen;  // by handlers, in arrival order
  std::atomic<int> consumed{0};

  explicit Fixture(std::string transport_plugin = "tcp")
      : transport_name(std::move(transport_plugin)) {
    micro::trace::set_tracer(recorder);
    broker->connect();
    broker->set_error_handler([](const micro::Message&, std::string_view) {});
    micro::WrapperScope scope{"echo", "1.0", transport_name, "memory"};
    micro::WrapperChains chains;
    chains.add(micro::trace::sdk::make_trace_wrappers(scope));
    client = std::make_unique<micro::Client>(micro::ClientOptions{}, transport, cache, selector,
                                             broker, chains, runtime.executor());
    micro::ServerOptions options;
    options.name = "echo";
    server = std::make_unique<micro::Server>(options, transport, registry, broker, chains);
    server->handle("Trace.Work", [this](micro::Context& context, const Echo& echo) {
      remember(context);
      // Application code's own span, under the server span.
      auto span = micro::trace::start_span("Database.Insert", context);
      span->set_attribute("db.system", std::string("postgresql"));
      span->end();
      micro::Message message;
      message.topic = "events.created";
      message.body = R"({"text":")" + echo.text + R"("})";
      client->publish(context, std::move(message));
      return Echo{echo.text + " done"};
    });
    server->handle("Trace.Echo", [this](micro::Context& context, const Echo& echo) {
      remember(context);
      return echo;
    });
    server->handle("Trace.Fail", [](micro::Context&, const Echo&) -> Echo {
      throw micro::Exception(micro::unavailable("echo", "database is down"));
    });
    server->subscribe("events.created", [this](micro::Context& context, micro::Message&) {
      CHECK(context.span() != nullptr);
      ++consumed;
    });
    server->subscribe("events.bad", [](micro::Context&, micro::Message&) {
      throw std::runtime_error("cannot digest this event");
    });
    server->start();
  }

  ~Fixture() {
    server->stop();
    broker->disconnect();
    transport->close();
    micro::trace::set_tracer(nullptr);
  }

  void remember(micro::Context& context) {
    std::lock_guard lock(mutex);
    traceparents_seen.push_back(context.metadata().get("traceparent", "<none>"));
  }
  std::string last_traceparent() {
    std::lock_guard lock(mutex);
    return traceparents_seen.empty() ? "<none>" : traceparents_seen.back();
  }
};

}  // namespace

TEST_CASE("one trace: client call → attempt → server → handler span → publish → consumer") {
  Fixture fixture;
  auto reply = fixture.client->call<Echo>("echo", "Trace.Work", Echo{"hi"});
  CHECK(reply.text == "hi done");

  auto spans = fixture.recorder->store->wait_for(6);
  REQUIRE(spans.size() == 6);
  const auto& attempt = find_span(spans, "Trace.Work attempt");
  const auto& handled = find_span(spans, "Trace.Work", 0, SpanKind::server);
  const auto& client_call = find_span(spans, "Trace.Work", 0, SpanKind::client);
  const auto& database = find_span(spans, "Database.Insert");
  const auto& producer = find_span(spans, "events.created publish");
  const auto& consumer = find_span(spans, "events.created process");

  // One trace.
  for (const auto& span : spans) CHECK(span.context.trace_id == client_call.context.trace_id);

  // Kinds.
  CHECK(client_call.kind == SpanKind::client);
  CHECK(attempt.kind == SpanKind::client);
  CHECK(handled.kind == SpanKind::server);
  CHECK(database.kind == SpanKind::internal);
  CHECK(producer.kind == SpanKind::producer);
  CHECK(consumer.kind == SpanKind::consumer);

  // Parentage.
  CHECK_FALSE(client_call.parent.valid());
  CHECK(attempt.parent.span_id == client_call.context.span_id);
  CHECK(handled.parent.span_id == attempt.context.span_id);
  CHECK(handled.parent.remote);
  CHECK(database.parent.span_id == handled.context.span_id);
  CHECK(producer.parent.span_id == handled.context.span_id);
  CHECK(consumer.parent.span_id == producer.context.span_id);
  CHECK(consumer.parent.remote);
  REQUIRE(consumer.links.size() == 1);
  CHECK(consumer.links[0].context.span_id == producer.context.span_id);
  CHECK(consumer.links[0].context.trace_id == producer.context.trace_id);

  // The server saw the attempt's context, not the logical call's.
  SpanContext attempt_context = attempt.context;
  CHECK(fixture.last_traceparent() == micro::trace::format_traceparent(attempt_context));

  // Attributes.
  std::int64_t port = port_of(fixture.server->address());
  CHECK(client_call.text("rpc.system") == "micro");
  CHECK(client_call.text("rpc.service") == "echo");
  CHECK(client_call.text("rpc.method") == "Work");
  CHECK(attempt.text("rpc.method") == "Work");
  CHECK(attempt.number("micro.attempt") == 1);
  CHECK(attempt.text("server.address") == "127.0.0.1");
  CHECK(attempt.number("server.port") == port);
  CHECK(handled.text("rpc.system") == "micro");
  CHECK(handled.number("rpc.grpc.status_code") == -1);  // a gRPC attribute: only over grpc
  CHECK(handled.text("rpc.service") == "echo");
  CHECK(handled.text("rpc.method") == "Work");
  CHECK(handled.text("server.address") == "127.0.0.1");
  CHECK(handled.number("server.port") == port);
  CHECK(handled.text("client.address") == "127.0.0.1");
  CHECK(database.text("db.system") == "postgresql");
  for (const auto* span : {&producer, &consumer}) {
    CHECK(span->text("messaging.system") == "memory");
    CHECK(span->text("messaging.destination.name") == "events.created");
    CHECK(span->number("messaging.message.body.size") ==
          std::int64_t(std::string(R"({"text":"hi"})").size()));
  }
  CHECK(producer.text("messaging.operation.type") == "publish");
  CHECK(consumer.text("messaging.operation.type") == "process");

  // Success leaves every status unset.
  for (const auto& span : spans) CHECK(span.status == StatusCode::unset);
  CHECK(fixture.consumed.load() == 1);
}

TEST_CASE("a failing call: ERROR on the call, each attempt and each server span") {
  Fixture fixture;
  try {
    fixture.client->call<Echo>("echo", "Trace.Fail", Echo{"x"});
    FAIL("expected a 503");
  } catch (const micro::Exception& e) {
    CHECK(e.error().code == 503);
  }
  // 503 is retried once by default: two attempts, two server spans, one logical call.
  auto spans = fixture.recorder->store->wait_for(5);
  REQUIRE(spans.size() == 5);
  auto attempts = spans_named(spans, "Trace.Fail attempt");
  REQUIRE(attempts.size() == 2);
  const auto& first = find_span(spans, "Trace.Fail attempt", 1);
  const auto& second = find_span(spans, "Trace.Fail attempt", 2);
  CHECK(first.context.span_id != second.context.span_id);
  CHECK(first.parent.span_id == second.parent.span_id);

  int servers = 0;
  for (const auto& span : spans) {
    CHECK(span.status == StatusCode::error);
    CHECK(span.text("error.type") == "503");
    CHECK(span.status_message == "database is down");
    if (span.kind == SpanKind::server) {
      ++servers;
      // Each server span hangs under its own attempt.
      CHECK((span.parent.span_id == first.context.span_id ||
             span.parent.span_id == second.context.span_id));
    }
  }
  CHECK(servers == 2);
}

TEST_CASE("over transport=grpc: rpc.system=grpc and rpc.grpc.status_code on every call span") {
  Fixture fixture("grpc");
  CHECK(fixture.client->call<Echo>("echo", "Trace.Echo", Echo{"hi"}).text == "hi");
  auto spans = fixture.recorder->store->wait_for(3);
  REQUIRE(spans.size() == 3);  // call, attempt, server
  for (const auto& span : spans) {
    CHECK(span.text("rpc.system") == "grpc");
    CHECK(span.number("rpc.grpc.status_code") == 0);  // OK
  }
  fixture.recorder->store->clear();
  CHECK_THROWS_AS(fixture.client->call<Echo>("echo", "Trace.Fail", Echo{"x"}), micro::Exception);
  // 503 is retried once: call, two attempts, two server spans, each UNAVAILABLE (14).
  spans = fixture.recorder->store->wait_for(5);
  REQUIRE(spans.size() == 5);
  for (const auto& span : spans) {
    CHECK(span.text("rpc.system") == "grpc");
    CHECK(span.number("rpc.grpc.status_code") == 14);
    CHECK(span.text("error.type") == "503");
  }
}

TEST_CASE("an incoming traceparent: joined, with a new parent id on the next hop") {
  Fixture fixture;
  const std::string upstream = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  micro::Context context;
  context.metadata().set("traceparent", upstream);
  fixture.client->call<Echo>("echo", "Trace.Echo", Echo{"x"}, {}, context);

  auto spans = fixture.recorder->store->wait_for(3);
  REQUIRE(spans.size() == 3);
  const auto& attempt = find_span(spans, "Trace.Echo attempt");
  for (const auto& span : spans)
    CHECK(span.context.trace_id.to_hex() == "4bf92f3577b34da6a3ce929d0e0e4736");
  auto seen = micro::trace::parse_traceparent(fixture.last_traceparent());
  REQUIRE(seen);
  CHECK(seen->trace_id.to_hex() == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(seen->span_id.to_hex() != "00f067aa0ba902b7");
  CHECK(seen->span_id == attempt.context.span_id);
  for (const auto& span : spans)
    if (span.kind == SpanKind::client && span.name == "Trace.Echo")
      CHECK(span.parent.span_id.to_hex() == "00f067aa0ba902b7");
}

TEST_CASE("tracing off: no spans, and the incoming traceparent passes through untouched") {
  Fixture fixture;
  micro::trace::set_tracer(nullptr);
  const std::string upstream = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  micro::Context context;
  context.metadata().set("traceparent", upstream);
  context.metadata().set("tracestate", "congo=t61rcWkgMzE");
  auto reply = fixture.client->call<Echo>("echo", "Trace.Echo", Echo{"x"}, {}, context);
  CHECK(reply.text == "x");
  CHECK(fixture.last_traceparent() == upstream);
  CHECK(fixture.recorder->store->size() == 0);
}

TEST_CASE("a Go peer's capitalised Traceparent joins the trace") {
  Fixture fixture;
  micro::Request request;
  request.service = "echo";
  request.endpoint = "Trace.Echo";
  request.content_type = "application/json";
  request.body = R"({"text":"from go"})";
  request.context.set_timeout(5s);
  request.context.metadata().set("Traceparent",
                                 "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  std::promise<micro::Response> answered;
  fixture.transport->async_call(
      fixture.server->address(), std::make_shared<micro::Request>(std::move(request)),
      [&](micro::Response&& response) { answered.set_value(std::move(response)); });
  auto future = answered.get_future();
  REQUIRE(future.wait_for(10s) == std::future_status::ready);
  auto response = future.get();
  CHECK_FALSE(response.error);

  auto spans = fixture.recorder->store->wait_for(1);
  REQUIRE(spans.size() == 1);
  CHECK(spans[0].kind == SpanKind::server);
  CHECK(spans[0].context.trace_id.to_hex() == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(spans[0].parent.span_id.to_hex() == "00f067aa0ba902b7");
  CHECK(spans[0].parent.remote);
}

TEST_CASE("a subscriber that throws: ERROR with the message and the exception type") {
  Fixture fixture;
  micro::Context context;
  micro::Message message;
  message.topic = "events.bad";
  message.body = "{}";
  fixture.client->publish(context, std::move(message));

  auto spans = fixture.recorder->store->wait_for(2);
  REQUIRE(spans.size() == 2);
  const auto& producer = find_span(spans, "events.bad publish");
  const auto& consumer = find_span(spans, "events.bad process");
  CHECK_FALSE(producer.parent.valid());
  CHECK(producer.status == StatusCode::unset);
  CHECK(consumer.parent.span_id == producer.context.span_id);
  CHECK(consumer.status == StatusCode::error);
  CHECK(consumer.status_message == "cannot digest this event");
  CHECK(consumer.text("error.type") == "std::runtime_error");
}

TEST_CASE("tracing off: all five wrappers call straight through without allocating") {
  micro::trace::set_tracer(nullptr);
  auto set = micro::trace::sdk::make_trace_wrappers({"echo", "1.0", "tcp", "memory"});
  int reached = 0;
  auto handler = set.handler([&](const micro::RequestPtr&, micro::ResponseHandler respond) {
    ++reached;
    respond(micro::Response{});
  });
  auto client = set.client(
      [&](const micro::RequestPtr&, const micro::CallOptions&, micro::ResponseHandler done) {
        ++reached;
        done(micro::Response{});
      });
  auto call =
      set.call([&](const micro::RequestPtr&, const micro::Attempt&, micro::ResponseHandler done) {
        ++reached;
        done(micro::Response{});
      });
  auto publish = set.publish([&](micro::Context&, micro::Message&) { ++reached; });
  auto subscriber = set.subscriber([&](micro::Context&, micro::Message&) { ++reached; });

  const std::string incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  auto request = std::make_shared<micro::Request>();
  request->service = "echo";
  request->endpoint = "Echo.Call";
  request->context.metadata().set("traceparent", incoming);
  micro::Message message;
  message.topic = "events";
  micro::Node node{"echo-1", "127.0.0.1:4000", {}};
  micro::CallOptions options;
  int answered = 0;
  micro::ResponseHandler respond = [&answered](micro::Response&&) {
    ++answered;
  };

  long before = allocations.load();
  for (int i = 0; i < 100; ++i) {
    handler(request, respond);
    client(request, options, respond);
    call(request, micro::Attempt{node, 1}, respond);
    publish(request->context, message);
    subscriber(request->context, message);
  }
  long allocated = allocations.load() - before;
  CHECK(allocated == 0);
  CHECK(reached == 500);
  CHECK(answered == 300);
  // Nothing was injected: the incoming header is untouched, no span was set.
  CHECK(request->context.metadata().get("traceparent") == incoming);
  CHECK(request->context.metadata().size() == 1);
  CHECK(message.headers.empty());
  CHECK(request->context.span() == nullptr);
}
