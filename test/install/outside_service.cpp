// A service built outside the tree against the installed headers, libmicro and plugins.
#include <iostream>

#include <micro/service.hpp>

struct Hello {
  std::string name;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Hello, name)

int main(int argc, char** argv) try {
  auto config =
      micro::Config::load(argc, argv, "registry=memory broker=memory selector=roundrobin");
  micro::Microservice service("outside", config);
  service.handle("Outside.Hello",
                 [](micro::Context&, const Hello& hello) { return Hello{"hello " + hello.name}; });
  service.start();
  auto reply = service.client().call<Hello>("outside", "Outside.Hello", Hello{"installed"});
  std::cout << reply.name << "\n";
  for (const auto& plugin : micro::PluginLoader::instance().list())
    std::cout << "plugin " << micro::to_string(plugin.kind) << "/" << plugin.name << " "
              << plugin.path.string() << "\n";
  service.stop();
  return reply.name == "hello installed" ? 0 : 1;
} catch (const std::exception& e) {
  std::cerr << "outside_service: " << e.what() << "\n";
  return 1;
}
