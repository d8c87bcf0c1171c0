// micro/client.hpp — the calling side: the client pipeline and publishing.
//
// A call runs: client wrappers (once per logical call) → registry cache lookup → selector
// picks a node → call wrappers (once per attempt) → transport. Transport errors, 408 and
// 503 are retried with exponential backoff while the deadline and the retry budget allow;
// every attempt's outcome and latency go back to the selector (exactly one report per pick).
// A stream opens the same way: client_stream wrappers → registry cache → selector →
// transport, retried only while nothing was sent (<micro/stream.hpp> holds the handles).
#pragma once

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>

#include <nlohmann/json.hpp>

#include <micro/broker.hpp>
#include <micro/codec.hpp>
#include <micro/registry_cache.hpp>
#include <micro/selector.hpp>
#include <micro/stream.hpp>
#include <micro/transport.hpp>
#include <micro/wrapper.hpp>

namespace micro {

namespace detail {
// A callback with no executor of its own: Client::async_call runs it directly, without the
// completion-token machinery (one allocation and a dispatch fewer).
// (Asio's tokens either are not invocable with a Response, or return something, as
// use_future does.)
template <class Token>
concept plain_response_callback = std::is_invocable_v < std::decay_t<Token>
&, Response&& > &&std::is_void_v<std::invoke_result_t<std::decay_t<Token>&, Response&&>>&&
                    std::is_convertible_v<Token, ResponseHandler> &&
       !requires {
  typename std::decay_t<Token>::executor_type;
};
}  // namespace detail

struct ClientOptions {
  std::chrono::milliseconds timeout{std::chrono::seconds(5)};
  int retries = 1;
  std::chrono::milliseconds backoff{std::chrono::milliseconds(10)};  // doubled per retry
  std::chrono::milliseconds max_backoff{std::chrono::seconds(1)};
  std::vector<std::int32_t> retry_on{408, 503};  // error codes worth another attempt
  // Retry budget: retries may add at most this share of the calls, in percent (a token
  // bucket: each call's first attempt deposits retry_budget_percent/100 of a retry, each
  // retry withdraws one), plus up to retry_budget_reserve retries saved up at any time, so a
  // failing service sees about 1.2 attempts per call rather than 1 + retries.
  int retry_budget_percent = 20;
  int retry_budget_reserve = 10;
  std::string content_type{json_content_type};
  std::string id = "micro.client";  // the Error id the client's own errors carry
};

struct ClientStatistics {
  std::uint64_t calls = 0, attempts = 0, retries = 0, failures = 0;
  // Retries the retry budget refused (the call ended with its last error instead).
  std::uint64_t retries_over_budget = 0;
  std::uint64_t streams = 0;  // streams opened (Client::open_stream calls)
  // Messages handed to the broker, and publishes that failed (the broker refused or threw).
  std::uint64_t published = 0, publish_failures = 0;
};

class Client {
 public:
  Client(ClientOptions options, std::shared_ptr<Transport> transport,
         std::shared_ptr<RegistryCache> registry, std::shared_ptr<Selector> selector,
         std::shared_ptr<Broker> broker, WrapperChains wrappers,
         boost::asio::any_io_executor executor);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Raw asynchronous call: the call owns `request`; `done` runs exactly once, on an I/O
  // thread, never inside async_call. Cancelling request.context (keep its cancellation()
  // before the call) ends the call at once with 499 in whatever stage it is: waiting for the
  // registry, backing off between attempts, or in flight (the transport drops it and tells
  // the server).
  void async_call(Request request, const CallOptions& options, ResponseHandler done);

  // Any Asio completion token: boost::asio::use_awaitable (co_await it), use_future, a
  // callback bound to an executor. Completes with a Response (check response.error) on the
  // token's associated executor. A plain callback takes the raw overload above.
  template <class CompletionToken>
  requires(!detail::plain_response_callback<CompletionToken>) auto async_call(
      Request request, const CallOptions& options, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(Response)>(
        [this](auto handler, Request request, const CallOptions& options) {
          using Handler = decltype(handler);
          auto shared = std::make_shared<Handler>(std::move(handler));
          auto executor = boost::asio::get_associated_executor(*shared, this->executor());
          async_call(std::move(request), options, [shared, executor](Response&& response) {
            // Completes on the handler's own executor (a coroutine resumes where it runs),
            // invoked once as an rvalue, as Asio handlers must be.
            boost::asio::dispatch(executor, [shared, response = std::move(response)]() mutable {
              std::move (*shared)(std::move(response));
            });
          });
        },
        token, std::move(request), options);
  }

  // The same with the client's default options.
  template <class CompletionToken>
  requires(!std::is_same_v<std::decay_t<CompletionToken>, CallOptions>) auto async_call(
      Request request, CompletionToken&& token) {
    return async_call(std::move(request), CallOptions{}, std::forward<CompletionToken>(token));
  }

  // Blocking raw call; throws micro::Exception on failure. Never call it from an I/O thread.
  Response call(Request request, const CallOptions& options = {});

  // Typed blocking call: encodes `request` with the client's content type, decodes Resp.
  template <class Resp, class Req>
  Resp call(std::string service, std::string endpoint, const Req& request,
            const CallOptions& options = {}, Context context = {});

  // Opens a stream with `head` (service, endpoint, content type, context; its body is not
  // sent) through the client_stream wrappers, the registry cache and the selector. A node
  // that cannot be reached (retry_on codes, within the retry budget and the deadline) is
  // replaced by another before anything is sent; once the head is sent, nothing is retried.
  // The stream's deadline is the head context's, or options.timeout when given; the
  // client's default timeout (meant for unary calls) does not bound streams. Cancelling the
  // head's context ends the stream with 499 (the server is told). `done` runs once, on an
  // I/O thread, never inside the call.
  void async_open_stream(Request head, const CallOptions& options, OpenStreamHandler done);

  // Any Asio completion token; completes with a Stream. A stream that could not be opened is
  // already ended: its error() says why (reads see nullopt, writes fail).
  template <class CompletionToken>
  auto open_stream(Request head, const CallOptions& options, CompletionToken&& token) {
    return detail::stream_initiate<void(Stream)>(
        executor(), std::forward<CompletionToken>(token),
        [this, head = std::move(head), options](auto callback) mutable {
          // What an ended stream shows of its head when the open fails.
          Request named;
          named.service = head.service;
          named.endpoint = head.endpoint;
          async_open_stream(std::move(head), options,
                            [callback = std::move(callback), executor = this->executor(),
                             named = std::move(named)](MessageStreamPtr stream,
                                                       std::optional<Error> error) mutable {
                              if (!stream) stream = make_ended_stream(std::move(named), *error);
                              callback(Stream(std::move(stream), executor));
                            });
        });
  }

  // Blocking: opens a stream to service/endpoint with the client's content type; throws
  // micro::Exception when it cannot be opened. Never call it from an I/O thread.
  Stream open_stream(std::string service, std::string endpoint, const CallOptions& options = {},
                     Context context = {});
  // The same, typed: writes Send, reads Receive.
  template <class Send, class Receive>
  TypedStream<Send, Receive> open_stream(std::string service, std::string endpoint,
                                         const CallOptions& options = {}, Context context = {}) {
    return TypedStream<Send, Receive>(
        open_stream(std::move(service), std::move(endpoint), options, std::move(context)));
  }

  // Publishes through the publish wrappers to the broker. Throws micro::Exception.
  void publish(Context& context, Message message);
  template <class T>
  void publish(std::string topic, const T& value, Context context = {});

  // Builds a Request with the client's content type from a value convertible to JSON.
  template <class Req>
  Request make_request(std::string service, std::string endpoint, const Req& value,
                       Context context = {}) const;

  const ClientOptions& options() const noexcept;
  ClientStatistics statistics() const;
  // The executor completions run on.
  boost::asio::any_io_executor executor() const;

  // Decodes a successful response's body as T; throws micro::Exception for an error response.
  template <class T>
  static T decode_response(const Response& response);

  struct State;  // implementation detail, shared with the pipeline's call objects

 private:
  std::shared_ptr<State> state_;
};

template <class Req>
Request Client::make_request(std::string service, std::string endpoint, const Req& value,
                             Context context) const {
  Request request;
  request.service = std::move(service);
  request.endpoint = std::move(endpoint);
  request.content_type = options().content_type;
  request.context = std::move(context);
  message_codec<Req>::encode(request.content_type, value, request.body);
  return request;
}

template <class T>
T Client::decode_response(const Response& response) {
  if (response.error) throw Exception(*response.error);
  try {
    return message_codec<T>::decode(response.content_type, response.body);
  } catch (const Exception&) {
    throw;  // the codec's own answer
  } catch (const std::exception& e) {
    throw Exception(Error("micro.client", ErrorCode::internal,
                          std::string("cannot read the response: ") + e.what()));
  }
}

template <class Resp, class Req>
Resp Client::call(std::string service, std::string endpoint, const Req& request,
                  const CallOptions& options, Context context) {
  return decode_response<Resp>(call(
      make_request(std::move(service), std::move(endpoint), request, std::move(context)), options));
}

template <class T>
void Client::publish(std::string topic, const T& value, Context context) {
  Message message;
  message.topic = std::move(topic);
  message.headers.set("Content-Type", options().content_type);
  message_codec<T>::encode(options().content_type, value, message.body);
  publish(context, std::move(message));
}

}  // namespace micro
