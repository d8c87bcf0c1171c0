// Publish/subscribe on one broker: two plain subscribers each get every event; a queue group
// of two shares the events, each event going to exactly one member.
//
//   pubsub [--broker=memory] [count]
#include <atomic>
#include <iostream>
#include <mutex>
#include <thread>

#include <micro/service.hpp>

struct OrderPlaced {
  int id;
  double amount;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(OrderPlaced, id, amount)

int main(int argc, char** argv) try {
  auto config = micro::Config::load(argc, argv, "broker=memory registry=memory");
  int count = argc > 1 ? std::stoi(argv[1]) : 6;

  micro::Microservice service("orders", config);
  std::mutex print_mutex;
  std::atomic<int> delivered{0};
  auto subscriber = [&](std::string who) {
    return [&, who](micro::Context&, micro::Message& message) {
      auto order = micro::codec_for(message.headers.get("Content-Type", "application/json"))
                       .decode(message.body)
                       .get<OrderPlaced>();
      std::lock_guard lock(print_mutex);
      std::cout << who << " got order " << order.id << std::endl;
      ++delivered;
    };
  };
  service.subscribe("orders.placed", subscriber("audit"));                 // every event
  service.subscribe("orders.placed", subscriber("mailer"));                // every event
  service.subscribe("orders.placed", subscriber("billing-1"), "billing");  // one of the group
  service.subscribe("orders.placed", subscriber("billing-2"), "billing");
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
} catch (const std::exception& e) {
  std::cerr << "pubsub: " << e.what() << "\n";
  return 1;
}
