// The greeter server: one endpoint, Greeter.Hello. Run two of them and the client's calls
// alternate between them (selector=roundrobin).
//
//   greeter-server [--registry=file?dir=/tmp/reg] [--server_address=127.0.0.1:0]
#include <iostream>

#include <micro/service.hpp>

#include "greeter.hpp"

int main(int argc, char** argv) try {
  auto config = micro::Config::load(argc, argv, "registry=file transport=tcp");
  micro::Microservice service("greeter", config);
  std::string address;  // set once started; handlers only run after that
  service.handle("Greeter.Hello",
                 [&address](micro::Context&, const greeter::HelloRequest& request) {
                   if (request.name.empty())
                     throw micro::Exception(micro::bad_request("greeter", "name is empty"));
                   return greeter::HelloResponse{"Hello, " + request.name + "!", address};
                 });
  service.start();
  address = service.server().address();
  std::cout << "greeter listening on " << address << std::endl;
  service.run();  // until SIGTERM/SIGINT, then deregister and drain
  std::cout << "greeter stopped" << std::endl;
  return 0;
} catch (const std::exception& e) {
  std::cerr << "greeter-server: " << e.what() << "\n";
  return 1;
}
