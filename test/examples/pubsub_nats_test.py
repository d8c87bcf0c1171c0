#!/usr/bin/env python3
"""examples/pubsub across separate processes on a real nats-server: a plain subscriber gets
every event, a queue group of two shares them (exactly one member per event)."""
import re
import signal
import socket
import subprocess
import sys
import threading
import time

pubsub = sys.argv[1]
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
nats = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
processes = []
try:
    deadline = time.monotonic() + 10
    while True:  # wait for the server to accept connections
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    broker = f"--broker=nats://127.0.0.1:{port}"
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

    # Collect each subscriber's lines on a thread; stop them once every event has arrived.
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
    nats.terminate()
    nats.wait(timeout=10)

ok = True
if sorted(received["audit"]) != list(range(1, count + 1)):
    print("FAIL: the plain subscriber did not get every event:", received["audit"])
    ok = False
billing = received["billing-1"] + received["billing-2"]
if sorted(billing) != list(range(1, count + 1)):
    print("FAIL: the queue group did not share every event exactly once:", sorted(billing))
    ok = False
if not received["billing-1"] or not received["billing-2"]:
    print("FAIL: one queue member got nothing")
    ok = False
print("pubsub on nats:", "ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
