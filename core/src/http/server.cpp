// http/server.cpp — the HTTP server's public face: binding an address, the accept loop (each
// connection on a strand of its own, max_connections enforced), closing, statistics, and the
// request's header helpers. One connection's work is in server_connection.cpp.
#include <charconv>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <micro/connection_table.hpp>
#include <micro/context.hpp>
#include <micro/error.hpp>
#include <micro/http_server.hpp>
#include <micro/log.hpp>

#include "server_connection.hpp"

namespace micro::http {

namespace detail {

namespace {

using tcp = asio::ip::tcp;
using ServerAcceptor = asio::basic_socket_acceptor<tcp, ServerStrand>;

constexpr const char* server_error_id = "micro.http";

// A malformed address is the caller's mistake (400); one that cannot be bound or resolved is
// the machine's (500).
Exception cannot_listen(std::string_view address, const std::string& why, int code = 500) {
  return Exception(Error(server_error_id, code,
                         "http: cannot listen on \"" + std::string(address) + "\": " + why));
}

// "host:port", "[v6]:port" or ":port" (every interface) as an endpoint; names are resolved.
tcp::endpoint parse_listen_address(const IoExecutor& executor, std::string_view address) {
  auto colon = address.rfind(':');
  if (colon == std::string_view::npos) throw cannot_listen(address, "expected host:port", 400);
  std::string_view host = address.substr(0, colon);
  std::string_view port_text = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  unsigned port = 0;
  auto [end, error] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || error != std::errc() || end != port_text.data() + port_text.size() ||
      port > 65535) {
    throw cannot_listen(
        address, "port \"" + std::string(port_text) + "\" is not a number from 0 to 65535", 400);
  }
  if (host.empty()) return tcp::endpoint(tcp::v4(), static_cast<unsigned short>(port));
  boost::system::error_code not_an_address;
  auto ip = asio::ip::make_address(std::string(host), not_an_address);
  if (!not_an_address) return tcp::endpoint(ip, static_cast<unsigned short>(port));
  tcp::resolver resolver(executor);
  boost::system::error_code failed;
  auto results = resolver.resolve(std::string(host), std::string(port_text), failed);
  if (failed || results.empty()) {
    throw cannot_listen(address, "cannot resolve \"" + std::string(host) +
                                     "\": " + (failed ? failed.message() : "no address"));
  }
  return results.begin()->endpoint();
}

}  // namespace

class AcceptLoop : public std::enable_shared_from_this<AcceptLoop> {
 public:
  explicit AcceptLoop(std::shared_ptr<ServerState> state)
      : state_(std::move(state)),
        strand_(asio::make_strand(state_->executor)),
        acceptor_(strand_),
        retry_timer_(strand_) {}

  // Opens, binds and listens; returns the bound address. Throws micro::Exception.
  std::string open(const tcp::endpoint& endpoint, std::string_view asked) {
    boost::system::error_code error;
    acceptor_.open(endpoint.protocol(), error);
    if (!error) acceptor_.set_option(tcp::acceptor::reuse_address(true), error);
    if (!error) acceptor_.bind(endpoint, error);
    if (!error) acceptor_.listen(asio::socket_base::max_listen_connections, error);
    tcp::endpoint bound;
    if (!error) bound = acceptor_.local_endpoint(error);
    if (error) throw cannot_listen(asked, error.message());
    return endpoint_text(bound);
  }

  void start() {
    asio::dispatch(strand_, [self = shared_from_this()] { self->accept(); });
  }

  // Any thread.
  void stop() {
    asio::dispatch(strand_, [self = shared_from_this()] {
      boost::system::error_code ignored;
      self->acceptor_.close(ignored);
      self->retry_timer_.cancel();
    });
  }

 private:
  void accept() {
    if (!acceptor_.is_open()) return;
    // Each connection gets its own strand: its reads, writes and answers never race.
    acceptor_.async_accept(
        asio::make_strand(state_->executor),
        [self = shared_from_this()](const boost::system::error_code& error, ServerSocket socket) {
          self->on_accept(error, std::move(socket));
        });
  }

  void on_accept(const boost::system::error_code& error, ServerSocket socket) {
    if (!acceptor_.is_open() || error == asio::error::operation_aborted) return;
    if (error) {
      // Out of descriptors and the like: back off briefly instead of spinning.
      log::warn("http server", "accept failed: " + error.message());
      retry_timer_.expires_after(std::chrono::milliseconds(50));
      retry_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
        if (!e) self->accept();
      });
      return;
    }
    if (state_->closed.load(std::memory_order_acquire)) return;
    state_->accepted.fetch_add(1, std::memory_order_relaxed);
    if (state_->open.load(std::memory_order_relaxed) >= state_->options.max_connections) {
      state_->connections_refused.fetch_add(1, std::memory_order_relaxed);
      boost::system::error_code ignored;
      socket.close(ignored);
    } else {
      state_->open.fetch_add(1, std::memory_order_relaxed);
      auto connection = std::make_shared<ServerConnection>(state_, std::move(socket));
      {
        std::lock_guard lock(state_->mutex);
        state_->connections.emplace(connection.get(), connection);
      }
      connection->start();
    }
    accept();
  }

  std::shared_ptr<ServerState> state_;
  ServerStrand strand_;
  ServerAcceptor acceptor_;
  ServerTimer retry_timer_;
};

}  // namespace detail

struct Server::State {
  std::shared_ptr<detail::ServerState> shared;
  std::shared_ptr<detail::AcceptLoop> loop;
  std::string address;
};

namespace {

detail::IoExecutor io_executor(const boost::asio::any_io_executor& executor) {
  if (auto* inner = executor ? executor.target<detail::IoExecutor>() : nullptr) return *inner;
  throw Exception(Error(detail::server_error_id, 500,
                        "http: the server needs an io_context's executor (the runtime's)"));
}

}  // namespace

Server::Server(boost::asio::any_io_executor executor, ServerOptions options, RequestHandler handler)
    : state_(std::make_shared<State>()) {
  state_->shared = std::make_shared<detail::ServerState>(io_executor(executor), std::move(options),
                                                         std::move(handler));
}

Server::~Server() {
  close();
}

void Server::listen(std::string_view address) {
  if (state_->loop) {
    throw Exception(Error(detail::server_error_id, 500,
                          "http: the server listens on " + state_->address + " already"));
  }
  auto endpoint = detail::parse_listen_address(state_->shared->executor, address);
  auto loop = std::make_shared<detail::AcceptLoop>(state_->shared);
  state_->address = loop->open(endpoint, address);
  state_->loop = std::move(loop);
  state_->loop->start();
}

std::string Server::address() const {
  return state_->address;
}

void Server::stop_accepting() {
  if (state_->loop) state_->loop->stop();
}

void Server::close() {
  auto& shared = *state_->shared;
  if (shared.closed.exchange(true, std::memory_order_acq_rel)) return;
  stop_accepting();
  std::vector<std::shared_ptr<detail::ServerConnection>> open;
  {
    std::lock_guard lock(shared.mutex);
    for (auto& [pointer, weak] : shared.connections) {
      if (auto connection = weak.lock()) open.push_back(std::move(connection));
    }
  }
  for (auto& connection : open) connection->close_gracefully();
}

ServerStatistics Server::statistics() const {
  const auto& shared = *state_->shared;
  ServerStatistics statistics;
  statistics.connections_accepted = shared.accepted.load(std::memory_order_relaxed);
  statistics.connections_open = shared.open.load(std::memory_order_relaxed);
  statistics.requests = shared.requests.load(std::memory_order_relaxed);
  statistics.refused = shared.refused.load(std::memory_order_relaxed);
  statistics.connections_refused = shared.connections_refused.load(std::memory_order_relaxed);
  return statistics;
}

// ---- ServerRequest ----------------------------------------------------------------------------

std::string ServerRequest::joined_header(std::string_view name) const {
  std::string joined;
  bool first = true;
  for (const auto& field : headers) {
    if (!iequals(field.name, name)) continue;
    if (!first) joined += ',';
    joined += field.value;
    first = false;
  }
  return joined;
}

std::size_t ServerRequest::count_header(std::string_view name) const {
  std::size_t count = 0;
  for (const auto& field : headers) count += iequals(field.name, name) ? 1 : 0;
  return count;
}

}  // namespace micro::http
