// wrappers/trace — deferred sampling (deferred_processor.hpp).
#include "deferred_processor.hpp"

#include <cstring>
#include <random>

namespace micro::trace::sdk {

namespace {
const std::uint64_t hash_seed = [] {
  std::random_device device;
  return (std::uint64_t{device()} << 32) | device();
}();
}  // namespace

std::size_t DeferredProcessor::LocalTraceHash::operator()(const LocalTrace& key) const noexcept {
  std::uint64_t high = 0, low = 0, root = 0;
  std::memcpy(&high, key.trace_id.bytes.data(), sizeof high);
  std::memcpy(&low, key.trace_id.bytes.data() + 8, sizeof low);
  std::memcpy(&root, key.root.bytes.data(), sizeof root);
  std::uint64_t x = (high ^ hash_seed) * 0x9E3779B97F4A7C15ull;
  x = (x ^ low ^ (x >> 29)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ root ^ (x >> 32)) * 0x94D049BB133111EBull;
  return static_cast<std::size_t>(x ^ (x >> 31));
}

DeferredProcessor::LocalTrace DeferredProcessor::local_trace_of(const SpanData& span,
                                                                bool& local_root) noexcept {
  if (span.local_root.valid()) {
    local_root = span.local_root == span.context.span_id;
    return {span.context.trace_id, span.local_root};
  }
  // Span data from elsewhere (no local root recorded): a root without a parent or with a
  // remote one; a child keyed by its parent (right for one level of children).
  local_root = !span.parent_span_id.valid() || span.parent_remote;
  return {span.context.trace_id, local_root ? span.context.span_id : span.parent_span_id};
}

DeferredProcessor::DeferredProcessor(std::shared_ptr<SpanProcessor> next, DeferredSettings settings)
    : next_(std::move(next)), settings_(settings) {}

DeferredProcessor::~DeferredProcessor() {
  shutdown();
}

bool DeferredProcessor::interesting(const SpanData& span) const noexcept {
  if (settings_.keep_errors && span.status == StatusCode::error) return true;
  return settings_.slower_than.count() > 0 &&
         span.end_time - span.start_time >= settings_.slower_than;
}

void DeferredProcessor::on_end(SpanData&& span) noexcept {
  SpanData* data = next_->acquire_span_data();
  *data = std::move(span);
  end_span(data);
}

void DeferredProcessor::end_span(SpanData* data) noexcept {
  bool local_root = false;
  const LocalTrace trace_id = local_trace_of(*data, local_root);
  const bool notable = interesting(*data);
  std::vector<SpanData*> decided, forced;
  SpanData* single = nullptr;  // decided alone, without a vector
  bool keep = false, forced_keep = false;
  {
    std::lock_guard lock(mutex_);
    auto entry = pending_.find(trace_id);
    if (entry == pending_.end()) {
      if (Decided* found = find_decided(trace_id)) {
        // Its local root has ended: a late span follows the decision, and a notable one
        // turns a discard into keeping what comes after.
        keep = found->keep || notable;
        found->keep = keep;
        single = data;
        (keep ? counts_.spans_kept : counts_.spans_discarded)++;
      } else if (local_root) {
        // A local root with nothing waiting (no child ended before it): decided at once.
        keep = notable || data->context.sampled();
        single = data;
        (keep ? counts_.traces_kept : counts_.traces_discarded)++;
        (keep ? counts_.spans_kept : counts_.spans_discarded)++;
        remember(trace_id, keep);
      }
    }
    if (single == nullptr) {
      bool inserted = false;
      if (entry == pending_.end()) {
        entry = pending_.try_emplace(trace_id).first;
        inserted = true;
      }
      Pending& pending = entry->second;
      if (inserted) {
        pending.order = next_order_++;
        pending_order_.emplace_back(pending.order, trace_id);
      }
      pending.spans.push_back(data);
      pending.keep = pending.keep || notable;
      ++buffered_;
      if (local_root) {
        keep = pending.keep || data->context.sampled();
        decided = decide(trace_id, pending, keep);
        pending_.erase(entry);
      }
      // Over the bound: the oldest undecided trace is decided now with what it has.
      while (buffered_ > settings_.max_buffered && !pending_order_.empty()) {
        auto [order, oldest] = pending_order_.front();
        pending_order_.pop_front();
        auto stale = pending_.find(oldest);
        if (stale == pending_.end() || stale->second.order != order) continue;
        Pending& victim = stale->second;
        forced_keep =
            victim.keep || (!victim.spans.empty() && victim.spans.front()->context.sampled());
        ++counts_.traces_forced;
        forced = decide(oldest, victim, forced_keep);
        pending_.erase(stale);
        break;
      }
      tidy_order();
    }
  }
  if (single != nullptr) {
    if (keep)
      next_->end_span(single);
    else
      next_->release_span_data(single);
  }
  settle(decided, keep);
  settle(forced, forced_keep);
}

void DeferredProcessor::tidy_order() {
  auto current = [this](const std::pair<std::uint64_t, LocalTrace>& entry) {
    auto found = pending_.find(entry.second);
    return found != pending_.end() && found->second.order == entry.first;
  };
  // Entries of decided traces pile up at the front; drop them.
  while (!pending_order_.empty() && !current(pending_order_.front())) pending_order_.pop_front();
  // Behind an undecided oldest trace they pile up too: rebuild when most are stale.
  if (pending_order_.size() > 2 * pending_.size() + 64) {
    std::deque<std::pair<std::uint64_t, LocalTrace>> live;
    for (const auto& entry : pending_order_)
      if (current(entry)) live.push_back(entry);
    pending_order_.swap(live);
  }
}

std::vector<SpanData*> DeferredProcessor::decide(const LocalTrace& trace_id, Pending& pending,
                                                 bool keep) {
  std::vector<SpanData*> spans = std::move(pending.spans);
  buffered_ -= spans.size();
  (keep ? counts_.traces_kept : counts_.traces_discarded)++;
  (keep ? counts_.spans_kept : counts_.spans_discarded) += spans.size();
  remember(trace_id, keep);
  return spans;
}

DeferredProcessor::Decided* DeferredProcessor::find_decided(const LocalTrace& key) noexcept {
  Decided& slot = decided_[LocalTraceHash{}(key) % decided_slots];
  return slot.key == key && key.trace_id.valid() ? &slot : nullptr;
}

void DeferredProcessor::remember(const LocalTrace& key, bool keep) {
  Decided& slot = decided_[LocalTraceHash{}(key) % decided_slots];
  slot.key = key;
  slot.keep = keep;
}

void DeferredProcessor::settle(std::vector<SpanData*>& spans, bool keep) noexcept {
  for (SpanData* span : spans) {
    if (keep)
      next_->end_span(span);
    else
      next_->release_span_data(span);
  }
  spans.clear();
}

bool DeferredProcessor::force_flush(std::chrono::milliseconds timeout) {
  return next_->force_flush(timeout);
}

bool DeferredProcessor::shutdown() {
  std::vector<std::pair<std::vector<SpanData*>, bool>> all;
  {
    std::lock_guard lock(mutex_);
    for (auto& [trace_id, pending] : pending_) {
      bool keep =
          pending.keep || (!pending.spans.empty() && pending.spans.front()->context.sampled());
      all.emplace_back(decide(trace_id, pending, keep), keep);
    }
    pending_.clear();
    pending_order_.clear();
  }
  for (auto& [spans, keep] : all) settle(spans, keep);
  return next_->shutdown();
}

DeferredCounts DeferredProcessor::counts() const {
  std::lock_guard lock(mutex_);
  return counts_;
}

}  // namespace micro::trace::sdk
