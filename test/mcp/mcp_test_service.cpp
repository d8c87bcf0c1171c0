// A service for the `micro mcp` tests and benchmark: endpoints whose shapes nest (objects in
// objects, arrays of objects, maps), registered descriptions, and an echo of what a call
// carries (metadata: the trace context), so a test sees what the gateway sent.
//   Catalog.Search  {query, limit, filter{tags[], in_stock}} → {items[{id, price}], total}
//   Catalog.Echo    any JSON → {"body": <request>, "metadata": {…}, "remaining_ms": N}
//   Catalog.Fail    {reason} → always a 409 naming the reason
//   Catalog.Slow    {ms} → {"slept": ms} after ms (a timer); a call cancelled meanwhile ends
//                   at once and is counted
//   Catalog.Stats   → {"cancelled": <Catalog.Slow calls cancelled so far>}
//   Bulk.OpNNN      (with a count) that many more endpoints, for a tools/list of many tools
//
//   mcp-test-service [name [count]] [--registry=file?dir=…]   (name: catalog, count: 0)
#include <atomic>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/steady_timer.hpp>

#include <micro/schema.hpp>
#include <micro/service.hpp>

namespace catalog {

struct Filter {
  std::vector<std::string> tags;
  bool in_stock = false;
};
struct SearchRequest {
  std::string query;
  std::int32_t limit = 10;
  Filter filter;
};
struct Item {
  std::string id;
  double price = 0;
};
struct SearchResponse {
  std::vector<Item> items;
  std::int64_t total = 0;
  std::map<std::string, std::string> facets;
};
struct FailRequest {
  std::string reason;
};
struct Empty {};

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Filter, tags, in_stock)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(SearchRequest, query, limit, filter)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Item, id, price)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(SearchResponse, items, total, facets)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(FailRequest, reason)
inline void to_json(nlohmann::json& json, const Empty&) {
  json = nlohmann::json::object();
}
inline void from_json(const nlohmann::json&, Empty&) {}

}  // namespace catalog

MICRO_DEFINE_SCHEMA(catalog::Filter, tags, in_stock);
MICRO_DEFINE_SCHEMA(catalog::SearchRequest, query, limit, filter);
MICRO_DEFINE_SCHEMA(catalog::Item, id, price);
MICRO_DEFINE_SCHEMA(catalog::SearchResponse, items, total, facets);

namespace {

micro::EndpointOptions described(std::string description) {
  micro::EndpointOptions options;
  options.metadata["description"] = std::move(description);
  return options;
}

}  // namespace

int main(int argc, char** argv) try {
  auto config = micro::Config::load(argc, argv, "registry=file transport=tcp");
  std::string name = argc > 1 ? argv[1] : "catalog";
  int extra_endpoints = argc > 2 ? std::stoi(argv[2]) : 0;
  micro::Microservice service(name, config);

  if (name == "ticker") {
    // Only a stream endpoint: {"count": N} → N messages {"tick": i, "of": N}, then the end.
    service.handle_stream("Ticker.Count", [](const micro::MessageStreamPtr& stream) {
      stream->async_read([stream](std::optional<std::string> message) {
        auto request = nlohmann::json::parse(message.value_or("{}"), nullptr, false);
        int count = request.is_object() ? request.value("count", 0) : 0;
        auto send = std::make_shared<std::function<void(int)>>();
        *send = [stream, count, send](int tick) {
          if (tick > count) {
            stream->finish(micro::Response{});
            *send = nullptr;  // breaks the cycle
            return;
          }
          stream->async_write(nlohmann::json{{"tick", tick}, {"of", count}}.dump(),
                              [send, tick](std::optional<micro::Error> error) {
                                if (!error && *send) (*send)(tick + 1);
                              });
        };
        (*send)(1);
      });
    });
    service.start();
    std::cout << name << " listening on " << service.server().address() << std::endl;
    service.run();
    return 0;
  }

  service.handle(
      "Catalog.Search",
      [](micro::Context&, const catalog::SearchRequest& request) {
        catalog::SearchResponse response;
        for (int i = 0; i < std::min(request.limit, 3); ++i)
          response.items.push_back({request.query + "-" + std::to_string(i), 9.5 + i});
        response.total = static_cast<std::int64_t>(response.items.size());
        response.facets["query"] = request.query;
        return response;
      },
      described("Searches the catalogue: items matching a query, at most limit of them."));

  service.handle(
      "Catalog.Echo",
      [](micro::Context& context, const nlohmann::json& request) {
        nlohmann::json metadata = nlohmann::json::object();
        for (const auto& [key, value] : context.metadata()) metadata[key] = value;
        auto remaining =
            std::chrono::duration_cast<std::chrono::milliseconds>(context.remaining()).count();
        return nlohmann::json{
            {"body", request}, {"metadata", metadata}, {"remaining_ms", remaining}};
      },
      described("Answers with the request and the metadata the call carried."));

  service.handle(
      "Catalog.Fail",
      [](micro::Context&, const catalog::FailRequest& request) -> catalog::Empty {
        throw micro::Exception(micro::Error("catalog", 409, "refused: " + request.reason));
      },
      described("Always fails with 409 Conflict, naming the reason."));

  std::atomic<int> cancelled{0};
  micro::EndpointOptions slow = described("Answers after ms milliseconds.");
  slow.request = micro::Value{"SlowRequest", "object", {{"ms", "integer", {}}}};
  slow.response = micro::Value{"SlowResponse", "object", {{"slept", "integer", {}}}};
  service.handle(
      "Catalog.Slow",
      [&](const micro::RequestPtr& request, micro::ResponseHandler respond) {
        auto ms = nlohmann::json::parse(request->body).value("ms", 0);
        auto timer = std::make_shared<boost::asio::steady_timer>(service.runtime().executor(),
                                                                 std::chrono::milliseconds(ms));
        auto answered = std::make_shared<std::atomic<bool>>(false);
        auto shared_respond = std::make_shared<micro::ResponseHandler>(std::move(respond));
        request->context.cancellation()->on_cancel([&, timer, answered, shared_respond] {
          if (answered->exchange(true)) return;
          ++cancelled;
          timer->cancel();
          (*shared_respond)(micro::Response::failure(micro::cancelled_error("catalog")));
        });
        timer->async_wait([timer, answered, shared_respond, ms](boost::system::error_code) {
          if (answered->exchange(true)) return;
          micro::Response response;
          response.content_type = "application/json";
          response.body = nlohmann::json{{"slept", ms}}.dump();
          (*shared_respond)(std::move(response));
        });
      },
      slow);
  service.handle(
      "Catalog.Stats",
      [&](micro::Context&, const nlohmann::json&) {
        return nlohmann::json{{"cancelled", cancelled.load()}};
      },
      described("How many Catalog.Slow calls were cancelled."));

  for (int i = 0; i < extra_endpoints; ++i) {
    char endpoint[32];
    std::snprintf(endpoint, sizeof endpoint, "Bulk.Op%03d", i);
    service.handle(endpoint, [](micro::Context&, const catalog::SearchRequest& request) {
      return catalog::Item{request.query, 1};
    });
  }

  service.start();
  std::cout << name << " listening on " << service.server().address() << std::endl;
  service.run();
  return 0;
} catch (const std::exception& e) {
  std::cerr << "mcp-test-service: " << e.what() << "\n";
  return 1;
}
