#!/usr/bin/env python3
"""`micro api` in front of the greeter and a test service, all real processes on free loopback
ports with one file registry and wrappers=trace writing span files: calls both route styles,
the listings, every error status with Go-Micro's error JSON as the body, headers → metadata,
the Timeout header, CORS, a caller that goes away, W3C trace continuation (and a duplicated
traceparent restarting the trace), flag errors and a clean stop on SIGTERM."""
import http.client
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

micro, greeter_binary, test_service_binary = sys.argv[1:4]
failures = []
processes = []

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


def check(condition, message):
    if not condition:
        failures.append(message)
        print("FAIL:", message)
    return condition


def start(command, ready_word, timeout=20):
    """Starts a process and waits (bounded) for the line saying where it listens."""
    # stderr to a file: a pipe nobody reads could fill and stall the process.
    errors = tempfile.TemporaryFile()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors)
    process.errors = errors
    processes.append(process)
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    line = b""
    while time.monotonic() < deadline:
        if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        chunk = os.read(process.stdout.fileno(), 1)
        if not chunk:
            break
        line += chunk
        if chunk == b"\n":
            if ready_word.encode() in line:
                selector.close()
                return process, line.decode().split()[-1]
            line = b""
    selector.close()
    process.kill()
    errors.seek(0)
    raise RuntimeError(f"{command[0]} did not start: {line!r} {errors.read()!r}")


def stop(process, sig=signal.SIGTERM, timeout=20):
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def request(address, method, path, body=None, headers=()):
    """One HTTP request; header pairs may repeat a name. Returns (status, headers, body)."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=15)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        data = body.encode() if isinstance(body, str) else body
        for name, value in headers:
            connection.putheader(name, value)
        if data is not None:
            connection.putheader("Content-Length", str(len(data)))
        connection.endheaders(data)
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        connection.close()


def header(headers, name):
    return next((v for k, v in headers if k.lower() == name.lower()), None)


def error_body(body):
    """The error JSON, or None when the body is not one."""
    try:
        error = json.loads(body)
    except ValueError:
        return None
    if isinstance(error, dict) and {"id", "code", "detail", "status"} <= error.keys():
        return error
    return None


def expect_error(address, method, path, status, detail_part, body=None, headers=(), why=""):
    got_status, got_headers, got_body = request(address, method, path, body, headers)
    error = error_body(got_body)
    ok = check(got_status == status, f"{why or method + ' ' + path}: status {got_status}, "
               f"expected {status}; body {got_body[:300]!r}")
    if check(error is not None, f"{why or path}: body is not the error JSON: {got_body[:300]!r}"):
        check(error["code"] == status, f"{why or path}: error code {error['code']}")
        check(error["status"] != "", f"{why or path}: error status is empty: {error!r}")
        check(detail_part in error["detail"],
              f"{why or path}: detail {error['detail']!r} lacks {detail_part!r}")
        check(header(got_headers, "Content-Type") == "application/json",
              f"{why or path}: error Content-Type {header(got_headers, 'Content-Type')!r}")
    return ok, got_headers, error


def wait_for_stats(address, key, value, timeout=10):
    """Polls the test service's counters through the gateway until `key` reaches `value`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = request(address, "POST", "/gatewaytest/Test.Stats", "{}")
        if status == 200 and json.loads(body).get(key) == value:
            return True
        time.sleep(0.02)
    return False


def read_spans(path):
    spans = []
    if not os.path.exists(path):
        return spans
    with open(path) as lines:
        for line in lines:
            for resource_spans in json.loads(line)["resourceSpans"]:
                for scope_spans in resource_spans["scopeSpans"]:
                    for span in scope_spans["spans"]:
                        span["attrs"] = {a["key"]: next(iter(a["value"].values()))
                                         for a in span.get("attributes", [])}
                        spans.append(span)
    return spans


try:
    # Flags are checked before anything else starts.
    bad_flag = subprocess.run([micro, "api", "--adress=127.0.0.1:1"], capture_output=True,
                              text=True, timeout=30)
    check(bad_flag.returncode == 1 and "unknown flag --adress" in bad_flag.stderr
          and "did you mean 'address'" in bad_flag.stderr, f"bad flag: {bad_flag.stderr!r}")
    bad_duration = subprocess.run([micro, "api", "--timeout=soon"], capture_output=True,
                                  text=True, timeout=30)
    check(bad_duration.returncode == 1 and "bad duration 'soon' for --timeout" in
          bad_duration.stderr, f"bad duration: {bad_duration.stderr!r}")

    with tempfile.TemporaryDirectory() as work:
        registry = f"--registry=file?dir={work}/registry"

        def traced(name):
            return f"--wrappers=trace?exporter=file&file={work}/{name}.jsonl&sampler=always_on"

        greeter, greeter_address = start([greeter_binary, registry, traced("greeter")],
                                         "listening on")
        tester, _ = start([test_service_binary, registry, traced("tester")], "listening on")
        ghost, _ = start([test_service_binary, "ghost", registry], "listening on")
        gateway, api = start([micro, registry, traced("api"), "api", "--address=127.0.0.1:0",
                              "--cors_origins=http://app.example", "--max_body=65536"],
                             "micro api listening on")

        # ---- Calls ----
        status, headers, body = request(api, "POST", "/greeter/Greeter.Hello", '{"name":"Ada"}',
                                        [("Content-Type", "application/json")])
        check(status == 200, f"greeting: status {status} {body!r}")
        check(header(headers, "Content-Type") == "application/json", "greeting Content-Type")
        check(json.loads(body or b"{}") == {"greeting": "Hello, Ada!",
                                             "served_by": greeter_address},
              f"greeting: {body!r}")
        # curl -d sends form-urlencoded; the body is JSON all the same.
        status, _, body = request(api, "POST", "/greeter/Greeter/Hello", '{"name":"Bob"}',
                                  [("Content-Type", "application/x-www-form-urlencoded")])
        check(status == 200 and json.loads(body or b"{}").get("greeting") == "Hello, Bob!",
              f"Go-Micro api style route: {status} {body!r}")

        # ---- Listings ----
        status, _, body = request(api, "GET", "/health")
        check(status == 200 and json.loads(body) == {"status": "ok"}, f"health: {status} {body!r}")
        status, _, body = request(api, "GET", "/")
        names = [service["name"] for service in json.loads(body)] if status == 200 else []
        check(names == ["gatewaytest", "ghost", "greeter"], f"GET /: {status} {body[:300]!r}")
        status, _, body = request(api, "GET", "/greeter")
        described = json.loads(body) if status == 200 else [{}]
        check(described[0].get("nodes", [{}])[0].get("address") == greeter_address,
              f"GET /greeter nodes: {body[:300]!r}")
        hello = next((e for e in described[0].get("endpoints", []) if e["name"] == "Greeter.Hello"),
                     None)
        check(hello is not None and hello["request"] == {
            "name": "HelloRequest", "type": "object",
            "values": [{"name": "name", "type": "string", "values": []}]},
            f"GET /greeter request schema: {hello!r}")

        # ---- Errors: the status is the error's code, the body Go-Micro's error JSON ----
        expect_error(api, "GET", "/gretter", 404, "no service 'gretter' (did you mean 'greeter'?)")
        expect_error(api, "POST", "/gretter/Greeter.Hello", 404, "did you mean 'greeter'?", "{}")
        expect_error(api, "POST", "/greeter/Greeter.Helo", 404,
                     "service greeter has no endpoint 'Greeter.Helo' "
                     "(did you mean 'Greeter.Hello'?); it has: Greeter.Hello", "{}")
        ok, _, error = expect_error(api, "POST", "/greeter/Greeter.Hello", 400, "line 1, column 3",
                                    "{name:", why="bad JSON")
        check(error is None or "not JSON" in error["detail"], f"bad JSON detail: {error!r}")
        _, _, error = expect_error(api, "POST", "/greeter/Greeter.Hello", 400, "name is empty",
                                   '{"name":""}', why="the service's own 400")
        check(error is None or error["id"] == "greeter", f"the service's error id: {error!r}")
        _, got, _ = expect_error(api, "GET", "/greeter/Greeter.Hello", 405, "calls are POST")
        check(header(got, "Allow") == "POST, OPTIONS", f"405 Allow: {header(got, 'Allow')!r}")
        _, got, _ = expect_error(api, "PUT", "/", 405, "is not served")
        check(header(got, "Allow") == "GET, OPTIONS", f"405 Allow on /: {header(got, 'Allow')!r}")
        expect_error(api, "POST", "/a/b/c/d", 404, "no route for POST /a/b/c/d", "{}")
        expect_error(api, "POST", "/greeter/Greeter.Hello", 400, "bad Timeout header 'soon'",
                     '{"name":"Ada"}', [("Timeout", "soon")])
        expect_error(api, "POST", "/gatewaytest/Test.Sleep", 408, "", '{"ms":3000}',
                     [("Timeout", "300ms")], why="a call past its Timeout")
        expect_error(api, "POST", "/gatewaytest/Test.Echo", 413, "exceeds the limit of 65536",
                     "x" * 70000, why="a body over --max_body")

        # ---- Headers → metadata ----
        status, _, body = request(api, "POST", "/gatewaytest/Test.Echo", '{"n":1}', [
            ("X-Custom", "a"), ("X-Custom", "b"), ("Authorization", "Bearer t"),
            ("Connection", "keep-alive, X-Hop"), ("X-Hop", "secret"), ("Timeout", "2s"),
            ("Content-Type", "application/json"), ("baggage", "userId=alice"),
            ("TraceParent", f"00-{TRACE_ID}-{SPAN_ID}-01"), ("TRACESTATE", "congo=t61rcWkgMzE")])
        echoed = json.loads(body) if status == 200 else {}
        metadata = {k.lower(): v for k, v in echoed.get("metadata", {}).items()}
        check(echoed.get("body") == {"n": 1}, f"echo body: {status} {body[:300]!r}")
        check(metadata.get("x-custom") == "a,b", f"repeated header joined: {metadata!r}")
        check(metadata.get("authorization") == "Bearer t", "Authorization forwarded")
        for dropped in ("connection", "x-hop", "timeout", "content-type", "host",
                        "content-length"):
            check(dropped not in metadata, f"{dropped} must stay with the HTTP hop: {metadata!r}")
        check(metadata.get("baggage") == "userId=alice", f"baggage forwarded: {metadata!r}")
        check(metadata.get("traceparent", "").startswith(f"00-{TRACE_ID}-"),
              f"the call carries the trace on (header names in any case): "
              f"{metadata.get('traceparent')!r}")
        check(SPAN_ID not in metadata.get("traceparent", ""),
              "the call's traceparent names the gateway's span, not the caller's")
        check(metadata.get("tracestate") == "congo=t61rcWkgMzE",
              f"tracestate carried on: {metadata.get('tracestate')!r}")
        # More than 32 tracestate members: the header is dropped, the traceparent kept.
        crowded = ",".join(f"k{i}=v{i}" for i in range(33))
        status, _, body = request(api, "POST", "/gatewaytest/Test.Echo", "{}", [
            ("traceparent", f"00-{TRACE_ID}-{SPAN_ID}-01"), ("tracestate", crowded)])
        metadata = {k.lower(): v for k, v in json.loads(body).get("metadata", {}).items()}
        check(status == 200 and metadata.get("traceparent", "").startswith(f"00-{TRACE_ID}-")
              and "tracestate" not in metadata,
              f"an oversized tracestate is dropped, the trace kept: {status} {metadata!r}")
        # A head over the HTTP server's limit: refused in the same error JSON.
        expect_error(api, "POST", "/greeter/Greeter.Hello", 431, "", "{}",
                     [("X-Big", "x" * 20000)], why="a head over the limit")
        check(0 < echoed.get("remaining_ms", 0) <= 2000,
              f"Timeout: 2s sets the call's deadline: {echoed.get('remaining_ms')!r}")

        # ---- CORS ----
        status, got, _ = request(api, "OPTIONS", "/greeter/Greeter.Hello", None, [
            ("Origin", "http://app.example"), ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type, traceparent")])
        check(status == 204, f"preflight status {status}")
        check(header(got, "Access-Control-Allow-Origin") == "http://app.example",
              f"preflight allow origin: {got!r}")
        check("POST" in (header(got, "Access-Control-Allow-Methods") or ""), "preflight methods")
        check(header(got, "Access-Control-Allow-Headers") == "content-type, traceparent",
              f"preflight headers: {got!r}")
        expect_error(api, "OPTIONS", "/greeter/Greeter.Hello", 403, "origin 'http://evil.example'",
                     None, [("Origin", "http://evil.example"),
                            ("Access-Control-Request-Method", "POST")])
        status, got, _ = request(api, "POST", "/greeter/Greeter.Hello", '{"name":"Cy"}',
                                 [("Origin", "http://app.example")])
        check(status == 200 and header(got, "Access-Control-Allow-Origin") == "http://app.example",
              f"a call from an allowed origin: {status} {got!r}")
        status, got, _ = request(api, "POST", "/greeter/Greeter.Hello", '{"name":"Cy"}',
                                 [("Origin", "http://evil.example")])
        check(header(got, "Access-Control-Allow-Origin") is None, "no CORS for other origins")

        # ---- A caller that goes away cancels its call ----
        host, port = api.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            payload = b'{"ms":8000}'
            raw.sendall(b"POST /gatewaytest/Test.Sleep HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
            check(wait_for_stats(api, "sleeping", 1), "the call never reached the service")
        check(wait_for_stats(api, "cancelled", 1),
              "the abandoned call was not cancelled at the service")

        # ---- W3C Trace Context ----
        status, _, _ = request(api, "POST", "/greeter/Greeter.Hello", '{"name":"Trace"}', [
            ("traceparent", f"00-{TRACE_ID}-{SPAN_ID}-01"), ("tracestate", "congo=t61rcWkgMzE"),
            ("User-Agent", "trace-test")])
        check(status == 200, f"traced call: {status}")
        status, _, _ = request(api, "POST", "/greeter/Greeter.Hello", '{"name":"Dup"}', [
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203332-01"),
            ("User-Agent", "duplicate-test")])
        check(status == 200, f"call with a duplicated traceparent: {status}")

        # ---- 503: the only node is gone but still registered ----
        stop(ghost, signal.SIGKILL)
        expect_error(api, "POST", "/ghost/Test.Echo", 503, "", "{}", why="a dead node")

        # ---- Clean stop: SIGTERM drains the call in flight, then exits ----
        answers = []
        slow = threading.Thread(target=lambda: answers.append(
            request(api, "POST", "/gatewaytest/Test.Sleep", '{"ms":700}')))
        slow.start()
        check(wait_for_stats(api, "sleeping", 1), "the slow call never reached the service")
        code = stop(gateway)
        slow.join(timeout=20)
        output = gateway.stdout.read().decode()
        check(code == 0 and "micro api stopped" in output, f"SIGTERM: exit {code}, {output!r}")
        check(len(answers) == 1 and answers[0][0] == 200 and
              json.loads(answers[0][2]) == {"slept": 700},
              f"the call in flight at SIGTERM was not answered: {answers!r}")
        stop(greeter)
        stop(tester)

        api_spans = read_spans(f"{work}/api.jsonl")
        greeter_spans = read_spans(f"{work}/greeter.jsonl")
        traced_server = [s for s in api_spans if s["kind"] == 2 and
                         s["attrs"].get("user_agent.original") == "trace-test"]
        if check(len(traced_server) == 1, f"one gateway SERVER span for the traced call: "
                 f"{[s['name'] for s in api_spans]}"):
            server = traced_server[0]
            check(server["traceId"] == TRACE_ID, f"gateway span trace id {server['traceId']}")
            check(server.get("parentSpanId") == SPAN_ID,
                  f"gateway span parent {server.get('parentSpanId')!r}, expected the sent span")
            check(server["name"] == "POST /greeter/Greeter.Hello", f"span name {server['name']!r}")
            check(server.get("traceState", "congo=t61rcWkgMzE") == "congo=t61rcWkgMzE",
                  f"tracestate kept: {server.get('traceState')!r}")
            attrs = server["attrs"]
            for key, value in (("http.request.method", "POST"),
                               ("url.path", "/greeter/Greeter.Hello"),
                               ("http.route", "/{service}/{endpoint}"),
                               ("server.address", "127.0.0.1"), ("client.address", "127.0.0.1")):
                check(attrs.get(key) == value, f"span attribute {key}={attrs.get(key)!r}")
            check(str(attrs.get("http.response.status_code")) == "200", "status code attribute")
            clients = [s for s in api_spans if s["kind"] == 3 and s["name"] == "Greeter.Hello"
                       and s.get("parentSpanId") == server["spanId"]]
            check(len(clients) == 1, "the call's CLIENT span is the gateway span's child")
            check(any(s["kind"] == 2 and s["name"] == "Greeter.Hello" and
                      s["traceId"] == TRACE_ID for s in greeter_spans),
                  "the greeter's SERVER span is in the same trace")
        by_status = {}
        for span in api_spans:
            if span["kind"] == 2:
                by_status.setdefault(str(span["attrs"].get("http.response.status_code")), span)
        for status_code, error in (("404", False), ("400", False), ("503", True)):
            span = by_status.get(status_code)
            if check(span is not None, f"no gateway span answered {status_code}"):
                is_error = span.get("status", {}).get("code") == 2
                check(is_error == error, f"a {status_code} span's status: {span.get('status')!r}")
        unrouted = [s for s in api_spans if s["kind"] == 2 and
                    s["attrs"].get("url.path") == "/a/b/c/d"]
        check(len(unrouted) == 1 and unrouted[0]["name"] == "POST" and
              "http.route" not in unrouted[0]["attrs"],
              "a path no route matches names the span by its method alone")
        restarted = [s for s in api_spans if s["kind"] == 2 and
                     s["attrs"].get("user_agent.original") == "duplicate-test"]
        if check(len(restarted) == 1, "one gateway SERVER span for the duplicated traceparent"):
            check(restarted[0]["traceId"] not in ("0af7651916cd43dd8448eb211c80319c",
                                                  "0af7651916cd43dd8448eb211c80319d"),
                  "a duplicated traceparent must restart the trace")
            check(not restarted[0].get("parentSpanId"), "a restarted trace's span has no parent")
finally:
    for process in processes:
        stop(process, signal.SIGKILL, timeout=10)

print("micro api gateway:", "FAILED" if failures else "ok")
sys.exit(1 if failures else 0)
