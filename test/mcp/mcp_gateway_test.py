#!/usr/bin/env python3
"""`micro mcp` as a real process in front of the greeter and a test service (nested shapes,
descriptions, an echo of the call's metadata, a failing endpoint), all on one file registry.
A stdlib JSON-RPC client drives it over stdio (newline-delimited, 2025-11-25 lifecycle and
2026-07-28 stateless requests, list_changed when a service comes and goes, logging, trace
context, every malformed input) and over Streamable HTTP (sessions, 202, JSON and SSE answers,
the 2026-07-28 header checks, oversize bodies, Origin, bearer token, filters, rate limit)."""
import http.client
import json
import os
import queue
import base64
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

micro, greeter_binary, service_binary = sys.argv[1:4]
failures = []
processes = []
STATELESS = "2026-07-28"
STATEFUL = "2025-11-25"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def check(condition, message):
    if not condition:
        failures.append(message)
        print("FAIL:", message)
    return condition


def start(command, ready_word, timeout=20):
    """Starts a process and waits (bounded) for the line saying where it listens."""
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


def meta(**extra):
    value = {"io.modelcontextprotocol/protocolVersion": STATELESS,
             "io.modelcontextprotocol/clientCapabilities": {},
             "io.modelcontextprotocol/clientInfo": {"name": "stdlib-test", "version": "1"}}
    value.update(extra)
    return value


class StdioClient:
    """The gateway as a subprocess; every stdout line is kept (each must be JSON-RPC)."""

    def __init__(self, command):
        self.errors = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.errors)
        processes.append(self.process)
        self.lines = []
        self.messages = queue.Queue()
        self.notifications = queue.Queue()
        self.next_id = 100
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.process.stdout:
            self.lines.append(raw)
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if "id" in message and "method" not in message:
                self.messages.put(message)
            else:
                self.notifications.put(message)

    def send_raw(self, data):
        self.process.stdin.write(data if isinstance(data, bytes) else data.encode())
        self.process.stdin.flush()

    def send(self, message):
        self.send_raw(json.dumps(message) + "\n")

    def answer(self, timeout=15, want_id=None):
        deadline = time.monotonic() + timeout
        held = []
        try:
            while True:
                message = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
                if want_id is None or message.get("id") == want_id:
                    return message
                held.append(message)
        except queue.Empty:
            return None
        finally:
            for message in held:
                self.messages.put(message)

    def request(self, method, params=None, timeout=15):
        self.next_id += 1
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return self.answer(timeout, want_id=self.next_id)

    def notification(self, method, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.notifications.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if message.get("method") == method:
                return message
        return None

    def close(self):
        self.process.stdin.close()
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return None


def error_of(answer):
    return (answer or {}).get("error") or {}


def result_of(answer):
    return (answer or {}).get("result") or {}


def text_of(result):
    return "".join(c.get("text", "") for c in result.get("content", []))


def list_all_tools(client, params_extra=None):
    tools, cursor, pages = [], None, 0
    while True:
        params = dict(params_extra or {})
        if cursor:
            params["cursor"] = cursor
        answer = client.request("tools/list", params)
        result = result_of(answer)
        if not check("tools" in result, f"tools/list answer: {answer}"):
            return tools, pages
        tools += result["tools"]
        pages += 1
        cursor = result.get("nextCursor")
        if not cursor or pages > 50:
            return tools, pages


# ---- HTTP ---------------------------------------------------------------------------------

def post(address, body, headers=None, accept="application/json, text/event-stream"):
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=15)
    try:
        data = body if isinstance(body, bytes) else (
            body.encode() if isinstance(body, str) else json.dumps(body).encode())
        all_headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
        if accept:
            all_headers["Accept"] = accept
        all_headers.update(headers or {})
        connection.request("POST", "/mcp", body=data, headers=all_headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def plain(address, method, headers=None, path="/mcp"):
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=15)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def sse_events(body):
    """The data of each SSE event (the text/event-stream format), as JSON."""
    events = []
    for block in body.decode().replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].lstrip() for line in block.split("\n") if line.startswith("data:")]
        if data:
            events.append(json.loads("\n".join(data)))
    return events


def messages_of(status, headers, body):
    if headers.get("content-type", "").startswith("text/event-stream"):
        return sse_events(body)
    return [json.loads(body)] if body else []


def stateless_post(address, method, params, headers=None, request_id=1):
    message = {"jsonrpc": "2.0", "id": request_id, "method": method,
               "params": dict(params, _meta=meta())}
    all_headers = {"MCP-Protocol-Version": STATELESS, "Mcp-Method": method}
    if method == "tools/call":
        all_headers["Mcp-Name"] = params.get("name", "")
    all_headers.update(headers or {})
    return post(address, message, {k: v for k, v in all_headers.items() if v is not None})


def main():
    registry_dir = tempfile.mkdtemp(prefix="mcp-registry-")
    registry = f"--registry=file?dir={registry_dir}"
    start([greeter_binary, registry], "greeter listening")
    start([service_binary, "catalog", registry], "catalog listening")

    stdio_tests(registry)
    stdio_limit_tests(registry)
    trace_tests(registry)
    http_tests(registry)
    http_safety_tests(registry)
    flag_tests(registry)
    stream_tests()


def stdio_tests(registry):
    client = StdioClient([micro, registry, "mcp", "--page_size=2"])
    # 2025-11-25: nothing but ping before initialize.
    early = client.request("tools/list")
    check(error_of(early).get("code") == -32600 and "initialize" in error_of(early).get("message", ""),
          f"tools/list before initialize: {early}")
    check(result_of(client.request("ping")) == {}, "ping before initialize answers {}")
    # The 2026-07-28 stdio probe without _meta: not found, so a client falls back to initialize.
    probe = client.request("server/discover")
    check(error_of(probe).get("code") == -32601, f"server/discover without _meta: {probe}")

    init = client.request("initialize", {"protocolVersion": STATEFUL, "capabilities": {},
                                         "clientInfo": {"name": "t", "version": "1"}})
    result = result_of(init)
    check(result.get("protocolVersion") == STATEFUL, f"initialize: {init}")
    check(result.get("capabilities", {}).get("tools", {}).get("listChanged") is True,
          f"initialize capabilities: {result}")
    check(result.get("serverInfo", {}).get("name") == "micro-mcp", f"serverInfo: {result}")
    again = client.request("initialize", {"protocolVersion": STATEFUL, "capabilities": {}})
    check(error_of(again).get("code") == -32600, f"second initialize: {again}")
    client.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    # tools/list: paginated (page_size=2), sorted, deterministic.
    tools, pages = list_all_tools(client)
    names = [tool["name"] for tool in tools]
    expected = ["catalog.Catalog.Echo", "catalog.Catalog.Fail", "catalog.Catalog.Search",
                "catalog.Catalog.Slow", "catalog.Catalog.Stats", "greeter.Greeter.Hello"]
    check(names == expected, f"tools/list names {names}")
    check(pages == 3, f"tools/list took {pages} pages of 2")
    check(list_all_tools(client)[0] == tools, "tools/list is the same twice")
    bad_cursor = client.request("tools/list", {"cursor": "!!not-a-cursor!!"})
    check(error_of(bad_cursor).get("code") == -32602, f"bad cursor: {bad_cursor}")

    search = next((t for t in tools if t["name"] == "catalog.Catalog.Search"), {})
    schema = search.get("inputSchema", {})
    check(search.get("description", "").startswith("Searches the catalogue"),
          f"registered description: {search.get('description')!r}")
    check(schema.get("$schema") == "https://json-schema.org/draft/2020-12/schema",
          f"inputSchema dialect: {schema.get('$schema')}")
    check(schema.get("required") == ["query", "limit", "filter"], f"required: {schema}")
    check(schema.get("properties", {}).get("filter", {}).get("properties", {}).get("tags") ==
          {"type": "array", "items": {"type": "string"}}, f"nested schema: {schema}")
    out = search.get("outputSchema", {})
    check(out.get("properties", {}).get("items", {}).get("items", {}).get("properties", {})
          .get("price") == {"type": "number"}, f"outputSchema: {out}")
    check(out.get("properties", {}).get("facets") ==
          {"type": "object", "additionalProperties": {"type": "string"}}, f"map schema: {out}")

    # tools/call through the client pipeline.
    hello = result_of(client.request("tools/call", {"name": "greeter.Greeter.Hello",
                                                    "arguments": {"name": "Ada"}}))
    check(hello.get("isError") is False, f"greeter call: {hello}")
    check(hello.get("structuredContent", {}).get("greeting") == "Hello, Ada!",
          f"structuredContent: {hello}")
    check(json.loads(text_of(hello) or "{}") == hello.get("structuredContent"),
          "the text content is the structured content's JSON")
    found = result_of(client.request("tools/call", {
        "name": "catalog.Catalog.Search",
        "arguments": {"query": "lamp", "limit": 2, "filter": {"tags": ["desk"], "in_stock": True}}}))
    check([i["id"] for i in found.get("structuredContent", {}).get("items", [])] ==
          ["lamp-0", "lamp-1"], f"nested call: {found}")

    # Arguments checked before any call: a tool error naming the field.
    invalid = result_of(client.request("tools/call", {
        "name": "catalog.Catalog.Search",
        "arguments": {"query": "x", "limit": 1, "filter": {"tags": [1], "in_stock": True}}}))
    check(invalid.get("isError") is True and "arguments.filter.tags[0]: expected string" in
          text_of(invalid), f"validation error: {invalid}")
    typo = result_of(client.request("tools/call", {"name": "greeter.Greeter.Hello",
                                                   "arguments": {"nmae": "x"}}))
    check("missing required field 'name'" in text_of(typo), f"missing field: {typo}")

    # A failed call is a result with isError and the service's message.
    client.request("logging/setLevel", {"level": "warning"})
    failed = result_of(client.request("tools/call", {"name": "catalog.Catalog.Fail",
                                                     "arguments": {"reason": "sold out"}}))
    check(failed.get("isError") is True and "409" in text_of(failed) and
          "refused: sold out" in text_of(failed), f"failed call: {failed}")
    logged = client.notification("notifications/message", timeout=5)
    check(logged is not None and logged["params"]["level"] == "warning" and
          "refused: sold out" in json.dumps(logged["params"]["data"]),
          f"failure logged as notifications/message: {logged}")
    bad_level = client.request("logging/setLevel", {"level": "loud"})
    check(error_of(bad_level).get("code") == -32602, f"bad level: {bad_level}")

    # Protocol errors.
    unknown = client.request("tools/call", {"name": "greeter.Greeter.Helo", "arguments": {}})
    check(error_of(unknown).get("code") == -32602 and
          "greeter.Greeter.Hello" in error_of(unknown).get("message", ""),
          f"unknown tool: {unknown}")
    nomethod = client.request("tools/lst")
    check(error_of(nomethod).get("code") == -32601 and "tools/list" in
          error_of(nomethod).get("message", ""), f"unknown method: {nomethod}")
    client.send_raw('{"jsonrpc":"1.0","id":7,"method":"ping"}\n')
    wrong_version = client.answer(want_id=7)
    check(error_of(wrong_version).get("code") == -32600, f"jsonrpc 1.0: {wrong_version}")
    client.send_raw('{"jsonrpc":"2.0","id":8,"method":\n')
    parse = client.answer(want_id=None)
    check(error_of(parse).get("code") == -32700 and parse.get("id") is None,
          f"broken JSON: {parse}")
    client.send_raw('[{"jsonrpc":"2.0","id":9,"method":"ping"}]\n')
    batch = client.answer()
    check(error_of(batch).get("code") == -32600 and "batch" in error_of(batch).get("message", ""),
          f"batch: {batch}")
    client.send_raw('{"jsonrpc":"2.0","id":null,"method":"ping"}\n')
    null_id = client.answer()
    check(error_of(null_id).get("code") == -32600, f"null id: {null_id}")

    # Trace context from _meta continues into the call; _meta may set the budget.
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    echoed = result_of(client.request("tools/call", {
        "name": "catalog.Catalog.Echo", "arguments": {"k": 1},
        "_meta": {"traceparent": traceparent, "micro/timeoutMs": 1500}}))
    content = echoed.get("structuredContent", {})
    carried = {k.lower(): v for k, v in content.get("metadata", {}).items()}
    check(TRACE_ID in carried.get("traceparent", ""), f"traceparent carried on: {content}")
    check(content.get("body") == {"k": 1}, f"echo body: {content}")
    check(0 < content.get("remaining_ms", 0) <= 1500, f"deadline from _meta: {content}")

    # notifications/cancelled stops the call, and the cancelled request gets no answer.
    client.next_id += 1
    slow_id = client.next_id
    client.send({"jsonrpc": "2.0", "id": slow_id, "method": "tools/call",
                 "params": {"name": "catalog.Catalog.Slow", "arguments": {"ms": 10000}}})
    time.sleep(0.3)
    client.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                 "params": {"requestId": slow_id, "reason": "user stopped it"}})
    deadline, counted = time.monotonic() + 10, 0
    while time.monotonic() < deadline and counted == 0:
        stats = result_of(client.request("tools/call", {"name": "catalog.Catalog.Stats",
                                                        "arguments": {}}))
        counted = stats.get("structuredContent", {}).get("cancelled", 0)
        if counted == 0:
            time.sleep(0.1)
    check(counted == 1, f"the service saw the cancellation: {counted}")
    check(client.answer(timeout=1, want_id=slow_id) is None,
          "no answer to the cancelled request")

    # 2026-07-28 requests on the same stdio: stateless, no session needed.
    discover = result_of(client.request("server/discover", {"_meta": meta()}))
    check(discover.get("resultType") == "complete" and
          discover.get("supportedVersions") == [STATELESS] and
          "ttlMs" in discover and discover.get("cacheScope") == "public" and
          discover.get("capabilities") == {"tools": {}} and
          discover.get("serverInfo", {}).get("name") == "micro-mcp",
          f"server/discover: {discover}")
    listed = result_of(client.request("tools/list", {"_meta": meta()}))
    check(listed.get("resultType") == "complete" and listed.get("ttlMs") == 10000 and
          listed.get("cacheScope") == "public", f"stateless tools/list: {listed}")
    called = result_of(client.request("tools/call", {"name": "greeter.Greeter.Hello",
                                                     "arguments": {"name": "Bo"}, "_meta": meta()}))
    check(called.get("resultType") == "complete" and
          called.get("structuredContent", {}).get("greeting") == "Hello, Bo!",
          f"stateless tools/call: {called}")
    unsupported = client.request("tools/list", {"_meta": meta(**{
        "io.modelcontextprotocol/protocolVersion": "2099-01-01"})})
    check(error_of(unsupported).get("code") == -32022 and
          error_of(unsupported).get("data") == {"requested": "2099-01-01",
                                                "supported": [STATELESS]},
          f"unsupported version: {unsupported}")
    no_capabilities = client.request("tools/list", {"_meta": {
        "io.modelcontextprotocol/protocolVersion": STATELESS}})
    check(error_of(no_capabilities).get("code") == -32602 and
          "clientCapabilities" in error_of(no_capabilities).get("message", ""),
          f"missing clientCapabilities: {no_capabilities}")
    stateless_ping = client.request("ping", {"_meta": meta()})
    check(error_of(stateless_ping).get("code") == -32601, f"ping in 2026-07-28: {stateless_ping}")

    # list_changed: a second service registers, then goes.
    while client.notification("notifications/tools/list_changed", timeout=0.1):
        pass
    second, _ = start([service_binary, "inventory", registry], "inventory listening")
    changed = client.notification("notifications/tools/list_changed", timeout=20)
    check(changed is not None, "notifications/tools/list_changed after a service registered")
    names = [t["name"] for t in list_all_tools(client)[0]]
    check("inventory.Catalog.Search" in names, f"the new service's tools listed: {names}")
    stop(second)
    gone = client.notification("notifications/tools/list_changed", timeout=20)
    check(gone is not None, "notifications/tools/list_changed after the service left")
    names = [t["name"] for t in list_all_tools(client)[0]]
    check("inventory.Catalog.Search" not in names, f"the gone service's tools dropped: {names}")

    code = client.close()
    check(code == 0, f"micro mcp exits 0 at EOF on stdin, got {code}")
    for raw in client.lines:
        try:
            message = json.loads(raw)
            check(message.get("jsonrpc") == "2.0", f"stdout line is no JSON-RPC: {raw!r}")
        except ValueError:
            check(False, f"stdout line is not JSON: {raw!r}")
    client.errors.seek(0)
    print(f"stdio: {len(client.lines)} lines on stdout, all JSON-RPC")


def stdio_limit_tests(registry):
    client = StdioClient([micro, registry, "mcp", "--max_body=2000"])
    client.send_raw('{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"' + "x" * 5000 +
                    '"}}\n')
    too_big = client.answer()
    check(error_of(too_big).get("code") == -32600 and
          "exceeds the limit" in error_of(too_big).get("message", ""),
          f"oversize stdio message: {too_big}")
    after = client.request("ping")
    check(result_of(after) == {} and "error" not in after, f"the next line is read: {after}")
    check(client.close() == 0, "exit after EOF")


def read_spans(path):
    spans = []
    if os.path.exists(path):
        with open(path) as lines:
            for line in lines:
                for resource_spans in json.loads(line)["resourceSpans"]:
                    for scope_spans in resource_spans["scopeSpans"]:
                        spans += scope_spans["spans"]
    return spans


def trace_tests(registry):
    """With wrappers=trace the gateway's SERVER span is the child of the agent's span (from
    _meta.traceparent) and the call carries the trace on."""
    work = tempfile.mkdtemp(prefix="mcp-trace-")
    spans_file = os.path.join(work, "spans.jsonl")
    client = StdioClient([micro, registry,
                          f"--wrappers=trace?exporter=file&file={spans_file}&sampler=always_on",
                          "mcp"])
    client.request("initialize", {"protocolVersion": STATEFUL, "capabilities": {}})
    client.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    parent = "00f067aa0ba902b7"
    echoed = result_of(client.request("tools/call", {
        "name": "catalog.Catalog.Echo", "arguments": {},
        "_meta": {"traceparent": f"00-{TRACE_ID}-{parent}-01"}}))
    carried = {k.lower(): v for k, v in
               echoed.get("structuredContent", {}).get("metadata", {}).items()}
    sent = carried.get("traceparent", "").split("-")
    check(len(sent) == 4 and sent[1] == TRACE_ID and sent[2] != parent,
          f"the call carries the trace with a span of the gateway's: {carried}")
    check(client.close() == 0, "exit after EOF")
    spans = read_spans(spans_file)
    server = [x for x in spans if x.get("name") == "tools/call catalog.Catalog.Echo"]
    check(len(server) == 1 and server[0].get("traceId") == TRACE_ID and
          server[0].get("parentSpanId") == parent and server[0].get("kind") == 2,
          f"the gateway's SERVER span continues the agent's trace: {server or spans[:3]}")
    if server:
        children = [x for x in spans if x.get("parentSpanId") == server[0].get("spanId")]
        check(children, f"the client span is the SERVER span's child: {spans}")


def http_tests(registry):
    gateway, address = start([micro, registry, "mcp", "--address=127.0.0.1:0",
                              "--max_body=65536"], "micro mcp listening")
    address = address.removeprefix("http://").removesuffix("/mcp")

    # 2025-11-25: initialize makes a session; notifications get 202.
    status, headers, body = post(address, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                           "params": {"protocolVersion": STATEFUL,
                                                      "capabilities": {}}})
    session = headers.get("mcp-session-id", "")
    check(status == 200 and len(session) >= 16, f"initialize over HTTP: {status} {headers}")
    check(json.loads(body)["result"]["protocolVersion"] == STATEFUL, f"initialize body {body}")
    sid = {"Mcp-Session-Id": session, "MCP-Protocol-Version": STATEFUL}
    status, headers, body = post(address, {"jsonrpc": "2.0", "method": "notifications/initialized"},
                                 sid)
    check(status == 202 and body == b"", f"notification: {status} {body!r}")

    status, headers, body = post(address, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, sid)
    listed = messages_of(status, headers, body)
    check(status == 200 and len(listed[0]["result"]["tools"]) == 6, f"tools/list: {status} {body[:200]}")

    # tools/call answered on an SSE stream scoped to the request.
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "greeter.Greeter.Hello", "arguments": {"name": "Cy"}}}
    status, headers, body = post(address, call, sid)
    check(headers.get("content-type", "").startswith("text/event-stream"),
          f"tools/call as SSE: {headers}")
    events = sse_events(body)
    check(events and events[-1].get("id") == 3 and
          events[-1]["result"]["structuredContent"]["greeting"] == "Hello, Cy!",
          f"SSE events: {events}")
    status, headers, body = post(address, call, sid, accept="application/json")
    check(headers.get("content-type") == "application/json" and
          json.loads(body)["result"]["isError"] is False, f"tools/call as JSON: {headers} {body}")

    status, _, body = post(address, {"jsonrpc": "2.0", "id": 4, "method": "ping"})
    check(status == 400 and "Mcp-Session-Id" in json.loads(body)["error"]["message"],
          f"no session: {status} {body}")
    status, _, body = post(address, {"jsonrpc": "2.0", "id": 5, "method": "ping"},
                           {"Mcp-Session-Id": "0" * 32})
    check(status == 404, f"unknown session: {status} {body}")
    status, _, body = post(address, {"jsonrpc": "2.0", "id": 6, "method": "ping"},
                           {"Mcp-Session-Id": session, "MCP-Protocol-Version": "1999-01-01"})
    check(status == 400 and "1999-01-01" in body.decode(), f"bad MCP-Protocol-Version: {status}")
    status, _, body = post(address, {"jsonrpc": "2.0", "id": 6, "method": "initialize",
                                     "params": {"protocolVersion": STATEFUL, "capabilities": {}}},
                           {"MCP-Protocol-Version": "not-a-version"})
    check(status == 400, f"bad MCP-Protocol-Version without a session: {status}")
    status, headers, body = plain(address, "GET", {"Accept": "text/event-stream"})
    check(status == 400 and b"Mcp-Session-Id" in body, f"GET without a session: {status} {body}")
    status, headers, _ = plain(address, "PUT")
    check(status == 405 and "GET" in headers.get("allow", ""), f"PUT: {status} {headers}")
    status, _, _ = plain(address, "POST", path="/other")
    check(status == 404, f"another path: {status}")

    # list_changed reaches the session with its next answer that can be a stream.
    extra, _ = start([service_binary, "warehouse", registry], "warehouse listening")
    deadline, seen = time.monotonic() + 20, False
    while time.monotonic() < deadline and not seen:
        status, headers, body = post(address, {"jsonrpc": "2.0", "id": 7, "method": "ping"}, sid)
        seen = any(m.get("method") == "notifications/tools/list_changed"
                   for m in messages_of(status, headers, body))
        if not seen:
            time.sleep(0.3)
    check(seen, "list_changed delivered on the session's SSE answer")
    stop(extra)

    status, _, _ = plain(address, "DELETE", {"Mcp-Session-Id": session})
    check(status == 204, f"DELETE session: {status}")
    status, _, _ = post(address, {"jsonrpc": "2.0", "id": 8, "method": "ping"}, sid)
    check(status == 404, f"ended session: {status}")

    # 2026-07-28 over HTTP: no session, headers mirror the body.
    status, headers, body = stateless_post(address, "server/discover", {})
    check(status == 200 and json.loads(body)["result"]["supportedVersions"] == [STATELESS] and
          "mcp-session-id" not in headers, f"server/discover: {status} {body}")
    status, headers, body = stateless_post(address, "tools/list", {})
    result = messages_of(status, headers, body)[0]["result"]
    check(result.get("resultType") == "complete" and "ttlMs" in result and
          result.get("cacheScope") == "public", f"stateless tools/list: {result}")
    status, headers, body = stateless_post(address, "tools/call", {
        "name": "greeter.Greeter.Hello", "arguments": {"name": "Di"}})
    answer = messages_of(status, headers, body)[-1]
    check(answer["result"]["structuredContent"]["greeting"] == "Hello, Di!", f"stateless call {answer}")

    encoded = "=?base64?" + base64.b64encode(b"greeter.Greeter.Hello").decode() + "?="
    status, headers, body = stateless_post(address, "tools/call", {
        "name": "greeter.Greeter.Hello", "arguments": {"name": "Bx"}}, {"Mcp-Name": encoded})
    check(status == 200 and "Hello, Bx!" in body.decode(), f"Base64 Mcp-Name: {status} {body}")

    # A client that goes away cancels its call.
    host, port = address.rsplit(":", 1)
    slow = json.dumps({"jsonrpc": "2.0", "id": 11, "method": "tools/call",
                       "params": {"name": "catalog.Catalog.Slow", "arguments": {"ms": 10000},
                                  "_meta": meta()}}).encode()
    raw = socket.create_connection((host, int(port)), timeout=10)
    raw.sendall(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Accept: application/json\r\nMCP-Protocol-Version: " + STATELESS.encode() +
                b"\r\nMcp-Method: tools/call\r\nMcp-Name: catalog.Catalog.Slow\r\n"
                b"Content-Length: " + str(len(slow)).encode() + b"\r\n\r\n" + slow)
    time.sleep(0.3)
    raw.close()

    def cancelled_count():
        status, headers, body = stateless_post(address, "tools/call", {
            "name": "catalog.Catalog.Stats", "arguments": {}})
        return messages_of(status, headers, body)[-1]["result"]["structuredContent"]["cancelled"]

    before = 1  # the stdio round cancelled one
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and cancelled_count() <= before:
        time.sleep(0.1)
    check(cancelled_count() == before + 1, "an abandoned HTTP tool call is cancelled")

    def expect_rpc_error(result, status_wanted, code, part, why):
        status, _, body = result
        try:
            error = json.loads(body)["error"]
        except (ValueError, KeyError):
            error = {}
        check(status == status_wanted and error.get("code") == code and
              part in error.get("message", ""),
              f"{why}: {status} {body[:300]!r}, expected {status_wanted} {code} {part!r}")
        return error

    expect_rpc_error(stateless_post(address, "tools/list", {}, {"Mcp-Method": "tools/call"}),
                     400, -32020, "does not match the body's method", "Mcp-Method mismatch")
    expect_rpc_error(stateless_post(address, "tools/list", {}, {"Mcp-Method": None}),
                     400, -32020, "missing Mcp-Method", "no Mcp-Method")
    expect_rpc_error(stateless_post(address, "tools/call", {"name": "greeter.Greeter.Hello",
                                                            "arguments": {"name": "x"}},
                                    {"Mcp-Name": "catalog.Catalog.Echo"}),
                     400, -32020, "does not match params.name", "Mcp-Name mismatch")
    expect_rpc_error(stateless_post(address, "tools/call", {"name": "greeter.Greeter.Hello"},
                                    {"Mcp-Name": None}),
                     400, -32020, "missing Mcp-Name", "no Mcp-Name")
    expect_rpc_error(stateless_post(address, "tools/list", {},
                                    {"MCP-Protocol-Version": "2025-11-25"}),
                     400, -32020, "does not match", "MCP-Protocol-Version mismatch")
    old = {"jsonrpc": "2.0", "id": 9, "method": "tools/list",
           "params": {"_meta": meta(**{"io.modelcontextprotocol/protocolVersion": "2099-01-01"})}}
    error = expect_rpc_error(post(address, old, {"MCP-Protocol-Version": "2099-01-01",
                                                 "Mcp-Method": "tools/list"}),
                             400, -32022, "not supported", "unsupported version")
    check(error.get("data", {}).get("supported") == [STATELESS], f"-32022 data: {error}")
    bare = {"jsonrpc": "2.0", "id": 10, "method": "tools/list"}
    expect_rpc_error(post(address, bare, {"MCP-Protocol-Version": STATELESS,
                                          "Mcp-Method": "tools/list"}),
                     400, -32020, "no params._meta", "2026-07-28 header, body without _meta")
    status, _, body = post(address, {"jsonrpc": "2.0", "method": "notifications/cancelled",
                                     "params": {"requestId": 1, "_meta": meta()}},
                           {"MCP-Protocol-Version": STATELESS,
                            "Mcp-Method": "notifications/cancelled"})
    check(status == 202 and body == b"", f"stateless notification: {status} {body!r}")

    # Malformed input and limits.
    expect_rpc_error(post(address, b'{"jsonrpc":"2.0","id":1,'), 400, -32700,
                     "not JSON", "broken JSON body")
    expect_rpc_error(post(address, [{"jsonrpc": "2.0", "id": 1, "method": "ping"}]), 400,
                     -32600, "batches", "batch body")
    expect_rpc_error(post(address, {"jsonrpc": "2.0", "id": 1, "method": "ping",
                                    "params": {"pad": "x" * 70000}}),
                     413, -32600, "exceeds the limit", "oversize body")
    expect_rpc_error(post(address, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                    "params": {"protocolVersion": STATEFUL}},
                          {"Origin": "http://evil.example"}),
                     403, -32600, "not allowed", "foreign Origin")
    status, _, _ = post(address, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                  "params": {"protocolVersion": STATEFUL, "capabilities": {}}},
                        {"Origin": "http://localhost:6274"})
    check(status == 200, f"a loopback Origin is allowed: {status}")
    status, _, _ = post(address, {"jsonrpc": "2.0", "id": 1, "method": "ping"},
                        accept="text/html")
    check(status == 406, f"Accept without JSON or SSE: {status}")

    check(stop(gateway) == 0, "micro mcp (HTTP) stops cleanly on SIGTERM")


def http_safety_tests(registry):
    gateway, address = start([micro, registry, "mcp", "--address=127.0.0.1:0",
                              "--token=s3cret", "--deny=catalog.Catalog.Fail",
                              "--rate_limit=1", "--origins=https://app.example"],
                             "micro mcp listening")
    address = address.removeprefix("http://").removesuffix("/mcp")
    auth = {"Authorization": "Bearer s3cret"}
    status, headers, body = stateless_post(address, "tools/list", {})
    check(status == 401 and headers.get("www-authenticate", "").startswith("Bearer"),
          f"no token: {status} {headers}")
    status, _, _ = stateless_post(address, "tools/list", {}, {"Authorization": "Bearer nope"})
    check(status == 401, f"wrong token: {status}")
    status, headers, body = stateless_post(address, "tools/list", {}, auth)
    result = json.loads(body)["result"]
    names = [t["name"] for t in result["tools"]]
    check(status == 200 and "catalog.Catalog.Fail" not in names and len(names) == 5,
          f"denied tool not listed: {names}")
    check(result.get("cacheScope") == "private", f"cacheScope with a token: {result}")
    status, headers, body = stateless_post(address, "tools/call",
                                           {"name": "catalog.Catalog.Fail",
                                            "arguments": {"reason": "x"}}, auth)
    answer = messages_of(status, headers, body)[-1]
    check(answer.get("error", {}).get("code") == -32602, f"denied tool call: {answer}")
    status, _, _ = stateless_post(address, "tools/list", {},
                                  dict(auth, Origin="https://app.example"))
    check(status == 200, f"allowed origin: {status}")
    status, _, _ = stateless_post(address, "tools/list", {},
                                  dict(auth, Origin="https://evil.example"))
    check(status == 403, f"other origin: {status}")
    # Rate limit: 1 per second per tool, so the second of two calls in a row is refused.
    texts = []
    for _ in range(2):
        status, headers, body = stateless_post(address, "tools/call", {
            "name": "greeter.Greeter.Hello", "arguments": {"name": "Ed"}}, auth)
        texts.append(messages_of(status, headers, body)[-1]["result"])
    check(texts[0].get("isError") is False, f"first call within the rate: {texts[0]}")
    check(texts[1].get("isError") is True and "rate limit" in text_of(texts[1]),
          f"second call over the rate: {texts[1]}")
    check(stop(gateway) == 0, "stops cleanly")


def flag_tests(registry):
    refused = subprocess.run([micro, registry, "mcp", "--address=0.0.0.0:0"],
                             capture_output=True, timeout=30)
    check(refused.returncode == 1 and b"--token" in refused.stderr,
          f"non-loopback without token refused: {refused.returncode} {refused.stderr!r}")
    typo = subprocess.run([micro, registry, "mcp", "--adress=127.0.0.1:1"],
                          capture_output=True, timeout=30)
    check(typo.returncode == 1 and b"did you mean" in typo.stderr and b"address" in typo.stderr,
          f"flag typo: {typo.returncode} {typo.stderr!r}")


def read_sse_event(response):
    """The next SSE event's data as JSON, read line by line as it arrives; None at the end."""
    data = []
    while True:
        line = response.readline()
        if not line:
            return None
        line = line.decode().rstrip("\r\n")
        if line == "":
            if data:
                return json.loads("\n".join(data))
            continue
        if line.startswith("data:"):
            data.append(line[5:].lstrip())


def open_sse(address, method, body, headers):
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=15)
    all_headers = {"Accept": "application/json, text/event-stream"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        all_headers.update({"Content-Type": "application/json", "Content-Length": str(len(data))})
    all_headers.update(headers)
    connection.request(method, "/mcp", body=data, headers=all_headers)
    return connection, connection.getresponse()


def stream_tests():
    """A stream endpoint as a tool: progress as messages come, then the result; the GET stream."""
    registry = f"--registry=file?dir={tempfile.mkdtemp(prefix='mcp-stream-registry-')}"
    start([service_binary, "ticker", registry], "ticker listening")
    gateway, address = start([micro, registry, "mcp", "--address=127.0.0.1:0"],
                             "micro mcp listening")
    address = address.removeprefix("http://").removesuffix("/mcp")
    status, headers, body = post(address, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                           "params": {"protocolVersion": STATEFUL,
                                                      "capabilities": {}}})
    sid = {"Mcp-Session-Id": headers.get("mcp-session-id", ""), "MCP-Protocol-Version": STATEFUL}
    post(address, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
    status, headers, body = post(address, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, sid)
    tools = {tool["name"]: tool for tool in messages_of(status, headers, body)[0]["result"]["tools"]}
    tool = tools.get("ticker.Ticker.Count", {})
    check("Streams" in tool.get("description", "") and
          "messages" in tool.get("outputSchema", {}).get("properties", {}),
          f"the stream endpoint is a tool that says it streams: {tool}")

    # tools/call on SSE: each message as notifications/progress, read as it comes, then the result.
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "ticker.Ticker.Count", "arguments": {"count": 4},
                       "_meta": {"progressToken": "tick-token"}}}
    connection, response = open_sse(address, "POST", call, sid)
    check(response.status == 200 and response.getheader("Content-Type") == "text/event-stream" and
          response.getheader("Transfer-Encoding") == "chunked",
          f"streamed tools/call: {response.status} {response.getheaders()}")
    progress = []
    result = None
    while True:
        event = read_sse_event(response)
        if event is None:
            break
        if event.get("method") == "notifications/progress":
            check(result is None, f"progress after the result: {event}")
            progress.append(event["params"])
        elif event.get("id") == 3:
            result = event["result"]
    connection.close()
    check([p.get("progress") for p in progress] == [1, 2, 3, 4] and
          all(p.get("progressToken") == "tick-token" for p in progress) and
          json.loads(progress[0]["message"]) == {"tick": 1, "of": 4},
          f"progress notifications: {progress}")
    messages = (result or {}).get("structuredContent", {}).get("messages")
    check(messages == [{"tick": i, "of": 4} for i in range(1, 5)] and result["isError"] is False,
          f"stream tool result: {result}")

    # Without a progressToken: no progress, the same result.
    del call["params"]["_meta"]
    call["id"] = 4
    status, headers, body = post(address, call, sid)
    events = sse_events(body)
    check(len(events) == 1 and len(events[0]["result"]["structuredContent"]["messages"]) == 4,
          f"stream tool without progressToken: {events}")

    # GET opens the session's stream: list_changed comes at once when a service registers.
    connection, response = open_sse(address, "GET", None, sid)
    check(response.status == 200 and response.getheader("Content-Type") == "text/event-stream",
          f"GET stream: {response.status} {response.getheaders()}")
    start([service_binary, "catalog", registry], "catalog listening")
    event = read_sse_event(response)
    check(event is not None and event.get("method") == "notifications/tools/list_changed",
          f"list_changed on the GET stream: {event}")
    connection.close()
    status, _, body = plain(address, "GET", {"Accept": "text/event-stream",
                                             "Mcp-Session-Id": "0" * 32})
    check(status == 404, f"GET for an unknown session: {status} {body}")

    # stdio: progress lines before the result.
    client = StdioClient([micro, registry, "mcp"])
    client.request("initialize", {"protocolVersion": STATEFUL, "capabilities": {}})
    client.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    answer = client.request("tools/call", {"name": "ticker.Ticker.Count",
                                           "arguments": {"count": 3},
                                           "_meta": {"progressToken": 7}})
    lines = [json.loads(line) for line in client.lines]
    progress_at = [i for i, m in enumerate(lines) if m.get("method") == "notifications/progress"]
    answer_at = [i for i, m in enumerate(lines) if m.get("id") == client.next_id]
    check(len(progress_at) == 3 and answer_at and max(progress_at) < answer_at[0] and
          len(result_of(answer)["structuredContent"]["messages"]) == 3,
          f"stdio progress before the result: {lines[-5:]}")
    client.close()


try:
    main()
finally:
    for process in processes:
        stop(process)

if failures:
    print(f"{len(failures)} failure(s)")
    sys.exit(1)
print("all micro mcp checks passed")
