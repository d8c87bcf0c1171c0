#!/usr/bin/python3
"""test/trace/otlp_grpc_receiver.py — an OTLP/gRPC receiver in Python grpcio: TraceService with
stubs generated at start (grpc_tools.protoc) from the official opentelemetry-proto schema, so
what our exporter sends is decoded by a third party, strictly (unknown fields are a failure).

  otlp_grpc_receiver.py PROTO_DIR SCRIPT

Serves on a free loopback port and prints "port N". Each Export prints one line
"export {JSON}" (the decoded spans, resource, scope, metadata, whether a deadline came, and the
answer given) and is answered by the next SCRIPT item (comma-separated; OK once it runs out):
  OK  UNAVAILABLE  ABORTED  ALREADY_EXISTS  INVALID_ARGUMENT  RESOURCE_EXHAUSTED (no RetryInfo)
  RETRY_AFTER_MS=N (RESOURCE_EXHAUSTED with RetryInfo retry_delay N ms)  PARTIAL (1 rejected)
A request that is not decoded strictly prints "FAIL why". Runs until its stdin closes.
"""
import json
import os
import sys
import tempfile
import threading
from concurrent import futures

import grpc
from grpc_tools import protoc

PROTOS = [
    "opentelemetry/proto/common/v1/common.proto",
    "opentelemetry/proto/resource/v1/resource.proto",
    "opentelemetry/proto/trace/v1/trace.proto",
    "opentelemetry/proto/collector/trace/v1/trace_service.proto",
]


def varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, wire_type, payload):
    if wire_type == 0:
        return varint(number << 3) + varint(payload)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def status_with_retry_info(code, message, delay_ms):
    """google.rpc.Status{code, message, details: [Any(RetryInfo{retry_delay})]} by hand: the
    googleapis protos are not part of grpcio."""
    duration = field(1, 0, delay_ms // 1000) + field(2, 0, (delay_ms % 1000) * 1000000)
    retry_info = field(1, 2, duration)
    any_detail = field(1, 2, b"type.googleapis.com/google.rpc.RetryInfo") + field(2, 2, retry_info)
    return field(1, 0, code) + field(2, 2, message.encode()) + field(3, 2, any_detail)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    proto_dir, script = sys.argv[1], [s for s in sys.argv[2].split(",") if s]
    generated = tempfile.mkdtemp(prefix="micro-otlp-grpc-")
    if protoc.main(["protoc", "-I" + proto_dir, "--python_out=" + generated,
                    "--grpc_python_out=" + generated] + [os.path.join(proto_dir, p) for p in PROTOS]) != 0:
        sys.exit("otlp_grpc_receiver.py: protoc failed on the OTLP schema in " + proto_dir)
    sys.path.insert(0, generated)
    from google.protobuf.descriptor import FieldDescriptor
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    def unknown_fields(message, path):
        problems = []
        if len(message.UnknownFields()):
            problems.append("%s (%s) has unknown fields %s" % (
                path, message.DESCRIPTOR.full_name, [f.field_number for f in message.UnknownFields()]))
        for descriptor, value in message.ListFields():
            if descriptor.type != FieldDescriptor.TYPE_MESSAGE:
                continue
            items = value if descriptor.label == FieldDescriptor.LABEL_REPEATED else [value]
            if descriptor.message_type.GetOptions().map_entry:
                continue
            for index, item in enumerate(items):
                problems += unknown_fields(item, "%s.%s[%d]" % (path, descriptor.name, index))
        return problems

    def any_value(value):
        which = value.WhichOneof("value")
        if which == "array_value":
            return [any_value(item) for item in value.array_value.values]
        return getattr(value, which) if which else None

    def attributes(key_values):
        return {item.key: any_value(item.value) for item in key_values}

    lock = threading.Lock()

    class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            with lock:
                answer = script.pop(0) if script else "OK"
            problems = unknown_fields(request, "request")
            if problems:
                print("FAIL " + "; ".join(problems), flush=True)
            summary = {
                "answer": answer,
                "metadata": {k: v for k, v in context.invocation_metadata()
                             if not k.endswith("-bin")},
                "deadline": context.time_remaining() is not None,
                "resources": [],
            }
            for resource_spans in request.resource_spans:
                resource = {"attributes": attributes(resource_spans.resource.attributes), "scopes": []}
                for scope_spans in resource_spans.scope_spans:
                    resource["scopes"].append({
                        "name": scope_spans.scope.name,
                        "spans": [{
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "kind": span.kind,
                            "attributes": attributes(span.attributes),
                            "status": span.status.code,
                        } for span in scope_spans.spans],
                    })
                summary["resources"].append(resource)
            print("export " + json.dumps(summary, sort_keys=True), flush=True)
            if answer == "OK":
                return trace_service_pb2.ExportTraceServiceResponse()
            if answer == "PARTIAL":
                response = trace_service_pb2.ExportTraceServiceResponse()
                response.partial_success.rejected_spans = 1
                response.partial_success.error_message = "span too old"
                return response
            if answer.startswith("RETRY_AFTER_MS="):
                delay = int(answer.split("=", 1)[1])
                context.set_trailing_metadata((("grpc-status-details-bin", status_with_retry_info(
                    grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], "slow down", delay)),))
                context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
                context.set_details("slow down")
                return trace_service_pb2.ExportTraceServiceResponse()
            context.set_code(getattr(grpc.StatusCode, answer))
            context.set_details("scripted " + answer)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("port %d" % port, flush=True)
    sys.stdin.read()  # until the test closes our stdin
    server.stop(grace=1).wait()


if __name__ == "__main__":
    main()
