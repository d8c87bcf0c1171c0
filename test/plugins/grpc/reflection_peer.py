#!/usr/bin/python3
"""test/plugins/grpc/reflection_peer.py — a Python grpcio reflection client (stubs generated at
start from our reflection.proto with grpc_tools.protoc) facing a micro-cpp server that serves
<micro/grpc_reflection.hpp>. It knows nothing of interop.proto: it learns the services from the
server, as grpcurl or grpcui would, and calls one with messages built from what it learned.

  reflection_peer.py ADDRESS    prints "ok CASE" per case; exits 1 on the first failure,
                                printing "FAIL what was wrong".
"""
import os
import queue
import sys
import tempfile

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
GENERATED = tempfile.mkdtemp(prefix="micro-reflection-")
if protoc.main(["protoc", "-I" + HERE, "--python_out=" + GENERATED,
                "--grpc_python_out=" + GENERATED, os.path.join(HERE, "reflection.proto")]) != 0:
    sys.exit("reflection_peer.py: protoc failed on reflection.proto")
sys.path.insert(0, GENERATED)
import reflection_pb2 as pb  # noqa: E402
import reflection_pb2_grpc  # noqa: E402

NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]


def check(condition, what):
    if not condition:
        print("FAIL " + what, flush=True)
        sys.exit(1)


class Session:
    """One ServerReflectionInfo stream: each ask() sends a request and reads its answer."""

    def __init__(self, responses_of, requests):
        self.requests = requests
        self.responses = responses_of

    @classmethod
    def stub(cls, channel):  # the generated v1alpha stub
        requests = queue.Queue()
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        return cls(stub.ServerReflectionInfo(iter(requests.get, None), timeout=30), requests)

    @classmethod
    def path(cls, channel, path):  # any path, the same messages (v1 has v1alpha's)
        requests = queue.Queue()
        call = channel.stream_stream(path,
                                     request_serializer=pb.ServerReflectionRequest.SerializeToString,
                                     response_deserializer=pb.ServerReflectionResponse.FromString)
        return cls(call(iter(requests.get, None), timeout=30), requests)

    def ask(self, **fields):
        request = pb.ServerReflectionRequest(host="localhost", **fields)
        self.requests.put(request)
        response = next(self.responses)
        check(response.original_request == request,
              "original_request %r is not the request %r" % (response.original_request, request))
        return response

    def close(self):
        self.requests.put(None)
        for extra in self.responses:
            check(False, "an answer nobody asked for: %r" % extra)
        check(self.responses.code() == grpc.StatusCode.OK,
              "the stream ended with %s" % self.responses.code())


def files_of(response, what):
    check(response.WhichOneof("message_response") == "file_descriptor_response",
          "%s: no file_descriptor_response but %s" % (what, response))
    files = []
    for raw in response.file_descriptor_response.file_descriptor_proto:
        proto = descriptor_pb2.FileDescriptorProto()
        proto.ParseFromString(raw)
        files.append(proto)
    return files


def build_pool(session, symbol):
    """What a reflection client does: the file declaring `symbol`, then each dependency not
    sent yet by name, into a descriptor pool (dependencies added first)."""
    known = {}
    for proto in files_of(session.ask(file_containing_symbol=symbol), symbol):
        known[proto.name] = proto
    missing = [d for p in list(known.values()) for d in p.dependency if d not in known]
    while missing:
        name = missing.pop()
        if name in known:
            continue
        for proto in files_of(session.ask(file_by_filename=name), name):
            known[proto.name] = proto
            missing.extend(d for d in proto.dependency if d not in known)
    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add(name):
        if name in added:
            return
        for dependency in known[name].dependency:
            add(dependency)
        pool.Add(known[name])
        added.add(name)

    for name in known:
        add(name)
    return pool


def message_class(pool, full_name):
    descriptor = pool.FindMessageTypeByName(full_name)
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


def run(address):
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=10)
    session = Session.stub(channel)

    listed = session.ask(list_services="")
    check(listed.WhichOneof("message_response") == "list_services_response",
          "list_services answered %s" % listed)
    names = sorted(s.name for s in listed.list_services_response.service)
    check(names == ["interop.Echo", "interop.Mirror"], "services listed: %r" % names)
    print("ok list-services", flush=True)

    files = files_of(session.ask(file_containing_symbol="interop.Mirror"), "interop.Mirror")
    by_name = {f.name: f for f in files}
    check(set(by_name) == {"reflected.proto", "interop.proto"},
          "files for interop.Mirror: %r" % sorted(by_name))
    check(list(by_name["reflected.proto"].dependency) == ["interop.proto"],
          "reflected.proto imports %r" % list(by_name["reflected.proto"].dependency))
    mirror = by_name["reflected.proto"].service[0]
    check(mirror.name == "Mirror" and mirror.method[0].name == "Reflect"
          and mirror.method[0].input_type == ".interop.EchoRequest"
          and mirror.method[0].output_type == ".interop.Reflection",
          "the Mirror service described: %s" % mirror)
    print("ok file-containing-symbol", flush=True)

    for symbol, file in [("interop.Echo.Bidi", "interop.proto"),
                         ("interop.EchoRequest", "interop.proto"),
                         ("interop.Reflection.CountsEntry", "reflected.proto")]:
        got = [f.name for f in files_of(session.ask(file_containing_symbol=symbol), symbol)]
        check(got and got[-1] == file, "%s is declared in %r" % (symbol, got))
    print("ok symbols-of-every-kind", flush=True)

    got = [f.name for f in files_of(session.ask(file_by_filename="interop.proto"), "by name")]
    check(got == ["interop.proto"], "file_by_filename interop.proto: %r" % got)
    echo = files_of(session.ask(file_by_filename="interop.proto"), "by name")[0]
    check([m.name for m in echo.service[0].method] == ["Unary", "ServerStream", "ClientStream",
                                                       "Bidi"],
          "interop.proto's methods: %s" % echo.service[0])
    check(echo.service[0].method[3].client_streaming and echo.service[0].method[3].server_streaming,
          "Bidi is not marked streaming both ways")
    print("ok file-by-filename", flush=True)

    for question in [{"file_containing_symbol": "interop.Nope"},
                     {"file_by_filename": "nope.proto"},
                     {"file_containing_extension": pb.ExtensionRequest(
                         containing_type="interop.EchoRequest", extension_number=100)}]:
        answer = session.ask(**question)
        check(answer.WhichOneof("message_response") == "error_response",
              "%r was answered %s" % (question, answer))
        check(answer.error_response.error_code == NOT_FOUND,
              "%r: error code %d" % (question, answer.error_response.error_code))
        check(answer.error_response.error_message != "", "%r: no error message" % question)
    # The stream went on after the errors.
    numbers = session.ask(all_extension_numbers_of_type="interop.EchoRequest")
    check(numbers.WhichOneof("message_response") == "all_extension_numbers_response"
          and numbers.all_extension_numbers_response.base_type_name == "interop.EchoRequest"
          and list(numbers.all_extension_numbers_response.extension_number) == [],
          "all_extension_numbers_of_type: %s" % numbers)
    print("ok not-found-keeps-the-stream", flush=True)

    pool = build_pool(session, "interop.Mirror")
    session.close()
    request_class = message_class(pool, "interop.EchoRequest")
    reply_class = message_class(pool, "interop.Reflection")
    method = pool.FindMethodByName("interop.Mirror.Reflect")
    reflect = channel.unary_unary("/%s/%s" % (method.containing_service.full_name, method.name),
                                  request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=reply_class.FromString)
    reply = reflect(request_class(text="to be or not", count=3), timeout=10)
    check(reply.seen.text == "to be or not" and reply.seen.count == 3,
          "Reflect saw %s" % reply.seen)
    check(list(reply.words) == ["to", "be", "or", "not"], "words %r" % list(reply.words))
    check(dict(reply.counts) == {"to": 2, "be": 2, "or": 2, "not": 3}, "counts %r" % reply.counts)
    print("ok dynamic-call", flush=True)

    # The v1 revision of the service: same messages, same answers.
    v1 = Session.path(channel, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
    names = sorted(s.name for s in v1.ask(list_services="*").list_services_response.service)
    check(names == ["interop.Echo", "interop.Mirror"], "v1 services listed: %r" % names)
    missing = v1.ask(file_containing_symbol="no.Such")
    check(missing.error_response.error_code == NOT_FOUND, "v1 unknown symbol: %s" % missing)
    v1.close()
    print("ok v1", flush=True)

    # Bytes that are not a ServerReflectionRequest end the stream with INVALID_ARGUMENT.
    raw = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        list(raw(iter([b"\x0a\xff"]), timeout=10))
        check(False, "a malformed request was answered")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.INVALID_ARGUMENT,
              "a malformed request: %s %s" % (error.code(), error.details()))
    print("ok malformed", flush=True)
    channel.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    run(sys.argv[1])
