// Publish/subscribe: plain subscribers each get every event; members of a queue group share
// the events, each event going to exactly one member.
//
//   pubsub [count]                          all in one process (broker=memory by default)
//   pubsub subscriber <name> [queue]        one subscriber process; prints each event
//   pubsub publisher <count>                one publisher process
// Across processes the broker must be shared: --broker=nats://127.0.0.1:4222.
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>

#include <micro/service.hpp>

struct OrderPlaced {
  int id;
  double amount;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(OrderPlaced, id, amount)

namespace {

std::mutex print_mutex;

OrderPlaced decode(const micro::Message& message) {
  return micro::codec_for(message.headers.get("Content-Type", "application/json"))
      .decode(message.body)
      .get<OrderPlaced>();
}

micro::SubscriberFunction printing_subscriber(std::string who, std::atomic<int>& delivered) {
  return [who, &delivered](micro::Context&, micro::Message& message) {
    auto order = decode(message);
    std::lock_guard lock(print_mutex);
    std::cout << who << " got order " << order.id << std::endl;
    ++delivered;
  };
}

int all_in_one(const micro::Config& config, int count) {
  micro::Microservice service("orders", config);
  std::atomic<int> delivered{0};
  service.subscribe("orders.placed", printing_subscriber("audit", delivered));   // every event
  service.subscribe("orders.placed", printing_subscriber("mailer", delivered));  // every event
  service.subscribe("orders.placed", printing_subscriber("billing-1", delivered), "billing");
  service.subscribe("orders.placed", printing_subscriber("billing-2", delivered), "billing");
  service.start();
  for (int i = 1; i <= count; ++i)
    service.client().publish("orders.placed", OrderPlaced{i, 9.5 * i});
  // Each event reaches audit, mailer and one billing member.
  int expected = count * 3;
  for (int waited = 0; delivered.load() < expected && waited < 5000; waited += 10)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  service.stop();
  std::cout << "delivered " << delivered.load() << " of " << expected << std::endl;
  return delivered.load() == expected ? 0 : 1;
}

int subscriber(const micro::Config& config, const std::string& name, const std::string& queue) {
  micro::Microservice service(name, config);
  std::atomic<int> delivered{0};
  service.subscribe("orders.placed", printing_subscriber(name, delivered), queue);
  service.start();
  std::cout << name << " subscribed" << (queue.empty() ? "" : " in queue " + queue) << std::endl;
  service.run();  // until SIGTERM/SIGINT: unsubscribe, drain
  std::cout << name << " received " << delivered.load() << std::endl;
  return 0;
}

int publisher(const micro::Config& config, int count) {
  micro::Microservice service("", config);
  service.broker().connect();
  int failed = 0;
  for (int i = 1; i <= count; ++i) {
    try {
      service.client().publish("orders.placed", OrderPlaced{i, 9.5 * i});
    } catch (const micro::Exception& e) {
      ++failed;  // reported, never silently lost
      std::cerr << "publish " << i << " failed: " << e.what() << "\n";
    }
  }
  service.broker().disconnect();  // drains what was accepted
  std::cout << "published " << count - failed << " of " << count << std::endl;
  return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) try {
  auto config = micro::Config::load(argc, argv, "broker=memory registry=memory");
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "subscriber" && argc > 2) return subscriber(config, argv[2], argc > 3 ? argv[3] : "");
  if (mode == "publisher" && argc > 2) return publisher(config, std::stoi(argv[2]));
  return all_in_one(config, argc > 1 ? std::stoi(argv[1]) : 6);
} catch (const std::exception& e) {
  std::cerr << "pubsub: " << e.what() << "\n";
  return 1;
}
