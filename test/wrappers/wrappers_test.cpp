// Wrapper plugins (log, metrics; trace for the log's trace ids) loaded through the plugin loader
// and composed with micro::WrapperChains: configured order (first = outermost), exactly one call of
// `next`, responses passed through, and what they write.
#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>

#include <micro/error.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/trace.hpp>
#include <micro/wrapper.hpp>

#include "support/wait.hpp"

using namespace std::chrono_literals;
using test_support::wait_until;

namespace {

boost::asio::io_context& io_context() {
  static boost::asio::io_context context;
  return context;
}

std::shared_ptr<micro::Wrapper> load_wrapper(
    const char* name, const std::vector<std::pair<std::string, std::string>>& options = {}) {
  return micro::PluginLoader::instance().create<micro::Wrapper>(name, "", options,
                                                                io_context().get_executor());
}

// A file under the temp directory, removed when the test is done.
struct TemporaryFile {
  TemporaryFile() {
    static std::atomic<int> counter{0};
    path = std::filesystem::temp_directory_path() /
           ("micro-wrappers-test-" + std::to_string(::getpid()) + "-" +
            std::to_string(counter.fetch_add(1)) + ".log");
    std::filesystem::remove(path);
  }
  ~TemporaryFile() { std::filesystem::remove(path); }

  std::string text() const {
    std::ifstream in(path);
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
  }
  std::vector<std::string> lines() const {
    std::vector<std::string> result;
    std::istringstream in(text());
    for (std::string line; std::getline(in, line);) result.push_back(line);
    return result;
  }

  std::filesystem::path path;
};

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

// "…ok 0.123ms": the line ends with a duration in milliseconds.
bool ends_with_duration(const std::string& line) {
  auto space = line.rfind(' ');
  if (space == std::string::npos || line.size() < space + 4) return false;
  std::string duration = line.substr(space + 1);
  if (duration.substr(duration.size() - 2) != "ms") return false;
  try {
    std::size_t used = 0;
    double value = std::stod(duration, &used);
    return used == duration.size() - 2 && value >= 0;
  } catch (...) {
    return false;
  }
}

micro::RequestPtr request_for(std::string service, std::string endpoint) {
  auto request = std::make_shared<micro::Request>();
  request->service = std::move(service);
  request->endpoint = std::move(endpoint);
  request->content_type = "application/json";
  request->body = "{}";
  return request;
}

micro::Response ok_response(std::string body) {
  micro::Response response;
  response.content_type = "application/json";
  response.body = std::move(body);
  response.metadata.set("X-Answer", "yes");
  return response;
}

// Records the order wrappers are entered and left in, and can look at the log file at
// each step.
struct Recorder {
  std::mutex mutex;
  std::vector<std::string> events;
  void add(std::string event) {
    std::lock_guard lock(mutex);
    events.push_back(std::move(event));
  }

  // A wrapper set whose handler and publish members note "name>" on the way in and
  // "<name" on the way out, running `on_leave` just before noting the latter.
  micro::WrapperSet set(std::string name, std::function<void()> on_leave = {}) {
    micro::WrapperSet set;
    set.handler = [this, name, on_leave](micro::HandlerFunction next) {
      return micro::HandlerFunction([this, name, on_leave, next](const micro::RequestPtr& request,
                                                                 micro::ResponseHandler respond) {
        add(name + ">");
        next(request, [this, name, on_leave, respond](micro::Response&& response) {
          if (on_leave) on_leave();
          add("<" + name);
          respond(std::move(response));
        });
      });
    };
    set.publish = [this, name, on_leave](micro::PublishFunction next) {
      return micro::PublishFunction(
          [this, name, on_leave, next](micro::Context& context, micro::Message& message) {
            add(name + ">");
            next(context, message);
            if (on_leave) on_leave();
            add("<" + name);
          });
    };
    return set;
  }
};

const micro::WrapperScope scope{"greeter", "1.0.0", "tcp", "memory"};

}  // namespace

TEST_CASE("wrappers: configured order, first outermost, log between its neighbours") {
  TemporaryFile log_file, report_file;
  auto log = load_wrapper("log", {{"stream", log_file.path.string()}});
  auto metrics = load_wrapper("metrics", {{"stream", report_file.path.string()}});
  Recorder recorder;
  std::vector<std::size_t> lines_when_leaving_outer, lines_when_leaving_inner;
  {
    micro::WrapperChains chains;
    chains.add(recorder.set("outer",
                            [&] { lines_when_leaving_outer.push_back(log_file.lines().size()); }));
    chains.add(log->wrappers(scope));
    chains.add(recorder.set("inner",
                            [&] { lines_when_leaving_inner.push_back(log_file.lines().size()); }));
    chains.add(metrics->wrappers(scope));

    int handler_calls = 0;
    auto handler =
        chains.wrap_handler([&](const micro::RequestPtr& request, micro::ResponseHandler respond) {
          ++handler_calls;
          recorder.add("handler " + request->endpoint);
          respond(ok_response("pong"));
        });
    std::optional<micro::Response> answer;
    int answers = 0;
    micro::RequestPtr request = request_for("greeter", "Greeter.Hello");
    handler(request, [&](micro::Response&& response) {
      ++answers;
      answer = std::move(response);
    });

    CHECK(handler_calls == 1);
    CHECK(answers == 1);
    REQUIRE(answer);
    CHECK(answer->body == "pong");
    CHECK(answer->metadata.get("x-answer") == "yes");
    CHECK_FALSE(answer->error);
    CHECK(recorder.events == std::vector<std::string>{"outer>", "inner>", "handler Greeter.Hello",
                                                      "<inner", "<outer"});
    // log sits between outer and inner: its line is not written when inner lets the
    // response go, and is there by the time outer sees it.
    CHECK(lines_when_leaving_inner == std::vector<std::size_t>{0});
    CHECK(lines_when_leaving_outer == std::vector<std::size_t>{1});

    recorder.events.clear();
    micro::Context context;
    micro::Message message{"orders.created", {}, "body"};
    auto publish = chains.wrap_publish([&](micro::Context&, micro::Message& published) {
      recorder.add("publish " + published.topic);
    });
    publish(context, message);
    CHECK(recorder.events == std::vector<std::string>{"outer>", "inner>", "publish orders.created",
                                                      "<inner", "<outer"});
  }
  auto lines = log_file.lines();
  REQUIRE(lines.size() == 2);
  CHECK(starts_with(lines[0], "[micro] handler greeter Greeter.Hello ok "));
  CHECK(ends_with_duration(lines[0]));
  CHECK(starts_with(lines[1], "[micro] publish orders.created ok "));
  CHECK(ends_with_duration(lines[1]));
}

TEST_CASE("log: one line per request, call, publish and delivery, with outcome") {
  TemporaryFile log_file;
  auto log = load_wrapper("log", {{"stream", log_file.path.string()}, {"prefix", "[svc]"}});
  {
    micro::WrapperChains chains;
    chains.add(log->wrappers(scope));

    SUBCASE("handler: ok and error responses pass through unchanged") {
      int calls = 0;
      auto handler = chains.wrap_handler(
          [&](const micro::RequestPtr& request, micro::ResponseHandler respond) {
            ++calls;
            if (request->body == "bad")
              respond(micro::Response::failure(micro::not_found("greeter", "no such greeting")));
            else
              respond(ok_response("hi"));
          });
      std::vector<micro::Response> responses;
      micro::RequestPtr good = request_for("greeter", "Greeter.Hello");
      micro::RequestPtr bad = request_for("greeter", "Greeter.Hello");
      bad->body = "bad";
      handler(good, [&](micro::Response&& response) { responses.push_back(std::move(response)); });
      handler(bad, [&](micro::Response&& response) { responses.push_back(std::move(response)); });
      CHECK(calls == 2);
      REQUIRE(responses.size() == 2);
      CHECK(responses[0].body == "hi");
      REQUIRE(responses[1].error);
      CHECK(responses[1].error->code == 404);
      auto lines = log_file.lines();
      REQUIRE(lines.size() == 2);
      CHECK(starts_with(lines[0], "[svc] handler greeter Greeter.Hello ok "));
      CHECK(starts_with(lines[1],
                        "[svc] handler greeter Greeter.Hello error greeter: 404 Not Found: no such "
                        "greeting "));
      for (const auto& line : lines) CHECK(ends_with_duration(line));
    }

    SUBCASE("handler: a synchronous throw is logged and passed on") {
      auto handler = chains.wrap_handler([](const micro::RequestPtr&, micro::ResponseHandler) {
        throw micro::Exception(micro::Error("greeter", 409, "already greeted"));
      });
      micro::RequestPtr request = request_for("greeter", "Greeter.Hello");
      CHECK_THROWS_AS(handler(request, [](micro::Response&&) {}), micro::Exception);
      auto lines = log_file.lines();
      REQUIRE(lines.size() == 1);
      CHECK(starts_with(lines[0],
                        "[svc] handler greeter Greeter.Hello error greeter: 409 Conflict: already "
                        "greeted "));
    }

    SUBCASE("client: the line is written when a later response arrives, on its thread") {
      micro::ResponseHandler pending;
      int calls = 0;
      micro::CallOptions seen_options;
      auto client =
          chains.wrap_client([&](const micro::RequestPtr&, const micro::CallOptions& options,
                                 micro::ResponseHandler done) {
            ++calls;
            seen_options = options;
            pending = std::move(done);  // answered later, as a transport does
          });
      micro::RequestPtr request = request_for("billing", "Billing.Charge");
      micro::CallOptions options;
      options.retries = 3;
      std::atomic<int> answers{0};
      client(request, options, [&](micro::Response&& response) {
        CHECK(response.body == "charged");
        answers.fetch_add(1);
      });
      CHECK(calls == 1);
      CHECK(seen_options.retries == 3);
      CHECK(log_file.lines().empty());
      std::thread responder([&] { pending(ok_response("charged")); });
      responder.join();
      CHECK(answers.load() == 1);
      auto lines = log_file.lines();
      REQUIRE(lines.size() == 1);
      CHECK(starts_with(lines[0], "[svc] client billing Billing.Charge ok "));
    }

    SUBCASE("publish and deliver: failures are logged and rethrown unchanged") {
      auto publish = chains.wrap_publish([](micro::Context&, micro::Message& message) {
        if (message.body == "fail")
          throw micro::Exception(micro::unavailable("micro.broker", "not connected"));
      });
      auto deliver = chains.wrap_subscriber([](micro::Context&, micro::Message& message) {
        if (message.body == "fail") throw std::runtime_error("cannot parse order");
      });
      micro::Context context;
      micro::Message good{"orders.created", {}, "ok"};
      micro::Message bad{"orders.created", {}, "fail"};
      publish(context, good);
      deliver(context, good);
      try {
        publish(context, bad);
        FAIL("publish did not throw");
      } catch (const micro::Exception& error) {
        CHECK(error.error().code == 503);
      }
      CHECK_THROWS_WITH_AS(deliver(context, bad), "cannot parse order", std::runtime_error);
      auto lines = log_file.lines();
      REQUIRE(lines.size() == 4);
      CHECK(starts_with(lines[0], "[svc] publish orders.created ok "));
      CHECK(starts_with(lines[1], "[svc] deliver orders.created ok "));
      CHECK(starts_with(lines[2],
                        "[svc] publish orders.created error micro.broker: 503 Service "
                        "Unavailable: not connected "));
      CHECK(starts_with(lines[3], "[svc] deliver orders.created error cannot parse order "));
    }
  }
}

TEST_CASE("log: stream=stdout writes to standard output") {
  TemporaryFile captured;
  std::fflush(stdout);
  int saved = ::dup(STDOUT_FILENO);
  REQUIRE(saved >= 0);
  std::FILE* file = std::fopen(captured.path.c_str(), "w");
  REQUIRE(file);
  ::dup2(::fileno(file), STDOUT_FILENO);
  {
    auto log = load_wrapper("log", {{"stream", "stdout"}});
    micro::WrapperChains chains;
    chains.add(log->wrappers(scope));
    auto deliver = chains.wrap_subscriber([](micro::Context&, micro::Message&) {});
    micro::Context context;
    micro::Message message{"audit", {}, ""};
    deliver(context, message);
  }
  std::fflush(stdout);
  ::dup2(saved, STDOUT_FILENO);
  ::close(saved);
  std::fclose(file);
  auto lines = captured.lines();
  REQUIRE(lines.size() == 1);
  CHECK(starts_with(lines[0], "[micro] deliver audit ok "));
}

TEST_CASE("log and metrics: bad options are refused with the reason") {
  auto detail_of = [](const char* name, std::vector<std::pair<std::string, std::string>> options) {
    try {
      load_wrapper(name, options);
    } catch (const micro::Exception& error) {
      CHECK(error.error().code == 400);
      return error.error().detail;
    }
    return std::string("(accepted)");
  };
  auto ends_with = [](const std::string& text, const std::string& suffix) {
    return text.size() >= suffix.size() &&
           text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  std::string detail = detail_of("log", {{"stream", "bogus"}});
  CHECK_MESSAGE(ends_with(detail, "stream must be stderr, stdout or a file path, got 'bogus'"),
                detail);
  detail = detail_of("log", {{"stream", "/nonexistent-dir/micro.log"}});
  CHECK_MESSAGE(ends_with(detail, "cannot open log file '/nonexistent-dir/micro.log'"), detail);
  detail = detail_of("metrics", {{"stream", "syslog"}});
  CHECK_MESSAGE(ends_with(detail, "stream must be stderr, stdout or a file path, got 'syslog'"),
                detail);
  detail = detail_of("metrics", {{"report", "often"}});
  CHECK_MESSAGE(detail.find("option 'report' is duration, got 'often'") != std::string::npos,
                detail);
}

TEST_CASE("metrics: counts per endpoint and topic, printed when destroyed") {
  TemporaryFile report_file;
  auto metrics = load_wrapper("metrics", {{"stream", report_file.path.string()}});
  {
    micro::WrapperChains chains;
    chains.add(metrics->wrappers(scope));
    int inner_calls = 0;
    auto handler =
        chains.wrap_handler([&](const micro::RequestPtr& request, micro::ResponseHandler respond) {
          ++inner_calls;
          if (request->body == "bad")
            respond(micro::Response::failure(micro::bad_request("greeter", "bad")));
          else
            respond(ok_response("ok"));
        });
    for (int i = 0; i < 4; ++i) {
      micro::RequestPtr request = request_for("greeter", "Greeter.Hello");
      if (i == 3) request->body = "bad";
      int answers = 0;
      handler(request, [&](micro::Response&&) { ++answers; });
      CHECK(answers == 1);
    }
    micro::RequestPtr other = request_for("greeter", "Greeter.Bye");
    handler(other, [](micro::Response&&) {});
    CHECK(inner_calls == 5);

    auto client = chains.wrap_client([](const micro::RequestPtr&, const micro::CallOptions&,
                                        micro::ResponseHandler done) { done(ok_response("x")); });
    micro::Node node{"billing-1", "127.0.0.1:4000", {}};
    auto call = chains.wrap_call(
        [](const micro::RequestPtr&, const micro::Attempt& attempt, micro::ResponseHandler done) {
          if (attempt.number == 1)
            done(micro::Response::failure(micro::unavailable("micro.client", "refused")));
          else
            done(ok_response("x"));
        });
    micro::RequestPtr billing = request_for("billing", "Billing.Charge");
    client(billing, micro::CallOptions{}, [](micro::Response&&) {});
    call(billing, micro::Attempt{node, 1}, [](micro::Response&&) {});
    call(billing, micro::Attempt{node, 2}, [](micro::Response&&) {});

    auto publish = chains.wrap_publish([](micro::Context&, micro::Message&) {});
    auto deliver = chains.wrap_subscriber([](micro::Context&, micro::Message& message) {
      if (message.body == "fail") throw std::runtime_error("no");
    });
    micro::Context context;
    micro::Message ok_message{"orders.created", {}, "ok"};
    micro::Message failing{"orders.created", {}, "fail"};
    publish(context, ok_message);
    publish(context, ok_message);
    deliver(context, ok_message);
    CHECK_THROWS_AS(deliver(context, failing), std::runtime_error);
    CHECK(report_file.text().empty());  // report=0: nothing before destruction
  }
  metrics.reset();

  auto lines = report_file.lines();
  REQUIRE(lines.size() == 6);
  // Sorted by chain, then subject.
  CHECK(starts_with(lines[0],
                    "[micro] metrics call billing Billing.Charge 127.0.0.1:4000 "
                    "requests=2 errors=1 latency_total="));
  CHECK(
      starts_with(lines[1], "[micro] metrics client billing Billing.Charge requests=1 errors=0 "));
  CHECK(starts_with(lines[2], "[micro] metrics deliver orders.created requests=2 errors=1 "));
  CHECK(starts_with(lines[3], "[micro] metrics handler greeter Greeter.Bye requests=1 errors=0 "));
  CHECK(
      starts_with(lines[4], "[micro] metrics handler greeter Greeter.Hello requests=4 errors=1 "));
  CHECK(starts_with(lines[5], "[micro] metrics publish orders.created requests=2 errors=0 "));
  for (const auto& line : lines) {
    CHECK(line.find(" latency_mean=") != std::string::npos);
    CHECK(line.find(" latency_max=") != std::string::npos);
  }
}

TEST_CASE("metrics: nothing counted, nothing printed") {
  TemporaryFile report_file;
  {
    auto metrics = load_wrapper("metrics", {{"stream", report_file.path.string()}});
    micro::WrapperChains chains;
    chains.add(metrics->wrappers(scope));
  }
  CHECK(report_file.text().empty());
}

TEST_CASE("metrics: report prints the counters periodically") {
  TemporaryFile report_file;
  auto metrics =
      load_wrapper("metrics", {{"stream", report_file.path.string()}, {"report", "50ms"}});
  {
    micro::WrapperChains chains;
    chains.add(metrics->wrappers(scope));
    auto publish = chains.wrap_publish([](micro::Context&, micro::Message&) {});
    micro::Context context;
    micro::Message message{"ticks", {}, ""};
    publish(context, message);
    // Two reports at least, without the object being destroyed.
    CHECK(wait_until([&] {
      int reports = 0;
      for (const auto& line : report_file.lines())
        if (starts_with(line, "[micro] metrics publish ticks requests=1 ")) ++reports;
      return reports >= 2;
    }));
  }
  metrics.reset();  // stops the reporting thread promptly
}

TEST_CASE("log and metrics composed: each calls next exactly once") {
  TemporaryFile log_file, report_file;
  auto log = load_wrapper("log", {{"stream", log_file.path.string()}});
  auto metrics = load_wrapper("metrics", {{"stream", report_file.path.string()}});
  {
    micro::WrapperChains chains;
    chains.add(log->wrappers(scope));
    chains.add(metrics->wrappers(scope));
    chains.add(log->wrappers(scope));  // twice: two lines per request
    std::atomic<int> inner{0};
    auto handler =
        chains.wrap_handler([&](const micro::RequestPtr&, micro::ResponseHandler respond) {
          inner.fetch_add(1);
          respond(ok_response("x"));
        });
    std::vector<std::thread> threads;
    std::atomic<int> answers{0};
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 250; ++i) {
          micro::RequestPtr request = request_for("greeter", "Greeter.Hello");
          handler(request, [&](micro::Response&&) { answers.fetch_add(1); });
        }
      });
    }
    for (auto& thread : threads) thread.join();
    CHECK(inner.load() == 1000);
    CHECK(answers.load() == 1000);
  }
  metrics.reset();
  auto lines = log_file.lines();
  CHECK(lines.size() == 2000);
  for (const auto& line : lines)
    REQUIRE(starts_with(line, "[micro] handler greeter Greeter.Hello ok "));
  auto report = report_file.lines();
  REQUIRE(report.size() == 1);
  CHECK(starts_with(report[0],
                    "[micro] metrics handler greeter Greeter.Hello requests=1000 errors=0 "));
}

TEST_CASE("log: a traced call's lines carry its trace_id and span_id, in either wrapper order") {
  TemporaryFile log_file;
  auto log = load_wrapper("log", {{"stream", log_file.path.string()}});
  auto trace = load_wrapper("trace", {{"exporter", "none"}, {"sampler", "always_on"}});
  const std::string caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
  const std::string caller_span = "00f067aa0ba902b7";
  auto traced_request = [&] {
    micro::RequestPtr request = request_for("greeter", "Greeter.Hello");
    request->context.metadata().set("traceparent",
                                    "00-" + caller_trace + "-" + caller_span + "-01");
    return request;
  };
  auto field = [](const std::string& line, const std::string& name) {
    auto at = line.find(" " + name + "=");
    if (at == std::string::npos) return std::string();
    at += name.size() + 2;
    return line.substr(at, line.find(' ', at) - at);
  };
  for (bool trace_outer : {true, false}) {
    CAPTURE(trace_outer);
    const std::size_t before = log_file.lines().size();  // the file stays open: count on
    micro::WrapperChains chains;
    if (trace_outer) chains.add(trace->wrappers(scope));
    chains.add(log->wrappers(scope));
    if (!trace_outer) chains.add(trace->wrappers(scope));
    std::string handler_span;
    auto handler =
        chains.wrap_handler([&](const micro::RequestPtr& request, micro::ResponseHandler respond) {
          REQUIRE(request->context.span());
          handler_span = request->context.span()->context().span_id.to_hex();
          respond(ok_response("hi"));
        });
    handler(traced_request(), [](micro::Response&&) {});
    auto client =
        chains.wrap_client([](const micro::RequestPtr&, const micro::CallOptions&,
                              micro::ResponseHandler done) { done(ok_response("charged")); });
    micro::RequestPtr call = request_for("billing", "Billing.Charge");
    client(call, micro::CallOptions{}, [](micro::Response&&) {});
    auto all = log_file.lines();
    std::vector<std::string> lines(all.begin() + static_cast<std::ptrdiff_t>(before), all.end());
    REQUIRE(lines.size() == 2);
    // The handler's line: the caller's trace, the SERVER span's own id (not the caller's).
    CHECK(starts_with(lines[0], "[micro] handler greeter Greeter.Hello ok "));
    CHECK(field(lines[0], "trace_id") == caller_trace);
    CHECK(field(lines[0], "span_id") == handler_span);
    CHECK(field(lines[0], "span_id") != caller_span);
    // The client's line: a new root trace, its CLIENT span.
    REQUIRE(call->context.span());
    CHECK(field(lines[1], "trace_id") == call->context.span()->context().trace_id.to_hex());
    CHECK(field(lines[1], "span_id") == call->context.span()->context().span_id.to_hex());
  }

  // Without a trace wrapper: the trace the request came with, and no span id of ours.
  const std::size_t before = log_file.lines().size();
  micro::WrapperChains untraced;
  untraced.add(log->wrappers(scope));
  auto handler = untraced.wrap_handler(
      [](const micro::RequestPtr&, micro::ResponseHandler respond) { respond(ok_response("hi")); });
  handler(traced_request(), [](micro::Response&&) {});
  handler(request_for("greeter", "Greeter.Hello"), [](micro::Response&&) {});
  auto all = log_file.lines();
  std::vector<std::string> lines(all.begin() + static_cast<std::ptrdiff_t>(before), all.end());
  REQUIRE(lines.size() == 2);
  CHECK(field(lines[0], "trace_id") == caller_trace);
  CHECK(field(lines[0], "span_id").empty());
  CHECK(ends_with_duration(lines[1]));  // an untraced call's line is as before
}
