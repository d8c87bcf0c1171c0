# The Cap'n Proto baseline's interface (capnp_echo_bench): one method that returns the request
# unchanged, the same shape as echo.proto's gRPC service.
@0xc038601bf6a40ed7;

$import "/capnp/c++.capnp".namespace("micro_bench");

# The body carries the same JSON bytes as rpc_bench's request.
struct EchoMessage {
  body @0 :Data;
}

interface Echo {
  echo @0 (request :EchoMessage) -> (reply :EchoMessage);
}
