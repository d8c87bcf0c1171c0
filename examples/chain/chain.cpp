// A wrapper chain configured by string: `wrappers=log,metrics` puts log outermost, metrics
// inside it, and the handler innermost; their lines show the order they run in.
//
//   chain [--wrappers=log,metrics]
#include <iostream>

#include <micro/service.hpp>

struct Ping {
  int sequence;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Ping, sequence)

int main(int argc, char** argv) try {
  auto config = micro::Config::load(argc, argv,
                                    "registry=memory wrappers=log?stream=stdout,metrics");
  micro::Microservice service("chain", config);
  service.handle("Chain.Ping", [](micro::Context&, const Ping& ping) {
    std::cout << "  handler: ping " << ping.sequence << std::endl;
    return Ping{ping.sequence + 1};
  });
  service.start();
  for (int i = 1; i <= 3; ++i) {
    auto pong = service.client().call<Ping>("chain", "Chain.Ping", Ping{i});
    std::cout << "client: pong " << pong.sequence << std::endl;
  }
  service.stop();
  return 0;
} catch (const std::exception& e) {
  std::cerr << "chain: " << e.what() << "\n";
  return 1;
}
