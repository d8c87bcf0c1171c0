// wrappers/log — one log line per handled request, logical call, publish and delivery.
//
// Lines look like
//   [micro] handler greeter Greeter.Hello ok 0.153ms
//   [micro] client greeter Greeter.Hello error greeter: 404 Not Found: no such thing 1.020ms
//   [micro] publish orders.created ok 0.004ms
//   [micro] deliver orders.created error boom 0.210ms
//   [micro] stream-client prices Prices.Watch open
//   [micro] stream-client prices Prices.Watch ok sent=1 received=250 2003.114ms
//   [micro] stream-handler prices Prices.Watch error 499 cancelled sent=250 received=1 2003.020ms
// A traced call's lines end with its ids, so logs and traces join on them (OTel's log
// correlation fields):
//   [micro] handler greeter Greeter.Hello ok 0.153ms trace_id=4bf9…4736 span_id=00f0…02b7
// The ids are the call's span (the handler's SERVER span, the logical call's CLIENT span, a
// delivery's CONSUMER span; a publish has the trace_id its message carries) whatever the order of `trace` and `log` in the chain, sampled or
// not; without a span of its own, the trace the request or message arrived with (trace_id
// only: the span id there is the caller's).
// A stream gets a line when it opens and one when it ends, with the messages counted each
// way; a client's end line waits until its reader has seen the end (or let the stream go),
// since messages that arrived before the end are still read after it.
// Each member wraps `next`, calls it exactly once and passes the response (or the
// exception) through unchanged; the line is written when the outcome is known.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <micro/error.hpp>
#include <micro/plugin.hpp>
#include <micro/stream.hpp>
#include <micro/trace.hpp>
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
             Clock::duration elapsed, std::string_view trace = {}) {
    char duration[32];
    double milliseconds = std::chrono::duration<double, std::milli>(elapsed).count();
    std::snprintf(duration, sizeof duration, "%.3fms", milliseconds);
    std::string line;
    line.reserve(prefix_.size() + kind.size() + subject.size() + outcome.size() + 24);
    if (!prefix_.empty()) line.append(prefix_).push_back(' ');
    line.append(kind).push_back(' ');
    line.append(subject).push_back(' ');
    line.append(outcome).push_back(' ');
    line.append(duration);
    line.append(trace).push_back('\n');
    std::fwrite(line.data(), 1, line.size(), file_);
    std::fflush(file_);
  }

  // A line without an outcome or a duration (a stream's open).
  void write_event(std::string_view kind, std::string_view subject, std::string_view event,
                   std::string_view trace = {}) {
    std::string line;
    if (!prefix_.empty()) line.append(prefix_).push_back(' ');
    line.append(kind).push_back(' ');
    line.append(subject).push_back(' ');
    line.append(event);
    line.append(trace).push_back('\n');
    std::fwrite(line.data(), 1, line.size(), file_);
    std::fflush(file_);
  }

 private:
  std::string prefix_;
  std::FILE* file_ = nullptr;
  bool owned_ = false;
};

// " trace_id=… span_id=…" of the context's span, else " trace_id=…" of the traceparent in
// `carried` (request metadata, message headers); "" when the call is not traced.
std::string trace_fields(const micro::Context& context, const micro::Metadata& carried) {
  if (const auto& span = context.span()) {
    const micro::trace::SpanContext& ids = span->context();
    if (ids.valid())
      return " trace_id=" + ids.trace_id.to_hex() + " span_id=" + ids.span_id.to_hex();
  }
  if (auto remote = micro::trace::extract(carried)) return " trace_id=" + remote->trace_id.to_hex();
  return {};
}

std::string trace_fields(const micro::Context& context) {
  return trace_fields(context, context.metadata());
}

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
  // The line is written when the answer passes, by when a trace wrapper inside this one has
  // set the call's span on the request's context too.
  auto on_response = [output, kind, subject, start, answered, request,
                      done = std::move(done)](micro::Response&& response) {
    answered->store(true);
    output->write(kind, subject, outcome_of(response), Clock::now() - start,
                  trace_fields(request->context));
    done(std::move(response));
  };
  try {
    next(request, arguments..., std::move(on_response));
  } catch (...) {
    if (!answered->load())
      output->write(kind, subject, outcome_of(std::current_exception()), Clock::now() - start,
                    trace_fields(request->context));
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
    output->write(kind, topic, outcome_of(std::current_exception()), Clock::now() - start,
                  trace_fields(context, message.headers));
    throw;
  }
  output->write(kind, topic, "ok", Clock::now() - start, trace_fields(context, message.headers));
}

// One logged stream: counts its messages and writes the end line once the stream has ended
// and (for a client) its reader is done. Shared by the counting stream and the end callback,
// which must not hold the stream (the stream holds its callbacks).
class StreamLog {
 public:
  // `trace`: the stream's trace_fields, known when it opens.
  StreamLog(std::shared_ptr<Output> output, std::string_view kind, std::string subject,
            bool waits_for_reader, std::string trace)
      : output_(std::move(output)),
        kind_(kind),
        subject_(std::move(subject)),
        trace_(std::move(trace)),
        start_(Clock::now()),
        reader_done_(!waits_for_reader) {
    output_->write_event(kind_, subject_, "open", trace_);
  }

  // A client stream's ids, once it opened (a trace wrapper inside this one has set its span
  // by then); before any end.
  void set_trace(std::string trace) {
    std::lock_guard lock(mutex_);
    trace_ = std::move(trace);
  }

  void sent() { sent_.fetch_add(1, std::memory_order_relaxed); }
  void received() { received_.fetch_add(1, std::memory_order_relaxed); }

  void ended(const micro::Response& status) {
    std::unique_lock lock(mutex_);
    if (outcome_.empty()) outcome_ = outcome_of(status);
    has_ended_ = true;
    write_if_done(lock);
  }
  void reader_finished() {
    std::unique_lock lock(mutex_);
    reader_done_ = true;
    write_if_done(lock);
  }

 private:
  void write_if_done(std::unique_lock<std::mutex>& lock) {
    if (written_ || !has_ended_ || !reader_done_) return;
    written_ = true;
    std::string outcome = outcome_ + " sent=" + std::to_string(sent_.load()) +
                          " received=" + std::to_string(received_.load());
    std::string trace = trace_;
    lock.unlock();
    output_->write(kind_, subject_, outcome, Clock::now() - start_, trace);
  }

  std::shared_ptr<Output> output_;
  std::string_view kind_;
  std::string subject_;
  std::string trace_;
  Clock::time_point start_;
  std::atomic<std::uint64_t> sent_{0}, received_{0};
  std::mutex mutex_;
  std::string outcome_;
  bool has_ended_ = false;
  bool reader_done_;
  bool written_ = false;
};

class LoggedStream final : public micro::ForwardingStream {
 public:
  LoggedStream(micro::MessageStreamPtr inner, std::shared_ptr<StreamLog> log)
      : ForwardingStream(std::move(inner)), log_(std::move(log)) {
    inner_->on_end([log = log_](micro::Response&& status) { log->ended(status); });
  }
  ~LoggedStream() override { log_->reader_finished(); }

  void async_read(micro::StreamReadHandler done) override {
    inner_->async_read([log = log_, done = std::move(done)](std::optional<std::string> message) {
      if (message)
        log->received();
      else
        log->reader_finished();
      done(std::move(message));
    });
  }
  void async_write(std::string message, micro::StreamWriteHandler done) override {
    inner_->async_write(std::move(message),
                        [log = log_, done = std::move(done)](std::optional<micro::Error> error) {
                          if (!error) log->sent();
                          done(std::move(error));
                        });
  }

 private:
  std::shared_ptr<StreamLog> log_;
};

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
    set.handler_stream = [output, service = scope.service_name](micro::StreamHandlerFunction next) {
      return micro::StreamHandlerFunction(
          [output, service, next = std::move(next)](const micro::MessageStreamPtr& stream) {
            auto log = std::make_shared<StreamLog>(
                output, "stream-handler", service + " " + stream->request().endpoint,
                /*waits_for_reader=*/false, trace_fields(stream->request().context));
            next(std::make_shared<LoggedStream>(stream, std::move(log)));
          });
    };
    set.client_stream = [output](micro::ClientStreamFunction next) {
      return micro::ClientStreamFunction(
          [output, next = std::move(next)](const micro::RequestPtr& request,
                                           const micro::CallOptions& options,
                                           micro::OpenStreamHandler done) {
            auto log = std::make_shared<StreamLog>(
                output, "stream-client", request->service + " " + request->endpoint,
                /*waits_for_reader=*/true, trace_fields(request->context));
            next(request, options,
                 [log, request, done = std::move(done)](micro::MessageStreamPtr stream,
                                                        std::optional<micro::Error> error) {
                   log->set_trace(trace_fields(request->context));
                   if (!stream) {
                     log->ended(micro::Response::failure(
                         error ? *error : micro::internal_error(error_id, "stream not opened")));
                     log->reader_finished();
                     done(nullptr, std::move(error));
                     return;
                   }
                   done(std::make_shared<LoggedStream>(std::move(stream), log), std::nullopt);
                 });
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

MICRO_PLUGIN(wrapper, log, "one line per request, call, publish and delivery; two per stream",
             options, [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new LogWrapper(arguments);
             })
