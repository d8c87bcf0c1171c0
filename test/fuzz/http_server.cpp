// test/fuzz/http_server.cpp — the core HTTP/1.1 server's request parser (<micro/http_server.hpp>,
// RequestParser in core/src/http/server_connection.hpp): pipelined requests fed in pieces, as
// a connection reads them, with small limits so the 413/431 paths are hit.
#include <cstddef>
#include <cstdint>
#include <optional>

#include <boost/asio/buffer.hpp>

#include "http/server_connection.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t piece = data[0] % 32 + 1;
  ++data;
  --size;
  micro::http::ServerOptions options;
  options.header_limit = 2048;
  options.body_limit = 4096;
  std::size_t at = 0;
  for (int requests = 0; at < size && requests < 16; ++requests) {
    micro::http::ServerRequest request;
    std::optional<micro::http::detail::RequestParser> parser;
    parser.emplace(request, options);
    std::size_t have = piece;  // bytes offered at `at`: what arrived and was not taken yet
    while (!parser->is_done()) {
      have = std::min(have, size - at);
      // As ServerConnection::parse: a chunked body's rest is offered once it holds 5 bytes
      // (Boost 1.81's chunk parser asserts it; boostorg/beast#2861).
      if (parser->is_header_done() && parser->chunked() && have < 5) {
        if (at + have >= size) return 0;
        have += piece;
        continue;
      }
      boost::beast::error_code error;
      const auto used = parser->put(boost::asio::buffer(data + at, have), error);
      if (used > have) __builtin_trap();
      at += used;
      have -= used;
      if (error && error != boost::beast::http::error::need_more) return 0;  // a 400
      if (!parser->problem.empty()) return 0;  // refused: the connection closes
      if (error || used == 0) {
        if (at + have >= size) return 0;  // the input ends mid-request
        have += piece;
      }
    }
    (void)request.joined_header("traceparent");
  }
  return 0;
}
