// test/plugins/tcp/frame_test.cpp — the tcp frame decoders on their own (plugins/tcp/frame.cpp
// compiled in), for the inputs the fuzz harness test/fuzz/tcp_frame found.
#include <doctest/doctest.h>

#include <string>

#include "plugins/tcp/frame.hpp"

using namespace micro::tcp;

TEST_CASE("a frame shorter than its header is refused, not read past (found by fuzzing)") {
  for (std::size_t size : {0, 1, 19}) {
    CAPTURE(size);
    const std::string frame(size, '\0');
    micro::Request request;
    std::uint64_t timeout = 0;
    const auto problem = decode_request(frame, request, timeout);
    REQUIRE(problem);
    CHECK(*problem ==
          "frame of " + std::to_string(size) + " bytes is shorter than its 20-byte header");
    micro::Response response;
    CHECK(decode_response(frame, response) == problem);
    std::uint32_t increment = 0;
    CHECK(decode_stream_window(frame, increment) == problem);
  }
}

TEST_CASE("a request frame decodes back to what was encoded") {
  micro::Request request;
  request.service = "greeter";
  request.endpoint = "Greeter.Hello";
  request.body = "{}";
  std::string frame;
  encode_request(frame, 1, request, 5);
  micro::Request decoded;
  std::uint64_t timeout = 0;
  CHECK_FALSE(decode_request(frame, decoded, timeout));
  CHECK(decoded.endpoint == "Greeter.Hello");
  CHECK(timeout == 5);
  frame.resize(frame.size() - 3);  // the body is the rest: cut into the header fields instead
  frame.resize(24);
  CHECK(decode_request(frame, decoded, timeout));
}
