// broker/memory — the in-process broker: publish/subscribe between parts of one process.
//
// Shape of the hot path: the subscriber table is immutable and swapped whole on every
// subscribe/unsubscribe (copy-on-write), so publish only loads a shared_ptr snapshot and
// never takes an exclusive lock. Each subscription has its own queue; one task per
// subscription, posted to the executor only when its queue goes from idle to busy, drains it
// in order (so per-subscription order holds without a strand, and a burst costs one post, not
// one per message).
//
// Per message the publisher takes the recipient queue's lock once (a short critical section;
// the drain task takes it once per batch) and copies the message: for one recipient straight
// into a queue slot used before, so the strings reuse their storage and a steady stream
// allocates nothing; for several, once into a shared block that each delivery copies (the
// last one moves) on its own thread. The drain task holds no lock while handlers run, and
// moves the counters that unsubscribe and disconnect wait on once per batch.
//
// Topics are NATS subjects: tokens separated by '.', '*' matches one token and '>' the
// rest (one or more tokens). Queue groups are per (subscribed pattern, queue name): each
// message goes to exactly one member of each group, round robin across its members.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/container/small_vector.hpp>

#include <micro/broker.hpp>
#include <micro/error.hpp>
#include <micro/plugin.hpp>

namespace {

using micro::Message;
using micro::MessageHandler;

constexpr const char* error_id = "micro.broker.memory";

// Splits "a.b.c" into its tokens without copying.
std::vector<std::string_view> split_tokens(std::string_view subject) {
  std::vector<std::string_view> tokens;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = subject.find('.', start);
    if (dot == std::string_view::npos) {
      tokens.push_back(subject.substr(start));
      return tokens;
    }
    tokens.push_back(subject.substr(start, dot - start));
    start = dot + 1;
  }
}

bool has_wildcard(std::string_view subject) {
  for (std::string_view token : split_tokens(subject))
    if (token == "*" || token == ">") return true;
  return false;
}

// Does `subject` (no wildcards) match `pattern` (pre-split tokens)?
bool matches(const std::vector<std::string>& pattern, std::string_view subject) {
  std::size_t index = 0;
  std::size_t start = 0;
  while (true) {
    if (index == pattern.size()) return false;  // subject has more tokens than the pattern
    std::size_t dot = subject.find('.', start);
    std::string_view token =
        subject.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    const std::string& expected = pattern[index];
    if (expected == ">") return true;
    if (expected != "*" && expected != token) return false;
    ++index;
    if (dot == std::string_view::npos) return index == pattern.size();
    start = dot + 1;
  }
}

// The message as published, shared by the deliveries of a message with several recipients.
// `readers` counts deliveries that have not finished reading it: one that finds itself the
// only reader left moves the message instead of copying it.
struct SharedMessage {
  Message message;
  std::atomic<std::size_t> readers;
};

// One queued delivery: the recipient's own copy of the message (`message`), or, for a
// message with several recipients, the copy they share (`shared`), which the delivery
// copies into `message` off the publisher's thread.
struct Delivery {
  Message message;
  std::shared_ptr<SharedMessage> shared;
};

// A subscription's deliveries, oldest first, in slots that outlive their deliveries: a new
// delivery is copied over a slot used before, so its strings reuse their storage and a
// steady stream of messages allocates nothing. What is kept for reuse is bounded: while the
// subscription is busy, up to what its recent batches really used (capped per slot and in
// slots), and once it goes idle, a few slots, so a burst does not pin its memory for good.
class DeliveryQueue {
 public:
  bool empty() const noexcept { return used_ == 0; }
  std::size_t size() const noexcept { return used_; }
  Delivery* begin() noexcept { return slots_.data(); }
  Delivery* end() noexcept { return slots_.data() + used_; }

  // The next slot, holding whatever an earlier delivery left in it (its storage to reuse).
  Delivery& push() {
    if (used_ == slots_.size()) slots_.emplace_back();
    return slots_[used_++];
  }

  // Forgets the slot push() returned last.
  void pop() noexcept { --used_; }

  void swap(DeliveryQueue& other) noexcept {
    slots_.swap(other.slots_);
    std::swap(used_, other.used_);
  }

  // Empties the queue after its deliveries ran (cost: the deliveries, not the slots kept):
  // drops shared references at once and keeps the busy retention.
  void recycle() {
    for (std::size_t index = 0; index < used_; ++index) {
      Delivery& delivery = slots_[index];
      delivery.shared.reset();
      if (index >= busy_slots || storage_of(delivery.message) > bytes_per_slot)
        delivery.message = Message();
    }
    used_ = 0;
    shrink_to(busy_slots);
  }

  // Whether the queue keeps more slots than an idle subscription should.
  bool above_idle_retention() const noexcept { return slots_.size() > idle_slots; }

 private:
  // Slots kept for reuse, and the message storage a kept slot may hold. While busy a backlog
  // of small messages keeps being served without allocating; an idle subscription keeps at
  // most 2 queues x 64 slots x 2 KiB.
  static constexpr std::size_t busy_slots = 65536;
  static constexpr std::size_t bytes_per_slot = 2048;
  static constexpr std::size_t idle_slots = 64;

  static std::size_t storage_of(const Message& message) noexcept {
    std::size_t bytes = message.topic.capacity() + message.body.capacity();
    for (const auto& [key, value] : message.headers) bytes += key.capacity() + value.capacity();
    return bytes;
  }

  void shrink_to(std::size_t slot_count) {
    if (slots_.size() <= slot_count) return;
    slots_.resize(slot_count);
    slots_.shrink_to_fit();
  }

  std::vector<Delivery> slots_;
  std::size_t used_ = 0;
};

// One subscription's state. The table and the user's handle share it.
struct Subscriber {
  Subscriber(std::string topic_, std::string queue_, MessageHandler handler_,
             boost::asio::any_io_executor executor_)
      : topic(std::move(topic_)),
        queue(std::move(queue_)),
        handler(std::move(handler_)),
        executor(std::move(executor_)) {}

  const std::string topic;
  const std::string queue;
  const MessageHandler handler;
  const boost::asio::any_io_executor executor;

  // Deliveries waiting for this subscription, oldest first. `scheduled` is true while a
  // drain task is posted or running: at most one exists, which is what keeps the order.
  std::mutex queue_mutex;
  DeliveryQueue waiting;
  bool scheduled = false;
  // Touched only by the drain task: the batch being delivered. The two queues swap roles
  // batch by batch, so both keep their slots for reuse.
  DeliveryQueue batch;

  // Dekker-style pairing with unsubscribe: a batch of deliveries raises in_flight before it
  // checks active (per delivery), unsubscribe clears active before it waits for in_flight to
  // reach zero.
  std::atomic<bool> active{true};
  std::atomic<int> in_flight{0};
  std::mutex mutex;
  std::condition_variable idle;
};

// The one subscriber of a delivery running on this thread, so that unsubscribe and
// disconnect called from inside a handler do not wait for themselves.
thread_local const Subscriber* current_subscriber = nullptr;
// Deliveries this thread finished in its current batch and has not yet taken off
// Core::pending (that happens once per batch); a drain from inside a handler discounts them.
thread_local std::int64_t finished_uncounted = 0;

struct QueueGroup {
  std::string name;
  std::vector<std::shared_ptr<Subscriber>> members;
  // Shared across table copies so the rotation carries on when membership changes.
  std::shared_ptr<std::atomic<std::uint64_t>> next;
};

struct TopicEntry {
  std::vector<std::shared_ptr<Subscriber>> plain;
  std::vector<QueueGroup> groups;

  bool empty() const { return plain.empty() && groups.empty(); }
};

struct PatternEntry {
  std::string pattern;
  std::vector<std::string> tokens;
  std::shared_ptr<const TopicEntry> entry;
};

// An immutable snapshot of every subscription.
struct Table {
  std::unordered_map<std::string, std::shared_ptr<const TopicEntry>> exact;
  std::vector<PatternEntry> patterns;
};

std::shared_ptr<const TopicEntry> with_subscriber(const TopicEntry* old,
                                                  const std::shared_ptr<Subscriber>& subscriber) {
  auto entry = old ? std::make_shared<TopicEntry>(*old) : std::make_shared<TopicEntry>();
  if (subscriber->queue.empty()) {
    entry->plain.push_back(subscriber);
    return entry;
  }
  for (QueueGroup& group : entry->groups) {
    if (group.name == subscriber->queue) {
      group.members.push_back(subscriber);
      return entry;
    }
  }
  entry->groups.push_back(
      QueueGroup{subscriber->queue, {subscriber}, std::make_shared<std::atomic<std::uint64_t>>(0)});
  return entry;
}

// The entry without `subscriber`, or null when nothing is left.
std::shared_ptr<const TopicEntry> without_subscriber(const TopicEntry& old,
                                                     const Subscriber* subscriber) {
  auto entry = std::make_shared<TopicEntry>(old);
  std::erase_if(entry->plain, [&](const auto& member) { return member.get() == subscriber; });
  for (QueueGroup& group : entry->groups)
    std::erase_if(group.members, [&](const auto& member) { return member.get() == subscriber; });
  std::erase_if(entry->groups, [](const QueueGroup& group) { return group.members.empty(); });
  if (entry->empty()) return nullptr;
  return entry;
}

// What the broker and its subscription handles share; handles hold it weakly.
struct Core : std::enable_shared_from_this<Core> {
  explicit Core(boost::asio::any_io_executor executor_) : executor(std::move(executor_)) {}

  boost::asio::any_io_executor executor;
  std::atomic<std::shared_ptr<const Table>> table{std::make_shared<const Table>()};
  std::mutex writer_mutex;  // serialises table writers; readers never take it

  std::atomic<bool> connected{false};
  // Deliveries accepted and not finished.
  std::atomic<std::int64_t> pending{0};
  // Drain tasks posted or running: they run this plugin's code, so the broker's destructor
  // waits for them too (a task may be yielding while no delivery is pending).
  std::atomic<std::int64_t> drain_tasks{0};
  std::atomic<bool> draining{false};
  std::mutex drain_mutex;
  std::condition_variable drained;

  micro::BrokerErrorReporter errors{"memory"};

  void add(const std::shared_ptr<Subscriber>& subscriber) {
    std::lock_guard lock(writer_mutex);
    auto next = std::make_shared<Table>(*table.load());
    if (!has_wildcard(subscriber->topic)) {
      auto found = next->exact.find(subscriber->topic);
      const TopicEntry* old = found == next->exact.end() ? nullptr : found->second.get();
      next->exact[subscriber->topic] = with_subscriber(old, subscriber);
    } else {
      bool placed = false;
      for (PatternEntry& pattern : next->patterns) {
        if (pattern.pattern == subscriber->topic) {
          pattern.entry = with_subscriber(pattern.entry.get(), subscriber);
          placed = true;
          break;
        }
      }
      if (!placed) {
        std::vector<std::string> tokens;
        for (std::string_view token : split_tokens(subscriber->topic)) tokens.emplace_back(token);
        next->patterns.push_back(PatternEntry{subscriber->topic, std::move(tokens),
                                              with_subscriber(nullptr, subscriber)});
      }
    }
    table.store(std::move(next));
  }

  void remove(const Subscriber* subscriber) {
    std::lock_guard lock(writer_mutex);
    auto next = std::make_shared<Table>(*table.load());
    auto found = next->exact.find(subscriber->topic);
    if (found != next->exact.end()) {
      auto entry = without_subscriber(*found->second, subscriber);
      if (entry)
        found->second = std::move(entry);
      else
        next->exact.erase(found);
    }
    for (PatternEntry& pattern : next->patterns)
      if (pattern.pattern == subscriber->topic && pattern.entry)
        pattern.entry = without_subscriber(*pattern.entry, subscriber);
    std::erase_if(next->patterns, [](const PatternEntry& pattern) { return !pattern.entry; });
    table.store(std::move(next));
  }

  void finish_pending(std::int64_t count) {
    if (pending.fetch_sub(count) == count && draining.load()) {
      std::lock_guard lock(drain_mutex);
      drained.notify_all();
    }
  }

  void finish_drain_task() {
    if (drain_tasks.fetch_sub(1) == 1 && draining.load()) {
      std::lock_guard lock(drain_mutex);
      drained.notify_all();
    }
  }

  // Deliveries one drain task makes before it yields the thread to other work on the executor.
  static constexpr std::size_t deliveries_per_turn = 1024;
  // Times a drain task that ran out of work yields its thread and looks again before going
  // idle: under a steady stream the publisher refills the queue meanwhile and is spared
  // waking a thread (a system call, often a context switch) every few messages.
  static constexpr int idle_checks = 3;

  // Queues one delivery, filled in by `fill` on its slot under the queue's lock; posts the
  // subscription's drain task if none is pending. The snapshot keeps the recipient alive;
  // only a new drain task takes a reference from it.
  template <typename Fill>
  void enqueue(const std::shared_ptr<const Table>& snapshot, Subscriber* recipient, Fill&& fill) {
    {
      std::lock_guard lock(recipient->queue_mutex);
      Delivery& slot = recipient->waiting.push();
      try {
        fill(slot);
      } catch (...) {
        recipient->waiting.pop();  // out of memory: nothing half-filled is delivered
        throw;
      }
      if (recipient->scheduled) return;
      recipient->scheduled = true;
    }
    schedule(std::shared_ptr<Subscriber>(snapshot, recipient));
  }

  void schedule(const std::shared_ptr<Subscriber>& subscriber) {
    drain_tasks.fetch_add(1);
    boost::asio::post(subscriber->executor,
                      [self = shared_from_this(), subscriber] { self->drain_queue(subscriber); });
  }

  // The subscription's drain task: delivers queued messages in order, batch by batch, and
  // re-posts itself after a bounded number so one busy subscription cannot hog a thread.
  void drain_queue(const std::shared_ptr<Subscriber>& subscriber) {
    std::size_t delivered = 0;
    int empty_checks = 0;
    bool more = false;
    // What a burst left beyond the idle retention, taken out under the lock and freed after
    // it (once `scheduled` is false another drain task may start and use the queues).
    DeliveryQueue released_waiting, released_batch;
    while (true) {
      {
        std::lock_guard lock(subscriber->queue_mutex);
        if (subscriber->waiting.empty() && empty_checks < idle_checks) {
          ++empty_checks;
        } else if (subscriber->waiting.empty()) {
          subscriber->scheduled = false;
          if (subscriber->waiting.above_idle_retention())
            released_waiting.swap(subscriber->waiting);
          if (subscriber->batch.above_idle_retention()) released_batch.swap(subscriber->batch);
          break;
        } else if (delivered >= deliveries_per_turn) {
          more = true;
          break;
        } else {
          subscriber->batch.swap(subscriber->waiting);
          empty_checks = 0;
        }
      }
      if (empty_checks > 0) {
        std::this_thread::yield();
        continue;
      }
      delivered += subscriber->batch.size();
      deliver_batch(*subscriber);
    }
    if (more) schedule(subscriber);  // more is waiting: stay scheduled, let others run first
    finish_drain_task();
  }

  // Runs the handler for every delivery of the subscriber's batch, in order. The counters
  // unsubscribe and disconnect wait on move once per batch, not per delivery.
  void deliver_batch(Subscriber& subscriber) {
    const Subscriber* outer = current_subscriber;
    std::int64_t outer_uncounted = finished_uncounted;
    current_subscriber = &subscriber;
    finished_uncounted = 0;
    subscriber.in_flight.fetch_add(1);
    for (Delivery& delivery : subscriber.batch) {
      bool active = subscriber.active.load();
      if (delivery.shared) {
        // Several recipients: take this one's copy; the last reader moves it.
        SharedMessage& shared = *delivery.shared;
        if (active && shared.readers.load(std::memory_order_acquire) == 1) {
          delivery.message = std::move(shared.message);
        } else {
          if (active) delivery.message = shared.message;
          shared.readers.fetch_sub(1, std::memory_order_acq_rel);
        }
        delivery.shared.reset();  // let the shared copy go as soon as it is taken
      }
      // The handler may change its message: it is this delivery's own.
      if (active) errors.deliver(subscriber.handler, delivery.message);
      ++finished_uncounted;
    }
    if (subscriber.in_flight.fetch_sub(1) == 1 && !subscriber.active.load()) {
      std::lock_guard lock(subscriber.mutex);
      subscriber.idle.notify_all();
    }
    subscriber.batch.recycle();
    std::int64_t finished = finished_uncounted;
    current_subscriber = outer;
    finished_uncounted = outer_uncounted;
    finish_pending(finished);
  }

  void publish(const Message& message) {
    micro::validate_topic(message.topic, micro::TopicUse::publish, error_id);
    std::shared_ptr<const Table> snapshot = table.load();

    // Collect the recipients first: the count lets the last delivery move the message.
    boost::container::small_vector<Subscriber*, 8> recipients;  // no allocation for most topics
    auto collect = [&](const TopicEntry& entry) {
      for (const auto& subscriber : entry.plain) recipients.push_back(subscriber.get());
      for (const QueueGroup& group : entry.groups) {
        std::uint64_t turn = group.next->fetch_add(1, std::memory_order_relaxed);
        recipients.push_back(group.members[turn % group.members.size()].get());
      }
    };
    auto found = snapshot->exact.find(message.topic);
    if (found != snapshot->exact.end()) collect(*found->second);
    for (const PatternEntry& pattern : snapshot->patterns)
      if (matches(pattern.tokens, message.topic)) collect(*pattern.entry);

    // Count the deliveries before checking the connection: either disconnect sees them
    // pending and waits, or this publish sees it disconnected and refuses.
    std::int64_t count = static_cast<std::int64_t>(recipients.size());
    if (count > 0) pending.fetch_add(count);
    if (!connected.load()) {
      if (count > 0) finish_pending(count);
      throw micro::Exception(micro::unavailable(error_id, "broker is not connected"));
    }
    std::int64_t queued = 0;
    try {
      if (count == 1) {
        // One recipient: its own copy, written over a used slot (no allocation once warm).
        enqueue(snapshot, recipients.front(), [&](Delivery& slot) { slot.message = message; });
        queued = 1;
      } else if (count > 1) {
        // Several: one shared copy, each delivery copies it on its own thread.
        auto shared = std::make_shared<SharedMessage>(message, recipients.size());
        for (Subscriber* recipient : recipients) {
          enqueue(snapshot, recipient, [&](Delivery& slot) { slot.shared = shared; });
          ++queued;
        }
      }
    } catch (...) {
      // Out of memory part way: what was not queued is not pending (a shared copy's readers
      // count stays high, so its deliveries copy rather than move: still correct).
      finish_pending(count - queued);
      throw;
    }
  }

  // Waits (at most `limit`, if given) until every accepted delivery has finished. From inside a
  // delivery the caller's own delivery can never finish first, so it waits for the others only
  // (and does not count those its batch finished but has not yet taken off `pending`).
  void drain(std::optional<std::chrono::steady_clock::duration> limit) {
    std::int64_t own = current_subscriber ? 1 + finished_uncounted : 0;
    std::int64_t own_tasks = current_subscriber ? 1 : 0;
    draining.store(true);
    std::unique_lock lock(drain_mutex);
    auto done = [&] {
      return pending.load() <= own && drain_tasks.load() <= own_tasks;
    };
    if (limit)
      drained.wait_for(lock, *limit, done);
    else
      drained.wait(lock, done);
    draining.store(false);
  }
};

class MemorySubscription final : public micro::Subscription {
 public:
  MemorySubscription(std::shared_ptr<Subscriber> subscriber, std::weak_ptr<Core> core)
      : subscriber_(std::move(subscriber)), core_(std::move(core)) {}

  const std::string& topic() const noexcept override { return subscriber_->topic; }
  const std::string& queue() const noexcept override { return subscriber_->queue; }

  void unsubscribe() override {
    if (!subscriber_->active.exchange(false)) return;
    if (auto core = core_.lock()) core->remove(subscriber_.get());
    // Called from the handler itself: later deliveries see `active` and skip.
    if (current_subscriber == subscriber_.get()) return;
    std::unique_lock lock(subscriber_->mutex);
    subscriber_->idle.wait(lock, [&] { return subscriber_->in_flight.load() == 0; });
  }

 private:
  std::shared_ptr<Subscriber> subscriber_;
  std::weak_ptr<Core> core_;
};

class MemoryBroker final : public micro::Broker {
 public:
  explicit MemoryBroker(const micro::PluginArguments& arguments) {
    boost::asio::any_io_executor executor = arguments.executor();
    if (!executor) {
      // Used without a runtime (a tool, a test): deliver on a thread of our own.
      own_context_ = std::make_unique<boost::asio::io_context>();
      own_work_.emplace(own_context_->get_executor());
      own_thread_ = std::thread([context = own_context_.get()] { context->run(); });
      executor = own_context_->get_executor();
    }
    core_ = std::make_shared<Core>(std::move(executor));
  }

  ~MemoryBroker() override {
    core_->connected.store(false);
    // Queued deliveries run this plugin's code; give them a bounded chance to finish
    // before the shared object may be unloaded.
    core_->drain(std::chrono::seconds(5));
    if (own_context_) {
      own_work_.reset();
      own_thread_.join();
    }
  }

  void connect() override { core_->connected.store(true); }

  void disconnect() override {
    core_->connected.store(false);
    core_->drain(std::nullopt);
  }

  void publish(const Message& message) override { core_->publish(message); }

  std::shared_ptr<micro::Subscription> subscribe(
      std::string topic, MessageHandler handler,
      const micro::SubscribeOptions& options = {}) override {
    micro::validate_topic(topic, micro::TopicUse::subscribe, error_id);
    if (!handler) throw micro::Exception(micro::bad_request(error_id, "handler is empty"));
    // In one process there is no server to hold a message for redelivery after a crash.
    micro::require_delivery(options, false, "memory", error_id);
    auto subscriber = std::make_shared<Subscriber>(std::move(topic), options.queue,
                                                   std::move(handler), core_->executor);
    core_->add(subscriber);
    return std::make_shared<MemorySubscription>(std::move(subscriber), core_);
  }

  void set_error_handler(std::function<void(const Message&, std::string_view)> handler) override {
    core_->errors.set_handler(std::move(handler));
  }

 private:
  std::unique_ptr<boost::asio::io_context> own_context_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> own_work_;
  std::thread own_thread_;
  std::shared_ptr<Core> core_;
};

}  // namespace

MICRO_PLUGIN_NO_OPTIONS(broker, memory, "in-process publish/subscribe with queue groups",
                        [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
                          return new MemoryBroker(arguments);
                        })
