// The Thrift baseline's service (thrift_echo_bench): one method that returns the request
// unchanged, the same shape as echo.proto's gRPC service.
namespace cpp micro_bench

// The body carries the same JSON bytes as rpc_bench's request.
struct EchoMessage {
  1: binary body
}

service Echo {
  EchoMessage echo(1: EchoMessage request)
}
