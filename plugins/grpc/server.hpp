// plugins/grpc/server.hpp — the grpc transport's server side: a listener accepting h2c
// connections and turning each gRPC call into a ServerCall (unary) or StreamCall.
#pragma once

#include <memory>
#include <string_view>

#include <micro/transport.hpp>

#include "wire.hpp"

namespace micro::grpc {

std::unique_ptr<Listener> make_listener(const asio::any_io_executor& executor,
                                        const Settings& settings, std::string_view address,
                                        CallHandler handler);

}  // namespace micro::grpc
