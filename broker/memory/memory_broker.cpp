// broker/memory — the in-process broker: publish/subscribe between parts of one process.
//
// Shape of the hot path: the subscriber table is immutable and swapped whole on every
// subscribe/unsubscribe (copy-on-write), so publish only loads a shared_ptr snapshot and
// never takes an exclusive lock. A published message is copied once into a shared,
// immutable block and appended to each recipient's own queue; one task per subscription,
// posted to the executor only when its queue goes from idle to busy, drains the queue in
// order (so per-subscription order holds without a strand, and a burst costs one post, not
// one per message). Each delivery copies the message there, off the publisher's stack — the
// single-recipient case moves it instead.
//
// Topics are NATS subjects: tokens separated by '.', '*' matches one token and '>' the
// rest (one or more tokens). Queue groups are per (subscribed pattern, queue name): each
// message goes to exactly one member of each group, round robin across its members.
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

using ErrorHandler = std::function<void(const Message&, std::string_view)>;

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

// Checks a topic as NATS does: non-empty tokens, '>' only as the last token, and no
// wildcard at all in a topic that is published to.
void validate_topic(std::string_view topic, bool publishing) {
  if (topic.empty()) throw micro::Exception(micro::bad_request(error_id, "topic is empty"));
  std::vector<std::string_view> tokens = split_tokens(topic);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    std::string_view token = tokens[i];
    if (token.empty())
      throw micro::Exception(
          micro::bad_request(error_id, "topic '" + std::string(topic) + "' has an empty token"));
    bool wildcard = token == "*" || token == ">";
    if (wildcard && publishing)
      throw micro::Exception(micro::bad_request(
          error_id, "cannot publish to '" + std::string(topic) + "': it contains a wildcard"));
    if (token == ">" && i + 1 != tokens.size())
      throw micro::Exception(micro::bad_request(
          error_id, "topic '" + std::string(topic) + "': '>' must be the last token"));
  }
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

// The message as published, shared by all its deliveries. `readers` counts deliveries
// that have not finished reading it: one that finds itself the only reader left moves
// the message instead of copying it (always so for a single recipient).
struct SharedMessage {
  Message message;
  std::atomic<std::size_t> readers;
};

struct Core;

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
  std::vector<std::shared_ptr<SharedMessage>> waiting;
  bool scheduled = false;
  // Touched only by the drain task: the batch being delivered, kept to reuse its storage.
  std::vector<std::shared_ptr<SharedMessage>> batch;

  // Dekker-style pairing with unsubscribe: a delivery raises in_flight before it checks
  // active, unsubscribe clears active before it waits for in_flight to reach zero.
  std::atomic<bool> active{true};
  std::atomic<int> in_flight{0};
  std::mutex mutex;
  std::condition_variable idle;
};

// The one subscriber of a delivery running on this thread, so that unsubscribe and
// disconnect called from inside a handler do not wait for themselves.
thread_local const Subscriber* current_subscriber = nullptr;

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
  // Deliveries accepted and not finished (plus publishes between check and post).
  std::atomic<std::int64_t> pending{0};
  std::atomic<bool> draining{false};
  std::mutex drain_mutex;
  std::condition_variable drained;

  std::mutex error_mutex;
  std::shared_ptr<const ErrorHandler> error_handler;

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

  void report_error(const Message& message, std::string_view what) {
    std::shared_ptr<const ErrorHandler> handler;
    {
      std::lock_guard lock(error_mutex);
      handler = error_handler;
    }
    if (handler && *handler) {
      try {
        (*handler)(message, what);
      } catch (...) {
        // An error handler that throws has nowhere to report to.
      }
      return;
    }
    std::string line = "[micro] broker memory: handler for topic '" + message.topic +
                       "' failed: " + std::string(what) + "\n";
    std::fwrite(line.data(), 1, line.size(), stderr);
  }

  void finish_pending(std::int64_t count) {
    if (pending.fetch_sub(count) == count && draining.load()) {
      std::lock_guard lock(drain_mutex);
      drained.notify_all();
    }
  }

  // Deliveries one drain task makes before it yields the thread to other work on the executor.
  static constexpr std::size_t deliveries_per_turn = 1024;

  // Queues one delivery; posts the subscription's drain task if none is pending. The
  // snapshot keeps the recipient alive; only a new drain task takes a reference from it.
  void enqueue(const std::shared_ptr<const Table>& snapshot, Subscriber* recipient,
               const std::shared_ptr<SharedMessage>& shared) {
    {
      std::lock_guard lock(recipient->queue_mutex);
      recipient->waiting.push_back(shared);
      if (recipient->scheduled) return;
      recipient->scheduled = true;
    }
    schedule(std::shared_ptr<Subscriber>(snapshot, recipient));
  }

  void schedule(const std::shared_ptr<Subscriber>& subscriber) {
    boost::asio::post(subscriber->executor,
                      [self = shared_from_this(), subscriber] { self->drain_queue(subscriber); });
  }

  // The subscription's drain task: delivers queued messages in order, batch by batch, and
  // re-posts itself after a bounded number so one busy subscription cannot hog a thread.
  void drain_queue(const std::shared_ptr<Subscriber>& subscriber) {
    std::size_t delivered = 0;
    while (true) {
      {
        std::lock_guard lock(subscriber->queue_mutex);
        if (subscriber->waiting.empty()) {
          subscriber->scheduled = false;
          return;
        }
        if (delivered >= deliveries_per_turn) break;
        subscriber->batch.swap(subscriber->waiting);
      }
      for (auto& shared : subscriber->batch) {
        deliver(subscriber, shared);
        shared.reset();  // let the message go as soon as it is delivered
      }
      delivered += subscriber->batch.size();
      subscriber->batch.clear();
    }
    schedule(subscriber);  // more is waiting: stay scheduled, but let others run first
  }

  // Runs in the subscriber's drain task, one delivery at a time.
  void deliver(const std::shared_ptr<Subscriber>& subscriber,
               const std::shared_ptr<SharedMessage>& shared) {
    subscriber->in_flight.fetch_add(1);
    if (subscriber->active.load()) {
      // The handler may change its message, so each delivery gets its own.
      Message own;
      if (shared->readers.load(std::memory_order_acquire) == 1) {
        own = std::move(shared->message);
      } else {
        own = shared->message;
        shared->readers.fetch_sub(1, std::memory_order_acq_rel);
      }
      const Subscriber* outer = current_subscriber;
      current_subscriber = subscriber.get();
      try {
        subscriber->handler(own);
      } catch (const std::exception& error) {
        report_error(own, error.what());
      } catch (...) {
        report_error(own, "unknown exception");
      }
      current_subscriber = outer;
    } else {
      shared->readers.fetch_sub(1, std::memory_order_acq_rel);
    }
    if (subscriber->in_flight.fetch_sub(1) == 1 && !subscriber->active.load()) {
      std::lock_guard lock(subscriber->mutex);
      subscriber->idle.notify_all();
    }
    finish_pending(1);
  }

  void publish(const Message& message) {
    validate_topic(message.topic, true);
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
    pending.fetch_add(count + 1);
    if (!connected.load()) {
      finish_pending(count + 1);
      throw micro::Exception(micro::unavailable(error_id, "broker is not connected"));
    }
    if (count > 0) {
      auto shared = std::make_shared<SharedMessage>(message, recipients.size());
      for (Subscriber* recipient : recipients) enqueue(snapshot, recipient, shared);
    }
    finish_pending(1);
  }

  // Waits (at most `limit`, if given) until every accepted delivery has finished. From inside a
  // delivery the caller's own delivery can never finish first, so it waits for the others only.
  void drain(std::optional<std::chrono::steady_clock::duration> limit) {
    std::int64_t own = current_subscriber ? 1 : 0;
    draining.store(true);
    std::unique_lock lock(drain_mutex);
    auto done = [&] {
      return pending.load() <= own;
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
    validate_topic(topic, false);
    if (!handler) throw micro::Exception(micro::bad_request(error_id, "handler is empty"));
    auto subscriber = std::make_shared<Subscriber>(std::move(topic), options.queue,
                                                   std::move(handler), core_->executor);
    core_->add(subscriber);
    return std::make_shared<MemorySubscription>(std::move(subscriber), core_);
  }

  void set_error_handler(std::function<void(const Message&, std::string_view)> handler) override {
    auto shared = std::make_shared<const ErrorHandler>(std::move(handler));
    std::lock_guard lock(core_->error_mutex);
    core_->error_handler = std::move(shared);
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
