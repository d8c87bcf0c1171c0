// Client: the call pipeline (client wrappers → registry cache → selector → call wrappers →
// transport, with retries inside the deadline and the retry budget) and publishing through
// the publish wrappers.
#include <micro/client.hpp>

#include <algorithm>
#include <atomic>
#include <optional>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

namespace micro {

namespace {
using Clock = std::chrono::steady_clock;
}

struct Client::State : std::enable_shared_from_this<Client::State> {
  ClientOptions options;
  std::shared_ptr<Transport> transport;
  std::shared_ptr<RegistryCache> registry;
  std::shared_ptr<Selector> selector;
  std::shared_ptr<Broker> broker;
  boost::asio::any_io_executor executor;
  ClientFunction client_chain;
  CallFunction call_chain;
  ClientStreamFunction stream_chain;
  PublishFunction publish_chain;
  // No client wrapper configured: async_call starts the logical call itself, which then owns
  // the request (one allocation instead of three).
  bool direct = false;

  std::atomic<std::uint64_t> calls{0}, attempts{0}, retries{0}, failures{0}, streams{0};
  std::atomic<std::uint64_t> retries_over_budget{0};
  std::atomic<std::uint64_t> published{0}, publish_failures{0};
  // The retry budget's balance in thousandths of a retry, from 0 to the reserve.
  std::atomic<std::int64_t> retry_tokens{0};

  std::int64_t retry_token_cap() const {
    return std::int64_t{1000} * std::max(options.retry_budget_reserve, 0);
  }
  // A first attempt's share of a retry. A full bucket (the healthy case) costs one load.
  void deposit_retry_budget() {
    const std::int64_t share = std::int64_t{10} * std::clamp(options.retry_budget_percent, 0, 100);
    const std::int64_t cap = retry_token_cap();
    std::int64_t tokens = retry_tokens.load(std::memory_order_relaxed);
    for (;;) {
      std::int64_t next = std::min(tokens + share, cap);
      if (next <= tokens ||
          retry_tokens.compare_exchange_weak(tokens, next, std::memory_order_relaxed))
        return;
    }
  }
  bool withdraw_retry_budget() {
    std::int64_t tokens = retry_tokens.load(std::memory_order_relaxed);
    while (tokens >= 1000) {
      if (retry_tokens.compare_exchange_weak(tokens, tokens - 1000, std::memory_order_relaxed))
        return true;
    }
    return false;
  }

  bool retryable(std::int32_t code) const {
    return std::find(options.retry_on.begin(), options.retry_on.end(), code) !=
           options.retry_on.end();
  }
};

namespace {

// One logical call: looks the service up once, then makes attempts until one succeeds, the
// error is not retryable, attempts run out, the deadline passes or the call is cancelled.
//
// Clock reads are shared where they are nanoseconds apart: `now` passed to start() serves the
// registry's freshness check, the first attempt's deadline check and its latency start.
//
// The stages (lookup, attempts, backoff) run one after another on whichever thread completed
// the previous one; only cancellation comes from elsewhere, and `finished_` makes the first
// of it and the normal end the one that completes `done_`.
class LogicalCall : public std::enable_shared_from_this<LogicalCall> {
 public:
  // The call owns its request (no client wrapper): one allocation holds both.
  LogicalCall(std::shared_ptr<Client::State> state, Request&& request, const CallOptions& options,
              ResponseHandler done)
      : state_(std::move(state)),
        owned_request_(std::move(request)),
        request_(&owned_request_),
        address_(options.address),
        done_(std::move(done)) {
    init(options);
  }

  // Shares the request the client wrappers passed down.
  LogicalCall(std::shared_ptr<Client::State> state, RequestPtr request, const CallOptions& options,
              ResponseHandler done)
      : state_(std::move(state)),
        shared_request_(std::move(request)),
        request_(shared_request_.get()),
        address_(options.address),
        done_(std::move(done)) {
    init(options);
  }

  void start(Clock::time_point now) {
    // Nothing to do for a context that never had cancellation (the common case).
    if (auto cancellation = request_->context.existing_cancellation()) {
      if (cancellation->cancelled()) {
        finish_later(cancelled());
        return;
      }
      cancellation_ = std::move(cancellation);
      std::weak_ptr<LogicalCall> weak = weak_from_this();
      cancel_id_ = cancellation_->on_cancel([weak] {
        if (auto self = weak.lock()) self->finish_later(self->cancelled());
      });
    }
    if (!address_.empty()) {
      direct_node_.id = address_;
      direct_node_.address = address_;
      nodes_ = std::span<const Node>(&direct_node_, 1);
      attempt(now);
      return;
    }
    // A cache hit needs no callback (and no allocation for one).
    if (auto snapshot = state_->registry->cached_service(request_->service, now)) {
      on_lookup(std::move(snapshot), std::nullopt, now);
      return;
    }
    state_->registry->async_get_service(
        request_->service,
        [self = shared_from_this()](ServiceSnapshot snapshot, std::optional<Error> error) {
          self->on_lookup(std::move(snapshot), std::move(error), Clock::now());
        });
  }

 private:
  void init(const CallOptions& options) {
    int retries = options.retries >= 0 ? options.retries : state_->options.retries;
    max_attempts_ = 1 + std::max(0, retries);
  }

  bool finished() const noexcept { return finished_.load(std::memory_order_acquire); }

  Response cancelled() const { return Response::failure(cancelled_error(state_->options.id)); }

  void on_lookup(ServiceSnapshot snapshot, std::optional<Error> error, Clock::time_point now) {
    if (finished()) return;
    if (error) {
      finish(Response::failure(
          Error(state_->options.id, ErrorCode::unavailable,
                "cannot look up service '" + request_->service + "': " + error->detail)));
      return;
    }
    snapshot_ = std::move(snapshot);
    // The common case, one version, is read in place; several versions are flattened once.
    if (snapshot_->size() == 1) {
      nodes_ = (*snapshot_)[0].nodes;
    } else {
      for (const auto& service : *snapshot_)
        flattened_.insert(flattened_.end(), service.nodes.begin(), service.nodes.end());
      nodes_ = flattened_;
    }
    if (nodes_.empty()) {
      finish(Response::failure(Error(state_->options.id, ErrorCode::unavailable,
                                     "service '" + request_->service + "' has no nodes")));
      return;
    }
    attempt(now);
  }

  void attempt(Clock::time_point now) {
    if (finished()) return;  // cancelled while backing off
    ++attempt_;
    Request& request = *request_;
    if (request.context.has_deadline() && now >= request.context.deadline()) {
      finish(Response::failure(
          Error(state_->options.id, ErrorCode::timeout,
                "deadline passed calling " + request.service + "." + request.endpoint + " after " +
                    std::to_string(attempt_ - 1) + " attempt(s)" +
                    (last_error_ ? "; last error: " + last_error_->message() : std::string()))));
      return;
    }
    state_->attempts.fetch_add(1, std::memory_order_relaxed);
    if (attempt_ == 1) state_->deposit_retry_budget();
    std::size_t index =
        state_->selector->select_node(request.service, nodes_, request.context, attempt_);
    if (index >= nodes_.size()) index = 0;  // a misbehaving selector must not crash the call
    attempt_started_ = now;
    const Node& node = nodes_[index];
    auto self = shared_from_this();
    // A share of the request for the attempt: the wrappers' own, or one of this call.
    RequestPtr shared = shared_request_ ? shared_request_ : RequestPtr(self, &owned_request_);
    state_->call_chain(shared, Attempt{node, attempt_},
                       [self = std::move(self), index](Response&& response) {
                         self->on_attempt(index, std::move(response));
                       });
  }

  void on_attempt(std::size_t index, Response&& response) {
    Outcome outcome;
    outcome.latency = Clock::now() - attempt_started_;
    if (response.error) {
      outcome.code = response.error->code;
      outcome.ok = !(outcome.code >= 500 || outcome.code == 408);
    }
    state_->selector->report(request_->service, nodes_[index], outcome);

    if (response.error && state_->retryable(response.error->code) && attempt_ < max_attempts_ &&
        !request_->context.expired() && !finished()) {
      if (!state_->withdraw_retry_budget()) {
        // Retrying now would multiply an outage: the call ends with this error.
        state_->retries_over_budget.fetch_add(1, std::memory_order_relaxed);
        finish(std::move(response));
        return;
      }
      last_error_ = response.error;
      state_->retries.fetch_add(1, std::memory_order_relaxed);
      auto delay = state_->options.backoff * (1LL << std::min(attempt_ - 1, 20));
      delay = std::min<std::chrono::milliseconds>(delay, state_->options.max_backoff);
      auto remaining =
          std::chrono::duration_cast<std::chrono::milliseconds>(request_->context.remaining());
      if (delay >= remaining) delay = remaining / 2;  // leave the last attempt some time
      // Made on the first retry: creating an Asio timer looks its service up under a mutex,
      // a cost most calls would pay for nothing.
      if (!backoff_timer_) backoff_timer_.emplace(state_->executor);
      backoff_timer_->expires_after(delay);
      backoff_timer_->async_wait(
          [self = shared_from_this()](boost::system::error_code) { self->attempt(Clock::now()); });
      return;
    }
    finish(std::move(response));
  }

  // Cancellation arrives on the cancelling thread; the call completes on the executor.
  void finish_later(Response&& response) {
    if (finished()) return;
    boost::asio::post(state_->executor,
                      [self = shared_from_this(), response = std::move(response)]() mutable {
                        self->finish(std::move(response));
                      });
  }

  void finish(Response&& response) {
    if (finished_.exchange(true, std::memory_order_acq_rel)) return;
    if (cancellation_) cancellation_->forget(cancel_id_);
    if (response.error) state_->failures.fetch_add(1, std::memory_order_relaxed);
    ResponseHandler done = std::move(done_);
    done(std::move(response));
  }

  std::shared_ptr<Client::State> state_;
  Request owned_request_;      // the request, when the call owns it
  RequestPtr shared_request_;  // or the client wrappers' share of it
  Request* request_;           // whichever of the two
  std::string address_;
  ResponseHandler done_;
  std::atomic<bool> finished_{false};
  std::shared_ptr<CancellationState> cancellation_;  // set when the context has one
  std::atomic<std::uint64_t> cancel_id_{0};
  std::optional<boost::asio::steady_timer> backoff_timer_;
  ServiceSnapshot snapshot_;
  std::vector<Node> flattened_;
  Node direct_node_;
  std::span<const Node> nodes_;
  int attempt_ = 0;
  int max_attempts_ = 1;
  Clock::time_point attempt_started_;
  std::optional<Error> last_error_;
};

// Opening one stream: looks the service up, picks a node, asks the transport to open the
// stream there, and on a retryable failure (nothing was sent) tries another node after a
// backoff, within the attempts, the retry budget and the deadline. Stages run one after
// another, so no lock is needed; `done_` runs once, never inside async_open_stream.
class StreamOpener : public std::enable_shared_from_this<StreamOpener> {
 public:
  StreamOpener(std::shared_ptr<Client::State> state, RequestPtr head, const CallOptions& options,
               OpenStreamHandler done)
      : state_(std::move(state)),
        head_(std::move(head)),
        address_(options.address),
        done_(std::move(done)) {
    int retries = options.retries >= 0 ? options.retries : state_->options.retries;
    max_attempts_ = 1 + std::max(0, retries);
  }

  void start() {
    if (!address_.empty()) {
      direct_node_.id = address_;
      direct_node_.address = address_;
      nodes_ = std::span<const Node>(&direct_node_, 1);
      attempt();
      return;
    }
    if (auto snapshot = state_->registry->cached_service(head_->service, Clock::now())) {
      on_lookup(std::move(snapshot), std::nullopt);
      return;
    }
    state_->registry->async_get_service(
        head_->service,
        [self = shared_from_this()](ServiceSnapshot snapshot, std::optional<Error> error) {
          self->on_lookup(std::move(snapshot), std::move(error));
        });
  }

 private:
  void on_lookup(ServiceSnapshot snapshot, std::optional<Error> error) {
    if (error) {
      fail(Error(state_->options.id, ErrorCode::unavailable,
                 "cannot look up service '" + head_->service + "': " + error->detail));
      return;
    }
    snapshot_ = std::move(snapshot);
    for (const auto& service : *snapshot_)
      flattened_.insert(flattened_.end(), service.nodes.begin(), service.nodes.end());
    nodes_ = flattened_;
    if (nodes_.empty()) {
      fail(Error(state_->options.id, ErrorCode::unavailable,
                 "service '" + head_->service + "' has no nodes"));
      return;
    }
    attempt();
  }

  void attempt() {
    ++attempt_;
    Context& context = head_->context;
    if (context.cancelled()) {
      fail(cancelled_error(state_->options.id, "stream cancelled"));
      return;
    }
    if (context.expired()) {
      fail(Error(state_->options.id, ErrorCode::timeout,
                 "deadline passed opening stream " + head_->service + "." + head_->endpoint +
                     " after " + std::to_string(attempt_ - 1) + " attempt(s)" +
                     (last_error_ ? "; last error: " + last_error_->message() : std::string())));
      return;
    }
    state_->attempts.fetch_add(1, std::memory_order_relaxed);
    if (attempt_ == 1) state_->deposit_retry_budget();
    std::size_t index = state_->selector->select_node(head_->service, nodes_, context, attempt_);
    if (index >= nodes_.size()) index = 0;
    started_ = Clock::now();
    if (!state_->transport) {
      fail(Error("micro.client", ErrorCode::unavailable, "the client has no transport"));
      return;
    }
    // A transport may complete inline (the default open_stream's 501): then the completion
    // is posted, so that done_ never runs inside async_open_stream.
    auto self = shared_from_this();
    auto inside = std::make_shared<std::atomic<bool>>(true);
    state_->transport->open_stream(
        nodes_[index].address, head_,
        [self, index, inside](MessageStreamPtr stream, std::optional<Error> error) mutable {
          if (inside->load(std::memory_order_acquire)) {
            boost::asio::post(self->state_->executor, [self, index, stream = std::move(stream),
                                                       error = std::move(error)]() mutable {
              self->on_opened(index, std::move(stream), std::move(error));
            });
            return;
          }
          self->on_opened(index, std::move(stream), std::move(error));
        });
    inside->store(false, std::memory_order_release);
  }

  void on_opened(std::size_t index, MessageStreamPtr stream, std::optional<Error> error) {
    Outcome outcome;
    outcome.latency = Clock::now() - started_;
    if (error) {
      outcome.code = error->code;
      outcome.ok = !(outcome.code >= 500 || outcome.code == 408);
    }
    state_->selector->report(head_->service, nodes_[index], outcome);
    if (!error) {
      OpenStreamHandler done = std::move(done_);
      done(std::move(stream), std::nullopt);
      return;
    }
    if (state_->retryable(error->code) && attempt_ < max_attempts_ && !head_->context.expired() &&
        !head_->context.cancelled()) {
      if (!state_->withdraw_retry_budget()) {
        state_->retries_over_budget.fetch_add(1, std::memory_order_relaxed);
        fail(std::move(*error));
        return;
      }
      last_error_ = error;
      state_->retries.fetch_add(1, std::memory_order_relaxed);
      auto delay = state_->options.backoff * (1LL << std::min(attempt_ - 1, 20));
      delay = std::min<std::chrono::milliseconds>(delay, state_->options.max_backoff);
      if (head_->context.has_deadline()) {
        auto remaining =
            std::chrono::duration_cast<std::chrono::milliseconds>(head_->context.remaining());
        if (delay >= remaining) delay = remaining / 2;
      }
      if (!backoff_timer_) backoff_timer_.emplace(state_->executor);
      backoff_timer_->expires_after(delay);
      backoff_timer_->async_wait(
          [self = shared_from_this()](boost::system::error_code) { self->attempt(); });
      return;
    }
    fail(std::move(*error));
  }

  void fail(Error error) {
    state_->failures.fetch_add(1, std::memory_order_relaxed);
    OpenStreamHandler done = std::move(done_);
    done(nullptr, std::move(error));
  }

  std::shared_ptr<Client::State> state_;
  RequestPtr head_;
  std::string address_;
  OpenStreamHandler done_;
  std::optional<boost::asio::steady_timer> backoff_timer_;
  ServiceSnapshot snapshot_;
  std::vector<Node> flattened_;
  Node direct_node_;
  std::span<const Node> nodes_;
  int attempt_ = 0;
  int max_attempts_ = 1;
  Clock::time_point started_;
  std::optional<Error> last_error_;
};

}  // namespace

Client::Client(ClientOptions options, std::shared_ptr<Transport> transport,
               std::shared_ptr<RegistryCache> registry, std::shared_ptr<Selector> selector,
               std::shared_ptr<Broker> broker, WrapperChains wrappers,
               boost::asio::any_io_executor executor)
    : state_(std::make_shared<State>()) {
  state_->options = std::move(options);
  state_->retry_tokens.store(state_->retry_token_cap(), std::memory_order_relaxed);
  state_->transport = std::move(transport);
  state_->registry = std::move(registry);
  state_->selector = std::move(selector);
  state_->broker = std::move(broker);
  state_->executor = std::move(executor);

  std::weak_ptr<State> weak = state_;
  // A named type for the innermost client function, so the constructor can tell whether any
  // client wrapper was put around it.
  struct StartLogicalCall {
    std::weak_ptr<State> weak;
    void operator()(const RequestPtr& request, const CallOptions& options,
                    ResponseHandler done) const {
      auto state = weak.lock();
      if (!state) {
        done(Response::failure(
            Error("micro.client", ErrorCode::unavailable, "the client was destroyed")));
        return;
      }
      std::make_shared<LogicalCall>(std::move(state), request, options, std::move(done))
          ->start(Clock::now());
    }
  };
  state_->call_chain = wrappers.wrap_call(
      [weak](const RequestPtr& request, const Attempt& attempt, ResponseHandler done) {
        auto state = weak.lock();
        if (!state || !state->transport) {
          done(Response::failure(
              Error("micro.client", ErrorCode::unavailable, "the client has no transport")));
          return;
        }
        state->transport->async_call(attempt.node.address, request, std::move(done));
      });
  state_->client_chain = wrappers.wrap_client(StartLogicalCall{weak});
  state_->stream_chain = wrappers.wrap_client_stream(
      [weak](const RequestPtr& head, const CallOptions& options, OpenStreamHandler done) {
        auto state = weak.lock();
        if (!state) {
          done(nullptr, Error("micro.client", ErrorCode::unavailable, "the client was destroyed"));
          return;
        }
        std::make_shared<StreamOpener>(std::move(state), head, options, std::move(done))->start();
      });
  state_->direct = state_->client_chain.target<StartLogicalCall>() != nullptr;
  state_->publish_chain = wrappers.wrap_publish([weak](Context& context, Message& message) {
    auto state = weak.lock();
    if (!state || !state->broker)
      throw Exception(Error("micro.client", ErrorCode::unavailable, "no broker to publish to"));
    // The context's metadata travels as headers, as Go-Micro does; explicit headers win.
    for (const auto& [key, value] : context.metadata())
      if (!message.headers.contains(key)) message.headers.set(key, value);
    if (!message.headers.contains("Micro-Topic")) message.headers.set("Micro-Topic", message.topic);
    try {
      state->broker->publish(message);
    } catch (...) {
      state->publish_failures.fetch_add(1, std::memory_order_relaxed);
      throw;
    }
    state->published.fetch_add(1, std::memory_order_relaxed);
  });
}

Client::~Client() = default;

void Client::async_call(Request request, const CallOptions& options, ResponseHandler done) {
  state_->calls.fetch_add(1, std::memory_order_relaxed);
  auto timeout = options.timeout.count() > 0 ? options.timeout : state_->options.timeout;
  if (request.content_type.empty()) request.content_type = state_->options.content_type;
  if (state_->direct) {
    // One clock read for the deadline and everything up to the first attempt.
    auto now = Clock::now();
    if (timeout.count() > 0 && now + timeout < request.context.deadline())
      request.context.set_deadline(now + timeout);
    std::make_shared<LogicalCall>(state_, std::move(request), options, std::move(done))->start(now);
    return;
  }
  if (timeout.count() > 0) request.context.set_timeout(timeout);
  // The client wrappers and then the logical call share the request.
  state_->client_chain(std::make_shared<Request>(std::move(request)), options, std::move(done));
}

Response Client::call(Request request, const CallOptions& options) {
  std::promise<Response> promise;
  auto future = promise.get_future();
  async_call(std::move(request), options,
             [&promise](Response&& response) { promise.set_value(std::move(response)); });
  Response response = future.get();
  if (response.error) throw Exception(*response.error);
  return response;
}

void Client::async_open_stream(Request head, const CallOptions& options, OpenStreamHandler done) {
  state_->streams.fetch_add(1, std::memory_order_relaxed);
  if (head.content_type.empty()) head.content_type = state_->options.content_type;
  // Only an explicit timeout bounds a stream; the default one is for unary calls.
  if (options.timeout.count() > 0) head.context.set_timeout(options.timeout);
  state_->stream_chain(std::make_shared<Request>(std::move(head)), options, std::move(done));
}

Stream Client::open_stream(std::string service, std::string endpoint, const CallOptions& options,
                           Context context) {
  Request head;
  head.service = std::move(service);
  head.endpoint = std::move(endpoint);
  head.context = std::move(context);
  std::promise<std::pair<MessageStreamPtr, std::optional<Error>>> promise;
  auto future = promise.get_future();
  async_open_stream(std::move(head), options,
                    [&promise](MessageStreamPtr stream, std::optional<Error> error) {
                      promise.set_value({std::move(stream), std::move(error)});
                    });
  auto [stream, error] = future.get();
  if (error) throw Exception(std::move(*error));
  return Stream(std::move(stream), state_->executor);
}

void Client::publish(Context& context, Message message) {
  state_->publish_chain(context, message);
}

const ClientOptions& Client::options() const noexcept {
  return state_->options;
}

ClientStatistics Client::statistics() const {
  ClientStatistics statistics;
  statistics.calls = state_->calls.load(std::memory_order_relaxed);
  statistics.attempts = state_->attempts.load(std::memory_order_relaxed);
  statistics.retries = state_->retries.load(std::memory_order_relaxed);
  statistics.failures = state_->failures.load(std::memory_order_relaxed);
  statistics.retries_over_budget = state_->retries_over_budget.load(std::memory_order_relaxed);
  statistics.streams = state_->streams.load(std::memory_order_relaxed);
  statistics.published = state_->published.load(std::memory_order_relaxed);
  statistics.publish_failures = state_->publish_failures.load(std::memory_order_relaxed);
  return statistics;
}

boost::asio::any_io_executor Client::executor() const {
  return state_->executor;
}

}  // namespace micro
