// http/server_connection.cpp — one server connection: requests parsed from one contiguous read
// buffer (pipelined ones without another read), limits refused from the head before the body is
// read, answers written in arrival order (several in one gather write), timeouts on one lazily
// re-armed timer, and the closes: refusal, EOF, timeout, graceful.
#include "server_connection.hpp"

#include <time.h>

#include <algorithm>
#include <charconv>
#include <cstdio>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/status.hpp>

#include <micro/context.hpp>
#include <micro/error.hpp>
#include <micro/log.hpp>

namespace micro::http::detail {

namespace http = beast::http;

namespace {

constexpr std::string_view log_component = "http server";
constexpr std::size_t read_size = 16 * 1024;
constexpr std::size_t body_read_size = 64 * 1024;
constexpr std::size_t inline_body_limit = 2048;  // smaller bodies are copied next to their head
constexpr auto linger_time = std::chrono::seconds(1);

std::string format_duration(std::chrono::milliseconds duration) {
  if (duration.count() % 1000 == 0) return std::to_string(duration.count() / 1000) + "s";
  return std::to_string(duration.count()) + "ms";
}

// The line the parser stopped at, quoted for a message: at most 60 characters, control bytes
// escaped.
std::string quote_line(std::string_view data) {
  auto end = data.find_first_of("\r\n");
  std::string_view line = data.substr(0, std::min<std::size_t>(end, 60));
  std::string quoted = "\"";
  for (unsigned char c : line) {
    if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
      quoted += escaped;
    } else {
      quoted += static_cast<char>(c);
    }
  }
  if (end != std::string_view::npos ? end > 60 : data.size() > 60) quoted += "…";
  return quoted + "\"";
}

// RFC 9110 §5.6.2 token characters: what a header name may hold.
bool is_token(std::string_view text) {
  if (text.empty()) return false;
  for (unsigned char c : text) {
    if (c <= 0x20 || c >= 0x7f) return false;
    switch (c) {
      case '(':
      case ')':
      case ',':
      case '/':
      case ':':
      case ';':
      case '<':
      case '=':
      case '>':
      case '?':
      case '@':
      case '[':
      case '\\':
      case ']':
      case '{':
      case '}':
      case '"':
        return false;
      default:
        break;
    }
  }
  return true;
}

// RFC 9110 §5.5: a field value holds no control character but tab (CR and LF would split the
// head; the others make clients refuse it).
bool is_field_value(std::string_view text) {
  for (unsigned char c : text) {
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  }
  return true;
}

// Fields the server writes itself.
bool set_by_server(std::string_view name) {
  return iequals(name, "Content-Length") || iequals(name, "Connection") ||
         iequals(name, "Transfer-Encoding") || iequals(name, "Server") || iequals(name, "Date") ||
         iequals(name, "Keep-Alive");
}

// "Thu, 03 Dec 2026 13:16:53 GMT", formatted once a second per thread.
std::string_view http_date() {
  struct Cache {
    time_t second = -1;
    char text[32] = {};
  };
  thread_local Cache cache;
  time_t now = ::time(nullptr);
  if (now != cache.second) {
    static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm parts;
    ::gmtime_r(&now, &parts);
    std::snprintf(cache.text, sizeof cache.text, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                  days[parts.tm_wday], parts.tm_mday, months[parts.tm_mon], parts.tm_year + 1900,
                  parts.tm_hour, parts.tm_min, parts.tm_sec);
    cache.second = now;
  }
  return cache.text;
}

void append_number(std::string& out, std::uint64_t value) {
  char digits[24];
  auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
  out.append(digits, end);
}

// The status line and head of `response` (RFC 9112 §4, §6).
// A streamed answer has no Content-Length: it is chunked, or (HTTP/1.0) ends with the close.
enum class Framing { length, chunked, to_close };

void append_head(std::string& out, ServerResponse& response, const ServerRequest& request,
                 bool closes, const std::string& server_header, Framing framing = Framing::length) {
  if (response.status < 200 || response.status > 999) {
    log::warn(log_component, "a handler answered with status " + std::to_string(response.status) +
                                 "; sent as 500");
    response.status = 500;
  }
  out += "HTTP/1.1 ";
  append_number(out, static_cast<std::uint64_t>(response.status));
  out += ' ';
  auto reason = http::obsolete_reason(static_cast<http::status>(response.status));
  if (reason.empty() || reason.front() == '<') {
    auto text = status_text(response.status);
    out.append(text.empty() ? std::string_view("Unknown") : text);
  } else {
    out.append(reason.data(), reason.size());
  }
  out += "\r\nDate: ";
  out += http_date();
  out += "\r\n";
  if (!server_header.empty()) {
    out += "Server: ";
    out += server_header;
    out += "\r\n";
  }
  for (const auto& field : response.headers) {
    if (set_by_server(field.name)) continue;
    if (!is_token(field.name) || !is_field_value(field.value)) {
      log::warn(log_component, "dropped a response header that HTTP cannot carry: " +
                                   std::string(field.name.substr(0, 60)));
      continue;
    }
    out += field.name;
    out += ": ";
    out += field.value;
    out += "\r\n";
  }
  if (framing == Framing::chunked) {
    out += "Transfer-Encoding: chunked\r\n";
  } else if (framing == Framing::length && response.status != 204 && response.status != 304) {
    out += "Content-Length: ";
    append_number(out, response.body.size());
    out += "\r\n";
  }
  if (closes) {
    out += "Connection: close\r\n";
  } else if (request.version == 10) {
    out += "Connection: keep-alive\r\n";
  }
  out += "\r\n";
}

// A view of a buffer vector as a buffer sequence: async_write copies the sequence object it is
// given, and copying a view allocates nothing.
struct BufferView {
  using value_type = asio::const_buffer;
  using const_iterator = const asio::const_buffer*;
  const asio::const_buffer* first;
  const asio::const_buffer* last;
  const_iterator begin() const noexcept { return first; }
  const_iterator end() const noexcept { return last; }
};

// A HEAD answer says what a GET's would; 204 and 304 carry no body at all.
Framing stream_framing(const ServerExchange& exchange) {
  const int status = exchange.response_.status;
  if (!exchange.stream_chunked || status == 204 || status == 304) return Framing::to_close;
  return Framing::chunked;
}

// The writer handed out by respond_streaming: a share of the exchange, which does the work.
class StreamWriter final : public ResponseWriter {
 public:
  explicit StreamWriter(std::shared_ptr<ServerExchange> exchange)
      : exchange_(std::move(exchange)) {}
  ~StreamWriter() override { exchange_->stream_finish(); }
  bool write(std::string_view chunk) override { return exchange_->stream_write(chunk); }
  bool finish() override { return exchange_->stream_finish(); }
  std::size_t buffered() const override { return exchange_->stream_buffered(); }
  bool open() const override { return exchange_->stream_open(); }
  void on_drained(std::function<void()> hook) override {
    exchange_->stream_on_drained(std::move(hook));
  }

 private:
  std::shared_ptr<ServerExchange> exchange_;
};

}  // namespace

// ---- ServerState ------------------------------------------------------------------------------

ServerResponse ServerState::refusal(int status, std::string message) const {
  if (options.refusal) {
    try {
      return options.refusal(status, message);
    } catch (const std::exception& e) {
      log::warn(log_component, std::string("the refusal format threw: ") + e.what());
    }
  }
  ServerResponse response;
  response.status = status;
  response.headers.push_back({"Content-Type", "text/plain; charset=utf-8"});
  response.body = std::move(message);
  response.body += '\n';
  return response;
}

// ---- RequestParser ----------------------------------------------------------------------------

RequestParser::RequestParser(ServerRequest& request, const ServerOptions& options)
    : request_(request) {
  header_limit(static_cast<std::uint32_t>(
      std::min<std::size_t>(options.header_limit, std::numeric_limits<std::uint32_t>::max())));
  body_limit(static_cast<std::uint64_t>(options.body_limit));
  eager(true);
}

void RequestParser::on_request_impl(http::verb, beast::string_view method_string,
                                    beast::string_view target, int version, beast::error_code&) {
  request_.method.assign(method_string.data(), method_string.size());
  request_.target.assign(target.data(), target.size());
  request_.version = static_cast<unsigned>(version);
}

void RequestParser::on_field_impl(http::field name, beast::string_view name_string,
                                  beast::string_view value, beast::error_code&) {
  request_.headers.push_back(Field{std::string(name_string.data(), name_string.size()),
                                   std::string(value.data(), value.size())});
  if (name == http::field::host) has_host_ = true;
  if (name == http::field::transfer_encoding) has_transfer_encoding_ = true;
  if (name == http::field::expect && iequals({value.data(), value.size()}, "100-continue")) {
    expects_continue = true;
  }
}

void RequestParser::on_header_impl(beast::error_code& error) {
  if (request_.version >= 11 && !has_host_) {
    problem_status = 400;
    problem = "malformed request: no Host header (HTTP/1.1 requires one)";
    error = http::error::bad_field;
    return;
  }
  // RFC 9112 §6.3: a request whose last transfer coding is not chunked has no knowable end.
  if (has_transfer_encoding_ && !chunked()) {
    problem_status = 400;
    problem = "malformed request: Transfer-Encoding \"" +
              std::string(find_field(request_.headers, "Transfer-Encoding")) +
              "\" does not end with chunked";
    error = http::error::bad_transfer_encoding;
  }
}

void RequestParser::on_body_init_impl(const boost::optional<std::uint64_t>& length,
                                      beast::error_code&) {
  // Within body_limit (checked already), but a declared length is not yet a body: a client
  // that announces megabytes and sends nothing gets no more than 64 KiB reserved.
  constexpr std::uint64_t reserve_limit = 64 * 1024;
  if (length) request_.body.reserve(static_cast<std::size_t>(std::min(*length, reserve_limit)));
}

std::size_t RequestParser::on_body_impl(beast::string_view body, beast::error_code&) {
  request_.body.append(body.data(), body.size());
  return body.size();
}

std::size_t RequestParser::on_chunk_body_impl(std::uint64_t, beast::string_view body,
                                              beast::error_code&) {
  request_.body.append(body.data(), body.size());
  return body.size();
}

// ---- ServerExchange ---------------------------------------------------------------------------

ServerExchange::~ServerExchange() {
  if (!connection_ || answered_.load(std::memory_order_acquire) || abandoned()) return;
  // Dropped by its handler without an answer: the answers behind it must not wait forever.
  auto connection = std::move(connection_);
  const ServerStrand strand = connection->strand();
  asio::post(strand,
             [connection = std::move(connection), key = this] { connection->on_dropped(key); });
}

bool ServerExchange::respond(ServerResponse&& response) {
  if (answered_.exchange(true, std::memory_order_acq_rel)) return false;
  if (abandoned()) return false;
  // The answer is the exchange's last use of its connection: from here the queue holds the
  // exchange, and nothing the connection holds points back at it.
  auto connection = std::move(connection_);
  if (!connection) return false;  // never handed to a handler
  if (connection->strand().running_in_this_thread()) {
    connection->on_answer(*this, std::move(response));
  } else {
    const ServerStrand strand = connection->strand();
    asio::post(strand, [self = shared_from_this(), connection = std::move(connection),
                        response = std::move(response)]() mutable {
      connection->on_answer(*self, std::move(response));
    });
  }
  return true;
}

ResponseWriterPtr ServerExchange::respond_streaming(ServerResponse&& head) {
  if (answered_.exchange(true, std::memory_order_acq_rel)) return nullptr;
  if (abandoned()) return nullptr;
  auto connection = std::move(connection_);
  if (!connection) return nullptr;
  {
    std::lock_guard lock(stream_mutex_);
    stream_no_body = head_only || head.status == 204 || head.status == 304;
    stream_chunked = request_.version >= 11;
    stream_connection_ = connection;
  }
  head.body.clear();
  if (connection->strand().running_in_this_thread()) {
    connection->on_stream_start(*this, std::move(head));
  } else {
    const ServerStrand strand = connection->strand();
    asio::post(strand, [self = shared_from_this(), connection = std::move(connection),
                        head = std::move(head)]() mutable {
      connection->on_stream_start(*self, std::move(head));
    });
  }
  return std::make_shared<StreamWriter>(shared_from_this());
}

void ServerExchange::kick(std::shared_ptr<ServerConnection> connection) {
  const ServerStrand strand = connection->strand();
  asio::post(strand, [connection = std::move(connection)] { connection->on_stream_data(); });
}

bool ServerExchange::stream_write(std::string_view chunk) {
  std::shared_ptr<ServerConnection> connection;
  {
    std::lock_guard lock(stream_mutex_);
    if (stream_finished_ || abandoned()) return false;
    if (chunk.empty() || stream_no_body) return true;
    if (stream_buffered_ > 0 && stream_buffered_ + chunk.size() > stream_limit) return false;
    if (stream_chunked) {
      char size[20];
      int length = std::snprintf(size, sizeof size, "%zx\r\n", chunk.size());
      stream_pending_.append(size, static_cast<std::size_t>(length));
      stream_pending_.append(chunk);
      stream_pending_ += "\r\n";
    } else {
      stream_pending_.append(chunk);
    }
    stream_buffered_ += chunk.size();
    stream_pending_payload_ += chunk.size();
    if (!stream_kicked_) {
      stream_kicked_ = true;
      connection = stream_connection_;
    }
  }
  if (connection) kick(std::move(connection));
  return true;
}

bool ServerExchange::stream_finish() {
  std::shared_ptr<ServerConnection> connection;
  {
    std::lock_guard lock(stream_mutex_);
    if (stream_finished_) return false;
    stream_finished_ = true;
    stream_kicked_ = true;
    connection = std::move(stream_connection_);  // the kick below is its last use
    drained_hook_ = nullptr;
  }
  if (abandoned() || !connection) return false;
  kick(std::move(connection));
  return true;
}

std::size_t ServerExchange::stream_buffered() const {
  std::lock_guard lock(stream_mutex_);
  return stream_buffered_;
}

bool ServerExchange::stream_open() const {
  std::lock_guard lock(stream_mutex_);
  return !stream_finished_ && !abandoned();
}

void ServerExchange::stream_on_drained(std::function<void()> hook) {
  {
    std::lock_guard lock(stream_mutex_);
    if (abandoned()) return;
    if (stream_buffered_ > 0) {
      drained_hook_ = std::move(hook);
      return;
    }
  }
  hook();
}

void ServerExchange::stream_take() {
  std::lock_guard lock(stream_mutex_);
  stream_kicked_ = false;
  stream_sending.swap(stream_pending_);
  stream_pending_.clear();
  stream_sending_payload_ = stream_pending_payload_;
  stream_pending_payload_ = 0;
  if (stream_finished_) {
    if (stream_chunked && !stream_no_body) stream_sending += "0\r\n\r\n";
    stream_ended = true;
  }
}

void ServerExchange::stream_sent() {
  std::function<void()> hook;
  {
    std::lock_guard lock(stream_mutex_);
    stream_sending.clear();
    stream_buffered_ -= std::min(stream_buffered_, stream_sending_payload_);
    stream_sending_payload_ = 0;
    if (stream_buffered_ == 0) hook.swap(drained_hook_);
  }
  if (hook) hook();
}

void ServerExchange::answer_now(ServerResponse&& response) {
  answered_.store(true, std::memory_order_release);
  response_ = std::move(response);
  ready = true;
}

void ServerExchange::on_abandoned(std::function<void()> hook) {
  {
    std::lock_guard lock(hook_mutex_);
    if (!finished_) {
      hook_ = std::move(hook);
      return;
    }
  }
  if (abandoned()) hook();
}

void ServerExchange::abandon() {
  std::function<void()> hook;
  {
    std::lock_guard lock(hook_mutex_);
    if (finished_) return;
    finished_ = true;
    abandoned_.store(true, std::memory_order_release);
    hook.swap(hook_);
  }
  if (hook) hook();
}

void ServerExchange::written() {
  std::function<void()> hook;
  std::lock_guard lock(hook_mutex_);
  finished_ = true;
  hook.swap(hook_);  // destroyed after the lock is released: declared before it
}

// ---- ServerConnection: reading ----------------------------------------------------------------

ServerConnection::ServerConnection(std::shared_ptr<ServerState> state, ServerSocket socket)
    : state_(std::move(state)),
      options_(state_->options),
      strand_(socket.get_executor()),
      socket_(std::move(socket)),
      timer_(strand_) {
  beast::error_code error;
  auto remote = socket_.remote_endpoint(error);
  if (!error) remote_ = endpoint_text(remote);
  auto local = socket_.local_endpoint(error);
  if (!error) local_ = endpoint_text(local);
  socket_.set_option(asio::ip::tcp::no_delay(true), error);
  if (!options_.connection_table_name.empty())
    record_ = connection_table().open(options_.connection_table_name, ConnectionSide::server,
                                      remote_, local_);
}

void ServerConnection::start() {
  asio::dispatch(strand_, [self = shared_from_this()] {
    // Accepted while close() was collecting the connections: it did not see this one.
    if (self->state_->closed.load(std::memory_order_acquire)) return self->close_now();
    self->update_read_deadline();
    self->read();
  });
}

void ServerConnection::read() {
  if (reading_ || closed_) return;
  if (lingering_) {
    input_.clear();
  } else if (read_stopped_ || queue_.size() >= pipeline_depth) {
    return;
  }
  reading_ = true;
  const bool in_body = parser_ && parser_->is_header_done();
  auto space = input_.prepare(in_body ? body_read_size : read_size);
  socket_.async_read_some(space,
                          [self = shared_from_this()](beast::error_code error, std::size_t size) {
                            self->on_read(error, size);
                          });
}

void ServerConnection::on_read(const beast::error_code& error, std::size_t size) {
  reading_ = false;
  if (closed_) return;
  if (lingering_) {
    if (error) return close_now();  // the client closed: done
    return read();                  // discarded
  }
  if (error) return read_failed(error);
  if (record_) record_->add_in(size);
  input_.commit(size);
  parse();
  flush();
  settle();
  update_read_deadline();
  read();
}

void ServerConnection::parse() {
  in_parse_ = true;
  while (!read_stopped_ && !closed_ && queue_.size() < pipeline_depth && input_.size() > 0) {
    if (state_->closed.load(std::memory_order_acquire)) {
      read_stopped_ = true;  // close_gracefully() is on its way
      break;
    }
    if (!parser_) begin_request();
    // Boost 1.81's chunk parser asserts that a put after the final chunk's "0\r\n" has 5
    // bytes, which a client sending in small pieces breaks (boostorg/beast#2861, fixed
    // upstream in 1.86): with assertions on, one request could abort the server. Until the
    // rest of a chunked body holds 5 bytes, wait for more; it always will, as it must still
    // end with "0\r\n\r\n".
    if (parser_->is_header_done() && parser_->chunked() && input_.size() < 5) break;
    beast::error_code error;
    const std::size_t used = parser_->put(input_.data(), error);
    // What the parser took (on an error: up to what it refused, which the message quotes).
    input_.consume(used);
    if (error && error != http::error::need_more) {
      refuse_parse(error);
      break;
    }
    if (parser_->is_done()) {
      complete_request();
      continue;
    }
    if (parser_->is_header_done()) {
      if (!head_done_) head_complete();
    } else {
      // Beast bounds the part of a head it has not taken yet; the fields it took from an
      // earlier piece count too.
      head_bytes_ += used;
      if (head_bytes_ + input_.size() >= options_.header_limit) {
        refuse_parse(http::error::header_limit);
        break;
      }
    }
    if (error || used == 0) break;  // need more input
  }
  in_parse_ = false;
}

void ServerConnection::begin_request() {
  parsing_ = std::make_shared<ServerExchange>();
  auto& request = parsing_->request_;
  request.headers.reserve(12);
  request.remote = remote_;
  request.local = local_;
  parser_.emplace(request, options_);
  request_started_ = Clock::now();
  head_done_ = false;
  head_bytes_ = 0;
}

void ServerConnection::head_complete() {
  head_done_ = true;
  head_done_at_ = Clock::now();
  // The client waits for a 100 before sending the body; only sent when no earlier answer is
  // pending (a 100 must not come between them); otherwise the client sends after its wait.
  if (parser_->expects_continue && parsing_->request_.version >= 11 && queue_.empty() &&
      !writing_) {
    write_continue();
  }
}

void ServerConnection::complete_request() {
  auto exchange = std::move(parsing_);
  auto& request = exchange->request_;
  request.keep_alive = parser_->keep_alive();
  request.received = head_done_ ? head_done_at_ : Clock::now();
  parser_.reset();
  head_done_ = false;
  exchange->head_only = request.method == "HEAD";
  exchange->stream_limit = options_.stream_buffer_limit;
  if (!request.keep_alive) {
    exchange->closes = true;
    read_stopped_ = true;
  }
  exchange->attach(shared_from_this());
  queue_.push(Slot{exchange.get(), exchange, nullptr});
  state_->requests.fetch_add(1, std::memory_order_relaxed);
  if (record_) record_->call_started();
  try {
    state_->handler(exchange);
  } catch (const std::exception& e) {
    log::error(log_component, std::string("the request handler threw: ") + e.what());
    auto refusal = state_->refusal(500, "internal error: the request handler threw");
    exchange->respond(std::move(refusal));
  }
}

void ServerConnection::refuse_parse(const beast::error_code& error) {
  if (error == http::error::header_limit) {
    return refuse(431, "request head exceeds the limit of " +
                           std::to_string(options_.header_limit) + " bytes");
  }
  if (error == http::error::body_limit) {
    // Refused from the head (Content-Length, which Beast has checked) or from a chunk size.
    if (!parser_->is_header_done()) {
      auto length = find_field(parsing_->request_.headers, "Content-Length");
      return refuse(413, "request body of " + std::string(length) + " bytes exceeds the limit of " +
                             std::to_string(options_.body_limit) + " bytes");
    }
    return refuse(413, "chunked request body exceeds the limit of " +
                           std::to_string(options_.body_limit) + " bytes");
  }
  if (!parser_->problem.empty()) return refuse(parser_->problem_status, parser_->problem);
  if (parser_->is_header_done()) {
    return refuse(400, "malformed request body: " + error.message());
  }
  // The parser stops at the start of what it refused: the request line, or a field's line.
  const auto& request = parsing_->request_;
  const std::size_t line = request.method.empty() ? 1 : request.headers.size() + 2;
  const auto data = input_.data();
  std::string_view rest(static_cast<const char*>(data.data()), data.size());
  refuse(400, "malformed request: " + error.message() + " at line " + std::to_string(line) + " " +
                  quote_line(rest));
}

void ServerConnection::refuse(int status, std::string message) {
  state_->refused.fetch_add(1, std::memory_order_relaxed);
  log::debug(log_component, remote_ + ": " + std::to_string(status) + " " + message);
  read_stopped_ = true;
  parser_.reset();
  parsing_.reset();
  auto exchange = std::make_shared<ServerExchange>();
  exchange->answer_now(state_->refusal(status, std::move(message)));
  exchange->closes = true;
  queue_.push(Slot{exchange.get(), {}, std::move(exchange)});
}

void ServerConnection::read_failed(const beast::error_code& error) {
  // EOF or a reset: the client is gone (a half-close counts, as in Go's net/http). What is
  // answered already is still written; the rest is abandoned.
  if (error != http::error::end_of_stream && error != asio::error::eof &&
      error != asio::error::operation_aborted) {
    log::debug(log_component, remote_ + ": read failed: " + error.message());
  }
  read_stopped_ = true;
  peer_gone_ = true;
  parser_.reset();
  parsing_.reset();
  abandon_unanswered();
  flush();
  settle();
}

// ---- ServerConnection: writing ----------------------------------------------------------------

void ServerConnection::on_answer(ServerExchange& exchange, ServerResponse&& response) {
  if (exchange.abandoned() || closed_) return;
  for (std::size_t i = 0; i < queue_.size(); ++i) {
    auto& slot = queue_.at(i);
    if (slot.key != &exchange || slot.ready) continue;
    exchange.response_ = std::move(response);
    exchange.ready = true;
    slot.ready = exchange.shared_from_this();
    slot.waiting.reset();
    break;
  }
  if (in_parse_) return;  // flushed with the others after the parse loop
  flush();
  settle();
}

void ServerConnection::on_stream_start(ServerExchange& exchange, ServerResponse&& head) {
  if (exchange.abandoned() || closed_) return;
  for (std::size_t i = 0; i < queue_.size(); ++i) {
    auto& slot = queue_.at(i);
    if (slot.key != &exchange || slot.ready) continue;
    exchange.response_ = std::move(head);
    exchange.streaming = true;
    exchange.ready = true;
    slot.ready = exchange.shared_from_this();
    slot.waiting.reset();
    break;
  }
  if (in_parse_) return;
  flush();
  settle();
}

void ServerConnection::on_stream_data() {
  if (closed_) return;
  flush();
  settle();
  update_read_deadline();
  read();
}

void ServerConnection::on_dropped(const ServerExchange* key) {
  if (closed_) return;
  for (std::size_t i = 0; i < queue_.size(); ++i) {
    auto& slot = queue_.at(i);
    // The key may be reused by a newer exchange: only an expired one is the dropped one.
    if (slot.key != key || slot.ready || slot.abandoned || !slot.waiting.expired()) continue;
    log::warn(log_component, remote_ + ": a request was dropped without an answer; sent 500");
    auto exchange = std::make_shared<ServerExchange>();
    exchange->answer_now(
        state_->refusal(500, "internal error: the request was dropped without an answer"));
    slot = Slot{exchange.get(), {}, std::move(exchange)};
    break;
  }
  flush();
  settle();
  update_read_deadline();
  read();
}

void ServerConnection::flush() {
  if (writing_ || closed_ || queue_.empty() || !queue_.front().ready) return;
  wire_.clear();
  buffers_.clear();
  while (!queue_.empty() && queue_.front().ready) {
    if (queue_.front().ready->streaming) {
      // A streamed answer: its head once, then what was written since; it leaves the queue
      // (and the answers behind it may follow) only with its last chunk.
      auto exchange = queue_.front().ready;
      if (exchange->abandoned()) break;  // settle() closes the connection
      bool wrote = false;
      if (!exchange->stream_head_sent) {
        const bool closes =
            exchange->closes || !exchange->stream_chunked || (read_stopped_ && queue_.size() == 1);
        exchange->closes = closes;
        append_head(wire_, exchange->response_, exchange->request_, closes, options_.server_header,
                    stream_framing(*exchange));
        exchange->stream_head_sent = true;
        wrote = true;
      }
      exchange->stream_take();
      exchange->body_apart = !exchange->stream_sending.empty();
      exchange->wire_end = wire_.size();
      if (wrote || exchange->body_apart) {
        in_write_.push_back(exchange);
      } else if (exchange->stream_ended) {
        if (record_) record_->call_ended();
        exchange->written();
      }
      if (!exchange->stream_ended) break;
      queue_.pop();
      if (exchange->closes) {
        read_stopped_ = true;
        break;
      }
      continue;
    }
    auto exchange = std::move(queue_.pop().ready);
    // The last answer before the connection closes says so.
    const bool closes = exchange->closes || (read_stopped_ && queue_.empty());
    auto& response = exchange->response_;
    append_head(wire_, response, exchange->request_, closes, options_.server_header);
    const bool send_body = !exchange->head_only && response.status != 204 && response.status != 304;
    exchange->body_apart = send_body && response.body.size() > inline_body_limit;
    if (send_body && !exchange->body_apart) wire_ += response.body;
    exchange->wire_end = wire_.size();
    in_write_.push_back(std::move(exchange));
    if (closes) {
      read_stopped_ = true;
      break;
    }
  }
  if (in_write_.empty()) return;  // a stream with nothing new
  // The write buffer is complete: point at its pieces, with the large bodies between them.
  std::size_t position = 0;
  for (const auto& exchange : in_write_) {
    buffers_.emplace_back(wire_.data() + position, exchange->wire_end - position);
    position = exchange->wire_end;
    if (exchange->body_apart) {
      const auto& body = exchange->streaming ? exchange->stream_sending : exchange->response_.body;
      buffers_.emplace_back(body.data(), body.size());
    }
  }
  writing_ = true;
  write_deadline_ = Clock::now() + options_.write_timeout;
  arm();
  auto done = [self = shared_from_this()](beast::error_code error, std::size_t bytes) {
    if (self->record_) self->record_->add_out(bytes);
    self->on_write(error);
  };
  if (buffers_.size() == 1) {
    asio::async_write(socket_, buffers_.front(), std::move(done));
  } else {
    asio::async_write(socket_, BufferView{buffers_.data(), buffers_.data() + buffers_.size()},
                      std::move(done));
  }
}

void ServerConnection::write_continue() {
  static constexpr std::string_view continue_line = "HTTP/1.1 100 Continue\r\n\r\n";
  writing_ = true;
  write_deadline_ = Clock::now() + options_.write_timeout;
  arm();
  asio::async_write(
      socket_, asio::buffer(continue_line.data(), continue_line.size()),
      [self = shared_from_this()](beast::error_code error, std::size_t) { self->on_write(error); });
}

void ServerConnection::on_write(const beast::error_code& error) {
  writing_ = false;
  write_deadline_ = Clock::time_point::max();
  if (error || closed_) {
    for (auto& exchange : in_write_) exchange->abandon();
    in_write_.clear();
    if (error && error != asio::error::operation_aborted) {
      log::debug(log_component, remote_ + ": write failed: " + error.message());
    }
    return close_now();
  }
  for (auto& exchange : in_write_) {
    if (exchange->streaming) {
      exchange->stream_sent();
      if (exchange->stream_ended) {
        if (record_) record_->call_ended();
        exchange->written();
      }
    } else {
      if (record_) record_->call_ended();
      exchange->written();
    }
  }
  in_write_.clear();
  flush();
  settle();
  update_read_deadline();
  read();  // room in the pipeline again
}

void ServerConnection::settle() {
  if (closed_ || writing_ || lingering_ || !read_stopped_) return;
  if (!queue_.empty() && !front_is_dead()) return;  // an answer still to come
  if (peer_gone_) return close_now();
  linger();
}

// Shuts our side down and reads (discarding) until the client closes, about a second at most:
// closing with unread input would reset the connection and could destroy the last answer
// before the client reads it.
void ServerConnection::linger() {
  lingering_ = true;
  abandon_unanswered();
  parser_.reset();
  parsing_.reset();
  beast::error_code ignored;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  close_deadline_ = std::min(close_deadline_, Clock::now() + linger_time);
  read_deadline_ = Clock::time_point::max();
  arm();
  read();
}

void ServerConnection::close_now() {
  if (closed_) return;
  closed_ = true;
  abandon_unanswered();
  while (!queue_.empty()) {
    auto slot = queue_.pop();
    if (slot.ready) {
      slot.ready->abandon();
    } else if (auto exchange = slot.waiting.lock()) {
      exchange->abandon();
    }
  }
  parser_.reset();
  parsing_.reset();
  beast::error_code ignored;
  timer_.cancel();
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  state_->open.fetch_sub(1, std::memory_order_relaxed);
  record_.reset();  // the row goes with the socket
  std::lock_guard lock(state_->mutex);
  state_->connections.erase(this);
}

void ServerConnection::abandon_unanswered() {
  for (std::size_t i = 0; i < queue_.size(); ++i) {
    auto& slot = queue_.at(i);
    if (slot.ready) {
      // A stream still being written ends here, unfinished (its hook tells the writer).
      if (slot.ready->streaming && !slot.ready->stream_ended) slot.ready->abandon();
      continue;
    }
    slot.abandoned = true;
    if (auto exchange = slot.waiting.lock()) exchange->abandon();
  }
}

bool ServerConnection::front_is_dead() {
  // A waiting exchange that expired without being abandoned was dropped: its 500 is on the way.
  const auto& slot = queue_.front();
  if (slot.ready) return slot.ready->streaming && slot.ready->abandoned();
  return slot.abandoned;
}

void ServerConnection::close_gracefully() {
  asio::dispatch(strand_, [self = shared_from_this()] {
    if (self->closed_) return;
    self->read_stopped_ = true;
    self->parser_.reset();
    self->parsing_.reset();
    self->abandon_unanswered();
    self->close_deadline_ = std::min(self->close_deadline_, Clock::now() + linger_time);
    self->arm();
    self->flush();
    self->settle();
  });
}

// ---- ServerConnection: deadlines --------------------------------------------------------------

void ServerConnection::update_read_deadline() {
  if (closed_ || lingering_ || read_stopped_) {
    read_deadline_ = Clock::time_point::max();
  } else if (parser_ && parser_->got_some()) {
    read_deadline_ = head_done_ ? head_done_at_ + options_.body_timeout
                                : request_started_ + options_.header_timeout;
  } else if (queue_.empty() && !writing_) {
    read_deadline_ = Clock::now() + options_.idle_timeout;
  } else {
    read_deadline_ = Clock::time_point::max();  // the handler's time is its own
  }
  arm();
}

void ServerConnection::arm() {
  const auto next = std::min({read_deadline_, write_deadline_, close_deadline_});
  if (closed_ || next >= armed_for_) return;
  armed_for_ = next;
  timer_.expires_at(next);
  timer_.async_wait(
      [self = shared_from_this()](beast::error_code error) { self->on_timer(error); });
}

void ServerConnection::on_timer(const beast::error_code& error) {
  if (error == asio::error::operation_aborted || closed_) return;  // re-armed, or closed
  armed_for_ = Clock::time_point::max();
  const auto now = Clock::now();
  if (close_deadline_ <= now) return close_now();
  if (write_deadline_ <= now) {
    log::debug(log_component, remote_ + ": the client took no answer within write_timeout " +
                                  format_duration(options_.write_timeout));
    return close_now();
  }
  if (read_deadline_ <= now) return on_read_timeout();
  arm();
}

void ServerConnection::on_read_timeout() {
  read_deadline_ = Clock::time_point::max();
  if (!parser_ || !parser_->got_some()) {
    // Idle: nothing to answer.
    read_stopped_ = true;
    abandon_unanswered();
    return close_now();
  }
  if (head_done_) {
    refuse(408, "the request body did not arrive within body_timeout " +
                    format_duration(options_.body_timeout));
  } else {
    refuse(408, "the request head did not arrive within header_timeout " +
                    format_duration(options_.header_timeout));
  }
  flush();
  settle();
}

}  // namespace micro::http::detail
