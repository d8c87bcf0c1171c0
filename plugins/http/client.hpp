// plugins/http/client.hpp — the calling side of the http transport: each call one POST / on
// micro::http::Client's pool (several kept-alive connections per node, as many calls in flight
// as there are connections).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string_view>

#include <boost/asio/any_io_executor.hpp>

#include <micro/http_client.hpp>
#include <micro/transport.hpp>

#include "settings.hpp"

namespace micro::http_transport {

class Caller {
 public:
  Caller(boost::asio::any_io_executor executor, Settings settings);
  ~Caller();

  // Transport::async_call.
  void async_call(std::string_view address, std::shared_ptr<const Request> request,
                  ResponseHandler done);
  // Closes the pooled connections; calls still pending complete with 503. Calls made after
  // start a new pool.
  void close();
  // Connections of the current pool alive now.
  std::uint64_t connections_open() const;

 private:
  // One pool of connections, and whether it was closed (so its calls' 503s say so).
  struct Pool {
    std::shared_ptr<http::Client> client;
    std::shared_ptr<std::atomic<bool>> closed;
  };
  Pool make_pool() const;
  Pool current() const;
  // Completes `done` with `error` on the executor (never inside async_call).
  void fail(ResponseHandler done, Error error);

  boost::asio::any_io_executor executor_;
  const Settings settings_;
  std::atomic<std::uint64_t> next_id_;
  mutable std::mutex mutex_;  // guards pool_
  Pool pool_;
};

}  // namespace micro::http_transport
