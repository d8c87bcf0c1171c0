// plugins/grpc/wire.hpp — the gRPC-over-HTTP/2 rules both sides share (README.md has them in
// full): validated options, length-prefixed messages, grpc-timeout, percent-encoded
// grpc-message, content types, metadata as headers (-bin base64), and the mapping between
// micro::Error codes and gRPC status codes.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <micro/context.hpp>
#include <micro/error.hpp>

namespace micro::grpc {

namespace asio = boost::asio;
using IoExecutor = asio::io_context::executor_type;
using Strand = asio::strand<IoExecutor>;
using Socket = asio::basic_stream_socket<asio::ip::tcp, Strand>;
using Acceptor = asio::basic_socket_acceptor<asio::ip::tcp, Strand>;
using Resolver = asio::ip::basic_resolver<asio::ip::tcp, Strand>;
using Timer = asio::basic_waitable_timer<std::chrono::steady_clock,
                                         asio::wait_traits<std::chrono::steady_clock>, Strand>;

// The runtime's executor as the io_context executor it wraps; throws micro::Exception (400)
// when it wraps something else.
IoExecutor io_executor(const asio::any_io_executor& executor);

// HTTP/2 connections of one transport alive now, for Transport::statistics(); each counts
// itself in while it exists.
struct ConnectionCounts {
  std::atomic<std::uint64_t> server{0};
  std::atomic<std::uint64_t> client{0};
};

// The plugin's options after validation (grpc_options in grpc_transport.cpp has the ranges).
struct Settings {
  std::uint32_t max_message = 4 * 1024 * 1024;  // one message's bytes, prefix excluded
  std::size_t pool_size = 1;
  std::chrono::milliseconds connect_timeout{5000};
  std::uint32_t stream_window = 262144;  // HTTP/2 SETTINGS_INITIAL_WINDOW_SIZE we grant
  std::uint32_t max_concurrent_streams = 1000;
  // compression=gzip: messages we send are gzip-compressed (a server's only when the caller's
  // grpc-accept-encoding names gzip).
  bool gzip = false;
  // TLS with ALPN h2 (README.md, "TLS"): listeners serve it when the server context is set,
  // the client dials it when the client context is set.
  std::shared_ptr<asio::ssl::context> server_tls, client_tls;
  std::shared_ptr<ConnectionCounts> counts = std::make_shared<ConnectionCounts>();
};

inline constexpr const char* client_error_id = "micro.client";
inline constexpr const char* server_error_id = "micro.server";

// gRPC status codes (grpc/doc/statuscodes.md).
enum StatusCode : int {
  status_ok = 0,
  status_cancelled = 1,
  status_unknown = 2,
  status_invalid_argument = 3,
  status_deadline_exceeded = 4,
  status_not_found = 5,
  status_already_exists = 6,
  status_permission_denied = 7,
  status_resource_exhausted = 8,
  status_failed_precondition = 9,
  status_aborted = 10,
  status_out_of_range = 11,
  status_unimplemented = 12,
  status_internal = 13,
  status_unavailable = 14,
  status_data_loss = 15,
  status_unauthenticated = 16,
};

// micro::Error code ↔ gRPC status: the README's table, kept in libmicro (<micro/error.hpp>) so
// tracing maps the same way without this plugin.
using micro::grpc_status_for;
inline int micro_code_for(int status) {
  return micro::error_code_for_grpc_status(status);
}
// HTTP status of a response without grpc-status → gRPC status (PROTOCOL-HTTP2.md,
// "HTTP to gRPC Status Code Mapping").
int grpc_status_for_http(int http_status);

// grpc-timeout: at most 8 digits and a unit (H M S m u n). encode picks the finest unit that
// fits; parse returns nullopt (with `problem` set) for anything else.
std::string encode_timeout(std::chrono::nanoseconds timeout);
std::optional<std::chrono::nanoseconds> parse_timeout(std::string_view text, std::string& problem);

// grpc-message: UTF-8 percent-encoded (everything outside 0x20..0x7e and '%').
std::string percent_encode(std::string_view text);
// Lenient, as the spec asks: a '%' not followed by two hex digits is kept as is.
std::string percent_decode(std::string_view text);

// Content types: micro "application/X" travels as "application/grpc+X"; "application/grpc"
// alone (and "+proto") is protobuf, "application/protobuf" here. micro_content_type returns
// nullopt for a type that is not gRPC's.
std::string grpc_content_type(std::string_view micro_type);
std::optional<std::string> micro_content_type(std::string_view grpc_type);

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// Headers the protocol owns, never metadata: pseudo-headers, content-type, te, user-agent,
// grpc-* (but grpc-status-details-bin, which is passed through), micro-* of this plugin.
bool reserved_header(std::string_view lowercase_name);
// Appends `metadata` as headers: names lowercased, -bin values base64 (unpadded), and a
// micro-key-case header naming the spellings that were not all lowercase so our peers give
// them back as spelled.
void append_metadata(const Metadata& metadata, HeaderList& headers);
// Collects metadata from received headers (`case_list` is a micro-key-case value or empty);
// -bin values are base64-decoded (padded or not); false with `problem` for a bad one.
bool add_metadata(Metadata& metadata, std::string_view name, std::string_view value,
                  std::string& problem);
void restore_key_case(Metadata& metadata, std::string_view case_list);

// A gRPC length-prefixed message: flag byte, u32 big-endian length, bytes. With `gzip` the
// bytes are compressed and the flag is 1 (the stream's grpc-encoding must say gzip).
inline constexpr std::size_t prefix_size = 5;
void append_message(std::string& out, std::string_view message, bool gzip = false);

// grpc-accept-encoding: whether a comma-separated list names gzip.
bool accepts_gzip(std::string_view accept_encoding);

// Splits received DATA bytes into messages, refusing a length over the limit before
// allocating anything for it.
class Deframer {
 public:
  enum class Result { more, message, too_large, bad_flag };
  explicit Deframer(std::uint32_t max_message) : max_message_(max_message) {}
  // Takes up to `size` bytes; returns what happened and how many bytes it used. On
  // `message`, take() has it.
  Result feed(const std::uint8_t* data, std::size_t size, std::size_t& used);
  std::string take() { return std::exchange(message_, {}); }
  bool compressed() const noexcept { return compressed_; }
  std::uint32_t length() const noexcept { return length_; }  // the last header's length
  bool idle() const noexcept { return header_have_ == 0 && !in_body_; }

 private:
  std::uint32_t max_message_;
  std::uint8_t header_[prefix_size] = {};
  std::size_t header_have_ = 0;
  bool in_body_ = false;
  bool compressed_ = false;
  std::uint32_t length_ = 0;
  std::string message_;
};

// "host:port", "[v6]:port" split; nullopt when there is no numeric port.
struct HostPort {
  std::string host;
  std::uint16_t port = 0;
};
std::optional<HostPort> split_address(std::string_view address);

// The path our client sends for an endpoint, and the endpoint a path reaches:
// "/<package>.<Service>/<Method>" ↔ service <package>, endpoint "<Service>.<Method>".
std::string path_for(std::string_view service, std::string_view endpoint);
bool parse_path(std::string_view path, std::string& service, std::string& endpoint);

// The micro::Error a gRPC status becomes on our client, when the trailers carry no
// micro-error-bin: the code mapped, the message as the detail, `id` (the service called).
Error error_from_status(int status, std::string message, const std::string& id);

}  // namespace micro::grpc
