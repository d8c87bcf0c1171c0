// test/support/allocation_counter.hpp — counts every heap allocation of a test program, for
// tests that prove a path allocates nothing. It replaces the global operator new/delete, so
// include it in exactly one source file of a program.
#pragma once

#include <atomic>
#include <cstdlib>
#include <new>

namespace test_support {
inline std::atomic<long> allocations{0};
}  // namespace test_support

// Replacing operator new with malloc/free is valid; g++ cannot see that and may warn.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t size) {
  test_support::allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* memory = std::malloc(size == 0 ? 1 : size)) return memory;
  throw std::bad_alloc();
}
void operator delete(void* memory) noexcept {
  std::free(memory);
}
void operator delete(void* memory, std::size_t) noexcept {
  std::free(memory);
}
