// micro/runtime.hpp — the one io_context every part of a process shares, and its threads.
#pragma once

#include <memory>
#include <thread>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

namespace micro {

// Owns an io_context run by N threads (default: the hardware threads). Plugins receive its
// executor. Nothing may block an I/O thread: blocking work goes to blocking_executor().
class Runtime {
 public:
  explicit Runtime(unsigned threads = 0);
  ~Runtime();  // stops and joins
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  boost::asio::io_context& io_context() noexcept { return io_context_; }
  boost::asio::any_io_executor executor() noexcept { return io_context_.get_executor(); }
  // A small pool for work that may block (registry round trips, file I/O).
  boost::asio::any_io_executor blocking_executor() noexcept;

  unsigned thread_count() const noexcept { return static_cast<unsigned>(threads_.size()); }
  // True when called from one of this runtime's I/O threads.
  bool running_in_this_thread() const noexcept;

  // Lets the threads finish when no work remains, then joins them. Idempotent.
  void stop();

 private:
  struct BlockingPool;
  boost::asio::io_context io_context_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::vector<std::thread> threads_;
  std::unique_ptr<BlockingPool> blocking_;
};

}  // namespace micro
