#!/usr/bin/env python3
"""A service on transport=http called by an ordinary HTTP client (Python's http.client) in
Go-Micro's format, written from plugins/http/README.md with Go's canonical header casing:
answers, kept-alive connections, Micro-Error for errors, duplicated headers joined, Timeout as
the deadline (408 once passed), 413 from the Content-Length before the body is sent, and the
JSON of a refusal in the body."""
import http.client
import json
import subprocess
import sys

service_binary = sys.argv[1]
failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
        print("FAIL:", message)


def go_headers(endpoint, extra=()):
    """The headers Go-Micro's http transport sends, in Go's canonical casing."""
    return [
        ("Content-Type", "application/json"),
        ("Accept", "application/json"),
        ("Micro-Id", "42"),
        ("Micro-Service", "greeter"),
        ("Micro-Endpoint", endpoint),
        ("Micro-Method", endpoint),
        ("Timeout", "5000000000"),
        *extra,
    ]


def post(connection, endpoint, body, extra=()):
    """POST / with every header given as is (repeats allowed), then the whole answer."""
    data = body.encode()
    connection.putrequest("POST", "/", skip_accept_encoding=True)
    for name, value in go_headers(endpoint, extra):
        connection.putheader(name, value)
    connection.putheader("Content-Length", str(len(data)))
    connection.endheaders(data)
    response = connection.getresponse()
    return response, response.read()


service = subprocess.Popen([service_binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           text=True)
try:
    address = service.stdout.readline().strip()
    check(address.startswith("127.0.0.1:"), f"service did not start: {address!r}")
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)

    # An answer, and the same connection for the next call.
    response, body = post(connection, "Greeter.Hello", '{"name":"Ada"}')
    check(response.status == 200, f"status {response.status}")
    check(json.loads(body) == {"name": "Hello Ada"}, f"body {body!r}")
    check(response.getheader("Content-Type") == "application/json", "no Content-Type")
    check(response.getheader("Micro-Id") == "42", "Micro-Id not echoed")
    check(response.getheader("Micro-Error") is None, "an error on success")
    first_socket = connection.sock
    response, body = post(connection, "Greeter.Hello", '{"name":"Grace"}')
    check(json.loads(body) == {"name": "Hello Grace"}, f"second body {body!r}")
    check(connection.sock is first_socket, "the connection was not kept alive")

    # Metadata: every other header, repeated names joined with commas, the deadline from Timeout.
    response, body = post(connection, "Echo.Metadata", "{}",
                          [("Traceparent",
                            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                           ("Tracestate", "a=1"), ("Tracestate", "b=2"), ("Baggage", "k=v")])
    seen = json.loads(body)
    check(seen.get("Traceparent") ==
          "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", f"metadata {seen}")
    check(seen.get("Tracestate") == "a=1,b=2", f"tracestate not joined: {seen}")
    check(seen.get("Baggage") == "k=v", f"baggage {seen}")
    check(seen.get("(deadline)") is True, "Timeout gave no deadline")
    check("Micro-Service" not in seen and "Timeout" not in seen, f"call headers in {seen}")

    # Errors: 200 with Micro-Error.
    response, body = post(connection, "Greeter.Helo", "{}")
    check(response.status == 200, f"unknown endpoint status {response.status}")
    error = json.loads(response.getheader("Micro-Error") or "{}")
    check(error.get("code") == 404 and error.get("status") == "Not Found", f"error {error}")
    check("has no endpoint 'Greeter.Helo'" in error.get("detail", ""), f"detail {error}")

    response, body = post(connection, "Greeter.Hello", '{"name":')
    error = json.loads(response.getheader("Micro-Error") or "{}")
    check(error.get("code") == 400, f"undecodable body: {error}")

    # A second Timeout header is refused, not guessed between.
    response, body = post(connection, "Greeter.Hello", "{}", [("Timeout", "1")])
    error = json.loads(response.getheader("Micro-Error") or "{}")
    check(error.get("code") == 400 and
          error.get("detail") == "http: header Timeout appears more than once",
          f"two Timeouts: {error}")
    connection.close()

    # The fewest headers a caller needs; a Timeout of 1 ns has passed by the time the call is
    # dispatched.
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest("POST", "/", skip_accept_encoding=True)
    for name, value in [("Micro-Service", "greeter"), ("Micro-Endpoint", "Greeter.Hello"),
                        ("Timeout", "1"), ("Content-Length", "2")]:
        connection.putheader(name, value)
    connection.endheaders(b"{}")
    response = connection.getresponse()
    response.read()
    error = json.loads(response.getheader("Micro-Error") or "{}")
    check(error.get("code") == 408, f"Timeout 1 ns: {error}")
    connection.close()

    # 413 from the Content-Length alone: the body is never sent.
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest("POST", "/", skip_accept_encoding=True)
    for name, value in go_headers("Greeter.Hello"):
        connection.putheader(name, value)
    connection.putheader("Content-Length", str(10 * 1024 * 1024))
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    check(response.status == 413, f"large body status {response.status}")
    refusal = json.loads(body or b"{}")
    check(refusal.get("detail") ==
          "http: request body of 10485760 bytes exceeds the limit of 65536 bytes",
          f"413 body {body!r}")
    check(json.loads(response.getheader("Micro-Error") or "{}") == refusal,
          "Micro-Error and the body differ")
    connection.close()
finally:
    service.stdin.close()
    try:
        service.wait(timeout=15)
    except subprocess.TimeoutExpired:
        service.kill()
        service.wait()
        failures.append("the service did not stop")

check(service.returncode == 0, f"service exit status {service.returncode}")
print(f"{len(failures)} failures" if failures else "ok")
sys.exit(1 if failures else 0)
