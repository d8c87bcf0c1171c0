// test/fuzz/url.cpp — URL parsing (<micro/http_client.hpp> try_parse_url), what a client's
// address, the etcd and collector endpoints and every config URL go through.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <micro/http_client.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string problem;
  if (!micro::http::try_parse_url(text, &problem) && problem.empty()) __builtin_trap();
  return 0;
}
