#!/usr/bin/env python3
"""examples/pubsub across separate processes on a real server, chosen by the broker string
alone: redis (pub/sub mode), redis with ?mode=streams, or mqtt (mosquitto). A plain subscriber
gets every event; a queue group of two shares them (exactly one member per event).

usage: pubsub_example_test.py <pubsub binary> redis|redis-streams|mqtt
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

pubsub, kind = sys.argv[1], sys.argv[2]
count = 50


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_line(process, pattern, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if re.search(pattern, line):
            return line
    raise RuntimeError(f"no line matching {pattern!r}")


port = free_port()
directory = tempfile.mkdtemp(prefix="micro-pubsub-example-")
if kind.startswith("redis"):
    server_command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no", "--dir", directory]
    broker = f"--broker=redis://127.0.0.1:{port}" + ("?mode=streams" if kind == "redis-streams" else "")
else:
    config = os.path.join(directory, "mosquitto.conf")
    with open(config, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    server_command = ["mosquitto", "-c", config]
    broker = f"--broker=mqtt://127.0.0.1:{port}"

server = subprocess.Popen(server_command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
processes = []
received = {}
try:
    deadline = time.monotonic() + 10
    while True:  # wait for the server to accept connections
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise
            time.sleep(0.05)
    members = {"audit": "", "billing-1": "billing", "billing-2": "billing"}
    for name, queue in members.items():
        args = [pubsub, broker, "--registry=memory", "subscriber", name] + ([queue] if queue else [])
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        processes.append((name, process))
        wait_for_line(process, "subscribed", 10)

    result = subprocess.run([pubsub, broker, "publisher", str(count)], capture_output=True,
                            text=True, timeout=30)
    print(result.stdout, result.stderr)
    assert result.returncode == 0, "publisher failed"

    received = {name: [] for name in members}
    lock = threading.Lock()

    def collect(name, process):
        for line in process.stdout:
            match = re.search(rf"{name} got order (\d+)", line)
            if match:
                with lock:
                    received[name].append(int(match.group(1)))

    readers = [threading.Thread(target=collect, args=item) for item in processes]
    for reader in readers:
        reader.start()

    def complete():
        with lock:
            return (len(received["audit"]) >= count and
                    len(received["billing-1"]) + len(received["billing-2"]) >= count)

    deadline = time.monotonic() + 15
    while not complete() and time.monotonic() < deadline:
        time.sleep(0.01)
    for name, process in processes:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    for reader in readers:
        reader.join(timeout=15)
    for name in members:
        print(name, "received", len(received[name]))
finally:
    for _, process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
    server.terminate()
    server.wait(timeout=10)
    subprocess.run(["rm", "-rf", directory])

ok = True
if sorted(received.get("audit", [])) != list(range(1, count + 1)):
    print("FAIL: the plain subscriber did not get every event:", received.get("audit"))
    ok = False
billing = received.get("billing-1", []) + received.get("billing-2", [])
if sorted(billing) != list(range(1, count + 1)):
    print("FAIL: the queue group did not share every event exactly once:", sorted(billing))
    ok = False
# No share per member is promised: in pubsub mode the first member to claim a message takes it,
# and in streams mode one XREADGROUP may take a whole burst, so a member lagging on a loaded
# machine can get none (seen in CI: 0 and 50). The group's promise is exactly once, above.
# MQTT 5 shared subscriptions are dealt out by the server, so there both members get some.
if kind == "mqtt" and (not received.get("billing-1") or not received.get("billing-2")):
    print("FAIL: one queue member got nothing")
    ok = False
print(f"pubsub on {kind}:", "ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
