// test/plugins/http/http_echo_service.cpp — a service on transport=http for the tests that call
// it from other HTTP clients (http_client_test.py): the core Server with a typed
// Greeter.Hello and an Echo.Metadata that answers with the metadata it saw as JSON. Prints its
// address on one line, then serves until its standard input ends.
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include <micro/plugin_loader.hpp>
#include <micro/runtime.hpp>
#include <micro/server.hpp>
#include <micro/transport.hpp>

namespace {

struct Hello {
  std::string name;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Hello, name)

}  // namespace

int main() try {
  micro::Runtime runtime(2);
  auto transport = micro::PluginLoader::instance().create<micro::Transport>(
      "http", "", {{"max_body", "65536"}}, runtime.executor());
  micro::ServerOptions options;
  options.name = "greeter";
  micro::Server server(options, transport, nullptr, nullptr, micro::WrapperChains{});
  server.handle("Greeter.Hello",
                [](micro::Context&, const Hello& hello) { return Hello{"Hello " + hello.name}; });
  server.handle("Echo.Metadata",
                [](const micro::RequestPtr& request, micro::ResponseHandler respond) {
                  nlohmann::json seen = nlohmann::json::object();
                  for (const auto& [key, value] : request->context.metadata()) seen[key] = value;
                  seen["(deadline)"] = request->context.has_deadline();
                  micro::Response response;
                  response.content_type = "application/json";
                  response.body = seen.dump();
                  respond(std::move(response));
                });
  server.start();
  std::cout << server.address() << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
  }
  server.stop();
  return 0;
} catch (const std::exception& e) {
  std::cerr << "http_echo_service: " << e.what() << "\n";
  return 1;
}
