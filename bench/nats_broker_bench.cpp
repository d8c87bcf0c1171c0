// bench/nats_broker_bench — publish throughput of 128-byte messages with one subscriber, for
// the memory broker, the NATS broker and the bare NATS C client in the same run (so the NATS
// broker's overhead is a ratio). Starts its own nats-server on loopback unless an address is
// given (first argument, host:port). Prints `name value unit` lines per case (memory, nats,
// nats_bare_client): broker_<case>_published_per_second, _received_per_second, _lost; then
// broker_nats_to_bare_published_ratio and broker_nats_to_bare_received_ratio.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <nats/nats.h>

#include <micro/broker.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/runtime.hpp>

#include "broker/nats/nats_server.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Result {
  double published_per_second = 0;
  double received_per_second = 0;
  long lost = 0;
};

// Runs one measurement: `publish_all` sends `messages`, `received` counts deliveries.
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

void print(const char* name, long messages, const Result& result) {
  std::printf("broker_%s_messages %ld count\n", name, messages);
  std::printf("broker_%s_published_per_second %.0f msg/s\n", name, result.published_per_second);
  std::printf("broker_%s_received_per_second %.0f msg/s\n", name, result.received_per_second);
  std::printf("broker_%s_lost %ld count\n", name, result.lost);
  std::fflush(stdout);
}

Result run_broker(const std::string& name, const std::string& address, long messages,
                  micro::Runtime& runtime) {
  auto& loader = micro::PluginLoader::instance();
  // Separate publisher and subscriber instances, as two processes would have.
  auto subscriber = loader.create<micro::Broker>(name, address, {}, runtime.executor());
  auto publisher = name == "memory"
                       ? subscriber
                       : loader.create<micro::Broker>(name, address, {}, runtime.executor());
  subscriber->connect();
  publisher->connect();
  std::atomic<long> received{0};
  auto subscription =
      subscriber->subscribe("bench.topic", [&](micro::Message&) { received.fetch_add(1); });
  micro::Message message;
  message.topic = "bench.topic";
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

void on_bare_message(natsConnection*, natsSubscription*, natsMsg* message, void* closure) {
  static_cast<std::atomic<long>*>(closure)->fetch_add(1);
  natsMsg_Destroy(message);
}

Result run_bare(const std::string& address, long messages) {
  std::string url = "nats://" + address;
  natsConnection* subscriber = nullptr;
  natsConnection* publisher = nullptr;
  if (natsConnection_ConnectTo(&subscriber, url.c_str()) != NATS_OK ||
      natsConnection_ConnectTo(&publisher, url.c_str()) != NATS_OK) {
    std::fprintf(stderr, "cannot connect to %s\n", url.c_str());
    std::exit(1);
  }
  std::atomic<long> received{0};
  natsSubscription* subscription = nullptr;
  natsConnection_Subscribe(&subscription, subscriber, "bench.topic", on_bare_message, &received);
  natsSubscription_SetPendingLimits(subscription, 1 << 20, 512 * 1024 * 1024);
  natsConnection_Flush(subscriber);
  std::string body(128, 'x');
  Result result = measure(
      messages,
      [&] {
        for (long i = 0; i < messages; ++i)
          natsConnection_Publish(publisher, "bench.topic", body.data(),
                                 static_cast<int>(body.size()));
      },
      received);
  natsSubscription_Unsubscribe(subscription);
  natsSubscription_Destroy(subscription);
  natsConnection_Destroy(publisher);
  natsConnection_Destroy(subscriber);
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  long messages = 500000;
  if (const char* text = std::getenv("BENCH_MESSAGES")) messages = std::atol(text);
  std::optional<micro_test::NatsServer> server;
  std::string address;
  if (argc > 1) {
    address = argv[1];
  } else {
    server.emplace();
    address = server->address();
  }
  micro::Runtime runtime{4};
  print("memory", messages, run_broker("memory", "", messages, runtime));
  // Alternate bare and broker runs twice, keeping the better of each, to damp noise.
  Result bare, nats;
  for (int round = 0; round < 2; ++round) {
    Result b = run_bare(address, messages);
    Result n = run_broker("nats", address, messages, runtime);
    if (b.published_per_second > bare.published_per_second) bare = b;
    if (n.published_per_second > nats.published_per_second) nats = n;
  }
  print("nats_bare_client", messages, bare);
  print("nats", messages, nats);
  std::printf("broker_nats_to_bare_published_ratio %.3f x\n",
              nats.published_per_second / bare.published_per_second);
  std::printf("broker_nats_to_bare_received_ratio %.3f x\n",
              nats.received_per_second / bare.received_per_second);
  runtime.stop();
  return 0;
}
