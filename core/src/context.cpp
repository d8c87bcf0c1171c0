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
  std::vector<std::pair<std::uint64_t, std::function<void()>>> callbacks;
  {
    std::lock_guard lock(mutex_);
    if (cancelled_.exchange(true, std::memory_order_acq_rel)) return;
    callbacks.swap(callbacks_);
  }
  for (auto& [id, callback] : callbacks) callback();
}

std::uint64_t CancellationState::on_cancel(std::function<void()> callback) {
  {
    std::lock_guard lock(mutex_);
    if (!cancelled_.load(std::memory_order_acquire)) {
      std::uint64_t id = next_id_++;
      // A call usually registers two (the client's and its transport's): one allocation.
      if (callbacks_.capacity() == 0) callbacks_.reserve(2);
      callbacks_.emplace_back(id, std::move(callback));
      return id;
    }
  }
  callback();
  return 0;
}

void CancellationState::forget(std::uint64_t id) noexcept {
  if (id == 0) return;
  std::function<void()> dropped;  // destroyed outside the lock
  std::lock_guard lock(mutex_);
  auto found = std::find_if(callbacks_.begin(), callbacks_.end(),
                            [id](const auto& entry) { return entry.first == id; });
  if (found == callbacks_.end()) return;
  dropped = std::move(found->second);
  callbacks_.erase(found);
}

std::shared_ptr<CancellationState> CancellationState::share() const noexcept {
  auto owner = owner_.lock();
  if (!owner) return nullptr;
  return std::shared_ptr<CancellationState>(std::move(owner), const_cast<CancellationState*>(this));
}

Context& Context::operator=(const Context& other) {
  if (this != &other) {
    metadata_ = other.metadata_;
    deadline_ = other.deadline_;
    cancellation_ = other.existing_cancellation();
    span_ = other.span_;
  }
  return *this;
}

Context& Context::operator=(Context&& other) noexcept {
  if (this != &other) {
    metadata_ = std::move(other.metadata_);
    deadline_ = other.deadline_;
    cancellation_ =
        other.borrowed() ? other.cancellation_->share() : std::move(other.cancellation_);
    span_ = std::move(other.span_);
  }
  return *this;
}

void Context::set_timeout(Clock::duration timeout) noexcept {
  // Compared before adding: now() + a peer's huge timeout (a saturated grpc-timeout of
  // 99999999H) overflowed. One that ends no sooner than the deadline changes nothing.
  const auto now = Clock::now();
  if (timeout >= deadline_ - now) return;
  deadline_ = now + timeout;
}

Context::Clock::duration Context::remaining() const noexcept {
  if (!has_deadline()) return Clock::duration::max();
  auto left = deadline_ - Clock::now();
  return left.count() > 0 ? left : Clock::duration::zero();
}

void Context::cancel() {
  cancellation()->cancel();
}

std::shared_ptr<CancellationState> Context::cancellation() {
  if (!cancellation_) cancellation_ = std::make_shared<CancellationState>();
  return existing_cancellation();
}

void Context::borrow_cancellation(CancellationState& state) noexcept {
  // The aliasing constructor with an empty owner: points at `state`, owns nothing.
  cancellation_ = std::shared_ptr<CancellationState>(std::shared_ptr<CancellationState>(), &state);
}

}  // namespace micro
