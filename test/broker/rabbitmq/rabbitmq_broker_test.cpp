// RabbitMQ broker integration tests against a real rabbitmq-server, beyond the conformance suite:
// bad options, connection and login failures, publisher confirms (a publish returns once the
// queue holds the message), prefetch, a durable queue group across a server restart,
// redelivery after a consumer process crashes, amqps with client certificates, and Go-Micro's
// layout on the wire (checked with a bare librabbitmq connection). The plugin is used only
// through the loader.
//
// `rabbitmq_broker_test --crash-consumer=<address>` is the crashing consumer the redelivery case
// starts (this same program, so no other executable is needed).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <micro/broker.hpp>
#include <micro/error.hpp>
#include <micro/plugin_loader.hpp>

#include "broker/broker_test_support.hpp"
#include "broker/rabbitmq/bare_amqp.hpp"
#include "broker/rabbitmq/rabbitmq_server.hpp"
#include "support/test_certificates.hpp"

using namespace std::chrono_literals;
using Options = std::vector<std::pair<std::string, std::string>>;

using broker_test::Counter;
using broker_test::message_on;
using broker_test::wait_until;

namespace {

std::shared_ptr<micro::Broker> make_broker(const std::string& address,
                                           const Options& options = {}) {
  return micro::PluginLoader::instance().create<micro::Broker>("rabbitmq", address, options,
                                                               boost::asio::any_io_executor{});
}

std::shared_ptr<micro::Broker> connected_broker(const std::string& address,
                                                const Options& options = {}) {
  auto broker = make_broker(address, options);
  broker->connect();
  return broker;
}

std::pair<int, std::string> failure_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const micro::Exception& error) {
    return {error.error().code, error.error().detail};
  }
  return {0, "(accepted)"};
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// One server for the cases that need no special one, started on first use.
micro_test::RabbitServer& shared_server() {
  static micro_test::RabbitServer server;
  return server;
}

// Collects delivered messages, thread-safely.
struct Inbox {
  std::mutex mutex;
  std::vector<micro::Message> messages;
  micro::MessageHandler handler() {
    return [this](micro::Message& message) {
      std::lock_guard lock(mutex);
      messages.push_back(message);
    };
  }
  std::size_t size() {
    std::lock_guard lock(mutex);
    return messages.size();
  }
  std::set<std::string> bodies() {
    std::lock_guard lock(mutex);
    std::set<std::string> result;
    for (const auto& message : messages) result.insert(message.body);
    return result;
  }
};

std::string self_path;  // this program, for the crashing consumer

}  // namespace

TEST_CASE("rabbitmq broker: malformed addresses and options are refused with the reason") {
  auto detail_of = [](const std::string& address, const Options& options = {}) {
    auto [code, detail] = failure_of([&] { make_broker(address, options); });
    CHECK(code == 400);
    return detail;
  };
  // The loader names the plugin first; the reason is the end of the detail.
  CHECK(ends_with(detail_of("amqp://[::1"),
                  "address 'amqp://[::1': not an AMQP URL; expected "
                  "[amqp[s]://][user:password@]host[:port][/vhost]"));
  CHECK(ends_with(detail_of("", {{"encoding", "xml"}}),
                  "option encoding: expected native or gomicro, got 'xml'"));
  CHECK(ends_with(detail_of("", {{"exchange_durable", "maybe"}}),
                  "option exchange_durable: expected auto, true or false, got 'maybe'"));
  CHECK(ends_with(detail_of("", {{"exchange", ""}}),
                  "option exchange: expected a name of 1 to 255 bytes, got ''"));
  CHECK(ends_with(detail_of("", {{"tls_cert", "/c.pem"}}),
                  "options tls_cert and tls_key go together"));
  CHECK(contains(detail_of("", {{"prefetch", "70000"}}),
                 "option 'prefetch' is 70000, above its maximum 65535"));
  // Well-formed variants are accepted (nothing connects until connect()).
  CHECK(failure_of([] { make_broker("amqp://u:p@example.org:5673/vhost"); }).first == 0);
  CHECK(failure_of([] { make_broker("example.org"); }).first == 0);
  // Topics AMQP cannot carry are refused before anything is sent.
  auto broker = make_broker("");
  CHECK(failure_of([&] { broker->subscribe("a.#", [](micro::Message&) {}); }) ==
        std::pair<int, std::string>{
            400,
            "topic 'a.#': '#' is an AMQP wildcard; micro's are '*' (one token) and '>' (the "
            "rest)"});
  CHECK(failure_of([&] { broker->publish(message_on(std::string(300, 'a'), "x")); }).first == 400);
}

TEST_CASE("rabbitmq broker: connecting where no server listens fails with 503 naming the URL") {
  int port = micro_test::free_loopback_ports(1)[0];
  auto broker = make_broker("127.0.0.1:" + std::to_string(port), {{"connect_timeout", "500ms"}});
  auto [code, detail] = failure_of([&] { broker->connect(); });
  CHECK(code == 503);
  CHECK(detail.find("cannot connect to amqp://127.0.0.1:" + std::to_string(port) + "/") == 0);
  CHECK(failure_of([&] { broker->publish(message_on("a", "b")); }) ==
        std::pair<int, std::string>{503, "broker is not connected"});
}

TEST_CASE("rabbitmq broker: a wrong password is a 401 naming the user") {
  auto broker = make_broker("amqp://guest:wrong@" + shared_server().address());
  auto [code, detail] = failure_of([&] { broker->connect(); });
  CHECK(code == 401);
  CHECK(contains(detail, "cannot log in to amqp://127.0.0.1:" +
                             std::to_string(shared_server().port()) + "/ as 'guest'"));
}

TEST_CASE("rabbitmq broker: a handler may disconnect its broker; a handle may outlive it") {
  Options options = {{"exchange", "lifecycle"}};
  auto broker = connected_broker(shared_server().address(), options);
  std::atomic<int> calls{0};
  auto subscription = broker->subscribe("lifecycle.events", [&](micro::Message&) {
    if (calls.fetch_add(1) == 0) broker->disconnect();  // from inside a delivery
  });
  broker->publish(message_on("lifecycle.events", "first"));
  REQUIRE(wait_until([&] {
    return failure_of([&] { broker->publish(message_on("lifecycle.events", "x")); }) ==
           std::pair<int, std::string>{503, "broker is not connected"};
  }));
  // Connecting again (from another thread) brings the subscription back.
  broker->connect();
  broker->publish(message_on("lifecycle.events", "second"));
  CHECK(wait_until([&] { return calls.load() == 2; }));
  broker.reset();               // the broker goes first
  subscription->unsubscribe();  // and its handle finds nothing to do
  CHECK(calls.load() == 2);
}

TEST_CASE("rabbitmq broker: publish returns once the server holds the message (confirms)") {
  auto broker = connected_broker(shared_server().address(), {{"exchange", "confirms"}});
  micro_test::BareAmqp bare(shared_server().port());
  std::string queue = bare.bind_queue("confirms", "confirmed.orders");
  for (std::uint32_t i = 1; i <= 50; ++i) {
    broker->publish(message_on("confirmed.orders", std::to_string(i)));
    // No waiting: the server routed it into the queue before confirming.
    REQUIRE(bare.queue_depth(queue) == i);
  }
  // With the server gone a publish fails at once: never a silent loss.
  shared_server().stop();
  CHECK(wait_until([&] {
    return failure_of([&] { broker->publish(message_on("confirmed.orders", "late")); }).first ==
           503;
  }));
  shared_server().start();
}

TEST_CASE("rabbitmq broker: prefetch bounds what an at_least_once consumer holds unacked") {
  micro_test::RabbitServer& server = shared_server();
  auto broker =
      connected_broker(server.address(), {{"exchange", "prefetching"}, {"prefetch", "5"}});
  std::mutex mutex;
  std::condition_variable released_changed;
  bool released = false;
  std::atomic<int> handled{0};
  micro::SubscribeOptions options{"slow-workers", micro::Delivery::at_least_once};
  auto subscription = broker->subscribe(
      "prefetch.jobs",
      [&](micro::Message&) {
        std::unique_lock lock(mutex);
        released_changed.wait(lock, [&] { return released; });
        handled.fetch_add(1);
      },
      options);
  for (int i = 0; i < 50; ++i) broker->publish(message_on("prefetch.jobs", std::to_string(i)));
  micro_test::BareAmqp bare(server.port());
  // One in the handler and four more sent ahead: 45 stay ready on the server.
  CHECK(wait_until([&] { return bare.queue_depth("slow-workers@prefetch.jobs") == 45u; }));
  {
    std::lock_guard lock(mutex);
    released = true;
  }
  released_changed.notify_all();
  CHECK(wait_until([&] { return handled.load() == 50; }));
  CHECK(wait_until([&] { return bare.queue_depth("slow-workers@prefetch.jobs") == 0u; }));
  subscription->unsubscribe();
  bare.delete_queue("slow-workers@prefetch.jobs");
}

TEST_CASE("rabbitmq broker: a durable queue group keeps its messages across a server restart") {
  micro_test::RabbitServer& server = shared_server();
  Options options = {{"exchange", "keeping"}, {"reconnect_wait", "100ms"}};
  {
    // The group's queue is declared (durable) and bound, then its only member leaves.
    auto member = connected_broker(server.address(), options);
    auto subscription = member->subscribe(
        "kept.orders", [](micro::Message&) {}, micro::SubscribeOptions{"keepers"});
    subscription->unsubscribe();
    member->disconnect();
  }
  {
    auto publisher = connected_broker(server.address(), options);
    for (int i = 0; i < 30; ++i) publisher->publish(message_on("kept.orders", std::to_string(i)));
    publisher->disconnect();
  }
  server.stop();
  server.start();
  Inbox inbox;
  auto member = connected_broker(server.address(), options);
  auto subscription =
      member->subscribe("kept.orders", inbox.handler(), micro::SubscribeOptions{"keepers"});
  CHECK(wait_until([&] { return inbox.size() == 30; }));
  member->disconnect();
  CHECK(inbox.size() == 30);
}

TEST_CASE("rabbitmq broker: at_least_once: what a crashed consumer held goes to the group") {
  micro_test::RabbitServer& server = shared_server();
  Options options = {{"exchange", "crashing"}};
  char pattern[] = "/tmp/micro-rabbitmq-crash-XXXXXX";
  int output = ::mkstemp(pattern);
  REQUIRE(output >= 0);
  std::string output_path = pattern;
  pid_t child = ::fork();
  if (child == 0) {
    ::dup2(output, 1);
    std::string flag = "--crash-consumer=" + server.address();
    ::execl(self_path.c_str(), self_path.c_str(), flag.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(output);
  REQUIRE(child > 0);
  auto child_output = [&] {
    std::ifstream file(output_path);
    return std::string(std::istreambuf_iterator<char>(file), {});
  };
  REQUIRE(wait_until([&] { return contains(child_output(), "subscribed\n"); }, 30s));

  auto publisher = connected_broker(server.address(), options);
  for (int i = 1; i <= 10; ++i) publisher->publish(message_on("crash.jobs", std::to_string(i)));
  int status = 0;
  REQUIRE(wait_until([&] { return ::waitpid(child, &status, WNOHANG) == child; }, 30s));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 3);  // it died inside the handler of message 3
  CHECK(child_output() == "subscribed\n1\n2\n3\n");

  // 1 and 2 were acknowledged; 3 (in the handler) and the rest (sent ahead) come back.
  Inbox inbox;
  auto survivor = connected_broker(server.address(), options);
  auto subscription =
      survivor->subscribe("crash.jobs", inbox.handler(),
                          micro::SubscribeOptions{"crashers", micro::Delivery::at_least_once});
  CHECK(wait_until([&] { return inbox.size() == 8; }));
  survivor->disconnect();
  CHECK(inbox.bodies() == std::set<std::string>{"3", "4", "5", "6", "7", "8", "9", "10"});
  ::unlink(output_path.c_str());
}

TEST_CASE("rabbitmq broker: amqps with a client certificate; the wrong CA or no certificate fail") {
  micro_test::TestCertificates certificates("micro-rabbitmq-tls");
  micro_test::RabbitServer server(micro_test::RabbitTls{certificates.path("server.pem"),
                                                        certificates.path("server.key"),
                                                        certificates.path("ca.pem")});
  std::string address = "amqps://127.0.0.1:" + std::to_string(server.tls_port());
  Options tls = {{"tls_ca", certificates.path("ca.pem")},
                 {"tls_cert", certificates.path("client.pem")},
                 {"tls_key", certificates.path("client.key")},
                 // The test certificate names IP 127.0.0.1, which librabbitmq's host check (DNS
                 // names only) does not read; the chain is still verified.
                 {"tls_verify_hostname", "false"}};
  {
    Inbox inbox;
    auto broker = connected_broker(address, tls);
    auto subscription = broker->subscribe("secure.events", inbox.handler());
    micro::Message message = message_on("secure.events", "over TLS");
    message.headers.set("X-Secret", "yes");
    broker->publish(message);
    REQUIRE(wait_until([&] { return inbox.size() == 1; }));
    broker->disconnect();
    CHECK(inbox.messages[0].body == "over TLS");
    CHECK(inbox.messages[0].headers.get("X-Secret") == "yes");
  }
  Options wrong_ca = tls;
  wrong_ca[0].second = certificates.path("other-ca.pem");
  auto [code, detail] = failure_of([&] { connected_broker(address, wrong_ca); });
  CHECK(code == 503);
  CHECK(contains(detail, "cannot connect to " + address + "/"));
  CHECK(contains(detail, "TLS"));
  Options no_certificate = {tls[0], tls[3]};
  CHECK(failure_of([&] { connected_broker(address, no_certificate); }).first != 0);
  // A plain client at the TLS port is refused too (no TLS handshake).
  CHECK(failure_of([&] {
          connected_broker("127.0.0.1:" + std::to_string(server.tls_port()),
                           {{"connect_timeout", "2s"}});
        }).first != 0);
}

TEST_CASE("rabbitmq broker: encoding=gomicro: Go-Micro's exchange, headers and queue names") {
  micro_test::RabbitServer& server = shared_server();
  Options gomicro = {{"encoding", "gomicro"}};
  auto broker = connected_broker(server.address(), gomicro);  // declares 'micro', non-durable
  micro_test::BareAmqp bare(server.port());
  std::string queue = bare.bind_queue("micro", "go.micro.events");

  micro::Message message = message_on("go.micro.events", R"({"id":7})");
  message.headers.set("Content-Type", "application/json");
  message.headers.set("X-From", "micro-cpp");
  broker->publish(message);
  auto received = bare.get(queue);
  REQUIRE(received);
  CHECK(received->routing_key == "go.micro.events");
  CHECK(received->body == R"({"id":7})");  // the body as it is, no envelope
  // String ('S') headers, as Go's amqp reads them: Go-Micro's own and ours.
  CHECK(received->headers["Micro-Topic"] == std::pair<char, std::string>{'S', "go.micro.events"});
  CHECK(received->headers["Micro-Id"].second.size() == 36);
  CHECK(received->headers["Content-Type"].second == "application/json");
  CHECK(received->headers["X-From"].second == "micro-cpp");

  // A Go-Micro publisher's message reaches a queue-group subscriber, whose queue is named as
  // the group, as Go-Micro names it.
  Inbox inbox;
  auto subscription = broker->subscribe("go.micro.events", inbox.handler(),
                                        micro::SubscribeOptions{"go.micro.srv.audit"});
  CHECK(bare.queue_depth("go.micro.srv.audit").has_value());
  bare.publish("micro", "go.micro.events",
               {{"Micro-Topic", "go.micro.events"}, {"Content-Type", "application/json"}},
               R"({"id":8})");
  REQUIRE(wait_until([&] { return inbox.size() == 1; }));
  broker->disconnect();
  CHECK(inbox.messages[0].body == R"({"id":8})");
  CHECK(inbox.messages[0].headers.get("Micro-Topic") == "go.micro.events");
  CHECK(inbox.messages[0].topic == "go.micro.events");
  bare.delete_queue("go.micro.srv.audit");

  // An exchange declared durable cannot be used as non-durable: the error says what to set.
  auto durable = connected_broker(server.address(), {{"exchange", "clash"}});
  auto [code, detail] = failure_of([&] {
    connected_broker(server.address(), {{"exchange", "clash"}, {"exchange_durable", "false"}});
  });
  CHECK(code == 400);
  CHECK(contains(detail, "declaring exchange 'clash': 406 PRECONDITION_FAILED"));
  CHECK(contains(detail, "option exchange_durable=false must match"));
}

namespace {

// The crashing consumer: an at_least_once member of group "crashers" that prints what it gets
// and dies (without acknowledging) inside the handler of message 3.
int crash_consumer(const std::string& address) {
  auto broker = connected_broker(address, {{"exchange", "crashing"}});
  auto subscription = broker->subscribe(
      "crash.jobs",
      [](micro::Message& message) {
        std::cout << message.body << std::endl;
        if (message.body == "3") ::_exit(3);
      },
      micro::SubscribeOptions{"crashers", micro::Delivery::at_least_once});
  std::cout << "subscribed" << std::endl;
  while (true) std::this_thread::sleep_for(1s);  // until it crashes, or the test kills it
}

}  // namespace

int main(int argc, char** argv) {
  self_path = "/proc/self/exe";
  char resolved[4096];
  if (ssize_t length = ::readlink("/proc/self/exe", resolved, sizeof resolved - 1); length > 0)
    self_path.assign(resolved, static_cast<std::size_t>(length));
  constexpr std::string_view flag = "--crash-consumer=";
  if (argc == 2 && std::string_view(argv[1]).starts_with(flag))
    return crash_consumer(std::string(argv[1] + flag.size()));
  doctest::Context context;
  context.applyCommandLine(argc, argv);
  return context.run();
}
