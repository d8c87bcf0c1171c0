// micro/log.hpp — the toolkit's one logger: levels, one line format, a replaceable sink.
//
// Every part of micro-cpp (core and plugins) reports through here, never to std::cerr
// directly, so a program decides where the lines go and how many there are:
//   micro::log::warn("registry etcd", "keep-alive failed: " + why);
// writes "[micro] warn registry etcd: keep-alive failed: …" to stderr by default.
//
// The level starts from MICRO_LOG_LEVEL (trace, debug, info, warn, error, off; default info);
// the log_level config key (--log_level, MICRO_LOG_LEVEL) sets it for a Microservice.
// Threading: everything here may be called from any thread; the sink is called under a
// lock, one line at a time, so lines never interleave. A sink must not log itself.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace micro::log {

enum class Level { trace = 0, debug, info, warn, error, off };

std::string_view to_string(Level level) noexcept;
// "warn" (also "warning"), case-insensitive; nullopt for anything else.
std::optional<Level> level_from_string(std::string_view text) noexcept;
// The accepted names, for error messages: "trace, debug, info, warn, error, off".
std::string_view level_names() noexcept;

namespace detail {
extern std::atomic<int> current_level;
}

// Whether a line at `level` would be written: one relaxed load, so callers can skip building
// an expensive message.
inline bool enabled(Level level) noexcept {
  return static_cast<int>(level) >= detail::current_level.load(std::memory_order_relaxed) &&
         level != Level::off;
}
void set_level(Level level) noexcept;
Level level() noexcept;

// Receives each line that passes the level: its level, the component ("broker nats") and the
// message, without prefix or newline.
using Sink = std::function<void(Level level, std::string_view component, std::string_view message)>;
// Replaces the sink; an empty Sink restores the default (stderr). Returns the previous one.
Sink set_sink(Sink sink);

// Writes one line if `level` is enabled.
void write(Level level, std::string_view component, std::string_view message);

inline void trace(std::string_view component, std::string_view message) {
  if (enabled(Level::trace)) write(Level::trace, component, message);
}
inline void debug(std::string_view component, std::string_view message) {
  if (enabled(Level::debug)) write(Level::debug, component, message);
}
inline void info(std::string_view component, std::string_view message) {
  if (enabled(Level::info)) write(Level::info, component, message);
}
inline void warn(std::string_view component, std::string_view message) {
  if (enabled(Level::warn)) write(Level::warn, component, message);
}
inline void error(std::string_view component, std::string_view message) {
  if (enabled(Level::error)) write(Level::error, component, message);
}

// The default format: "[micro] <level> <component>: <message>".
std::string format_line(Level level, std::string_view component, std::string_view message);

}  // namespace micro::log
