// The helpers every broker plugin shares (<micro/broker.hpp>): validate_topic's refusals with
// their exact texts, require_delivery's refusal, and BrokerErrorReporter's dispatch of handler
// failures (to the error handler, or as a line on stderr when there is none).
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <micro/broker.hpp>
#include <micro/error.hpp>

#include "broker/broker_test_support.hpp"

namespace {

using broker_test::message_on;
using micro::TopicUse;

// The Error a call throws; fails the test case when it throws nothing or something else.
micro::Error refusal(const std::function<void()>& call) {
  try {
    call();
  } catch (const micro::Exception& error) {
    return error.error();
  }
  FAIL("expected a micro::Exception");
  return micro::Error("", 0, "");
}

std::string refusal_detail(std::string_view topic, TopicUse use) {
  micro::Error error = refusal([&] { micro::validate_topic(topic, use, "micro.broker.test"); });
  CHECK(error.id == "micro.broker.test");
  CHECK(error.code == 400);
  return error.detail;
}

// What `action` writes to stderr (file descriptor 2), captured through a temporary file.
std::string stderr_of(const std::function<void()>& action) {
  std::fflush(stderr);
  std::FILE* capture = std::tmpfile();
  REQUIRE(capture != nullptr);
  int saved = dup(2);
  REQUIRE(saved >= 0);
  dup2(fileno(capture), 2);
  action();
  std::fflush(stderr);
  dup2(saved, 2);
  close(saved);
  std::rewind(capture);
  std::string text;
  char buffer[512];
  std::size_t read = 0;
  while ((read = std::fread(buffer, 1, sizeof buffer, capture)) > 0) text.append(buffer, read);
  std::fclose(capture);
  return text;
}

}  // namespace

TEST_CASE("validate_topic accepts NATS subjects, wildcards only when subscribing") {
  for (std::string_view topic : {"a", "orders.created", "a-b_c.D9", "orders.*created", "a>b"}) {
    CAPTURE(topic);
    CHECK_NOTHROW(micro::validate_topic(topic, TopicUse::publish, "id"));
    CHECK_NOTHROW(micro::validate_topic(topic, TopicUse::subscribe, "id"));
  }
  for (std::string_view topic : {"*", ">", "orders.*", "orders.>", "*.created", "a.*.>"}) {
    CAPTURE(topic);
    CHECK_NOTHROW(micro::validate_topic(topic, TopicUse::subscribe, "id"));
  }
}

TEST_CASE("validate_topic refuses malformed topics with exact texts") {
  struct Case {
    std::string topic;
    TopicUse use;
    std::string detail;
  };
  const std::vector<Case> cases = {
      {"", TopicUse::subscribe, "topic is empty"},
      {"", TopicUse::publish, "topic is empty"},
      {".", TopicUse::subscribe, "topic '.' has an empty token"},
      {"a..b", TopicUse::subscribe, "topic 'a..b' has an empty token"},
      {"orders.", TopicUse::publish, "topic 'orders.' has an empty token"},
      {".orders", TopicUse::publish, "topic '.orders' has an empty token"},
      {"orders created", TopicUse::publish, "topic 'orders created' contains whitespace"},
      {"orders.\tx", TopicUse::subscribe, "topic 'orders.\tx' contains whitespace"},
      {"a.b\r\n", TopicUse::subscribe, "topic 'a.b\r\n' contains whitespace"},
      {"a.>.b", TopicUse::subscribe, "topic 'a.>.b': '>' must be the last token"},
      {">.a", TopicUse::subscribe, "topic '>.a': '>' must be the last token"},
      {"orders.*", TopicUse::publish, "cannot publish to 'orders.*': it contains a wildcard"},
      {"orders.>", TopicUse::publish, "cannot publish to 'orders.>': it contains a wildcard"},
      {"*", TopicUse::publish, "cannot publish to '*': it contains a wildcard"},
      // Several problems: the first token's problem is named, in the documented order.
      {"a..*", TopicUse::publish, "topic 'a..*' has an empty token"},
      {">.>", TopicUse::publish, "cannot publish to '>.>': it contains a wildcard"},
  };
  for (const Case& test : cases) {
    CAPTURE(test.topic);
    CHECK(refusal_detail(test.topic, test.use) == test.detail);
  }
}

TEST_CASE("require_delivery refuses at_least_once where it is not offered, naming the broker") {
  micro::SubscribeOptions options;
  CHECK(options.delivery == micro::Delivery::at_most_once);  // the default
  CHECK_NOTHROW(micro::require_delivery(options, false, "nats", "micro.broker.nats"));
  options.delivery = micro::Delivery::at_least_once;
  CHECK_NOTHROW(micro::require_delivery(options, true, "rabbitmq", "micro.broker.rabbitmq"));
  try {
    micro::require_delivery(options, false, "nats", "micro.broker.nats");
    FAIL("at_least_once was accepted");
  } catch (const micro::Exception& error) {
    CHECK(error.error().code == 400);
    CHECK(error.error().id == "micro.broker.nats");
    CHECK(error.error().detail ==
          "broker nats cannot deliver at_least_once (it has no acknowledgement); it offers "
          "at_most_once");
  }
  CHECK(micro::to_string(micro::Delivery::at_most_once) == "at_most_once");
  CHECK(micro::to_string(micro::Delivery::at_least_once) == "at_least_once");
}

TEST_CASE("BrokerErrorReporter: deliver passes failures to the error handler") {
  micro::BrokerErrorReporter reporter("test");
  std::vector<std::pair<std::string, std::string>> reported;  // (topic, what)
  reporter.set_handler([&](const micro::Message& message, std::string_view what) {
    reported.emplace_back(message.topic, std::string(what));
  });

  micro::Message message = message_on("orders.created", "body");
  int calls = 0;
  reporter.deliver(
      [&](micro::Message& delivered) {
        ++calls;
        delivered.body = "changed by the handler";
      },
      message);
  CHECK(calls == 1);
  CHECK(message.body == "changed by the handler");
  CHECK(reported.empty());

  reporter.deliver([](micro::Message&) { throw std::runtime_error("disk full"); }, message);
  reporter.deliver([](micro::Message&) { throw 42; }, message);
  reporter.report(message_on("direct", "body"), "reported directly");
  REQUIRE(reported.size() == 3);
  CHECK(reported[0] == std::pair<std::string, std::string>("orders.created", "disk full"));
  CHECK(reported[1] == std::pair<std::string, std::string>("orders.created", "unknown exception"));
  CHECK(reported[2] == std::pair<std::string, std::string>("direct", "reported directly"));
}

TEST_CASE("BrokerErrorReporter: an error handler that throws is contained") {
  micro::BrokerErrorReporter reporter("test");
  int calls = 0;
  reporter.set_handler([&](const micro::Message&, std::string_view) {
    ++calls;
    throw std::runtime_error("the error handler fails too");
  });
  micro::Message message = message_on("a", "body");
  std::string printed;
  printed = stderr_of([&] {
    CHECK_NOTHROW(
        reporter.deliver([](micro::Message&) { throw std::runtime_error("boom"); }, message));
  });
  CHECK(calls == 1);
  CHECK(printed.empty());  // swallowed, not printed instead
}

TEST_CASE("BrokerErrorReporter: without an error handler a failure is a line on stderr") {
  micro::BrokerErrorReporter reporter("memory");
  micro::Message message = message_on("orders.created", "body");
  std::string printed = stderr_of([&] {
    reporter.deliver([](micro::Message&) { throw std::runtime_error("boom"); }, message);
  });
  CHECK(printed ==
        "[micro] error broker memory: handler for topic 'orders.created' failed: boom\n");

  // An empty std::function counts as no handler; a later real one replaces it.
  reporter.set_handler(nullptr);
  printed = stderr_of([&] { reporter.report(message, "lost"); });
  CHECK(printed ==
        "[micro] error broker memory: handler for topic 'orders.created' failed: lost\n");
  int calls = 0;
  reporter.set_handler([&](const micro::Message&, std::string_view) { ++calls; });
  printed = stderr_of([&] { reporter.report(message, "lost"); });
  CHECK(calls == 1);
  CHECK(printed.empty());
}
