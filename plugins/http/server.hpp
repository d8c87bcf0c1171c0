// plugins/http/server.hpp — the serving side of the http transport: Go-Micro-format requests
// from micro::http::Server turned into ServerCalls, and their answers written back.
#pragma once

#include <memory>
#include <string_view>

#include <boost/asio/any_io_executor.hpp>

#include <micro/transport.hpp>

#include "settings.hpp"

namespace micro::http_transport {

// Listens on "host:port". Throws micro::Exception naming the address.
std::unique_ptr<Listener> make_listener(boost::asio::any_io_executor executor,
                                        const Settings& settings, std::string_view address,
                                        CallHandler handler);

}  // namespace micro::http_transport
