// micro/context.hpp — what travels with every call and message: metadata, a deadline,
// cancellation and the active trace span.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace micro {

namespace trace {
class Span;
}

// Header-like key/value pairs. Keys are matched case-insensitively (ASCII) and keep the
// case they were first set with, so "Traceparent" from a Go peer finds "traceparent".
// A small flat vector: calls carry a handful of entries, where a linear scan beats hashing.
class Metadata {
 public:
  using Entry = std::pair<std::string, std::string>;
  using const_iterator = std::vector<Entry>::const_iterator;

  Metadata() = default;
  Metadata(std::initializer_list<Entry> entries);

  // Sets or replaces; a replaced entry keeps the case of its original key.
  void set(std::string_view key, std::string value);
  // The value, or nullptr when the key is absent.
  const std::string* find(std::string_view key) const noexcept;
  std::string get(std::string_view key, std::string_view fallback = {}) const;
  bool contains(std::string_view key) const noexcept { return find(key) != nullptr; }
  bool erase(std::string_view key) noexcept;
  void clear() noexcept { entries_.clear(); }
  // Copies every entry of `other` in, replacing equal keys.
  void merge(const Metadata& other);

  std::size_t size() const noexcept { return entries_.size(); }
  bool empty() const noexcept { return entries_.empty(); }
  const_iterator begin() const noexcept { return entries_.begin(); }
  const_iterator end() const noexcept { return entries_.end(); }

  friend bool operator==(const Metadata&, const Metadata&) = default;

 private:
  std::vector<Entry> entries_;
};

// ASCII case-insensitive equality, as HTTP header names are compared.
bool iequals(std::string_view a, std::string_view b) noexcept;

class Context;
class ServerCall;

// Shared by all copies of a Context: cancelling one cancels the call everywhere. A call made
// with the context ends at once with 499 (micro.client, "call cancelled"); on the server the
// handler's context is cancelled when the client cancels or its connection goes away.
class CancellationState {
 public:
  CancellationState() = default;
  CancellationState(const CancellationState&) = delete;
  CancellationState& operator=(const CancellationState&) = delete;

  // Cancels once (later calls do nothing) and runs the registered callbacks on this thread,
  // in the order they were registered.
  void cancel();
  bool cancelled() const noexcept { return cancelled_.load(std::memory_order_acquire); }
  // Runs `callback` once on cancel, on the cancelling thread; at once, on this thread, if
  // already cancelled (then returns 0). Returns an id for forget().
  std::uint64_t on_cancel(std::function<void()> callback);
  // Drops a callback that has not run (0 and unknown ids are ignored). A callback already
  // running on another thread may still be running when this returns.
  void forget(std::uint64_t id) noexcept;

 private:
  friend class Context;
  friend class ServerCall;
  // A state embedded in a call object: shares the object's ownership; null once it is gone.
  std::shared_ptr<CancellationState> share() const noexcept;

  std::atomic<bool> cancelled_{false};
  std::mutex mutex_;
  std::uint64_t next_id_ = 1;
  std::vector<std::pair<std::uint64_t, std::function<void()>>> callbacks_;
  std::weak_ptr<const void> owner_;  // set when embedded in a call object
};

class Context {
 public:
  using Clock = std::chrono::steady_clock;

  Context() = default;
  // Copies share the cancellation (a copy of a server call's context shares the call).
  Context(const Context& other)
      : metadata_(other.metadata_),
        deadline_(other.deadline_),
        cancellation_(other.existing_cancellation()),
        span_(other.span_) {}
  Context(Context&& other) noexcept
      : metadata_(std::move(other.metadata_)),
        deadline_(other.deadline_),
        cancellation_(other.take_cancellation()),
        span_(std::move(other.span_)) {}
  Context& operator=(const Context& other);
  Context& operator=(Context&& other) noexcept;
  ~Context() = default;

  Metadata& metadata() noexcept { return metadata_; }
  const Metadata& metadata() const noexcept { return metadata_; }

  // No deadline is Clock::time_point::max().
  Clock::time_point deadline() const noexcept { return deadline_; }
  bool has_deadline() const noexcept { return deadline_ != Clock::time_point::max(); }
  void set_deadline(Clock::time_point deadline) noexcept { deadline_ = deadline; }
  // Tightens the deadline to now + timeout, never loosens it.
  void set_timeout(Clock::duration timeout) noexcept;
  Clock::duration remaining() const noexcept;
  bool expired() const noexcept { return has_deadline() && Clock::now() >= deadline_; }

  // Cancellation is created on first use, so calls that never cancel pay nothing. To cancel a
  // call later, take the state before handing the context over and keep it:
  //   auto cancellation = request.context.cancellation();
  //   client.async_call(std::move(request), {}, done);
  //   cancellation->cancel();  // any thread: the call ends at once with 499
  void cancel();
  bool cancelled() const noexcept { return cancellation_ && cancellation_->cancelled(); }
  std::shared_ptr<CancellationState> cancellation();
  // The state if there is one, never creating it: what the pipeline and transports check.
  std::shared_ptr<CancellationState> existing_cancellation() const noexcept {
    return borrowed() ? cancellation_->share() : cancellation_;
  }

  // The span the next child span should hang under; null when tracing is off.
  const std::shared_ptr<trace::Span>& span() const noexcept { return span_; }
  void set_span(std::shared_ptr<trace::Span> span) noexcept { span_ = std::move(span); }

 private:
  friend class ServerCall;
  // The context of a server call borrows the state embedded in the call (no allocation per
  // call); `cancellation_` then owns nothing, and copies take a share of the call instead.
  void borrow_cancellation(CancellationState& state) noexcept;
  bool borrowed() const noexcept { return cancellation_ && cancellation_.use_count() == 0; }
  std::shared_ptr<CancellationState> take_cancellation() noexcept {
    return borrowed() ? cancellation_->share() : std::move(cancellation_);
  }

  Metadata metadata_;
  Clock::time_point deadline_ = Clock::time_point::max();
  std::shared_ptr<CancellationState> cancellation_;
  std::shared_ptr<trace::Span> span_;
};

}  // namespace micro
