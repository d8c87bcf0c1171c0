#!/usr/bin/env python3
"""The greeter with wrappers=trace across two processes: one connected trace from the client
call, through its attempt, the server handler, a child span in the handler and a publish, to
the subscriber's consumer span (child of the producer and linked to it) — read from the file
exporter's OTLP JSON, and drawn by `micro trace`. With a fourth argument `nats`, the event
goes through a real nats-server, so traceparent must travel in NATS message headers; with
--transport=http the call goes over HTTP, so it must travel in HTTP headers.

    greeter_trace_test.py SERVER CLIENT MICRO [nats] [--transport=http]"""
import json
import signal
import subprocess
import sys
import tempfile

transport = "tcp"
for argument in list(sys.argv):
    if argument.startswith("--transport="):
        sys.argv.remove(argument)
        transport = argument.split("=", 1)[1]
server_binary, client_binary, micro = sys.argv[1:4]
use_nats = len(sys.argv) > 4 and sys.argv[4] == "nats"
failures = []


def start_nats():
    import socket
    import time
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("nats-server did not start")
            time.sleep(0.05)


def check(condition, message):
    if not condition:
        failures.append(message)
        print("FAIL:", message)


with tempfile.TemporaryDirectory() as work:
    spans_file = f"{work}/spans.jsonl"
    flags = [f"--registry=file?dir={work}/registry", f"--transport={transport}",
             f"--wrappers=trace?exporter=file&file={spans_file}&sampler=always_on"]
    nats = None
    if use_nats:
        nats, port = start_nats()
        flags.append(f"--broker=nats://127.0.0.1:{port}")
    server = subprocess.Popen([server_binary, *flags], stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        check("listening on" in line, f"server did not start: {line!r}")
        client = subprocess.run([client_binary, *flags, "1", "Ada"], capture_output=True,
                                text=True, timeout=30)
        check(client.returncode == 0, f"client failed: {client.stderr}")
    finally:
        server.send_signal(signal.SIGTERM)  # graceful stop flushes the server's spans
        server.wait(timeout=30)
        if nats:
            nats.terminate()
            nats.wait(timeout=10)

    spans = []
    with open(spans_file) as lines:
        for line in lines:
            for resource_spans in json.loads(line)["resourceSpans"]:
                service = {a["key"]: a["value"] for a in resource_spans["resource"]["attributes"]}
                for scope_spans in resource_spans["scopeSpans"]:
                    for span in scope_spans["spans"]:
                        span["service"] = service["service.name"]["stringValue"]
                        spans.append(span)
    by_name = {span["name"]: span for span in spans}
    print(sorted(by_name))
    expected = {"Greeter.Hello": 3, "Greeter.Hello attempt": 3, "Greeter.Compose": 1,
                "greeter.greeted publish": 4, "greeter.greeted process": 5}
    for name, kind in expected.items():
        check(name in by_name, f"no span {name}")
    check(len({span["traceId"] for span in spans}) == 1, "the spans are not one trace")
    if not failures:
        client_spans = [s for s in spans if s["name"] == "Greeter.Hello" and s["kind"] == 3]
        server_spans = [s for s in spans if s["name"] == "Greeter.Hello" and s["kind"] == 2]
        check(len(client_spans) == 1 and len(server_spans) == 1, "one client and one server span")
        call, server_span = client_spans[0], server_spans[0]
        attempt = by_name["Greeter.Hello attempt"]
        compose = by_name["Greeter.Compose"]
        producer = by_name["greeter.greeted publish"]
        consumer = by_name["greeter.greeted process"]
        check(call.get("parentSpanId", "") == "", "the client call is the root")
        check(attempt["parentSpanId"] == call["spanId"], "attempt is a child of the call")
        check(server_span["parentSpanId"] == attempt["spanId"], "server is a child of the attempt")
        check(compose["parentSpanId"] == server_span["spanId"], "handler's span under the server")
        check(producer["parentSpanId"] == server_span["spanId"], "publish under the server span")
        check(consumer["parentSpanId"] == producer["spanId"], "consumer is a child of the producer")
        check([l["spanId"] for l in consumer.get("links", [])] == [producer["spanId"]],
              "consumer links to the producer")
        for name, kind in expected.items():
            check(by_name[name]["kind"] == kind or name == "Greeter.Hello", f"{name} kind")
        check(call["service"] != "greeter", "the client's spans carry the client's resource")
        check(server_span["service"] == "greeter", "server spans carry service.name=greeter")

    drawn = subprocess.run([micro, "trace", spans_file], capture_output=True, text=True, timeout=30)
    print(drawn.stdout)
    check(drawn.returncode == 0 and " 6 spans " in drawn.stdout, "micro trace did not draw 6 spans")
    check("greeter.greeted process (consumer)" in drawn.stdout, "waterfall lacks the consumer")

print(f"greeter trace on {transport}" + (" with nats" if use_nats else "") + ":", "FAILED" if failures else "ok")
sys.exit(1 if failures else 0)
