// The test service of the W3C Trace Context test suite (w3c/trace-context, test/), as a micro
// service behind `micro api`: TraceContext.Test receives a JSON list of
// {"url": …, "arguments": […]} and, for each item in turn, POSTs its arguments as JSON to its
// url with the trace context propagated (the traced HTTP client: a CLIENT span under the
// request's SERVER span). The harness then checks the traceparent/tracestate it got back.
//
//   tracecontext-service [--registry=file?dir=/tmp/reg] [--wrappers=trace?…]
//   micro api --address=127.0.0.1:8080 [--registry=file?dir=/tmp/reg]
//   python test.py http://127.0.0.1:8080/tracecontext/TraceContext.Test
#include <cstddef>
#include <exception>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <micro/error.hpp>
#include <micro/http_tracing.hpp>
#include <micro/service.hpp>

namespace {

constexpr const char* service_name = "tracecontext";
constexpr std::size_t max_actions = 64;
// A callback that never answers must not hold the request forever when the caller set no
// deadline.
constexpr auto default_callback_timeout = std::chrono::seconds(10);

struct Action {
  micro::http::Url url;
  std::string body;  // the arguments, as JSON
};

[[noreturn]] void refuse(const std::string& detail) {
  throw micro::Exception(micro::bad_request(
      service_name,
      "TraceContext.Test expects a JSON list of {\"url\": …, \"arguments\": […]}: " + detail));
}

// The harness's instructions, checked whole before anything is sent.
std::vector<Action> read_actions(const std::string& body) {
  nlohmann::json list = nlohmann::json::parse(body, nullptr, false);
  if (list.is_discarded()) refuse("the body is not JSON");
  if (!list.is_array()) refuse(std::string("got a JSON ") + list.type_name());
  if (list.size() > max_actions)
    refuse("at most " + std::to_string(max_actions) + " items, got " + std::to_string(list.size()));
  std::vector<Action> actions;
  actions.reserve(list.size());
  for (std::size_t index = 0; index < list.size(); ++index) {
    const nlohmann::json& item = list[index];
    std::string where = "item " + std::to_string(index);
    if (!item.is_object()) refuse(where + " is a JSON " + item.type_name() + ", not an object");
    auto url = item.find("url");
    if (url == item.end()) refuse(where + " has no \"url\"");
    if (!url->is_string()) refuse(where + ": \"url\" is a JSON " + url->type_name());
    std::string problem;
    auto parsed = micro::http::try_parse_url(url->get<std::string>(), &problem);
    if (!parsed) refuse(where + ": url \"" + url->get<std::string>() + "\": " + problem);
    auto arguments = item.find("arguments");
    nlohmann::json sent =
        arguments == item.end() || arguments->is_null() ? nlohmann::json::array() : *arguments;
    actions.push_back({std::move(*parsed), sent.dump()});
  }
  return actions;
}

// One TraceContext.Test request: its actions sent one after the other, then the answer.
class Run : public std::enable_shared_from_this<Run> {
 public:
  Run(std::weak_ptr<micro::http::TracedClient> http, micro::RequestPtr request,
      micro::ResponseHandler respond, std::vector<Action> actions)
      : http_(std::move(http)),
        request_(std::move(request)),
        respond_(std::move(respond)),
        actions_(std::move(actions)) {}

  void next() {
    if (index_ == actions_.size()) return finish();
    auto http = http_.lock();
    if (!http) {  // the service is stopping
      respond_(micro::Response::failure(micro::unavailable(service_name, "stopping")));
      return;
    }
    Action& action = actions_[index_];
    micro::http::Request call{
        "POST", action.url, {{"Content-Type", "application/json"}}, std::move(action.body)};
    micro::http::RequestOptions options;
    if (!request_->context.has_deadline())
      options.deadline = micro::http::Clock::now() + default_callback_timeout;
    // The request's context: its SERVER span is the parent, its deadline and cancellation
    // bound the exchange.
    http->async_request(
        request_->context, std::move(call), options,
        [self = shared_from_this()](std::exception_ptr error, micro::http::Response response) {
          self->record(error, response);
          self->next();
        });
  }

 private:
  void record(const std::exception_ptr& error, const micro::http::Response& response) {
    const std::string url = actions_[index_++].url.text();
    if (!error) {
      results_.push_back({{"url", url}, {"status", response.status}});
      return;
    }
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      failures_ += (failures_.empty() ? "" : "; ") + ("POST " + url + ": " + e.what());
    }
  }

  void finish() {
    if (!failures_.empty()) {
      respond_(micro::Response::failure(
          micro::Error(service_name, micro::ErrorCode::bad_gateway, failures_)));
      return;
    }
    micro::Response response;
    response.content_type = "application/json";
    response.body = results_.dump();
    respond_(std::move(response));
  }

  // Weak: a callback still arriving once the service stopped finds the client gone.
  std::weak_ptr<micro::http::TracedClient> http_;
  micro::RequestPtr request_;  // keeps the request, and so its context, alive
  micro::ResponseHandler respond_;
  std::vector<Action> actions_;
  std::size_t index_ = 0;
  nlohmann::json results_ = nlohmann::json::array();
  std::string failures_;
};

}  // namespace

int main(int argc, char** argv) try {
  // Tracing is what this service is for: on by default, recording what the caller sampled
  // and exporting nowhere (--wrappers=trace?exporter=… to see the spans).
  auto config = micro::Config::load(
      argc, argv,
      "registry=file transport=tcp wrappers=trace?sampler=parentbased_always_on&exporter=none");
  micro::Microservice service(service_name, config);
  auto http = std::make_shared<micro::http::TracedClient>(service.runtime().executor());
  // The raw handler form: the callbacks are asynchronous, and an I/O thread must not wait.
  service.handle("TraceContext.Test", [weak = std::weak_ptr(http)](const micro::RequestPtr& request,
                                                                   micro::ResponseHandler respond) {
    std::vector<Action> actions;
    try {
      actions = read_actions(request->body);
    } catch (const micro::Exception& e) {
      respond(micro::Response::failure(e.error()));
      return;
    }
    std::make_shared<Run>(weak, request, std::move(respond), std::move(actions))->next();
  });
  service.start();
  std::cout << "tracecontext listening on " << service.server().address() << std::endl;
  service.run();  // until SIGTERM/SIGINT, then deregister and drain
  http.reset();   // cancels callbacks still going, while the runtime still runs
  std::cout << "tracecontext stopped" << std::endl;
  return 0;
} catch (const std::exception& e) {
  std::cerr << "tracecontext-service: " << e.what() << "\n";
  return 1;
}
