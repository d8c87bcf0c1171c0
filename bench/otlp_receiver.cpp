// bench/otlp_receiver.cpp — a minimal live OTLP/HTTP trace receiver for benchmarks: accepts
// POST /v1/traces (http/protobuf or http/json) on loopback, counts the spans and answers 200
// with an empty ExportTraceServiceResponse, keeping connections alive. One thread.
//
//   otlp_receiver [port, default 0 = a free one] [--discard]
//
// --discard reads each body and answers 200 without walking it (spans are not counted): the
// cost a collector on another machine puts on this one is nothing, and benchmarks of the
// exporter alone should not pay for a receiver's parsing on the same cores.
//
// Prints `listening 127.0.0.1:PORT` once ready; on SIGTERM/SIGINT prints
// `otlp_receiver_spans_received N spans` and `otlp_receiver_requests N count` and exits 0.
// Spans are counted by walking the protobuf wire format (ExportTraceServiceRequest →
// resource_spans 1 → scope_spans 2 → spans 2) without decoding them, so the receiver stays
// cheap next to the exporter it measures.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

std::uint64_t spans_received = 0;
std::uint64_t requests_received = 0;
bool discard_bodies = false;

// Reads a varint at `position`; nullopt when truncated or longer than 10 bytes.
std::optional<std::uint64_t> read_varint(std::string_view data, std::size_t& position) {
  std::uint64_t value = 0;
  for (int shift = 0; shift < 70 && position < data.size(); shift += 7) {
    auto byte = static_cast<unsigned char>(data[position++]);
    value |= std::uint64_t{byte & 0x7fu} << shift;
    if ((byte & 0x80) == 0) return value;
  }
  return std::nullopt;
}

// Calls `on_field(field, bytes)` for each length-delimited field of one message and skips
// the others; false when the message is malformed.
template <class OnField>
bool for_each_length_delimited(std::string_view message, OnField on_field) {
  std::size_t position = 0;
  while (position < message.size()) {
    auto tag = read_varint(message, position);
    if (!tag) return false;
    auto field = static_cast<std::uint32_t>(*tag >> 3);
    switch (*tag & 7) {
      case 0:
        if (!read_varint(message, position)) return false;
        break;
      case 1:
        position += 8;
        break;
      case 5:
        position += 4;
        break;
      case 2: {
        auto length = read_varint(message, position);
        if (!length || *length > message.size() - position) return false;
        if (!on_field(field, message.substr(position, *length))) return false;
        position += *length;
        break;
      }
      default:
        return false;  // groups are not used by OTLP
    }
    if (position > message.size()) return false;
  }
  return true;
}

// Spans in an ExportTraceServiceRequest; nullopt when malformed.
std::optional<std::uint64_t> count_protobuf_spans(std::string_view request) {
  std::uint64_t count = 0;
  bool ok = for_each_length_delimited(request, [&](std::uint32_t field, std::string_view resource) {
    if (field != 1) return true;
    return for_each_length_delimited(resource, [&](std::uint32_t field, std::string_view scope) {
      if (field != 2) return true;
      return for_each_length_delimited(scope, [&](std::uint32_t field, std::string_view) {
        if (field == 2) ++count;
        return true;
      });
    });
  });
  if (!ok) return std::nullopt;
  return count;
}

std::optional<std::uint64_t> count_json_spans(std::string_view request) {
  auto document = nlohmann::json::parse(request, nullptr, false);
  if (document.is_discarded() || !document.is_object()) return std::nullopt;
  std::uint64_t count = 0;
  for (const auto& resource : document.value("resourceSpans", nlohmann::json::array()))
    for (const auto& scope : resource.value("scopeSpans", nlohmann::json::array()))
      count += scope.value("spans", nlohmann::json::array()).size();
  return count;
}

// One keep-alive connection: read a request, answer, repeat until the peer closes.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  explicit Connection(tcp::socket socket) : stream_(std::move(socket)) {}

  void read() {
    parser_.emplace();
    parser_->body_limit(64 << 20);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code error, std::size_t) {
                       if (!error) self->answer();
                     });
  }

 private:
  void answer() {
    auto& request = parser_->get();
    response_ = {};
    response_.version(request.version());
    response_.keep_alive(request.keep_alive());
    if (request.method() != http::verb::post || request.target() != "/v1/traces") {
      response_.result(http::status::not_found);
    } else {
      auto header = request[http::field::content_type];
      std::string_view type(header.data(), header.size());
      std::string_view body = request.body();
      std::optional<std::uint64_t> count = std::uint64_t{0};
      if (!discard_bodies)
        count = type.starts_with("application/json") ? count_json_spans(body)
                                                     : count_protobuf_spans(body);
      if (count) {
        ++requests_received;
        spans_received += *count;
        response_.result(http::status::ok);
        // An empty ExportTraceServiceResponse: no partial_success field.
        response_.set(http::field::content_type, type.starts_with("application/json")
                                                     ? "application/json"
                                                     : "application/x-protobuf");
        if (type.starts_with("application/json")) response_.body() = "{}";
      } else {
        response_.result(http::status::bad_request);
      }
    }
    response_.prepare_payload();
    http::async_write(stream_, response_,
                      [self = shared_from_this()](beast::error_code error, std::size_t) {
                        if (!error && self->response_.keep_alive()) self->read();
                      });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> response_;
};

void accept(tcp::acceptor& acceptor) {
  acceptor.async_accept([&acceptor](beast::error_code error, tcp::socket socket) {
    if (error) return;  // closed at shutdown
    std::make_shared<Connection>(std::move(socket))->read();
    accept(acceptor);
  });
}

}  // namespace

int main(int argc, char** argv) {
  unsigned short port = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--discard")
      discard_bodies = true;
    else
      port = static_cast<unsigned short>(std::atoi(argv[i]));
  }
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](beast::error_code, int) { io.stop(); });
  accept(acceptor);
  std::printf("listening 127.0.0.1:%u\n", acceptor.local_endpoint().port());
  std::fflush(stdout);
  io.run();
  std::printf("otlp_receiver_spans_received %llu spans\n",
              static_cast<unsigned long long>(spans_received));
  std::printf("otlp_receiver_requests %llu count\n",
              static_cast<unsigned long long>(requests_received));
  std::fflush(stdout);
  return 0;
}
