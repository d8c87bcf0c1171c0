// micro/wrapper.hpp — cross-cutting behaviour as chains of functions.
//
// Seven chains, each a function type and a wrapper that maps the next function to a new
// one. A chain configured as "a,b" runs a first: a is outermost.
//   handler        — server side, one handled request
//   client         — client side, one logical call across all its retries
//   call           — client side, one attempt on one node
//   publish        — one published message
//   subscriber     — one delivered message
//   handler_stream — server side, one handled stream
//   client_stream  — client side, one opened stream (its open, across retries, and its life)
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include <micro/broker.hpp>
#include <micro/plugin.hpp>
#include <micro/registry.hpp>
#include <micro/transport.hpp>

namespace micro {

// Per-call options, seen by client wrappers (Go-Micro passes its CallOptions the same way).
struct CallOptions {
  // The whole call's budget, retries included; it travels to the server. Zero: the
  // client's default. A deadline already on the request's context is kept if tighter.
  std::chrono::milliseconds timeout{0};
  int retries = -1;  // extra attempts after the first; -1: the client's default
  // Call this address directly, skipping registry and selector.
  std::string address;
};

struct Attempt {
  const Node& node;
  int number;  // 1 for the first try
};

// The request is the call's: a function may change it before passing it on (metadata, the
// active span) and keeps a share of it if it needs it after returning. The handler (respond,
// done) comes last and is called exactly once.
using HandlerFunction = std::function<void(const RequestPtr& request, ResponseHandler respond)>;
using ClientFunction = std::function<void(const RequestPtr& request, const CallOptions& options,
                                          ResponseHandler done)>;
// Attempts of one call run one after the other: an attempt starts after the previous one's
// `done` has run, so changing the request for an attempt never races with the transport.
using CallFunction =
    std::function<void(const RequestPtr& request, const Attempt& attempt, ResponseHandler done)>;
// Publish throws micro::Exception on failure.
using PublishFunction = std::function<void(Context& context, Message& message)>;
// Throwing reports the delivery as failed.
using SubscriberFunction = std::function<void(Context& context, Message& message)>;

// Streams. A stream wrapper sees the stream object and may pass on a ForwardingStream
// (<micro/stream.hpp>) around it to observe messages both ways and the end (on_end).
// Server: the function ends the stream with stream->finish(status) exactly once (the core's
// innermost function does, for typed handlers). A wrapper may change stream->request()
// (its context: the active span) before passing the stream on.
using StreamHandlerFunction = std::function<void(const MessageStreamPtr& stream)>;
// Client: opens the stream whose head is `request`; `done` gets the open stream (wrap it to
// observe it) or the error that kept it from opening. Called once per Client::open_stream.
using ClientStreamFunction = std::function<void(
    const RequestPtr& request, const CallOptions& options, OpenStreamHandler done)>;

using HandlerWrapper = std::function<HandlerFunction(HandlerFunction next)>;
using ClientWrapper = std::function<ClientFunction(ClientFunction next)>;
using CallWrapper = std::function<CallFunction(CallFunction next)>;
using PublishWrapper = std::function<PublishFunction(PublishFunction next)>;
using SubscriberWrapper = std::function<SubscriberFunction(SubscriberFunction next)>;
using StreamHandlerWrapper = std::function<StreamHandlerFunction(StreamHandlerFunction next)>;
using ClientStreamWrapper = std::function<ClientStreamFunction(ClientStreamFunction next)>;

// What one wrapper contributes; any member may be empty.
struct WrapperSet {
  HandlerWrapper handler;
  ClientWrapper client;
  CallWrapper call;
  PublishWrapper publish;
  SubscriberWrapper subscriber;
  StreamHandlerWrapper handler_stream;
  ClientStreamWrapper client_stream;
};

// Who the wrappers are for, so they can name spans, label metrics and so on.
struct WrapperScope {
  std::string service_name;
  std::string service_version;
  std::string transport;  // plugin names, for attributes such as rpc.system, messaging.system
  std::string broker;
};

// A wrapper plugin's object.
class Wrapper : public PluginObject {
 public:
  static constexpr PluginKind plugin_kind = PluginKind::wrapper;

  virtual WrapperSet wrappers(const WrapperScope& scope) = 0;
};

// The seven chains, in configured order (first = outermost).
class WrapperChains {
 public:
  void add(const WrapperSet& set);
  void add_handler(HandlerWrapper wrapper) { handler_.push_back(std::move(wrapper)); }
  void add_client(ClientWrapper wrapper) { client_.push_back(std::move(wrapper)); }
  void add_call(CallWrapper wrapper) { call_.push_back(std::move(wrapper)); }
  void add_publish(PublishWrapper wrapper) { publish_.push_back(std::move(wrapper)); }
  void add_subscriber(SubscriberWrapper wrapper) { subscriber_.push_back(std::move(wrapper)); }
  void add_handler_stream(StreamHandlerWrapper wrapper) {
    handler_stream_.push_back(std::move(wrapper));
  }
  void add_client_stream(ClientStreamWrapper wrapper) {
    client_stream_.push_back(std::move(wrapper));
  }

  HandlerFunction wrap_handler(HandlerFunction inner) const {
    return apply(handler_, std::move(inner));
  }
  ClientFunction wrap_client(ClientFunction inner) const {
    return apply(client_, std::move(inner));
  }
  CallFunction wrap_call(CallFunction inner) const { return apply(call_, std::move(inner)); }
  PublishFunction wrap_publish(PublishFunction inner) const {
    return apply(publish_, std::move(inner));
  }
  SubscriberFunction wrap_subscriber(SubscriberFunction inner) const {
    return apply(subscriber_, std::move(inner));
  }
  StreamHandlerFunction wrap_handler_stream(StreamHandlerFunction inner) const {
    return apply(handler_stream_, std::move(inner));
  }
  ClientStreamFunction wrap_client_stream(ClientStreamFunction inner) const {
    return apply(client_stream_, std::move(inner));
  }

 private:
  // Applied innermost first, so the first configured ends up outermost.
  template <class Function, class Wrappers>
  static Function apply(const Wrappers& wrappers, Function inner) {
    for (auto it = wrappers.rbegin(); it != wrappers.rend(); ++it) inner = (*it)(std::move(inner));
    return inner;
  }

  std::vector<HandlerWrapper> handler_;
  std::vector<ClientWrapper> client_;
  std::vector<CallWrapper> call_;
  std::vector<PublishWrapper> publish_;
  std::vector<SubscriberWrapper> subscriber_;
  std::vector<StreamHandlerWrapper> handler_stream_;
  std::vector<ClientStreamWrapper> client_stream_;
};

}  // namespace micro
