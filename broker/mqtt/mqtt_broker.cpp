// broker/mqtt — publish/subscribe over an MQTT server (3.1.1 or 5) through libmosquitto.
//
// Topics: micro's "orders.created" is MQTT's "orders/created"; subscription wildcards '*' and
// '>' are '+' and '#' (map_topics=false passes topics through unchanged). Queue groups are
// MQTT 5 shared subscriptions ($share/<group>/<filter>); on 3.1.1 they are refused (400).
//
// Shape: one client (connection + libmosquitto loop thread) publishes; each subscription has a
// client of its own, whose loop thread calls its handler (so each subscription sees messages
// in order, and each member of a shared subscription is a distinct session). libmosquitto
// reconnects by itself; on every (re)connect a subscription client subscribes again. While
// any client of this broker is away, publish refuses with 503 (counted), so nothing published
// here is lost unseen to this broker's own subscribers. disconnect() drains: a marker published
// after everything else reaches each subscription client last, and it returns once each has
// seen it (or drain_timeout passed).
//
// Wire: MQTT 5 carries headers as user properties and the body as the payload; 3.1.1 has no
// headers, so the payload is an envelope (magic, count, length-prefixed pairs, body).
// encoding=gomicro sends Go-Micro's JSON envelope instead. Receiving accepts all of them.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <mosquitto.h>
#include <mqtt_protocol.h>
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
using Clock = std::chrono::steady_clock;

constexpr const char* error_id = "micro.broker.mqtt";
constexpr std::string_view log_component = "broker mqtt";

[[noreturn]] void throw_bad_request(std::string detail) {
  throw micro::Exception(micro::bad_request(error_id, std::move(detail)));
}

[[noreturn]] void throw_unavailable(std::string detail) {
  throw micro::Exception(micro::unavailable(error_id, std::move(detail)));
}

// ---- settings ----

enum class Encoding { native, gomicro };

struct Settings {
  std::string host = "127.0.0.1";
  int port = 0;
  int protocol = MQTT_PROTOCOL_V5;
  int qos = 1;
  std::string client_id, user, password, tls_ca, tls_cert, tls_key;
  bool tls = false, clean_session = true, map_topics = true;
  std::chrono::milliseconds keepalive{}, connect_timeout{}, reconnect_wait{}, drain_timeout{},
      session_expiry{};
  std::int64_t receive_maximum = 0, max_pending = 0;
  Encoding encoding = Encoding::native;
};

void parse_address(std::string_view address, Settings& settings) {
  std::string_view rest = address;
  for (std::string_view scheme : {"mqtt://", "tcp://", "mqtts://", "ssl://"}) {
    if (rest.starts_with(scheme)) {
      rest.remove_prefix(scheme.size());
      if (scheme == "mqtts://" || scheme == "ssl://") settings.tls = true;
      break;
    }
  }
  if (rest.find(',') != std::string_view::npos)
    throw_bad_request("address '" + std::string(address) + "': one MQTT server only");
  std::string_view host = rest, port;
  if (std::size_t colon = rest.rfind(':'); colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (!host.empty()) settings.host = std::string(host);
  if (port.empty()) return;
  int number = 0;
  bool ok = port.size() <= 5;
  for (char c : port) {
    if (c < '0' || c > '9') ok = false;
    number = number * 10 + (c - '0');
  }
  if (!ok || number < 1 || number > 65535)
    throw_bad_request("address '" + std::string(address) + "': port '" + std::string(port) +
                      "' is not a number from 1 to 65535");
  settings.port = number;
}

Settings read_settings(const micro::PluginArguments& arguments) {
  Settings settings;
  settings.tls = arguments.get_bool("tls");
  parse_address(arguments.address(), settings);
  std::string protocol = arguments.get_string("protocol");
  if (protocol == "3.1.1" || protocol == "4")
    settings.protocol = MQTT_PROTOCOL_V311;
  else if (protocol != "5")
    throw_bad_request("option protocol: expected 3.1.1 or 5, got '" + protocol + "'");
  settings.qos = static_cast<int>(arguments.get_int("qos"));
  std::string encoding = arguments.get_string("encoding");
  if (encoding == "gomicro")
    settings.encoding = Encoding::gomicro;
  else if (encoding != "native")
    throw_bad_request("option encoding: expected native or gomicro, got '" + encoding + "'");
  settings.client_id = arguments.get_string("client_id");
  settings.clean_session = arguments.get_bool("clean_session");
  if (!settings.clean_session && settings.client_id.empty())
    throw_bad_request(
        "option clean_session=false needs option client_id: a persistent session is found again "
        "by its client id");
  settings.session_expiry = arguments.get_duration("session_expiry");
  settings.user = arguments.get_string("user");
  settings.password = arguments.get_string("password");
  if (!settings.password.empty() && settings.user.empty())
    throw_bad_request("option password needs option user");
  settings.tls_ca = arguments.get_string("tls_ca");
  settings.tls_cert = arguments.get_string("tls_cert");
  settings.tls_key = arguments.get_string("tls_key");
  if (settings.tls_cert.empty() != settings.tls_key.empty())
    throw_bad_request("options tls_cert and tls_key go together");
  if (!settings.tls_ca.empty() || !settings.tls_cert.empty()) settings.tls = true;
  if (settings.tls && settings.tls_ca.empty())
    throw_bad_request(
        "option tls needs option tls_ca (the CA file that signed the server's "
        "certificate)");
  for (const auto& [option, path] :
       {std::pair{"tls_ca", settings.tls_ca}, std::pair{"tls_cert", settings.tls_cert},
        std::pair{"tls_key", settings.tls_key}}) {
    if (path.empty()) continue;
    if (FILE* file = std::fopen(path.c_str(), "r")) {
      std::fclose(file);
    } else {
      int error_number = errno;
      throw_bad_request(std::string(option) + " '" + path +
                        "': cannot read the file: " + std::strerror(error_number));
    }
  }
  if (settings.port == 0) settings.port = settings.tls ? 8883 : 1883;
  if (settings.client_id.empty()) settings.client_id = "micro-" + micro::random_uuid().substr(0, 8);
  settings.map_topics = arguments.get_bool("map_topics");
  settings.keepalive = arguments.get_duration("keepalive");
  settings.connect_timeout = arguments.get_duration("connect_timeout");
  settings.reconnect_wait = arguments.get_duration("reconnect_wait");
  settings.drain_timeout = arguments.get_duration("drain_timeout");
  settings.receive_maximum = arguments.get_int("receive_maximum");
  settings.max_pending = arguments.get_int("max_pending");
  return settings;
}

// ---- payloads ----

constexpr std::string_view envelope_magic{"\0MB1", 4};

void put_u32(std::string& out, std::size_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(value >> shift));
}

std::string encode_envelope(const Message& message) {
  std::string out;
  out.append(envelope_magic);
  put_u32(out, message.headers.size());
  for (const auto& [key, value] : message.headers) {
    put_u32(out, key.size());
    out.append(key);
    put_u32(out, value.size());
    out.append(value);
  }
  out.append(message.body);
  return out;
}

bool read_u32(std::string_view& data, std::size_t& value) {
  if (data.size() < 4) return false;
  value = 0;
  for (int i = 0; i < 4; ++i) value = (value << 8) | static_cast<unsigned char>(data[i]);
  data.remove_prefix(4);
  return true;
}

bool decode_envelope(std::string_view data, Message& message) {
  if (!data.starts_with(envelope_magic)) return false;
  data.remove_prefix(envelope_magic.size());
  std::size_t count = 0;
  if (!read_u32(data, count) || count > data.size() / 8) return false;
  micro::Metadata headers;
  for (std::size_t i = 0; i < count; ++i) {
    std::size_t key_size = 0, value_size = 0;
    if (!read_u32(data, key_size) || key_size > data.size()) return false;
    std::string_view key = data.substr(0, key_size);
    data.remove_prefix(key_size);
    if (!read_u32(data, value_size) || value_size > data.size()) return false;
    headers.set(std::string(key), std::string(data.substr(0, value_size)));
    data.remove_prefix(value_size);
  }
  message.headers = std::move(headers);
  message.body = std::string(data);
  return true;
}

// ---- topics ----

// The MQTT topic (or filter) for a micro topic; 400 for what MQTT cannot carry.
std::string mqtt_topic_of(std::string_view topic, const Settings& settings, bool filter) {
  if (!settings.map_topics) return std::string(topic);
  if (topic.starts_with('$'))
    throw_bad_request("topic '" + std::string(topic) +
                      "': MQTT reserves topics starting with '$' for the server");
  std::string mapped;
  mapped.reserve(topic.size());
  std::size_t start = 0;
  while (true) {
    std::size_t dot = topic.find('.', start);
    std::string_view token = topic.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (filter && token == "*") {
      mapped += '+';
    } else if (filter && token == ">") {
      mapped += '#';
    } else {
      if (token.find_first_of("+#/") != std::string_view::npos)
        throw_bad_request("topic '" + std::string(topic) +
                          "': a token may not contain '+', '#' or '/' (MQTT's wildcards and level "
                          "separator; '.' separates tokens)");
      mapped += token;
    }
    if (dot == std::string_view::npos) return mapped;
    mapped += '/';
    start = dot + 1;
  }
}

std::string micro_topic_of(std::string_view mqtt_topic, const Settings& settings) {
  std::string topic(mqtt_topic);
  if (settings.map_topics) std::replace(topic.begin(), topic.end(), '/', '.');
  return topic;
}

std::string error_text(int rc) {
  if (rc == MOSQ_ERR_ERRNO) return std::strerror(errno);
  return mosquitto_strerror(rc);
}

// ---- clients ----

struct Core;

struct SubscriptionState {
  std::string topic, queue;
  std::string filter;  // what is subscribed: the MQTT filter, $share/<queue>/… for a group
  std::string client_id;
  MessageHandler handler;
  std::atomic<bool> active{true};
  std::mutex delivery_mutex;
  std::atomic<std::thread::id> delivering_thread{};
};

struct PropertiesDeleter {
  void operator()(mosquitto_property* properties) const {
    mosquitto_property_free_all(&properties);
  }
};
using Properties = std::unique_ptr<mosquitto_property, PropertiesDeleter>;

// One MQTT connection with its loop thread: the publisher, or one subscription's.
class Client {
 public:
  Client(std::shared_ptr<Core> core, std::string client_id,
         std::shared_ptr<SubscriptionState> subscription);
  ~Client() {
    if (handle_) mosquitto_destroy(handle_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Connects, starts the loop and waits for CONNACK (and SUBACK for a subscription client).
  void open();
  // A clean end: UNSUBSCRIBE first when `forget` (a persistent session would keep it), then
  // DISCONNECT and the loop thread's end (from another thread only).
  void close(bool forget);
  // Waits until the drain marker came back (after everything published before it).
  bool wait_drained(Clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    return changed_.wait_until(lock, deadline, [&] { return drained_ || !up_; });
  }
  bool up() {
    std::lock_guard lock(mutex_);
    return up_;
  }
  std::string drain_topic() const { return "_micro/drain/" + client_id_; }
  mosquitto* handle() const { return handle_; }
  const std::shared_ptr<SubscriptionState>& subscription() const { return subscription_; }
  std::thread::id loop_thread() const { return loop_thread_.load(); }

  // Publisher: messages handed to libmosquitto and not yet sent (QoS 0) or acknowledged (1).
  std::atomic<std::int64_t> pending{0};
  std::condition_variable& changed() { return changed_; }
  std::mutex& mutex() { return mutex_; }

 private:
  static void on_connect(mosquitto*, void* self, int rc, int flags, const mosquitto_property*);
  static void on_disconnect(mosquitto*, void* self, int rc, const mosquitto_property*);
  static void on_subscribe(mosquitto*, void* self, int mid, int count, const int* granted,
                           const mosquitto_property*);
  static void on_publish(mosquitto*, void* self, int mid, int rc, const mosquitto_property*);
  static void on_message(mosquitto*, void* self, const mosquitto_message* message,
                         const mosquitto_property* properties);
  void set_up(bool up);

  std::shared_ptr<Core> core_;
  std::string client_id_;
  std::shared_ptr<SubscriptionState> subscription_;
  mosquitto* handle_ = nullptr;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool up_ = false;           // connected (and, for a subscription, subscribed)
  bool counted_down_ = true;  // counted in Core::clients_down
  bool closing_ = false, drained_ = false;
  int connack_ = -1;  // the last CONNACK's reason (-1: none yet)
  int suback_ = -1;   // the last SUBACK's granted QoS or failure (-1: none yet)
  int subscribe_mid_ = -1;
  int last_error_ = MOSQ_ERR_SUCCESS;  // the last unexpected disconnect's reason
  bool lost_logged_ = false;
  std::atomic<std::thread::id> loop_thread_{};
};

struct Core {
  Settings settings;
  micro::BrokerErrorReporter errors{"mqtt"};
  std::mutex mutex;  // guards what follows
  bool connected = false;
  std::unique_ptr<Client> publisher;
  std::vector<std::shared_ptr<SubscriptionState>> subscriptions;
  std::vector<std::unique_ptr<Client>> clients;  // one per subscription while connected
  std::map<std::string, int> client_ids;         // subscription ids handed out, for uniqueness
  std::atomic<int> clients_down{0};
  std::atomic<std::uint64_t> failed_publishes{0};

  void deliver(SubscriptionState& state, Message& message) {
    if (!state.active.load()) return;
    std::lock_guard lock(state.delivery_mutex);
    if (!state.active.load()) return;
    state.delivering_thread.store(std::this_thread::get_id());
    errors.deliver(state.handler, message);
    state.delivering_thread.store(std::thread::id{});
  }
};

Client::Client(std::shared_ptr<Core> core, std::string client_id,
               std::shared_ptr<SubscriptionState> subscription)
    : core_(std::move(core)),
      client_id_(std::move(client_id)),
      subscription_(std::move(subscription)) {
  const Settings& settings = core_->settings;
  handle_ = mosquitto_new(client_id_.c_str(), settings.clean_session, this);
  if (!handle_) throw_unavailable("cannot create an MQTT client: " + error_text(MOSQ_ERR_ERRNO));
  core_->clients_down.fetch_add(1);
  mosquitto_int_option(handle_, MOSQ_OPT_PROTOCOL_VERSION, settings.protocol);
  mosquitto_int_option(handle_, MOSQ_OPT_TCP_NODELAY, 1);
  if (settings.protocol == MQTT_PROTOCOL_V5)
    mosquitto_int_option(handle_, MOSQ_OPT_RECEIVE_MAXIMUM,
                         static_cast<int>(settings.receive_maximum));
  else
    mosquitto_max_inflight_messages_set(handle_, static_cast<unsigned>(settings.receive_maximum));
  auto seconds = [](std::chrono::milliseconds duration) {
    return static_cast<unsigned>(std::max<std::int64_t>(1, (duration.count() + 999) / 1000));
  };
  mosquitto_reconnect_delay_set(handle_, seconds(settings.reconnect_wait),
                                seconds(settings.reconnect_wait) * 8, true);
  if (!settings.user.empty())
    mosquitto_username_pw_set(handle_, settings.user.c_str(),
                              settings.password.empty() ? nullptr : settings.password.c_str());
  if (settings.tls) {
    int rc =
        mosquitto_tls_set(handle_, settings.tls_ca.c_str(), nullptr,
                          settings.tls_cert.empty() ? nullptr : settings.tls_cert.c_str(),
                          settings.tls_key.empty() ? nullptr : settings.tls_key.c_str(), nullptr);
    if (rc != MOSQ_ERR_SUCCESS) {
      core_->clients_down.fetch_sub(1);
      mosquitto_destroy(std::exchange(handle_, nullptr));
      throw_bad_request(
          "TLS files (tls_ca '" + settings.tls_ca + "'" +
          (settings.tls_cert.empty() ? "" : ", tls_cert '" + settings.tls_cert + "'") +
          "): " + error_text(rc));
    }
  }
  mosquitto_connect_v5_callback_set(handle_, &Client::on_connect);
  mosquitto_disconnect_v5_callback_set(handle_, &Client::on_disconnect);
  mosquitto_subscribe_v5_callback_set(handle_, &Client::on_subscribe);
  mosquitto_publish_v5_callback_set(handle_, &Client::on_publish);
  mosquitto_message_v5_callback_set(handle_, &Client::on_message);
}

void Client::set_up(bool up) {
  // Called with mutex_ held.
  if (up == up_) return;
  up_ = up;
  if (up && counted_down_) {
    counted_down_ = false;
    core_->clients_down.fetch_sub(1);
  } else if (!up && !counted_down_) {
    counted_down_ = true;
    core_->clients_down.fetch_add(1);
  }
  changed_.notify_all();
}

void Client::open() {
  const Settings& settings = core_->settings;
  int keepalive = static_cast<int>(std::max<std::int64_t>(5, settings.keepalive.count() / 1000));
  Properties properties;
  if (settings.protocol == MQTT_PROTOCOL_V5 && !settings.clean_session) {
    mosquitto_property* list = nullptr;
    mosquitto_property_add_int32(
        &list, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
        static_cast<std::uint32_t>(settings.session_expiry.count() / 1000));
    properties.reset(list);
  }
  int rc = mosquitto_connect_bind_v5(handle_, settings.host.c_str(), settings.port, keepalive,
                                     nullptr, properties.get());
  std::string where = settings.host + ":" + std::to_string(settings.port);
  if (rc != MOSQ_ERR_SUCCESS) {
    std::string detail = "cannot connect to MQTT server " + where + ": " + error_text(rc);
    if (rc == MOSQ_ERR_TLS || rc == MOSQ_ERR_TLS_HANDSHAKE)
      detail += " (TLS: is the server's certificate signed by the CA in tls_ca and issued for " +
                settings.host + "?)";
    throw_unavailable(detail);
  }
  rc = mosquitto_loop_start(handle_);
  if (rc != MOSQ_ERR_SUCCESS) throw_unavailable("cannot start the MQTT loop: " + error_text(rc));
  std::unique_lock lock(mutex_);
  bool answered = changed_.wait_for(lock, settings.connect_timeout, [&] {
    return up_ || (connack_ > 0) || (subscription_ && suback_ >= 0x80);
  });
  if (up_) return;
  int connack = connack_, suback = suback_, last_error = last_error_;
  lock.unlock();
  close(false);
  if (!answered) {
    std::string detail = "MQTT server " + where + " did not accept the connection within " +
                         std::to_string(settings.connect_timeout.count()) + " ms";
    if (last_error != MOSQ_ERR_SUCCESS) detail += " (last error: " + error_text(last_error) + ")";
    // libmosquitto may finish the TLS handshake in its loop: a refused certificate then shows
    // only as a connection that never completes.
    if (settings.tls)
      detail += "; with TLS: is the server's certificate signed by the CA in tls_ca (" +
                settings.tls_ca + ") and issued for " + settings.host + "?";
    throw_unavailable(detail);
  }
  if (suback >= 0x80)
    throw micro::Exception(micro::Error(
        error_id, micro::ErrorCode::forbidden,
        "MQTT server " + where + " refused the subscription to '" + subscription_->filter +
            "' (reason " + std::to_string(suback) + ": " + mosquitto_reason_string(suback) + ")"));
  std::string reason = settings.protocol == MQTT_PROTOCOL_V5 ? mosquitto_reason_string(connack)
                                                             : mosquitto_connack_string(connack);
  bool credentials = connack == 4 || connack == 5 || connack == MQTT_RC_BAD_USERNAME_OR_PASSWORD ||
                     connack == MQTT_RC_NOT_AUTHORIZED;
  throw micro::Exception(micro::Error(
      error_id, credentials ? micro::ErrorCode::unauthorized : micro::ErrorCode::unavailable,
      "MQTT server " + where + " refused the connection: " + reason));
}

void Client::close(bool forget) {
  {
    std::lock_guard lock(mutex_);
    closing_ = true;
  }
  if (forget && subscription_) {
    // A persistent session keeps its subscriptions: drop ours before leaving.
    mosquitto_unsubscribe(handle_, nullptr, subscription_->filter.c_str());
    mosquitto_unsubscribe(handle_, nullptr, drain_topic().c_str());
  }
  mosquitto_disconnect(handle_);
  mosquitto_loop_stop(handle_, false);
  std::lock_guard lock(mutex_);
  set_up(false);
  if (counted_down_) {
    // Leaving for good: no longer one of the broker's clients.
    core_->clients_down.fetch_sub(1);
    counted_down_ = false;
  }
}

void Client::on_connect(mosquitto* handle, void* self_pointer, int rc, int,
                        const mosquitto_property*) {
  auto* self = static_cast<Client*>(self_pointer);
  self->loop_thread_.store(std::this_thread::get_id());
  std::unique_lock lock(self->mutex_);
  self->connack_ = rc;
  if (rc != 0) {
    self->changed_.notify_all();
    return;
  }
  if (self->lost_logged_)
    micro::log::info(log_component, "client " + self->client_id_ + " reconnected");
  self->lost_logged_ = false;
  if (!self->subscription_) {
    self->set_up(true);
    return;
  }
  // Subscribe (again): the drain topic and the subscription itself, in one SUBSCRIBE.
  int qos = self->core_->settings.qos;
  std::string drain = self->drain_topic();
  char* filters[2] = {drain.data(), self->subscription_->filter.data()};
  int mid = 0;
  self->suback_ = -1;
  int result = mosquitto_subscribe_multiple(handle, &mid, 2, filters, qos, 0, nullptr);
  if (result == MOSQ_ERR_SUCCESS) self->subscribe_mid_ = mid;
}

void Client::on_subscribe(mosquitto*, void* self_pointer, int mid, int count, const int* granted,
                          const mosquitto_property*) {
  auto* self = static_cast<Client*>(self_pointer);
  std::lock_guard lock(self->mutex_);
  if (mid != self->subscribe_mid_) return;
  int worst = 0;
  for (int i = 0; i < count; ++i) worst = std::max(worst, granted[i]);
  self->suback_ = worst;
  if (worst < 0x80) {
    self->set_up(true);
  } else {
    micro::log::warn(log_component, "the server refused the subscription to '" +
                                        self->subscription_->filter + "' (reason " +
                                        std::to_string(worst) + ")");
    self->changed_.notify_all();
  }
}

void Client::on_disconnect(mosquitto*, void* self_pointer, int rc, const mosquitto_property*) {
  auto* self = static_cast<Client*>(self_pointer);
  std::lock_guard lock(self->mutex_);
  bool was_up = self->up_;
  if (rc != 0) self->last_error_ = rc;
  self->set_up(false);
  self->changed_.notify_all();
  if (self->closing_ || rc == 0 || self->lost_logged_) return;
  self->lost_logged_ = true;
  // QoS 0 messages still queued in the library are dropped with the connection and never
  // confirmed; say so, and stop waiting for them.
  if (!self->subscription_ && self->core_->settings.qos == 0) {
    if (std::int64_t lost = self->pending.exchange(0); lost > 0)
      micro::log::warn(log_component, "up to " + std::to_string(lost) +
                                          " QoS 0 messages not yet sent were lost with the "
                                          "connection (qos=1 resends them)");
  }
  if (was_up || self->connack_ == 0)
    micro::log::warn(log_component, "client " + self->client_id_ + ": connection lost (" +
                                        error_text(rc) + "); reconnecting");
}

void Client::on_publish(mosquitto*, void* self_pointer, int, int, const mosquitto_property*) {
  auto* self = static_cast<Client*>(self_pointer);
  if (self->pending.fetch_sub(1) == 1) {
    std::lock_guard lock(self->mutex_);
    self->changed_.notify_all();
  }
}

void Client::on_message(mosquitto*, void* self_pointer, const mosquitto_message* raw,
                        const mosquitto_property* properties) {
  auto* self = static_cast<Client*>(self_pointer);
  if (!self->subscription_ || !raw->topic) return;
  std::string_view mqtt_topic = raw->topic;
  if (mqtt_topic == self->drain_topic()) {
    std::lock_guard lock(self->mutex_);
    self->drained_ = true;
    self->changed_.notify_all();
    return;
  }
  const Settings& settings = self->core_->settings;
  SubscriptionState& state = *self->subscription_;
  Message message;
  message.topic = micro_topic_of(mqtt_topic, settings);
  // MQTT's '#' also matches the level above it ("a/#" matches "a"); micro's '>' does not.
  if (settings.map_topics && !micro::topic_matches(state.topic, message.topic)) return;
  std::string_view payload(static_cast<const char*>(raw->payload),
                           raw->payload ? static_cast<std::size_t>(raw->payloadlen) : 0);
  bool headers = false;
  for (const mosquitto_property* property = properties; property;) {
    char* name = nullptr;
    char* value = nullptr;
    property = mosquitto_property_read_string_pair(property, MQTT_PROP_USER_PROPERTY, &name, &value,
                                                   headers);
    if (!property) break;
    message.headers.set(name ? name : "", value ? value : "");
    std::free(name);
    std::free(value);
    headers = true;
  }
  if (headers) {
    message.body = std::string(payload);
  } else if (!decode_envelope(payload, message) && !decode_gomicro_envelope(payload, message)) {
    message.body = std::string(payload);
  }
  self->core_->deliver(state, message);
}

class MqttSubscription : public micro::Subscription {
 public:
  MqttSubscription(std::shared_ptr<SubscriptionState> state, std::weak_ptr<Core> core)
      : state_(std::move(state)), core_(std::move(core)) {}
  const std::string& topic() const noexcept override { return state_->topic; }
  const std::string& queue() const noexcept override { return state_->queue; }

  void unsubscribe() override {
    if (!state_->active.exchange(false)) return;
    // Only locals from here: a handler unsubscribing itself may see the owner drop this
    // object while it is still in here.
    std::shared_ptr<SubscriptionState> state = state_;
    std::weak_ptr<Core> weak_core = core_;
    std::unique_ptr<Client> client;
    if (auto core = weak_core.lock()) {
      std::lock_guard lock(core->mutex);
      std::erase(core->subscriptions, state);
      for (auto it = core->clients.begin(); it != core->clients.end(); ++it) {
        if ((*it)->subscription() == state) {
          client = std::move(*it);
          core->clients.erase(it);
          break;
        }
      }
    }
    if (client) {
      if (client->loop_thread() == std::this_thread::get_id()) {
        // A handler ending its own subscription: its loop thread cannot wait for itself.
        std::thread([client = std::move(client)] { client->close(true); }).detach();
      } else {
        client->close(true);
      }
    }
    if (state->delivering_thread.load() != std::this_thread::get_id()) {
      std::lock_guard wait(state->delivery_mutex);
    }
  }

 private:
  std::shared_ptr<SubscriptionState> state_;
  std::weak_ptr<Core> core_;
};

class MqttBroker : public micro::Broker {
 public:
  explicit MqttBroker(const micro::PluginArguments& arguments) : core_(std::make_shared<Core>()) {
    mosquitto_lib_init();
    core_->settings = read_settings(arguments);
  }
  ~MqttBroker() override {
    try {
      disconnect();
    } catch (...) {
    }
  }

  void connect() override {
    std::lock_guard lifecycle(lifecycle_mutex_);
    {
      std::lock_guard lock(core_->mutex);
      if (core_->connected) return;
    }
    auto publisher = std::make_unique<Client>(core_, core_->settings.client_id + "-p", nullptr);
    publisher->open();
    std::vector<std::shared_ptr<SubscriptionState>> states;
    {
      std::lock_guard lock(core_->mutex);
      core_->publisher = std::move(publisher);
      core_->connected = true;
      states = core_->subscriptions;
    }
    for (const auto& state : states) {
      try {
        start_client(state);
      } catch (const micro::Exception& error) {
        micro::log::warn(log_component, "subscription to '" + state->topic +
                                            "' not restored: " + error.error().detail);
      }
    }
  }

  void disconnect() override {
    std::lock_guard lifecycle(lifecycle_mutex_);
    std::unique_ptr<Client> publisher;
    std::vector<std::unique_ptr<Client>> clients;
    {
      std::lock_guard lock(core_->mutex);
      if (!core_->connected) return;
      core_->connected = false;
      publisher = std::move(core_->publisher);
      clients = std::exchange(core_->clients, {});
    }
    // Drain: a marker to each subscription client after everything published before it.
    auto deadline = Clock::now() + core_->settings.drain_timeout;
    if (publisher->up()) {
      for (const auto& client : clients) {
        if (!client->up()) continue;
        std::string topic = client->drain_topic();
        publisher->pending.fetch_add(1);
        if (mosquitto_publish_v5(publisher->handle(), nullptr, topic.c_str(), 5, "drain",
                                 core_->settings.qos, false, nullptr) != MOSQ_ERR_SUCCESS)
          publisher->pending.fetch_sub(1);
      }
      for (const auto& client : clients)
        if (client->up() && !client->wait_drained(deadline))
          micro::log::warn(log_component, "drain of '" + client->subscription()->topic +
                                              "' did not finish within drain_timeout");
    }
    {
      std::unique_lock lock(publisher->mutex());
      publisher->changed().wait_until(lock, deadline,
                                      [&] { return publisher->pending.load() <= 0; });
    }
    if (std::int64_t left = publisher->pending.load(); left > 0)
      micro::log::warn(log_component, std::to_string(left) +
                                          " published messages were not confirmed by the server "
                                          "before disconnect");
    // Subscription sessions stay (persistent sessions keep collecting); only unsubscribe drops.
    for (const auto& client : clients) client->close(false);
    publisher->close(false);
  }

  void publish(const Message& message) override {
    micro::validate_topic(message.topic, micro::TopicUse::publish, error_id);
    const Settings& settings = core_->settings;
    std::string topic = mqtt_topic_of(message.topic, settings, false);
    bool v5 = settings.protocol == MQTT_PROTOCOL_V5;
    std::string envelope;
    const std::string* payload = &message.body;
    Properties properties;
    if (settings.encoding == Encoding::gomicro) {
      envelope = encode_gomicro_envelope(message);
      payload = &envelope;
    } else if (!v5) {
      envelope = encode_envelope(message);
      payload = &envelope;
    } else if (!message.headers.empty()) {
      mosquitto_property* list = nullptr;
      for (const auto& [key, value] : message.headers) {
        if (mosquitto_property_add_string_pair(&list, MQTT_PROP_USER_PROPERTY, key.c_str(),
                                               value.c_str()) != MOSQ_ERR_SUCCESS) {
          mosquitto_property_free_all(&list);
          throw_bad_request("header '" + key + "' is not valid UTF-8 for an MQTT user property");
        }
      }
      properties.reset(list);
    }
    if (payload->size() > 268435455)
      throw_bad_request("message to '" + message.topic + "' exceeds MQTT's 256 MiB payload limit");
    std::lock_guard lock(core_->mutex);
    if (!core_->connected) throw_unavailable("broker is not connected");
    Client& publisher = *core_->publisher;
    auto fail = [&](const std::string& why) {
      core_->failed_publishes.fetch_add(1);
      throw_unavailable("publish to '" + message.topic + "' failed: " + why);
    };
    if (int down = core_->clients_down.load(); down > 0)
      fail("reconnecting to the MQTT server: " + std::to_string(down) +
           " connections of this broker are not (re)established yet");
    if (publisher.pending.load() >= settings.max_pending)
      fail(std::to_string(settings.max_pending) +
           " messages are waiting for the server already (max_pending)");
    publisher.pending.fetch_add(1);
    int rc = mosquitto_publish_v5(publisher.handle(), nullptr, topic.c_str(),
                                  static_cast<int>(payload->size()), payload->data(), settings.qos,
                                  false, properties.get());
    if (rc == MOSQ_ERR_SUCCESS) return;
    publisher.pending.fetch_sub(1);
    if (rc == MOSQ_ERR_PAYLOAD_SIZE || rc == MOSQ_ERR_OVERSIZE_PACKET)
      throw_bad_request("message to '" + message.topic + "' is larger than the server accepts");
    if (rc == MOSQ_ERR_INVAL || rc == MOSQ_ERR_MALFORMED_UTF8)
      throw_bad_request("topic '" + message.topic + "' is not a valid MQTT topic");
    fail(error_text(rc));
  }

  std::shared_ptr<micro::Subscription> subscribe(
      std::string topic, MessageHandler handler,
      const micro::SubscribeOptions& options = {}) override {
    micro::validate_topic(topic, micro::TopicUse::subscribe, error_id);
    if (!handler) throw_bad_request("handler is empty");
    // libmosquitto acknowledges a QoS 1 message itself, before the handler has run.
    micro::require_delivery(options, false, "mqtt", error_id);
    const Settings& settings = core_->settings;
    if (!options.queue.empty() && settings.protocol != MQTT_PROTOCOL_V5)
      throw_bad_request("queue group '" + options.queue +
                        "': MQTT 3.1.1 has no shared subscriptions; use protocol=5 for queue "
                        "groups");
    if (options.queue.find_first_of("/+# \t\r\n") != std::string::npos)
      throw_bad_request("queue '" + options.queue +
                        "' may not contain '/', '+', '#' or whitespace (it names an MQTT shared "
                        "subscription)");
    auto state = std::make_shared<SubscriptionState>();
    std::string filter = mqtt_topic_of(topic, settings, true);
    state->filter = options.queue.empty() ? filter : "$share/" + options.queue + "/" + filter;
    state->topic = std::move(topic);
    state->queue = options.queue;
    state->handler = std::move(handler);
    std::lock_guard lifecycle(lifecycle_mutex_);
    bool connected = false;
    {
      std::lock_guard lock(core_->mutex);
      // A stable id per (filter, occurrence), so a persistent session is found again.
      std::string base = settings.client_id + "-s" + hash_of(state->filter);
      int occurrence = core_->client_ids[base]++;
      state->client_id = occurrence == 0 ? base : base + "-" + std::to_string(occurrence);
      core_->subscriptions.push_back(state);
      connected = core_->connected;
    }
    if (connected) {
      try {
        start_client(state);
      } catch (...) {
        std::lock_guard lock(core_->mutex);
        std::erase(core_->subscriptions, state);
        throw;
      }
    }
    return std::make_shared<MqttSubscription>(std::move(state), core_);
  }

  void set_error_handler(std::function<void(const Message&, std::string_view)> handler) override {
    core_->errors.set_handler(std::move(handler));
  }

 private:
  static std::string hash_of(std::string_view text) {
    std::uint32_t hash = 2166136261u;  // FNV-1a
    for (unsigned char c : text) hash = (hash ^ c) * 16777619u;
    char buffer[9];
    std::snprintf(buffer, sizeof buffer, "%08x", hash);
    return buffer;
  }

  void start_client(const std::shared_ptr<SubscriptionState>& state) {
    auto client = std::make_unique<Client>(core_, state->client_id, state);
    client->open();
    std::lock_guard lock(core_->mutex);
    core_->clients.push_back(std::move(client));
  }

  std::mutex lifecycle_mutex_;
  std::shared_ptr<Core> core_;
};

const micro::PluginOption mqtt_options[] = {
    {"protocol", "string", "5", "MQTT protocol version: 5 or 3.1.1"},
    {"qos", "int", "1", "quality of service of publishes and subscriptions: 0 or 1", "0", "1"},
    {"client_id", "string", "",
     "client id prefix: <client_id>-p publishes, <client_id>-s<hash> per subscription; default "
     "micro-<random>"},
    {"clean_session", "bool", "true",
     "false: persistent sessions (the server keeps subscriptions and queues QoS 1 messages "
     "while away); needs client_id"},
    {"session_expiry", "duration", "1h",
     "MQTT 5, clean_session=false: how long the server keeps "
     "a session",
     "0s"},
    {"user", "string", "", "user name"},
    {"password", "string", "", "password (with user)"},
    {"tls", "bool", "false", "connect with TLS (implied by tls_ca, tls_cert, mqtts://)"},
    {"tls_ca", "string", "", "PEM file of the CA that signed the server's certificate"},
    {"tls_cert", "string", "", "PEM client certificate (with tls_key)"},
    {"tls_key", "string", "", "PEM client private key (with tls_cert)"},
    {"map_topics", "bool", "true",
     "map micro topics to MQTT ('.' to '/', '*' to '+', '>' to '#'); false: topics as given"},
    {"encoding", "string", "native",
     "native (MQTT 5 user properties, 3.1.1 an envelope) or gomicro (Go-Micro's JSON envelope)"},
    {"keepalive", "duration", "30s", "MQTT keep-alive interval (at least 5s)", "5s"},
    {"connect_timeout", "duration", "5s", "how long connect/subscribe wait for the server", "1ms"},
    {"reconnect_wait", "duration", "1s",
     "first pause before reconnecting (whole seconds; doubles up to 8x)", "1ms"},
    {"drain_timeout", "duration", "10s", "how long disconnect waits for accepted messages", "1ms"},
    {"receive_maximum", "int", "1000",
     "QoS 1 messages the server may have in flight to each client", "1", "65535"},
    {"max_pending", "int", "100000",
     "publishes handed to the client library but not yet confirmed; beyond it publish fails "
     "with 503",
     "1", "100000000"},
};

}  // namespace

MICRO_PLUGIN(broker, mqtt,
             "publish/subscribe over MQTT 3.1.1 or 5 (libmosquitto); queue groups as shared "
             "subscriptions",
             mqtt_options, [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new MqttBroker(arguments);
             })
