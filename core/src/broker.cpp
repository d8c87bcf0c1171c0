// Helpers every broker plugin shares (declared in <micro/broker.hpp>): the topic syntax
// check, the delivery-mode refusal and the dispatch of delivery failures to the error handler.
#include <micro/broker.hpp>
#include <micro/log.hpp>

#include <cstdio>
#include <exception>
#include <utility>

#include <micro/error.hpp>

namespace micro {

namespace {

[[noreturn]] void refuse_topic(std::string_view error_id, std::string detail) {
  throw Exception(bad_request(std::string(error_id), std::move(detail)));
}

}  // namespace

void validate_topic(std::string_view topic, TopicUse use, std::string_view error_id) {
  if (topic.empty()) refuse_topic(error_id, "topic is empty");
  // One pass over the characters (this runs on every publish); each token is judged at its
  // end, the checks in the order the messages are documented in, so a topic with several
  // problems always names the first token's first problem.
  std::size_t start = 0;
  bool whitespace = false;
  for (std::size_t index = 0;; ++index) {
    bool last = index == topic.size();
    if (!last && topic[index] != '.') {
      char character = topic[index];
      whitespace = whitespace || character == ' ' || character == '\t' || character == '\r' ||
                   character == '\n';
      continue;
    }
    std::string_view token = topic.substr(start, index - start);
    if (token.empty())
      refuse_topic(error_id, "topic '" + std::string(topic) + "' has an empty token");
    if (whitespace)
      refuse_topic(error_id, "topic '" + std::string(topic) + "' contains whitespace");
    bool wildcard = token == "*" || token == ">";
    if (wildcard && use == TopicUse::publish)
      refuse_topic(error_id,
                   "cannot publish to '" + std::string(topic) + "': it contains a wildcard");
    if (token == ">" && !last)
      refuse_topic(error_id, "topic '" + std::string(topic) + "': '>' must be the last token");
    if (last) return;
    start = index + 1;
  }
}

std::string_view to_string(Delivery delivery) noexcept {
  return delivery == Delivery::at_least_once ? "at_least_once" : "at_most_once";
}

void require_delivery(const SubscribeOptions& options, bool offers_at_least_once,
                      std::string_view broker_name, std::string_view error_id) {
  if (options.delivery != Delivery::at_least_once || offers_at_least_once) return;
  throw Exception(bad_request(std::string(error_id),
                              "broker " + std::string(broker_name) +
                                  " cannot deliver at_least_once (it has no acknowledgement); it "
                                  "offers at_most_once"));
}

BrokerErrorReporter::BrokerErrorReporter(std::string broker_name)
    : broker_name_(std::move(broker_name)) {}

void BrokerErrorReporter::set_handler(ErrorHandler handler) {
  // Built outside the lock: a report in progress keeps the old handler alive meanwhile.
  auto shared = std::make_shared<const ErrorHandler>(std::move(handler));
  std::lock_guard lock(mutex_);
  handler_ = std::move(shared);
}

void BrokerErrorReporter::report(const Message& message, std::string_view what) const noexcept {
  std::shared_ptr<const ErrorHandler> handler;
  {
    std::lock_guard lock(mutex_);
    handler = handler_;
  }
  try {
    if (handler && *handler) {
      (*handler)(message, what);
      return;
    }
    log::error("broker " + broker_name_,
               "handler for topic '" + message.topic + "' failed: " + std::string(what));
  } catch (...) {
    // An error handler that throws (or a line that cannot be built) has nowhere to go.
  }
}

void BrokerErrorReporter::deliver(const MessageHandler& handler, Message& message) const noexcept {
  try {
    handler(message);
  } catch (const std::exception& error) {
    report(message, error.what());
  } catch (...) {
    report(message, "unknown exception");
  }
}

}  // namespace micro
