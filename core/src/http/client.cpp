// http/client.cpp — the pool of kept-alive connections, opening an exchange (a pooled or new
// connection, the request written, a dead kept-alive connection replaced once), the round trip
// built on it, Cancellation and the blocking convenience.
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <micro/error.hpp>

#include "stream.hpp"

namespace micro::http {

namespace detail {

// ---- Pool --------------------------------------------------------------------------------------

Pool::Pool(asio::any_io_executor executor_, ClientOptions options_)
    : executor(std::move(executor_)), options(std::move(options_)) {}

std::shared_ptr<Connection> Pool::take(const Url& url) {
  std::lock_guard lock(mutex_);
  auto found = idle_.find(url.origin());
  if (found == idle_.end()) return nullptr;
  auto& connections = found->second;
  while (!connections.empty()) {
    auto connection = std::move(connections.back());
    connections.pop_back();
    if (connection->usable()) return connection;
    // Closed by the peer while idle (its keep-alive timeout): replaced by a new one.
    connection->close();
    ++stale_replaced;
  }
  return nullptr;
}

std::shared_ptr<Connection> Pool::make(const Url& url) {
  std::shared_ptr<const TlsContext> tls = options.tls;
  if (url.https && !tls) {
    std::lock_guard lock(mutex_);
    if (!system_tls_) system_tls_ = make_tls_context({});
    tls = system_tls_;
  }
  auto connection = std::make_shared<Connection>(executor, url, std::move(tls));
  connection->count_in(live);
  // Once per connection, under the table's lock; calls then touch only the record's atomics.
  if (!options.connection_table_name.empty())
    connection->report_to(
        connection_table().open(options.connection_table_name, ConnectionSide::client));
  return connection;
}

void Pool::give_back(std::shared_ptr<Connection> connection) {
  std::lock_guard lock(mutex_);
  auto& connections = idle_[connection->origin().origin()];
  if (closed_ || connections.size() >= options.max_idle_per_origin) {
    connection->close();
    return;
  }
  connections.push_back(std::move(connection));
}

void Pool::track(const std::shared_ptr<StreamState>& state) {
  std::lock_guard lock(mutex_);
  std::erase_if(exchanges_, [](const auto& exchange) { return exchange.expired(); });
  exchanges_.push_back(state);
}

void Pool::close_all() {
  std::vector<std::weak_ptr<StreamState>> exchanges;
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
    for (auto& [origin, connections] : idle_) {
      for (auto& connection : connections) connection->close();
    }
    idle_.clear();
    exchanges.swap(exchanges_);
  }
  for (auto& exchange : exchanges) {
    if (auto state = exchange.lock()) {
      asio::dispatch(state->strand, [state] { state->cancel(); });
    }
  }
}

namespace {

std::string describe(const Request& request) {
  return request.method + " " + request.url.text();
}

// The fields every request carries, then the caller's.
template <class Message>
void fill_head(Message& message, const Request& request, const ClientOptions& options) {
  message.method_string(request.method);
  message.target(request.url.target);
  message.version(11);
  message.set(http::field::host, request.url.authority());
  message.set(http::field::user_agent, options.user_agent);
  for (const auto& field : request.headers) message.set(field.name, field.value);
  message.keep_alive(true);
}

// Opening one exchange: a connection (pooled or new), then the request (or, duplex, its head).
class Opening : public std::enable_shared_from_this<Opening> {
 public:
  using Opened = std::function<void(std::exception_ptr, std::shared_ptr<StreamState>)>;

  Opening(std::shared_ptr<Pool> pool, Request request, RequestOptions options, bool duplex,
          Opened done)
      : pool_(std::move(pool)),
        request_(std::move(request)),
        options_(std::move(options)),
        duplex_(duplex),
        description_(describe(request_)),
        done_(std::move(done)) {}

  void start(bool allow_reuse) {
    std::shared_ptr<Connection> connection = allow_reuse ? pool_->take(request_.url) : nullptr;
    const bool reused = connection != nullptr;
    if (!connection) {
      try {
        connection = pool_->make(request_.url);
      } catch (...) {
        return done_(std::current_exception(), nullptr);
      }
    }
    state_ = std::make_shared<StreamState>(connection, pool_, description_, duplex_, reused,
                                           request_.method == "HEAD");
    pool_->track(state_);
    watch_cancellation();
    if (reused) {
      ++pool_->reused;
      return asio::dispatch(state_->strand, [self = shared_from_this()] { self->send(); });
    }
    ++pool_->opened;
    asio::dispatch(state_->strand, [self = shared_from_this()] { self->connect(); });
  }

 private:
  // On the strand, like everything done with the connection.
  void connect() {
    if (!state_->connection) return done_(state_->broken, nullptr);  // cancelled meanwhile
    auto deadline = options_.deadline;
    // The connect timeout bounds the connection, not the request: when it is what ran out,
    // the node could not be reached (503, worth trying elsewhere), unlike the request's own
    // deadline passing (408).
    bool connect_timeout_first = false;
    if (options_.connect_timeout.count() > 0 &&
        Clock::now() + options_.connect_timeout < deadline) {
      deadline = Clock::now() + options_.connect_timeout;
      connect_timeout_first = true;
    }
    state_->connection->async_connect(
        deadline, description_, [self = shared_from_this()] { return self->cancelled(); },
        [self = shared_from_this(), connect_timeout_first](std::exception_ptr error) {
          if (error && connect_timeout_first) error = self->connect_timed_out(error);
          if (error) return self->done_(self->state_->fail(error), nullptr);
          self->send();
        });
  }

  // A 408 from a connect bounded by connect_timeout, as the 503 it is.
  std::exception_ptr connect_timed_out(std::exception_ptr error) const {
    try {
      std::rethrow_exception(error);
    } catch (const Exception& e) {
      if (e.error().code != 408) return error;
      return std::make_exception_ptr(Exception(Error(
          e.error().id, 503,
          "cannot connect to " + request_.url.authority() + " within the connect timeout of " +
              std::to_string(options_.connect_timeout.count()) + " ms")));
    } catch (...) {
      return error;
    }
  }

  bool cancelled() const {
    return state_->cancelled || (options_.cancellation && options_.cancellation->cancelled());
  }

  // A Cancellation given with the request ends whichever attempt is under way (and the stream
  // that follows); it holds the attempt weakly, so it never touches a connection that went back
  // to the pool.
  void watch_cancellation() {
    if (!options_.cancellation) return;
    options_.cancellation->on_cancel([weak = std::weak_ptr<StreamState>(state_)] {
      if (auto state = weak.lock()) {
        asio::dispatch(state->strand, [state] { state->cancel(); });
      }
    });
  }

  // On the strand, connected.
  void send() {
    if (!state_->connection) return done_(state_->broken, nullptr);  // cancelled meanwhile
    if (cancelled()) return sent(asio::error::operation_aborted);
    auto& connection = *state_->connection;
    connection.expire_at(options_.deadline);
    state_->call_started();
    if (duplex_) {
      fill_head(head_, request_, pool_->options);
      head_.chunked(true);
      serializer_.emplace(head_);
      // Each write holds the connection, which a cancel() may drop meanwhile (see stream.cpp).
      connection.with_stream([&](auto& stream) {
        http::async_write_header(stream, *serializer_,
                                 [self = shared_from_this(), keep = state_->connection](
                                     beast::error_code error, std::size_t bytes) {
                                   self->state_->count_out(bytes);
                                   self->sent(error);
                                 });
      });
      return;
    }
    fill_head(whole_, request_, pool_->options);
    whole_.body() = std::move(request_.body);
    whole_.prepare_payload();
    connection.with_stream([&](auto& stream) {
      http::async_write(stream, whole_,
                        [self = shared_from_this(), keep = state_->connection](
                            beast::error_code error, std::size_t bytes) {
                          self->state_->count_out(bytes);
                          self->sent(error);
                        });
    });
  }

  void sent(beast::error_code error) {
    if (error) {
      const bool replace = state_->reused && !cancelled() && error != beast::error::timeout;
      if (replace) {
        // The kept-alive connection died between the idle check and the write: once more on a
        // new one (nothing was answered, so nothing was done twice).
        ++pool_->stale_replaced;
        state_->connection->close();
        if (!duplex_) request_.body = std::move(whole_.body());
        whole_ = {};
        return start(false);
      }
      return done_(state_->fail(Step::write, error), nullptr);
    }
    if (!duplex_) {
      state_->request_sent();
      return done_(nullptr, state_);
    }
    if (request_.body.empty()) return done_(nullptr, state_);
    // A first chunk given with the head.
    state_->write(std::move(request_.body), options_.deadline,
                  [self = shared_from_this()](std::exception_ptr error) {
                    self->done_(error, error ? nullptr : self->state_);
                  });
  }

  std::shared_ptr<Pool> pool_;
  Request request_;
  RequestOptions options_;
  const bool duplex_;
  const std::string description_;
  Opened done_;
  std::shared_ptr<StreamState> state_;  // the current attempt
  http::request<http::string_body> whole_;
  http::request<http::empty_body> head_;
  std::optional<http::request_serializer<http::empty_body>> serializer_;
};

// A round trip: an exchange opened, its head and body read; on a kept-alive connection that
// closes before answering anything, once more on a new connection.
class RoundTrip : public std::enable_shared_from_this<RoundTrip> {
 public:
  RoundTrip(std::shared_ptr<Pool> pool, Request request, RequestOptions options,
            Client::ResponseCallback done)
      : pool_(std::move(pool)),
        request_(std::move(request)),
        options_(std::move(options)),
        done_(std::move(done)) {}

  void start(bool allow_reuse) {
    auto opening = std::make_shared<Opening>(
        pool_, request_, options_, false,
        [self = shared_from_this()](std::exception_ptr error, std::shared_ptr<StreamState> state) {
          if (error) return self->done_(error, {});
          self->state_ = std::move(state);
          self->read_head();
        });
    opening->start(allow_reuse);
  }

 private:
  void read_head() {
    state_->read_head(options_.deadline,
                      [self = shared_from_this()](std::exception_ptr error, Response head) {
                        if (error) return self->head_failed(error);
                        self->response_ = std::move(head);
                        self->read_body();
                      });
  }

  void head_failed(std::exception_ptr error) {
    const bool replace = state_->reused && state_->nothing_received() && !state_->cancelled &&
                         state_->last_error != beast::error::timeout && !retried_;
    if (!replace) return done_(error, {});
    retried_ = true;
    ++pool_->stale_replaced;
    start(false);
  }

  void read_body() {
    state_->read_some(options_.deadline, [self = shared_from_this()](std::exception_ptr error,
                                                                     std::string piece) {
      if (error) return self->done_(error, {});
      if (piece.empty()) return self->done_(nullptr, std::move(self->response_));
      self->response_.body += piece;
      if (self->response_.body.size() > self->options_.body_limit) {
        self->state_->cancel();
        // 413 like every size refusal in micro-cpp: the client refused it, whatever the peer.
        return self->done_(failure(self->state_->description, 413,
                                   "the response body is longer than " +
                                       std::to_string(self->options_.body_limit) + " bytes"),
                           {});
      }
      self->read_body();
    });
  }

  std::shared_ptr<Pool> pool_;
  Request request_;  // kept for a second attempt
  RequestOptions options_;
  Client::ResponseCallback done_;
  std::shared_ptr<StreamState> state_;
  Response response_;
  bool retried_ = false;
};

}  // namespace

}  // namespace detail

// ---- Cancellation ------------------------------------------------------------------------------

void Cancellation::cancel() {
  std::vector<std::function<void()>> hooks;
  {
    std::lock_guard lock(mutex_);
    if (cancelled_) return;
    cancelled_ = true;
    hooks.swap(hooks_);
  }
  for (auto& hook : hooks) hook();
}

bool Cancellation::cancelled() const {
  std::lock_guard lock(mutex_);
  return cancelled_;
}

void Cancellation::on_cancel(std::function<void()> hook) {
  {
    std::lock_guard lock(mutex_);
    if (!cancelled_) return hooks_.push_back(std::move(hook));
  }
  hook();
}

// ---- Client ------------------------------------------------------------------------------------

Client::Client(boost::asio::any_io_executor executor, ClientOptions options)
    : executor_(executor),
      pool_(std::make_shared<detail::Pool>(std::move(executor), std::move(options))) {}

Client::~Client() {
  pool_->close_all();
}

ClientStatistics Client::statistics() const {
  return {pool_->opened.load(), pool_->reused.load(), pool_->stale_replaced.load(),
          pool_->live->load(std::memory_order_relaxed)};
}

void Client::request_erased(Request request, RequestOptions options, ResponseCallback done) {
  std::make_shared<detail::RoundTrip>(pool_, std::move(request), std::move(options),
                                      std::move(done))
      ->start(true);
}

void Client::open_erased(Request request, RequestOptions options, bool duplex,
                         StreamCallback done) {
  std::make_shared<detail::Opening>(
      pool_, std::move(request), std::move(options), duplex,
      [done = std::move(done)](std::exception_ptr error,
                               std::shared_ptr<detail::StreamState> state) {
        done(error, error ? nullptr : std::make_shared<Stream>(std::move(state)));
      })
      ->start(true);
}

// ---- BlockingClient ----------------------------------------------------------------------------

BlockingClient::BlockingClient(ClientOptions options)
    : work_(io_context_.get_executor()),
      client_(std::make_unique<Client>(io_context_.get_executor(), std::move(options))),
      thread_([this] { io_context_.run(); }) {}

BlockingClient::~BlockingClient() {
  // Cancels what is still going; the thread ends once every handler has run.
  client_.reset();
  work_.reset();
  thread_.join();
}

Response BlockingClient::request(Request request, const RequestOptions& options) {
  return client_->async_request(std::move(request), options, boost::asio::use_future).get();
}

std::shared_ptr<Stream> BlockingClient::open(Request request, const RequestOptions& options) {
  return client_->async_open(std::move(request), options, boost::asio::use_future).get();
}

std::shared_ptr<Stream> BlockingClient::open_duplex(Request request,
                                                    const RequestOptions& options) {
  return client_->async_open_duplex(std::move(request), options, boost::asio::use_future).get();
}

}  // namespace micro::http
