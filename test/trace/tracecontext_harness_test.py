#!/usr/bin/env python3
"""The W3C Trace Context test suite's checks (w3c/trace-context, test/test.py, levels 1 and 2),
played against examples/tracecontext behind `micro api`: real processes on free loopback ports
with one file registry and wrappers=trace (parentbased_always_on). Like the W3C harness, this
test POSTs a list of callbacks with the headers of each case to
http://<gateway>/tracecontext/TraceContext.Test, runs the HTTP server the service calls back,
and checks the traceparent and tracestate of every callback. Each test method is named after
the harness's case (or the rule it adds). Python's standard library only.

    tracecontext_harness_test.py <micro> <tracecontext-service>
"""
import http.client
import http.server
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

MICRO, SERVICE = sys.argv[1:3]
ENDPOINT = "/tracecontext/TraceContext.Test"

TRACE_ID = "12345678901234567890123456789012"
PARENT_ID = "1234567890123456"

TRACEPARENT_FORMAT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
# The harness's own tracestate reading: members split at OWS "," OWS, the first of a repeated
# key kept, an unreadable member an error.
KEY = r"[a-z][_0-9a-z\-\*\/]{0,255}|[0-9a-z][_0-9a-z\-\*\/]{0,240}@[a-z][_0-9a-z\-\*\/]{0,13}"
VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
MEMBER = re.compile(f"^({KEY})=({VALUE})$")
DELIMITER = re.compile(r"[ \t]*,[ \t]*")


class Traceparent:
    def __init__(self, value):
        match = TRACEPARENT_FORMAT.match(value)
        if not match:
            raise ValueError(f"not a traceparent: {value!r}")
        self.version, self.trace_id, self.parent_id, flags = match.groups()
        self.flags = int(flags, 16)
        if self.version != "00":
            raise ValueError(f"sent as version {self.version}, not 00: {value!r}")
        if self.trace_id == "0" * 32 or self.parent_id == "0" * 16:
            raise ValueError(f"an all-zero id: {value!r}")


def read_tracestate(values):
    members = {}
    for value in values:
        for member in DELIMITER.split(value):
            if not member:
                continue
            match = MEMBER.match(member)
            if not match:
                raise ValueError(f"unreadable tracestate member {member!r}")
            members.setdefault(match.group(1), match.group(2))
    return members


# ---- the processes ----

processes = []


def start(command, ready_word, timeout=20):
    """Starts a process and waits (bounded) for the line saying where it listens."""
    errors = tempfile.TemporaryFile()  # a pipe nobody reads could fill and stall it
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors)
    process.errors = errors
    processes.append(process)
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    line = b""
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(process.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
            if chunk == b"\n":
                if ready_word.encode() in line:
                    return process, line.decode().split()[-1]
                line = b""
    finally:
        selector.close()
    process.kill()
    process.wait()
    errors.seek(0)
    raise RuntimeError(f"{command[0]} did not start: {line!r} {errors.read()!r}")


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class Callbacks(http.server.ThreadingHTTPServer):
    """The harness's side: records the headers of every callback, by path."""
    daemon_threads = True

    def __init__(self):
        self.lock = threading.Condition()
        self.received = {}
        super().__init__(("127.0.0.1", 0), CallbackHandler)

    def url(self, scope, index):
        return f"http://127.0.0.1:{self.server_address[1]}/callback/{scope}.{index}"

    def wait_for(self, scope, count, timeout=10):
        with self.lock:
            self.lock.wait_for(lambda: all(f"{scope}.{i}" in self.received for i in range(count)),
                               timeout)
            return [self.received.get(f"{scope}.{i}") for i in range(count)]


class CallbackHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        with self.server.lock:
            self.server.received[self.path.rsplit("/", 1)[-1]] = {
                "headers": list(self.headers.items()),
                "body": body,
            }
            self.server.lock.notify_all()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"null")

    def log_message(self, *arguments):
        pass


gateway_address = None
callbacks = None


def post(headers, body):
    """POSTs `body` to the test service through the gateway; header pairs may repeat a name."""
    host, port = gateway_address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        connection.putrequest("POST", ENDPOINT, skip_accept_encoding=True)
        connection.putheader("Content-Type", "application/json")
        for name, value in headers:
            connection.putheader(name, value)
        data = json.dumps(body).encode()
        connection.putheader("Content-Length", str(len(data)))
        connection.endheaders(data)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class Harness(unittest.TestCase):
    maxDiff = None

    def make_request(self, headers, count=1):
        """Asks the service for `count` callbacks, sending `headers`; returns their headers."""
        scope = uuid.uuid4().hex
        status, body = post(headers, [{"url": callbacks.url(scope, i), "arguments": []}
                                      for i in range(count)])
        self.assertEqual(status, 200, f"the service answered {status}: {body[:300]!r}")
        received = callbacks.wait_for(scope, count)
        for index, callback in enumerate(received):
            self.assertIsNotNone(callback, f"no callback {index} for headers {headers!r}")
            self.assertEqual(callback["body"], b"[]", "the arguments, as JSON")
        return [callback["headers"] for callback in received]

    def traceparent(self, headers):
        fields = [(k, v) for k, v in headers if k.lower() == "traceparent"]
        self.assertEqual(len(fields), 1, f"expected one traceparent, got {fields!r}")
        self.assertEqual(fields[0][0], "traceparent", "sent with a lowercase name")
        return Traceparent(fields[0][1])

    def tracestate(self, headers):
        fields = [(k, v) for k, v in headers if k.lower() == "tracestate"]
        for name, _ in fields:
            self.assertEqual(name, "tracestate", "sent with a lowercase name")
        return read_tracestate(v for _, v in fields)

    def context(self, headers):
        callback = self.make_request(headers)[0]
        return self.traceparent(callback), self.tracestate(callback)

    def trace_id(self, headers):
        return self.context(headers)[0].trace_id

    def tp(self, flags="01", version="00"):
        return ["traceparent", f"{version}-{TRACE_ID}-{PARENT_ID}-{flags}"]

    def unsampled(self):
        return self.tp("00")

    # ---- traceparent (level 1) ----

    def test_both_traceparent_and_tracestate_missing(self):
        traceparent, tracestate = self.context([])
        self.assertEqual(tracestate, {})

    def test_traceparent_included_tracestate_missing(self):
        traceparent, _ = self.context([self.tp()])
        self.assertEqual(traceparent.trace_id, TRACE_ID)
        self.assertNotEqual(traceparent.parent_id, PARENT_ID)

    def test_traceparent_duplicated(self):
        trace_id = self.trace_id([
            ["traceparent", f"00-12345678901234567890123456789011-{PARENT_ID}-01"],
            ["traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"]])
        self.assertNotIn(trace_id, ("12345678901234567890123456789011", TRACE_ID))

    def test_traceparent_header_name(self):
        for name in ("trace-parent", "trace.parent"):
            self.assertNotEqual(self.trace_id([[name, self.tp()[1]]]), TRACE_ID, name)

    def test_traceparent_header_name_valid_casing(self):
        for name in ("TraceParent", "TrAcEpArEnT", "TRACEPARENT"):
            self.assertEqual(self.trace_id([[name, self.tp()[1]]]), TRACE_ID, name)

    def test_traceparent_version_0x00(self):
        for value in (f"00-{TRACE_ID}-{PARENT_ID}-01.",
                      f"00-{TRACE_ID}-{PARENT_ID}-01-what-the-future-will-be-like"):
            self.assertNotEqual(self.trace_id([["traceparent", value]]), TRACE_ID, value)

    def test_traceparent_version_0xcc(self):
        self.assertEqual(self.trace_id([self.tp(version="cc")]), TRACE_ID)
        self.assertEqual(self.trace_id([["traceparent", f"cc-{TRACE_ID}-{PARENT_ID}-01-what-the-"
                                                        "future-will-be-like"]]), TRACE_ID)
        self.assertNotEqual(self.trace_id([["traceparent", f"cc-{TRACE_ID}-{PARENT_ID}-01.what-"
                                                           "the-future-will-be-like"]]), TRACE_ID)

    def test_traceparent_version_0xff(self):
        self.assertNotEqual(self.trace_id([self.tp(version="ff")]), TRACE_ID)

    def test_traceparent_version_illegal_characters(self):
        for version in (".0", "0."):
            self.assertNotEqual(self.trace_id([self.tp(version=version)]), TRACE_ID, version)

    def test_traceparent_version_too_long(self):
        for version in ("000", "0000"):
            self.assertNotEqual(self.trace_id([self.tp(version=version)]), TRACE_ID, version)

    def test_traceparent_version_too_short(self):
        self.assertNotEqual(self.trace_id([self.tp(version="0")]), TRACE_ID)

    def test_traceparent_trace_id_all_zero(self):
        self.assertNotEqual(self.trace_id([["traceparent", f"00-{'0' * 32}-{PARENT_ID}-01"]]),
                            "0" * 32)

    def test_traceparent_trace_id_illegal_characters(self):
        for trace_id in (".2345678901234567890123456789012", "1234567890123456789012345678901."):
            self.assertNotEqual(
                self.trace_id([["traceparent", f"00-{trace_id}-{PARENT_ID}-01"]]), trace_id)

    def test_traceparent_trace_id_too_long(self):
        got = self.trace_id([["traceparent", f"00-{TRACE_ID}3-{PARENT_ID}-01"]])
        self.assertNotIn(got, (TRACE_ID, "23456789012345678901234567890123"))

    def test_traceparent_trace_id_too_short(self):
        got = self.trace_id([["traceparent", f"00-{TRACE_ID[:31]}-{PARENT_ID}-01"]])
        self.assertFalse(got.startswith(TRACE_ID[:31]))

    def test_traceparent_parent_id_all_zero(self):
        self.assertNotEqual(self.trace_id([["traceparent", f"00-{TRACE_ID}-{'0' * 16}-01"]]),
                            TRACE_ID)

    def test_traceparent_parent_id_illegal_characters(self):
        for parent_id in (".234567890123456", "123456789012345."):
            self.assertNotEqual(
                self.trace_id([["traceparent", f"00-{TRACE_ID}-{parent_id}-01"]]), TRACE_ID)

    def test_traceparent_parent_id_too_long(self):
        self.assertNotEqual(self.trace_id([["traceparent", f"00-{TRACE_ID}-{PARENT_ID}7-01"]]),
                            TRACE_ID)

    def test_traceparent_parent_id_too_short(self):
        self.assertNotEqual(self.trace_id([["traceparent", f"00-{TRACE_ID}-{PARENT_ID[:15]}-01"]]),
                            TRACE_ID)

    def test_traceparent_trace_flags_illegal_characters(self):
        for flags in (".0", "0."):
            self.assertNotEqual(self.trace_id([self.tp(flags)]), TRACE_ID, flags)

    def test_traceparent_trace_flags_too_long(self):
        self.assertNotEqual(self.trace_id([self.tp("001")]), TRACE_ID)

    def test_traceparent_trace_flags_too_short(self):
        self.assertNotEqual(self.trace_id([self.tp("1")]), TRACE_ID)

    def test_traceparent_ows_handling(self):
        value = self.tp()[1]
        for sent in (" " + value, "\t" + value, value + " ", value + "\t", "\t " + value + " \t"):
            self.assertEqual(self.trace_id([["traceparent", sent]]), TRACE_ID, repr(sent))

    def test_traceparent_uppercase_hex_is_invalid(self):
        self.assertNotEqual(self.trace_id([["traceparent", f"00-{'ABCDEF' + TRACE_ID[6:]}-"
                                                           f"{PARENT_ID}-01"]]),
                            "abcdef" + TRACE_ID[6:])

    def test_traceparent_sampled_flag_followed(self):
        # parentbased_always_on: the caller's decision is kept, either way.
        self.assertEqual(self.context([self.tp("01")])[0].flags & 1, 1)
        self.assertEqual(self.context([self.tp("00")])[0].flags & 1, 0)

    def test_traceparent_unknown_flags_sent_as_zero(self):
        self.assertEqual(self.context([self.tp("f9")])[0].flags, 0x01)

    # ---- tracestate (level 1) ----

    def test_tracestate_included_traceparent_missing(self):
        _, tracestate1 = self.context([["tracestate", "foo=1"]])
        _, tracestate2 = self.context([["tracestate", "foo=1,bar=2"]])
        self.assertEqual(len(tracestate1), len(tracestate2))
        self.assertNotIn("foo", tracestate2)

    def test_tracestate_dropped_with_an_invalid_traceparent(self):
        traceparent, tracestate = self.context([self.tp(version="ff"), ["tracestate", "foo=1"]])
        self.assertNotEqual(traceparent.trace_id, TRACE_ID)
        self.assertEqual(tracestate, {})

    def test_tracestate_included_traceparent_included(self):
        traceparent, tracestate = self.context([self.unsampled(), ["tracestate", "foo=1,bar=2"]])
        self.assertEqual(traceparent.trace_id, TRACE_ID)
        self.assertEqual(tracestate, {"foo": "1", "bar": "2"})

    def test_tracestate_header_name(self):
        for name in ("trace-state", "trace.state"):
            self.assertNotIn("foo", self.context([self.unsampled(), [name, "foo=1"]])[1], name)

    def test_tracestate_header_name_valid_casing(self):
        for name in ("TraceState", "TrAcEsTaTe", "TRACESTATE"):
            self.assertEqual(self.context([self.unsampled(), [name, "foo=1"]])[1], {"foo": "1"})

    def test_tracestate_empty_header(self):
        traceparent, tracestate = self.context([self.unsampled(), ["tracestate", ""]])
        self.assertEqual(traceparent.trace_id, TRACE_ID)
        self.assertEqual(tracestate, {})
        for fields in ([["tracestate", "foo=1"], ["tracestate", ""]],
                       [["tracestate", ""], ["tracestate", "foo=1"]]):
            traceparent, tracestate = self.context([self.unsampled()] + fields)
            self.assertEqual(traceparent.trace_id, TRACE_ID)
            self.assertEqual(tracestate, {"foo": "1"})

    def test_tracestate_multiple_headers_different_keys(self):
        callback = self.make_request([self.unsampled(), ["tracestate", "foo=1,bar=2"],
                                      ["tracestate", "rojo=1,congo=2"], ["tracestate", "baz=3"]])[0]
        self.assertEqual(self.traceparent(callback).trace_id, TRACE_ID)
        joined = ",".join(v for k, v in callback if k.lower() == "tracestate")
        positions = [joined.index(member) for member in
                     ("foo=1", "bar=2", "rojo=1", "congo=2", "baz=3")]
        self.assertEqual(positions, sorted(positions), joined)

    def test_tracestate_duplicated_keys(self):
        for fields in ([["tracestate", "foo=1,foo=1"]], [["tracestate", "foo=1,foo=2"]],
                       [["tracestate", "foo=1"], ["tracestate", "foo=1"]],
                       [["tracestate", "foo=1"], ["tracestate", "foo=2"]]):
            traceparent, tracestate = self.context([self.unsampled()] + fields)
            self.assertEqual(traceparent.trace_id, TRACE_ID)
            self.assertNotIn("foo", tracestate, fields)

    def test_tracestate_all_allowed_characters(self):
        key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/"
        value = "".join(chr(c) for c in range(0x20, 0x7f) if chr(c) not in ",=")
        for member_key in (key, key + "@a-z0-9_-*/"):
            tracestate = self.context([self.unsampled(), ["tracestate", f"{member_key}={value}"]])[1]
            self.assertEqual(tracestate.get(member_key), value)

    def test_tracestate_ows_handling(self):
        for value in ("foo=1 \t , \t bar=2, \t baz=3", "foo=1\t \t,\t \tbar=2,\t \tbaz=3"):
            tracestate = self.context([self.unsampled(), ["tracestate", value]])[1]
            self.assertEqual(tracestate, {"foo": "1", "bar": "2", "baz": "3"}, repr(value))
        for value in (" foo=1", "\tfoo=1", "foo=1 ", "foo=1\t", "\t foo=1 \t"):
            traceparent, tracestate = self.context([self.unsampled(), ["tracestate", value]])
            self.assertEqual(traceparent.trace_id, TRACE_ID)
            self.assertEqual(tracestate, {"foo": "1"}, repr(value))

    def test_tracestate_key_illegal_characters(self):
        for value, key in (("foo =1", "foo "), ("FOO=1", "FOO"), ("foo.bar=1", "foo.bar")):
            self.assertNotIn(key, self.context([self.unsampled(), ["tracestate", value]])[1])

    def test_tracestate_key_illegal_vendor_format(self):
        for value in ("foo@=1,bar=2", "@foo=1,bar=2", "foo@@bar=1,bar=2", "foo@bar@baz=1,bar=2"):
            self.assertNotIn("bar", self.context([self.unsampled(), ["tracestate", value]])[1])

    def test_tracestate_member_count_limit(self):
        fields = [["tracestate", ",".join(f"bar{i:02}={i:02}" for i in range(1, 11))],
                  ["tracestate", ",".join(f"bar{i:02}={i:02}" for i in range(11, 21))],
                  ["tracestate", ",".join(f"bar{i:02}={i:02}" for i in range(21, 31))],
                  ["tracestate", "bar31=31,bar32=32"]]
        tracestate = self.context([self.unsampled()] + fields)[1]
        self.assertEqual(tracestate.get("bar01"), "01")
        self.assertEqual(len(tracestate), 32)
        fields[-1][1] += ",bar33=33"
        self.assertNotIn("bar01", self.context([self.unsampled()] + fields)[1])

    def test_tracestate_key_length_limit(self):
        for long_member, kept in (("z" * 256 + "=1", True), ("z" * 257 + "=1", False),
                                  ("t" * 241 + "@" + "v" * 14 + "=1", True),
                                  ("t" * 242 + "@v=1", False), ("t@" + "v" * 15 + "=1", False)):
            tracestate = self.context([self.unsampled(), ["tracestate", "foo=1"],
                                       ["tracestate", long_member]])[1]
            self.assertEqual("foo" in tracestate, kept, long_member[:20])

    def test_tracestate_value_illegal_characters(self):
        self.assertNotIn("foo", self.context([self.unsampled(), ["tracestate", "foo=bar=baz"]])[1])
        tracestate = self.context([self.unsampled(), ["tracestate", "foo=,bar=3"]])[1]
        self.assertNotIn("foo", tracestate)
        self.assertNotIn("bar", tracestate)

    def test_tracestate_truncated_to_512_whole_members_large_first(self):
        # 250-character members: a, b, c (752 with commas) lose c; then a 300-character list
        # with one 200-character member in the middle loses that one first.
        members = [f"{key}={'v' * 248}" for key in "abc"]
        tracestate = self.context([self.unsampled()] + [["tracestate", m] for m in members])[1]
        self.assertEqual(sorted(tracestate), ["a", "b"])
        small = [f"s{i}={'v' * 60}" for i in range(5)]  # 5 × 63
        big = f"big={'v' * 200}"
        value = ",".join(small[:2] + [big] + small[2:])  # 524 characters
        tracestate = self.context([self.unsampled(), ["tracestate", value]])[1]
        self.assertEqual(list(tracestate), [f"s{i}" for i in range(5)])

    # ---- level 2: the random trace id flag ----

    def test_propagates_random_flag(self):
        traceparent, _ = self.context([self.tp("02")])
        self.assertEqual(traceparent.trace_id, TRACE_ID)
        self.assertNotEqual(traceparent.parent_id, PARENT_ID)
        self.assertEqual(traceparent.flags & 0x02, 0x02)

    def test_random_flag_unset_stays_unset(self):
        traceparent, _ = self.context([self.tp("01")])
        self.assertEqual(traceparent.trace_id, TRACE_ID)
        self.assertEqual(traceparent.flags & 0x02, 0)

    def test_random_flag_set_on_a_new_trace(self):
        # Our trace ids are random: a trace we start says so.
        for headers in ([], [self.tp(version="ff")]):
            self.assertEqual(self.context(headers)[0].flags & 0x02, 0x02, headers)

    # ---- several callbacks (the harness's AdvancedTest) ----

    def test_multiple_requests_with_valid_traceparent(self):
        parents = [self.traceparent(h) for h in self.make_request([self.tp()], 3)]
        self.assertEqual({p.trace_id for p in parents}, {TRACE_ID})
        self.assertEqual(len({p.parent_id for p in parents}), 3)

    def test_multiple_requests_without_traceparent(self):
        parents = [self.traceparent(h) for h in self.make_request([], 3)]
        self.assertEqual(len({p.trace_id for p in parents}), 1)  # one new trace
        self.assertEqual(len({p.parent_id for p in parents}), 3)

    def test_multiple_requests_with_illegal_traceparent(self):
        parents = [self.traceparent(h) for h in
                   self.make_request([["traceparent", f"00-{'0' * 32}-{PARENT_ID}-01"]], 3)]
        self.assertNotIn("0" * 32, {p.trace_id for p in parents})
        self.assertEqual(len({p.parent_id for p in parents}), 3)


def read_spans(path):
    spans = []
    if os.path.exists(path):
        with open(path) as lines:
            for line in lines:
                for resource_spans in json.loads(line)["resourceSpans"]:
                    for scope_spans in resource_spans["scopeSpans"]:
                        for span in scope_spans["spans"]:
                            span["attrs"] = {a["key"]: next(iter(a["value"].values()))
                                             for a in span.get("attributes", [])}
                            spans.append(span)
    return spans


def main():
    global gateway_address, callbacks
    failed = 0
    with tempfile.TemporaryDirectory() as work:
        registry = f"--registry=file?dir={work}/registry"
        spans_file = f"{work}/service.jsonl"
        callbacks = Callbacks()
        serving = threading.Thread(target=callbacks.serve_forever, daemon=True)
        serving.start()
        try:
            service, _ = start([SERVICE, registry, "--wrappers=trace?sampler=parentbased_always_on"
                                f"&exporter=file&file={spans_file}"], "listening on")
            gateway, gateway_address = start(
                [MICRO, registry, "--wrappers=trace?sampler=parentbased_always_on&exporter=none",
                 "api", "--address=127.0.0.1:0"], "micro api listening on")

            result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(
                unittest.defaultTestLoader.loadTestsFromTestCase(Harness))
            failed += len(result.failures) + len(result.errors)

            # Bad instructions get a 400 that says what is wrong and where.
            status, body = post([], [{"url": "ftp://x"}])
            error = json.loads(body)
            if status != 400 or "item 0: url \"ftp://x\"" not in error.get("detail", ""):
                failed += 1
                print(f"FAIL: bad url: {status} {body!r}")
            status, body = post([], {"url": "x"})
            if status != 400 or "got a JSON object" not in json.loads(body).get("detail", ""):
                failed += 1
                print(f"FAIL: not a list: {status} {body!r}")
            # A callback that cannot be made is a 502 naming it; the others are still made.
            scope = uuid.uuid4().hex
            closed = socket.socket()
            closed.bind(("127.0.0.1", 0))
            unreachable = f"http://127.0.0.1:{closed.getsockname()[1]}/nobody"
            closed.close()
            status, body = post([], [{"url": unreachable}, {"url": callbacks.url(scope, 0)}])
            detail = json.loads(body).get("detail", "")
            if status != 502 or f"POST {unreachable}" not in detail or \
                    callbacks.wait_for(scope, 1)[0] is None:
                failed += 1
                print(f"FAIL: unreachable callback: {status} {body!r}")
            # A good one answers with each callback's status.
            scope = uuid.uuid4().hex
            status, body = post([], [{"url": callbacks.url(scope, 0), "arguments": [1, "two"]}])
            if status != 200 or json.loads(body) != [{"url": callbacks.url(scope, 0),
                                                        "status": 200}] or \
                    callbacks.wait_for(scope, 1)[0]["body"] != b'[1,"two"]':
                failed += 1
                print(f"FAIL: the answer: {status} {body!r}")

            for process in (gateway, service):
                code = stop(process)
                if code != 0:
                    process.errors.seek(0)
                    failed += 1
                    print(f"FAIL: {process.args[0]} exited with {code}: "
                          f"{process.errors.read()[-2000:]!r}")

            # The service's CLIENT spans, flushed at its stop: one per callback, with the HTTP
            # client conventions' attributes, each the child of a SERVER span of the call; the
            # unreachable one an error.
            spans = read_spans(spans_file)
            prefix = f"http://127.0.0.1:{callbacks.server_address[1]}/callback/"
            clients = [s for s in spans if s["kind"] == 3 and s["name"] == "POST"
                       and s["attrs"].get("url.full", "").startswith(prefix)]
            servers = {s["spanId"] for s in spans if s["kind"] == 2}
            complete = [s for s in clients if s["attrs"].get("http.request.method") == "POST"
                        and s["attrs"].get("server.address") == "127.0.0.1"
                        and str(s["attrs"].get("server.port")) == str(callbacks.server_address[1])
                        and str(s["attrs"].get("http.response.status_code")) == "200"
                        and s.get("parentSpanId") in servers]
            if not clients or len(complete) != len(clients):
                failed += 1
                print(f"FAIL: CLIENT spans: {len(complete)} of {len(clients)} complete; "
                      f"first {clients[:1]!r}")
            else:
                print(f"ok: {len(clients)} CLIENT spans, each under a SERVER span")
            failing = [s for s in spans if s["attrs"].get("url.full") == unreachable]
            if len(failing) != 1 or failing[0]["attrs"].get("error.type") != "connection_error" \
                    or failing[0].get("status", {}).get("code") != 2:
                failed += 1
                print(f"FAIL: the unreachable callback's span: {failing!r}")
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            callbacks.shutdown()
            callbacks.server_close()
    print("FAILED" if failed else "PASSED", f"({failed} failures)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
