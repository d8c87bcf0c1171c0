// micro/random.hpp — fast per-thread pseudo-random numbers for load balancing, jitter and ids.
//
// One generator (wyrand) for the whole toolkit. thread_random() draws from this thread's own
// state: no shared state, no lock. States are seeded from std::random_device, the clock and
// the thread id, and reseeded in a child after fork() so parent and child never repeat each
// other's sequence. Not for secrets (keys, tokens): use OpenSSL's RAND_bytes for those.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace micro {

// wyrand: a Weyl sequence folded through one 64x64->128-bit multiply. Public so that a hot
// path (the trace SDK's span ids) can keep a trivially constructible thread_local of its own
// and inline the draw; everything else calls thread_random().
struct Wyrand {
  std::uint64_t state = 0;
  std::uint64_t generation = 0;  // fork_generation() when last seeded; 0: never

  // Seeds when never seeded or after a fork. Cheap when nothing changed: one relaxed load.
  void check_seed() noexcept {
    if (generation != fork_generation()) [[unlikely]]
      seed();
  }
  void seed() noexcept;

  std::uint64_t next() noexcept {
    state += 0xa0761d6478bd642fULL;
    auto product = static_cast<unsigned __int128>(state) * (state ^ 0xe7037ed1a0b428dbULL);
    return static_cast<std::uint64_t>(product >> 64) ^ static_cast<std::uint64_t>(product);
  }

  // Counts forks of this process (starts at 1), so states seeded before a fork reseed.
  // Inline (one relaxed load, no call): check_seed runs once per span in the trace SDK.
  static std::uint64_t fork_generation() noexcept;
};

namespace detail {
extern std::atomic<std::uint64_t> fork_count;
}

inline std::uint64_t Wyrand::fork_generation() noexcept {
  return detail::fork_count.load(std::memory_order_relaxed);
}

// A number from this thread's generator.
std::uint64_t thread_random() noexcept;

// A number in [0, bound) from thread_random(), without a division (Lemire's multiply-shift;
// the bias is negligible for bounds like node counts). `bound` must be below 2^32; 0 gives 0.
std::size_t thread_random_below(std::size_t bound) noexcept;

// `digits` lower-case hex digits from thread_random() (node ids, instance suffixes).
std::string random_hex(std::size_t digits);

// A version 4 UUID, "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx", from thread_random().
std::string random_uuid();

}  // namespace micro
