// plugins/http/client.cpp — one call as Go-Micro's RPC over HTTP: the request's head from the
// call (Micro-* headers, Timeout, metadata), the answer or Micro-Error back into a Response,
// cancellation that drops the connection (so the server abandons the call), and failures of the
// HTTP client as 408/503 naming the node.
#include "client.hpp"

#include <charconv>

#include <boost/asio/post.hpp>

#include <micro/log.hpp>
#include <micro/random.hpp>

#include "wire.hpp"

namespace micro::http_transport {

namespace asio = boost::asio;

namespace {

// The node's address as the URL of its calls: "http://host:port/". nullopt when `address` is not
// host:port.
std::optional<http::Url> node_url(std::string_view address) {
  auto colon = address.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  std::string_view host = address.substr(0, colon);
  std::string_view port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  unsigned number = 0;
  auto [end, error] = std::from_chars(port.data(), port.data() + port.size(), number);
  if (port.empty() || error != std::errc() || end != port.data() + port.size() || number == 0 ||
      number > 65535) {
    return std::nullopt;
  }
  http::Url url;
  url.host = std::string(host);
  url.port = std::string(port);
  url.target = "/";
  return url;
}

// Go-Micro's head for `request`; nullopt with `problem` set when metadata cannot travel as
// headers.
bool fill_headers(const Request& request, std::uint64_t id, http::Fields& headers,
                  std::string& problem) {
  const auto& metadata = request.context.metadata();
  headers.reserve(7 + metadata.size());
  if (!request.content_type.empty()) {
    headers.push_back({"Content-Type", request.content_type});
    headers.push_back({"Accept", request.content_type});
  }
  char digits[24];
  auto end = std::to_chars(digits, digits + sizeof digits, id).ptr;
  headers.push_back({std::string(header_id), std::string(digits, end)});
  headers.push_back({std::string(header_service), request.service});
  headers.push_back({std::string(header_endpoint), request.endpoint});
  headers.push_back({std::string(header_method), request.endpoint});  // for older Go-Micro
  if (request.context.has_deadline()) {
    headers.push_back({std::string(header_timeout),
                       format_timeout(request.context.deadline() - Context::Clock::now())});
  }
  for (const auto& [key, value] : metadata) {
    // The call's own headers win over metadata of the same name.
    if (is_call_header(key)) continue;
    if (!is_header_name(key)) {
      problem = "metadata key \"" + key + "\" cannot be sent as an HTTP header name";
      return false;
    }
    if (!is_header_value(value)) {
      problem = "metadata value of \"" + key +
                "\" cannot be sent as an HTTP header value (it holds a control character, or "
                "starts or ends with white space)";
      return false;
    }
    headers.push_back({key, value});
  }
  return true;
}

Response decode(http::Response&& answer, std::string_view address) {
  auto error_json = micro_header(answer.headers, header_error);
  if (answer.status == 200 && error_json.empty()) {
    Response response;
    response.content_type = std::string(answer.header("Content-Type"));
    response.body = std::move(answer.body);
    for (const auto& field : answer.headers) {
      if (is_call_header(field.name) || iequals(field.name, "Server") ||
          iequals(field.name, "Date"))
        continue;
      response.metadata.set(field.name, field.value);
    }
    return response;
  }
  if (!error_json.empty()) return Response::failure(Error::from_json(error_json));
  // Not a Go-Micro answer: say what came back.
  std::string detail = "http: " + std::string(address) + " answered " +
                       std::to_string(answer.status) + " " + answer.reason;
  if (!answer.body.empty()) detail += ": " + answer.body.substr(0, 200);
  return Response::failure(Error(client_error_id, answer.status, std::move(detail)));
}

// One call on its way: completes its handler once, whichever comes first of the answer and a
// cancellation.
struct PendingCall {
  PendingCall(ResponseHandler done_, std::string address_, asio::any_io_executor executor_)
      : done(std::move(done_)), address(std::move(address_)), executor(std::move(executor_)) {}

  // `elsewhere`: called on a thread that is not the executor's (a cancel()).
  void finish(Response&& response, bool elsewhere = false) {
    if (finished.exchange(true, std::memory_order_acq_rel)) return;
    if (cancellation) cancellation->forget(cancel_id.load(std::memory_order_acquire));
    if (elsewhere || starting.load(std::memory_order_acquire)) {
      // On the executor, never inside async_call.
      asio::post(executor, [done = std::move(done), response = std::move(response)]() mutable {
        done(std::move(response));
      });
      return;
    }
    done(std::move(response));
  }

  ResponseHandler done;
  const std::string address;
  asio::any_io_executor executor;
  std::atomic<bool> finished{false};
  std::atomic<bool> starting{true};  // async_call has not returned yet
  std::shared_ptr<CancellationState> cancellation;
  std::atomic<std::uint64_t> cancel_id{0};
  std::shared_ptr<http::Cancellation> drop;  // ends the exchange (closes its connection)
};

Error failure_of(std::exception_ptr failure, std::string_view address, bool transport_closed) {
  try {
    std::rethrow_exception(failure);
  } catch (const Exception& e) {
    Error error = e.error();
    error.id = client_error_id;
    if (transport_closed && error.code == 503) {
      error.detail =
          "http: the transport was closed with a call to " + std::string(address) + " pending";
    } else {
      error.detail = "http: " + error.detail;
    }
    return error;
  } catch (const std::exception& e) {
    return unavailable(client_error_id, "http: calling " + std::string(address) + ": " + e.what());
  }
}

}  // namespace

Caller::Caller(asio::any_io_executor executor, Settings settings)
    : executor_(std::move(executor)),
      settings_(settings),
      // Ids need only differ between the calls of one connection; a random start keeps two
      // processes' ids apart in logs.
      next_id_(thread_random() >> 16),
      pool_(make_pool()) {}

Caller::~Caller() {
  close();
}

Caller::Pool Caller::make_pool() const {
  http::ClientOptions options;
  options.max_idle_per_origin = settings_.pool_size;
  options.user_agent = "micro-cpp";
  options.connection_table_name = "http";  // its pooled connections as /connections rows
  return {std::make_shared<http::Client>(executor_, options),
          std::make_shared<std::atomic<bool>>(false)};
}

std::uint64_t Caller::connections_open() const {
  return current().client->statistics().connections_open;
}

Caller::Pool Caller::current() const {
  std::lock_guard lock(mutex_);
  return pool_;
}

void Caller::close() {
  Pool closed;
  {
    std::lock_guard lock(mutex_);
    closed = std::exchange(pool_, make_pool());
  }
  closed.closed->store(true, std::memory_order_release);
  // The last share of the old client goes here (or with the call holding it): its exchanges end
  // with 503.
}

void Caller::fail(ResponseHandler done, Error error) {
  asio::post(executor_, [done = std::move(done), error = std::move(error)]() mutable {
    done(Response::failure(std::move(error)));
  });
}

void Caller::async_call(std::string_view address, std::shared_ptr<const Request> shared,
                        ResponseHandler done) {
  const Request& request = *shared;
  if (request.context.cancelled()) return fail(std::move(done), cancelled_error(client_error_id));
  if (request.context.expired()) {
    return fail(std::move(done),
                timeout_error(client_error_id, "http: deadline passed before the call to " +
                                                   std::string(address) + " was sent"));
  }
  if (request.body.size() > settings_.max_body) {
    return fail(std::move(done),
                Error(client_error_id, 413,
                      "http: request body of " + std::to_string(request.body.size()) +
                          " bytes exceeds max_body " + std::to_string(settings_.max_body) +
                          "; not sent to " + std::string(address)));
  }
  auto url = node_url(address);
  if (!url) {
    return fail(std::move(done),
                bad_request(client_error_id, "http: node address \"" + std::string(address) +
                                                 "\" is not host:port"));
  }
  http::Request outgoing;
  outgoing.method = "POST";
  outgoing.url = std::move(*url);
  std::string problem;
  if (!fill_headers(request, next_id_.fetch_add(1, std::memory_order_relaxed), outgoing.headers,
                    problem)) {
    return fail(
        std::move(done),
        bad_request(client_error_id, "http: " + problem + "; not sent to " + std::string(address)));
  }
  outgoing.body = request.body;

  http::RequestOptions options;
  options.deadline = request.context.deadline();
  options.connect_timeout = settings_.connect_timeout;
  options.body_limit = settings_.max_body;

  auto call = std::make_shared<PendingCall>(std::move(done), std::string(address), executor_);
  if (auto cancellation = request.context.existing_cancellation()) {
    // Cancelling drops the exchange: its connection closes, so the server abandons the call.
    call->drop = std::make_shared<http::Cancellation>();
    options.cancellation = call->drop;
    call->cancellation = cancellation;
    call->cancel_id.store(cancellation->on_cancel([weak = std::weak_ptr<PendingCall>(call)] {
      if (auto pending = weak.lock()) {
        // Finished first: the exchange's own end (a 503 "cancelled") must not overtake it.
        pending->finish(Response::failure(cancelled_error(client_error_id)), true);
        pending->drop->cancel();
      }
    }),
                          std::memory_order_release);
  }
  shared.reset();  // the request is encoded: the caller may change it for its next attempt

  auto pool = current();
  pool.client->async_request(
      std::move(outgoing), options,
      [call, closed = pool.closed](std::exception_ptr failure, http::Response answer) {
        if (failure) {
          return call->finish(Response::failure(
              failure_of(failure, call->address, closed->load(std::memory_order_acquire))));
        }
        call->finish(decode(std::move(answer), call->address));
      });
  call->starting.store(false, std::memory_order_release);
}

}  // namespace micro::http_transport
