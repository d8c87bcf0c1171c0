// broker/nats — publish/subscribe over a NATS server or cluster, through the NATS C client.
//
// Shape: one natsConnection per connect(); micro subscriptions live in the broker's own table
// and are bound to a natsSubscription on every connection, so they survive disconnect() and
// come back on connect(). While connected, the C client itself reconnects after a server
// loss, restores subscriptions and buffers publishes (up to `reconnect_buffer` bytes); a
// publish it cannot take throws 503, so nothing is lost without the caller knowing.
//
// Threads: the C client calls message handlers on its own delivery thread, one per
// subscription (so each subscription sees messages in order), and connection events on its
// callback thread. A slow handler holds up only its own subscription.
//
// Wire: native messages are NATS headers + raw body; `encoding=gomicro` sends Go-Micro's
// JSON envelope {"Header":{...},"Body":"<base64>"}. Receiving accepts both.

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <nats/nats.h>
#include <nlohmann/json.hpp>

#include <micro/base64.hpp>
#include <micro/broker.hpp>
#include <micro/error.hpp>
#include <micro/log.hpp>
#include <micro/plugin.hpp>
#include <micro/random.hpp>

namespace {

using micro::Message;
using micro::MessageHandler;

constexpr const char* error_id = "micro.broker.nats";

[[noreturn]] void throw_bad_request(std::string detail) {
  throw micro::Exception(micro::bad_request(error_id, std::move(detail)));
}

[[noreturn]] void throw_unavailable(std::string detail) {
  throw micro::Exception(micro::unavailable(error_id, std::move(detail)));
}

constexpr std::string_view log_component = "broker nats";

// ---- address: "host:port,host:port" → NATS URLs ----

std::vector<std::string> parse_address(std::string_view address) {
  std::vector<std::string> urls;
  if (address.empty()) return {"nats://127.0.0.1:4222"};
  std::size_t start = 0;
  int position = 1;
  while (true) {
    std::size_t comma = address.find(',', start);
    std::string_view entry = address.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    while (!entry.empty() && entry.front() == ' ') entry.remove_prefix(1);
    while (!entry.empty() && entry.back() == ' ') entry.remove_suffix(1);
    if (entry.empty())
      throw_bad_request("address '" + std::string(address) + "': entry " +
                        std::to_string(position) + " is empty");
    std::string scheme = "nats://";
    for (std::string_view prefix : {"nats://", "tls://"}) {
      if (entry.starts_with(prefix)) {
        scheme = std::string(prefix);
        entry.remove_prefix(prefix.size());
      }
    }
    // Credentials in the URL ("user:pass@host:port") pass through to the C client.
    std::size_t at = entry.rfind('@');
    std::string_view host_port = at == std::string_view::npos ? entry : entry.substr(at + 1);
    std::string_view host = host_port;
    std::string_view port = "4222";
    std::size_t colon = host_port.rfind(':');
    bool bracketed = host_port.starts_with('[');
    if (colon != std::string_view::npos && (!bracketed || colon > host_port.find(']'))) {
      host = host_port.substr(0, colon);
      port = host_port.substr(colon + 1);
    }
    if (host.empty() || host == "[]")
      throw_bad_request("address entry '" + std::string(entry) + "': host is empty");
    int port_number = 0;
    bool port_ok = !port.empty() && port.size() <= 5;
    for (char c : port) {
      if (c < '0' || c > '9')
        port_ok = false;
      else
        port_number = port_number * 10 + (c - '0');
    }
    if (!port_ok || port_number < 1 || port_number > 65535)
      throw_bad_request("address entry '" + std::string(entry) + "': port '" + std::string(port) +
                        "' is not a number from 1 to 65535");
    std::string url = scheme;
    if (at != std::string_view::npos) url += std::string(entry.substr(0, at + 1));
    url += std::string(host) + ":" + std::to_string(port_number);
    urls.push_back(std::move(url));
    if (comma == std::string_view::npos) return urls;
    start = comma + 1;
    ++position;
  }
}

// ---- the broker ----

enum class Encoding { native, gomicro };

// Values and their defaults come from nats_options (the descriptor), read by read_settings.
struct Settings {
  std::vector<std::string> urls;
  std::string name, user, password, token, tls_ca, tls_cert, tls_key;
  bool tls = false;
  bool randomize = true;
  std::chrono::milliseconds connect_timeout{};
  std::chrono::milliseconds reconnect_wait{};
  std::int64_t max_reconnects = 0;
  std::int64_t reconnect_buffer = 0;
  std::chrono::milliseconds drain_timeout{};
  Encoding encoding = Encoding::native;
};

Settings read_settings(const micro::PluginArguments& arguments) {
  Settings settings;
  settings.urls = parse_address(arguments.address());
  settings.name = arguments.get_string("name");
  settings.user = arguments.get_string("user");
  settings.password = arguments.get_string("password");
  settings.token = arguments.get_string("token");
  settings.tls = arguments.get_bool("tls");
  settings.tls_ca = arguments.get_string("tls_ca");
  settings.tls_cert = arguments.get_string("tls_cert");
  settings.tls_key = arguments.get_string("tls_key");
  settings.randomize = arguments.get_bool("randomize");
  settings.connect_timeout = arguments.get_duration("connect_timeout");
  settings.reconnect_wait = arguments.get_duration("reconnect_wait");
  settings.max_reconnects = arguments.get_int("max_reconnects");
  settings.reconnect_buffer = arguments.get_int("reconnect_buffer");
  settings.drain_timeout = arguments.get_duration("drain_timeout");
  std::string encoding = arguments.get_string("encoding");
  if (encoding == "gomicro")
    settings.encoding = Encoding::gomicro;
  else if (encoding != "native")
    throw_bad_request("option encoding: expected native or gomicro, got '" + encoding + "'");
  if (!settings.password.empty() && settings.user.empty())
    throw_bad_request("option password needs option user");
  if (!settings.token.empty() && !settings.user.empty())
    throw_bad_request("options token and user cannot be used together");
  if (settings.tls_cert.empty() != settings.tls_key.empty())
    throw_bad_request("options tls_cert and tls_key go together");
  if (!settings.tls_ca.empty() || !settings.tls_cert.empty()) settings.tls = true;
  return settings;
}

// Fails with 400 naming the option when `path` cannot be opened for reading: the C client
// would only say "(null)".
void require_readable(const char* option, const std::string& path) {
  if (FILE* file = std::fopen(path.c_str(), "r")) {
    std::fclose(file);
    return;
  }
  int error_number = errno;
  throw_bad_request(std::string(option) + " '" + path +
                    "': cannot read the file: " + std::strerror(error_number));
}

// What a failed TLS connection most likely means, from the settings and the C client's text
// (OpenSSL's reason is in it), as a sentence to append to the error.
std::string tls_hint(const Settings& settings, natsStatus status, const std::string& detail) {
  auto says = [&](const char* part) {
    return detail.find(part) != std::string::npos;
  };
  // With TLS 1.3 a server refuses a client certificate after the handshake: the client then
  // sees the connection close where it expected the server's first PONG.
  if (status == NATS_PROTOCOL_ERROR || status == NATS_CONNECTION_CLOSED)
    return "; the server closed the connection after TLS set-up: it may demand a client "
           "certificate (none given, or not signed by a CA the server trusts; see tls_cert and "
           "tls_key)";
  if (says("alert"))
    return "; the server refused this client's TLS certificate: none given, or not signed by a "
           "CA the server trusts (see tls_cert and tls_key)";
  bool verification = says("certificate verify failed") || says("local issuer") ||
                      says("self-signed") || says("self signed") || says("hostname mismatch") ||
                      says("IP address mismatch");
  if (!settings.tls)
    return "; the server requires TLS: set tls_ca to the CA that signed its certificate (or tls "
           "to true if this system's CAs trust it)";
  if (verification && !settings.tls_ca.empty())
    return "; the server's TLS certificate was not accepted: is it signed by a CA in tls_ca (" +
           settings.tls_ca + ") and issued for the address connected to?";
  if (verification)
    return "; the server's TLS certificate was not accepted: it is not signed by a CA this "
           "system trusts; set tls_ca to the CA that signed it";
  return "; TLS could not be set up with this server";
}

std::string status_text(natsStatus status) {
  std::string text = natsStatus_GetText(status);
  natsStatus last = NATS_OK;
  const char* detail = nats_GetLastError(&last);
  if (detail && *detail && text != detail) text += " (" + std::string(detail) + ")";
  return text;
}

// Connection events, shared with the C client's callback thread. One per broker; it outlives
// every connection it was given to (see NatsBroker's destructor).
struct ConnectionEvents {
  std::mutex mutex;
  std::condition_variable changed;
  std::uint64_t closed_count = 0;
  std::atomic<std::uint64_t> disconnects{0}, reconnects{0};
  // Set by disconnect(): a close we asked for is routine (debug), any other is a warning.
  std::atomic<bool> closing{false};

  static std::string url_of(natsConnection* connection) {
    char buffer[256] = {0};
    if (natsConnection_GetConnectedUrl(connection, buffer, sizeof buffer) != NATS_OK ||
        buffer[0] == 0)
      return "(none)";
    return buffer;
  }
  std::string server_url;  // the last server connected to (guarded by mutex)

  void connected_to(natsConnection* connection) {
    std::string url = url_of(connection);
    std::lock_guard lock(mutex);
    server_url = std::move(url);
  }
  static void on_disconnected(natsConnection* connection, void* closure) {
    // A close we asked for (disconnect()) also passes through here; it is logged as closed.
    if (natsConnection_IsClosed(connection) || natsConnection_IsDraining(connection)) return;
    auto* self = static_cast<ConnectionEvents*>(closure);
    auto count = self->disconnects.fetch_add(1) + 1;
    std::string url;
    {
      std::lock_guard lock(self->mutex);
      url = self->server_url;
    }
    micro::log::warn(log_component, "disconnected from " + url + " (disconnect #" +
                                        std::to_string(count) +
                                        "); publishes are buffered while reconnecting");
  }
  static void on_reconnected(natsConnection* connection, void* closure) {
    auto* self = static_cast<ConnectionEvents*>(closure);
    self->connected_to(connection);
    auto count = self->reconnects.fetch_add(1) + 1;
    micro::log::info(log_component, "reconnected to " + url_of(connection) + " (reconnect #" +
                                        std::to_string(count) + "); subscriptions restored");
  }
  static void on_closed(natsConnection*, void* closure) {
    auto* self = static_cast<ConnectionEvents*>(closure);
    if (self->closing.load())
      micro::log::debug(log_component, "connection closed");
    else
      micro::log::warn(log_component, "connection closed: reconnect attempts exhausted");
    std::lock_guard lock(self->mutex);
    ++self->closed_count;
    self->changed.notify_all();
  }
};

struct Core;

// One micro subscription. `binding` is its natsSubscription on the current connection.
struct SubscriptionState {
  std::string topic;
  std::string queue;
  MessageHandler handler;
  std::weak_ptr<Core> core;
  std::atomic<bool> active{true};
  // Held while the handler runs, so unsubscribe can wait for a delivery in progress.
  std::mutex delivery_mutex;
  std::atomic<std::thread::id> delivering_thread{};
  natsSubscription* binding = nullptr;  // guarded by Core::subscriptions_mutex
};

struct Core {
  Settings settings;
  std::shared_ptr<ConnectionEvents> events = std::make_shared<ConnectionEvents>();

  // Publishers hold it shared while using `connection`; connect/disconnect swap it exclusively.
  std::shared_mutex connection_mutex;
  natsConnection* connection = nullptr;

  std::mutex subscriptions_mutex;
  std::vector<std::shared_ptr<SubscriptionState>> subscriptions;

  micro::BrokerErrorReporter errors{"nats"};

  // natsSubscriptions whose last callback has not finished yet (see on_complete).
  std::atomic<int> live_bindings{0};
  std::mutex bindings_mutex;
  std::condition_variable bindings_done;
};

// What the C client's callbacks get as closure: keeps the state alive until the
// natsSubscription's final callback (on_complete) has run.
struct BindingClosure {
  std::shared_ptr<SubscriptionState> state;
  std::shared_ptr<Core> core;
};

Message to_message(natsMsg* raw) {
  Message message;
  message.topic = natsMsg_GetSubject(raw);
  const char* data = natsMsg_GetData(raw);
  int length = natsMsg_GetDataLength(raw);
  const char** keys = nullptr;
  int key_count = 0;
  if (natsMsgHeader_Keys(raw, &keys, &key_count) == NATS_OK && key_count > 0) {
    for (int i = 0; i < key_count; ++i) {
      const char** values = nullptr;
      int value_count = 0;
      std::string value;
      if (natsMsgHeader_Values(raw, keys[i], &values, &value_count) == NATS_OK) {
        // Metadata holds one value per key; repeated NATS header values are joined as HTTP does.
        for (int v = 0; v < value_count; ++v) {
          if (v > 0) value += ",";
          value += values[v] ? values[v] : "";
        }
        std::free(static_cast<void*>(values));
      }
      message.headers.set(keys[i], std::move(value));
    }
    std::free(static_cast<void*>(keys));
    message.body.assign(data ? data : "", static_cast<std::size_t>(length));
    return message;
  }
  std::string_view body(data ? data : "", static_cast<std::size_t>(length));
  if (!decode_gomicro_envelope(body, message)) message.body.assign(body);
  return message;
}

void on_message(natsConnection*, natsSubscription*, natsMsg* raw, void* closure) {
  auto* binding = static_cast<BindingClosure*>(closure);
  SubscriptionState& state = *binding->state;
  std::unique_lock lock(state.delivery_mutex);
  if (!state.active.load()) {
    natsMsg_Destroy(raw);
    return;
  }
  Message message = to_message(raw);
  natsMsg_Destroy(raw);
  state.delivering_thread.store(std::this_thread::get_id());
  binding->core->errors.deliver(state.handler, message);
  state.delivering_thread.store(std::thread::id{});
}

void on_complete(void* closure) {
  auto* binding = static_cast<BindingClosure*>(closure);
  std::shared_ptr<Core> core = std::move(binding->core);
  delete binding;
  if (core->live_bindings.fetch_sub(1) == 1) {
    std::lock_guard lock(core->bindings_mutex);
    core->bindings_done.notify_all();
  }
}

// Creates the natsSubscription for `state` on `connection`. Caller holds subscriptions_mutex.
void bind_subscription(const std::shared_ptr<Core>& core,
                       const std::shared_ptr<SubscriptionState>& state,
                       natsConnection* connection) {
  auto* closure = new BindingClosure{state, core};
  natsSubscription* subscription = nullptr;
  natsStatus status =
      state->queue.empty()
          ? natsConnection_Subscribe(&subscription, connection, state->topic.c_str(), on_message,
                                     closure)
          : natsConnection_QueueSubscribe(&subscription, connection, state->topic.c_str(),
                                          state->queue.c_str(), on_message, closure);
  if (status != NATS_OK) {
    delete closure;
    std::string detail = "subscribe to '" + state->topic + "' failed: " + status_text(status);
    if (status == NATS_INVALID_SUBJECT || status == NATS_INVALID_ARG) throw_bad_request(detail);
    throw_unavailable(detail);
  }
  // Generous limits: messages beyond them are dropped by the C client (reported as errors).
  natsSubscription_SetPendingLimits(subscription, 1 << 20, 512 * 1024 * 1024);
  core->live_bindings.fetch_add(1);
  if (natsSubscription_SetOnCompleteCB(subscription, on_complete, closure) != NATS_OK) {
    // Already closed (the connection went away at once): the closure may still be in use by a
    // last callback, so it is leaked rather than freed too early.
    core->live_bindings.fetch_sub(1);
  }
  state->binding = subscription;
}

// Asynchronous errors from the C client, e.g. a subscription that fell behind and lost
// messages: reported through the error handler so no loss goes unnoticed.
void on_async_error(natsConnection*, natsSubscription* subscription, natsStatus status,
                    void* closure) {
  auto* core = static_cast<Core*>(closure);
  Message message;
  if (subscription) {
    // The subject is not exposed by the C API; find our subscription by its binding.
    std::lock_guard lock(core->subscriptions_mutex);
    for (const auto& state : core->subscriptions)
      if (state->binding == subscription) message.topic = state->topic;
  }
  std::string what = std::string("nats: ") + natsStatus_GetText(status);
  if (status == NATS_SLOW_CONSUMER)
    what += ": messages were dropped because the handler fell behind";
  core->errors.report(message, what);
}

class NatsSubscription : public micro::Subscription {
 public:
  NatsSubscription(std::shared_ptr<SubscriptionState> state, std::weak_ptr<Core> core)
      : state_(std::move(state)), core_(std::move(core)) {}

  const std::string& topic() const noexcept override { return state_->topic; }
  const std::string& queue() const noexcept override { return state_->queue; }

  void unsubscribe() override {
    if (!state_->active.exchange(false)) return;
    natsSubscription* binding = nullptr;
    if (auto core = core_.lock()) {
      std::lock_guard lock(core->subscriptions_mutex);
      std::erase(core->subscriptions, state_);
      binding = std::exchange(state_->binding, nullptr);
    }
    if (binding) {
      natsSubscription_Unsubscribe(binding);  // fails harmlessly if the connection is closed
      natsSubscription_Destroy(binding);
    }
    // A delivery already running on another thread finishes before we return; from inside
    // the handler itself there is nothing to wait for.
    if (state_->delivering_thread.load() != std::this_thread::get_id()) {
      std::lock_guard wait(state_->delivery_mutex);
    }
  }

 private:
  std::shared_ptr<SubscriptionState> state_;
  std::weak_ptr<Core> core_;
};

class NatsBroker : public micro::Broker {
 public:
  explicit NatsBroker(const micro::PluginArguments& arguments) : core_(std::make_shared<Core>()) {
    core_->settings = read_settings(arguments);
  }

  ~NatsBroker() override {
    try {
      disconnect();
    } catch (...) {
    }
    // Let the last callbacks of every natsSubscription finish before the core goes away.
    std::unique_lock lock(core_->bindings_mutex);
    core_->bindings_done.wait_for(lock, std::chrono::seconds(5),
                                  [&] { return core_->live_bindings.load() <= 0; });
  }

  void connect() override {
    std::lock_guard lifecycle(lifecycle_mutex_);
    {
      std::shared_lock lock(core_->connection_mutex);
      if (core_->connection) return;
    }
    natsConnection* connection = open_connection();
    std::lock_guard lock(core_->subscriptions_mutex);
    try {
      for (const auto& state : core_->subscriptions) bind_subscription(core_, state, connection);
    } catch (...) {
      for (const auto& state : core_->subscriptions)
        if (state->binding) natsSubscription_Destroy(std::exchange(state->binding, nullptr));
      natsConnection_Destroy(connection);
      throw;
    }
    if (!core_->subscriptions.empty()) confirm_interest(connection);
    std::unique_lock exclusive(core_->connection_mutex);
    core_->connection = connection;
  }

  void disconnect() override {
    std::lock_guard lifecycle(lifecycle_mutex_);
    natsConnection* connection = nullptr;
    {
      std::unique_lock exclusive(core_->connection_mutex);
      connection = std::exchange(core_->connection, nullptr);
    }
    if (!connection) return;
    std::vector<natsSubscription*> bindings;
    {
      std::lock_guard lock(core_->subscriptions_mutex);
      for (const auto& state : core_->subscriptions)
        if (state->binding) bindings.push_back(std::exchange(state->binding, nullptr));
    }
    std::uint64_t closed_before = 0;
    core_->events->closing.store(true);
    {
      std::lock_guard lock(core_->events->mutex);
      closed_before = core_->events->closed_count;
    }
    // Drain: stop interest, let every message already received reach its handler, flush what
    // was published, then close. If draining is impossible (e.g. reconnecting), just close.
    auto timeout = core_->settings.drain_timeout;
    // Closed by the C client already (max_reconnects reached): nothing is left to drain.
    bool already_closed = natsConnection_IsClosed(connection);
    if (!already_closed && natsConnection_DrainTimeout(connection, timeout.count()) != NATS_OK)
      natsConnection_Close(connection);
    if (!already_closed) {
      std::unique_lock lock(core_->events->mutex);
      bool closed = core_->events->changed.wait_for(lock, timeout + std::chrono::seconds(2), [&] {
        return core_->events->closed_count > closed_before;
      });
      if (!closed) {
        lock.unlock();
        micro::log::warn(log_component, "drain did not finish within " +
                                            std::to_string(timeout.count()) + " ms; closing");
        natsConnection_Close(connection);
      }
    }
    // The C client may still be inside a last handler call; let it finish (unless that is us).
    std::vector<std::shared_ptr<SubscriptionState>> states;
    {
      std::lock_guard lock(core_->subscriptions_mutex);
      states = core_->subscriptions;
    }
    for (const auto& state : states)
      if (state->delivering_thread.load() != std::this_thread::get_id())
        std::lock_guard wait(state->delivery_mutex);
    for (natsSubscription* binding : bindings) natsSubscription_Destroy(binding);
    natsConnection_Destroy(connection);
  }

  void publish(const Message& message) override {
    micro::validate_topic(message.topic, micro::TopicUse::publish, error_id);
    std::shared_lock lock(core_->connection_mutex);
    natsConnection* connection = core_->connection;
    if (!connection) throw_unavailable("broker is not connected");
    if (core_->settings.reconnect_buffer == 0 &&
        natsConnection_Status(connection) != NATS_CONN_STATUS_CONNECTED)
      throw_unavailable("not connected to a NATS server and reconnect_buffer is 0; message '" +
                        message.topic + "' not sent");
    natsStatus status = NATS_OK;
    if (core_->settings.encoding == Encoding::gomicro) {
      std::string envelope = encode_gomicro_envelope(message);
      status = natsConnection_Publish(connection, message.topic.c_str(), envelope.data(),
                                      static_cast<int>(envelope.size()));
    } else if (message.headers.empty()) {
      status = natsConnection_Publish(connection, message.topic.c_str(), message.body.data(),
                                      static_cast<int>(message.body.size()));
    } else {
      status = publish_with_headers(connection, message);
    }
    if (status == NATS_OK) return;
    if (status == NATS_INSUFFICIENT_BUFFER)
      throw_unavailable("reconnect buffer full (" +
                        std::to_string(core_->settings.reconnect_buffer) +
                        " bytes) while reconnecting; message to '" + message.topic + "' not sent");
    if (status == NATS_MAX_PAYLOAD)
      throw_bad_request("message to '" + message.topic + "' exceeds the server's maximum payload");
    throw_unavailable("publish to '" + message.topic + "' failed: " + status_text(status));
  }

  std::shared_ptr<micro::Subscription> subscribe(
      std::string topic, MessageHandler handler,
      const micro::SubscribeOptions& options = {}) override {
    micro::validate_topic(topic, micro::TopicUse::subscribe, error_id);
    if (!handler) throw_bad_request("handler is empty");
    // Core NATS has no acknowledgement (JetStream would; this plugin does not use it).
    micro::require_delivery(options, false, "nats", error_id);
    if (options.queue.find_first_of(" \t\r\n") != std::string::npos)
      throw_bad_request("queue '" + options.queue + "' contains whitespace");
    auto state = std::make_shared<SubscriptionState>();
    state->topic = std::move(topic);
    state->queue = options.queue;
    state->handler = std::move(handler);
    state->core = core_;
    {
      std::lock_guard lock(core_->subscriptions_mutex);
      std::shared_lock shared(core_->connection_mutex);
      if (core_->connection) {
        bind_subscription(core_, state, core_->connection);
        confirm_interest(core_->connection);
      }
      core_->subscriptions.push_back(state);
    }
    return std::make_shared<NatsSubscription>(std::move(state), core_);
  }

  void set_error_handler(std::function<void(const Message&, std::string_view)> handler) override {
    core_->errors.set_handler(std::move(handler));
  }

 private:
  // A round trip, so that once subscribe/connect returns the server knows the interest and a
  // message published from another connection reaches it. If the server is away, the C client
  // sends the interest again on reconnect; nothing to report here.
  void confirm_interest(natsConnection* connection) {
    natsConnection_FlushTimeout(connection, core_->settings.connect_timeout.count());
  }

  natsStatus publish_with_headers(natsConnection* connection, const Message& message) {
    natsMsg* raw = nullptr;
    natsStatus status = natsMsg_Create(&raw, message.topic.c_str(), nullptr, message.body.data(),
                                       static_cast<int>(message.body.size()));
    for (const auto& [key, value] : message.headers) {
      if (status != NATS_OK) break;
      status = natsMsgHeader_Set(raw, key.c_str(), value.c_str());
    }
    if (status == NATS_OK) status = natsConnection_PublishMsg(connection, raw);
    natsMsg_Destroy(raw);
    return status;
  }

  natsConnection* open_connection() {
    const Settings& settings = core_->settings;
    natsOptions* options = nullptr;
    if (natsOptions_Create(&options) != NATS_OK) throw_unavailable("cannot create NATS options");
    std::unique_ptr<natsOptions, decltype(&natsOptions_Destroy)> guard(options,
                                                                       natsOptions_Destroy);
    std::vector<const char*> servers;
    for (const auto& url : settings.urls) servers.push_back(url.c_str());
    auto check = [](natsStatus result, const char* what) {
      if (result != NATS_OK) throw_bad_request(std::string(what) + ": " + status_text(result));
    };
    check(natsOptions_SetServers(options, servers.data(), static_cast<int>(servers.size())),
          "servers");
    check(natsOptions_SetNoRandomize(options, !settings.randomize), "randomize");
    if (!settings.name.empty()) check(natsOptions_SetName(options, settings.name.c_str()), "name");
    if (!settings.user.empty())
      check(natsOptions_SetUserInfo(options, settings.user.c_str(), settings.password.c_str()),
            "user");
    if (!settings.token.empty())
      check(natsOptions_SetToken(options, settings.token.c_str()), "token");
    if (settings.tls) {
      check(natsOptions_SetSecure(options, true), "tls");
      if (!settings.tls_ca.empty()) {
        require_readable("tls_ca", settings.tls_ca);
        check(natsOptions_LoadCATrustedCertificates(options, settings.tls_ca.c_str()),
              ("tls_ca '" + settings.tls_ca + "'").c_str());
      }
      if (!settings.tls_cert.empty()) {
        require_readable("tls_cert", settings.tls_cert);
        require_readable("tls_key", settings.tls_key);
        check(natsOptions_LoadCertificatesChain(options, settings.tls_cert.c_str(),
                                                settings.tls_key.c_str()),
              ("tls_cert '" + settings.tls_cert + "' with tls_key '" + settings.tls_key + "'")
                  .c_str());
      }
    }
    check(natsOptions_SetTimeout(options, settings.connect_timeout.count()), "connect_timeout");
    check(natsOptions_SetReconnectWait(options, settings.reconnect_wait.count()), "reconnect_wait");
    check(natsOptions_SetMaxReconnect(options, static_cast<int>(settings.max_reconnects)),
          "max_reconnects");
    if (settings.reconnect_buffer > 0)
      check(natsOptions_SetReconnectBufSize(options, static_cast<int>(settings.reconnect_buffer)),
            "reconnect_buffer");
    check(natsOptions_SetMaxPendingMsgs(options, 1 << 20), "pending");
    ConnectionEvents* events = core_->events.get();
    check(natsOptions_SetDisconnectedCB(options, &ConnectionEvents::on_disconnected, events),
          "events");
    check(natsOptions_SetReconnectedCB(options, &ConnectionEvents::on_reconnected, events),
          "events");
    check(natsOptions_SetClosedCB(options, &ConnectionEvents::on_closed, events), "events");
    check(natsOptions_SetErrorHandler(options, on_async_error, core_.get()), "events");

    natsConnection* connection = nullptr;
    natsStatus status = natsConnection_Connect(&connection, options);
    if (status != NATS_OK) {
      std::string servers_text;
      for (const auto& url : settings.urls) servers_text += (servers_text.empty() ? "" : ",") + url;
      std::string detail = "cannot connect to " + servers_text + ": " + status_text(status);
      if (status == NATS_SSL_ERROR || status == NATS_SECURE_CONNECTION_REQUIRED ||
          (settings.tls && (status == NATS_PROTOCOL_ERROR || status == NATS_CONNECTION_CLOSED)))
        detail += tls_hint(settings, status, detail);
      if (status == NATS_CONNECTION_AUTH_FAILED || status == NATS_NOT_PERMITTED)
        throw micro::Exception(micro::Error(error_id, micro::ErrorCode::unauthorized, detail));
      throw_unavailable(detail);
    }
    core_->events->connected_to(connection);
    return connection;
  }

  std::mutex lifecycle_mutex_;  // one connect/disconnect at a time
  std::shared_ptr<Core> core_;
};

const micro::PluginOption nats_options[] = {
    {"name", "string", "", "client name shown by the server"},
    {"user", "string", "", "user name (with password)"},
    {"password", "string", "", "password for user"},
    {"token", "string", "", "authentication token (instead of user/password)"},
    {"tls", "bool", "false", "connect with TLS (implied by tls_ca or tls_cert)"},
    {"tls_ca", "string", "", "PEM file of CA certificates to trust"},
    {"tls_cert", "string", "", "PEM client certificate chain (with tls_key)"},
    {"tls_key", "string", "", "PEM client private key (with tls_cert)"},
    {"randomize", "bool", "true",
     "try the servers in random order (spreads clients over a cluster); false: in order given"},
    {"connect_timeout", "duration", "2s", "timeout of each connection attempt", "1ms"},
    {"reconnect_wait", "duration", "2s", "pause between reconnect attempts to the same server",
     "0s"},
    {"max_reconnects", "int", "60", "reconnect attempts before giving up; -1: forever", "-1",
     "2147483647"},
    {"reconnect_buffer", "int", "8388608",
     "bytes of publishes held while reconnecting; beyond it publish fails with 503; 0: none", "0",
     "2147483647"},
    {"drain_timeout", "duration", "30s", "how long disconnect waits for accepted messages", "1ms"},
    {"encoding", "string", "native",
     "native (NATS headers + raw body) or gomicro (Go-Micro's JSON envelope)"},
};

}  // namespace

MICRO_PLUGIN(broker, nats,
             "publish/subscribe over NATS (servers or a cluster), Go-Micro compatible",
             nats_options, [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new NatsBroker(arguments);
             })
