// Context and Metadata: what travels with every call.
#include <micro/context.hpp>

#include <algorithm>

namespace micro {

namespace {
inline char lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? char(c + ('a' - 'A')) : c;
}
}  // namespace

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

Metadata::Metadata(std::initializer_list<Entry> entries) {
  for (const auto& [key, value] : entries) set(key, value);
}

void Metadata::set(std::string_view key, std::string value) {
  for (auto& entry : entries_) {
    if (iequals(entry.first, key)) {
      entry.second = std::move(value);
      return;
    }
  }
  // Requests usually carry a few entries (traceparent, Local, Remote…): room for four at
  // the first insert saves the 1 → 2 → 4 regrowths, each moving every entry.
  if (entries_.capacity() == 0) entries_.reserve(4);
  entries_.emplace_back(std::string(key), std::move(value));
}

const std::string* Metadata::find(std::string_view key) const noexcept {
  for (const auto& entry : entries_)
    if (iequals(entry.first, key)) return &entry.second;
  return nullptr;
}

std::string Metadata::get(std::string_view key, std::string_view fallback) const {
  const std::string* value = find(key);
  return value ? *value : std::string(fallback);
}

bool Metadata::erase(std::string_view key) noexcept {
  auto it = std::find_if(entries_.begin(), entries_.end(),
                         [&](const Entry& entry) { return iequals(entry.first, key); });
  if (it == entries_.end()) return false;
  entries_.erase(it);
  return true;
}

void Metadata::merge(const Metadata& other) {
  for (const auto& [key, value] : other) set(key, value);
}

void CancellationState::cancel() {
  std::vector<std::function<void()>> callbacks;
  {
    std::lock_guard lock(mutex_);
    if (cancelled_.exchange(true, std::memory_order_acq_rel)) return;
    callbacks.swap(callbacks_);
  }
  for (auto& callback : callbacks) callback();
}

void CancellationState::on_cancel(std::function<void()> callback) {
  {
    std::lock_guard lock(mutex_);
    if (!cancelled_.load(std::memory_order_acquire)) {
      callbacks_.push_back(std::move(callback));
      return;
    }
  }
  callback();
}

void Context::set_timeout(Clock::duration timeout) noexcept {
  auto candidate = Clock::now() + timeout;
  if (candidate < deadline_) deadline_ = candidate;
}

Context::Clock::duration Context::remaining() const noexcept {
  if (!has_deadline()) return Clock::duration::max();
  auto left = deadline_ - Clock::now();
  return left.count() > 0 ? left : Clock::duration::zero();
}

void Context::cancel() {
  cancellation()->cancel();
}

const std::shared_ptr<CancellationState>& Context::cancellation() {
  if (!cancellation_) cancellation_ = std::make_shared<CancellationState>();
  return cancellation_;
}

}  // namespace micro
