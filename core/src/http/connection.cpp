// http/connection.cpp — one client connection: resolve (bounded by a timer, the resolver has no
// expiry), connect, TLS handshake with SNI and host-name verification; and how a failed step
// becomes a micro::Exception.
#include "connection.hpp"

#include <poll.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core/error.hpp>

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <micro/error.hpp>

namespace micro::http::detail {

namespace {

std::string what_failed(Step step, const std::string& authority) {
  switch (step) {
    case Step::resolve:
      return "cannot resolve " + authority;
    case Step::connect:
      return "cannot connect to " + authority;
    case Step::handshake:
      return "TLS handshake with " + authority + " failed";
    case Step::write:
      return "cannot send the request to " + authority;
    case Step::read_head:
      return "no answer from " + authority;
    case Step::read_body:
      return "the response from " + authority + " broke off";
  }
  return "cannot talk to " + authority;
}

std::string while_doing(Step step, const std::string& authority) {
  switch (step) {
    case Step::resolve:
      return "resolving " + authority;
    case Step::connect:
    case Step::handshake:
      return "connecting to " + authority;
    case Step::write:
      return "sending the request to " + authority;
    case Step::read_head:
      return "waiting for the answer from " + authority;
    case Step::read_body:
      return "reading the response from " + authority;
  }
  return "talking to " + authority;
}

}  // namespace

std::exception_ptr failure(const std::string& description, Step step, const std::string& authority,
                           const beast::error_code& error, bool cancelled,
                           const std::string& extra) {
  if (cancelled) {
    return failure(description, 503, "cancelled while " + while_doing(step, authority));
  }
  if (error == beast::error::timeout) {
    return failure(description, 408, "deadline passed while " + while_doing(step, authority));
  }
  return failure(description, 503, what_failed(step, authority) + ": " + error.message() + extra);
}

std::exception_ptr failure(const std::string& description, int code, const std::string& detail) {
  return std::make_exception_ptr(Exception(Error(error_id, code, description + ": " + detail)));
}

Connection::Connection(asio::any_io_executor executor, Url origin,
                       std::shared_ptr<const TlsContext> tls)
    : strand_(asio::make_strand(std::move(executor))),
      origin_(std::move(origin)),
      tls_(std::move(tls)),
      plain_(strand_),
      resolver_(strand_),
      resolve_timer_(strand_) {
  if (origin_.https) {
    tls_stream_ = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(strand_, tls_->ssl);
  }
}

Connection::~Connection() {
  if (live_) live_->fetch_sub(1, std::memory_order_relaxed);
}

void Connection::count_in(std::shared_ptr<std::atomic<std::uint64_t>> live) {
  if (live_) return;  // counted once
  live_ = std::move(live);
  live_->fetch_add(1, std::memory_order_relaxed);
}

void Connection::expire_at(Clock::time_point deadline) {
  if (deadline == no_deadline) {
    tcp().expires_never();
  } else {
    tcp().expires_at(deadline);
  }
}

void Connection::async_connect(Clock::time_point deadline, std::string description,
                               std::function<bool()> cancelled, Done done) {
  // An address needs no resolver (and no thread for it).
  boost::system::error_code not_an_address;
  const auto address = asio::ip::make_address(origin_.host, not_an_address);
  if (!not_an_address) {
    const auto port = static_cast<unsigned short>(std::stoi(origin_.port));
    auto addresses = asio::ip::tcp::resolver::results_type::create(
        asio::ip::tcp::endpoint(address, port), origin_.host, origin_.port);
    return connect_to(addresses, deadline, std::move(description), std::move(cancelled),
                      std::move(done));
  }
  auto timed_out = std::make_shared<bool>(false);
  resolve_timer_.expires_at(deadline);
  resolve_timer_.async_wait([this, self = shared_from_this(), timed_out](beast::error_code error) {
    if (error) return;  // the resolver finished first
    *timed_out = true;
    resolver_.cancel();
  });
  resolver_.async_resolve(
      origin_.host, origin_.port,
      [this, self = shared_from_this(), deadline, description = std::move(description),
       cancelled = std::move(cancelled), done = std::move(done),
       timed_out](beast::error_code error, asio::ip::tcp::resolver::results_type found) mutable {
        resolve_timer_.cancel();
        if (*timed_out) error = beast::error::timeout;
        if (error) {
          return done(failure(description, Step::resolve, origin_.authority(), error, cancelled()));
        }
        connect_to(found, deadline, std::move(description), std::move(cancelled), std::move(done));
      });
}

void Connection::connect_to(const asio::ip::tcp::resolver::results_type& addresses,
                            Clock::time_point deadline, std::string description,
                            std::function<bool()> cancelled, Done done) {
  expire_at(deadline);
  tcp().async_connect(
      addresses, [this, self = shared_from_this(), deadline, description = std::move(description),
                  cancelled = std::move(cancelled),
                  done = std::move(done)](beast::error_code error, const auto&) mutable {
        // A cancel() that came while there was no socket yet closed nothing: check it now.
        if (!error && cancelled()) error = asio::error::operation_aborted;
        if (error) {
          return done(failure(description, Step::connect, origin_.authority(), error, cancelled()));
        }
        open_ = true;
        tcp().socket().set_option(asio::ip::tcp::no_delay(true));
        if (record_) {
          beast::error_code ignored;
          record_->set_addresses(endpoint_text(tcp().socket().remote_endpoint(ignored)),
                                 endpoint_text(tcp().socket().local_endpoint(ignored)));
        }
        if (!tls_stream_) return done(nullptr);
        handshake(deadline, std::move(description), std::move(cancelled), std::move(done));
      });
}

void Connection::handshake(Clock::time_point deadline, std::string description,
                           std::function<bool()> cancelled, Done done) {
  SSL* session = tls_stream_->native_handle();
  // The certificate must name the host: an address as an IP SAN, a name as a DNS name (which
  // also goes out as SNI, so a server with several names picks the right certificate).
  X509_VERIFY_PARAM* parameters = SSL_get0_param(session);
  boost::system::error_code not_an_address;
  asio::ip::make_address(origin_.host, not_an_address);
  if (!not_an_address) {
    X509_VERIFY_PARAM_set1_ip_asc(parameters, origin_.host.c_str());
  } else {
    X509_VERIFY_PARAM_set_hostflags(parameters, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    X509_VERIFY_PARAM_set1_host(parameters, origin_.host.c_str(), 0);
    SSL_set_tlsext_host_name(session, origin_.host.c_str());
  }
  expire_at(deadline);
  tls_stream_->async_handshake(
      asio::ssl::stream_base::client,
      [this, self = shared_from_this(), session, description = std::move(description),
       cancelled = std::move(cancelled), done = std::move(done)](beast::error_code error) {
        if (!error) return done(nullptr);
        std::string verdict;
        const long verification = SSL_get_verify_result(session);
        if (verification != X509_V_OK) {
          verdict = std::string(": server certificate rejected: ") +
                    X509_verify_cert_error_string(verification);
        }
        done(failure(description, Step::handshake, origin_.authority(), error, cancelled(),
                     verdict));
      });
}

bool Connection::usable() {
  if (!open_ || buffer_.size() != 0) return false;
  pollfd descriptor{tcp().socket().native_handle(), POLLIN | POLLRDHUP, 0};
  return ::poll(&descriptor, 1, 0) == 0;
}

void Connection::close() {
  open_ = false;
  resolver_.cancel();
  resolve_timer_.cancel();
  beast::error_code ignored;
  tcp().socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  tcp().close();
}

}  // namespace micro::http::detail
