// test/plugins/grpc/grpc_transport_test.cpp — what only the grpc transport promises, asked from
// a raw socket speaking HTTP/2 frame by frame (HPACK through nghttp2's deflater/inflater, the
// rest by hand): the gRPC wire of a call (headers, length-prefixed messages, trailers), trailers-
// only for errors before any message, grpc-timeout as the deadline and refused when malformed,
// percent-encoded grpc-message, -bin metadata, gzip messages both ways, an oversize prefix refused
// with RESOURCE_EXHAUSTED before anything is allocated, unknown paths and endpoints UNIMPLEMENTED,
// RST_STREAM cancelling the handler, GOAWAY for bad frames and on close; node metadata; TLS
// with ALPN h2.
#include <nghttp2/nghttp2.h>
#include <zlib.h>

#include <fstream>
#include <map>
#include <mutex>

#include <doctest/doctest.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <micro/connection_table.hpp>
#include <micro/gzip.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/registry.hpp>
#include <micro/runtime.hpp>
#include <micro/server.hpp>
#include <micro/transport.hpp>

#include "plugins/conformance/stream_test_support.hpp"
#include "plugins/conformance/transport_test_support.hpp"
#include "support/test_certificates.hpp"
#include "support/wait.hpp"

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using Headers = std::vector<std::pair<std::string, std::string>>;

constexpr std::uint8_t data_frame = 0, headers_frame = 1, rst_frame = 3, settings_frame = 4,
                       goaway_frame = 7;
constexpr std::uint8_t end_stream = 1, end_headers = 4, ack = 1;

std::string prefixed(std::string_view message, bool compressed = false) {
  std::string out(5, '\0');
  out[0] = compressed ? 1 : 0;
  auto length = static_cast<std::uint32_t>(message.size());
  out[1] = static_cast<char>(length >> 24);
  out[2] = static_cast<char>(length >> 16);
  out[3] = static_cast<char>(length >> 8);
  out[4] = static_cast<char>(length);
  out.append(message);
  return out;
}

std::string gzip(std::string_view text) {
  z_stream stream{};
  REQUIRE(deflateInit2(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8,
                       Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(deflateBound(&stream, text.size()) + 32, '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  stream.avail_in = static_cast<uInt>(text.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&stream, Z_FINISH) == Z_STREAM_END);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

struct Frame {
  std::uint8_t type = 0, flags = 0;
  std::int32_t stream = 0;
  std::string payload;
};

// What came back on one stream.
struct Answer {
  Headers headers, trailers;
  std::string data;
  std::optional<std::uint32_t> reset;  // RST_STREAM's code
  bool trailers_only = false;          // the first HEADERS ended the stream
  std::string header(const std::string& name) const {
    for (const auto& [key, value] : trailers_only ? headers : trailers)
      if (key == name) return value;
    for (const auto& [key, value] : headers)
      if (key == name) return value;
    return "<none>";
  }
};

// An HTTP/2 client one frame at a time, blocking, with a receive timeout.
class RawClient {
 public:
  explicit RawClient(const std::string& address) : socket_(io_) {
    auto colon = address.rfind(':');
    socket_.connect({asio::ip::make_address(address.substr(0, colon)),
                     static_cast<std::uint16_t>(std::stoi(address.substr(colon + 1)))});
    timeval timeout{5, 0};
    ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    nghttp2_hd_deflate_new(&deflater_, 4096);
    nghttp2_hd_inflate_new(&inflater_);
    write_raw("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    send_frame(settings_frame, 0, 0, "");
  }
  ~RawClient() {
    nghttp2_hd_deflate_del(deflater_);
    nghttp2_hd_inflate_del(inflater_);
  }

  void write_raw(std::string_view bytes) {
    asio::write(socket_, asio::buffer(bytes.data(), bytes.size()));
  }

  void send_frame(std::uint8_t type, std::uint8_t flags, std::int32_t stream,
                  std::string_view payload) {
    std::string frame(9, '\0');
    auto length = static_cast<std::uint32_t>(payload.size());
    frame[0] = static_cast<char>(length >> 16);
    frame[1] = static_cast<char>(length >> 8);
    frame[2] = static_cast<char>(length);
    frame[3] = static_cast<char>(type);
    frame[4] = static_cast<char>(flags);
    frame[5] = static_cast<char>((stream >> 24) & 0x7f);
    frame[6] = static_cast<char>(stream >> 16);
    frame[7] = static_cast<char>(stream >> 8);
    frame[8] = static_cast<char>(stream);
    frame.append(payload);
    write_raw(frame);
  }

  void send_headers(std::int32_t stream, const Headers& headers, bool end = false) {
    std::vector<nghttp2_nv> nva;
    for (const auto& [name, value] : headers)
      nva.push_back({reinterpret_cast<std::uint8_t*>(const_cast<char*>(name.data())),
                     reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())), name.size(),
                     value.size(), NGHTTP2_NV_FLAG_NONE});
    std::string block(nghttp2_hd_deflate_bound(deflater_, nva.data(), nva.size()), '\0');
    auto size = nghttp2_hd_deflate_hd(deflater_, reinterpret_cast<std::uint8_t*>(block.data()),
                                      block.size(), nva.data(), nva.size());
    REQUIRE(size >= 0);
    block.resize(static_cast<std::size_t>(size));
    send_frame(headers_frame, end_headers | (end ? end_stream : 0), stream, block);
  }

  // In frames of at most 16 KiB (the default SETTINGS_MAX_FRAME_SIZE).
  void send_data(std::int32_t stream, std::string_view bytes, bool end = true) {
    do {
      std::string_view chunk = bytes.substr(0, 16384);
      bytes.remove_prefix(chunk.size());
      send_frame(data_frame, end && bytes.empty() ? end_stream : 0, stream, chunk);
    } while (!bytes.empty());
  }

  // The next frame, or nullopt on timeout / close. SETTINGS are acknowledged.
  std::optional<Frame> read_frame() {
    for (;;) {
      std::uint8_t header[9];
      boost::system::error_code error;
      asio::read(socket_, asio::buffer(header), error);
      if (error) return std::nullopt;
      Frame frame;
      std::size_t length =
          (std::size_t(header[0]) << 16) | (std::size_t(header[1]) << 8) | header[2];
      frame.type = header[3];
      frame.flags = header[4];
      frame.stream = static_cast<std::int32_t>(((header[5] & 0x7f) << 24) | (header[6] << 16) |
                                               (header[7] << 8) | header[8]);
      frame.payload.resize(length);
      asio::read(socket_, asio::buffer(frame.payload), error);
      if (error) return std::nullopt;
      if (frame.type == settings_frame && !(frame.flags & ack)) {
        send_frame(settings_frame, ack, 0, "");
        continue;
      }
      return frame;
    }
  }

  Headers decode(const std::string& block) {
    Headers headers;
    auto* in = reinterpret_cast<const std::uint8_t*>(block.data());
    std::size_t left = block.size();
    for (;;) {
      nghttp2_nv nv;
      int flags = 0;
      auto used = nghttp2_hd_inflate_hd2(inflater_, &nv, &flags, in, left, 1);
      REQUIRE(used >= 0);
      in += used;
      left -= static_cast<std::size_t>(used);
      if (flags & NGHTTP2_HD_INFLATE_EMIT)
        headers.emplace_back(std::string(reinterpret_cast<char*>(nv.name), nv.namelen),
                             std::string(reinterpret_cast<char*>(nv.value), nv.valuelen));
      if (flags & NGHTTP2_HD_INFLATE_FINAL) {
        nghttp2_hd_inflate_end_headers(inflater_);
        break;
      }
      if (used == 0 && left == 0) break;
    }
    return headers;
  }

  // Reads until `stream` ends (END_STREAM or RST_STREAM); frames of other streams are dropped.
  Answer answer(std::int32_t stream) {
    Answer result;
    bool have_headers = false;
    while (auto frame = read_frame()) {
      if (frame->type == headers_frame) {
        auto headers = decode(frame->payload);  // every block must pass the inflater
        if (frame->stream != stream) continue;
        if (!have_headers) {
          result.headers = std::move(headers);
          have_headers = true;
          result.trailers_only = frame->flags & end_stream;
        } else {
          result.trailers = std::move(headers);
        }
        if (frame->flags & end_stream) return result;
      } else if (frame->type == data_frame && frame->stream == stream) {
        result.data += frame->payload;
        if (frame->flags & end_stream) return result;
      } else if (frame->type == rst_frame && frame->stream == stream) {
        result.reset = (std::uint32_t(std::uint8_t(frame->payload[0])) << 24) |
                       (std::uint32_t(std::uint8_t(frame->payload[1])) << 16) |
                       (std::uint32_t(std::uint8_t(frame->payload[2])) << 8) |
                       std::uint8_t(frame->payload[3]);
        return result;
      } else if (frame->type == goaway_frame) {
        goaways.push_back(*frame);
      }
    }
    FAIL("stream " << stream << " did not end");
    return result;
  }

  // Reads until a GOAWAY arrives; its error code, or nullopt.
  std::optional<std::uint32_t> goaway() {
    if (!goaways.empty()) return code_of(goaways.front());
    while (auto frame = read_frame())
      if (frame->type == goaway_frame) return code_of(*frame);
    return std::nullopt;
  }

  std::vector<Frame> goaways;

 private:
  static std::uint32_t code_of(const Frame& frame) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(frame.payload.data()) + 4;
    return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) |
           p[3];
  }

  asio::io_context io_;
  asio::ip::tcp::socket socket_;
  nghttp2_hd_deflater* deflater_ = nullptr;
  nghttp2_hd_inflater* inflater_ = nullptr;
};

Headers call_headers(const std::string& path,
                     const std::string& content_type = "application/grpc") {
  return {{":method", "POST"},
          {":scheme", "http"},
          {":path", path},
          {":authority", "test"},
          {"content-type", content_type},
          {"te", "trailers"}};
}

// A listener whose handler answers every call, unary or stream, with "echo:" + its one
// message, and remembers what it saw.
struct Seen {
  std::mutex mutex;
  std::vector<micro::Request> requests;
  std::vector<std::optional<micro::Context::Clock::duration>> remaining;
  std::atomic<int> cancelled{0};
  std::size_t count() {
    std::lock_guard lock(mutex);
    return requests.size();
  }
};

micro::CallHandler recording_handler(Seen& seen) {
  return [&seen](micro::ServerCallPtr call) {
    {
      std::lock_guard lock(seen.mutex);
      seen.requests.push_back(call->request());
      seen.remaining.push_back(call->context().has_deadline()
                                   ? std::optional(call->context().remaining())
                                   : std::nullopt);
    }
    call->context().cancellation()->on_cancel([&seen] { ++seen.cancelled; });
    const std::string endpoint = call->request().endpoint;
    auto answer = [endpoint](std::string body) {
      if (endpoint == "Fail.Percent")
        return micro::Response::failure(micro::Error("test", 404, "50% off: \xc3\xbc\nnext"));
      micro::Response response;
      response.body = "echo:" + body;
      response.metadata.set("x-reply-bin", std::string("\x00\xff", 2));
      return response;
    };
    if (endpoint == "Hold.Call") return;  // never answered; the call is kept by its stream
    if (auto stream = micro::as_stream(call)) {
      stream->async_read([stream, answer](std::optional<std::string> message) {
        auto response = answer(message.value_or(""));
        if (response.error) {
          stream->finish(std::move(response));
          return;
        }
        stream->async_write(response.body, [stream, response](std::optional<micro::Error>) mutable {
          response.body.clear();
          stream->finish(std::move(response));
        });
      });
      return;
    }
    call->respond(answer(call->request().body));
  };
}

struct Fixture {
  transport_test::Runtime runtime;
  std::shared_ptr<micro::Transport> transport =
      transport_test::make_transport("grpc", runtime, {{"max_message", "65536"}});
  Seen seen;
  std::unique_ptr<micro::Listener> listener =
      transport->listen("127.0.0.1:0", recording_handler(seen));
};

long resident_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

}  // namespace

TEST_CASE("a call from a raw HTTP/2 client: headers, one message, trailers") {
  Fixture fixture;
  RawClient client(fixture.listener->address());
  auto headers = call_headers("/shop.Cart/Add", "application/grpc+json");
  headers.emplace_back("grpc-timeout", "500m");
  headers.emplace_back("x-blob-bin", "AAH+");  // 00 01 fe, unpadded as gRPC sends it
  headers.emplace_back("x-plain", "v");
  client.send_headers(1, headers);
  client.send_data(1, prefixed("{\"n\":1}"));
  auto answer = client.answer(1);
  CHECK_FALSE(answer.trailers_only);
  CHECK(answer.header(":status") == "200");
  CHECK(answer.header("content-type") == "application/grpc+json");
  CHECK(answer.data == prefixed("echo:{\"n\":1}"));
  CHECK(answer.header("grpc-status") == "0");
  CHECK(answer.header("x-reply-bin") == "AP8");  // 00 ff, base64 without padding

  std::lock_guard lock(fixture.seen.mutex);
  REQUIRE(fixture.seen.requests.size() == 1);
  const auto& request = fixture.seen.requests[0];
  CHECK(request.service == "shop");
  CHECK(request.endpoint == "Cart.Add");
  CHECK(request.content_type == "application/json");
  CHECK(request.context.metadata().get("x-blob-bin") == std::string("\x00\x01\xfe", 3));
  CHECK(request.context.metadata().get("x-plain") == "v");
  CHECK_FALSE(request.context.metadata().contains("te"));
  REQUIRE(fixture.seen.remaining[0]);
  CHECK(*fixture.seen.remaining[0] > 0ms);
  CHECK(*fixture.seen.remaining[0] <= 500ms);
}

TEST_CASE("gzip messages are accepted with grpc-encoding: gzip, refused without it") {
  Fixture fixture;
  RawClient client(fixture.listener->address());
  auto headers = call_headers("/p.Zip/It");
  headers.emplace_back("grpc-encoding", "gzip");
  client.send_headers(1, headers);
  client.send_data(1, prefixed(gzip(std::string(1000, 'z')), true));
  auto answer = client.answer(1);
  CHECK(answer.header("grpc-status") == "0");
  CHECK(answer.data == prefixed("echo:" + std::string(1000, 'z')));

  client.send_headers(3, call_headers("/p.Zip/It"));
  client.send_data(3, prefixed(gzip("x"), true));
  answer = client.answer(3);
  CHECK(answer.header("grpc-status") == "13");  // INTERNAL, as the spec asks
  CHECK(answer.header("grpc-message").find("grpc-encoding") != std::string::npos);

  // A gzip bomb past max_message (64 KiB here) is refused while inflating.
  client.send_headers(5, headers);
  client.send_data(5, prefixed(gzip(std::string(1 << 20, 'b')), true));
  answer = client.answer(5);
  CHECK(answer.header("grpc-status") == "8");
}

TEST_CASE("compression=gzip: answers go out compressed to callers that accept gzip, only to them") {
  transport_test::Runtime runtime;
  auto transport = transport_test::make_transport("grpc", runtime, {{"compression", "gzip"}});
  Seen seen;
  auto listener = transport->listen("127.0.0.1:0", recording_handler(seen));
  RawClient client(listener->address());
  auto headers = call_headers("/p.Zip/It");
  headers.emplace_back("grpc-accept-encoding", "identity, gzip");
  client.send_headers(1, headers);
  client.send_data(1, prefixed(std::string(1000, 'z')));
  auto answer = client.answer(1);
  CHECK(answer.header("grpc-status") == "0");
  CHECK(answer.header("grpc-encoding") == "gzip");
  REQUIRE(answer.data.size() > 5);
  CHECK(answer.data[0] == 1);  // the compressed flag
  CHECK(answer.data.size() < 100);
  std::string problem;
  auto inflated = micro::gzip::decompress(answer.data.substr(5), 1 << 20, problem);
  REQUIRE_MESSAGE(inflated, problem);
  CHECK(*inflated == "echo:" + std::string(1000, 'z'));

  // A caller that does not name gzip gets the message as it is.
  client.send_headers(3, call_headers("/p.Zip/It"));
  client.send_data(3, prefixed("plain"));
  answer = client.answer(3);
  CHECK(answer.header("grpc-encoding") == "<none>");
  CHECK(answer.data == prefixed("echo:plain"));

  // An encoding we do not speak is UNIMPLEMENTED, and the answer says which we accept.
  auto deflated = call_headers("/p.Zip/It");
  deflated.emplace_back("grpc-encoding", "snappy");
  client.send_headers(5, deflated);
  client.send_data(5, prefixed("x", true));
  answer = client.answer(5);
  CHECK(answer.header("grpc-status") == "12");
  CHECK(answer.header("grpc-accept-encoding") == "identity,gzip");

  CHECK_THROWS_WITH_AS(transport_test::make_transport("grpc", runtime, {{"compression", "zstd"}}),
                       doctest::Contains("compression \"zstd\" is not one of identity, gzip"),
                       micro::Exception);
  listener->close();
  transport->close();
}

TEST_CASE("compression=gzip on both sides: calls and streams carry compressed bytes") {
  transport_test::Runtime runtime;
  auto server = transport_test::make_transport("grpc", runtime, {{"compression", "gzip"}});
  stream_test::EchoStreams echo_streams;
  auto echo = transport_test::echo_handler();
  auto streams = echo_streams.handler();
  auto listener = server->listen("127.0.0.1:0", [echo, streams](micro::ServerCallPtr call) {
    if (call->is_stream())
      streams(std::move(call));
    else
      echo(std::move(call));
  });
  auto client = transport_test::make_transport("grpc", runtime, {{"compression", "gzip"}});
  const std::string big(1 << 20, 'z');
  auto response = transport_test::call_and_wait(*client, listener->address(),
                                                transport_test::make_request(big));
  REQUIRE_MESSAGE(!response.error, response.error->message());
  CHECK(response.body == "echo:" + big);
  auto opened =
      stream_test::open_and_wait(*client, listener->address(), stream_test::stream_head());
  REQUIRE(opened.stream);
  for (int i = 0; i < 3; ++i) {
    REQUIRE_FALSE(stream_test::write_one(*opened.stream, big));
    CHECK(stream_test::read_one(*opened.stream) == "echo:" + big);
  }
  opened.stream->close_send();
  CHECK_FALSE(stream_test::wait_end(*opened.stream).error);

  // 4 MiB went each way; compressed, a few KiB did (the connection's own byte counts).
  std::uint64_t client_out = 0, client_in = 0;
  for (const auto& row : micro::connection_table().rows()) {
    if (row.transport != "grpc" || row.side != micro::ConnectionSide::client ||
        row.peer != listener->address())
      continue;
    client_out += row.bytes_out;
    client_in += row.bytes_in;
  }
  CHECK(client_out > 0);
  CHECK(client_out < 64 * 1024);
  CHECK(client_in > 0);
  CHECK(client_in < 64 * 1024);
  client->close();
  listener->close();
  server->close();
}

TEST_CASE("bad grpc-timeout values are refused before any handler runs") {
  Fixture fixture;
  RawClient client(fixture.listener->address());
  std::int32_t stream = 1;
  for (std::string bad : {"12x", "123456789S", "S", "-5m", "1.5S"}) {
    CAPTURE(bad);
    auto headers = call_headers("/p.Svc/Call");
    headers.emplace_back("grpc-timeout", bad);
    client.send_headers(stream, headers);
    client.send_data(stream, prefixed("x"));
    auto answer = client.answer(stream);
    CHECK(answer.trailers_only);
    CHECK(answer.header("grpc-status") == "3");  // INVALID_ARGUMENT
    CHECK(answer.header("grpc-message").find("grpc-timeout") != std::string::npos);
    stream += 2;
  }
  CHECK(fixture.seen.count() == 0);
}

TEST_CASE("an oversize message prefix is RESOURCE_EXHAUSTED before anything is allocated") {
  Fixture fixture;
  RawClient client(fixture.listener->address());
  long before = resident_kib();
  client.send_headers(1, call_headers("/p.Svc/Call"));
  std::string prefix("\x00\xff\xff\xff\xf0", 5);  // announces ~4 GiB
  client.send_data(1, prefix + "only a few bytes", false);
  auto answer = client.answer(1);
  CHECK(answer.header("grpc-status") == "8");
  CHECK(answer.header("grpc-message").find("exceeds max_message 65536") != std::string::npos);
  CHECK(resident_kib() - before < 64 * 1024);
  // (The handler has the call since its headers — a third-party call is a stream — but never
  // a message: the recording handler's read sees the end.)
  // Just over the limit is refused too; the connection goes on serving.
  client.send_headers(3, call_headers("/p.Svc/Call"));
  client.send_data(3, prefixed(std::string(65537, 'o')));
  CHECK(client.answer(3).header("grpc-status") == "8");
  client.send_headers(5, call_headers("/p.Svc/Call"));
  client.send_data(5, prefixed("fits"));
  CHECK(client.answer(5).data == prefixed("echo:fits"));
}

TEST_CASE("paths that are not /package.Service/Method and non-gRPC content types are refused") {
  Fixture fixture;
  RawClient client(fixture.listener->address());
  std::int32_t stream = 1;
  for (std::string path : {"/", "/nomethod", "/a.B/c/d", "//M"}) {
    CAPTURE(path);
    client.send_headers(stream, call_headers(path), true);
    auto answer = client.answer(stream);
    CHECK(answer.trailers_only);
    CHECK(answer.header("grpc-status") == "12");  // UNIMPLEMENTED
    stream += 2;
  }
  client.send_headers(stream, call_headers("/p.Svc/Call", "text/plain"), true);
  auto answer = client.answer(stream);
  CHECK(answer.header(":status") == "415");
  CHECK(fixture.seen.count() == 0);
}

TEST_CASE("an error's detail travels percent-encoded in grpc-message, trailers-only") {
  Fixture fixture;
  RawClient client(fixture.listener->address());
  client.send_headers(1, call_headers("/p.Fail/Percent"));
  client.send_data(1, prefixed(""));
  auto answer = client.answer(1);
  CHECK(answer.trailers_only);
  CHECK(answer.header("grpc-status") == "5");  // NOT_FOUND
  CHECK(answer.header("grpc-message") == "50%25 off: %C3%BC%0Anext");
  // Our own client reads back the micro::Error as it was.
  micro::Request request = transport_test::make_request("", "Fail.Percent");
  request.service = "p";
  auto response =
      transport_test::call_and_wait(*fixture.transport, fixture.listener->address(), request);
  REQUIRE(response.error);
  CHECK(*response.error == micro::Error("test", 404, "50% off: \xc3\xbc\nnext"));
}

TEST_CASE("bad -bin metadata is refused with INVALID_ARGUMENT naming the key") {
  Fixture fixture;
  RawClient client(fixture.listener->address());
  auto headers = call_headers("/p.Svc/Call");
  headers.emplace_back("x-broken-bin", "%%%%");
  client.send_headers(1, headers);
  client.send_data(1, prefixed("x"));
  auto answer = client.answer(1);
  CHECK(answer.header("grpc-status") == "3");
  CHECK(answer.header("grpc-message").find("x-broken-bin") != std::string::npos);
}

TEST_CASE("RST_STREAM(CANCEL) from the client cancels the handler's context") {
  Fixture fixture;
  RawClient client(fixture.listener->address());
  client.send_headers(1, call_headers("/p.Hold/Call"));
  REQUIRE(test_support::wait_until([&] { return fixture.seen.count() == 1; }));
  client.send_frame(rst_frame, 0, 1, std::string("\x00\x00\x00\x08", 4));  // CANCEL
  CHECK(test_support::wait_until([&] { return fixture.seen.cancelled.load() == 1; }));
}

TEST_CASE("malformed frames end the connection with GOAWAY; other connections go on") {
  Fixture fixture;
  {
    RawClient client(fixture.listener->address());
    client.send_frame(data_frame, 0, 0, "data on stream 0");  // a PROTOCOL_ERROR
    auto code = client.goaway();
    REQUIRE(code);
    CHECK(*code == NGHTTP2_PROTOCOL_ERROR);
  }
  {
    RawClient client(fixture.listener->address());
    client.send_frame(headers_frame, end_headers, 1,
                      std::string("\xff\xff\xff\xff", 4));  // bad HPACK
    auto code = client.goaway();
    REQUIRE(code);
    CHECK(*code == NGHTTP2_COMPRESSION_ERROR);
  }
  RawClient fine(fixture.listener->address());
  fine.send_headers(1, call_headers("/p.Svc/Call"));
  fine.send_data(1, prefixed("still here"));
  CHECK(fine.answer(1).data == prefixed("echo:still here"));
}

TEST_CASE("closing the listener sends GOAWAY after the answers given") {
  Fixture fixture;
  RawClient client(fixture.listener->address());
  client.send_headers(1, call_headers("/p.Svc/Call"));
  client.send_data(1, prefixed("before"));
  CHECK(client.answer(1).data == prefixed("echo:before"));
  fixture.listener->close();
  auto code = client.goaway();
  REQUIRE(code);
  CHECK(*code == NGHTTP2_NO_ERROR);
}

TEST_CASE("through a Server: unknown endpoints are UNIMPLEMENTED, node metadata says grpc") {
  micro::Runtime runtime(2);
  auto& loader = micro::PluginLoader::instance();
  auto registry = loader.create<micro::Registry>("memory", "", {}, runtime.executor());
  auto transport = loader.create<micro::Transport>("grpc", "", {}, runtime.executor());
  micro::ServerOptions options;
  options.name = "shop";
  micro::Server server(options, transport, registry, nullptr, micro::WrapperChains{});
  server.handle("Cart.Add", [](const micro::RequestPtr& request, micro::ResponseHandler respond) {
    micro::Response response;
    response.body = "added:" + request->body;
    respond(std::move(response));
  });
  server.start();
  auto node = server.registration().nodes.at(0);
  CHECK(node.metadata.at("protocol") == "grpc");
  CHECK(node.metadata.at("transport") == "grpc");

  RawClient client(server.address());
  client.send_headers(1, call_headers("/shop.Cart/Remove"));
  client.send_data(1, prefixed("x"));
  auto answer = client.answer(1);
  CHECK(answer.header("grpc-status") == "12");
  CHECK(answer.header("grpc-message").find("has no endpoint 'Cart.Remove'") != std::string::npos);
  // A third-party unary call (no micro-call header: a stream on the wire) reaches the unary
  // endpoint: one message in, one message and the status out.
  client.send_headers(3, call_headers("/shop.Cart/Add"));
  client.send_data(3, prefixed("apple"));
  answer = client.answer(3);
  CHECK(answer.header("grpc-status") == "0");
  CHECK(answer.data == prefixed("added:apple"));
  server.stop();
  transport->close();
}

TEST_CASE("the standard health service: Check and Watch answer SERVING, then NOT_SERVING") {
  Fixture fixture;
  RawClient client(fixture.listener->address());
  client.send_headers(1, call_headers("/grpc.health.v1.Health/Check"));
  client.send_data(1, prefixed(""));  // HealthCheckRequest{service: ""}
  auto answer = client.answer(1);
  CHECK(answer.header("grpc-status") == "0");
  CHECK(answer.data == prefixed(std::string("\x08\x01", 2)));  // status: SERVING

  client.send_headers(3, call_headers("/grpc.health.v1.Health/Watch"));
  client.send_data(3, prefixed(""));
  std::string watched;
  while (watched.size() < 7) {
    auto frame = client.read_frame();
    REQUIRE(frame);
    if (frame->type == data_frame && frame->stream == 3) watched += frame->payload;
  }
  CHECK(watched == prefixed(std::string("\x08\x01", 2)));
  fixture.listener->stop_accepting();  // what a draining Server does first
  while (watched.size() < 14) {
    auto frame = client.read_frame();
    REQUIRE(frame);
    if (frame->type == data_frame && frame->stream == 3) watched += frame->payload;
  }
  CHECK(watched.substr(7) == prefixed(std::string("\x08\x02", 2)));  // NOT_SERVING
  client.send_headers(5, call_headers("/grpc.health.v1.Health/Check"));
  client.send_data(5, prefixed(""));
  CHECK(client.answer(5).data == prefixed(std::string("\x08\x02", 2)));
  CHECK(fixture.seen.count() == 0);  // answered by the transport, not a handler
}

std::string health_request(std::string_view service) {  // HealthCheckRequest{service}
  std::string message = {'\x0a', static_cast<char>(service.size())};
  return prefixed(message.append(service));
}

TEST_CASE("the health service knows the names served: NOT_FOUND and SERVICE_UNKNOWN for others") {
  Fixture fixture;
  fixture.listener->set_served("shop", {"Cart.Add", "Cart.Remove"});
  RawClient client(fixture.listener->address());
  std::int32_t id = 1;
  for (std::string name :
       {"", "shop", "shop.Cart", "other.Cart", "Cart", "grpc.health.v1.Health"}) {
    CAPTURE(name);
    client.send_headers(id, call_headers("/grpc.health.v1.Health/Check"));
    client.send_data(id, health_request(name));
    auto answer = client.answer(id);
    CHECK(answer.header("grpc-status") == "0");
    CHECK(answer.data == prefixed(std::string("\x08\x01", 2)));
    id += 2;
  }
  for (std::string name : {"shop.Carts", "Car", "shop.Till"}) {
    CAPTURE(name);
    client.send_headers(id, call_headers("/grpc.health.v1.Health/Check"));
    client.send_data(id, health_request(name));
    auto answer = client.answer(id);
    CHECK(answer.trailers_only);
    CHECK(answer.header("grpc-status") == "5");  // NOT_FOUND
    CHECK(answer.header("grpc-message").find("\"" + name + "\" is not served here") !=
          std::string::npos);
    id += 2;
  }
  // Watch of an unknown name: SERVICE_UNKNOWN, and the stream stays open.
  client.send_headers(id, call_headers("/grpc.health.v1.Health/Watch"));
  client.send_data(id, health_request("shop.Till"));
  std::string watched;
  while (watched.size() < 7) {
    auto frame = client.read_frame();
    REQUIRE(frame);
    CHECK_FALSE((frame->stream == id && (frame->flags & end_stream)));
    if (frame->type == data_frame && frame->stream == id) watched += frame->payload;
  }
  CHECK(watched == prefixed(std::string("\x08\x03", 2)));
  id += 2;
  // Bytes that are not a HealthCheckRequest: INVALID_ARGUMENT, saying where.
  client.send_headers(id, call_headers("/grpc.health.v1.Health/Check"));
  client.send_data(id, prefixed(std::string("\x0a\x09shop", 6)));
  auto answer = client.answer(id);
  CHECK(answer.header("grpc-status") == "3");
  CHECK(answer.header("grpc-message").find("runs past the message") != std::string::npos);
  CHECK(fixture.seen.count() == 0);
}

TEST_CASE("a server stream's final answer goes out after a write it did not wait for") {
  transport_test::Runtime runtime;
  auto transport = transport_test::make_transport("grpc", runtime);
  auto listener = transport->listen("127.0.0.1:0", [](micro::ServerCallPtr call) {
    auto stream = micro::as_stream(call);
    stream->async_write(std::string(100000, 'w'), [](std::optional<micro::Error>) {});
    micro::Response status;
    status.metadata.set("x-done", "yes");
    stream->finish(std::move(status));  // at once, the write still under way
  });
  auto opened =
      stream_test::open_and_wait(*transport, listener->address(), stream_test::stream_head());
  REQUIRE(opened.stream);
  CHECK(stream_test::read_one(*opened.stream) == std::string(100000, 'w'));
  CHECK_FALSE(stream_test::read_one(*opened.stream));
  auto status = stream_test::wait_end(*opened.stream);
  CHECK_FALSE(status.error);
  CHECK(status.metadata.get("x-done") == "yes");
  transport->close();
}

TEST_CASE("TLS with ALPN h2: calls and streams, a wrong CA and a plaintext client refused") {
  micro_test::TestCertificates certificates("micro-grpc");
  transport_test::Runtime runtime;
  auto server = transport_test::make_transport("grpc", runtime,
                                               {{"tls_cert", certificates.path("server.pem")},
                                                {"tls_key", certificates.path("server.key")}});
  stream_test::EchoStreams echo_streams;
  auto echo = transport_test::echo_handler();
  auto streams = echo_streams.handler();
  auto listener = server->listen("127.0.0.1:0", [echo, streams](micro::ServerCallPtr call) {
    if (call->is_stream())
      streams(std::move(call));
    else
      echo(std::move(call));
  });
  auto client =
      transport_test::make_transport("grpc", runtime, {{"tls_ca", certificates.path("ca.pem")}});
  auto response = transport_test::call_and_wait(*client, listener->address(),
                                                transport_test::make_request("secret"));
  REQUIRE_MESSAGE(!response.error, response.error->message());
  CHECK(response.body == "echo:secret");
  auto opened =
      stream_test::open_and_wait(*client, listener->address(), stream_test::stream_head());
  REQUIRE(opened.stream);
  REQUIRE_FALSE(stream_test::write_one(*opened.stream, "m"));
  CHECK(stream_test::read_one(*opened.stream) == "echo:m");
  opened.stream->close_send();
  CHECK_FALSE(stream_test::wait_end(*opened.stream).error);

  auto distrustful = transport_test::make_transport(
      "grpc", runtime, {{"tls_ca", certificates.path("other-ca.pem")}});
  response = transport_test::call_and_wait(*distrustful, listener->address(),
                                           transport_test::make_request("x"));
  REQUIRE(response.error);
  CHECK(response.error->code == 503);
  CHECK(response.error->detail.find("grpc: cannot connect to " + listener->address() +
                                    ": TLS handshake failed") != std::string::npos);

  auto plain = transport_test::make_transport("grpc", runtime);
  response =
      transport_test::call_and_wait(*plain, listener->address(), transport_test::make_request("x"));
  REQUIRE(response.error);
  CHECK(response.error->code == 503);

  // Options that cannot work are refused when the transport is made.
  CHECK_THROWS_WITH_AS(transport_test::make_transport(
                           "grpc", runtime, {{"tls_cert", certificates.path("server.pem")}}),
                       doctest::Contains("tls_cert and tls_key go together"), micro::Exception);
  CHECK_THROWS_WITH_AS(
      transport_test::make_transport("grpc", runtime, {{"tls_ca", "/nonexistent/ca.pem"}}),
      doctest::Contains("cannot use tls_ca \"/nonexistent/ca.pem\""), micro::Exception);
  client->close();
  distrustful->close();
  plain->close();
}
