// etcd_client.cpp — base64, endpoint parsing, bounded HTTP/1.1 connections (plain or TLS), the
// TLS context and the failover client for etcd's JSON gateway.
#include "etcd_client.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <fstream>
#include <thread>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <micro/error.hpp>

namespace micro::etcd {

namespace beast = boost::beast;
namespace http = boost::beast::http;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using namespace std::chrono_literals;

namespace {

constexpr const char* error_id = "micro.registry.etcd";
constexpr std::string_view base64_alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// gRPC status codes the gateway reports that mean "this member cannot serve now".
constexpr int grpc_deadline_exceeded = 4;
constexpr int grpc_unavailable = 14;
constexpr int grpc_unauthenticated = 16;

bool member_cannot_serve(int code, const std::string& message) {
  return code == grpc_unavailable || code == grpc_deadline_exceeded ||
         message.find("no leader") != std::string::npos ||
         message.find("leader changed") != std::string::npos ||
         message.find("timed out") != std::string::npos;
}

bool token_rejected(int code, const std::string& message) {
  return code == grpc_unauthenticated || message.find("invalid auth token") != std::string::npos;
}

// A read error's text; a TLS alert about our certificate says what to fix, since with TLS 1.3
// etcd refuses a client certificate only after the handshake, on the first read.
std::string describe(const boost::system::error_code& error) {
  std::string text = error.message();
  if (error.category() == boost::asio::error::get_ssl_category() &&
      (text.find("alert bad certificate") != std::string::npos ||
       text.find("alert certificate required") != std::string::npos ||
       text.find("alert unknown ca") != std::string::npos)) {
    text +=
        " (etcd refused this client's TLS certificate: none given, or not signed by a CA etcd "
        "trusts; see tls_cert and tls_key)";
  }
  return text;
}

milliseconds remaining_until(Clock::time_point deadline) {
  return std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
}

}  // namespace

std::string base64_encode(std::string_view bytes) {
  std::string text;
  text.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t index = 0;
  for (; index + 3 <= bytes.size(); index += 3) {
    const std::uint32_t group = (std::uint32_t(std::uint8_t(bytes[index])) << 16) |
                                (std::uint32_t(std::uint8_t(bytes[index + 1])) << 8) |
                                std::uint32_t(std::uint8_t(bytes[index + 2]));
    text += base64_alphabet[(group >> 18) & 63];
    text += base64_alphabet[(group >> 12) & 63];
    text += base64_alphabet[(group >> 6) & 63];
    text += base64_alphabet[group & 63];
  }
  const std::size_t rest = bytes.size() - index;
  if (rest > 0) {
    std::uint32_t group = std::uint32_t(std::uint8_t(bytes[index])) << 16;
    if (rest == 2) group |= std::uint32_t(std::uint8_t(bytes[index + 1])) << 8;
    text += base64_alphabet[(group >> 18) & 63];
    text += base64_alphabet[(group >> 12) & 63];
    text += rest == 2 ? base64_alphabet[(group >> 6) & 63] : '=';
    text += '=';
  }
  return text;
}

std::string base64_decode(std::string_view text) {
  std::string bytes;
  bytes.reserve(text.size() / 4 * 3);
  std::uint32_t group = 0;
  int bits = 0;
  for (char character : text) {
    if (character == '=') break;
    const auto position = base64_alphabet.find(character);
    if (position == std::string_view::npos) {
      throw std::invalid_argument("not base64: unexpected character '" + std::string(1, character) +
                                  "'");
    }
    group = (group << 6) | std::uint32_t(position);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes += char((group >> bits) & 0xFF);
    }
  }
  return bytes;
}

std::string prefix_range_end(std::string_view prefix) {
  std::string end(prefix);
  // Drop trailing 0xFF bytes and increment the last remaining one (etcd's rule).
  while (!end.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(end.back());
    if (last < 0xFF) {
      ++last;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

std::int64_t json_int64(const nlohmann::json& object, const char* field) {
  if (!object.is_object()) return 0;
  auto found = object.find(field);
  if (found == object.end()) return 0;
  if (found->is_number()) return found->get<std::int64_t>();
  if (found->is_string()) {
    const auto& text = found->get_ref<const std::string&>();
    std::int64_t value = 0;
    std::from_chars(text.data(), text.data() + text.size(), value);
    return value;
  }
  return 0;
}

std::vector<EndpointAddress> parse_endpoints(std::string_view address) {
  std::vector<EndpointAddress> endpoints;
  if (address.empty()) return {{"127.0.0.1", "2379"}};
  std::size_t start = 0;
  while (start <= address.size()) {
    const auto comma = address.find(',', start);
    std::string_view item =
        address.substr(start, comma == std::string_view::npos ? address.npos : comma - start);
    const std::string original(item);
    bool https = false;
    if (item.starts_with("http://")) {
      item.remove_prefix(7);
    } else if (item.starts_with("https://")) {
      item.remove_prefix(8);
      https = true;
    }
    const auto colon = item.rfind(':');
    if (item.empty() || colon == std::string_view::npos || colon == 0) {
      throw micro::Exception(micro::bad_request(error_id, "bad endpoint \"" + original +
                                                              "\" in \"" + std::string(address) +
                                                              "\": expected host:port"));
    }
    const std::string_view port = item.substr(colon + 1);
    int number = 0;
    auto [end, error] = std::from_chars(port.data(), port.data() + port.size(), number);
    if (port.empty() || error != std::errc() || end != port.data() + port.size() || number < 1 ||
        number > 65535) {
      throw micro::Exception(micro::bad_request(
          error_id,
          "bad port in endpoint \"" + original + "\": expected a number from 1 to 65535"));
    }
    endpoints.push_back({std::string(item.substr(0, colon)), std::string(port), https});
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return endpoints;
}

std::vector<nlohmann::json> take_json_lines(std::string& pending) {
  std::vector<nlohmann::json> messages;
  std::size_t start = 0;
  while (true) {
    const auto newline = pending.find('\n', start);
    if (newline == std::string::npos) break;
    std::string_view line(pending.data() + start, newline - start);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (!line.empty()) {
      auto message = nlohmann::json::parse(line, nullptr, false);
      if (message.is_discarded()) {
        throw TransportError("etcd sent a message that is not JSON: " + std::string(line));
      }
      messages.push_back(std::move(message));
    }
    start = newline + 1;
  }
  pending.erase(0, start);
  return messages;
}

// ---------------------------------------------------------------------------------------------
// HttpConnection

std::shared_ptr<boost::asio::ssl::context> make_tls_context(const TlsFiles& files) {
  namespace ssl = boost::asio::ssl;
  auto context = std::make_shared<ssl::context>(ssl::context::tls_client);
  context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  context->set_verify_mode(ssl::verify_peer);
  auto refuse = [](const std::string& option, const std::string& path,
                   const boost::system::error_code& error) {
    throw micro::Exception(micro::bad_request(
        error_id, "cannot use " + option + " \"" + path + "\": " + error.message()));
  };
  // OpenSSL reports a missing file as a bare "asio.ssl error": say it plainly first.
  for (const auto& [option, path] :
       {std::pair{"tls_ca", &files.ca}, std::pair{"tls_cert", &files.cert},
        std::pair{"tls_key", &files.key}}) {
    if (!path->empty() && !std::ifstream(*path).is_open()) {
      throw micro::Exception(micro::bad_request(
          error_id,
          std::string("cannot use ") + option + " \"" + *path + "\": cannot open the file"));
    }
  }
  boost::system::error_code error;
  if (files.ca.empty()) {
    context->set_default_verify_paths(error);
    if (error) refuse("the system CA store", "", error);
  } else {
    context->load_verify_file(files.ca, error);
    if (error) refuse("tls_ca", files.ca, error);
  }
  if (files.cert.empty() != files.key.empty()) {
    throw micro::Exception(
        micro::bad_request(error_id, "tls_cert and tls_key go together: give both or neither"));
  }
  if (!files.cert.empty()) {
    context->use_certificate_chain_file(files.cert, error);
    if (error) refuse("tls_cert", files.cert, error);
    context->use_private_key_file(files.key, ssl::context::pem, error);
    if (error) refuse("tls_key", files.key, error);
  }
  return context;
}

HttpConnection::HttpConnection(std::size_t endpoint_index,
                               std::shared_ptr<boost::asio::ssl::context> tls)
    : endpoint_index_(endpoint_index), tls_(std::move(tls)) {
  if (tls_) {
    tls_stream_ =
        std::make_unique<beast::ssl_stream<beast::tcp_stream>>(io_context_.get_executor(), *tls_);
  }
}

void HttpConnection::run_until(const bool& done) {
  io_context_.restart();
  while (!done) {
    if (io_context_.run_one() == 0) {
      if (done) break;
      throw TransportError("connection's event loop stopped");
    }
  }
}

void HttpConnection::connect(const EndpointAddress& endpoint, milliseconds timeout) {
  boost::asio::ip::tcp::resolver resolver(io_context_);
  bool done = false;
  beast::error_code result;
  boost::asio::ip::tcp::resolver::results_type addresses;
  resolver.async_resolve(endpoint.host, endpoint.port, [&](beast::error_code error, auto found) {
    result = error;
    addresses = std::move(found);
    done = true;
  });
  run_until(done);
  if (result) throw TransportError("cannot resolve " + endpoint.text() + ": " + result.message());
  done = false;
  tcp().expires_after(timeout);
  tcp().async_connect(addresses, [&](beast::error_code error, const auto&) {
    result = error;
    done = true;
  });
  run_until(done);
  if (result)
    throw TransportError("cannot connect to " + endpoint.text() + ": " + result.message());
  tcp().socket().set_option(boost::asio::ip::tcp::no_delay(true));
  if (tls_stream_) handshake(endpoint);
  // A cancel() during resolve or connect closed nothing (there was no socket yet): without
  // this the stream that follows would wait forever for a member that has nothing to say.
  if (cancelled_.load()) {
    beast::error_code ignored;
    tcp().socket().close(ignored);
    throw TransportError("connection to " + endpoint.text() + " cancelled");
  }
}

void HttpConnection::handshake(const EndpointAddress& endpoint) {
  SSL* session = tls_stream_->native_handle();
  // The certificate must name the endpoint: an IP address as an IP SAN, a name as a DNS name
  // (which also goes out as SNI).
  X509_VERIFY_PARAM* parameters = SSL_get0_param(session);
  boost::system::error_code not_an_address;
  boost::asio::ip::make_address(endpoint.host, not_an_address);
  if (!not_an_address) {
    X509_VERIFY_PARAM_set1_ip_asc(parameters, endpoint.host.c_str());
  } else {
    X509_VERIFY_PARAM_set_hostflags(parameters, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    X509_VERIFY_PARAM_set1_host(parameters, endpoint.host.c_str(), 0);
    SSL_set_tlsext_host_name(session, endpoint.host.c_str());
  }
  bool done = false;
  beast::error_code result;
  tls_stream_->async_handshake(boost::asio::ssl::stream_base::client, [&](beast::error_code error) {
    result = error;
    done = true;
  });
  run_until(done);
  if (result) {
    std::string detail = result.message();
    const long verification = SSL_get_verify_result(session);
    if (verification != X509_V_OK) {
      detail += ": server certificate rejected: ";
      detail += X509_verify_cert_error_string(verification);
    }
    throw TransportError("TLS handshake with " + endpoint.text() + " failed: " + detail);
  }
}

void HttpConnection::write_request(http::request<http::string_body>& request,
                                   milliseconds timeout) {
  tcp().expires_after(timeout);
  const auto result =
      complete([&](auto& stream, auto&& on_done) { http::async_write(stream, request, on_done); });
  if (result) throw TransportError("cannot send to etcd: " + result.message());
}

http::response<http::string_body> HttpConnection::round_trip(
    http::request<http::string_body>& request, milliseconds timeout) {
  write_request(request, timeout);
  http::response_parser<http::string_body> parser;
  parser.body_limit(boost::none);
  auto result = complete(
      [&](auto& stream, auto&& on_done) { http::async_read(stream, buffer_, parser, on_done); });
  tcp().expires_never();
  if (result) throw TransportError("no answer from etcd: " + describe(result));
  return parser.release();
}

unsigned HttpConnection::stream(http::request<http::string_body>& request,
                                milliseconds header_timeout,
                                const std::function<void(std::string_view)>& on_data) {
  write_request(request, header_timeout);
  http::response_parser<http::string_body> parser;
  parser.body_limit(boost::none);
  auto result = complete([&](auto& stream, auto&& on_done) {
    http::async_read_header(stream, buffer_, parser, on_done);
  });
  if (result) throw TransportError("no answer from etcd: " + describe(result));
  const unsigned status = parser.get().result_int();
  if (status != 200 || !parser.chunked()) return status;

  // The stream lives as long as the member does: no timeout, cancel() ends it.
  tcp().expires_never();
  auto on_chunk = [&](std::uint64_t, beast::string_view body, beast::error_code&) {
    on_data(std::string_view(body.data(), body.size()));
    return body.size();
  };
  parser.on_chunk_body(on_chunk);
  while (!parser.is_done()) {
    result = complete([&](auto& stream, auto&& on_done) {
      http::async_read_some(stream, buffer_, parser, on_done);
    });
    if (result) throw TransportError("etcd stream ended: " + result.message());
  }
  return status;
}

void HttpConnection::begin_chunked_request(http::request<http::empty_body>& request,
                                           milliseconds timeout) {
  request.chunked(true);
  http::request_serializer<http::empty_body> serializer(request);
  tcp().expires_after(timeout);
  const auto result = complete(
      [&](auto& stream, auto&& on_done) { http::async_write_header(stream, serializer, on_done); });
  if (result) throw TransportError("cannot send to etcd: " + result.message());
}

void HttpConnection::send_chunk(std::string_view data, milliseconds timeout) {
  // Chunk framing: size in hex, CRLF, the bytes, CRLF; "0" CRLF CRLF ends the body.
  std::array<char, 16> size_text{};
  const auto written =
      std::to_chars(size_text.data(), size_text.data() + size_text.size(), data.size(), 16);
  std::string framed(size_text.data(), written.ptr);
  framed += "\r\n";
  framed += data;
  framed += "\r\n";
  // A read is pending: expires_after() sets the write timeout only.
  tcp().expires_after(timeout);
  const auto result = complete([&](auto& stream, auto&& on_done) {
    boost::asio::async_write(stream, boost::asio::buffer(framed), on_done);
  });
  if (result) throw TransportError("cannot send to etcd: " + result.message());
}

void HttpConnection::start_reading_response(std::function<void(unsigned)> on_header,
                                            std::function<void(std::string_view)> on_data,
                                            std::function<void(const std::string&)> on_end) {
  duplex_ = std::make_unique<DuplexReader>();
  duplex_->parser.body_limit(boost::none);
  duplex_->on_header = std::move(on_header);
  duplex_->on_data = std::move(on_data);
  duplex_->on_end = std::move(on_end);
  duplex_->on_chunk = [reader = duplex_.get()](std::uint64_t, beast::string_view body,
                                               beast::error_code&) {
    reader->on_data(std::string_view(body.data(), body.size()));
    return body.size();
  };
  duplex_->parser.on_chunk_body(duplex_->on_chunk);
  // The answer may take as long as the stream lives: only writes are bounded.
  tcp().expires_never();
  read_response_piece();
}

void HttpConnection::read_response_piece() {
  with_stream([&](auto& stream) {
    http::async_read_some(stream, buffer_, duplex_->parser,
                          [this, reader = duplex_.get()](beast::error_code error, std::size_t) {
                            if (reader->ended) return;
                            if (!reader->header_told && reader->parser.is_header_done()) {
                              reader->header_told = true;
                              reader->on_header(reader->parser.get().result_int());
                            }
                            if (error || reader->parser.is_done()) {
                              reader->ended = true;
                              reader->on_end(error ? "etcd stream ended: " + describe(error)
                                                   : std::string("etcd ended the stream"));
                              return;
                            }
                            read_response_piece();
                          });
  });
}

void HttpConnection::run_for(milliseconds timeout) {
  io_context_.restart();
  if (timeout.count() <= 0) {
    io_context_.poll();
    return;
  }
  const auto deadline = Clock::now() + timeout;
  // A wake() that arrived since the last run_for() counts: the caller's state changed.
  while (!woken_ && Clock::now() < deadline) {
    // Nothing left to run (the response ended): the caller sees why through on_end.
    if (io_context_.run_one_until(deadline) == 0 && io_context_.stopped()) break;
  }
  woken_ = false;
}

void HttpConnection::wake() {
  boost::asio::post(io_context_, [this] { woken_ = true; });
}

void HttpConnection::cancel() {
  cancelled_.store(true);
  boost::asio::post(io_context_, [this] {
    beast::error_code ignored;
    tcp().socket().shutdown(boost::asio::ip::tcp::socket::shutdown_both, ignored);
    tcp().socket().close(ignored);
  });
}

// ---------------------------------------------------------------------------------------------
// Client

Client::Client(ClientOptions options) : options_(std::move(options)) {
  if (options_.endpoints.empty()) options_.endpoints = parse_endpoints("");
}

void Client::endpoint_failed(std::size_t failed) {
  std::size_t expected = failed;
  preferred_.compare_exchange_strong(expected, (failed + 1) % options_.endpoints.size());
  // Connections to a member that failed are likely dead too.
  std::lock_guard lock(pool_mutex_);
  std::erase_if(idle_,
                [&](const auto& connection) { return connection->endpoint_index() == failed; });
}

std::unique_ptr<HttpConnection> Client::take_connection(std::size_t endpoint,
                                                        milliseconds timeout) {
  {
    std::lock_guard lock(pool_mutex_);
    for (auto it = idle_.rbegin(); it != idle_.rend(); ++it) {
      if ((*it)->endpoint_index() == endpoint) {
        auto connection = std::move(*it);
        idle_.erase(std::next(it).base());
        return connection;
      }
    }
  }
  auto connection = std::make_unique<HttpConnection>(endpoint, options_.tls);
  connection->connect(options_.endpoints[endpoint], timeout);
  return connection;
}

void Client::return_connection(std::unique_ptr<HttpConnection> connection) {
  constexpr std::size_t max_idle = 32;
  std::lock_guard lock(pool_mutex_);
  if (idle_.size() < max_idle) idle_.push_back(std::move(connection));
}

http::request<http::string_body> Client::make_request(std::string_view path, std::string body,
                                                      const EndpointAddress& endpoint) {
  http::request<http::string_body> request{http::verb::post, std::string(path), 11};
  request.set(http::field::host, endpoint.text());
  request.set(http::field::content_type, "application/json");
  request.keep_alive(true);
  if (!options_.username.empty()) request.set(http::field::authorization, token());
  request.body() = std::move(body);
  request.prepare_payload();
  return request;
}

http::request<http::empty_body> Client::make_chunked_request(std::string_view path,
                                                             const EndpointAddress& endpoint) {
  http::request<http::empty_body> request{http::verb::post, std::string(path), 11};
  request.set(http::field::host, endpoint.text());
  request.set(http::field::content_type, "application/json");
  if (!options_.username.empty()) request.set(http::field::authorization, token());
  return request;
}

std::string Client::token() {
  {
    std::lock_guard lock(token_mutex_);
    if (token_valid_) return token_;
  }
  authenticate();
  std::lock_guard lock(token_mutex_);
  return token_;
}

void Client::authenticate() {
  if (options_.username.empty()) return;
  const nlohmann::json credentials = {{"name", options_.username}, {"password", options_.password}};
  const auto deadline = Clock::now() + options_.request_timeout;
  std::string last_error = "no endpoint tried";
  while (remaining_until(deadline).count() > 0) {
    const std::size_t endpoint = preferred_.load() % options_.endpoints.size();
    try {
      auto connection =
          take_connection(endpoint, std::min(options_.dial_timeout, remaining_until(deadline)));
      http::request<http::string_body> request{http::verb::post, "/v3/auth/authenticate", 11};
      request.set(http::field::host, options_.endpoints[endpoint].text());
      request.set(http::field::content_type, "application/json");
      request.body() = credentials.dump();
      request.prepare_payload();
      auto response = connection->round_trip(request, remaining_until(deadline));
      auto answer = nlohmann::json::parse(response.body(), nullptr, false);
      if (response.result_int() == 200 && answer.contains("token")) {
        if (response.keep_alive()) return_connection(std::move(connection));
        std::lock_guard lock(token_mutex_);
        token_ = answer["token"].get<std::string>();
        token_valid_ = true;
        return;
      }
      const std::string message = answer.value("message", response.body());
      if (!member_cannot_serve(int(json_int64(answer, "code")), message)) {
        throw micro::Exception(
            micro::Error(error_id, micro::ErrorCode::unauthorized,
                         "etcd refused user " + options_.username + ": " + message));
      }
      last_error = message;
      endpoint_failed(endpoint);
    } catch (const TransportError& error) {
      last_error = error.what();
      endpoint_failed(endpoint);
    }
  }
  throw micro::Exception(
      micro::unavailable(error_id, "cannot authenticate to etcd: " + last_error));
}

std::string Client::call_raw(std::string_view path, const std::string& body,
                             std::unique_ptr<HttpConnection>* own_connection) {
  const auto deadline = Clock::now() + options_.request_timeout;
  std::string last_error = "request timeout too short";
  bool reauthenticated = false;
  std::size_t failures = 0;
  while (remaining_until(deadline).count() > 0) {
    const std::size_t endpoint = preferred_.load() % options_.endpoints.size();
    std::unique_ptr<HttpConnection> connection;
    try {
      if (own_connection && *own_connection && (*own_connection)->endpoint_index() == endpoint) {
        connection = std::move(*own_connection);
      } else {
        connection =
            take_connection(endpoint, std::min(options_.dial_timeout, remaining_until(deadline)));
      }
      auto request = make_request(path, body, options_.endpoints[endpoint]);
      // One attempt gets a third of the budget: a member that lost its leader holds requests
      // until its own timeout, while another member may answer as soon as a leader is elected.
      const auto attempt_timeout = std::min(
          remaining_until(deadline), std::max<milliseconds>(options_.request_timeout / 3, 200ms));
      auto response = connection->round_trip(request, attempt_timeout);
      const bool reusable = response.keep_alive();
      auto give_back = [&] {
        if (!reusable) return;
        if (own_connection) {
          *own_connection = std::move(connection);
        } else {
          return_connection(std::move(connection));
        }
      };
      if (response.result_int() == 200) {
        give_back();
        return std::move(response.body());
      }
      auto answer = nlohmann::json::parse(response.body(), nullptr, false);
      const int code = int(json_int64(answer, "code"));
      const std::string message =
          answer.is_object() ? answer.value("message", response.body()) : response.body();
      give_back();
      if (!options_.username.empty() && !reauthenticated && token_rejected(code, message)) {
        reauthenticated = true;
        {
          std::lock_guard lock(token_mutex_);
          token_valid_ = false;
        }
        continue;
      }
      if (!member_cannot_serve(code, message)) throw EtcdError(code, message);
      last_error = options_.endpoints[endpoint].text() + ": " + message;
      endpoint_failed(endpoint);
    } catch (const TransportError& error) {
      last_error = error.what();
      endpoint_failed(endpoint);
    }
    // After a full round of endpoints failed, back off a little (a leader election takes a
    // moment), but never past the deadline.
    if (++failures % options_.endpoints.size() == 0) {
      const auto pause = std::min<milliseconds>(
          milliseconds(25 * std::min<std::size_t>(failures, 20)), remaining_until(deadline));
      if (pause.count() > 0) std::this_thread::sleep_for(pause);
    }
  }
  throw micro::Exception(micro::unavailable(
      error_id, "no etcd endpoint answered " + std::string(path) + " within " +
                    std::to_string(options_.request_timeout.count()) + "ms: " + last_error));
}

nlohmann::json Client::call(std::string_view path, const nlohmann::json& body) {
  const auto text = call_raw(path, body.dump());
  auto answer = nlohmann::json::parse(text, nullptr, false);
  if (answer.is_discarded()) {
    throw micro::Exception(micro::Error(error_id, micro::ErrorCode::bad_gateway,
                                        "etcd answered with non-JSON: " + text));
  }
  return answer;
}

}  // namespace micro::etcd
