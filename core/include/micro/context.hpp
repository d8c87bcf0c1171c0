// micro/context.hpp — what travels with every call and message: metadata, a deadline,
// cancellation and the active trace span.
#pragma once

#include <atomic>
#include <chrono>
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

// Shared by all copies of a Context: cancelling one cancels the call everywhere.
class CancellationState {
 public:
  void cancel();
  bool cancelled() const noexcept { return cancelled_.load(std::memory_order_acquire); }
  // Runs `callback` on cancel (at once if already cancelled).
  void on_cancel(std::function<void()> callback);

 private:
  std::atomic<bool> cancelled_{false};
  std::mutex mutex_;
  std::vector<std::function<void()>> callbacks_;
};

class Context {
 public:
  using Clock = std::chrono::steady_clock;

  Context() = default;

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

  // Cancellation is created on first use, so calls that never cancel pay nothing.
  void cancel();
  bool cancelled() const noexcept { return cancellation_ && cancellation_->cancelled(); }
  const std::shared_ptr<CancellationState>& cancellation();

  // The span the next child span should hang under; null when tracing is off.
  const std::shared_ptr<trace::Span>& span() const noexcept { return span_; }
  void set_span(std::shared_ptr<trace::Span> span) noexcept { span_ = std::move(span); }

 private:
  Metadata metadata_;
  Clock::time_point deadline_ = Clock::time_point::max();
  std::shared_ptr<CancellationState> cancellation_;
  std::shared_ptr<trace::Span> span_;
};

}  // namespace micro
