// broker/redis — publish/subscribe over a Redis server through hiredis, in one of two modes.
//
// mode=pubsub: PUBLISH / SUBSCRIBE / PSUBSCRIBE, at-most-once, like Go-Micro's redis broker.
// Queue groups are refused (400): Redis pub/sub hands every message to every subscriber, and a
// "queue group" that silently broadcasts would do each job once per member.
//
// mode=streams: each topic is a stream (XADD, optionally trimmed with MAXLEN ~). Every
// subscription reads through a consumer group (XREADGROUP): a queue group is one Redis group
// shared by its members, a plain subscriber has a group of its own. at_least_once: XACK only
// after the handler returned; a failed message is read again from the consumer's pending list
// after retry_wait; entries a dead or stuck consumer held longer than claim_idle are taken over
// with XAUTOCLAIM. at_most_once reads with NOACK.
//
// Shape: one publisher connection (one command at a time, so every publish has the server's
// answer before it returns: a publish that cannot be confirmed throws 503 and is counted, never
// dropped silently). Each subscription has its own connection and reader thread, which calls
// the handler (so each subscription sees messages in order and a slow handler holds up only
// its own). Readers reconnect after a server loss and restore their subscription; in pubsub
// mode publish refuses (503) until every local subscription is back, so a message published
// here is not lost to a subscriber of this broker that is still resubscribing.
//
// TLS (rediss://): hiredis 0.14 (Debian 12) has none, so each connection's bytes are relayed
// through a socket pair to a Boost.Asio/OpenSSL TLS stream (TlsRelay, TlsConnector).
// Streams batch reads of several entries get one CONSUMER "receive" span linked to every
// producer span in the batch.

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <hiredis/hiredis.h>
#include <openssl/x509v3.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <nlohmann/json.hpp>

#include <micro/base64.hpp>
#include <micro/broker.hpp>
#include <micro/error.hpp>
#include <micro/log.hpp>
#include <micro/plugin.hpp>
#include <micro/random.hpp>
#include <micro/trace.hpp>

namespace {

using micro::Message;
using micro::MessageHandler;
using Clock = std::chrono::steady_clock;

constexpr const char* error_id = "micro.broker.redis";
constexpr std::string_view log_component = "broker redis";

[[noreturn]] void throw_bad_request(std::string detail) {
  throw micro::Exception(micro::bad_request(error_id, std::move(detail)));
}

[[noreturn]] void throw_unavailable(std::string detail) {
  throw micro::Exception(micro::unavailable(error_id, std::move(detail)));
}

// ---- settings ----

enum class Mode { pubsub, streams };
enum class Encoding { native, gomicro };

struct Settings {
  std::string host = "127.0.0.1";
  int port = 6379;
  Mode mode = Mode::pubsub;
  Encoding encoding = Encoding::native;
  std::string user, password, name, stream_prefix, consumer;
  // TLS (rediss://): the relay in TlsConnector carries hiredis' bytes (see there).
  bool tls = false;
  bool tls_verify_hostname = true;
  std::string tls_ca, tls_cert, tls_key;
  std::int64_t db = 0;
  std::int64_t max_len = 0;
  std::int64_t batch = 0;
  std::chrono::milliseconds connect_timeout{}, command_timeout{}, reconnect_wait{}, block{},
      claim_idle{}, claim_interval{}, retry_wait{}, claim_ttl{};
};

// "host:port", "redis[s]://[user:password@]host[:port][/db]" or "" (127.0.0.1:6379).
void parse_address(std::string_view address, Settings& settings) {
  std::string_view rest = address;
  if (rest.starts_with("rediss://")) {
    settings.tls = true;
    rest.remove_prefix(9);
  } else if (rest.starts_with("redis://")) {
    rest.remove_prefix(8);
  } else if (std::size_t scheme = rest.find("://"); scheme != std::string_view::npos) {
    throw_bad_request("address '" + std::string(address) + "': scheme '" +
                      std::string(rest.substr(0, scheme)) + "' is not redis:// or rediss:// (TLS)");
  }
  if (rest.empty()) return;
  if (std::size_t slash = rest.find('/'); slash != std::string_view::npos) {
    std::string_view db = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
    if (!db.empty()) {
      std::int64_t number = 0;
      for (char c : db) {
        if (c < '0' || c > '9' || number > 100000)
          throw_bad_request("address '" + std::string(address) + "': database '" + std::string(db) +
                            "' is not a number");
        number = number * 10 + (c - '0');
      }
      settings.db = number;
    }
  }
  if (std::size_t at = rest.rfind('@'); at != std::string_view::npos) {
    std::string_view credentials = rest.substr(0, at);
    rest = rest.substr(at + 1);
    std::size_t colon = credentials.find(':');
    if (colon == std::string_view::npos) {
      settings.password = std::string(credentials);
    } else {
      settings.user = std::string(credentials.substr(0, colon));
      settings.password = std::string(credentials.substr(colon + 1));
    }
  }
  std::string_view host = rest;
  std::string_view port;
  if (std::size_t colon = rest.rfind(':'); colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (host.empty()) throw_bad_request("address '" + std::string(address) + "': host is empty");
  settings.host = std::string(host);
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
  parse_address(arguments.address(), settings);
  std::string mode = arguments.get_string("mode");
  if (mode == "streams")
    settings.mode = Mode::streams;
  else if (mode != "pubsub")
    throw_bad_request("option mode: expected pubsub or streams, got '" + mode + "'");
  std::string encoding = arguments.get_string("encoding");
  if (encoding == "gomicro")
    settings.encoding = Encoding::gomicro;
  else if (encoding != "native")
    throw_bad_request("option encoding: expected native or gomicro, got '" + encoding + "'");
  if (settings.encoding == Encoding::gomicro && settings.mode == Mode::streams)
    throw_bad_request(
        "option encoding=gomicro applies to mode=pubsub (Go-Micro's redis broker uses pub/sub); "
        "mode=streams has its own entry layout");
  // Options override credentials and database given in the address.
  if (std::string user = arguments.get_string("user"); !user.empty()) settings.user = user;
  if (std::string password = arguments.get_string("password"); !password.empty())
    settings.password = password;
  if (!settings.user.empty() && settings.password.empty())
    throw_bad_request("option user needs option password");
  if (std::int64_t db = arguments.get_int("db"); db != 0) settings.db = db;
  settings.name = arguments.get_string("name");
  if (settings.name.find_first_of(" \t\r\n") != std::string::npos)
    throw_bad_request("option name '" + settings.name + "' contains whitespace");
  settings.stream_prefix = arguments.get_string("stream_prefix");
  settings.consumer = arguments.get_string("consumer");
  settings.max_len = arguments.get_int("max_len");
  settings.claim_ttl = arguments.get_duration("claim_ttl");
  settings.batch = arguments.get_int("batch");
  settings.connect_timeout = arguments.get_duration("connect_timeout");
  settings.command_timeout = arguments.get_duration("command_timeout");
  settings.reconnect_wait = arguments.get_duration("reconnect_wait");
  settings.block = arguments.get_duration("block");
  settings.claim_idle = arguments.get_duration("claim_idle");
  settings.claim_interval = arguments.get_duration("claim_interval");
  settings.retry_wait = arguments.get_duration("retry_wait");
  if (arguments.get_bool("tls")) settings.tls = true;
  settings.tls_ca = arguments.get_string("tls_ca");
  settings.tls_cert = arguments.get_string("tls_cert");
  settings.tls_key = arguments.get_string("tls_key");
  settings.tls_verify_hostname = arguments.get_bool("tls_verify_hostname");
  if (settings.tls_cert.empty() != settings.tls_key.empty())
    throw_bad_request("options tls_cert and tls_key go together");
  if (!settings.tls_ca.empty() || !settings.tls_cert.empty()) settings.tls = true;
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
  if (settings.consumer.empty()) {
    char host[256] = {0};
    ::gethostname(host, sizeof host - 1);
    settings.consumer = std::string(host) + "-" + std::to_string(::getpid()) + "-" +
                        micro::random_uuid().substr(0, 8);
  }
  return settings;
}

// ---- wire formats ----

// Native pub/sub payload: magic, the message id (u32 length, bytes), u32 header count, (u32
// length, bytes) per key and value, then the body. All lengths big-endian; decoding checks each
// against what is left. The id is what queue-group members claim a message by.
constexpr std::string_view envelope_magic{"\0MB1", 4};

void put_u32(std::string& out, std::size_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(value >> shift));
}

std::string encode_native(const Message& message) {
  std::string id = micro::random_uuid();
  std::size_t size = envelope_magic.size() + 8 + id.size() + message.body.size();
  for (const auto& [key, value] : message.headers) size += 8 + key.size() + value.size();
  std::string out;
  out.reserve(size);
  out.append(envelope_magic);
  put_u32(out, id.size());
  out.append(id);
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

bool decode_native(std::string_view data, Message& message, std::string& id) {
  if (!data.starts_with(envelope_magic)) return false;
  data.remove_prefix(envelope_magic.size());
  std::size_t id_size = 0;
  if (!read_u32(data, id_size) || id_size > data.size()) return false;
  std::string_view id_text = data.substr(0, id_size);
  data.remove_prefix(id_size);
  std::size_t count = 0;
  // Each header takes at least 8 bytes: a count beyond that is corrupt, refused before use.
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
  id = std::string(id_text);
  return true;
}

// A pub/sub payload from any publisher: ours, Go-Micro's, or a bare PUBLISH (body only). `id`:
// the message's id (ours, or Go-Micro's Micro-Id header), empty when it has none.
void decode_payload(std::string_view data, Message& message, std::string& id) {
  id.clear();
  if (decode_native(data, message, id)) return;
  if (decode_gomicro_envelope(data, message)) {
    id = message.headers.get("Micro-Id");
    return;
  }
  message.headers = {};
  message.body = std::string(data);
}

// The key a queue-group member sets (SET NX) to take a pub/sub message: the first member to
// set it handles the message. A message without an id is known by a hash of its bytes.
std::string claim_key(std::string_view group, std::string_view channel, std::string_view id,
                      std::string_view payload) {
  std::string key = "micro:claim:" + std::string(group) + ":" + std::string(channel) + ":";
  if (!id.empty()) return key + std::string(id);
  std::uint64_t hash = 14695981039346656037ull;  // FNV-1a, 64 bits
  for (unsigned char c : payload) hash = (hash ^ c) * 1099511628211ull;
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(hash));
  return key + "h" + text;
}

// Stream entries: field "body" is the body, each header a field "h:<Key>".
constexpr std::string_view body_field = "body";
constexpr std::string_view header_field_prefix = "h:";

bool has_wildcard(std::string_view topic) {
  std::size_t start = 0;
  while (start <= topic.size()) {
    std::size_t dot = topic.find('.', start);
    std::string_view token = topic.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (token == "*" || token == ">") return true;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return false;
}

// The PSUBSCRIBE glob for a NATS-style pattern: literal characters escaped, each wildcard
// token a '*' (which also spans dots: the reader filters with topic_matches).
std::string glob_of(std::string_view topic) {
  std::string glob;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = topic.find('.', start);
    std::string_view token = topic.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (token == "*" || token == ">") {
      glob += '*';
    } else {
      for (char c : token) {
        if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') glob += '\\';
        glob += c;
      }
    }
    if (dot == std::string_view::npos) return glob;
    glob += '.';
    start = dot + 1;
  }
}

// ---- one connection ----

struct ReplyDeleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

// The connection failed (I/O, timeout, closed): the connection is unusable.
struct ConnectionLost : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// The server answered with an error (the connection is fine).
struct ServerError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

timeval to_timeval(std::chrono::milliseconds duration) {
  return timeval{static_cast<time_t>(duration.count() / 1000),
                 static_cast<suseconds_t>(duration.count() % 1000 * 1000)};
}

std::string_view text_of(const redisReply* reply) {
  return reply && reply->str ? std::string_view(reply->str, reply->len) : std::string_view();
}

// ---- TLS ----
//
// hiredis 0.14 speaks only to a file descriptor, so a TLS connection is relayed: hiredis gets
// one end of a socket pair (redisConnectFd) and a relay on the connector's thread moves bytes
// between the other end and a verified TLS stream to the server. Closing either side closes the
// other, so hiredis sees a lost TLS connection as a lost connection and reconnects as usual.

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

// What one TLS failure means, for the error text: the certificate check's own words first,
// with what to look at.
std::string tls_failure_text(long verify_result, const boost::system::error_code& error,
                             const Settings& settings) {
  if (verify_result != X509_V_OK) {
    std::string text = std::string("the server's certificate was refused: ") +
                       X509_verify_cert_error_string(verify_result);
    switch (verify_result) {
      case X509_V_ERR_HOSTNAME_MISMATCH:
      case X509_V_ERR_IP_ADDRESS_MISMATCH:
        return text + " (it is not issued for '" + settings.host +
               "': connect by a name or address it names, or set tls_verify_hostname=false to "
               "check only the chain)";
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
      case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
      case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
      case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        return text + " (it is not signed by a CA in " +
               (settings.tls_ca.empty() ? std::string("the system's store; set tls_ca")
                                        : "tls_ca '" + settings.tls_ca + "'") +
               ")";
      default:
        return text;
    }
  }
  return "TLS handshake failed: " + error.message() +
         " (does the server speak TLS on this port, and does it accept this client's "
         "certificate, tls_cert?)";
}

// The TLS half of one connection (see above). Lives on the connector's thread; failure() may be
// read from any.
class TlsRelay : public std::enable_shared_from_this<TlsRelay> {
 public:
  TlsRelay(asio::io_context& io, ssl::context& context, int local_descriptor)
      : resolver_(io), tls_(io, context), local_(io), timer_(io) {
    local_.assign(asio::local::stream_protocol(), local_descriptor);
  }

  // Resolves, connects and shakes hands, verifying the chain and (tls_verify_hostname) the
  // name; then relays. `done` gets "" or why it failed, once.
  void start(const Settings& settings, std::function<void(std::string)> done) {
    settings_ = &settings;
    done_ = std::move(done);
    SSL* handle = tls_.native_handle();
    X509_VERIFY_PARAM* parameters = SSL_get0_param(handle);
    boost::system::error_code not_ip;
    asio::ip::make_address(settings.host, not_ip);
    if (not_ip) SSL_set_tlsext_host_name(handle, settings.host.c_str());  // SNI: names only
    if (settings.tls_verify_hostname) {
      X509_VERIFY_PARAM_set_hostflags(parameters, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      if (not_ip)
        X509_VERIFY_PARAM_set1_host(parameters, settings.host.c_str(), 0);
      else
        X509_VERIFY_PARAM_set1_ip_asc(parameters, settings.host.c_str());
    }
    timer_.expires_after(settings.connect_timeout);
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& error) {
      if (error || self->handshaken_) return;
      self->finish("no TLS connection within connect_timeout (" +
                   std::to_string(self->settings_->connect_timeout.count()) +
                   " ms; does the server speak TLS on this port?)");
    });
    resolver_.async_resolve(
        settings.host, std::to_string(settings.port),
        [self = shared_from_this()](const boost::system::error_code& error,
                                    const tcp::resolver::results_type& endpoints) {
          if (self->closed_) return;
          if (error) return self->finish("cannot resolve the host: " + error.message());
          asio::async_connect(self->tls_.lowest_layer(), endpoints,
                              [self](const boost::system::error_code& error, const tcp::endpoint&) {
                                if (self->closed_) return;
                                if (error) return self->finish(error.message());
                                boost::system::error_code ignored;
                                self->tls_.lowest_layer().set_option(tcp::no_delay(true), ignored);
                                self->tls_.lowest_layer().set_option(
                                    asio::socket_base::keep_alive(true), ignored);
                                self->handshake();
                              });
        });
  }

  // Why the TLS connection ended (a TLS alert, the server's close), empty while it works.
  std::string failure() const {
    std::lock_guard lock(mutex_);
    return failure_;
  }

 private:
  void handshake() {
    tls_.async_handshake(ssl::stream_base::client, [self = shared_from_this()](
                                                       const boost::system::error_code& error) {
      if (self->closed_) return;
      if (error)
        return self->finish(tls_failure_text(SSL_get_verify_result(self->tls_.native_handle()),
                                             error, *self->settings_));
      self->handshaken_ = true;
      self->timer_.cancel();
      self->finish("");
      self->relay_to_server();
      self->relay_to_client();
    });
  }

  void finish(std::string error) {
    if (done_) std::exchange(done_, nullptr)(error);
    if (!error.empty()) close(std::move(error));
  }

  // hiredis → server. After the TLS side ended, what hiredis still writes is read and dropped:
  // its socket stays open until hiredis closes it, so hiredis never writes to a closed socket
  // (SIGPIPE) and sees the loss as the end of what it reads.
  void relay_to_server() {
    local_.async_read_some(
        asio::buffer(to_server_),
        [self = shared_from_this()](const boost::system::error_code& error, std::size_t size) {
          if (error) return self->close_local();  // hiredis closed its end
          if (self->closed_) return self->relay_to_server();
          asio::async_write(self->tls_, asio::buffer(self->to_server_.data(), size),
                            [self](const boost::system::error_code& error, std::size_t) {
                              if (error) self->close(error.message());
                              self->relay_to_server();
                            });
        });
  }

  // server → hiredis.
  void relay_to_client() {
    tls_.async_read_some(
        asio::buffer(to_client_),
        [self = shared_from_this()](const boost::system::error_code& error, std::size_t size) {
          if (error)
            return self->close(error == asio::error::eof || error == ssl::error::stream_truncated
                                   ? "the server closed the TLS connection"
                                   : error.message());
          asio::async_write(self->local_, asio::buffer(self->to_client_.data(), size),
                            [self](const boost::system::error_code& error, std::size_t) {
                              if (error) return self->close_local();
                              self->relay_to_client();
                            });
        });
  }

  // Ends the TLS side, recording why first (hiredis reads EOF only after this), and tells
  // hiredis: no more bytes come (its own writes are still read, see relay_to_server).
  void close(std::string why) {
    if (!why.empty() && !closed_) {
      std::lock_guard lock(mutex_);
      failure_ = std::move(why);
    }
    closed_ = true;
    boost::system::error_code ignored;
    resolver_.cancel();
    timer_.cancel();
    tls_.lowest_layer().shutdown(tcp::socket::shutdown_both, ignored);
    tls_.lowest_layer().close(ignored);
    local_.shutdown(asio::local::stream_protocol::socket::shutdown_send, ignored);
    // Before the relay runs (a failed set-up), no hiredis uses the socket: close it now.
    if (!handshaken_) close_local();
  }

  // hiredis is gone: close everything.
  void close_local() {
    boost::system::error_code ignored;
    if (!closed_) close("");
    local_.close(ignored);
  }

  tcp::resolver resolver_;
  ssl::stream<tcp::socket> tls_;
  asio::local::stream_protocol::socket local_;
  asio::steady_timer timer_;
  const Settings* settings_ = nullptr;
  std::function<void(std::string)> done_;
  bool handshaken_ = false, closed_ = false;
  std::array<char, 65536> to_server_{}, to_client_{};
  mutable std::mutex mutex_;
  std::string failure_;
};

// The TLS client context (CA, client certificate) and the thread all of a broker's relays run
// on. Built with the broker, so unusable files are a 400 then.
class TlsConnector {
 public:
  explicit TlsConnector(const Settings& settings) : settings_(settings) {
    context_.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                         ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                         ssl::context::no_tlsv1_1);
    context_.set_verify_mode(ssl::verify_peer);
    boost::system::error_code error;
    if (settings.tls_ca.empty()) {
      context_.set_default_verify_paths(error);
      if (error) throw_bad_request("cannot load the system's CA certificates: " + error.message());
    } else {
      context_.load_verify_file(settings.tls_ca, error);
      if (error)
        throw_bad_request("tls_ca '" + settings.tls_ca +
                          "': cannot read it as PEM CA certificates: " + error.message());
    }
    if (!settings.tls_cert.empty()) {
      context_.use_certificate_chain_file(settings.tls_cert, error);
      if (error)
        throw_bad_request("tls_cert '" + settings.tls_cert +
                          "': cannot read it as a PEM certificate chain: " + error.message());
      context_.use_private_key_file(settings.tls_key, ssl::context::pem, error);
      if (error)
        throw_bad_request("tls_key '" + settings.tls_key +
                          "': cannot use it as the key of tls_cert '" + settings.tls_cert +
                          "': " + error.message());
    }
    thread_ = std::thread([this] { io_.run(); });
  }
  ~TlsConnector() {
    work_.reset();
    io_.stop();
    thread_.join();
  }
  TlsConnector(const TlsConnector&) = delete;
  TlsConnector& operator=(const TlsConnector&) = delete;

  struct Opened {
    int descriptor;  // hiredis' end of the socket pair
    std::shared_ptr<TlsRelay> relay;
  };
  // A verified TLS connection to the server, relayed; throws 503 saying why not.
  Opened open(const std::string& where) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
      int error_number = errno;
      throw_unavailable("cannot connect to redis at " + where +
                        ": socketpair: " + std::strerror(error_number));
    }
    std::shared_ptr<TlsRelay> relay;
    try {
      relay = std::make_shared<TlsRelay>(io_, context_, pair[1]);
    } catch (...) {
      ::close(pair[0]);
      ::close(pair[1]);
      throw;
    }
    auto result = std::make_shared<std::promise<std::string>>();
    std::future<std::string> outcome = result->get_future();
    asio::post(io_, [relay, result, this] {
      relay->start(settings_, [result](std::string error) { result->set_value(std::move(error)); });
    });
    // The relay's own timer ends it after connect_timeout; the margin covers a busy thread.
    std::string error = "no TLS connection within connect_timeout (" +
                        std::to_string(settings_.connect_timeout.count()) + " ms)";
    if (outcome.wait_for(settings_.connect_timeout + std::chrono::seconds(1)) ==
        std::future_status::ready)
      error = outcome.get();
    if (!error.empty()) {
      ::close(pair[0]);  // the relay ends itself on its side
      throw_unavailable("cannot connect to redis at " + where + ": " + error);
    }
    return {pair[0], std::move(relay)};
  }

 private:
  const Settings& settings_;
  // Declared before io_: the relays' streams, destroyed with io_, use the context.
  ssl::context context_{ssl::context::tls_client};
  asio::io_context io_{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_{
      asio::make_work_guard(io_)};
  std::thread thread_;
};

class Connection {
 public:
  // Connects, authenticates, selects the database and names the client; throws
  // micro::Exception: 401 when the server refuses the credentials, 503 otherwise.
  // `tls`: the broker's connector when settings.tls (null otherwise).
  Connection(const Settings& settings, TlsConnector* tls, std::string_view role)
      : settings_(settings) {
    if (tls) {
      TlsConnector::Opened opened = tls->open(where());
      relay_ = std::move(opened.relay);
      context_ = redisConnectFd(opened.descriptor);
      if (!context_) ::close(opened.descriptor);
    } else {
      context_ = redisConnectWithTimeout(settings.host.c_str(), settings.port,
                                         to_timeval(settings.connect_timeout));
    }
    if (!context_ || context_->err) {
      std::string why = context_ ? context_->errstr : "out of memory";
      if (context_) redisFree(context_);
      context_ = nullptr;
      throw_unavailable("cannot connect to redis at " + where() + ": " + why);
    }
    redisSetTimeout(context_, to_timeval(settings.command_timeout));
    // Over TLS the descriptor is a local socket; the relay keeps the TCP connection alive.
    if (!tls) redisEnableKeepAlive(context_);
    try {
      if (!settings.password.empty()) {
        std::vector<std::string> auth{"AUTH"};
        if (!settings.user.empty()) auth.push_back(settings.user);
        auth.push_back(settings.password);
        try {
          command(auth);
        } catch (const ServerError& error) {
          throw micro::Exception(
              micro::Error(error_id, micro::ErrorCode::unauthorized,
                           "redis at " + where() + " refused the credentials" +
                               (settings.user.empty() ? "" : " of user '" + settings.user + "'") +
                               ": " + error.what()));
        }
      }
      if (settings.db != 0) command({"SELECT", std::to_string(settings.db)});
      std::string name =
          (settings.name.empty() ? std::string("micro") : settings.name) + "-" + std::string(role);
      command({"CLIENT", "SETNAME", name});
    } catch (const micro::Exception&) {
      close();
      throw;
    } catch (const std::exception& error) {
      close();
      std::string detail = error.what();
      if (detail.find("NOAUTH") != std::string::npos)
        throw micro::Exception(micro::Error(
            error_id, micro::ErrorCode::unauthorized,
            "redis at " + where() + " requires a password (options user and password)"));
      throw_unavailable("redis at " + where() + ": " + detail);
    }
  }
  ~Connection() { close(); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  std::string where() const {
    return (settings_.tls ? "rediss://" : "") + settings_.host + ":" +
           std::to_string(settings_.port);
  }

  // Sends one command and returns its reply; throws ConnectionLost or ServerError.
  Reply command(const std::vector<std::string>& arguments) {
    append(arguments);
    return read();
  }

  void append(const std::vector<std::string>& arguments) {
    std::vector<const char*> pointers;
    std::vector<std::size_t> sizes;
    pointers.reserve(arguments.size());
    sizes.reserve(arguments.size());
    for (const auto& argument : arguments) {
      pointers.push_back(argument.data());
      sizes.push_back(argument.size());
    }
    if (redisAppendCommandArgv(context_, static_cast<int>(arguments.size()), pointers.data(),
                               sizes.data()) != REDIS_OK)
      throw ConnectionLost(error_text());
  }

  // The next reply (sending what was appended first); ServerError for an error reply.
  Reply read() {
    void* raw = nullptr;
    if (redisGetReply(context_, &raw) != REDIS_OK || !raw) throw ConnectionLost(error_text());
    Reply reply(static_cast<redisReply*>(raw));
    if (reply->type == REDIS_REPLY_ERROR) throw ServerError(std::string(text_of(reply.get())));
    return reply;
  }

  // A reply already read from the socket, without waiting; null when there is none.
  Reply read_buffered() {
    void* raw = nullptr;
    if (redisReaderGetReply(context_->reader, &raw) != REDIS_OK) throw ConnectionLost(error_text());
    return Reply(static_cast<redisReply*>(raw));
  }

  void set_read_timeout(std::chrono::milliseconds timeout) {
    redisSetTimeout(context_, to_timeval(timeout));
  }

  // Makes a read blocked on another thread return (with ConnectionLost). The descriptor stays
  // open until the owner destroys the connection.
  void abort() noexcept {
    if (context_ && context_->fd >= 0) ::shutdown(context_->fd, SHUT_RDWR);
  }

 private:
  std::string error_text() const {
    if (!context_) return "not connected";
    // Over TLS the relay knows why the connection ended (a TLS alert: e.g. the server wants a
    // client certificate, which TLS 1.3 says only after the handshake).
    if (std::string failure = relay_ ? relay_->failure() : std::string(); !failure.empty())
      return failure;
    if (context_->err == REDIS_ERR_EOF) return "the server closed the connection";
    if (context_->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK))
      return "no answer within command_timeout (" +
             std::to_string(settings_.command_timeout.count()) + " ms)";
    return context_->errstr[0] ? context_->errstr : "connection failed";
  }
  void close() noexcept {
    if (context_) redisFree(context_);
    context_ = nullptr;
  }

  const Settings& settings_;
  std::shared_ptr<TlsRelay> relay_;  // TLS: the other end of hiredis' socket
  redisContext* context_ = nullptr;
};

// ---- subscriptions ----

struct Core;

// One micro subscription; it outlives connections (a reader per connect()).
struct SubscriptionState {
  std::string topic, queue;
  MessageHandler handler;
  micro::Delivery delivery = micro::Delivery::at_most_once;
  // Read from a stream (mode=streams, or a queue group in mode=pubsub) or a channel.
  bool reads_stream = false;
  std::string key;       // the stream read: <stream_prefix><topic> or micro:queue:<topic>
  std::string group;     // streams: the consumer group
  std::string consumer;  // this subscription's consumer name (also names its drain channel)
  std::atomic<bool> active{true};
  std::mutex delivery_mutex;  // held while the handler runs
  std::atomic<std::thread::id> delivering_thread{};
};

// One subscription's connection and thread, for one connect() … disconnect() span.
class Reader : public std::enable_shared_from_this<Reader> {
 public:
  Reader(std::shared_ptr<Core> core, std::shared_ptr<SubscriptionState> state)
      : core_(std::move(core)), state_(std::move(state)) {}

  void start();
  // Waits until the first subscription is in place (or failed): the error text, empty if fine.
  std::string wait_ready(std::chrono::milliseconds limit) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, limit, [&] { return ready_ || !first_error_.empty() || done_; });
    if (ready_) return {};
    return first_error_.empty() ? "no answer from redis" : first_error_;
  }
  // Asks the reader to finish what the server already holds for it, then stop.
  void request_drain();
  // Asks the reader to stop at once (pending deliveries are skipped).
  void request_stop() {
    std::lock_guard lock(mutex_);
    stop_ = true;
    if (connection_) connection_->abort();
    changed_.notify_all();
  }
  // Waits for the thread to end (not when called from the reader thread itself).
  void join() {
    if (!thread_.joinable()) return;
    if (thread_.get_id() == std::this_thread::get_id())
      thread_.detach();  // a handler stopping its own subscription: the thread ends by itself
    else
      thread_.join();
  }
  const std::shared_ptr<SubscriptionState>& state() const { return state_; }

 private:
  void run();
  void run_pubsub(Connection& connection);
  void run_streams(Connection& connection);
  std::unique_ptr<Connection> open();
  void deliver(Message& message);
  bool decode_entry(const redisReply* entry, std::string& id, std::optional<Message>& message);
  bool deliver_entry(Message& message);
  std::shared_ptr<micro::trace::Span> start_receive_span(
      const std::vector<std::optional<Message>>& messages, std::string_view operation);
  bool process_entries(Connection& connection, const redisReply* entries, bool acknowledge,
                       std::string_view operation);
  bool stopping() {
    std::lock_guard lock(mutex_);
    return stop_;
  }
  bool draining() {
    std::lock_guard lock(mutex_);
    return drain_;
  }
  // Sleeps up to `duration`, waking early on stop or drain.
  void pause(std::chrono::milliseconds duration) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, duration, [&] { return stop_ || drain_; });
  }
  void set_ready(bool ready);
  void set_first_error(const std::string& error) {
    std::lock_guard lock(mutex_);
    if (!ready_ && first_error_.empty()) first_error_ = error;
    changed_.notify_all();
  }

  std::shared_ptr<Core> core_;
  std::shared_ptr<SubscriptionState> state_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool stop_ = false, drain_ = false, ready_ = false, done_ = false;
  std::string first_error_;
  Connection* connection_ = nullptr;  // guarded by mutex_, for abort()
  std::int64_t client_id_ = 0;        // streams: for CLIENT UNBLOCK (guarded by mutex_)
  std::string drain_channel_;         // pubsub: where the drain marker comes
};

struct Core {
  Settings settings;
  micro::BrokerErrorReporter errors{"redis"};
  // TLS: the relays' context and thread; before the connections, which it must outlive.
  std::unique_ptr<TlsConnector> tls;

  // The publisher connection; publish holds publish_mutex for the whole round trip.
  std::mutex publish_mutex;
  std::unique_ptr<Connection> publisher;
  bool connected = false;            // between connect() and disconnect() (publish_mutex)
  Clock::time_point next_reconnect;  // publisher reconnect attempts are spaced (publish_mutex)
  std::uint64_t failed_publishes = 0, failed_in_outage = 0;  // publish_mutex

  // Readers whose subscription is not (yet again) in place; pubsub publishes wait for 0.
  std::atomic<int> readers_down{0};

  std::mutex subscriptions_mutex;
  std::vector<std::shared_ptr<SubscriptionState>> subscriptions;
  std::vector<std::shared_ptr<Reader>> readers;
  std::atomic<std::uint64_t> serial{0};

  std::string key_of(std::string_view topic) const {
    return settings.stream_prefix + std::string(topic);
  }

  // One command on the publisher connection, reconnecting it first if needed. Throws
  // micro::Exception 503 when the server cannot be reached, ServerError for an error reply.
  Reply control(const std::vector<std::string>& arguments) {
    std::lock_guard lock(publish_mutex);
    return control_locked(arguments);
  }
  Reply control_locked(const std::vector<std::string>& arguments) {
    if (!publisher) {
      auto now = Clock::now();
      if (now < next_reconnect)
        throw_unavailable("not connected to redis at " + settings.host + ":" +
                          std::to_string(settings.port) + " (reconnecting)");
      next_reconnect = now + settings.reconnect_wait;
      publisher = std::make_unique<Connection>(settings, tls.get(), "publisher");
      if (failed_in_outage > 0)
        micro::log::info(log_component,
                         "publisher reconnected; " + std::to_string(failed_in_outage) +
                             " publishes failed (reported to their callers) while away");
      failed_in_outage = 0;
    }
    try {
      return publisher->command(arguments);
    } catch (const ConnectionLost& error) {
      publisher.reset();
      micro::log::warn(log_component, std::string("publisher connection lost: ") + error.what());
      throw_unavailable(std::string("redis connection lost: ") + error.what());
    }
  }
};

void Reader::start() {
  core_->readers_down.fetch_add(1);
  thread_ = std::thread([self = shared_from_this()] { self->run(); });
}

void Reader::set_ready(bool ready) {
  std::lock_guard lock(mutex_);
  if (ready == ready_) return;
  ready_ = ready;
  core_->readers_down.fetch_add(ready ? -1 : 1);
  changed_.notify_all();
}

void Reader::request_drain() {
  {
    std::lock_guard lock(mutex_);
    drain_ = true;
    changed_.notify_all();
    if (!ready_ || !connection_) {
      stop_ = true;  // nothing is held for us without a connection
      if (connection_) connection_->abort();
      return;
    }
  }
  try {
    if (!state_->reads_stream) {
      // After every message published before it (the server keeps order), so when the
      // reader sees the marker it has everything that was accepted.
      core_->control({"PUBLISH", drain_channel_, "drain"});
    } else {
      // Wakes a blocked XREADGROUP; the reader then reads without blocking until empty.
      // Repeated while the reader runs: it may be between two reads when one arrives.
      for (int attempt = 0; attempt < 1000; ++attempt) {
        std::int64_t id = 0;
        {
          std::lock_guard lock(mutex_);
          if (done_ || !connection_) return;
          id = client_id_;
        }
        core_->control({"CLIENT", "UNBLOCK", std::to_string(id)});
        std::unique_lock lock(mutex_);
        if (changed_.wait_for(lock, std::chrono::milliseconds(10), [&] { return done_; })) return;
      }
    }
  } catch (const std::exception&) {
    request_stop();  // the server is away: nothing more can be drained
  }
}

std::unique_ptr<Connection> Reader::open() {
  auto connection = std::make_unique<Connection>(core_->settings, core_->tls.get(), "subscriber");
  if (state_->reads_stream) {
    Reply id = connection->command({"CLIENT", "ID"});
    std::lock_guard lock(mutex_);
    client_id_ = id->integer;
  }
  return connection;
}

void Reader::run() {
  bool reported_loss = false;
  while (!stopping()) {
    std::unique_ptr<Connection> connection;
    try {
      connection = open();
    } catch (const std::exception& error) {
      set_first_error(error.what());
      if (draining()) break;
      if (!reported_loss) {
        micro::log::warn(log_component, "subscription to '" + state_->topic +
                                            "': cannot connect: " + error.what() + "; retrying");
        reported_loss = true;
      }
      pause(core_->settings.reconnect_wait);
      continue;
    }
    {
      std::lock_guard lock(mutex_);
      if (stop_) break;
      connection_ = connection.get();
    }
    try {
      if (state_->reads_stream)
        run_streams(*connection);
      else
        run_pubsub(*connection);
    } catch (const std::exception& error) {
      set_first_error(error.what());
      if (!stopping() && !draining()) {
        micro::log::warn(log_component, "subscription to '" + state_->topic +
                                            "': connection lost: " + error.what() +
                                            "; reconnecting");
        reported_loss = true;
      }
    }
    bool was_ready = false;
    {
      std::lock_guard lock(mutex_);
      connection_ = nullptr;
      was_ready = ready_;
    }
    // A reader leaving (unsubscribed, draining) is not an outage: counting it down for the
    // moment before it takes its count back would refuse publishes meanwhile.
    if (draining() || stopping()) break;
    if (was_ready) set_ready(false);
    pause(core_->settings.reconnect_wait);
  }
  std::lock_guard lock(mutex_);
  // A reader counts as down from start() until ready and again after a loss; leaving, it
  // takes back its count.
  if (!ready_) core_->readers_down.fetch_sub(1);
  ready_ = false;
  done_ = true;
  changed_.notify_all();
}

void Reader::deliver(Message& message) {
  if (!state_->active.load()) return;
  std::lock_guard lock(state_->delivery_mutex);
  if (!state_->active.load()) return;
  state_->delivering_thread.store(std::this_thread::get_id());
  core_->errors.deliver(state_->handler, message);
  state_->delivering_thread.store(std::thread::id{});
}

void Reader::run_pubsub(Connection& connection) {
  const Settings& settings = core_->settings;
  const std::string& topic = state_->topic;
  bool pattern = has_wildcard(topic);
  drain_channel_ = "__micro:drain:" + state_->consumer;
  // A queue-group member takes each message with SET NX on a connection of its own (this one
  // is in subscribe mode); the member whose SET succeeds handles it.
  std::unique_ptr<Connection> claims;
  if (!state_->queue.empty())
    claims = std::make_unique<Connection>(settings, core_->tls.get(), "claims");
  std::string claim_ttl = std::to_string(settings.claim_ttl.count());
  // Subscribe, then wait for both confirmations: after them the server routes to us.
  connection.append({"SUBSCRIBE", drain_channel_});
  connection.append({pattern ? "PSUBSCRIBE" : "SUBSCRIBE", pattern ? glob_of(topic) : topic});
  connection.read();
  connection.read();
  connection.set_read_timeout(std::chrono::milliseconds(0));  // wait for messages forever
  set_ready(true);
  struct Arrival {
    Reply reply;
    std::string_view channel, payload;
    bool drain = false;
  };
  std::vector<Arrival> batch;
  std::vector<Message> messages;
  while (true) {
    // What arrived: one reply waited for, then every one already read with it.
    batch.clear();
    for (Reply reply = connection.read(); reply; reply = connection.read_buffered()) {
      if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) continue;
      std::string_view kind = text_of(reply->element[0]);
      Arrival arrival;
      if (kind == "message") {
        arrival.channel = text_of(reply->element[1]);
        arrival.payload = text_of(reply->element[2]);
      } else if (kind == "pmessage" && reply->elements >= 4) {
        arrival.channel = text_of(reply->element[2]);
        arrival.payload = text_of(reply->element[3]);
      } else {
        continue;
      }
      arrival.drain = arrival.channel == drain_channel_;
      if (!arrival.drain && pattern && !micro::topic_matches(topic, arrival.channel)) continue;
      arrival.reply = std::move(reply);
      batch.push_back(std::move(arrival));
    }
    messages.assign(batch.size(), Message{});
    std::vector<bool> mine(batch.size(), true);
    std::string id;
    std::size_t claimed = 0;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (batch[i].drain) continue;
      messages[i].topic = std::string(batch[i].channel);
      decode_payload(batch[i].payload, messages[i], id);
      if (claims) {
        claims->append({"SET", claim_key(state_->queue, batch[i].channel, id, batch[i].payload),
                        "1", "NX", "PX", claim_ttl});
        ++claimed;
      }
    }
    // The claims go out together; their answers come back in order.
    for (std::size_t i = 0; claimed > 0 && i < batch.size(); ++i) {
      if (batch[i].drain) continue;
      mine[i] = claims->read()->type != REDIS_REPLY_NIL;
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (batch[i].drain) {
        if (draining()) return;
        continue;
      }
      if (mine[i]) deliver(messages[i]);
      if (stopping()) return;
    }
  }
}

// One stream entry, [id, [field, value, …]], as a message. False for a malformed entry (no id);
// a deleted entry (fields nil) has an id and no message.
bool Reader::decode_entry(const redisReply* entry, std::string& id,
                          std::optional<Message>& message) {
  message.reset();
  if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 2) return false;
  id = std::string(text_of(entry->element[0]));
  const redisReply* fields = entry->element[1];
  if (fields->type != REDIS_REPLY_ARRAY) return true;
  message.emplace();
  message->topic = state_->topic;
  for (std::size_t i = 0; i + 1 < fields->elements; i += 2) {
    std::string_view field = text_of(fields->element[i]);
    std::string_view value = text_of(fields->element[i + 1]);
    if (field == body_field)
      message->body = std::string(value);
    else if (field.starts_with(header_field_prefix))
      message->headers.set(std::string(field.substr(header_field_prefix.size())),
                           std::string(value));
  }
  return true;
}

// Runs the handler; false when it threw (reported) or the subscription has ended.
bool Reader::deliver_entry(Message& message) {
  if (!state_->active.load()) return false;
  std::lock_guard lock(state_->delivery_mutex);
  if (!state_->active.load()) return false;
  state_->delivering_thread.store(std::this_thread::get_id());
  bool succeeded = true;
  try {
    state_->handler(message);
  } catch (const std::exception& error) {
    succeeded = false;
    core_->errors.report(message, error.what());
  } catch (...) {
    succeeded = false;
    core_->errors.report(message, "unknown exception");
  }
  state_->delivering_thread.store(std::thread::id{});
  return succeeded;
}

// The CONSUMER span of a batch read (the seeds' span-links rule): `<topic> receive`, linked to
// the producer span of every message in it that carries trace context. Null when tracing is
// off or the read returned one message (its process span is already the producer's child and
// linked to it).
std::shared_ptr<micro::trace::Span> Reader::start_receive_span(
    const std::vector<std::optional<Message>>& messages, std::string_view operation) {
  micro::trace::Tracer& tracer = micro::trace::tracer();
  std::int64_t count = 0;
  for (const auto& message : messages) count += message ? 1 : 0;
  if (count < 2 || !tracer.enabled()) return nullptr;
  micro::trace::StartOptions options;
  options.kind = micro::trace::SpanKind::consumer;
  options.root = true;  // its producers are links, not parents: a batch has many
  for (const auto& message : messages) {
    if (!message) continue;
    if (std::optional<micro::trace::SpanContext> producer = micro::trace::extract(message->headers))
      options.links.push_back({std::move(*producer), {}});
  }
  options.attributes = {
      {"messaging.system", std::string("redis")},
      {"messaging.destination.name", state_->topic},
      {"messaging.operation.type", std::string("receive")},
      {"messaging.operation.name", std::string(operation)},
      {"messaging.batch.message_count", count},
      {"messaging.consumer.group.name", state_->group},
  };
  return tracer.start_span(state_->topic + " receive", micro::Context{}, options);
}

// Delivers a list of [id, fields] entries read by `operation` (XREADGROUP, XAUTOCLAIM); XACKs
// the ones handled (acknowledge: at_least_once). Returns whether some handler failed (those
// stay pending for a retry).
bool Reader::process_entries(Connection& connection, const redisReply* entries, bool acknowledge,
                             std::string_view operation) {
  if (!entries || entries->type != REDIS_REPLY_ARRAY || entries->elements == 0) return false;
  std::vector<std::string> ids(entries->elements);
  std::vector<std::optional<Message>> messages(entries->elements);
  std::vector<bool> valid(entries->elements);
  for (std::size_t i = 0; i < entries->elements; ++i)
    valid[i] = decode_entry(entries->element[i], ids[i], messages[i]);
  std::shared_ptr<micro::trace::Span> receive = start_receive_span(messages, operation);
  std::vector<std::string> ack{"XACK", state_->key, state_->group};
  bool failed = false;
  std::size_t failures = 0;
  for (std::size_t i = 0; i < entries->elements; ++i) {
    if (!valid[i]) continue;
    // A deleted entry (nil fields) has nothing to deliver: acknowledged.
    bool handled = !messages[i] || deliver_entry(*messages[i]);
    if (handled) {
      ack.push_back(std::move(ids[i]));
    } else if (state_->active.load()) {
      failed = true;
      ++failures;
    }
    if (stopping()) break;
  }
  if (receive && failures > 0)
    receive->set_status(micro::trace::StatusCode::error,
                        std::to_string(failures) + " of the batch's handlers failed");
  // Ended after the batch is handled and acknowledged, so it spans the whole hand-over.
  struct EndSpan {
    micro::trace::Span* span;
    ~EndSpan() {
      if (span) span->end();
    }
  } end_receive{receive.get()};
  if (acknowledge && ack.size() > 3) connection.command(ack);
  return failed;
}

void Reader::run_streams(Connection& connection) {
  const Settings& settings = core_->settings;
  const std::string& key = state_->key;
  const std::string& group = state_->group;
  const std::string& consumer = state_->consumer;
  bool at_least_once = state_->delivery == micro::Delivery::at_least_once;
  // The group exists already unless the server lost it (restart without persistence): then
  // it starts at the beginning of what the stream holds now.
  try {
    connection.command({"XGROUP", "CREATE", key, group, "0", "MKSTREAM"});
  } catch (const ServerError& error) {
    if (std::string_view(error.what()).find("BUSYGROUP") == std::string_view::npos) throw;
  }
  connection.set_read_timeout(settings.block + settings.command_timeout);
  set_ready(true);
  std::string count = std::to_string(settings.batch);
  // First what this consumer was given but did not acknowledge (before a reconnect).
  bool read_pending = at_least_once;
  auto next_claim = Clock::now() + settings.claim_interval;
  auto next_retry = Clock::time_point::max();
  while (!stopping()) {
    if (read_pending) {
      read_pending = false;
      Reply reply = connection.command(
          {"XREADGROUP", "GROUP", group, consumer, "COUNT", count, "STREAMS", key, "0"});
      if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1) {
        const redisReply* entries = reply->element[0]->element[1];
        if (process_entries(connection, entries, true, "XREADGROUP"))
          next_retry = Clock::now() + settings.retry_wait;
        // A full batch: there may be more pending after it.
        if (entries->elements == static_cast<std::size_t>(settings.batch)) read_pending = true;
      }
      continue;
    }
    auto now = Clock::now();
    if (at_least_once && now >= next_retry) {
      next_retry = Clock::time_point::max();
      read_pending = true;
      continue;
    }
    if (at_least_once && now >= next_claim && !draining()) {
      next_claim = now + settings.claim_interval;
      Reply reply =
          connection.command({"XAUTOCLAIM", key, group, consumer,
                              std::to_string(settings.claim_idle.count()), "0-0", "COUNT", count});
      if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2) {
        if (reply->elements >= 3 && reply->element[2]->elements > 0)
          micro::log::warn(log_component,
                           "topic '" + state_->topic +
                               "': " + std::to_string(reply->element[2]->elements) +
                               " pending entries were trimmed from the stream before delivery");
        if (process_entries(connection, reply->element[1], true, "XAUTOCLAIM"))
          next_retry = Clock::now() + settings.retry_wait;
      }
      continue;
    }
    bool drain = draining();
    std::vector<std::string> command{"XREADGROUP", "GROUP", group, consumer, "COUNT", count};
    if (!drain) {
      // Not past the next retry or claim.
      auto until = std::min(next_retry, at_least_once ? next_claim : Clock::time_point::max());
      auto wait = settings.block;
      if (until != Clock::time_point::max())
        wait = std::clamp(std::chrono::duration_cast<std::chrono::milliseconds>(until - now),
                          std::chrono::milliseconds(1), settings.block);
      command.insert(command.end(), {"BLOCK", std::to_string(wait.count())});
    }
    if (!at_least_once) command.push_back("NOACK");
    command.insert(command.end(), {"STREAMS", key, ">"});
    Reply reply = connection.command(command);
    bool empty = reply->type != REDIS_REPLY_ARRAY || reply->elements == 0;
    if (!empty) {
      const redisReply* entries = reply->element[0]->element[1];
      empty = entries->elements == 0;
      if (process_entries(connection, entries, at_least_once, "XREADGROUP"))
        next_retry = Clock::now() + settings.retry_wait;
    }
    // Draining: a read that found nothing (without blocking) means all is handled.
    if (drain && empty) return;
  }
}

class RedisSubscription : public micro::Subscription {
 public:
  RedisSubscription(std::shared_ptr<SubscriptionState> state, std::weak_ptr<Core> core)
      : state_(std::move(state)), core_(std::move(core)) {}

  const std::string& topic() const noexcept override { return state_->topic; }
  const std::string& queue() const noexcept override { return state_->queue; }

  void unsubscribe() override {
    if (!state_->active.exchange(false)) return;
    // Only locals from here: a handler unsubscribing itself may see the owner drop this
    // object while it is still in here.
    std::shared_ptr<SubscriptionState> state = state_;
    std::shared_ptr<Core> core = core_.lock();
    std::shared_ptr<Reader> reader;
    if (core) {
      std::lock_guard lock(core->subscriptions_mutex);
      std::erase(core->subscriptions, state);
      for (auto it = core->readers.begin(); it != core->readers.end(); ++it) {
        if ((*it)->state() == state) {
          reader = *it;
          core->readers.erase(it);
          break;
        }
      }
    }
    if (reader) {
      reader->request_stop();
      reader->join();
    }
    // A plain subscriber's stream group is its own: nothing else will read it.
    if (core && state->reads_stream && state->queue.empty()) {
      try {
        core->control({"XGROUP", "DESTROY", state->key, state->group});
      } catch (const std::exception&) {
        // Unreachable server: the group stays (it holds nothing a live reader needs).
      }
    } else if (core && state->reads_stream) {
      // A queue-group member leaving: drop its consumer name unless it still holds entries
      // (those stay pending for the others to claim).
      try {
        Reply pending =
            core->control({"XPENDING", state->key, state->group, "-", "+", "1", state->consumer});
        if (pending->type == REDIS_REPLY_ARRAY && pending->elements == 0)
          core->control({"XGROUP", "DELCONSUMER", state->key, state->group, state->consumer});
      } catch (const std::exception&) {
        // Unreachable server: the name stays, harmless (it holds nothing).
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

class RedisBroker : public micro::Broker {
 public:
  explicit RedisBroker(const micro::PluginArguments& arguments) : core_(std::make_shared<Core>()) {
    core_->settings = read_settings(arguments);
    if (core_->settings.tls) core_->tls = std::make_unique<TlsConnector>(core_->settings);
  }
  ~RedisBroker() override {
    try {
      disconnect();
    } catch (...) {
    }
  }

  void connect() override {
    std::lock_guard lifecycle(lifecycle_mutex_);
    {
      std::lock_guard lock(core_->publish_mutex);
      if (core_->connected) return;
      core_->publisher =
          std::make_unique<Connection>(core_->settings, core_->tls.get(), "publisher");
      core_->connected = true;
    }
    std::vector<std::shared_ptr<Reader>> started;
    {
      std::lock_guard lock(core_->subscriptions_mutex);
      for (const auto& state : core_->subscriptions) {
        auto reader = std::make_shared<Reader>(core_, state);
        reader->start();
        core_->readers.push_back(reader);
        started.push_back(reader);
      }
    }
    auto limit = core_->settings.connect_timeout + core_->settings.command_timeout;
    for (const auto& reader : started) {
      std::string error = reader->wait_ready(limit);
      if (!error.empty())
        micro::log::warn(log_component, "subscription to '" + reader->state()->topic +
                                            "' not restored yet: " + error + "; retrying");
    }
  }

  void disconnect() override {
    std::lock_guard lifecycle(lifecycle_mutex_);
    {
      std::lock_guard lock(core_->publish_mutex);
      if (!core_->connected) return;
      core_->connected = false;
    }
    std::vector<std::shared_ptr<Reader>> readers;
    {
      std::lock_guard lock(core_->subscriptions_mutex);
      readers = std::exchange(core_->readers, {});
    }
    // Drain all at once (the markers and wake-ups go out together), then wait for each.
    for (const auto& reader : readers) reader->request_drain();
    for (const auto& reader : readers) reader->join();
    std::lock_guard lock(core_->publish_mutex);
    core_->publisher.reset();
  }

  void publish(const Message& message) override {
    micro::validate_topic(message.topic, micro::TopicUse::publish, error_id);
    const Settings& settings = core_->settings;
    std::vector<std::string> command;
    if (settings.mode == Mode::pubsub) {
      command = {"PUBLISH", message.topic,
                 settings.encoding == Encoding::gomicro ? encode_gomicro_envelope(message)
                                                        : encode_native(message)};
    } else {
      command = {"XADD", core_->key_of(message.topic)};
      if (settings.max_len > 0)
        command.insert(command.end(), {"MAXLEN", "~", std::to_string(settings.max_len)});
      command.insert(command.end(), {"*", std::string(body_field), message.body});
      for (const auto& [key, value] : message.headers) {
        command.push_back(std::string(header_field_prefix) + key);
        command.push_back(value);
      }
    }
    std::lock_guard lock(core_->publish_mutex);
    if (!core_->connected) throw_unavailable("broker is not connected");
    auto fail = [&](const std::string& why) {
      ++core_->failed_publishes;
      ++core_->failed_in_outage;
      throw_unavailable("publish to '" + message.topic + "' failed: " + why);
    };
    int down = core_->readers_down.load();
    if (settings.mode == Mode::pubsub && down > 0)
      fail("reconnecting to redis: " + std::to_string(down) +
           " subscriptions of this broker are not restored yet");
    try {
      core_->control_locked(command);
    } catch (const micro::Exception& error) {
      fail(error.error().detail);
    } catch (const ServerError& error) {
      ++core_->failed_publishes;
      throw micro::Exception(
          micro::Error(error_id, micro::ErrorCode::internal,
                       "publish to '" + message.topic + "': redis refused it: " + error.what()));
    }
  }

  std::shared_ptr<micro::Subscription> subscribe(
      std::string topic, MessageHandler handler,
      const micro::SubscribeOptions& options = {}) override {
    micro::validate_topic(topic, micro::TopicUse::subscribe, error_id);
    if (!handler) throw_bad_request("handler is empty");
    const Settings& settings = core_->settings;
    bool streams = settings.mode == Mode::streams;
    micro::require_delivery(options, streams, "redis", error_id);
    bool reads_stream = streams;
    if (streams && has_wildcard(topic))
      throw_bad_request("topic '" + topic +
                        "': mode=streams reads one stream per topic and has no wildcards; use "
                        "mode=pubsub for wildcard subscriptions");
    if (options.queue.find_first_of(" \t\r\n") != std::string::npos)
      throw_bad_request("queue '" + options.queue + "' contains whitespace");
    auto state = std::make_shared<SubscriptionState>();
    state->topic = std::move(topic);
    state->queue = options.queue;
    state->handler = std::move(handler);
    state->delivery = options.delivery;
    state->consumer = settings.consumer + "-" + std::to_string(core_->serial.fetch_add(1));
    state->group = options.queue.empty() ? "micro." + state->consumer : options.queue;
    state->reads_stream = reads_stream;
    state->key = core_->key_of(state->topic);

    std::lock_guard lifecycle(lifecycle_mutex_);
    bool connected = false;
    {
      std::lock_guard lock(core_->publish_mutex);
      connected = core_->connected;
    }
    if (connected && reads_stream) {
      // The group exists before subscribe returns, so it holds every message published after.
      try {
        core_->control({"XGROUP", "CREATE", state->key, state->group, "$", "MKSTREAM"});
      } catch (const ServerError& error) {
        if (std::string_view(error.what()).find("BUSYGROUP") == std::string_view::npos)
          throw_unavailable("cannot create consumer group '" + state->group + "' on '" +
                            state->key + "': " + error.what());
      }
    }
    std::shared_ptr<Reader> reader;
    {
      std::lock_guard lock(core_->subscriptions_mutex);
      core_->subscriptions.push_back(state);
      if (connected) {
        reader = std::make_shared<Reader>(core_, state);
        reader->start();
        core_->readers.push_back(reader);
      }
    }
    if (reader) {
      std::string error = reader->wait_ready(settings.connect_timeout + settings.command_timeout);
      if (!error.empty()) {
        RedisSubscription(state, core_).unsubscribe();
        throw_unavailable("subscribe to '" + state->topic + "' failed: " + error);
      }
    }
    return std::make_shared<RedisSubscription>(std::move(state), core_);
  }

  void set_error_handler(std::function<void(const Message&, std::string_view)> handler) override {
    core_->errors.set_handler(std::move(handler));
  }

 private:
  std::mutex lifecycle_mutex_;
  std::shared_ptr<Core> core_;
};

const micro::PluginOption redis_options[] = {
    {"mode", "string", "pubsub",
     "pubsub (PUBLISH/SUBSCRIBE, at-most-once, no queue groups) or streams (XADD/XREADGROUP, "
     "consumer groups, at-least-once available)"},
    {"encoding", "string", "native",
     "pubsub payload: native (binary envelope with headers) or gomicro (Go-Micro's JSON "
     "envelope)"},
    {"user", "string", "", "ACL user (with password; Redis 6+)"},
    {"password", "string", "", "password (AUTH), alone or with user"},
    {"db", "int", "0", "database number (SELECT); pub/sub channels are server-wide", "0", "100000"},
    {"name", "string", "", "client name prefix (CLIENT SETNAME <name>-publisher|subscriber)"},
    {"connect_timeout", "duration", "2s", "timeout of each connection attempt", "1ms"},
    {"command_timeout", "duration", "5s", "how long a command waits for its answer", "1ms"},
    {"reconnect_wait", "duration", "500ms", "pause between reconnect attempts", "1ms"},
    {"stream_prefix", "string", "", "streams: the stream key is <stream_prefix><topic>"},
    {"max_len", "int", "0",
     "streams: trim each stream to about this many entries (XADD MAXLEN ~); 0: never trim. "
     "Trimming drops entries a slow group has not read",
     "0", "9223372036854775807"},
    {"batch", "int", "100", "streams: entries read per XREADGROUP / XAUTOCLAIM", "1", "100000"},
    {"block", "duration", "2s", "streams: longest XREADGROUP BLOCK", "1ms"},
    {"consumer", "string", "",
     "streams: consumer name prefix; default <hostname>-<pid>-<random>, one consumer per "
     "subscription"},
    {"claim_idle", "duration", "30s",
     "streams, at_least_once: entries pending this long (a dead or stuck consumer's) are "
     "claimed by another member (XAUTOCLAIM)",
     "1ms"},
    {"claim_interval", "duration", "5s", "streams: how often each subscription looks for them",
     "1ms"},
    {"claim_ttl", "duration", "1m",
     "pubsub queue groups: how long the key a member took a message with is kept (a copy of a "
     "message arriving later than this would be handled again)",
     "1ms"},
    {"retry_wait", "duration", "1s",
     "streams, at_least_once: a message whose handler threw is delivered again after this", "0s"},
    {"tls", "bool", "false", "connect with TLS (implied by rediss://, tls_ca, tls_cert)"},
    {"tls_ca", "string", "",
     "PEM file of the CA certificates the server's must chain to; default: the system's"},
    {"tls_cert", "string", "", "PEM client certificate chain (with tls_key)"},
    {"tls_key", "string", "", "PEM client private key (with tls_cert)"},
    {"tls_verify_hostname", "bool", "true",
     "check that the server's certificate names the host (DNS name or IP address) of the "
     "address; false: the chain is still verified"},
};

}  // namespace

MICRO_PLUGIN(broker, redis,
             "publish/subscribe over Redis: pub/sub (Go-Micro compatible) or streams with "
             "consumer groups",
             redis_options, [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new RedisBroker(arguments);
             })
