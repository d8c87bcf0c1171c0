// bench/redis_broker_bench — publish→subscribe throughput of 128-byte messages with one
// subscriber, for the redis broker in both modes beside a bare hiredis client doing the same
// on the same server in the same run (so the broker's overhead is a ratio):
//   pubsub:  broker mode=pubsub  vs bare PUBLISH (one synchronous command each) + SUBSCRIBE
//   streams: broker mode=streams vs bare XADD (synchronous) + XREADGROUP BLOCK COUNT 100 NOACK
// Starts its own redis-server on loopback unless an address is given (first argument,
// host:port). Prints `name value unit` lines per case: broker_<case>_published_per_second,
// _received_per_second, _lost; then broker_redis_<mode>_to_bare_{published,received}_ratio.
// BENCH_MESSAGES sets the message count (default 100000).
#include <hiredis/hiredis.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <micro/broker.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/runtime.hpp>

#include "broker/redis/redis_server.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Result {
  double published_per_second = 0;
  double received_per_second = 0;
  long lost = 0;
};

Result measure(long messages, const std::function<void()>& publish_all,
               const std::atomic<long>& received) {
  auto start = Clock::now();
  publish_all();
  auto published = Clock::now();
  auto deadline = published + std::chrono::seconds(20);
  while (received.load() < messages && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  auto done = Clock::now();
  auto seconds = [](auto elapsed) {
    return std::chrono::duration<double>(elapsed).count();
  };
  return {messages / seconds(published - start), received.load() / seconds(done - start),
          messages - received.load()};
}

void print(const std::string& name, long messages, const Result& result) {
  std::printf("broker_%s_messages %ld count\n", name.c_str(), messages);
  std::printf("broker_%s_published_per_second %.0f msg/s\n", name.c_str(),
              result.published_per_second);
  std::printf("broker_%s_received_per_second %.0f msg/s\n", name.c_str(),
              result.received_per_second);
  std::printf("broker_%s_lost %ld count\n", name.c_str(), result.lost);
  std::fflush(stdout);
}

Result run_broker(const std::string& address, const std::string& mode, long messages,
                  micro::Runtime& runtime) {
  auto& loader = micro::PluginLoader::instance();
  std::vector<std::pair<std::string, std::string>> options = {{"mode", mode}};
  auto subscriber = loader.create<micro::Broker>("redis", address, options, runtime.executor());
  auto publisher = loader.create<micro::Broker>("redis", address, options, runtime.executor());
  subscriber->connect();
  publisher->connect();
  std::atomic<long> received{0};
  std::string topic = "bench.broker." + mode;
  auto subscription = subscriber->subscribe(topic, [&](micro::Message&) { received.fetch_add(1); });
  micro::Message message;
  message.topic = topic;
  message.body = std::string(128, 'x');
  Result result = measure(
      messages,
      [&] {
        for (long i = 0; i < messages; ++i) publisher->publish(message);
      },
      received);
  subscription->unsubscribe();
  publisher->disconnect();
  subscriber->disconnect();
  return result;
}

redisContext* bare_connect(const std::string& host, int port) {
  redisContext* context = redisConnect(host.c_str(), port);
  if (!context || context->err) {
    std::fprintf(stderr, "cannot connect to %s:%d\n", host.c_str(), port);
    std::exit(1);
  }
  return context;
}

void command(redisContext* context, std::initializer_list<std::string> arguments) {
  std::vector<const char*> pointers;
  std::vector<std::size_t> sizes;
  for (const auto& argument : arguments) {
    pointers.push_back(argument.data());
    sizes.push_back(argument.size());
  }
  auto* reply = static_cast<redisReply*>(
      redisCommandArgv(context, static_cast<int>(pointers.size()), pointers.data(), sizes.data()));
  if (!reply) {
    std::fprintf(stderr, "redis: %s\n", context->errstr);
    std::exit(1);
  }
  freeReplyObject(reply);
}

// The bare client: a synchronous PUBLISH per message, a subscriber thread reading replies.
Result run_bare_pubsub(const std::string& host, int port, long messages) {
  redisContext* subscriber = bare_connect(host, port);
  redisContext* publisher = bare_connect(host, port);
  command(subscriber, {"SUBSCRIBE", "bench.bare.pubsub"});
  std::atomic<long> received{0};
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    while (!stop.load()) {
      void* reply = nullptr;
      if (redisGetReply(subscriber, &reply) != REDIS_OK) return;
      freeReplyObject(reply);
      received.fetch_add(1);
    }
  });
  std::string body(128, 'x');
  Result result = measure(
      messages,
      [&] {
        for (long i = 0; i < messages; ++i)
          command(publisher, {"PUBLISH", "bench.bare.pubsub", body});
      },
      received);
  stop.store(true);
  command(publisher, {"PUBLISH", "bench.bare.pubsub", "end"});  // wakes the reader
  reader.join();
  redisFree(publisher);
  redisFree(subscriber);
  return result;
}

// The bare client: synchronous XADD per message; a consumer-group reader with NOACK.
Result run_bare_streams(const std::string& host, int port, long messages) {
  redisContext* consumer = bare_connect(host, port);
  redisContext* publisher = bare_connect(host, port);
  command(publisher, {"DEL", "bench.bare.streams"});
  command(publisher, {"XGROUP", "CREATE", "bench.bare.streams", "bench", "$", "MKSTREAM"});
  std::atomic<long> received{0};
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    while (!stop.load()) {
      auto* reply = static_cast<redisReply*>(
          redisCommand(consumer, "XREADGROUP GROUP bench c1 COUNT 100 BLOCK 200 NOACK STREAMS %s >",
                       "bench.bare.streams"));
      if (!reply) return;
      if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1)
        received.fetch_add(static_cast<long>(reply->element[0]->element[1]->elements));
      freeReplyObject(reply);
    }
  });
  std::string body(128, 'x');
  Result result = measure(
      messages,
      [&] {
        for (long i = 0; i < messages; ++i)
          command(publisher, {"XADD", "bench.bare.streams", "*", "body", body});
      },
      received);
  stop.store(true);
  reader.join();
  command(publisher, {"DEL", "bench.bare.streams"});
  redisFree(publisher);
  redisFree(consumer);
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  long messages = 100000;
  if (const char* text = std::getenv("BENCH_MESSAGES")) messages = std::atol(text);
  std::optional<micro_test::RedisServer> server;
  std::string address;
  if (argc > 1) {
    address = argv[1];
  } else {
    server.emplace();
    address = server->address();
  }
  std::string host = address.substr(0, address.rfind(':'));
  int port = std::atoi(address.substr(address.rfind(':') + 1).c_str());
  micro::Runtime runtime{2};
  for (const std::string mode : {"pubsub", "streams"}) {
    // Alternate bare and broker runs twice, keeping the better of each, to damp noise.
    Result bare, broker;
    for (int round = 0; round < 2; ++round) {
      Result b = mode == "pubsub" ? run_bare_pubsub(host, port, messages)
                                  : run_bare_streams(host, port, messages);
      Result r = run_broker(address, mode, messages, runtime);
      if (b.published_per_second > bare.published_per_second) bare = b;
      if (r.published_per_second > broker.published_per_second) broker = r;
    }
    print("redis_" + mode + "_bare_client", messages, bare);
    print("redis_" + mode, messages, broker);
    std::printf("broker_redis_%s_to_bare_published_ratio %.3f x\n", mode.c_str(),
                broker.published_per_second / bare.published_per_second);
    std::printf("broker_redis_%s_to_bare_received_ratio %.3f x\n", mode.c_str(),
                broker.received_per_second / bare.received_per_second);
    std::fflush(stdout);
  }
  runtime.stop();
  return 0;
}
