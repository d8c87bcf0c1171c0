// plugins/http/server.hpp — the serving side of the http transport: Go-Micro-format requests
// from micro::http::Server turned into ServerCalls, and their answers written back.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include <micro/http_server.hpp>
#include <micro/transport.hpp>

#include "settings.hpp"

namespace micro::http_transport {

// The transport's open listeners, so it can sum their connections (any thread).
class ListenerSet {
 public:
  std::uint64_t connections_open() const;

 private:
  friend class HttpListener;
  mutable std::mutex mutex_;
  std::vector<const http::Server*> servers_;
};

// Listens on "host:port", counted in `listeners` while open. Throws micro::Exception naming
// the address.
std::unique_ptr<Listener> make_listener(boost::asio::any_io_executor executor,
                                        const Settings& settings, std::string_view address,
                                        CallHandler handler,
                                        std::shared_ptr<ListenerSet> listeners);

}  // namespace micro::http_transport
