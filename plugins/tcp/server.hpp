// plugins/tcp/server.hpp — the serving side of the tcp transport: an accept loop, one
// framed connection per accepted socket, and the Listener handed to the core.
#pragma once

#include <memory>
#include <string_view>

#include <micro/transport.hpp>

#include "common.hpp"

namespace micro::tcp {

// Binds `address` and starts accepting. Throws micro::Exception (400 for an unusable
// address, 500 when the socket cannot be bound).
std::unique_ptr<Listener> make_listener(asio::any_io_executor executor, const Settings& settings,
                                        std::string_view address, CallHandler handler);

}  // namespace micro::tcp
