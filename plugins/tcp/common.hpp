// plugins/tcp/common.hpp — what the tcp transport's client and server sides share: the
// validated options, address parsing and formatting.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>

namespace micro::tcp {

namespace asio = boost::asio;
using Strand = asio::strand<asio::any_io_executor>;

// The plugin's options after validation (README.md lists them).
struct Settings {
  std::uint32_t max_frame = 4 * 1024 * 1024;
  std::size_t pool_size = 2;
  std::chrono::milliseconds connect_timeout{5000};
  bool nodelay = true;
};

// "host:port", "[v6]:port" or ":port" split into parts; nullopt when there is no numeric
// port in 0..65535.
struct HostPort {
  std::string host;
  std::uint16_t port = 0;
};
std::optional<HostPort> split_address(std::string_view address);

// "127.0.0.1:4000" or "[::1]:4000".
std::string format_endpoint(const asio::ip::tcp::endpoint& endpoint);

// Who raised an error the transport makes itself (Go-Micro's ids).
inline constexpr const char* client_error_id = "micro.client";
inline constexpr const char* server_error_id = "micro.server";

}  // namespace micro::tcp
