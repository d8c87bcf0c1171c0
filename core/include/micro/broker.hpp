// micro/broker.hpp — publish/subscribe between services.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include <micro/context.hpp>
#include <micro/plugin.hpp>

namespace micro {

// A message on a topic. Headers are metadata (trace context travels here).
struct Message {
  std::string topic;
  Metadata headers;
  std::string body;
};

// Called once per delivered message. Throwing reports the error through the broker's
// error handler; the subscription goes on.
using MessageHandler = std::function<void(Message& message)>;

// What a subscriber is promised about each message (each broker's README says which it offers).
enum class Delivery {
  // The default. The handler is called at most once per message: one that throws is reported
  // and the message is gone, as are messages not yet handled when the subscriber crashes.
  at_most_once,
  // The broker acknowledges a message to its server only after the handler returned. One that
  // throws is reported and then delivered again; one held when the subscriber crashes goes to
  // another subscriber (of the group) or comes back on reconnect. Handlers may see a message
  // twice. A broker without acknowledgement refuses this at subscribe with 400.
  at_least_once,
};

// "at_most_once" / "at_least_once".
std::string_view to_string(Delivery delivery) noexcept;

struct SubscribeOptions {
  // Non-empty: each message goes to exactly one member of the group; empty: to every
  // subscriber of the topic.
  std::string queue;
  Delivery delivery = Delivery::at_most_once;
};

class Subscription {
 public:
  virtual ~Subscription() = default;
  virtual const std::string& topic() const noexcept = 0;
  virtual const std::string& queue() const noexcept = 0;
  // After unsubscribe returns, the handler is not called again. Idempotent.
  virtual void unsubscribe() = 0;
};

// Threading contract: publish may be called from any thread at once; handlers run on
// threads of the broker's choice, possibly concurrently for different subscriptions.
// Failures throw micro::Exception (503 when not connected).
class Broker : public PluginObject {
 public:
  static constexpr PluginKind plugin_kind = PluginKind::broker;

  virtual void connect() = 0;
  // Stops delivery, finishing messages already accepted.
  virtual void disconnect() = 0;
  virtual void publish(const Message& message) = 0;
  virtual std::shared_ptr<Subscription> subscribe(std::string topic, MessageHandler handler,
                                                  const SubscribeOptions& options = {}) = 0;
  // Where handler failures go; the default logs to stderr.
  virtual void set_error_handler(std::function<void(const Message&, std::string_view)> handler) = 0;
};

// ---- helpers every broker plugin shares ----

// What a topic is checked for: a topic published to may not contain wildcards.
enum class TopicUse { publish, subscribe };

// Checks a topic as NATS checks a subject, so a topic valid on one broker is valid on all:
// not empty, tokens separated by '.' and none empty, no whitespace (it would break a wire
// protocol line), '>' only as the last token, and no wildcard ('*' or '>' as a whole token)
// when publishing. Throws micro::Exception (400) with `error_id` as the Error's id, and a
// detail naming the topic and the problem, e.g. "topic 'a..b' has an empty token".
void validate_topic(std::string_view topic, TopicUse use, std::string_view error_id);

// Refuses (throws micro::Exception 400 with `error_id`) a subscription asking for a delivery
// mode broker `broker_name` does not offer, naming what it does: "broker nats cannot deliver
// at_least_once (it has no acknowledgement); it offers at_most_once". Every broker calls it in
// subscribe (after the topic and handler checks), so the refusal reads the same everywhere.
void require_delivery(const SubscribeOptions& options, bool offers_at_least_once,
                      std::string_view broker_name, std::string_view error_id);

// Where a broker's delivery failures go: holds what set_error_handler was given and calls it
// when a subscriber's handler throws. Without a handler (or with an empty one) a failure is a
// line on stderr: "[micro] broker <broker_name>: handler for topic '<topic>' failed: <what>".
// Every member may be called from any thread at once; the error handler itself may run on
// several delivery threads concurrently.
class BrokerErrorReporter {
 public:
  using ErrorHandler = std::function<void(const Message&, std::string_view)>;

  explicit BrokerErrorReporter(std::string broker_name);

  void set_handler(ErrorHandler handler);

  // Calls the error handler with `message` and `what`. An error handler that throws has
  // nowhere to report to: its exception is swallowed.
  void report(const Message& message, std::string_view what) const noexcept;

  // Calls `handler` with `message`; an exception it throws is reported (its what(), or
  // "unknown exception" for anything not derived from std::exception) and goes no further.
  void deliver(const MessageHandler& handler, Message& message) const noexcept;

 private:
  std::string broker_name_;
  mutable std::mutex mutex_;  // guards handler_; held only to copy the pointer
  std::shared_ptr<const ErrorHandler> handler_;
};

// ---- Shared by the broker plugins ----

// Whether `topic` matches subscription `pattern` in micro's (NATS') terms: '*' is one token,
// '>' one or more at the end. For brokers whose own matching is wider and must be narrowed.
bool topic_matches(std::string_view pattern, std::string_view topic) noexcept;

// Go-Micro's broker.Message as JSON, `{"Header":{…},"Body":"<base64>"}`, for brokers with
// `encoding=gomicro`: Micro-Topic, Micro-Id and Content-Type are added when the headers lack them.
std::string encode_gomicro_envelope(const Message& message);
// Unwraps a Go-Micro envelope into `message`; false (message untouched) when `data` is not
// exactly one: a JSON object whose only keys are Header (strings) and Body (base64 or null).
bool decode_gomicro_envelope(std::string_view data, Message& message);

}  // namespace micro
