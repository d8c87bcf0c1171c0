#!/usr/bin/env python3
"""The greeter example across processes: two servers found through the file registry, the
client's calls alternating between them (roundrobin), and a SIGTERM'd server leaving the
registry at once so later calls go to the one left.

    greeter_test.py SERVER CLIENT [--transport=http]

The same binaries run on any transport; only the configuration string changes."""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

failures = []


def take_transport(argv):
    """Removes --transport=NAME from argv and returns NAME (tcp when absent)."""
    for argument in list(argv):
        if argument.startswith("--transport="):
            argv.remove(argument)
            return argument.split("=", 1)[1]
    return "tcp"


server_binary = client_binary = None
transport = "tcp"
if __name__ == "__main__":
    transport = take_transport(sys.argv)
    server_binary, client_binary = sys.argv[1], sys.argv[2]


def check(condition, message):
    if not condition:
        failures.append(message)
        print("FAIL:", message)


def wait_for_line(process, pattern, timeout):
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if re.search(pattern, line):
            return line
    raise RuntimeError(f"no line matching {pattern!r} within {timeout}s; got {lines!r}")


def run_client(flags, count):
    result = subprocess.run([CLIENT[0], *flags, str(count), "Tester"], capture_output=True,
                            text=True, timeout=30)
    check(result.returncode == 0, f"client exited {result.returncode}: {result.stderr}")
    return re.findall(r"Hello, Tester! \(served by (\S+)\)", result.stdout)


CLIENT = [None]

# What a server of each transport answers to bytes it does not understand: proof that the
# string really changed what goes over the wire.
GREETING_PROBE = b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
# grpc (h2c) answers with its connection preface, an HTTP/2 SETTINGS frame (type 4 in the
# 9-byte frame header), whatever the client sent.
ANSWER_CHECKS = {
    "tcp": lambda answer: answer.startswith(b"MT"),
    "http": lambda answer: answer.startswith(b"HTTP/1."),
    "grpc": lambda answer: len(answer) >= 9 and answer[3] == 4,
}


def wire_answer(address):
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as probe:
        probe.sendall(GREETING_PROBE)
        return probe.recv(64)


def run_scenario(server_binary, client_binary, registry, transport="tcp"):
    """Two servers and a client on `registry` and `transport`; returns the list of failures."""
    failures.clear()
    CLIENT[0] = client_binary
    flags = [f"--registry={registry}", f"--transport={transport}"]
    servers = []
    try:
        addresses = []
        for _ in range(2):
            server = subprocess.Popen([server_binary, *flags], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
            servers.append(server)
            line = wait_for_line(server, r"listening on", 10)
            addresses.append(line.split()[-1])
        print(registry, transport, "servers:", addresses)
        answer = wire_answer(addresses[0])
        check(ANSWER_CHECKS[transport](answer),
              f"the server does not speak {transport}: it answered {answer!r}")

        served = run_client(flags + ["--selector=roundrobin"], 6)
        print("served by:", served)
        check(len(served) == 6, f"expected 6 answers, got {len(served)}")
        check(sorted(set(served)) == sorted(addresses), f"calls did not reach both servers: {served}")
        check(all(a != b for a, b in zip(served, served[1:])), f"calls did not alternate: {served}")
        check(served.count(addresses[0]) == 3, f"uneven split: {served}")

        # SIGTERM: deregister at once and exit cleanly.
        servers[0].send_signal(signal.SIGTERM)
        wait_for_line(servers[0], r"greeter stopped", 15)
        check(servers[0].wait(timeout=15) == 0, "SIGTERM'd server did not exit 0")
        served = run_client(flags + ["--selector=roundrobin"], 4)
        check(served == [addresses[1]] * 4, f"calls after SIGTERM went to {served}")
    finally:
        for server in servers:
            if server.poll() is None:
                server.kill()
            server.wait(timeout=10)
    return list(failures)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as registry_dir:
        problems = run_scenario(server_binary, client_binary, f"file?dir={registry_dir}",
                                transport)
    print(f"greeter example on {transport}:", "FAILED" if problems else "ok")
    sys.exit(1 if problems else 0)
