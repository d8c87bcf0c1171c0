#!/usr/bin/env python3
"""The admin endpoint of a running greeter: /metrics after calls, /health/live and /health/ready,
readiness flipping to 503 on SIGTERM while the service drains, the bearer token, and the pages.

Then `micro health` and `micro stats` find the node's admin address in the registry.

usage: admin_test.py <greeter-server> <greeter-client> <micro>
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

server_program, client_program, micro_program = sys.argv[1], sys.argv[2], sys.argv[3]
TOKEN = "t0ken-for-the-test"


def wait_until(condition, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def get(address, path, token=None, accept=None):
    request = urllib.request.Request("http://" + address + path)
    if token:
        request.add_header("Authorization", "Bearer " + token)
    if accept:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


def sample(text, name, labels):
    """The value of the sample `name` whose labels include every pair in `labels`."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name + "{"):
            continue
        if all('%s="%s"' % pair in line for pair in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


with tempfile.TemporaryDirectory() as directory:
    registry = "file?dir=" + directory
    stderr_path = os.path.join(directory, "server.err")
    with open(stderr_path, "w") as stderr_file:
        server = subprocess.Popen(
            [server_program, "--registry=" + registry, "--admin=127.0.0.1:0",
             "--admin_token=" + TOKEN, "--wrappers=metrics", "--shutdown_delay=3s"],
            stdout=subprocess.PIPE, stderr=stderr_file, text=True)
    try:
        def admin_address():
            with open(stderr_path) as f:
                found = re.search(r"admin listening on (127\.0\.0\.1:\d+)", f.read())
            return found and found.group(1)
        admin = wait_until(admin_address, "the admin address on stderr")
        listening = wait_until(
            lambda: re.search(r"listening on (\S+:\d+)", server.stdout.readline()),
            "the greeter to listen")
        greeter_address = listening.group(1)

        # Probes are open without the token; ready once started.
        status, _, body = wait_until(
            lambda: (lambda r: r if r[0] == 200 else None)(get(admin, "/health/ready")),
            "readiness")
        checks = json.loads(body)["checks"]
        for name in ("listening", "registered", "broker", "draining"):
            assert checks[name]["ok"], (name, checks)
        status, _, body = get(admin, "/health/live")
        assert status == 200 and json.loads(body)["status"] == "ok", body

        # Calls, one of them failing (an empty name is a 400).
        subprocess.run([client_program, "--registry=" + registry, "5", "Ann"], check=True,
                       stdout=subprocess.DEVNULL, timeout=30)
        failed = subprocess.run([client_program, "--registry=" + registry, "1", ""],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)
        assert failed.returncode != 0

        # The token guards everything but the probes.
        status, headers, _ = get(admin, "/metrics")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), status
        assert get(admin, "/metrics", token="wrong")[0] == 401
        assert get(admin, "/metrics", token=TOKEN + "x")[0] == 401

        status, headers, text = get(admin, "/metrics", token=TOKEN)
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        served = {"chain": "server", "service": "greeter", "endpoint": "Greeter.Hello"}
        assert sample(text, "micro_requests_total", dict(served, status="success")) == 5, text
        assert sample(text, "micro_requests_total", dict(served, status="400")) == 1, text
        assert sample(text, "micro_request_duration_seconds_count",
                      dict(served, status="success")) == 5
        assert sample(text, "micro_request_duration_seconds_bucket",
                      dict(served, status="success", le="+Inf")) == 5
        assert sample(text, "micro_server_handled_total", {"service": "greeter"}) == 6
        assert sample(text, "micro_messages_total",
                      {"chain": "publish", "topic": "greeter.greeted"}) == 5
        assert sample(text, "micro_ready", {"service": "greeter"}) == 1
        started = [l for l in text.splitlines() if l.startswith("process_start_time_seconds ")]
        assert started and abs(float(started[0].split()[1]) - time.time()) < 120, started

        status, headers, text = get(admin, "/metrics", token=TOKEN,
                                    accept="application/openmetrics-text; version=1.0.0")
        assert headers["Content-Type"].startswith("application/openmetrics-text"), headers
        assert text.endswith("# EOF\n") and "# TYPE micro_requests counter" in text

        # The pages: text for curl, HTML for browsers, the token redacted in the config.
        status, _, page = get(admin, "/", token=TOKEN)
        assert status == 200 and "service: greeter" in page, page
        assert "admin_token=***" in page and TOKEN not in page, page
        assert re.search(r"server greeter Greeter\.Hello [0-9.]+ 16\.7%", page), page
        status, headers, html = get(admin, "/", token=TOKEN, accept="text/html")
        assert headers["Content-Type"].startswith("text/html") and "<table>" in html
        status, _, body = get(admin, "/connections?format=json", token=TOKEN)
        assert json.loads(body)["server"]["handled"] == 6, body
        status, headers, body = get(admin, "/connections", token=TOKEN, accept="application/json")
        assert headers["Content-Type"] == "application/json" and "rows" in json.loads(body)
        for bad in ("?format=xml", "?formt=json", "?format"):
            status, _, body = get(admin, "/connections" + bad, token=TOKEN)
            assert status == 400 and "bad query parameter '" + bad[1:] + "'" in body, (bad, body)

        # One row per open connection: a live client socket shows with its own port as the
        # peer, and its row goes once it closes. The greeter clients that ran are gone.
        def rows():
            return json.loads(get(admin, "/connections?format=json", token=TOKEN)[2])["rows"]
        assert not [r for r in rows() if r["side"] == "server"], rows()
        import socket
        host, port = greeter_address.rsplit(":", 1)
        live = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
        peer = "127.0.0.1:%d" % live.getsockname()[1]
        row = wait_until(lambda: [r for r in rows() if r["peer"] == peer], "the row of " + peer)
        assert row[0]["transport"] == "tcp" and row[0]["side"] == "server", row
        assert row[0]["local"].endswith(":" + port) and row[0]["in_flight"] == 0, row
        status, headers, text = get(admin, "/connections", token=TOKEN)  # curl: text
        assert headers["Content-Type"].startswith("text/plain"), headers
        assert re.search(r"^tcp server " + re.escape(peer) + " ", text, re.M), text
        status, headers, html = get(admin, "/connections", token=TOKEN, accept="text/html")
        assert headers["Content-Type"].startswith("text/html") and "<td>" + peer in html, html
        live.close()
        wait_until(lambda: not [r for r in rows() if r["peer"] == peer], "the row to go")
        status, _, body = get(admin, "/registry", token=TOKEN)
        names = [s["name"] for s in json.loads(body)["services"]]
        assert "greeter" in names, body
        nodes = [n for s in json.loads(body)["services"] for n in s["nodes"]]
        assert any(n["metadata"].get("admin") == admin for n in nodes), nodes
        assert get(admin, "/nothing", token=TOKEN)[0] == 404

        # The CLI reads the admin address from the node metadata.
        def micro(*arguments):
            return subprocess.run([micro_program, "--registry=" + registry] + list(arguments),
                                  capture_output=True, text=True, timeout=30)
        health = micro("health", "greeter")
        assert health.returncode == 0, health
        assert "admin " + admin + ": ready (200)" in health.stdout, health.stdout
        assert "ok   registered" in health.stdout, health.stdout
        stats = micro("--admin_token=" + TOKEN, "stats", "greeter")
        assert stats.returncode == 0 and "server greeter Greeter.Hello" in stats.stdout, stats
        refused = micro("stats", "greeter")
        assert refused.returncode == 1 and "401" in refused.stdout, refused
        missing = micro("health", "nobody")
        assert missing.returncode == 1 and "nobody" in missing.stderr, missing

        # SIGTERM: not ready at once, still alive (shutdown_delay), then gone.
        server.send_signal(signal.SIGTERM)
        status, _, body = wait_until(
            lambda: (lambda r: r if r[0] == 503 else None)(get(admin, "/health/ready")),
            "readiness to flip on SIGTERM", timeout=2.5)
        assert json.loads(body)["checks"]["draining"]["ok"] is False, body
        assert get(admin, "/health/live")[0] == 200  # alive while draining
        draining = micro("health", "greeter")  # still registered during shutdown_delay
        assert draining.returncode == 1 and "NOT READY (503)" in draining.stdout, draining
        assert server.poll() is None
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
print("admin endpoint ok")
