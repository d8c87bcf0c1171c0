// Redis broker integration tests against real redis-server processes, beyond the conformance
// suite: the wire formats (checked with bare hiredis), queue groups in pubsub mode across two
// brokers, streams acknowledgement and redelivery, pending entries claimed from a consumer
// that died, MAXLEN trimming, passwords and ACL users, bad options, and a server killed and
// restarted (append-only file kept) during a stream of at_least_once publishes.
#include <doctest/doctest.h>

#include <hiredis/hiredis.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include <micro/base64.hpp>
#include <micro/broker.hpp>
#include <micro/error.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/trace.hpp>

#include "broker/broker_test_support.hpp"
#include "broker/recording_tracer.hpp"
#include "broker/redis/redis_server.hpp"

using namespace std::chrono_literals;
using Options = std::vector<std::pair<std::string, std::string>>;

using broker_test::Counter;
using broker_test::message_on;
using broker_test::wait_until;

namespace {

std::shared_ptr<micro::Broker> connected_broker(const std::string& address,
                                                const Options& options = {}) {
  auto broker = micro::PluginLoader::instance().create<micro::Broker>(
      "redis", address, options, boost::asio::any_io_executor{});
  broker->connect();
  return broker;
}

std::pair<int, std::string> failure_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const micro::Exception& error) {
    return {error.error().code, error.error().detail};
  }
  return {0, ""};
}

struct Inbox {
  std::mutex mutex;
  std::vector<micro::Message> messages;
  micro::MessageHandler handler() {
    return [this](micro::Message& message) {
      std::lock_guard lock(mutex);
      messages.push_back(message);
    };
  }
  std::size_t size() {
    std::lock_guard lock(mutex);
    return messages.size();
  }
  micro::Message at(std::size_t index) {
    std::lock_guard lock(mutex);
    return messages.at(index);
  }
};

// A bare hiredis connection, for looking at what the broker put on the server.
class Bare {
 public:
  explicit Bare(int port) {
    context_ = redisConnect("127.0.0.1", port);
    REQUIRE(context_);
    REQUIRE(context_->err == 0);
  }
  ~Bare() { redisFree(context_); }
  // Runs a command; the reply (freed by the caller through the returned holder).
  std::shared_ptr<redisReply> run(const std::vector<std::string>& arguments) {
    std::vector<const char*> pointers;
    std::vector<std::size_t> sizes;
    for (const auto& argument : arguments) {
      pointers.push_back(argument.data());
      sizes.push_back(argument.size());
    }
    auto* reply = static_cast<redisReply*>(redisCommandArgv(
        context_, static_cast<int>(arguments.size()), pointers.data(), sizes.data()));
    REQUIRE(reply);
    return std::shared_ptr<redisReply>(reply, freeReplyObject);
  }
  std::shared_ptr<redisReply> next() {
    void* reply = nullptr;
    REQUIRE(redisGetReply(context_, &reply) == REDIS_OK);
    return std::shared_ptr<redisReply>(static_cast<redisReply*>(reply), freeReplyObject);
  }

 private:
  redisContext* context_ = nullptr;
};

std::string text(const redisReply* reply) {
  return std::string(reply->str, reply->len);
}

}  // namespace

TEST_CASE(
    "redis pubsub: the native envelope carries headers; bare PUBLISH and Go-Micro's "
    "envelope are understood") {
  micro_test::RedisServer server;
  auto broker = connected_broker(server.address());
  Inbox inbox;
  auto subscription = broker->subscribe("wire.in", inbox.handler());

  Bare bare(server.port());
  bare.run({"PUBLISH", "wire.in", "plain bytes"});
  nlohmann::json envelope = {{"Header", {{"Micro-Topic", "wire.in"}, {"X-From", "go"}}},
                             {"Body", micro::base64::encode("from go-micro")}};
  bare.run({"PUBLISH", "wire.in", envelope.dump()});
  REQUIRE(wait_until([&] { return inbox.size() == 2; }));
  CHECK(inbox.at(0).body == "plain bytes");
  CHECK(inbox.at(0).headers.empty());
  CHECK(inbox.at(1).body == "from go-micro");
  CHECK(inbox.at(1).headers.get("X-From") == "go");

  // What the broker sends: a bare subscriber sees the envelope, magic first.
  Bare listener(server.port());
  listener.run({"SUBSCRIBE", "wire.out"});
  micro::Message message = message_on("wire.out", "body");
  message.headers.set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  broker->publish(message);
  auto reply = listener.next();
  REQUIRE(reply->type == REDIS_REPLY_ARRAY);
  std::string payload = text(reply->element[2]);
  CHECK(payload.substr(0, 4) == std::string("\0MB1", 4));
  CHECK(payload.find("traceparent") != std::string::npos);
  CHECK(payload.ends_with("body"));
}

TEST_CASE("redis pubsub: encoding=gomicro sends Go-Micro's JSON envelope") {
  micro_test::RedisServer server;
  auto broker = connected_broker(server.address(), {{"encoding", "gomicro"}});
  Bare listener(server.port());
  listener.run({"SUBSCRIBE", "go.topic"});
  micro::Message message = message_on("go.topic", "hi");
  message.headers.set("X-Id", "7");
  broker->publish(message);
  auto reply = listener.next();
  nlohmann::json envelope = nlohmann::json::parse(text(reply->element[2]));
  CHECK(envelope["Header"]["X-Id"] == "7");
  CHECK(envelope["Header"]["Micro-Topic"] == "go.topic");
  CHECK(envelope["Body"] == micro::base64::encode("hi"));
}

TEST_CASE(
    "redis pubsub: a queue group spans brokers (processes); each message to one member, "
    "also from Go-Micro publishers and with wildcards") {
  micro_test::RedisServer server;
  auto first = connected_broker(server.address());
  auto second = connected_broker(server.address());
  auto publisher = connected_broker(server.address());
  Counter one, two, plain;
  auto a = first->subscribe("jobs", one.handler(), micro::SubscribeOptions{"workers"});
  auto b = second->subscribe("jobs", two.handler(), micro::SubscribeOptions{"workers"});
  auto c = second->subscribe("jobs", plain.handler());
  constexpr int messages = 400;
  for (int i = 0; i < messages; ++i) publisher->publish(message_on("jobs", std::to_string(i)));
  CHECK(wait_until([&] {
    return one.count.load() + two.count.load() == messages && plain.count.load() == messages;
  }));
  first->disconnect();
  second->disconnect();
  CHECK(one.count.load() + two.count.load() == messages);
  CHECK(one.count.load() > 0);
  CHECK(two.count.load() > 0);
  // A Go-Micro publisher's message (its envelope has a Micro-Id) also goes to one member.
  first->connect();
  second->connect();
  Bare go(server.port());
  nlohmann::json envelope = {{"Header", {{"Micro-Id", "go-1"}, {"Micro-Topic", "jobs"}}},
                             {"Body", micro::base64::encode("from go")}};
  go.run({"PUBLISH", "jobs", envelope.dump()});
  CHECK(wait_until([&] { return one.count.load() + two.count.load() == messages + 1; }));
  // A group may subscribe with wildcards: each message is claimed, whatever channel it took.
  Counter wild_one, wild_two;
  auto d = first->subscribe("jobs.*", wild_one.handler(), micro::SubscribeOptions{"wild"});
  auto e = second->subscribe("jobs.*", wild_two.handler(), micro::SubscribeOptions{"wild"});
  for (int i = 0; i < 100; ++i)
    publisher->publish(message_on("jobs.x" + std::to_string(i % 3), "w"));
  CHECK(wait_until([&] { return wild_one.count.load() + wild_two.count.load() == 100; }));
  first->disconnect();
  second->disconnect();
  CHECK(one.count.load() + two.count.load() == messages + 1);
  CHECK(wild_one.count.load() + wild_two.count.load() == 100);
  // at_least_once needs streams.
  micro::SubscribeOptions acked;
  acked.delivery = micro::Delivery::at_least_once;
  CHECK(failure_of([&] { publisher->subscribe("jobs", plain.handler(), acked); }) ==
        std::pair<int, std::string>{400,
                                    "broker redis cannot deliver at_least_once (it has no "
                                    "acknowledgement); it offers at_most_once"});
}

TEST_CASE("redis streams: entries hold body and h:<header> fields; MAXLEN ~ trims") {
  micro_test::RedisServer server;
  auto broker = connected_broker(
      server.address(), {{"mode", "streams"}, {"max_len", "100"}, {"stream_prefix", "s:"}});
  micro::Message message = message_on("orders", "payload");
  message.headers.set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  broker->publish(message);
  Bare bare(server.port());
  auto entries = bare.run({"XRANGE", "s:orders", "-", "+"});
  REQUIRE(entries->elements == 1);
  const redisReply* fields = entries->element[0]->element[1];
  std::map<std::string, std::string> got;
  for (std::size_t i = 0; i + 1 < fields->elements; i += 2)
    got[text(fields->element[i])] = text(fields->element[i + 1]);
  CHECK(got == std::map<std::string, std::string>{
                   {"body", "payload"}, {"h:traceparent", message.headers.get("traceparent")}});
  for (int i = 0; i < 2000; ++i) broker->publish(message_on("orders", "x"));
  auto length = bare.run({"XLEN", "s:orders"});
  CHECK(length->integer >= 100);
  CHECK(length->integer < 400);  // approximate trimming: whole macro nodes of 100 go
}

TEST_CASE(
    "redis streams: at_least_once acknowledges after the handler; a failure stays "
    "pending until delivered again") {
  micro_test::RedisServer server;
  auto broker = connected_broker(server.address(), {{"mode", "streams"}, {"retry_wait", "300ms"}});
  std::atomic<int> calls{0};
  std::atomic<bool> fail{true};
  micro::SubscribeOptions acked;
  acked.queue = "billing";
  acked.delivery = micro::Delivery::at_least_once;
  std::atomic<int> reported{0};
  broker->set_error_handler(
      [&](const micro::Message&, std::string_view) { reported.fetch_add(1); });
  auto subscription = broker->subscribe(
      "invoices",
      [&](micro::Message&) {
        calls.fetch_add(1);
        if (fail.load()) throw std::runtime_error("database down");
      },
      acked);
  broker->publish(message_on("invoices", "1"));
  REQUIRE(wait_until([&] { return reported.load() >= 1; }));
  Bare bare(server.port());
  auto pending = bare.run({"XPENDING", "invoices", "billing"});
  CHECK(pending->element[0]->integer == 1);  // held, not acknowledged
  fail.store(false);
  REQUIRE(wait_until([&] { return calls.load() >= 2 && !fail.load(); }));
  CHECK(wait_until([&] {
    return bare.run({"XPENDING", "invoices", "billing"})->element[0]->integer == 0;
  }));
}

TEST_CASE("redis streams: entries a dead consumer held are claimed by a live member") {
  micro_test::RedisServer server;
  Bare dead(server.port());
  // Another process's consumer in group "workers" takes five entries and dies without XACK.
  auto publisher = connected_broker(server.address(), {{"mode", "streams"}});
  dead.run({"XGROUP", "CREATE", "tasks", "workers", "$", "MKSTREAM"});
  for (int i = 0; i < 5; ++i) publisher->publish(message_on("tasks", "held-" + std::to_string(i)));
  auto taken = dead.run(
      {"XREADGROUP", "GROUP", "workers", "dead-consumer", "COUNT", "10", "STREAMS", "tasks", ">"});
  REQUIRE(taken->type == REDIS_REPLY_ARRAY);
  REQUIRE(taken->element[0]->element[1]->elements == 5);

  auto survivor =
      connected_broker(server.address(),
                       {{"mode", "streams"}, {"claim_idle", "200ms"}, {"claim_interval", "100ms"}});
  Inbox inbox;
  micro::SubscribeOptions acked;
  acked.queue = "workers";
  acked.delivery = micro::Delivery::at_least_once;
  auto subscription = survivor->subscribe("tasks", inbox.handler(), acked);
  publisher->publish(message_on("tasks", "fresh"));
  REQUIRE(wait_until([&] { return inbox.size() == 6; }));
  std::set<std::string> bodies;
  for (std::size_t i = 0; i < 6; ++i) bodies.insert(inbox.at(i).body);
  CHECK(bodies == std::set<std::string>{"held-0", "held-1", "held-2", "held-3", "held-4", "fresh"});
  CHECK(wait_until([&] {
    return dead.run({"XPENDING", "tasks", "workers"})->element[0]->integer == 0;
  }));
  // Leaving, the member drops its consumer name (it holds nothing); the dead one's stays.
  subscription->unsubscribe();
  auto consumers = dead.run({"XINFO", "CONSUMERS", "tasks", "workers"});
  CHECK(consumers->elements == 1);
}

TEST_CASE("redis: passwords and ACL users; refusals say what is wrong") {
  micro_test::RedisServer server(
      {"--requirepass", "secret", "--user", "alice", "on", ">wonderland", "~*", "&*", "+@all"});
  Counter counter;
  auto with_password = connected_broker(server.address(), {{"password", "secret"}});
  auto subscription = with_password->subscribe("auth.topic", counter.handler());
  auto alice = connected_broker(server.address(), {{"user", "alice"}, {"password", "wonderland"}});
  alice->publish(message_on("auth.topic", "from alice"));
  CHECK(wait_until([&] { return counter.count.load() == 1; }));

  auto wrong = failure_of([&] { connected_broker(server.address(), {{"password", "nope"}}); });
  CHECK(wrong.first == 401);
  CHECK(wrong.second.find("refused the credentials") != std::string::npos);
  auto none = failure_of([&] { connected_broker(server.address()); });
  CHECK(none.first == 401);
  CHECK(none.second.find("requires a password") != std::string::npos);
  // Credentials in the address work too.
  auto in_address = connected_broker("redis://alice:wonderland@" + server.address());
  in_address->publish(message_on("auth.topic", "again"));
  CHECK(wait_until([&] { return counter.count.load() == 2; }));
}

TEST_CASE("redis: bad options and unreachable servers are refused clearly") {
  auto make = [](const std::string& address, const Options& options) {
    return failure_of([&] {
      micro::PluginLoader::instance().create<micro::Broker>("redis", address, options,
                                                            boost::asio::any_io_executor{});
    });
  };
  auto mode = make("", {{"mode", "lists"}});
  CHECK(mode.first == 400);
  CHECK(mode.second.ends_with("option mode: expected pubsub or streams, got 'lists'"));
  CHECK(make("http://127.0.0.1:6380", {}).second.find("is not redis:// or rediss://") !=
        std::string::npos);
  CHECK(make("rediss://127.0.0.1:6380", {{"tls_cert", "/x.pem"}})
            .second.ends_with("options tls_cert and tls_key go together"));
  CHECK(make("127.0.0.1:99999", {}).first == 400);
  CHECK(make("", {{"mode", "streams"}, {"encoding", "gomicro"}}).first == 400);
  auto port = micro_test::free_loopback_ports(1)[0];
  auto unreachable = failure_of([&] { connected_broker("127.0.0.1:" + std::to_string(port)); });
  CHECK(unreachable.first == 503);
  CHECK(unreachable.second.find("cannot connect to redis at 127.0.0.1:" + std::to_string(port)) !=
        std::string::npos);
}

TEST_CASE(
    "redis streams: a server killed mid-stream (append-only file kept): at_least_once "
    "delivers every accepted message; delivered + reported lost = published") {
  micro_test::RedisServer server({"--appendonly", "yes", "--appendfsync", "always"});
  auto broker = connected_broker(server.address(), {{"mode", "streams"},
                                                    {"reconnect_wait", "50ms"},
                                                    {"claim_idle", "500ms"},
                                                    {"claim_interval", "200ms"}});
  std::mutex mutex;
  std::set<int> delivered;
  micro::SubscribeOptions acked;
  acked.queue = "survivors";
  acked.delivery = micro::Delivery::at_least_once;
  auto subscription = broker->subscribe(
      "journal",
      [&](micro::Message& message) {
        std::lock_guard lock(mutex);
        delivered.insert(std::stoi(message.body));
      },
      acked);
  std::set<int> accepted, refused;
  std::atomic<bool> finish{false};
  std::atomic<int> published{0};
  std::thread publisher([&] {
    for (int id = 0; !finish.load(); ++id) {
      try {
        broker->publish(message_on("journal", std::to_string(id)));
        accepted.insert(id);
      } catch (const micro::Exception& error) {
        CHECK(error.error().code == 503);
        refused.insert(id);
      }
      published.store(id + 1);
      std::this_thread::sleep_for(200us);
    }
  });
  auto delivered_count = [&] {
    std::lock_guard lock(mutex);
    return delivered.size();
  };
  REQUIRE(wait_until([&] { return delivered_count() >= 200; }, 20s));
  server.kill();  // mid-stream: publishes and reads in flight
  int at_kill = published.load();
  REQUIRE(wait_until([&] { return published.load() >= at_kill + 100; }, 20s));
  server.start();
  int at_restart = published.load();
  REQUIRE(wait_until(
      [&] {
        std::lock_guard lock(mutex);
        return !delivered.empty() && *delivered.rbegin() > at_restart + 200;
      },
      30s));
  finish.store(true);
  publisher.join();
  // Everything accepted arrives, also what was in flight at the kill (redelivered if needed).
  REQUIRE(wait_until(
      [&] {
        std::lock_guard lock(mutex);
        for (int id : accepted)
          if (!delivered.contains(id)) return false;
        return true;
      },
      20s));
  broker->disconnect();
  std::lock_guard lock(mutex);
  int lost = 0;  // reported (refused) and never delivered
  for (int id : refused) lost += delivered.contains(id) ? 0 : 1;
  MESSAGE("published " << published.load() << ", accepted " << accepted.size() << ", refused "
                       << refused.size() << ", delivered " << delivered.size());
  CHECK(!refused.empty());
  CHECK(static_cast<int>(delivered.size()) + lost == published.load());
  // A refused publish may still have reached the server (its answer was lost in the kill):
  // at-least-once means such a message arrives, never that an accepted one goes missing.
  for (int id : delivered) CHECK((accepted.contains(id) || refused.contains(id)));
}

TEST_CASE(
    "redis streams: a batch read makes one CONSUMER span '<topic> receive' linked to every "
    "producer span of the batch") {
  micro_test::RedisServer server;
  auto tracer = std::make_shared<broker_test::RecordingTracer>();
  micro::trace::set_tracer(tracer);
  struct Uninstall {
    ~Uninstall() { micro::trace::set_tracer(nullptr); }
  } uninstall;
  auto broker = connected_broker(server.address(), {{"mode", "streams"}});
  Inbox inbox;
  // The queue group exists, then has no member while five traced messages are published: the
  // next member's first XREADGROUP gets all five at once.
  broker->subscribe("batch.orders", inbox.handler(), {.queue = "packers"})->unsubscribe();
  std::vector<micro::trace::SpanContext> producers;
  for (int i = 0; i < 5; ++i) {
    micro::trace::StartOptions options;
    options.kind = micro::trace::SpanKind::producer;
    auto span = micro::trace::start_span("batch.orders publish", micro::Context{}, options);
    micro::Message message = message_on("batch.orders", "order " + std::to_string(i));
    micro::trace::inject(span->context(), message.headers);
    broker->publish(message);
    producers.push_back(span->context());
    span->end();
  }
  auto subscription = broker->subscribe("batch.orders", inbox.handler(), {.queue = "packers"});
  auto receive_spans = [&] {
    std::vector<broker_test::RecordedSpan> found;
    for (const auto& span : tracer->finished())
      if (span.name == "batch.orders receive") found.push_back(span);
    return found;
  };
  REQUIRE(wait_until([&] { return receive_spans().size() == 1; }));
  REQUIRE(inbox.size() == 5);
  broker_test::RecordedSpan receive = receive_spans()[0];
  CHECK(receive.kind == micro::trace::SpanKind::consumer);
  CHECK(receive.text("messaging.system") == "redis");
  CHECK(receive.text("messaging.destination.name") == "batch.orders");
  CHECK(receive.text("messaging.operation.type") == "receive");
  CHECK(receive.text("messaging.consumer.group.name") == "packers");
  std::int64_t count = -1;
  for (const auto& [name, value] : receive.attributes)
    if (name == "messaging.batch.message_count" && std::holds_alternative<std::int64_t>(value))
      count = std::get<std::int64_t>(value);
  CHECK(count == 5);
  // Linked to each of the five producer spans, once, in their order.
  REQUIRE(receive.links.size() == 5);
  for (std::size_t i = 0; i < 5; ++i) {
    CHECK(receive.links[i].context.trace_id == producers[i].trace_id);
    CHECK(receive.links[i].context.span_id == producers[i].span_id);
    CHECK(receive.links[i].context.remote);
  }
  // Each message is delivered as before, still carrying its own producer's context.
  for (std::size_t i = 0; i < 5; ++i) {
    CHECK(inbox.at(i).body == "order " + std::to_string(i));
    CHECK(inbox.at(i).headers.get("traceparent") == micro::trace::format_traceparent(producers[i]));
  }

  // A read of one message has no receive span: its process span links the producer already.
  broker->publish(message_on("batch.orders", "alone"));
  REQUIRE(wait_until([&] { return inbox.size() == 6; }));
  subscription->unsubscribe();
  CHECK(receive_spans().size() == 1);
}
