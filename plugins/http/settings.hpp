// plugins/http/settings.hpp — the http transport's options after the loader checked them
// (their names, defaults and ranges are the descriptor's, in http_transport.cpp).
#pragma once

#include <chrono>
#include <cstddef>

namespace micro::http_transport {

struct Settings {
  std::size_t max_body = 0;    // largest request or response body, sent or accepted
  std::size_t max_header = 0;  // largest request head accepted
  std::size_t pool_size = 0;   // idle connections kept per node
  std::chrono::milliseconds connect_timeout{};
  std::chrono::milliseconds header_timeout{};
  std::chrono::milliseconds body_timeout{};
  std::chrono::milliseconds idle_timeout{};
  std::size_t max_connections = 0;
};

}  // namespace micro::http_transport
