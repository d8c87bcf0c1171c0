// broker/rabbitmq — publish/subscribe over RabbitMQ (AMQP 0-9-1), through librabbitmq (rabbitmq-c).
//
// Shape: two AMQP connections per connected broker. The publisher connection (channel 1 in
// confirm mode) is used by publish() under a mutex: a publish returns once the server confirmed
// it (basic.ack), and throws 503 otherwise. The consumer connection belongs to one I/O thread:
// each micro subscription has its own channel, queue, binding and consumer there; handlers run
// on that thread, one message at a time, and at-least-once subscriptions ack (or nack+requeue)
// after the handler. Subscribe/unsubscribe/disconnect from other threads are commands the I/O
// thread runs (woken through an eventfd); called from a handler they run inline.
//
// Topology: a topic exchange (`exchange`, default "micro"); routing key = topic; a subscription
// binds with the topic, micro's '*' staying '*' and '>' becoming "*.#" (one or more words).
// Broadcast: a server-named exclusive auto-delete queue per subscription. Queue group: a shared
// durable queue named "<queue>@<topic>" ("<queue>" with encoding=gomicro, as Go-Micro names it).
//
// Reconnect: when the consumer connection is lost the I/O thread logs it, makes publish fail with
// 503 at once, and reconnects every `reconnect_wait`: exchange, every subscription, then the
// publisher — so nothing is confirmed before this broker's own subscriptions are back.

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <micro/broker.hpp>
#include <micro/error.hpp>
#include <micro/log.hpp>
#include <micro/plugin.hpp>
#include <micro/random.hpp>

namespace {

using micro::Message;
using micro::MessageHandler;
using namespace std::chrono_literals;

constexpr const char* error_id = "micro.broker.rabbitmq";
constexpr std::string_view log_component = "broker rabbitmq";
constexpr amqp_channel_t control_channel = 1;  // declares, passive queue checks
constexpr std::size_t max_short_string = 255;
constexpr amqp_channel_t max_channel =
    2047;  // RabbitMQ's default channel_max  // AMQP shortstr: routing keys, queue names

[[noreturn]] void throw_bad_request(std::string detail) {
  throw micro::Exception(micro::bad_request(error_id, std::move(detail)));
}

[[noreturn]] void throw_unavailable(std::string detail) {
  throw micro::Exception(micro::unavailable(error_id, std::move(detail)));
}

amqp_bytes_t bytes_of(std::string_view text) {
  return amqp_bytes_t{text.size(), const_cast<char*>(text.data())};
}

std::string string_of(amqp_bytes_t bytes) {
  return std::string(static_cast<const char*>(bytes.bytes), bytes.len);
}

// ---- settings ----

enum class Encoding { native, gomicro };

struct Settings {
  std::string host = "127.0.0.1";
  int port = 5672;
  std::string user = "guest", password = "guest", vhost = "/";
  bool tls = false;
  std::string tls_ca, tls_cert, tls_key;
  bool tls_verify_hostname = true;
  std::string exchange;
  bool exchange_durable = true;
  int prefetch = 0;
  bool persistent = true;
  std::chrono::milliseconds connect_timeout{}, confirm_timeout{}, reconnect_wait{}, drain_timeout{};
  Encoding encoding = Encoding::native;

  // "amqp://127.0.0.1:5672/" for messages (never the password).
  std::string url() const {
    std::string vhost_part = vhost == "/" ? "/" : "/" + vhost;
    return (tls ? "amqps://" : "amqp://") + host + ":" + std::to_string(port) + vhost_part;
  }
};

// "[amqp[s]://][user[:password]@]host[:port][/vhost]"; empty: amqp://guest:guest@127.0.0.1:5672/.
void parse_address(std::string_view address, Settings& settings) {
  if (address.empty()) return;
  std::string url(address);
  if (!url.starts_with("amqp://") && !url.starts_with("amqps://"))
    url = (settings.tls ? "amqps://" : "amqp://") + url;
  std::vector<char> buffer(url.begin(), url.end());
  buffer.push_back('\0');
  amqp_connection_info info{};
  if (amqp_parse_url(buffer.data(), &info) != AMQP_STATUS_OK)
    throw_bad_request(
        "address '" + std::string(address) +
        "': not an AMQP URL; expected [amqp[s]://][user:password@]host[:port][/vhost]");
  if (!info.host || !*info.host)
    throw_bad_request("address '" + std::string(address) + "': host is empty");
  if (info.port < 1 || info.port > 65535)
    throw_bad_request("address '" + std::string(address) + "': port is not from 1 to 65535");
  settings.host = info.host;
  settings.port = info.port;
  settings.user = info.user ? info.user : "guest";
  settings.password = info.password ? info.password : "guest";
  settings.vhost = info.vhost && *info.vhost ? info.vhost : "/";
  if (info.ssl) settings.tls = true;
}

Settings read_settings(const micro::PluginArguments& arguments) {
  Settings settings;
  settings.tls = arguments.get_bool("tls");
  settings.tls_ca = arguments.get_string("tls_ca");
  settings.tls_cert = arguments.get_string("tls_cert");
  settings.tls_key = arguments.get_string("tls_key");
  if (!settings.tls_ca.empty() || !settings.tls_cert.empty()) settings.tls = true;
  if (settings.tls_cert.empty() != settings.tls_key.empty())
    throw_bad_request("options tls_cert and tls_key go together");
  settings.tls_verify_hostname = arguments.get_bool("tls_verify_hostname");
  if (settings.tls) settings.port = 5671;
  parse_address(arguments.address(), settings);
  if (std::string user = arguments.get_string("user"); !user.empty()) settings.user = user;
  if (std::string password = arguments.get_string("password"); !password.empty())
    settings.password = password;
  if (std::string vhost = arguments.get_string("vhost"); !vhost.empty()) settings.vhost = vhost;
  settings.exchange = arguments.get_string("exchange");
  if (settings.exchange.empty() || settings.exchange.size() > max_short_string)
    throw_bad_request("option exchange: expected a name of 1 to 255 bytes, got '" +
                      settings.exchange + "'");
  std::string encoding = arguments.get_string("encoding");
  if (encoding == "gomicro")
    settings.encoding = Encoding::gomicro;
  else if (encoding != "native")
    throw_bad_request("option encoding: expected native or gomicro, got '" + encoding + "'");
  std::string durable = arguments.get_string("exchange_durable");
  if (durable == "auto")
    settings.exchange_durable = settings.encoding == Encoding::native;  // Go-Micro's is not
  else if (durable == "true" || durable == "false")
    settings.exchange_durable = durable == "true";
  else
    throw_bad_request("option exchange_durable: expected auto, true or false, got '" + durable +
                      "'");
  settings.prefetch = static_cast<int>(arguments.get_int("prefetch"));
  settings.persistent = arguments.get_bool("persistent");
  settings.connect_timeout = arguments.get_duration("connect_timeout");
  settings.confirm_timeout = arguments.get_duration("confirm_timeout");
  settings.reconnect_wait = arguments.get_duration("reconnect_wait");
  settings.drain_timeout = arguments.get_duration("drain_timeout");
  return settings;
}

// ---- topics, queues, headers ----

// The AMQP binding key of a micro subscription pattern: '*' stays, '>' (one or more tokens)
// becomes "*.#" ('#' alone would also match zero tokens).
std::string binding_key(std::string_view topic) {
  if (topic == ">") return "*.#";
  if (topic.ends_with(".>")) return std::string(topic.substr(0, topic.size() - 1)) + "*.#";
  return std::string(topic);
}

void check_amqp_topic(std::string_view topic, micro::TopicUse use) {
  if (topic.size() > max_short_string)
    throw_bad_request("topic '" + std::string(topic.substr(0, 40)) + "…' is " +
                      std::to_string(topic.size()) + " bytes; AMQP routing keys hold at most 255");
  if (use != micro::TopicUse::subscribe) return;
  std::size_t start = 0;
  while (start <= topic.size()) {
    std::size_t dot = topic.find('.', start);
    std::string_view token = topic.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (token == "#")
      throw_bad_request(
          "topic '" + std::string(topic) +
          "': '#' is an AMQP wildcard; micro's are '*' (one token) and '>' (the rest)");
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
}

// The AMQP headers of a message, pointing into `message` (valid while it is).
std::vector<amqp_table_entry_t> header_entries(const Message& message,
                                               const std::vector<std::string>& extra) {
  std::vector<amqp_table_entry_t> entries;
  entries.reserve(message.headers.size() + extra.size() / 2);
  auto add = [&](std::string_view key, std::string_view value) {
    amqp_table_entry_t entry{};
    entry.key = bytes_of(key);
    entry.value.kind = AMQP_FIELD_KIND_UTF8;  // 'S', what Go's amqp reads as string
    entry.value.value.bytes = bytes_of(value);
    entries.push_back(entry);
  };
  for (const auto& [key, value] : message.headers) add(key, value);
  for (std::size_t i = 0; i + 1 < extra.size(); i += 2) add(extra[i], extra[i + 1]);
  return entries;
}

// A field value as header text: strings as they are, numbers and booleans in decimal; other
// kinds (tables, arrays, decimals) are not headers a micro peer sends, and are left out.
bool field_text(const amqp_field_value_t& value, std::string& text) {
  switch (value.kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
      text = string_of(value.value.bytes);
      return true;
    case AMQP_FIELD_KIND_BOOLEAN:
      text = value.value.boolean ? "true" : "false";
      return true;
    case AMQP_FIELD_KIND_I8:
      text = std::to_string(value.value.i8);
      return true;
    case AMQP_FIELD_KIND_U8:
      text = std::to_string(value.value.u8);
      return true;
    case AMQP_FIELD_KIND_I16:
      text = std::to_string(value.value.i16);
      return true;
    case AMQP_FIELD_KIND_U16:
      text = std::to_string(value.value.u16);
      return true;
    case AMQP_FIELD_KIND_I32:
      text = std::to_string(value.value.i32);
      return true;
    case AMQP_FIELD_KIND_U32:
      text = std::to_string(value.value.u32);
      return true;
    case AMQP_FIELD_KIND_I64:
      text = std::to_string(value.value.i64);
      return true;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP:
      text = std::to_string(value.value.u64);
      return true;
    default:
      return false;
  }
}

Message message_of(const amqp_envelope_t& envelope) {
  Message message;
  message.topic = string_of(envelope.routing_key);
  message.body = string_of(envelope.message.body);
  const amqp_basic_properties_t& properties = envelope.message.properties;
  if (properties._flags & AMQP_BASIC_HEADERS_FLAG) {
    std::string text;
    for (int i = 0; i < properties.headers.num_entries; ++i) {
      const amqp_table_entry_t& entry = properties.headers.entries[i];
      if (field_text(entry.value, text)) message.headers.set(string_of(entry.key), text);
    }
  }
  return message;
}

// ---- replies and errors ----

std::string reply_text(const amqp_rpc_reply_t& reply) {
  switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return "ok";
    case AMQP_RESPONSE_NONE:
      return "no reply";
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      return amqp_error_string2(reply.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        auto* close = static_cast<amqp_connection_close_t*>(reply.reply.decoded);
        return "the server closed the connection: " + std::to_string(close->reply_code) + " " +
               string_of(close->reply_text);
      }
      if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        auto* close = static_cast<amqp_channel_close_t*>(reply.reply.decoded);
        return std::to_string(close->reply_code) + " " + string_of(close->reply_text);
      }
      return "unexpected server method " + std::to_string(reply.reply.id);
  }
  return "unknown reply";
}

// The AMQP reply code of a channel or connection close in `reply` (0 if neither).
int reply_code(const amqp_rpc_reply_t& reply) {
  if (reply.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION) return 0;
  if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD)
    return static_cast<amqp_connection_close_t*>(reply.reply.decoded)->reply_code;
  if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
    return static_cast<amqp_channel_close_t*>(reply.reply.decoded)->reply_code;
  return 0;
}

// Thrown by Connection when the connection itself is gone (as opposed to one channel).
struct ConnectionLost : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One AMQP connection: socket, login, channels; not thread-safe (one owner at a time).
class Connection {
 public:
  Connection(const Settings& settings, const char* purpose) : settings_(settings) {
    state_ = amqp_new_connection();
    if (!state_) throw_unavailable("cannot create an AMQP connection (out of memory)");
    try {
      open(purpose);
    } catch (...) {
      amqp_destroy_connection(state_);
      throw;
    }
  }
  ~Connection() {
    if (healthy_) amqp_connection_close(state_, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(state_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  amqp_connection_state_t state() const { return state_; }
  bool healthy() const { return healthy_; }
  void mark_lost() { healthy_ = false; }
  int socket() const { return amqp_get_sockfd(state_); }

  // Checks the reply of an RPC on `channel`: a channel error is answered (close-ok) and thrown
  // as micro::Exception (the channel is closed now); a connection error throws ConnectionLost.
  void check(const amqp_rpc_reply_t& reply, amqp_channel_t channel, const std::string& what) {
    if (reply.reply_type == AMQP_RESPONSE_NORMAL) return;
    std::string text = what + ": " + reply_text(reply);
    if (reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
        reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
      amqp_channel_close_ok_t ok{};
      amqp_send_method(state_, channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
      int code = reply_code(reply);
      if (code == AMQP_ACCESS_REFUSED)
        throw micro::Exception(micro::Error(error_id, micro::ErrorCode::forbidden, text));
      if (code == AMQP_PRECONDITION_FAILED || code == AMQP_NOT_FOUND ||
          code == AMQP_RESOURCE_LOCKED)
        throw_bad_request(text);
      throw_unavailable(text);
    }
    if (reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
        reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
      amqp_connection_close_ok_t ok{};
      amqp_send_method(state_, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    }
    healthy_ = false;
    throw ConnectionLost(text);
  }

  void open_channel(amqp_channel_t channel) {
    amqp_channel_open(state_, channel);
    check(amqp_get_rpc_reply(state_), channel, "opening channel " + std::to_string(channel));
  }
  void close_channel(amqp_channel_t channel) {
    amqp_rpc_reply_t reply = amqp_channel_close(state_, channel, AMQP_REPLY_SUCCESS);
    if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) healthy_ = false;
  }

  void declare_exchange() {
    amqp_exchange_declare(state_, control_channel, bytes_of(settings_.exchange),
                          amqp_cstring_bytes("topic"), 0, settings_.exchange_durable, 0, 0,
                          amqp_empty_table);
    try {
      check(amqp_get_rpc_reply(state_), control_channel,
            "declaring exchange '" + settings_.exchange + "'");
    } catch (const micro::Exception& error) {
      open_channel(control_channel);  // the server closed it
      throw micro::Exception(micro::bad_request(
          error_id, error.error().detail + " (option exchange_durable=" +
                        (settings_.exchange_durable ? "true" : "false") +
                        " must match how the exchange was declared first; Go-Micro declares "
                        "'micro' non-durable unless told otherwise)"));
    }
  }

 private:
  void open(const char* purpose) {
    amqp_socket_t* socket =
        settings_.tls ? amqp_ssl_socket_new(state_) : amqp_tcp_socket_new(state_);
    if (!socket) throw_unavailable("cannot create a socket for " + settings_.url());
    if (settings_.tls) {
      if (!settings_.tls_ca.empty() &&
          amqp_ssl_socket_set_cacert(socket, settings_.tls_ca.c_str()) != AMQP_STATUS_OK)
        throw_bad_request("tls_ca '" + settings_.tls_ca +
                          "': cannot read it as PEM CA certificates");
      if (!settings_.tls_cert.empty() &&
          amqp_ssl_socket_set_key(socket, settings_.tls_cert.c_str(), settings_.tls_key.c_str()) !=
              AMQP_STATUS_OK)
        throw_bad_request("tls_cert '" + settings_.tls_cert + "' with tls_key '" +
                          settings_.tls_key + "': cannot load them as a PEM certificate and key");
      amqp_ssl_socket_set_verify_peer(socket, 1);
      amqp_ssl_socket_set_verify_hostname(socket, settings_.tls_verify_hostname ? 1 : 0);
    }
    timeval timeout = timeval_of(settings_.connect_timeout);
    int status = amqp_socket_open_noblock(socket, settings_.host.c_str(), settings_.port, &timeout);
    if (status != AMQP_STATUS_OK)
      throw_unavailable("cannot connect to " + settings_.url() + ": " + amqp_error_string2(status) +
                        (settings_.tls ? " (TLS: is the server's certificate signed by a CA in "
                                         "tls_ca, issued for this host, and does it accept this "
                                         "client's certificate?)"
                                       : ""));
    amqp_set_handshake_timeout(state_, &timeout);
    amqp_set_rpc_timeout(state_, &timeout);
    amqp_table_entry_t name{};
    std::string connection_name = std::string("micro ") + purpose;
    name.key = amqp_cstring_bytes("connection_name");
    name.value.kind = AMQP_FIELD_KIND_UTF8;
    name.value.value.bytes = bytes_of(connection_name);
    amqp_table_t properties{1, &name};
    amqp_rpc_reply_t reply = amqp_login_with_properties(
        state_, settings_.vhost.c_str(), 0, AMQP_DEFAULT_FRAME_SIZE, 0, &properties,
        AMQP_SASL_METHOD_PLAIN, settings_.user.c_str(), settings_.password.c_str());
    if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
      std::string detail = "cannot log in to " + settings_.url() + " as '" + settings_.user +
                           "': " + reply_text(reply);
      if (reply_code(reply) == AMQP_ACCESS_REFUSED ||
          (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
           reply.library_error == AMQP_STATUS_CONNECTION_CLOSED))
        throw micro::Exception(micro::Error(error_id, micro::ErrorCode::unauthorized,
                                            detail +
                                                " (wrong user or password, or no access "
                                                "to vhost '" +
                                                settings_.vhost + "')"));
      throw_unavailable(detail);
    }
    open_channel(control_channel);
  }

  static timeval timeval_of(std::chrono::milliseconds duration) {
    return timeval{static_cast<time_t>(duration.count() / 1000),
                   static_cast<suseconds_t>((duration.count() % 1000) * 1000)};
  }

  const Settings& settings_;
  amqp_connection_state_t state_ = nullptr;
  bool healthy_ = true;
};

// ---- subscriptions ----

struct SubscriptionState {
  std::string topic;
  std::string queue;  // micro queue group; empty: broadcast
  micro::Delivery delivery = micro::Delivery::at_most_once;
  MessageHandler handler;
  std::atomic<bool> active{true};
  // Bound on the current consumer connection (I/O thread only):
  amqp_channel_t channel = 0;
  std::string queue_name;    // the AMQP queue
  std::string consumer_tag;  // the server's name of its consumer
  bool acked() const { return delivery == micro::Delivery::at_least_once; }
};

// ---- the broker ----

class RabbitBroker : public micro::Broker {
 public:
  explicit RabbitBroker(const micro::PluginArguments& arguments)
      : settings_(read_settings(arguments)) {}

  ~RabbitBroker() override {
    try {
      disconnect();
    } catch (...) {
    }
    // A handle unsubscribing now finishes first; later ones find no broker.
    std::unique_lock lock(lifeline_->mutex);
    lifeline_->broker = nullptr;
  }

  void connect() override {
    if (on_io_thread()) return;  // from a handler: connected already
    std::lock_guard lifecycle(lifecycle_mutex_);
    if (io_thread_.joinable()) {
      if (!stop_.load()) return;
      join_io_thread();  // a handler called disconnect(); that thread is ending
    }
    // Both connections first, on this thread, so connect() reports what is wrong.
    auto consumer = std::make_unique<Connection>(settings_, "consumer");
    consumer->declare_exchange();
    std::vector<std::shared_ptr<SubscriptionState>> states;
    {
      std::lock_guard lock(subscriptions_mutex_);
      states = subscriptions_;
    }
    consumer_ = std::move(consumer);
    try {
      for (const auto& state : states) bind(*state);
      open_publisher();
    } catch (const ConnectionLost& lost) {
      consumer_.reset();
      forget_bindings();
      throw_unavailable("connecting to " + settings_.url() + ": " + lost.what());
    } catch (...) {
      consumer_.reset();
      forget_bindings();
      throw;
    }
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    stop_.store(false);
    {
      std::lock_guard lock(commands_mutex_);
      io_closed_ = false;
    }
    connected_.store(true);
    io_thread_ = std::thread([this] {
      io_thread_id_.store(std::this_thread::get_id());  // before any handler runs here
      run();
    });
  }

  void disconnect() override {
    if (on_io_thread()) {
      // From a handler: stop after this delivery, without draining (we are inside one). The
      // thread is joined by the next connect, disconnect or the destructor. Stopping is
      // marked before publishing stops: whoever sees "not connected" and calls connect() must
      // find the thread ending (connect() would otherwise return, taking it for connected).
      stop_.store(true);
      stop_publishing();
      return;
    }
    std::lock_guard lifecycle(lifecycle_mutex_);
    if (!io_thread_.joinable()) return;
    stop_publishing();
    if (!stop_.load())
      run_on_io_thread([this] {
        drain();
        stop_.store(true);
      });
    join_io_thread();
  }

  void publish(const Message& message) override {
    micro::validate_topic(message.topic, micro::TopicUse::publish, error_id);
    check_amqp_topic(message.topic, micro::TopicUse::publish);
    std::vector<std::string> extra;
    if (settings_.encoding == Encoding::gomicro) {
      // The headers a Go-Micro subscriber expects on a published message.
      if (!message.headers.contains("Micro-Topic"))
        extra.insert(extra.end(), {"Micro-Topic", message.topic});
      if (!message.headers.contains("Micro-Id"))
        extra.insert(extra.end(), {"Micro-Id", micro::random_uuid()});
      if (!message.headers.contains("Content-Type"))
        extra.insert(extra.end(), {"Content-Type", "application/octet-stream"});
    }
    std::vector<amqp_table_entry_t> entries = header_entries(message, extra);
    amqp_basic_properties_t properties{};
    properties._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
    properties.delivery_mode =
        settings_.persistent ? AMQP_DELIVERY_PERSISTENT : AMQP_DELIVERY_NONPERSISTENT;
    if (!entries.empty()) {
      properties._flags |= AMQP_BASIC_HEADERS_FLAG;
      properties.headers = amqp_table_t{static_cast<int>(entries.size()), entries.data()};
    }

    std::lock_guard lock(publisher_mutex_);
    if (!connected_.load()) throw_unavailable("broker is not connected");
    if (!publisher_)
      throw_unavailable("not connected to " + settings_.url() + " (reconnecting); message to '" +
                        message.topic + "' not sent");
    amqp_connection_state_t state = publisher_->state();
    int status =
        amqp_basic_publish(state, control_channel, bytes_of(settings_.exchange),
                           bytes_of(message.topic), 0, 0, &properties, bytes_of(message.body));
    if (status != AMQP_STATUS_OK) {
      publisher_lost();
      throw_unavailable("publish to '" + message.topic + "' failed: " + amqp_error_string2(status) +
                        "; message not sent");
    }
    ++published_;
    await_confirm(message.topic);
  }

  std::shared_ptr<micro::Subscription> subscribe(
      std::string topic, MessageHandler handler,
      const micro::SubscribeOptions& options = {}) override {
    micro::validate_topic(topic, micro::TopicUse::subscribe, error_id);
    check_amqp_topic(topic, micro::TopicUse::subscribe);
    if (!handler) throw_bad_request("handler is empty");
    micro::require_delivery(options, true, "rabbitmq", error_id);
    auto state = std::make_shared<SubscriptionState>();
    state->topic = std::move(topic);
    state->queue = options.queue;
    state->delivery = options.delivery;
    state->handler = std::move(handler);
    if (!state->queue.empty()) {
      state->queue_name = settings_.encoding == Encoding::gomicro
                              ? state->queue
                              : state->queue + "@" + state->topic;
      if (state->queue_name.size() > max_short_string)
        throw_bad_request("queue '" + state->queue + "' on topic '" + state->topic +
                          "': the AMQP queue name would exceed 255 bytes");
    }
    add_subscription(state);
    return std::make_shared<Handle>(state, lifeline_);
  }

  void set_error_handler(std::function<void(const Message&, std::string_view)> handler) override {
    errors_.set_handler(std::move(handler));
  }

 private:
  // What a handle reaches its broker through: null once the broker is gone. Unsubscribes hold
  // it shared (they may run at once, one inside a handler), the destructor exclusively.
  struct Lifeline {
    explicit Lifeline(RabbitBroker* owner) : broker(owner) {}
    std::shared_mutex mutex;
    RabbitBroker* broker;
  };

  class Handle : public micro::Subscription {
   public:
    Handle(std::shared_ptr<SubscriptionState> state, std::shared_ptr<Lifeline> lifeline)
        : state_(std::move(state)), lifeline_(std::move(lifeline)) {}
    const std::string& topic() const noexcept override { return state_->topic; }
    const std::string& queue() const noexcept override { return state_->queue; }
    void unsubscribe() override {
      if (!state_->active.exchange(false)) return;
      std::shared_lock lock(lifeline_->mutex);
      if (lifeline_->broker) lifeline_->broker->remove_subscription(state_);
    }

   private:
    std::shared_ptr<SubscriptionState> state_;
    std::shared_ptr<Lifeline> lifeline_;
  };

  bool on_io_thread() const { return std::this_thread::get_id() == io_thread_id_.load(); }

  void stop_publishing() {
    connected_.store(false);
    std::lock_guard lock(publisher_mutex_);
    publisher_.reset();  // publish now says "not connected"
  }

  // Under lifecycle_mutex_, not on the I/O thread.
  void join_io_thread() {
    io_thread_.join();
    io_thread_id_.store(std::thread::id{});
    ::close(wake_fd_);
    wake_fd_ = -1;
  }

  // ---- commands for the I/O thread ----

  // Runs `command` on the I/O thread (inline when already on it, or directly when there is no
  // I/O thread) and returns what it returned or rethrows what it threw.
  void execute(std::function<void()> command) {
    if (std::this_thread::get_id() == io_thread_id_.load()) {
      command();
      return;
    }
    // Not from the I/O thread: connect/disconnect wait, so the thread is there or not for the
    // whole command.
    std::lock_guard lifecycle(lifecycle_mutex_);
    run_on_io_thread(std::move(command));
  }

  // Under lifecycle_mutex_.
  void run_on_io_thread(std::function<void()> command) {
    if (!io_thread_.joinable()) {
      command();
      return;
    }
    auto task = std::make_shared<std::packaged_task<void()>>(std::move(command));
    std::future<void> done = task->get_future();
    bool queued = false;
    {
      std::lock_guard lock(commands_mutex_);
      queued = !io_closed_;
      if (queued) commands_.push_back([task] { (*task)(); });
    }
    if (!queued) {
      // The thread ended (a handler called disconnect()) and takes no more commands.
      join_io_thread();
      (*task)();
      done.get();
      return;
    }
    std::uint64_t one = 1;
    [[maybe_unused]] auto written = ::write(wake_fd_, &one, sizeof one);
    reconnect_changed_.notify_all();
    done.get();
  }

  // At the I/O thread's end: runs what is queued until nothing more can be queued.
  void finish_commands() {
    while (true) {
      std::deque<std::function<void()>> batch;
      {
        std::lock_guard lock(commands_mutex_);
        if (commands_.empty()) {
          io_closed_ = true;
          return;
        }
        batch.swap(commands_);
      }
      for (auto& command : batch) command();
    }
  }

  void run_commands() {
    std::deque<std::function<void()>> batch;
    {
      std::lock_guard lock(commands_mutex_);
      batch.swap(commands_);
    }
    for (auto& command : batch) command();
  }

  void add_subscription(const std::shared_ptr<SubscriptionState>& state) {
    execute([&] {
      if (consumer_) {
        try {
          bind(*state);
        } catch (const ConnectionLost& lost) {
          // Kept: bound again when the connection is back.
          micro::log::warn(log_component, std::string("subscribing: ") + lost.what());
        }
      }
      std::lock_guard lock(subscriptions_mutex_);
      subscriptions_.push_back(state);
    });
  }

  void remove_subscription(const std::shared_ptr<SubscriptionState>& state) {
    execute([&] {
      {
        std::lock_guard lock(subscriptions_mutex_);
        std::erase(subscriptions_, state);
      }
      unbind(*state);
    });
  }

  // ---- the consumer connection (I/O thread, or connect() before it starts) ----

  // Channel numbers go round rather than being reused at once: frames of a channel just
  // closed may still wait in the client's queue.
  amqp_channel_t allocate_channel() {
    for (int tries = 0; tries < max_channel; ++tries) {
      amqp_channel_t channel = next_channel_;
      next_channel_ = next_channel_ >= max_channel ? control_channel + 1 : next_channel_ + 1;
      if (!bound_.contains(channel)) return channel;
    }
    throw_unavailable("too many subscriptions on one connection (at most " +
                      std::to_string(max_channel - 1) + ")");
  }

  void bind(SubscriptionState& state) {
    Connection& connection = *consumer_;
    amqp_connection_state_t amqp = connection.state();
    amqp_channel_t channel = allocate_channel();
    connection.open_channel(channel);
    {
      const std::string where = "subscription to '" + state.topic + "'";
      if (state.acked() && settings_.prefetch > 0) {
        amqp_basic_qos(amqp, channel, 0, static_cast<std::uint16_t>(settings_.prefetch), 0);
        connection.check(amqp_get_rpc_reply(amqp), channel, where + ": setting prefetch");
      }
      bool group = !state.queue.empty();
      amqp_queue_declare_ok_t* declared =
          amqp_queue_declare(amqp, channel, group ? bytes_of(state.queue_name) : amqp_empty_bytes,
                             0, group ? 1 : 0, group ? 0 : 1, group ? 0 : 1, amqp_empty_table);
      connection.check(amqp_get_rpc_reply(amqp), channel,
                       where + ": declaring queue" + (group ? " '" + state.queue_name + "'" : ""));
      std::string queue_name = string_of(declared->queue);
      std::string key = binding_key(state.topic);
      amqp_queue_bind(amqp, channel, bytes_of(queue_name), bytes_of(settings_.exchange),
                      bytes_of(key), amqp_empty_table);
      connection.check(amqp_get_rpc_reply(amqp), channel,
                       where + ": binding queue '" + queue_name + "' with key '" + key + "'");
      amqp_basic_consume_ok_t* consuming =
          amqp_basic_consume(amqp, channel, bytes_of(queue_name), amqp_empty_bytes, 0,
                             state.acked() ? 0 : 1, 0, amqp_empty_table);
      connection.check(amqp_get_rpc_reply(amqp), channel, where + ": starting the consumer");
      state.queue_name = queue_name;
      state.consumer_tag = string_of(consuming->consumer_tag);
    }
    state.channel = channel;
    // Shared with the deliveries' lookup; subscriptions_ itself is guarded for other threads.
    bound_[channel] = &state;
  }

  void unbind(SubscriptionState& state) {
    if (!consumer_ || state.channel == 0) return;
    amqp_channel_t channel = std::exchange(state.channel, 0);
    bound_.erase(channel);
    // Closing the channel cancels the consumer; the server requeues what was not acked and
    // deletes a broadcast (auto-delete) queue.
    consumer_->close_channel(channel);
  }

  void forget_bindings() {
    std::lock_guard lock(subscriptions_mutex_);
    for (const auto& state : subscriptions_) state->channel = 0;
    bound_.clear();
    next_channel_ = control_channel + 1;
  }

  // ---- the publisher connection ----

  void open_publisher() {
    auto connection = std::make_unique<Connection>(settings_, "publisher");
    connection->declare_exchange();
    amqp_confirm_select(connection->state(), control_channel);
    connection->check(amqp_get_rpc_reply(connection->state()), control_channel,
                      "turning on publisher confirms");
    std::lock_guard lock(publisher_mutex_);
    publisher_ = std::move(connection);
    published_ = 0;
    publisher_down_.store(false);
  }

  // Under publisher_mutex_.
  void publisher_lost() {
    if (publisher_) publisher_->mark_lost();
    publisher_.reset();
    publisher_down_.store(true);
    std::uint64_t one = 1;
    if (wake_fd_ >= 0) [[maybe_unused]]
      auto written = ::write(wake_fd_, &one, sizeof one);
  }

  // Waits for the server's basic.ack of the message just published (under publisher_mutex_).
  void await_confirm(const std::string& topic) {
    amqp_connection_state_t state = publisher_->state();
    auto deadline = std::chrono::steady_clock::now() + settings_.confirm_timeout;
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::microseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() < 0) left = 0us;
      timeval timeout{static_cast<time_t>(left.count() / 1000000),
                      static_cast<suseconds_t>(left.count() % 1000000)};
      amqp_frame_t frame;
      int status = amqp_simple_wait_frame_noblock(state, &frame, &timeout);
      if (status == AMQP_STATUS_TIMEOUT) {
        publisher_lost();
        throw_unavailable("no confirm from " + settings_.url() + " within " +
                          std::to_string(settings_.confirm_timeout.count()) +
                          " ms for the message to '" + topic +
                          "'; it may or may not have been delivered");
      }
      if (status != AMQP_STATUS_OK) {
        publisher_lost();
        throw_unavailable("lost the connection to " + settings_.url() +
                          " waiting for the confirm of the message to '" + topic + "' (" +
                          amqp_error_string2(status) + "); it may or may not have been delivered");
      }
      if (frame.frame_type != AMQP_FRAME_METHOD) continue;
      switch (frame.payload.method.id) {
        case AMQP_BASIC_ACK_METHOD: {
          auto* ack = static_cast<amqp_basic_ack_t*>(frame.payload.method.decoded);
          if (ack->delivery_tag >= published_) return;
          continue;
        }
        case AMQP_BASIC_NACK_METHOD:
          throw_unavailable("the server refused the message to '" + topic + "' (basic.nack)");
        case AMQP_CHANNEL_CLOSE_METHOD: {
          auto* close = static_cast<amqp_channel_close_t*>(frame.payload.method.decoded);
          std::string why = std::to_string(close->reply_code) + " " + string_of(close->reply_text);
          amqp_channel_close_ok_t ok{};
          amqp_send_method(state, control_channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
          publisher_lost();  // opened again (exchange declared again) by the I/O thread
          throw_unavailable("publish to '" + topic + "' failed: the server closed the channel: " +
                            why + "; message not sent");
        }
        case AMQP_CONNECTION_CLOSE_METHOD: {
          amqp_connection_close_ok_t ok{};
          amqp_send_method(state, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
          publisher_lost();
          throw_unavailable("the server closed the connection while publishing to '" + topic +
                            "'; it may or may not have been delivered");
        }
        default:
          continue;
      }
    }
  }

  // ---- the I/O thread ----

  void run() {
    while (!stop_.load()) {
      run_commands();
      if (stop_.load()) break;
      if (!consumer_) {
        reconnect();
        continue;
      }
      try {
        if (publisher_down_.load()) reopen_publisher();
        step(-1);
      } catch (const ConnectionLost& lost) {
        connection_lost(lost.what());
      }
    }
    finish_commands();
    consumer_.reset();
    forget_bindings();  // drained or not, nothing is bound any more
  }

  // Waits for one thing to do (a delivery, another frame, a command; at most `wait_ms`, -1:
  // no limit but a retry of the publisher) and does it; false when nothing came. Throws
  // ConnectionLost.
  bool step(int wait_ms) {
    amqp_connection_state_t amqp = consumer_->state();
    if (!amqp_data_in_buffer(amqp) && !amqp_frames_enqueued(amqp)) {
      pollfd fds[2] = {{consumer_->socket(), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
      int timeout = wait_ms;
      if (publisher_down_.load()) timeout = static_cast<int>(settings_.reconnect_wait.count());
      int ready = ::poll(fds, 2, timeout);
      if (ready < 0 && errno != EINTR) throw ConnectionLost(std::strerror(errno));
      if (ready > 0 && (fds[1].revents & POLLIN)) {
        std::uint64_t count;
        [[maybe_unused]] auto got = ::read(wake_fd_, &count, sizeof count);
      }
      if (ready <= 0) return false;
      if (!(fds[0].revents & (POLLIN | POLLHUP | POLLERR))) return true;
    }
    amqp_maybe_release_buffers(amqp);
    amqp_envelope_t envelope;
    timeval timeout{std::max<time_t>(1, settings_.connect_timeout.count() / 1000), 0};
    amqp_rpc_reply_t reply = amqp_consume_message(amqp, &envelope, &timeout, 0);
    if (reply.reply_type == AMQP_RESPONSE_NORMAL) {
      struct Destroy {
        amqp_envelope_t& envelope;
        ~Destroy() { amqp_destroy_envelope(&envelope); }
      } destroy{envelope};
      dispatch(envelope);
      return true;
    }
    if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        reply.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
      other_frame();
      return true;
    }
    if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        reply.library_error == AMQP_STATUS_TIMEOUT)
      return false;
    consumer_->mark_lost();
    throw ConnectionLost(reply_text(reply));
  }

  void dispatch(amqp_envelope_t& envelope) {
    auto found = bound_.find(envelope.channel);
    if (found == bound_.end() || !found->second->active.load()) return;  // channel closing
    SubscriptionState& state = *found->second;
    Message message = message_of(envelope);
    if (!state.acked()) {
      errors_.deliver(state.handler, message);
      return;
    }
    bool succeeded = false;
    try {
      state.handler(message);
      succeeded = true;
    } catch (const std::exception& error) {
      errors_.report(message, error.what());
    } catch (...) {
      errors_.report(message, "unknown exception");
    }
    // The handler may have unsubscribed (its channel is closed: the server requeues it).
    if (!consumer_ || state.channel != envelope.channel) return;
    int status =
        succeeded
            ? amqp_basic_ack(consumer_->state(), envelope.channel, envelope.delivery_tag, 0)
            : amqp_basic_nack(consumer_->state(), envelope.channel, envelope.delivery_tag, 0, 1);
    if (status != AMQP_STATUS_OK) {
      consumer_->mark_lost();
      throw ConnectionLost(std::string("acknowledging: ") + amqp_error_string2(status));
    }
  }

  // A frame other than a delivery: a server-side close or cancel, or a late reply.
  void other_frame() {
    amqp_connection_state_t amqp = consumer_->state();
    amqp_frame_t frame;
    int status = amqp_simple_wait_frame(amqp, &frame);
    if (status != AMQP_STATUS_OK) {
      consumer_->mark_lost();
      throw ConnectionLost(amqp_error_string2(status));
    }
    if (frame.frame_type != AMQP_FRAME_METHOD) return;
    switch (frame.payload.method.id) {
      case AMQP_CONNECTION_CLOSE_METHOD: {
        auto* close = static_cast<amqp_connection_close_t*>(frame.payload.method.decoded);
        std::string why = std::to_string(close->reply_code) + " " + string_of(close->reply_text);
        amqp_connection_close_ok_t ok{};
        amqp_send_method(amqp, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        consumer_->mark_lost();
        throw ConnectionLost("the server closed the connection: " + why);
      }
      case AMQP_CHANNEL_CLOSE_METHOD:
      case AMQP_BASIC_CANCEL_METHOD: {
        amqp_channel_t channel = frame.channel;
        std::string why = "the consumer was cancelled by the server";
        if (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
          auto* close = static_cast<amqp_channel_close_t*>(frame.payload.method.decoded);
          why = std::to_string(close->reply_code) + " " + string_of(close->reply_text);
          amqp_channel_close_ok_t ok{};
          amqp_send_method(amqp, channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        } else {
          consumer_->close_channel(channel);
        }
        auto found = bound_.find(channel);
        if (found == bound_.end()) return;
        SubscriptionState& state = *found->second;
        bound_.erase(found);
        state.channel = 0;
        micro::log::warn(log_component, "subscription to '" + state.topic + "' lost its channel (" +
                                            why + "); subscribing again");
        try {
          bind(state);
        } catch (const micro::Exception& error) {
          micro::log::error(log_component, "subscription to '" + state.topic +
                                               "' could not be restored: " + error.error().detail);
        }
        return;
      }
      default:
        return;  // e.g. a close-ok of a channel an unsubscribe closed
    }
  }

  void connection_lost(const std::string& why) {
    micro::log::warn(log_component, "lost the connection to " + settings_.url() + " (" + why +
                                        "); reconnecting every " +
                                        std::to_string(settings_.reconnect_wait.count()) +
                                        " ms; publishes fail with 503 until then");
    {
      std::lock_guard lock(publisher_mutex_);
      if (publisher_) publisher_->mark_lost();
      publisher_.reset();
    }
    publisher_down_.store(false);
    if (consumer_) consumer_->mark_lost();
    consumer_.reset();
    forget_bindings();
  }

  // One reconnect attempt after `reconnect_wait` (cut short by a command or stop).
  void reconnect() {
    {
      std::unique_lock lock(commands_mutex_);
      reconnect_changed_.wait_for(lock, settings_.reconnect_wait,
                                  [&] { return !commands_.empty() || stop_.load(); });
      if (!commands_.empty() || stop_.load()) return;
    }
    try {
      auto consumer = std::make_unique<Connection>(settings_, "consumer");
      consumer->declare_exchange();
      consumer_ = std::move(consumer);
      std::vector<std::shared_ptr<SubscriptionState>> states;
      {
        std::lock_guard lock(subscriptions_mutex_);
        states = subscriptions_;
      }
      for (const auto& state : states) bind(*state);
      open_publisher();
      micro::log::info(log_component, "reconnected to " + settings_.url() + "; " +
                                          std::to_string(states.size()) +
                                          " subscriptions restored");
    } catch (const std::exception& error) {
      micro::log::debug(log_component, std::string("reconnect attempt failed: ") + error.what());
      consumer_.reset();
      forget_bindings();
    }
  }

  void reopen_publisher() {
    try {
      open_publisher();
      publisher_down_.store(false);
      micro::log::info(log_component, "publisher connection to " + settings_.url() + " restored");
    } catch (const std::exception& error) {
      micro::log::debug(log_component, std::string("publisher reconnect failed: ") + error.what());
    }
  }

  // disconnect(): every message already in a broadcast queue reaches its handler (a group's
  // durable queue keeps its messages for the other members), then the consumers stop and
  // whatever they were sent before is handled too.
  void drain() {
    if (!consumer_) return;
    auto deadline = std::chrono::steady_clock::now() + settings_.drain_timeout;
    try {
      while (std::chrono::steady_clock::now() < deadline) {
        bool empty = true;
        for (const auto& [channel, state] : bound_) {
          if (!state->queue.empty()) continue;
          amqp_queue_declare_ok_t* declared =
              amqp_queue_declare(consumer_->state(), control_channel, bytes_of(state->queue_name),
                                 1, 0, 0, 0, amqp_empty_table);
          consumer_->check(amqp_get_rpc_reply(consumer_->state()), control_channel,
                           "checking queue '" + state->queue_name + "'");
          if (declared->message_count > 0) empty = false;
        }
        if (empty) break;
        while (step(5) && std::chrono::steady_clock::now() < deadline) {
        }
      }
      // basic.cancel-ok comes after every delivery the server sent that consumer: once it is
      // here, those deliveries wait in the client's queue, handled next.
      for (const auto& [channel, state] : bound_) {
        amqp_basic_cancel(consumer_->state(), channel, bytes_of(state->consumer_tag));
        consumer_->check(amqp_get_rpc_reply(consumer_->state()), channel,
                         "stopping the consumer of '" + state->topic + "'");
      }
      while (amqp_frames_enqueued(consumer_->state()) || amqp_data_in_buffer(consumer_->state()))
        step(0);
    } catch (const std::exception& error) {
      micro::log::warn(log_component, std::string("drain stopped: ") + error.what());
    }
    {
      std::lock_guard lock(subscriptions_mutex_);
      for (const auto& state : subscriptions_) state->channel = 0;
    }
    bound_.clear();
    next_channel_ = control_channel + 1;
    consumer_.reset();
  }

  const Settings settings_;
  micro::BrokerErrorReporter errors_{"rabbitmq"};

  std::mutex lifecycle_mutex_;  // one connect/disconnect at a time
  std::atomic<bool> connected_{false};

  std::mutex publisher_mutex_;
  std::unique_ptr<Connection> publisher_;  // null: down
  std::uint64_t published_ = 0;            // delivery tag of the last publish
  std::atomic<bool> publisher_down_{false};

  // The consumer side: owned by the I/O thread while it runs.
  std::unique_ptr<Connection> consumer_;
  std::map<amqp_channel_t, SubscriptionState*> bound_;
  amqp_channel_t next_channel_ = control_channel + 1;
  std::thread io_thread_;
  std::atomic<std::thread::id> io_thread_id_{};
  int wake_fd_ = -1;
  std::atomic<bool> stop_{false};  // set on the I/O thread (a command or a handler)

  std::mutex commands_mutex_;
  std::condition_variable reconnect_changed_;
  std::deque<std::function<void()>> commands_;
  bool io_closed_ = false;  // the I/O thread takes no more commands (guarded by commands_mutex_)

  std::shared_ptr<Lifeline> lifeline_ = std::make_shared<Lifeline>(this);

  std::mutex subscriptions_mutex_;  // guards the list; the states' bindings are the I/O thread's
  std::vector<std::shared_ptr<SubscriptionState>> subscriptions_;
};

const micro::PluginOption rabbitmq_options[] = {
    {"user", "string", "", "user name (default: from the address, else guest)"},
    {"password", "string", "", "password (default: from the address, else guest)"},
    {"vhost", "string", "", "virtual host (default: from the address, else /)"},
    {"exchange", "string", "micro", "the topic exchange messages are published to"},
    {"exchange_durable", "string", "auto",
     "declare the exchange durable: true, false, or auto (true; false with encoding=gomicro, as "
     "Go-Micro declares it)"},
    {"prefetch", "int", "256",
     "unacknowledged messages the server sends an at_least_once subscription ahead (basic.qos); "
     "0: no limit",
     "0", "65535"},
    {"persistent", "bool", "true",
     "publish persistent messages (delivery mode 2): they survive a server restart in durable "
     "(queue group) queues"},
    {"tls", "bool", "false", "connect with TLS, amqps (implied by tls_ca, tls_cert, amqps://)"},
    {"tls_ca", "string", "", "PEM file of the CA certificates the server's must chain to"},
    {"tls_cert", "string", "", "PEM client certificate (with tls_key)"},
    {"tls_key", "string", "", "PEM client private key (with tls_cert)"},
    {"tls_verify_hostname", "bool", "true",
     "check that the server's certificate names the host connected to"},
    {"connect_timeout", "duration", "5s", "timeout of a connection attempt and of each AMQP call",
     "1ms"},
    {"confirm_timeout", "duration", "10s",
     "how long publish waits for the server's confirm before failing with 503", "1ms"},
    {"reconnect_wait", "duration", "1s", "pause between reconnect attempts", "1ms"},
    {"drain_timeout", "duration", "30s",
     "how long disconnect waits for messages already in broadcast queues", "1ms"},
    {"encoding", "string", "native",
     "native, or gomicro (Go-Micro's layout: queue group queues named as the group, "
     "Micro-Topic/Micro-Id/Content-Type headers, non-durable exchange by default)"},
};

}  // namespace

MICRO_PLUGIN(broker, rabbitmq,
             "publish/subscribe over RabbitMQ (AMQP 0-9-1): topic exchange, publisher confirms, "
             "at-least-once, Go-Micro compatible",
             rabbitmq_options, [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new RabbitBroker(arguments);
             })
