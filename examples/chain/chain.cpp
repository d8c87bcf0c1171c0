// A wrapper chain configured by string. With
//   wrappers=trail?label=outer,log?stream=stdout,trail?label=inner
// the first listed is outermost: a call enters outer, then log, then inner, then the
// transport; on the server the handler chain nests the same way around the handler.
// `trail` is this example's own wrapper plugin (trail_wrapper.cpp), found through
// MICRO_PLUGIN_PATH.
//
//   chain [--wrappers=…] [--transport=http] [count]
#include <cstdlib>
#include <iostream>

#include <micro/service.hpp>

struct Ping {
  int sequence;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Ping, sequence)

int main(int argc, char** argv) try {
  // Where this example's own plugin was built; an operator's setting wins.
  setenv("MICRO_PLUGIN_PATH", CHAIN_PLUGIN_DIR, 0);
  auto config = micro::Config::load(
      argc, argv, "registry=memory wrappers=trail?label=outer,log?stream=stdout,trail?label=inner");
  micro::Microservice service("chain", config);
  service.handle("Chain.Ping", [](micro::Context&, const Ping& ping) {
    std::cout << "        handler: ping " << ping.sequence << std::endl;
    return Ping{ping.sequence + 1};
  });
  service.start();
  int count = argc > 1 ? std::atoi(argv[1]) : 2;
  for (int i = 1; i <= count; ++i) {
    auto pong = service.client().call<Ping>("chain", "Chain.Ping", Ping{i});
    std::cout << "client: pong " << pong.sequence << std::endl;
  }
  service.stop();
  return 0;
} catch (const std::exception& e) {
  std::cerr << "chain: " << e.what() << "\n";
  return 1;
}
