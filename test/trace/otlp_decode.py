#!/usr/bin/python3
"""Decodes an OTLP ExportTraceServiceRequest STRICTLY against the official schema and prints a
normalised JSON summary for the C++ exporter test to compare.

usage: otlp_decode.py json|protobuf PAYLOAD_FILE PROTO_DIR

The .proto files are compiled with protoc into a temporary directory each run. For JSON, the
OTLP rules beyond protobuf's JSON mapping are checked too: ids are lowercase hex (converted to
base64 for json_format, which expects bytes that way), keys are lowerCamelCase, enums are
integers, 64-bit integers are strings; unknown fields are errors.
"""
import base64
import json
import os
import re
import subprocess
import sys
import tempfile

PROTOS = [
    "opentelemetry/proto/common/v1/common.proto",
    "opentelemetry/proto/resource/v1/resource.proto",
    "opentelemetry/proto/trace/v1/trace.proto",
    "opentelemetry/proto/collector/trace/v1/trace_service.proto",
]
ID_KEYS = {"traceId": 16, "spanId": 8, "parentSpanId": 8}
INT64_STRING_KEYS = {"startTimeUnixNano", "endTimeUnixNano", "timeUnixNano", "intValue"}
ENUM_KEYS = {"kind", "code"}


def fail(message):
    print("otlp_decode: " + message, file=sys.stderr)
    sys.exit(1)


def check_otlp_json(node, path="$"):
    """Checks the OTLP-specific JSON rules and converts hex ids to base64 in place."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            check_otlp_json(item, "%s[%d]" % (path, index))
        return
    if not isinstance(node, dict):
        return
    for key in list(node):
        value = node[key]
        where = path + "." + key
        if not re.fullmatch(r"[a-z][A-Za-z0-9]*", key):
            fail("%s: key is not lowerCamelCase" % where)
        if key in ID_KEYS:
            if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{%d}" % (2 * ID_KEYS[key]), value):
                fail("%s: %r is not %d lowercase hex digits" % (where, value, 2 * ID_KEYS[key]))
            node[key] = base64.b64encode(bytes.fromhex(value)).decode()
        elif key in INT64_STRING_KEYS:
            if not isinstance(value, str) or not re.fullmatch(r"-?[0-9]+", value):
                fail("%s: 64-bit integer %r is not a decimal string" % (where, value))
        elif key in ENUM_KEYS and not isinstance(value, int):
            fail("%s: enum %r is not an integer" % (where, value))
        else:
            check_otlp_json(value, where)


def any_value(value):
    which = value.WhichOneof("value")
    if which == "array_value":
        return {"array": [any_value(item) for item in value.array_value.values]}
    if which is None:
        fail("an AnyValue holds nothing")
    return {which.replace("_value", ""): getattr(value, which)}


def attributes(key_values):
    return {item.key: any_value(item.value) for item in key_values}


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("json", "protobuf"):
        fail("usage: otlp_decode.py json|protobuf PAYLOAD_FILE PROTO_DIR")
    mode, payload_path, proto_dir = sys.argv[1:]
    with tempfile.TemporaryDirectory() as generated:
        subprocess.run(["protoc", "-I", proto_dir, "--python_out=" + generated] + PROTOS, check=True)
        sys.path.insert(0, generated)
        from google.protobuf import json_format
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        request = trace_service_pb2.ExportTraceServiceRequest()
        with open(payload_path, "rb") as payload:
            data = payload.read()
        if mode == "json":
            document = json.loads(data)
            check_otlp_json(document)
            json_format.ParseDict(document, request, ignore_unknown_fields=False)
        else:
            request.ParseFromString(data)
            # A field the schema does not define, or one sent with the wrong wire type, lands
            # among the unknown fields.
            check_no_unknown_fields(request)

    summary = {"resources": []}
    for resource_spans in request.resource_spans:
        resource = {"attributes": attributes(resource_spans.resource.attributes), "scopes": []}
        for scope_spans in resource_spans.scope_spans:
            scope = {"name": scope_spans.scope.name, "version": scope_spans.scope.version, "spans": []}
            for span in scope_spans.spans:
                scope["spans"].append({
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "trace_state": span.trace_state,
                    "flags": span.flags,
                    "name": span.name,
                    "kind": span.kind,
                    "start": str(span.start_time_unix_nano),
                    "end": str(span.end_time_unix_nano),
                    "attributes": attributes(span.attributes),
                    "dropped_attributes": span.dropped_attributes_count,
                    "events": [{"time": str(event.time_unix_nano), "name": event.name,
                                "attributes": attributes(event.attributes)} for event in span.events],
                    "dropped_events": span.dropped_events_count,
                    "links": [{"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex(),
                               "trace_state": link.trace_state, "flags": link.flags,
                               "attributes": attributes(link.attributes)} for link in span.links],
                    "dropped_links": span.dropped_links_count,
                    "status": {"code": span.status.code, "message": span.status.message},
                })
            resource["scopes"].append(scope)
        summary["resources"].append(resource)
    print(json.dumps(summary, sort_keys=True))


def check_no_unknown_fields(message):
    """Fails on any field the schema does not define, at any depth."""
    from google.protobuf.descriptor import FieldDescriptor
    unknown = message.UnknownFields()
    if len(unknown):
        fail("%s has %d unknown field(s), numbers %s" % (
            message.DESCRIPTOR.full_name, len(unknown), [field.field_number for field in unknown]))
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if field.label == FieldDescriptor.LABEL_REPEATED:
            for item in value:
                check_no_unknown_fields(item)
        else:
            check_no_unknown_fields(value)


if __name__ == "__main__":
    main()
