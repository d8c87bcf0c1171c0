// Per-thread wyrand generators, seeded lazily and reseeded after fork().
#include <micro/random.hpp>

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <mutex>
#include <random>
#include <thread>

namespace micro {

namespace detail {
std::atomic<std::uint64_t> fork_count{1};
}

namespace {

void count_fork_in_child() {
  detail::fork_count.fetch_add(1, std::memory_order_relaxed);
}

thread_local Wyrand this_thread_generator;  // trivially constructible: no TLS guard

}  // namespace

void Wyrand::seed() noexcept {
  static std::once_flag fork_handler_once;
  std::call_once(fork_handler_once, [] { pthread_atfork(nullptr, nullptr, count_fork_in_child); });
  std::uint64_t entropy = 0;
  try {
    std::random_device device;
    entropy = (static_cast<std::uint64_t>(device()) << 32) ^ device();
  } catch (...) {
    // No entropy source: the clock and the thread id still tell threads and runs apart.
  }
  state = entropy ^
          static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
          std::hash<std::thread::id>{}(std::this_thread::get_id());
  generation = fork_generation();
}

std::uint64_t thread_random() noexcept {
  this_thread_generator.check_seed();
  return this_thread_generator.next();
}

std::size_t thread_random_below(std::size_t bound) noexcept {
  return static_cast<std::size_t>(((thread_random() >> 32) * static_cast<std::uint64_t>(bound)) >>
                                  32);
}

std::string random_hex(std::size_t digits) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string text(digits, '0');
  std::uint64_t bits = 0;
  for (std::size_t index = 0; index < digits; ++index) {
    if (index % 16 == 0) bits = thread_random();
    text[index] = hex[bits & 15];
    bits >>= 4;
  }
  return text;
}

std::string random_uuid() {
  std::uint64_t high = thread_random(), low = thread_random();
  high = (high & 0xffffffffffff0fffULL) | 0x4000ULL;            // version 4
  low = (low & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // RFC 4122 variant
  char text[37];
  std::snprintf(text, sizeof text, "%08x-%04x-%04x-%04x-%012llx", unsigned(high >> 32),
                unsigned((high >> 16) & 0xffff), unsigned(high & 0xffff), unsigned(low >> 48),
                static_cast<unsigned long long>(low & 0xffffffffffffULL));
  return text;
}

}  // namespace micro
