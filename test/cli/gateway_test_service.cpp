// A service for the `micro api` test: shows what a call through the gateway carries, answers
// late on request, and counts the calls whose caller went away.
//   Test.Echo   → {"body": <the request>, "metadata": {…}, "remaining_ms": <deadline left>}
//   Test.Sleep  {"ms": N} → {"slept": N} after N ms (a timer: no I/O thread blocked); a call
//               cancelled meanwhile is counted and answered at once
//   Test.Stats  → {"cancelled": <count>, "sleeping": <Test.Sleep calls in progress>}
//
//   gateway-test-service [name] [--registry=file?dir=…] [--wrappers=…]   (name: gatewaytest)
#include <atomic>
#include <iostream>
#include <string>

#include <boost/asio/steady_timer.hpp>

#include <micro/service.hpp>

int main(int argc, char** argv) try {
  auto config = micro::Config::load(argc, argv, "registry=file transport=tcp");
  std::string name = argc > 1 ? argv[1] : "gatewaytest";
  micro::Microservice service(name, config);
  std::atomic<int> cancelled{0}, sleeping{0};

  service.handle("Test.Echo", [](micro::Context& context, const nlohmann::json& request) {
    nlohmann::json metadata = nlohmann::json::object();
    for (const auto& [key, value] : context.metadata()) metadata[key] = value;
    auto remaining =
        std::chrono::duration_cast<std::chrono::milliseconds>(context.remaining()).count();
    return nlohmann::json{{"body", request}, {"metadata", metadata}, {"remaining_ms", remaining}};
  });

  service.handle(
      "Test.Sleep", [&](const micro::RequestPtr& request, micro::ResponseHandler respond) {
        auto ms = nlohmann::json::parse(request->body).value("ms", 0);
        auto timer = std::make_shared<boost::asio::steady_timer>(service.runtime().executor(),
                                                                 std::chrono::milliseconds(ms));
        auto answered = std::make_shared<std::atomic<bool>>(false);
        ++sleeping;
        auto shared_respond = std::make_shared<micro::ResponseHandler>(std::move(respond));
        request->context.cancellation()->on_cancel([&, timer, answered, shared_respond] {
          if (answered->exchange(true)) return;
          ++cancelled;
          --sleeping;
          timer->cancel();
          (*shared_respond)(micro::Response::failure(micro::cancelled_error("gatewaytest")));
        });
        timer->async_wait([&, timer, answered, shared_respond, ms](boost::system::error_code) {
          if (answered->exchange(true)) return;
          --sleeping;
          micro::Response response;
          response.content_type = "application/json";
          response.body = nlohmann::json{{"slept", ms}}.dump();
          (*shared_respond)(std::move(response));
        });
      });

  service.handle("Test.Stats", [&](micro::Context&, const nlohmann::json&) {
    return nlohmann::json{{"cancelled", cancelled.load()}, {"sleeping", sleeping.load()}};
  });

  service.start();
  std::cout << name << " listening on " << service.server().address() << std::endl;
  service.run();
  return 0;
} catch (const std::exception& e) {
  std::cerr << "gateway-test-service: " << e.what() << "\n";
  return 1;
}
