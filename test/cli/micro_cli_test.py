#!/usr/bin/env python3
"""The `micro` command against a running greeter: plugins, services, describe, call, and clear
errors with a non-zero exit for a bad endpoint and an unknown command."""
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time

micro, server_binary = sys.argv[1], sys.argv[2]
failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
        print("FAIL:", message)


def run(*args):
    return subprocess.run([micro, *args], capture_output=True, text=True, timeout=30)


plugins = run("plugins")
check(plugins.returncode == 0, "micro plugins failed")
for name in ("registry/file", "registry/memory", "transport/tcp", "selector/roundrobin", "broker/memory"):
    check(name in plugins.stdout, f"micro plugins does not list {name}")
check("max_frame (int, default 4194304, 64..4294967295)" in plugins.stdout,
      "plugin options (type, default, range) are not shown")

with tempfile.TemporaryDirectory() as registry_dir:
    registry = f"--registry=file?dir={registry_dir}"
    server = subprocess.Popen([server_binary, registry], stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        check("listening on" in line, f"server did not start: {line!r}")
        address = line.split()[-1]

        services = run(registry, "services")
        check(services.stdout.split() == ["greeter", "latest"], f"services: {services.stdout!r}")

        described = json.loads(run(registry, "describe", "greeter").stdout)
        check(described[0]["name"] == "greeter", "describe: wrong service")
        check(described[0]["nodes"][0]["address"] == address, "describe: wrong node address")
        hello = described[0]["endpoints"][0]
        check(hello["name"] == "Greeter.Hello", "describe: no endpoint")
        # The typed handler's C++ types, in Go-Micro's Value form.
        check(hello["request"] == {"name": "HelloRequest", "type": "object", "values": [
            {"name": "name", "type": "string", "values": []}]},
            f"describe: request schema {hello['request']!r}")
        check(hello["response"]["name"] == "HelloResponse" and
              [(v["name"], v["type"]) for v in hello["response"]["values"]] ==
              [("greeting", "string"), ("served_by", "string")],
              f"describe: response schema {hello['response']!r}")

        called = run(registry, "call", "greeter", "Greeter.Hello", '{"name":"Ada"}')
        check(called.returncode == 0, f"call failed: {called.stderr}")
        check(json.loads(called.stdout) == {"greeting": "Hello, Ada!", "served_by": address},
              f"call answered {called.stdout!r}")

        bad = run(registry, "call", "greeter", "Greeter.Nope")
        check(bad.returncode == 1, "a failed call must exit 1")
        check("404 Not Found: service greeter has no endpoint 'Greeter.Nope'" in bad.stderr,
              f"bad endpoint error: {bad.stderr!r}")
        bad_json = run(registry, "call", "greeter", "Greeter.Hello", "{name:")
        check(bad_json.returncode == 1 and "parse error" in bad_json.stderr,
              f"malformed JSON error: {bad_json.stderr!r}")
        bad_config = run("--registry=nosuch", "services")
        check(bad_config.returncode == 1 and "no registry plugin named 'nosuch'" in bad_config.stderr,
              f"unknown plugin error: {bad_config.stderr!r}")
    finally:
        server.terminate()
        server.wait(timeout=15)

# The command's output is its answer: a publish over NATS used to end with a routine
# "connection closed" line on stderr. Quiet by default; --log_level brings the lines back.
nats_server = shutil.which("nats-server")
if nats_server:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nats_port = probe.getsockname()[1]
    nats = subprocess.Popen([nats_server, "-a", "127.0.0.1", "-p", str(nats_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        broker = f"--broker=nats://127.0.0.1:{nats_port}"
        published = None
        for _ in range(200):  # until the server accepts connections (bounded: 10 s)
            published = run(broker, "publish", "cli.events", '{"n":1}')
            if published.returncode == 0:
                break
            time.sleep(0.05)
        check(published.returncode == 0, f"publish over nats failed: {published.stderr!r}")
        check(published.stderr == "", f"publish over nats printed: {published.stderr!r}")
        loud = run(broker, "--log_level=debug", "publish", "cli.events", '{"n":2}')
        check(loud.returncode == 0 and "[micro] debug broker nats: connection closed" in loud.stderr,
              f"--log_level=debug shows no debug line: {loud.stderr!r}")
    finally:
        nats.terminate()
        nats.wait(timeout=15)
else:
    print("nats-server not installed: the quiet publish check is skipped")

unknown = run("bogus")
check(unknown.returncode == 2 and "unknown command 'bogus'" in unknown.stderr, "unknown command")
print("micro command:", "FAILED" if failures else "ok")
sys.exit(1 if failures else 0)
