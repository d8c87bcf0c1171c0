// The greeter server: one endpoint, Greeter.Hello, which does a little traced work and
// publishes an event. Run two of them and the client's calls alternate between them
// (selector=roundrobin); add --wrappers=trace?exporter=file&file=/tmp/spans to see one trace
// from the client through the handler to the subscriber (`micro trace /tmp/spans`).
//
//   greeter-server [--registry=file?dir=/tmp/reg] [--server_address=127.0.0.1:0]
//                  [--transport=http]
//
// The client must use the same transport (--transport=http on both).
#include <iostream>

#include <micro/service.hpp>
#include <micro/trace.hpp>

#include "greeter.hpp"

int main(int argc, char** argv) try {
  auto config = micro::Config::load(argc, argv, "registry=file transport=tcp");
  micro::Microservice service("greeter", config);
  std::string address;  // set once started; handlers only run after that
  service.handle("Greeter.Hello", [&service, &address](micro::Context& context,
                                                       const greeter::HelloRequest& request) {
    if (request.name.empty())
      throw micro::Exception(micro::bad_request("greeter", "name is empty"));
    {
      // Application work gets its own span, a child of the request's (a no-op without
      // wrappers=trace).
      auto span = micro::trace::start_span("Greeter.Compose", context);
      span->set_attribute("greeter.name_length", static_cast<std::int64_t>(request.name.size()));
      span->end();
    }
    // An event for whoever listens; the trace continues into the subscriber.
    service.client().publish("greeter.greeted", greeter::HelloRequest{request.name}, context);
    return greeter::HelloResponse{"Hello, " + request.name + "!", address};
  });
  // This process listens too (an audit log); across processes use a shared broker (NATS).
  service.subscribe(
      "greeter.greeted", [](micro::Context&, micro::Message&) {}, "audit");
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
