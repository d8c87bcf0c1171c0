// micro/broker.hpp — publish/subscribe between services.
#pragma once

#include <functional>
#include <memory>
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

struct SubscribeOptions {
  // Non-empty: each message goes to exactly one member of the group; empty: to every
  // subscriber of the topic.
  std::string queue;
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
  virtual void connect() = 0;
  // Stops delivery, finishing messages already accepted.
  virtual void disconnect() = 0;
  virtual void publish(const Message& message) = 0;
  virtual std::shared_ptr<Subscription> subscribe(std::string topic, MessageHandler handler,
                                                  const SubscribeOptions& options = {}) = 0;
  // Where handler failures go; the default logs to stderr.
  virtual void set_error_handler(std::function<void(const Message&, std::string_view)> handler) = 0;
};

}  // namespace micro
