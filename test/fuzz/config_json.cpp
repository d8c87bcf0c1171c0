// test/fuzz/config_json.cpp — the JSON config (<micro/config.hpp> apply_json, what --config=FILE
// and MICRO_CONFIG_FILE read); a bad one must throw ConfigError only.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <micro/client.hpp>
#include <micro/config.hpp>
#include <micro/server.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    micro::Config config;
    config.apply_json(text);
    (void)config.server_options();
    (void)config.client_options();
  } catch (const micro::ConfigError&) {
  }
  return 0;
}
