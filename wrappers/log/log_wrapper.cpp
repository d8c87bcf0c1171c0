// wrappers/log — one log line per handled request, logical call, publish and delivery.
//
// Lines look like
//   [micro] handler greeter Greeter.Hello ok 0.153ms
//   [micro] client greeter Greeter.Hello error greeter: 404 Not Found: no such thing 1.020ms
//   [micro] publish orders.created ok 0.004ms
//   [micro] deliver orders.created error boom 0.210ms
// Each member wraps `next`, calls it exactly once and passes the response (or the
// exception) through unchanged; the line is written when the outcome is known.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include <micro/error.hpp>
#include <micro/plugin.hpp>
#include <micro/wrapper.hpp>

namespace {

constexpr const char* error_id = "micro.wrapper.log";

using Clock = std::chrono::steady_clock;

// Where lines go: stderr, stdout or a file opened for appending.
class Output {
 public:
  Output(const std::string& stream, std::string prefix) : prefix_(std::move(prefix)) {
    if (stream == "stderr") {
      file_ = stderr;
    } else if (stream == "stdout") {
      file_ = stdout;
    } else if (stream.find('/') != std::string::npos) {
      file_ = std::fopen(stream.c_str(), "a");
      if (!file_)
        throw micro::Exception(
            micro::bad_request(error_id, "cannot open log file '" + stream + "'"));
      owned_ = true;
    } else {
      throw micro::Exception(micro::bad_request(
          error_id, "stream must be stderr, stdout or a file path, got '" + stream + "'"));
    }
  }
  ~Output() {
    if (owned_) std::fclose(file_);
  }
  Output(const Output&) = delete;
  Output& operator=(const Output&) = delete;

  // One fwrite per line: stdio locks the stream per call, so lines from many threads
  // never interleave. Flushed at once, so the log and the program's own output keep
  // their order.
  void write(std::string_view kind, std::string_view subject, std::string_view outcome,
             Clock::duration elapsed) {
    char duration[32];
    double milliseconds = std::chrono::duration<double, std::milli>(elapsed).count();
    std::snprintf(duration, sizeof duration, "%.3fms", milliseconds);
    std::string line;
    line.reserve(prefix_.size() + kind.size() + subject.size() + outcome.size() + 24);
    if (!prefix_.empty()) line.append(prefix_).push_back(' ');
    line.append(kind).push_back(' ');
    line.append(subject).push_back(' ');
    line.append(outcome).push_back(' ');
    line.append(duration).push_back('\n');
    std::fwrite(line.data(), 1, line.size(), file_);
    std::fflush(file_);
  }

 private:
  std::string prefix_;
  std::FILE* file_ = nullptr;
  bool owned_ = false;
};

std::string outcome_of(const micro::Response& response) {
  return response.error ? "error " + response.error->message() : std::string("ok");
}

std::string outcome_of(std::exception_ptr failure) {
  try {
    std::rethrow_exception(failure);
  } catch (const micro::Exception& error) {
    return "error " + error.error().message();
  } catch (const std::exception& error) {
    return std::string("error ") + error.what();
  } catch (...) {
    return "error unknown exception";
  }
}

// For request/response chains: writes the line when the response passes by, or when
// `next` throws before answering.
template <class Function, class... Arguments>
void run_logged(const std::shared_ptr<Output>& output, std::string_view kind, std::string subject,
                const Function& next, const micro::RequestPtr& request, micro::ResponseHandler done,
                const Arguments&... arguments) {
  auto start = Clock::now();
  auto answered = std::make_shared<std::atomic<bool>>(false);
  auto on_response = [output, kind, subject, start, answered,
                      done = std::move(done)](micro::Response&& response) {
    answered->store(true);
    output->write(kind, subject, outcome_of(response), Clock::now() - start);
    done(std::move(response));
  };
  try {
    next(request, arguments..., std::move(on_response));
  } catch (...) {
    if (!answered->load())
      output->write(kind, subject, outcome_of(std::current_exception()), Clock::now() - start);
    throw;
  }
}

// For message chains: the line is written when `next` returns or throws.
template <class Function>
void run_logged_message(const std::shared_ptr<Output>& output, std::string_view kind,
                        const Function& next, micro::Context& context, micro::Message& message) {
  auto start = Clock::now();
  std::string topic = message.topic;  // `next` may change the message
  try {
    next(context, message);
  } catch (...) {
    output->write(kind, topic, outcome_of(std::current_exception()), Clock::now() - start);
    throw;
  }
  output->write(kind, topic, "ok", Clock::now() - start);
}

class LogWrapper final : public micro::Wrapper {
 public:
  explicit LogWrapper(const micro::PluginArguments& arguments)
      : output_(std::make_shared<Output>(arguments.get_string("stream"),
                                         arguments.get_string("prefix"))) {}

  micro::WrapperSet wrappers(const micro::WrapperScope& scope) override {
    micro::WrapperSet set;
    auto output = output_;
    set.handler = [output, service = scope.service_name](micro::HandlerFunction next) {
      return micro::HandlerFunction(
          [output, service, next = std::move(next)](const micro::RequestPtr& request,
                                                    micro::ResponseHandler respond) {
            run_logged(output, "handler", service + " " + request->endpoint, next, request,
                       std::move(respond));
          });
    };
    set.client = [output](micro::ClientFunction next) {
      return micro::ClientFunction(
          [output, next = std::move(next)](const micro::RequestPtr& request,
                                           const micro::CallOptions& options,
                                           micro::ResponseHandler done) {
            run_logged(output, "client", request->service + " " + request->endpoint, next, request,
                       std::move(done), options);
          });
    };
    set.publish = [output](micro::PublishFunction next) {
      return micro::PublishFunction(
          [output, next = std::move(next)](micro::Context& context, micro::Message& message) {
            run_logged_message(output, "publish", next, context, message);
          });
    };
    set.subscriber = [output](micro::SubscriberFunction next) {
      return micro::SubscriberFunction(
          [output, next = std::move(next)](micro::Context& context, micro::Message& message) {
            run_logged_message(output, "deliver", next, context, message);
          });
    };
    return set;
  }

 private:
  std::shared_ptr<Output> output_;
};

const micro::PluginOption options[] = {
    {"stream", "string", "stderr", "where lines go: stderr, stdout or a file path (appended)"},
    {"prefix", "string", "[micro]", "text at the start of every line"},
};

}  // namespace

MICRO_PLUGIN(wrapper, log, "one line per request, call, publish and delivery", options,
             [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new LogWrapper(arguments);
             })
