// test/fuzz/config_string.cpp — the config string parser (<micro/config.hpp>): "key=value"
// items and plugin choices ("etcd://a:1,b:2?ttl=30s"); a bad one must throw ConfigError only.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <micro/config.hpp>
#include <micro/plugin.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    auto config = micro::Config::parse(text);
    // What parsed prints back to a string that parses.
    (void)micro::Config::parse(config.to_string());
  } catch (const micro::ConfigError&) {
  }
  try {
    (void)micro::parse_plugin_choice(text, "fuzz");
  } catch (const micro::ConfigError&) {
  }
  (void)micro::parse_duration(text);
  return 0;
}
