// bench/rabbitmq_broker_bench — publish→subscribe throughput of 128-byte messages with one
// subscriber, for the RabbitMQ broker and the bare librabbitmq client doing the same work on the
// same server in the same run, so the broker's overhead is a ratio. Same work means: a
// publisher connection in confirm mode, each publish waiting for its confirm (what the broker's
// publish promises), persistent messages, one topic exchange, one subscriber connection with an
// exclusive queue. Two delivery modes: at_most_once (no-ack consumer) and at_least_once (manual
// ack per message, prefetch 256). For scale, the bare client's unconfirmed publish rate too.
//
// Starts its own rabbitmq-server on loopback unless an address is given (first argument,
// host:port). BENCH_MESSAGES sets the count (default 20000). Prints `name value unit` lines:
// broker_rabbitmq[_bare_client][_at_least_once]_{published,received}_per_second, _lost, and
// broker_rabbitmq[_at_least_once]_to_bare_{published,received}_ratio.
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

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

#include "broker/rabbitmq/rabbitmq_server.hpp"

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

Result run_broker(const std::string& address, long messages, micro::Delivery delivery) {
  auto& loader = micro::PluginLoader::instance();
  micro::PluginOptions options = {{"exchange", "bench"}};
  // Separate publisher and subscriber instances, as two processes would have.
  auto subscriber = loader.create<micro::Broker>("rabbitmq", address, options);
  auto publisher = loader.create<micro::Broker>("rabbitmq", address, options);
  subscriber->connect();
  publisher->connect();
  std::atomic<long> received{0};
  micro::SubscribeOptions subscribe_options;
  subscribe_options.delivery = delivery;
  auto subscription = subscriber->subscribe(
      "bench.topic", [&](micro::Message&) { received.fetch_add(1); }, subscribe_options);
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

// ---- the bare client ----

amqp_bytes_t bytes_of(const std::string& text) {
  return amqp_bytes_t{text.size(), const_cast<char*>(text.data())};
}

amqp_connection_state_t bare_connect(const std::string& host, int port) {
  amqp_connection_state_t state = amqp_new_connection();
  amqp_socket_t* socket = amqp_tcp_socket_new(state);
  if (amqp_socket_open(socket, host.c_str(), port) != AMQP_STATUS_OK ||
      amqp_login(state, "/", 0, AMQP_DEFAULT_FRAME_SIZE, 0, AMQP_SASL_METHOD_PLAIN, "guest",
                 "guest")
              .reply_type != AMQP_RESPONSE_NORMAL) {
    std::fprintf(stderr, "bare client: cannot connect to %s:%d\n", host.c_str(), port);
    std::exit(1);
  }
  amqp_channel_open(state, 1);
  amqp_exchange_declare(state, 1, amqp_cstring_bytes("bench"), amqp_cstring_bytes("topic"), 0, 1, 0,
                        0, amqp_empty_table);
  if (amqp_get_rpc_reply(state).reply_type != AMQP_RESPONSE_NORMAL) {
    std::fprintf(stderr, "bare client: cannot declare the exchange\n");
    std::exit(1);
  }
  return state;
}

Result run_bare(const std::string& host, int port, long messages, bool acked, bool confirmed) {
  amqp_connection_state_t subscriber = bare_connect(host, port);
  amqp_connection_state_t publisher = bare_connect(host, port);
  if (acked) amqp_basic_qos(subscriber, 1, 0, 256, 0);
  auto* declared =
      amqp_queue_declare(subscriber, 1, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
  std::string queue(static_cast<const char*>(declared->queue.bytes), declared->queue.len);
  amqp_queue_bind(subscriber, 1, bytes_of(queue), amqp_cstring_bytes("bench"),
                  amqp_cstring_bytes("bench.topic"), amqp_empty_table);
  amqp_basic_consume(subscriber, 1, bytes_of(queue), amqp_empty_bytes, 0, acked ? 0 : 1, 0,
                     amqp_empty_table);
  if (confirmed) amqp_confirm_select(publisher, 1);

  std::atomic<long> received{0};
  std::atomic<bool> stop{false};
  std::thread consumer([&] {
    while (!stop.load() && received.load() < messages) {
      amqp_maybe_release_buffers(subscriber);
      amqp_envelope_t envelope;
      timeval timeout{0, 100000};
      amqp_rpc_reply_t reply = amqp_consume_message(subscriber, &envelope, &timeout, 0);
      if (reply.reply_type != AMQP_RESPONSE_NORMAL) continue;
      if (acked) amqp_basic_ack(subscriber, 1, envelope.delivery_tag, 0);
      amqp_destroy_envelope(&envelope);
      received.fetch_add(1);
    }
  });
  std::string body(128, 'x');
  amqp_basic_properties_t properties{};
  properties._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
  properties.delivery_mode = AMQP_DELIVERY_PERSISTENT;
  Result result = measure(
      messages,
      [&] {
        for (long i = 0; i < messages; ++i) {
          amqp_basic_publish(publisher, 1, amqp_cstring_bytes("bench"),
                             amqp_cstring_bytes("bench.topic"), 0, 0, &properties, bytes_of(body));
          if (!confirmed) continue;
          while (true) {  // this publish's basic.ack
            amqp_frame_t frame;
            if (amqp_simple_wait_frame(publisher, &frame) != AMQP_STATUS_OK) std::exit(1);
            if (frame.frame_type == AMQP_FRAME_METHOD &&
                frame.payload.method.id == AMQP_BASIC_ACK_METHOD)
              break;
          }
        }
      },
      received);
  stop.store(true);
  consumer.join();
  amqp_connection_close(publisher, AMQP_REPLY_SUCCESS);
  amqp_connection_close(subscriber, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(publisher);
  amqp_destroy_connection(subscriber);
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  long messages = 20000;
  if (const char* text = std::getenv("BENCH_MESSAGES")) messages = std::atol(text);
  std::optional<micro_test::RabbitServer> server;
  std::string address;
  if (argc > 1) {
    address = argv[1];
  } else {
    server.emplace();
    address = server->address();
  }
  std::string host = address.substr(0, address.rfind(':'));
  int port = std::atoi(address.substr(address.rfind(':') + 1).c_str());

  // Alternate bare and broker runs twice, keeping the better of each, to damp noise.
  Result bare, broker, bare_acked, broker_acked;
  auto better = [](Result& best, const Result& candidate) {
    if (candidate.received_per_second > best.received_per_second) best = candidate;
  };
  for (int round = 0; round < 2; ++round) {
    better(bare, run_bare(host, port, messages, false, true));
    better(broker, run_broker(address, messages, micro::Delivery::at_most_once));
    better(bare_acked, run_bare(host, port, messages, true, true));
    better(broker_acked, run_broker(address, messages, micro::Delivery::at_least_once));
  }
  print("rabbitmq_bare_client", messages, bare);
  print("rabbitmq", messages, broker);
  std::printf("broker_rabbitmq_to_bare_published_ratio %.3f x\n",
              broker.published_per_second / bare.published_per_second);
  std::printf("broker_rabbitmq_to_bare_received_ratio %.3f x\n",
              broker.received_per_second / bare.received_per_second);
  print("rabbitmq_bare_client_at_least_once", messages, bare_acked);
  print("rabbitmq_at_least_once", messages, broker_acked);
  std::printf("broker_rabbitmq_at_least_once_to_bare_published_ratio %.3f x\n",
              broker_acked.published_per_second / bare_acked.published_per_second);
  std::printf("broker_rabbitmq_at_least_once_to_bare_received_ratio %.3f x\n",
              broker_acked.received_per_second / bare_acked.received_per_second);
  // For scale: what confirms cost (publishes not waiting for the server).
  print("rabbitmq_bare_client_unconfirmed", messages, run_bare(host, port, messages, false, false));
  return 0;
}
