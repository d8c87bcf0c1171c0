// wrappers/trace — the five tracing wrappers, written against <micro/trace.hpp> only, so
// they record into whatever tracer is installed:
//   handler    SERVER span per handled request, parented to the caller's traceparent
//   client     CLIENT span per logical call, the parent of its attempts
//   call       CLIENT span per attempt (node, attempt number); injects a fresh traceparent
//   publish    PRODUCER span per message; injects its context into the message headers
//   subscriber CONSUMER span per delivery, child of the producer and linked to it
//   handler_stream  SERVER span per handled stream, ended when the stream ends
//   client_stream   CLIENT span per opened stream (its open with retries, and its life),
//                   ended when the stream has ended and its reader has seen the end;
//                   injects its context, so the server's stream span is its child
// Stream spans carry `rpc.message` events (rpc.message.type SENT/RECEIVED, rpc.message.id
// counting from 1 per type, rpc.message.uncompressed_size) for the first
// stream_message_events messages each way, then only counts: micro.stream.messages_sent and
// micro.stream.messages_received are set on every stream span when it ends.
// With the no-op tracer installed every wrapper calls straight through: no span, no
// allocation, and incoming trace headers pass on untouched.
#include "trace_wrappers.hpp"

#include <cxxabi.h>

#include <atomic>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <typeinfo>

#include <micro/error.hpp>
#include <micro/stream.hpp>
#include <micro/trace.hpp>

namespace micro::trace::sdk {

namespace {

// rpc.message events per direction on a stream span; later messages are only counted (a
// long stream would otherwise hit the SDK's event limit and drop the end's story).
constexpr std::int64_t stream_message_events = 32;

// "Greeter.Hello" → "Hello"; an endpoint without a dot is all method.
std::string_view method_of(std::string_view endpoint) {
  std::size_t dot = endpoint.find('.');
  return dot == std::string_view::npos ? endpoint : endpoint.substr(dot + 1);
}

// Adds server.address/server.port (or the given keys) from "host:port"; "[::1]:80" too.
void add_address(std::vector<Attribute>& attributes, std::string_view address,
                 const char* address_key, const char* port_key) {
  if (address.empty()) return;
  std::string_view host = address;
  std::string_view port;
  if (address.front() == '[') {
    std::size_t close = address.find(']');
    if (close != std::string_view::npos) {
      host = address.substr(1, close - 1);
      if (close + 1 < address.size() && address[close + 1] == ':') port = address.substr(close + 2);
    }
  } else if (std::size_t colon = address.rfind(':');
             colon != std::string_view::npos && address.find(':') == colon) {
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
  }
  attributes.emplace_back(address_key, std::string(host));
  if (port.empty()) return;
  std::int64_t number = 0;
  for (char c : port) {
    if (c < '0' || c > '9' || number > 65535) return;
    number = number * 10 + (c - '0');
  }
  attributes.emplace_back(port_key, number);
}

// Calls over transport=grpc are gRPC calls to any peer (rpc.system=grpc, with
// rpc.grpc.status_code on every span); every other transport is micro's own RPC.
bool is_grpc(const WrapperScope& scope) {
  return scope.transport == "grpc";
}

void add_rpc_attributes(std::vector<Attribute>& attributes, const Request& request, bool grpc) {
  attributes.emplace_back("rpc.system", std::string(grpc ? "grpc" : "micro"));
  attributes.emplace_back("rpc.service", request.service);
  attributes.emplace_back("rpc.method", std::string(method_of(request.endpoint)));
}

std::vector<Attribute> messaging_attributes(const WrapperScope& scope, const Message& message,
                                            const char* operation) {
  std::vector<Attribute> attributes;
  attributes.reserve(4);
  attributes.emplace_back("messaging.system", scope.broker.empty() ? "micro" : scope.broker);
  attributes.emplace_back("messaging.destination.name", message.topic);
  attributes.emplace_back("messaging.operation.type", std::string(operation));
  attributes.emplace_back("messaging.message.body.size",
                          static_cast<std::int64_t>(message.body.size()));
  return attributes;
}

// ERROR status from an error response. error.type is the code, as the RPC conventions ask
// for a low-cardinality class of error.
void record_error(Span& span, const Error& error) {
  span.set_attribute("error.type", std::to_string(error.code));
  span.set_status(StatusCode::error, error.detail.empty() ? error.status : error.detail);
}

// The status a gRPC peer saw: OK, or the error's code mapped as the grpc transport maps it.
void record_grpc_status(Span& span, const Error* error) {
  span.set_attribute("rpc.grpc.status_code",
                     static_cast<std::int64_t>(error ? grpc_status_for(*error) : 0));
}

// The demangled type of the exception in flight ("std::runtime_error"), or "exception".
std::string exception_type(const std::exception& exception) {
  int status = 0;
  char* name = abi::__cxa_demangle(typeid(exception).name(), nullptr, nullptr, &status);
  std::string type = (status == 0 && name) ? name : "exception";
  std::free(name);
  return type;
}

// Records what a wrapped function threw on `span` and ends it; the caller rethrows.
void record_exception(Span& span, std::exception_ptr thrown, bool grpc) {
  // Anything but a micro::Exception reaches the peer as a 500: INTERNAL.
  static const Error internal = internal_error("micro.trace", "exception");
  try {
    std::rethrow_exception(std::move(thrown));
  } catch (const Exception& e) {
    record_error(span, e.error());
    if (grpc) record_grpc_status(span, &e.error());
    span.end();
    return;
  } catch (const std::exception& e) {
    span.set_attribute("error.type", exception_type(e));
    span.set_status(StatusCode::error, e.what());
  } catch (...) {
    span.set_attribute("error.type", std::string("exception"));
    span.set_status(StatusCode::error, "unknown exception");
  }
  if (grpc) record_grpc_status(span, &internal);
  span.end();
}

// The parent for a client-side span: the context's active span, or else a traceparent
// already in the metadata (a context built by hand, or forwarded from a peer), so the call
// joins the trace it belongs to rather than starting a new one.
std::optional<SpanContext> parent_from_metadata(const Context& context) {
  if (context.span() && context.span()->context().valid()) return std::nullopt;
  return extract(context.metadata());
}

// The parent start_span will use: a valid options.parent, else the context's active span.
const SpanContext* effective_parent(const Context& context, const StartOptions& options) {
  if (options.root) return nullptr;
  if (options.parent != nullptr && options.parent->valid()) return options.parent;
  if (context.span() && context.span()->context().valid()) return &context.span()->context();
  return nullptr;
}

// A response handler that records an error response on `span`, ends it, then passes the
// response on.
ResponseHandler ending_span(std::shared_ptr<Span> span, ResponseHandler done, bool grpc) {
  return [span = std::move(span), done = std::move(done), grpc](Response&& response) {
    if (response.error) record_error(*span, *response.error);
    if (grpc) record_grpc_status(*span, response.error ? &*response.error : nullptr);
    span->end();
    done(std::move(response));
  };
}

// StartOptions reused by the calling thread: the attribute vector keeps its capacity from
// one span to the next. Safe because each wrapper finishes with them
// before it calls further down the chain (which may start spans of its own).
StartOptions& scratch_options(SpanKind kind) {
  thread_local StartOptions options;
  options.kind = kind;
  options.parent = nullptr;
  options.links.clear();
  options.attributes.clear();
  return options;
}

HandlerWrapper handler_wrapper(bool grpc) {
  return [grpc](HandlerFunction next) -> HandlerFunction {
    return [next = std::move(next), grpc](const RequestPtr& shared, ResponseHandler respond) {
      Tracer& active = tracer();
      if (!active.enabled()) {
        next(shared, std::move(respond));
        return;
      }
      Request& request = *shared;
      std::optional<SpanContext> remote = extract(request.context.metadata());
      StartOptions& options = scratch_options(SpanKind::server);
      if (remote) options.parent = &*remote;
      if (active.may_record(effective_parent(request.context, options))) {
        add_rpc_attributes(options.attributes, request, grpc);
        const Metadata& metadata = request.context.metadata();
        if (const std::string* local = metadata.find("Local"))
          add_address(options.attributes, *local, "server.address", "server.port");
        if (const std::string* peer = metadata.find("Remote"))
          add_address(options.attributes, *peer, "client.address", "client.port");
      }
      std::shared_ptr<Span> span = active.start_span(request.endpoint, request.context, options);
      // Handler code's own spans (Database.Insert…) nest under the server span.
      request.context.set_span(span);
      if (!span->recording()) {  // unsampled: nothing to end or record, so no wrapped responder
        next(shared, std::move(respond));
        return;
      }
      try {
        // Servers leave UNSET on success (OTel RPC conventions); errors are ERROR. The span
        // ends before the response leaves, so the peer never sees it unfinished.
        next(shared, ending_span(span, std::move(respond), grpc));
      } catch (...) {
        record_exception(*span, std::current_exception(), grpc);
        throw;
      }
    };
  };
}

// What the client and attempt wrappers share: a CLIENT span under the context's span (or
// a traceparent in its metadata) with the RPC attributes plus whatever `add_attributes`
// puts in, whose end is tied to the response handed to `done`. `next` gets the handler.
template <class AddAttributes, class Next>
void with_client_span(Tracer& active, Request& request, std::string_view name, bool becomes_active,
                      bool injects, bool grpc, ResponseHandler done, AddAttributes add_attributes,
                      Next next) {
  std::optional<SpanContext> upstream = parent_from_metadata(request.context);
  StartOptions& options = scratch_options(SpanKind::client);
  if (upstream) options.parent = &*upstream;
  if (active.may_record(effective_parent(request.context, options))) {
    add_rpc_attributes(options.attributes, request, grpc);
    add_attributes(options.attributes);
  }
  std::shared_ptr<Span> span = active.start_span(name, request.context, options);
  // A logical call's span is the parent of its attempts.
  if (becomes_active) request.context.set_span(span);
  // Every hop gets a new parent id: the server's span becomes the attempt's child.
  if (injects) inject(span->context(), request.context.metadata());
  if (!span->recording()) {  // unsampled: nothing to end or record, so no wrapped handler
    next(std::move(done));
    return;
  }
  try {
    next(ending_span(span, std::move(done), grpc));
  } catch (...) {
    record_exception(*span, std::current_exception(), grpc);
    throw;
  }
}

ClientWrapper client_wrapper(bool grpc) {
  return [grpc](ClientFunction next) -> ClientFunction {
    return [next = std::move(next), grpc](const RequestPtr& request,
                                          const CallOptions& call_options, ResponseHandler done) {
      Tracer& active = tracer();
      if (!active.enabled()) {
        next(request, call_options, std::move(done));
        return;
      }
      with_client_span(
          active, *request, request->endpoint, /*becomes_active=*/true, /*injects=*/false, grpc,
          std::move(done), [](std::vector<Attribute>&) {},
          [&](ResponseHandler ending) { next(request, call_options, std::move(ending)); });
    };
  };
}

CallWrapper call_wrapper(bool grpc) {
  return [grpc](CallFunction next) -> CallFunction {
    return [next = std::move(next), grpc](const RequestPtr& request, const Attempt& attempt,
                                          ResponseHandler done) {
      Tracer& active = tracer();
      if (!active.enabled()) {
        next(request, attempt, std::move(done));
        return;
      }
      thread_local std::string name;
      name.assign(request->endpoint).append(" attempt");
      with_client_span(
          active, *request, name, /*becomes_active=*/false, /*injects=*/true, grpc, std::move(done),
          [&](std::vector<Attribute>& attributes) {
            add_address(attributes, attempt.node.address, "server.address", "server.port");
            attributes.emplace_back("micro.attempt", static_cast<std::int64_t>(attempt.number));
            if (!attempt.node.id.empty() && attempt.node.id != attempt.node.address)
              attributes.emplace_back("micro.node.id", attempt.node.id);
          },
          [&](ResponseHandler ending) { next(request, attempt, std::move(ending)); });
    };
  };
}

PublishWrapper publish_wrapper(const WrapperScope& scope) {
  return [scope](PublishFunction next) -> PublishFunction {
    return [scope, next = std::move(next)](Context& context, Message& message) {
      Tracer& active = tracer();
      if (!active.enabled()) {
        next(context, message);
        return;
      }
      std::optional<SpanContext> upstream = parent_from_metadata(context);
      StartOptions options;
      options.kind = SpanKind::producer;
      if (upstream) options.parent = &*upstream;
      options.attributes = messaging_attributes(scope, message, "publish");
      std::shared_ptr<Span> span = active.start_span(message.topic + " publish", context, options);
      // Explicit headers win over the context's metadata, so this is what subscribers see.
      inject(span->context(), message.headers);
      try {
        next(context, message);
      } catch (...) {
        record_exception(*span, std::current_exception(), false);
        throw;
      }
      span->end();
    };
  };
}

SubscriberWrapper subscriber_wrapper(const WrapperScope& scope) {
  return [scope](SubscriberFunction next) -> SubscriberFunction {
    return [scope, next = std::move(next)](Context& context, Message& message) {
      Tracer& active = tracer();
      if (!active.enabled()) {
        next(context, message);
        return;
      }
      std::optional<SpanContext> producer = extract(message.headers);
      StartOptions options;
      options.kind = SpanKind::consumer;
      if (producer) {
        // Child of the producer (one trace from publish to processing) and linked to it,
        // as the messaging conventions ask for a consumer that may batch.
        options.parent = &*producer;
        options.links.push_back(Link{*producer, {}});
      }
      options.attributes = messaging_attributes(scope, message, "process");
      std::shared_ptr<Span> span = active.start_span(message.topic + " process", context, options);
      context.set_span(span);
      try {
        next(context, message);
      } catch (...) {
        record_exception(*span, std::current_exception(), false);
        throw;
      }
      span->end();
    };
  };
}

// ---- streams ----

// One stream span's state, shared by the traced stream and the end callback (which must not
// hold the stream itself: the stream holds its callbacks).
class StreamSpan {
 public:
  // Server spans close at the stream's end (the handler's final answer is its last word);
  // client spans also wait for the reader to see the end, or for the stream to be let go,
  // since messages received before the end are still read after it.
  StreamSpan(std::shared_ptr<Span> span, bool waits_for_reader, bool grpc)
      : span_(std::move(span)), reader_done_(!waits_for_reader), grpc_(grpc) {}

  void sent(std::size_t bytes) { message("SENT", sent_, bytes); }
  void received(std::size_t bytes) { message("RECEIVED", received_, bytes); }

  void ended(const Response& status) {
    std::unique_lock lock(mutex_);
    if (status.error) error_ = *status.error;
    has_ended_ = true;
    close_if_done(lock);
  }
  // The reader saw nullopt, or the stream was let go.
  void reader_finished() {
    std::unique_lock lock(mutex_);
    reader_done_ = true;
    close_if_done(lock);
  }

  // `next` threw before the stream ended: record it; the end still closes the span.
  void threw(std::exception_ptr thrown) {
    try {
      std::rethrow_exception(std::move(thrown));
    } catch (const Exception& e) {
      record_error(*span_, e.error());
    } catch (const std::exception& e) {
      span_->set_attribute("error.type", exception_type(e));
      span_->set_status(StatusCode::error, e.what());
    } catch (...) {
      span_->set_attribute("error.type", std::string("exception"));
      span_->set_status(StatusCode::error, "unknown exception");
    }
  }

 private:
  void message(const char* type, std::atomic<std::int64_t>& counter, std::size_t bytes) {
    std::int64_t id = counter.fetch_add(1, std::memory_order_relaxed) + 1;
    if (id > stream_message_events) return;  // bounded: later messages only count
    span_->add_event("rpc.message",
                     {{"rpc.message.type", std::string(type)},
                      {"rpc.message.id", id},
                      {"rpc.message.uncompressed_size", static_cast<std::int64_t>(bytes)}});
  }

  void close_if_done(std::unique_lock<std::mutex>& lock) {
    if (closed_ || !has_ended_ || !reader_done_) return;
    closed_ = true;
    std::optional<Error> error = std::move(error_);
    lock.unlock();
    span_->set_attribute("micro.stream.messages_sent", sent_.load());
    span_->set_attribute("micro.stream.messages_received", received_.load());
    if (error) record_error(*span_, *error);
    if (grpc_) record_grpc_status(*span_, error ? &*error : nullptr);
    span_->end();
  }

  std::shared_ptr<Span> span_;
  std::atomic<std::int64_t> sent_{0}, received_{0};
  std::mutex mutex_;
  bool has_ended_ = false;
  bool reader_done_;
  const bool grpc_;
  bool closed_ = false;
  std::optional<Error> error_;
};

// The stream the wrapped function and the user see: counts messages into the span.
class TracedStream final : public ForwardingStream {
 public:
  TracedStream(MessageStreamPtr inner, std::shared_ptr<StreamSpan> span)
      : ForwardingStream(std::move(inner)), span_(std::move(span)) {
    inner_->on_end([span = span_](Response&& status) { span->ended(status); });
  }
  ~TracedStream() override { span_->reader_finished(); }

  void async_read(StreamReadHandler done) override {
    inner_->async_read([span = span_, done = std::move(done)](std::optional<std::string> message) {
      if (message)
        span->received(message->size());
      else
        span->reader_finished();
      done(std::move(message));
    });
  }
  void async_write(std::string message, StreamWriteHandler done) override {
    std::size_t bytes = message.size();
    inner_->async_write(std::move(message),
                        [span = span_, bytes, done = std::move(done)](std::optional<Error> error) {
                          if (!error) span->sent(bytes);
                          done(std::move(error));
                        });
  }

  const std::shared_ptr<StreamSpan>& span() const noexcept { return span_; }

 private:
  std::shared_ptr<StreamSpan> span_;
};

StreamHandlerWrapper handler_stream_wrapper(bool grpc) {
  return [grpc](StreamHandlerFunction next) -> StreamHandlerFunction {
    return [next = std::move(next), grpc](const MessageStreamPtr& stream) {
      Tracer& active = tracer();
      if (!active.enabled()) {
        next(stream);
        return;
      }
      Request& request = stream->request();
      std::optional<SpanContext> remote = extract(request.context.metadata());
      StartOptions& options = scratch_options(SpanKind::server);
      if (remote) options.parent = &*remote;
      if (active.may_record(effective_parent(request.context, options))) {
        add_rpc_attributes(options.attributes, request, grpc);
        const Metadata& metadata = request.context.metadata();
        if (const std::string* local = metadata.find("Local"))
          add_address(options.attributes, *local, "server.address", "server.port");
        if (const std::string* peer = metadata.find("Remote"))
          add_address(options.attributes, *peer, "client.address", "client.port");
      }
      std::shared_ptr<Span> span = active.start_span(request.endpoint, request.context, options);
      // The handler's own spans nest under the stream's.
      request.context.set_span(span);
      if (!span->recording()) {
        next(stream);
        return;
      }
      auto state = std::make_shared<StreamSpan>(span, /*waits_for_reader=*/false, grpc);
      auto traced = std::make_shared<TracedStream>(stream, state);
      try {
        next(traced);
      } catch (...) {
        state->threw(std::current_exception());
        throw;
      }
    };
  };
}

ClientStreamWrapper client_stream_wrapper(bool grpc) {
  return [grpc](ClientStreamFunction next) -> ClientStreamFunction {
    return [next = std::move(next), grpc](const RequestPtr& request,
                                          const CallOptions& call_options, OpenStreamHandler done) {
      Tracer& active = tracer();
      if (!active.enabled()) {
        next(request, call_options, std::move(done));
        return;
      }
      std::optional<SpanContext> upstream = parent_from_metadata(request->context);
      StartOptions& options = scratch_options(SpanKind::client);
      if (upstream) options.parent = &*upstream;
      if (active.may_record(effective_parent(request->context, options)))
        add_rpc_attributes(options.attributes, *request, grpc);
      std::shared_ptr<Span> span = active.start_span(request->endpoint, request->context, options);
      request->context.set_span(span);
      // Streams have no attempt chain: the stream's span is what the server's is a child of.
      inject(span->context(), request->context.metadata());
      if (!span->recording()) {
        next(request, call_options, std::move(done));
        return;
      }
      auto state = std::make_shared<StreamSpan>(span, /*waits_for_reader=*/true, grpc);
      auto opened = [span, state, done = std::move(done)](MessageStreamPtr stream,
                                                          std::optional<Error> error) {
        if (!stream) {
          Response failed;
          failed.error = error ? *error : internal_error("micro.trace", "stream not opened");
          state->ended(failed);
          state->reader_finished();
          done(nullptr, std::move(error));
          return;
        }
        done(std::make_shared<TracedStream>(std::move(stream), state), std::nullopt);
      };
      try {
        next(request, call_options, std::move(opened));
      } catch (...) {
        state->threw(std::current_exception());
        Response failed;
        failed.error = internal_error("micro.trace", "opening the stream threw");
        state->reader_finished();
        state->ended(failed);
        throw;
      }
    };
  };
}

}  // namespace

WrapperSet make_trace_wrappers(const WrapperScope& scope) {
  WrapperSet set;
  const bool grpc = is_grpc(scope);
  set.handler = handler_wrapper(grpc);
  set.client = client_wrapper(grpc);
  set.call = call_wrapper(grpc);
  set.publish = publish_wrapper(scope);
  set.subscriber = subscriber_wrapper(scope);
  set.handler_stream = handler_stream_wrapper(grpc);
  set.client_stream = client_stream_wrapper(grpc);
  return set;
}

}  // namespace micro::trace::sdk
