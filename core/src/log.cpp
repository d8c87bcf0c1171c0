// The logger: a level read from MICRO_LOG_LEVEL at start-up, and one sink behind a mutex.
#include <micro/log.hpp>

#include <cstdio>
#include <cstdlib>
#include <mutex>

#include <micro/context.hpp>  // iequals

namespace micro::log {

namespace {

constexpr std::string_view level_texts[] = {"trace", "debug", "info", "warn", "error", "off"};

int initial_level() {
  const char* text = std::getenv("MICRO_LOG_LEVEL");
  if (text != nullptr && *text != '\0') {
    if (auto level = level_from_string(text)) return static_cast<int>(*level);
    std::fprintf(stderr,
                 "[micro] warn log: MICRO_LOG_LEVEL='%s' is not a level; expected one of: %s\n",
                 text, std::string(level_names()).c_str());
  }
  return static_cast<int>(Level::info);
}

struct SinkSlot {
  std::mutex mutex;
  Sink sink;
};

SinkSlot& sink_slot() {
  static SinkSlot slot;  // constructed on first use: safe from other static initialisers
  return slot;
}

}  // namespace

namespace detail {
std::atomic<int> current_level{initial_level()};
}

std::string_view to_string(Level level) noexcept {
  auto index = static_cast<std::size_t>(level);
  return index < std::size(level_texts) ? level_texts[index] : "unknown";
}

std::optional<Level> level_from_string(std::string_view text) noexcept {
  if (iequals(text, "warning")) return Level::warn;
  for (std::size_t index = 0; index < std::size(level_texts); ++index) {
    if (iequals(text, level_texts[index])) return static_cast<Level>(index);
  }
  return std::nullopt;
}

std::string_view level_names() noexcept {
  return "trace, debug, info, warn, error, off";
}

void set_level(Level level) noexcept {
  detail::current_level.store(static_cast<int>(level), std::memory_order_relaxed);
}

Level level() noexcept {
  return static_cast<Level>(detail::current_level.load(std::memory_order_relaxed));
}

Sink set_sink(Sink sink) {
  SinkSlot& slot = sink_slot();
  std::lock_guard lock(slot.mutex);
  std::swap(slot.sink, sink);
  return sink;
}

std::string format_line(Level level, std::string_view component, std::string_view message) {
  std::string line = "[micro] ";
  line += to_string(level);
  line += ' ';
  line += component;
  line += ": ";
  line += message;
  return line;
}

void write(Level level, std::string_view component, std::string_view message) {
  if (!enabled(level)) return;
  SinkSlot& slot = sink_slot();
  std::lock_guard lock(slot.mutex);
  if (slot.sink) {
    slot.sink(level, component, message);
    return;
  }
  std::string line = format_line(level, component, message);
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace micro::log
