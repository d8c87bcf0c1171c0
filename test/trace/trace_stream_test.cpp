// The trace wrappers on streams over a real server and client (tcp transport, memory
// registry): one SERVER and one CLIENT span per stream, the server's a child of the client's
// and the client's of the caller's span; spans end when the stream ends, not when it opens;
// rpc.message events (SENT/RECEIVED, ids from 1) for the first messages and counts for all;
// an error end sets ERROR status on both sides. Spans are recorded by a small Tracer
// installed with set_tracer.
#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include <micro/client.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/runtime.hpp>
#include <micro/server.hpp>
#include <micro/trace.hpp>

#include "trace_wrappers.hpp"
#include "wrappers/memory_stream.hpp"

using namespace std::chrono_literals;
using micro::trace::Attribute;
using micro::trace::AttributeValue;
using micro::trace::SpanContext;
using micro::trace::SpanKind;
using micro::trace::StatusCode;
using test_support::MemoryStream;

namespace {

struct RecordedEvent {
  std::string name;
  std::vector<Attribute> attributes;
  std::string text(std::string_view key) const {
    for (const auto& [name, value] : attributes)
      if (name == key && std::holds_alternative<std::string>(value))
        return std::get<std::string>(value);
    return "<missing>";
  }
  std::int64_t number(std::string_view key) const {
    for (const auto& [name, value] : attributes)
      if (name == key && std::holds_alternative<std::int64_t>(value))
        return std::get<std::int64_t>(value);
    return -1;
  }
};

struct RecordedSpan {
  std::string name;
  SpanKind kind = SpanKind::internal;
  SpanContext context;
  SpanContext parent;
  std::vector<Attribute> attributes;
  std::vector<RecordedEvent> events;
  StatusCode status = StatusCode::unset;

  std::int64_t number(std::string_view key) const {
    for (const auto& [name, value] : attributes)
      if (name == key && std::holds_alternative<std::int64_t>(value))
        return std::get<std::int64_t>(value);
    return -1;
  }
  std::string text(std::string_view key) const {
    for (const auto& [name, value] : attributes)
      if (name == key && std::holds_alternative<std::string>(value))
        return std::get<std::string>(value);
    return "<missing>";
  }
  // The ids of this span's rpc.message events of `type`, in order.
  std::vector<std::int64_t> message_ids(std::string_view type) const {
    std::vector<std::int64_t> ids;
    for (const auto& event : events)
      if (event.name == "rpc.message" && event.text("rpc.message.type") == type)
        ids.push_back(event.number("rpc.message.id"));
    return ids;
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
  std::vector<RecordedSpan> wait_for(std::size_t count) {
    std::unique_lock lock(mutex);
    changed.wait_for(lock, 10s, [&] { return finished.size() >= count; });
    return finished;
  }
  std::size_t size() {
    std::lock_guard lock(mutex);
    return finished.size();
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
  void add_event(std::string_view name, std::vector<Attribute> attributes) override {
    std::lock_guard lock(mutex_);
    if (!ended_) data_.events.push_back({std::string(name), std::move(attributes)});
  }
  void add_link(const SpanContext&, std::vector<Attribute>) override {}
  void set_status(StatusCode code, std::string_view) override {
    std::lock_guard lock(mutex_);
    if (!ended_) data_.status = code;
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
    } else {
      data.context.trace_id.bytes[0] = 0x5e;
      for (int i = 0; i < 8; ++i) data.context.trace_id.bytes[15 - i] = std::uint8_t(id >> (8 * i));
      data.context.flags = micro::trace::flag_sampled;
    }
    for (int i = 0; i < 8; ++i) data.context.span_id.bytes[7 - i] = std::uint8_t(id >> (8 * i));
    data.attributes = options.attributes;
    return std::make_shared<RecordingSpan>(std::move(data), store);
  }
  bool enabled() const noexcept override { return true; }

  std::shared_ptr<SpanStore> store = std::make_shared<SpanStore>();

 private:
  std::atomic<std::uint64_t> next_id_{1};
};

const RecordedSpan* find_span(const std::vector<RecordedSpan>& spans, std::string_view name,
                              SpanKind kind) {
  for (const auto& span : spans)
    if (span.name == name && span.kind == kind) return &span;
  return nullptr;
}

// Echoes every message back (Stream.Echo), or ends with 503 after the first (Stream.Fail).
void echo_next(const micro::MessageStreamPtr& stream) {
  stream->async_read([stream](std::optional<std::string> message) {
    if (!message) {
      stream->finish(micro::Response{});
      return;
    }
    stream->async_write(std::move(*message), [stream](std::optional<micro::Error> error) {
      if (error) return;
      echo_next(stream);
    });
  });
}

struct Fixture {
  micro::Runtime runtime{4};
  micro::PluginLoader& loader = micro::PluginLoader::instance();
  std::shared_ptr<micro::Registry> registry =
      loader.create<micro::Registry>("memory", "", {}, runtime.executor());
  std::shared_ptr<micro::Transport> transport =
      loader.create<micro::Transport>("tcp", "", {}, runtime.executor());
  std::shared_ptr<micro::Broker> broker =
      loader.create<micro::Broker>("memory", "", {}, runtime.executor());
  std::shared_ptr<micro::Selector> selector =
      loader.create<micro::Selector>("roundrobin", "", {}, runtime.executor());
  std::shared_ptr<micro::RegistryCache> cache =
      std::make_shared<micro::RegistryCache>(registry, runtime.blocking_executor());
  std::shared_ptr<RecordingTracer> recorder = std::make_shared<RecordingTracer>();
  std::unique_ptr<micro::Client> client;
  std::unique_ptr<micro::Server> server;

  Fixture() {
    micro::trace::set_tracer(recorder);
    micro::WrapperScope scope{"streams", "1.0", "tcp", "memory"};
    micro::WrapperChains chains;
    chains.add(micro::trace::sdk::make_trace_wrappers(scope));
    client = std::make_unique<micro::Client>(micro::ClientOptions{}, transport, cache, selector,
                                             broker, chains, runtime.executor());
    micro::ServerOptions options;
    options.name = "streams";
    options.executor = runtime.executor();
    server = std::make_unique<micro::Server>(options, transport, registry, broker, chains);
    server->handle_stream("Stream.Echo",
                          [](const micro::MessageStreamPtr& stream) { echo_next(stream); });
    server->handle_stream("Stream.Fail", [](const micro::MessageStreamPtr& stream) {
      stream->async_read([stream](std::optional<std::string>) {
        stream->finish(micro::Response::failure(micro::unavailable("streams", "backend gone")));
      });
    });
    server->start();
  }
  ~Fixture() {
    server->stop();
    transport->close();
    micro::trace::set_tracer(nullptr);
  }
};

}  // namespace

TEST_CASE("a traced stream: one span per side, ended with the stream, counts and events") {
  Fixture fixture;
  // The caller's own span: the client stream span is its child.
  micro::Context context;
  auto caller = micro::trace::start_span("Caller.Work", context);
  context.set_span(caller);

  auto stream = fixture.client->open_stream("streams", "Stream.Echo", {}, context);
  stream.send("one");
  CHECK(stream.receive() == "one");
  // Open, one message each way: no stream span has ended yet (Go-Micro's would have).
  CHECK(fixture.recorder->store->size() == 0);

  for (int i = 2; i <= 5; ++i) stream.send("message " + std::to_string(i));
  stream.close_send();
  int echoes = 1;
  while (auto message = stream.receive()) ++echoes;
  CHECK(echoes == 5);
  CHECK_FALSE(stream.error());
  caller->end();

  auto spans = fixture.recorder->store->wait_for(3);
  REQUIRE(spans.size() == 3);
  const auto* client_span = find_span(spans, "Stream.Echo", SpanKind::client);
  const auto* server_span = find_span(spans, "Stream.Echo", SpanKind::server);
  const auto* caller_span = find_span(spans, "Caller.Work", SpanKind::internal);
  REQUIRE(client_span);
  REQUIRE(server_span);
  REQUIRE(caller_span);

  // Parentage: caller → client stream span → server stream span, one trace.
  CHECK(client_span->parent.span_id == caller_span->context.span_id);
  CHECK(server_span->parent.span_id == client_span->context.span_id);
  CHECK(server_span->parent.remote);
  CHECK(server_span->context.trace_id == caller_span->context.trace_id);

  CHECK(client_span->text("rpc.system") == "micro");
  CHECK(client_span->text("rpc.service") == "streams");
  CHECK(client_span->text("rpc.method") == "Echo");
  CHECK(server_span->text("rpc.method") == "Echo");

  // Counts, both sides.
  CHECK(client_span->number("micro.stream.messages_sent") == 5);
  CHECK(client_span->number("micro.stream.messages_received") == 5);
  CHECK(server_span->number("micro.stream.messages_sent") == 5);
  CHECK(server_span->number("micro.stream.messages_received") == 5);

  // rpc.message events, ids from 1 per type, with the size.
  std::vector<std::int64_t> one_to_five{1, 2, 3, 4, 5};
  CHECK(client_span->message_ids("SENT") == one_to_five);
  CHECK(client_span->message_ids("RECEIVED") == one_to_five);
  CHECK(server_span->message_ids("SENT") == one_to_five);
  CHECK(server_span->message_ids("RECEIVED") == one_to_five);
  CHECK(client_span->events.front().number("rpc.message.uncompressed_size") == 3);

  CHECK(client_span->status == StatusCode::unset);
  CHECK(server_span->status == StatusCode::unset);
}

TEST_CASE("a long traced stream: events are bounded, counts are not") {
  Fixture fixture;
  auto stream = fixture.client->open_stream("streams", "Stream.Echo");
  constexpr int messages = 500;
  std::thread writer([&] {
    for (int i = 0; i < messages; ++i) stream.send("m");
    stream.close_send();
  });
  int echoes = 0;
  while (stream.receive()) ++echoes;
  writer.join();
  CHECK(echoes == messages);

  auto spans = fixture.recorder->store->wait_for(2);
  REQUIRE(spans.size() == 2);
  for (const auto& span : spans) {
    CAPTURE(static_cast<int>(span.kind));
    CHECK(span.number("micro.stream.messages_sent") == messages);
    CHECK(span.number("micro.stream.messages_received") == messages);
    CHECK(span.message_ids("SENT").size() == 32);
    CHECK(span.message_ids("RECEIVED").size() == 32);
    CHECK(span.message_ids("SENT").back() == 32);
  }
}

TEST_CASE("a stream that ends with an error: ERROR on both sides, error.type the code") {
  Fixture fixture;
  auto stream = fixture.client->open_stream("streams", "Stream.Fail");
  stream.send("anything");
  CHECK_FALSE(stream.receive());
  REQUIRE(stream.error());
  CHECK(stream.error()->code == 503);

  auto spans = fixture.recorder->store->wait_for(2);
  REQUIRE(spans.size() == 2);
  for (const auto& span : spans) {
    CHECK(span.status == StatusCode::error);
    CHECK(span.text("error.type") == "503");
  }
  const auto* server_span = find_span(spans, "Stream.Fail", SpanKind::server);
  REQUIRE(server_span);
  CHECK(server_span->number("micro.stream.messages_received") == 1);
}

TEST_CASE("a stream that cannot open: the client span ends at once with the error") {
  Fixture fixture;
  CHECK_THROWS_AS(fixture.client->open_stream("nobody", "Stream.Echo"), micro::Exception);
  auto spans = fixture.recorder->store->wait_for(1);
  REQUIRE(spans.size() == 1);
  CHECK(spans[0].kind == SpanKind::client);
  CHECK(spans[0].status == StatusCode::error);
  CHECK(spans[0].number("micro.stream.messages_sent") == 0);
}

TEST_CASE("traced streams in memory: span ends with the stream and the reader, parentage") {
  auto recorder = std::make_shared<RecordingTracer>();
  micro::trace::set_tracer(recorder);
  micro::WrapperChains chains;
  chains.add(micro::trace::sdk::make_trace_wrappers({"streams", "1.0", "tcp", "memory"}));

  // Client: the opened stream is the wrapper's; the head gets the span's traceparent.
  auto client_end = std::make_shared<MemoryStream>("Stream.Echo");
  auto request = std::make_shared<micro::Request>();
  request->service = "streams";
  request->endpoint = "Stream.Echo";
  micro::MessageStreamPtr client_stream;
  chains.wrap_client_stream([&](const micro::RequestPtr&, const micro::CallOptions&,
                                micro::OpenStreamHandler done) { done(client_end, std::nullopt); })(
      request, {}, [&](micro::MessageStreamPtr stream, std::optional<micro::Error>) {
        client_stream = std::move(stream);
      });
  REQUIRE(client_stream);
  const std::string* traceparent = request->context.metadata().find("traceparent");
  REQUIRE(traceparent);

  // Server: the head arrives with that traceparent.
  auto server_end = std::make_shared<MemoryStream>("Stream.Echo");
  server_end->request().service = "streams";
  server_end->request().context.metadata().set("traceparent", *traceparent);
  server_end->incoming = {"a", "bb"};
  chains.wrap_handler_stream([](const micro::MessageStreamPtr& stream) {
    test_support::read_all(stream);
    stream->async_write("answer", [](std::optional<micro::Error>) {});
    stream->finish(micro::Response{});
  })(server_end);

  client_stream->async_write("a", [](std::optional<micro::Error>) {});
  client_stream->async_write("bb", [](std::optional<micro::Error>) {});
  client_end->incoming = {"answer"};
  client_end->finish(micro::Response{});
  // The server span ended with its answer; the client's waits for the unread answer.
  CHECK(recorder->store->size() == 1);
  CHECK(test_support::read_all(client_stream) == 1);

  auto spans = recorder->store->wait_for(2);
  micro::trace::set_tracer(nullptr);
  REQUIRE(spans.size() == 2);
  const auto* client_span = find_span(spans, "Stream.Echo", SpanKind::client);
  const auto* server_span = find_span(spans, "Stream.Echo", SpanKind::server);
  REQUIRE(client_span);
  REQUIRE(server_span);
  CHECK(server_span->parent.span_id == client_span->context.span_id);
  CHECK(server_span->parent.remote);
  CHECK(client_span->number("micro.stream.messages_sent") == 2);
  CHECK(client_span->number("micro.stream.messages_received") == 1);
  CHECK(server_span->number("micro.stream.messages_sent") == 1);
  CHECK(server_span->number("micro.stream.messages_received") == 2);
  CHECK(client_span->message_ids("SENT") == std::vector<std::int64_t>{1, 2});
  CHECK(server_span->message_ids("RECEIVED") == std::vector<std::int64_t>{1, 2});
  CHECK(server_span->events[1].number("rpc.message.uncompressed_size") == 2);
}
