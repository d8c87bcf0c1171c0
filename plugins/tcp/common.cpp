// plugins/tcp/common.cpp — address parsing and formatting for the tcp transport.
#include "common.hpp"

#include <charconv>

#include <micro/error.hpp>

namespace micro::tcp {

std::optional<HostPort> split_address(std::string_view address) {
  auto colon = address.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  std::string_view host = address.substr(0, colon);
  std::string_view port_text = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  unsigned port = 0;
  auto [end, error] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || error != std::errc() || end != port_text.data() + port_text.size() ||
      port > 65535)
    return std::nullopt;
  return HostPort{std::string(host), static_cast<std::uint16_t>(port)};
}

IoExecutor io_executor(const asio::any_io_executor& executor) {
  if (auto* inner = executor ? executor.target<IoExecutor>() : nullptr) return *inner;
  throw Exception(bad_request("tcp", "tcp: the transport needs the runtime's io_context executor"));
}

}  // namespace micro::tcp
