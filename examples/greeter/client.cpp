// The greeter client: finds the greeter through the registry and calls it.
//
//   greeter-client [--registry=file?dir=/tmp/reg] [--selector=roundrobin] [--transport=http]
//                  [count] [name]
#include <iostream>
#include <string>

#include <micro/service.hpp>

#include "greeter.hpp"

int main(int argc, char** argv) try {
  auto config = micro::Config::load(argc, argv, "registry=file selector=roundrobin");
  int count = argc > 1 ? std::stoi(argv[1]) : 4;
  std::string name = argc > 2 ? argv[2] : "World";

  micro::Microservice service("", config);  // no name: a client only, nothing to serve
  for (int i = 0; i < count; ++i) {
    auto response = service.client().call<greeter::HelloResponse>("greeter", "Greeter.Hello",
                                                                  greeter::HelloRequest{name});
    std::cout << response.greeting << " (served by " << response.served_by << ")" << std::endl;
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "greeter-client: " << e.what() << "\n";
  return 1;
}
