#!/usr/bin/python3
"""test/plugins/grpc/grpc_peer.py — Python grpcio (a third-party gRPC) facing micro-cpp's grpc
transport, with stubs generated from interop.proto at start (grpc_tools.protoc).

  grpc_peer.py client ADDRESS   calls our server: every call kind, deadline, cancellation,
                                error status, metadata (-bin too), a 3 MiB message, one over
                                the limit; prints "ok CASE" per case, exits 1 on the first
                                failure saying what was wrong.
  grpc_peer.py client-tls ADDRESS CA_PEM
                                the same over TLS (ALPN h2), server verified against CA_PEM:
                                unary and bidi only.
  grpc_peer.py client-typed ADDRESS
                                calls our typed handlers (the generated messages in
                                <micro/protobuf.hpp>'s codec): every call kind, an error
                                status, and bytes that are not an EchoRequest.
  grpc_peer.py server           serves Echo on a free loopback port, prints "port N", and
                                serves until its stdin closes (what our client calls).
"""
import os
import sys
import tempfile
import threading
import time

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
GENERATED = tempfile.mkdtemp(prefix="micro-interop-")
if protoc.main(["protoc", "-I" + HERE, "--python_out=" + GENERATED,
                "--grpc_python_out=" + GENERATED, os.path.join(HERE, "interop.proto")]) != 0:
    sys.exit("grpc_peer.py: protoc failed on interop.proto")
sys.path.insert(0, GENERATED)
import interop_pb2  # noqa: E402
import interop_pb2_grpc  # noqa: E402

MIB = 1024 * 1024


def check(condition, what):
    if not condition:
        print("FAIL " + what, flush=True)
        sys.exit(1)


def run_tls_client(address, ca_file):
    with open(ca_file, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    channel = grpc.secure_channel(address, credentials)
    grpc.channel_ready_future(channel).result(timeout=10)
    stub = interop_pb2_grpc.EchoStub(channel)
    reply = stub.Unary(interop_pb2.EchoRequest(text="sealed"), timeout=10)
    check(reply.text == "echo:sealed", "tls unary: %r" % reply.text)
    print("ok tls-unary", flush=True)
    texts = ["a", "b"]
    replies = [r.text for r in stub.Bidi(iter([interop_pb2.EchoRequest(text=t) for t in texts]),
                                         timeout=10)]
    check(replies == ["echo:a", "echo:b"], "tls bidi: %r" % replies)
    print("ok tls-bidi", flush=True)


def run_client(address):
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=10)
    stub = interop_pb2_grpc.EchoStub(channel)
    Req = interop_pb2.EchoRequest

    reply, call = stub.Unary.with_call(
        Req(text="hi", payload=b"\x00\xffbin"),
        metadata=[("x-probe", "from python"), ("x-blob-bin", b"\x00\x01\xfe")], timeout=10)
    check(reply.text == "echo:hi", "unary text: %r" % reply.text)
    check(reply.payload == b"\x00\xffbin", "unary payload: %r" % reply.payload)
    check(reply.metadata == "from python|0001fe", "unary -bin metadata seen: %r" % reply.metadata)
    # A unary answer's metadata may come as initial or trailing metadata (gRPC allows both;
    # ours comes in the trailers when the call arrived as a stream).
    answered = dict(call.initial_metadata())
    answered.update(dict(call.trailing_metadata()))
    check(answered.get("x-answer") == "yes", "unary reply metadata: %r" % (answered,))
    check(answered.get("x-answer-bin") == b"\x00\x02", "unary reply -bin metadata: %r" % (answered,))
    print("ok unary", flush=True)

    replies = list(stub.ServerStream(Req(text="tick", count=5), timeout=10))
    check([r.index for r in replies] == [0, 1, 2, 3, 4], "server stream indexes: %r" %
          [r.index for r in replies])
    check(all(r.text == "tick" for r in replies), "server stream texts")
    print("ok server-stream", flush=True)

    reply = stub.ClientStream(iter([Req(text=t) for t in ("a", "b", "c")]), timeout=10)
    check(reply.text == "abc" and reply.index == 3, "client stream: %r %d" % (reply.text, reply.index))
    print("ok client-stream", flush=True)

    texts = ["one", "two", "three"]
    replies = [r.text for r in stub.Bidi(iter([Req(text=t) for t in texts]), timeout=10)]
    check(replies == ["echo:" + t for t in texts], "bidi: %r" % replies)
    print("ok bidi", flush=True)

    try:
        stub.Unary(Req(text="slow", delay_ms=3000), timeout=0.2)
        check(False, "a call past its deadline succeeded")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, "deadline: %s" % error.code())
    print("ok deadline", flush=True)

    future = stub.Unary.future(Req(text="hold", delay_ms=10000), timeout=30)
    time.sleep(0.3)
    future.cancel()
    check(future.cancelled(), "cancel did not cancel")
    print("ok cancel", flush=True)

    for micro_code, status in ((404, grpc.StatusCode.NOT_FOUND),
                               (400, grpc.StatusCode.INVALID_ARGUMENT),
                               (403, grpc.StatusCode.PERMISSION_DENIED),
                               (503, grpc.StatusCode.UNAVAILABLE),
                               (500, grpc.StatusCode.INTERNAL)):
        try:
            stub.Unary(Req(text="fail", fail_code=micro_code), timeout=10)
            check(False, "fail_code %d succeeded" % micro_code)
        except grpc.RpcError as error:
            check(error.code() == status, "fail_code %d became %s" % (micro_code, error.code()))
            check(error.details() == "asked to fail with %d: ünïcode" % micro_code,
                  "error message: %r" % error.details())
    print("ok error-status", flush=True)

    unknown = channel.unary_unary("/interop.Echo/Missing")
    try:
        unknown(b"", timeout=10)
        check(False, "an unknown method succeeded")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.UNIMPLEMENTED, "unknown method: %s" % error.code())
    print("ok unimplemented", flush=True)

    big = os.urandom(3 * MIB)
    big_channel = grpc.insecure_channel(address, options=[
        ("grpc.max_receive_message_length", 8 * MIB), ("grpc.max_send_message_length", 8 * MIB)])
    big_stub = interop_pb2_grpc.EchoStub(big_channel)
    reply = big_stub.Unary(Req(text="big", payload=big), timeout=30)
    check(reply.payload == big, "3 MiB payload came back changed (%d bytes)" % len(reply.payload))
    print("ok 3MiB", flush=True)

    try:
        big_stub.Unary(Req(text="huge", payload=b"x" * (5 * MIB)), timeout=30)
        check(False, "a 5 MiB message was accepted")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, "over the limit: %s" % error.code())
    print("ok over-limit", flush=True)

    health = channel.unary_unary("/grpc.health.v1.Health/Check")
    check(health(b"", timeout=10) == b"\x08\x01", "health check did not say SERVING")
    def named(service):  # HealthCheckRequest{service}
        return b"\x0a" + bytes([len(service)]) + service
    check(health(named(b"interop.Echo"), timeout=10) == b"\x08\x01",
          "health check of interop.Echo did not say SERVING")
    try:
        health(named(b"nowhere.Nothing"), timeout=10)
        check(False, "health check of an unknown service answered")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.NOT_FOUND,
              f"health check of an unknown service: {error.code()}, not NOT_FOUND")
    print("ok health", flush=True)

    compressed = stub.Unary(Req(text="zip", payload=b"z" * 100000), timeout=10,
                            compression=grpc.Compression.Gzip)
    check(compressed.payload == b"z" * 100000, "gzip request")
    print("ok gzip", flush=True)


def run_typed_client(address):
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=10)
    stub = interop_pb2_grpc.EchoStub(channel)
    Req = interop_pb2.EchoRequest

    reply = stub.Unary(Req(text="typed", payload=b"\x00\x01"), metadata=[("x-probe", "py")],
                       timeout=10)
    check((reply.text, reply.payload, reply.metadata) == ("echo:typed", b"\x00\x01", "py"),
          "typed unary: %r" % reply)
    print("ok typed-unary", flush=True)

    replies = list(stub.ServerStream(Req(text="t", count=4), timeout=10))
    check([(r.text, r.index) for r in replies] == [("t", i) for i in range(4)],
          "typed server stream: %r" % replies)
    print("ok typed-server-stream", flush=True)

    reply = stub.ClientStream(iter([Req(text=t) for t in ("x", "y")]), timeout=10)
    check((reply.text, reply.index) == ("xy", 2), "typed client stream: %r" % reply)
    print("ok typed-client-stream", flush=True)

    texts = ["p", "q", "r"]
    replies = [r.text for r in stub.Bidi(iter([Req(text=t) for t in texts]), timeout=10)]
    check(replies == ["echo:" + t for t in texts], "typed bidi: %r" % replies)
    print("ok typed-bidi", flush=True)

    try:
        stub.Unary(Req(fail_code=404), timeout=10)
        check(False, "fail_code 404 succeeded")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.NOT_FOUND, "typed error: %s" % error.code())
        check(error.details() == "typed handler fails with 404", "typed error: %r" % error.details())
    print("ok typed-error", flush=True)

    # Bytes that are not an EchoRequest: field 1 claims 5 bytes, 2 follow.
    raw = channel.unary_unary("/interop.Echo/Unary")
    try:
        raw(b"\x0a\x05ab", timeout=10)
        check(False, "malformed bytes were taken")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.INVALID_ARGUMENT, "malformed: %s" % error.code())
        check(error.details() == "cannot read the request of Echo.Unary: 4 bytes of "
              "application/protobuf are not a valid interop.EchoRequest",
              "malformed: %r" % error.details())
    print("ok typed-malformed", flush=True)


class Echo(interop_pb2_grpc.EchoServicer):
    def Unary(self, request, context):
        if request.delay_ms:
            deadline = time.time() + request.delay_ms / 1000.0
            while time.time() < deadline and context.is_active():
                time.sleep(0.01)
            if not context.is_active():
                print("cancelled " + request.text, flush=True)
                return interop_pb2.EchoReply()
        if request.fail_code:
            context.abort(grpc.StatusCode.NOT_FOUND, "python says no: %s" % request.text)
        probe = dict(context.invocation_metadata()).get("x-probe", "")
        context.send_initial_metadata([("x-answer", "python")])
        return interop_pb2.EchoReply(text="echo:" + request.text, payload=request.payload,
                                     metadata=probe)

    def ServerStream(self, request, context):
        for i in range(request.count):
            yield interop_pb2.EchoReply(text=request.text, index=i)

    def ClientStream(self, requests, context):
        texts = [r.text for r in requests]
        return interop_pb2.EchoReply(text="".join(texts), index=len(texts))

    def Bidi(self, requests, context):
        for request in requests:
            yield interop_pb2.EchoReply(text="echo:" + request.text)


def run_server():
    from concurrent import futures
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=[
        ("grpc.max_receive_message_length", 4 * MIB)])
    interop_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("port %d" % port, flush=True)
    sys.stdin.read()  # until the test closes our stdin
    server.stop(0)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "client":
        run_client(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "client-typed":
        run_typed_client(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "client-tls":
        run_tls_client(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 2 and sys.argv[1] == "server":
        threading.current_thread().name = "server"
        run_server()
    else:
        sys.exit("usage: grpc_peer.py client ADDRESS | client-tls ADDRESS CA_PEM | server")
