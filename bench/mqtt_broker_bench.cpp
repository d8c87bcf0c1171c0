// bench/mqtt_broker_bench — publish→subscribe throughput of 128-byte messages with one
// subscriber, for the mqtt broker (MQTT 5) beside a bare libmosquitto client doing the same on
// the same mosquitto in the same run, at QoS 1 and at QoS 0. Both hand publishes to
// libmosquitto, which sends them from its loop thread, so "published" is the rate publishes are
// accepted and "received" (until the last arrives) the end-to-end rate. Starts its own
// mosquitto on loopback unless an address is given (first argument, host:port). Prints
// `name value unit` lines per case (mqtt_qos<n>, mqtt_qos<n>_bare_client):
// broker_<case>_published_per_second, _received_per_second, _lost; then
// broker_mqtt_qos<n>_to_bare_{published,received}_ratio. BENCH_MESSAGES: count (default 100000).
#include <mosquitto.h>

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
#include <micro/error.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/runtime.hpp>

#include "broker/mqtt/mosquitto_server.hpp"

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
  auto deadline = published + std::chrono::seconds(30);
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

Result run_broker(const std::string& address, int qos, long messages, micro::Runtime& runtime) {
  auto& loader = micro::PluginLoader::instance();
  // Room for every publish of the run, as the bare client's queue has.
  std::vector<std::pair<std::string, std::string>> options = {
      {"qos", std::to_string(qos)}, {"max_pending", std::to_string(messages + 1000)}};
  auto subscriber = loader.create<micro::Broker>("mqtt", address, options, runtime.executor());
  auto publisher = loader.create<micro::Broker>("mqtt", address, options, runtime.executor());
  subscriber->connect();
  publisher->connect();
  std::atomic<long> received{0};
  std::string topic = "bench.broker.qos" + std::to_string(qos);
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

struct BareClient {
  mosquitto* handle = nullptr;
  std::atomic<bool> connected{false};
  std::atomic<int> subscribed{0};
  std::atomic<long>* received = nullptr;

  BareClient(const std::string& host, int port) {
    handle = mosquitto_new(nullptr, true, this);
    mosquitto_int_option(handle, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(handle, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_int_option(handle, MOSQ_OPT_RECEIVE_MAXIMUM, 1000);  // as the broker asks
    mosquitto_connect_v5_callback_set(
        handle, [](mosquitto*, void* self, int rc, int, const mosquitto_property*) {
          static_cast<BareClient*>(self)->connected.store(rc == 0);
        });
    mosquitto_subscribe_v5_callback_set(
        handle, [](mosquitto*, void* self, int, int, const int*, const mosquitto_property*) {
          static_cast<BareClient*>(self)->subscribed.fetch_add(1);
        });
    mosquitto_message_v5_callback_set(
        handle, [](mosquitto*, void* self, const mosquitto_message*, const mosquitto_property*) {
          static_cast<BareClient*>(self)->received->fetch_add(1);
        });
    if (mosquitto_connect_bind_v5(handle, host.c_str(), port, 30, nullptr, nullptr) !=
            MOSQ_ERR_SUCCESS ||
        mosquitto_loop_start(handle) != MOSQ_ERR_SUCCESS) {
      std::fprintf(stderr, "cannot connect to %s:%d\n", host.c_str(), port);
      std::exit(1);
    }
    while (!connected.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~BareClient() {
    mosquitto_disconnect(handle);
    mosquitto_loop_stop(handle, false);
    mosquitto_destroy(handle);
  }
};

Result run_bare(const std::string& host, int port, int qos, long messages) {
  std::atomic<long> received{0};
  BareClient subscriber(host, port), publisher(host, port);
  subscriber.received = &received;
  publisher.received = &received;
  std::string topic = "bench/bare/qos" + std::to_string(qos);
  mosquitto_subscribe_v5(subscriber.handle, nullptr, topic.c_str(), qos, 0, nullptr);
  while (subscriber.subscribed.load() == 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::string body(128, 'x');
  return measure(
      messages,
      [&] {
        for (long i = 0; i < messages; ++i)
          mosquitto_publish_v5(publisher.handle, nullptr, topic.c_str(),
                               static_cast<int>(body.size()), body.data(), qos, false, nullptr);
      },
      received);
}

}  // namespace

int main(int argc, char** argv) {
  long messages = 100000;
  if (const char* text = std::getenv("BENCH_MESSAGES")) messages = std::atol(text);
  mosquitto_lib_init();
  std::optional<micro_test::MosquittoServer> server;
  std::string address;
  if (argc > 1) {
    address = argv[1];
  } else {
    // Hold every QoS 1 message of a burst for the subscriber (the default drops beyond 1000).
    server.emplace(std::vector<std::string>{"max_queued_messages 0"});
    address = server->address();
  }
  std::string host = address.substr(0, address.rfind(':'));
  int port = std::atoi(address.substr(address.rfind(':') + 1).c_str());
  micro::Runtime runtime{2};
  for (int qos : {1, 0}) {
    Result bare, broker;
    for (int round = 0; round < 2; ++round) {
      Result b = run_bare(host, port, qos, messages);
      Result r = run_broker(address, qos, messages, runtime);
      if (b.received_per_second > bare.received_per_second) bare = b;
      if (r.received_per_second > broker.received_per_second) broker = r;
    }
    std::string name = "mqtt_qos" + std::to_string(qos);
    print(name + "_bare_client", messages, bare);
    print(name, messages, broker);
    std::printf("broker_%s_to_bare_published_ratio %.3f x\n", name.c_str(),
                broker.published_per_second / bare.published_per_second);
    std::printf("broker_%s_to_bare_received_ratio %.3f x\n", name.c_str(),
                broker.received_per_second / bare.received_per_second);
    std::fflush(stdout);
  }
  runtime.stop();
  return 0;
}
