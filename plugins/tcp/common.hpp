// plugins/tcp/common.hpp — what the tcp transport's client and server sides share: the
// validated options, address parsing and formatting.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

namespace micro::tcp {

namespace asio = boost::asio;
// Concrete executor types, not any_io_executor: a socket or timer whose executor is a
// type-erased strand copies that strand to the heap on every async operation (the profile
// showed ~13 allocations per call from it); a strand over the io_context's own executor fits
// the erasure's small buffer and the I/O objects below never erase it at all.
using IoExecutor = asio::io_context::executor_type;
using Strand = asio::strand<IoExecutor>;
using Socket = asio::basic_stream_socket<asio::ip::tcp, Strand>;
using Acceptor = asio::basic_socket_acceptor<asio::ip::tcp, Strand>;
using Resolver = asio::ip::basic_resolver<asio::ip::tcp, Strand>;
using Timer = asio::basic_waitable_timer<std::chrono::steady_clock,
                                         asio::wait_traits<std::chrono::steady_clock>, Strand>;

// The runtime's executor as the io_context executor it wraps; throws micro::Exception (400)
// when it wraps something else.
IoExecutor io_executor(const asio::any_io_executor& executor);

// Connections of one transport alive now, for Transport::statistics(); each connection
// counts itself in while it exists.
struct ConnectionCounts {
  std::atomic<std::uint64_t> server{0};
  std::atomic<std::uint64_t> client{0};
};

// The plugin's options after validation (README.md lists them).
// Values and defaults come from the descriptor's options (tcp_options in tcp_transport.cpp).
struct Settings {
  std::uint32_t max_frame = 0;
  std::size_t pool_size = 0;
  std::chrono::milliseconds connect_timeout{};
  bool nodelay = true;
  std::uint32_t stream_window = 0;  // bytes of messages a stream end buffers for its reader
  std::shared_ptr<ConnectionCounts> counts = std::make_shared<ConnectionCounts>();
};

// "host:port", "[v6]:port" or ":port" split into parts; nullopt when there is no numeric
// port in 0..65535.
struct HostPort {
  std::string host;
  std::uint16_t port = 0;
};
std::optional<HostPort> split_address(std::string_view address);

// Who raised an error the transport makes itself (Go-Micro's ids).
inline constexpr const char* client_error_id = "micro.client";
inline constexpr const char* server_error_id = "micro.server";

}  // namespace micro::tcp
