// Helpers every broker plugin shares (declared in <micro/broker.hpp>): the topic syntax
// check and matching, the delivery-mode refusal, the dispatch of delivery failures to the error
// handler, and Go-Micro's JSON envelope.
#include <micro/broker.hpp>
#include <micro/log.hpp>

#include <cstdio>
#include <exception>
#include <utility>

#include <micro/base64.hpp>
#include <micro/error.hpp>
#include <micro/random.hpp>

#include <nlohmann/json.hpp>

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

bool topic_matches(std::string_view pattern, std::string_view topic) noexcept {
  while (true) {
    std::size_t pattern_dot = pattern.find('.');
    std::string_view pattern_token = pattern.substr(0, pattern_dot);
    if (pattern_token == ">") return !topic.empty();
    if (topic.empty()) return false;
    std::size_t topic_dot = topic.find('.');
    std::string_view topic_token = topic.substr(0, topic_dot);
    if (pattern_token != "*" && pattern_token != topic_token) return false;
    bool pattern_end = pattern_dot == std::string_view::npos;
    bool topic_end = topic_dot == std::string_view::npos;
    if (pattern_end || topic_end) return pattern_end && topic_end;
    pattern.remove_prefix(pattern_dot + 1);
    topic.remove_prefix(topic_dot + 1);
  }
}

std::string encode_gomicro_envelope(const Message& message) {
  nlohmann::json header = nlohmann::json::object();
  for (const auto& [key, value] : message.headers) header[key] = value;
  if (!message.headers.contains("Micro-Topic")) header["Micro-Topic"] = message.topic;
  if (!message.headers.contains("Micro-Id")) header["Micro-Id"] = random_uuid();
  if (!message.headers.contains("Content-Type"))
    header["Content-Type"] = "application/octet-stream";
  nlohmann::json envelope = {{"Header", std::move(header)}, {"Body", base64::encode(message.body)}};
  return envelope.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool decode_gomicro_envelope(std::string_view data, Message& message) {
  std::size_t first = data.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos || data[first] != '{') return false;
  nlohmann::json envelope = nlohmann::json::parse(data, nullptr, false);
  if (envelope.is_discarded() || !envelope.is_object() || envelope.size() != 2 ||
      !envelope.contains("Header") || !envelope.contains("Body"))
    return false;
  const nlohmann::json& header = envelope["Header"];
  const nlohmann::json& body = envelope["Body"];
  if (!(header.is_object() || header.is_null()) || !(body.is_string() || body.is_null()))
    return false;
  Metadata headers;
  if (header.is_object()) {
    for (const auto& [key, value] : header.items()) {
      if (!value.is_string()) return false;
      headers.set(key, value.get<std::string>());
    }
  }
  // Padded standard base64: what Go's encoding/json writes for []byte.
  std::optional<std::string> decoded;
  if (body.is_string()) {
    decoded = base64::try_decode(body.get_ref<const std::string&>());
    if (!decoded) return false;
  }
  message.headers = std::move(headers);
  message.body = decoded ? std::move(*decoded) : std::string();
  return true;
}

}  // namespace micro
