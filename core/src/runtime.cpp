// Runtime: the shared io_context, its threads, and a small pool for blocking work.
#include <micro/runtime.hpp>

#include <algorithm>

#include <boost/asio/thread_pool.hpp>

namespace micro {

struct Runtime::BlockingPool {
  boost::asio::thread_pool pool{2};
};

namespace {
thread_local const Runtime* current_runtime = nullptr;
}

Runtime::Runtime(unsigned threads)
    : work_(boost::asio::make_work_guard(io_context_)),
      blocking_(std::make_unique<BlockingPool>()) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  threads_.reserve(threads);
  for (unsigned i = 0; i < threads; ++i) {
    threads_.emplace_back([this] {
      current_runtime = this;
      io_context_.run();
      current_runtime = nullptr;
    });
  }
}

Runtime::~Runtime() {
  stop();
}

boost::asio::any_io_executor Runtime::blocking_executor() noexcept {
  return blocking_->pool.get_executor();
}

bool Runtime::running_in_this_thread() const noexcept {
  return current_runtime == this;
}

void Runtime::stop() {
  if (threads_.empty()) return;
  work_.reset();
  blocking_->pool.join();
  io_context_.stop();
  for (auto& thread : threads_)
    if (thread.joinable()) thread.join();
  threads_.clear();
}

}  // namespace micro
