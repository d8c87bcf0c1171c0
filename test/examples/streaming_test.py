#!/usr/bin/env python3
"""The streaming example across processes: streaming-server and streaming-client found
through the file registry. The ticker's ticks arrive in order, the upload's summary matches a
checksum computed here, two chat participants hear each other, a refused request is a clear
error with a non-zero exit, and SIGTERM stops the server cleanly.

    streaming_test.py SERVER CLIENT"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
        print("FAIL:", message)


def wait_for_line(process, pattern, timeout):
    """Reads process.stdout until a line matches; the lines read are returned too."""
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if re.search(pattern, line):
            return line, lines
    raise RuntimeError(f"no line matching {pattern!r} within {timeout}s; got {lines!r}")


def fnv1a64(data):
    state = 0xcbf29ce484222325
    for byte in data:
        state ^= byte
        state = (state * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{state:016x}"


def main(server_binary, client_binary):
    with tempfile.TemporaryDirectory() as work:
        flags = [f"--registry=file?dir={work}/registry"]

        def client(*arguments, stdin=None):
            return subprocess.run([client_binary, *flags, *arguments], input=stdin,
                                  capture_output=True, text=True, timeout=30)

        server = subprocess.Popen([server_binary, *flags], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        participants = []
        try:
            wait_for_line(server, r"streaming listening on", 10)

            # Server stream: count ticks, in order.
            result = client("ticker", "ACME", "7", "5")
            check(result.returncode == 0, f"ticker exited {result.returncode}: {result.stderr}")
            ticks = re.findall(r"^tick (\d+) ACME (\S+)$", result.stdout, re.M)
            check([int(sequence) for sequence, _ in ticks] == list(range(1, 8)),
                  f"ticks out of order or missing: {result.stdout!r}")
            check("ticker done: 7 ticks" in result.stdout, f"no ticker summary: {result.stdout!r}")

            result = client("ticker", "ACME", "0")
            check(result.returncode != 0, "a ticker of 0 ticks was not refused")
            check("400" in result.stderr and "count must be 1..100000, got 0" in result.stderr,
                  f"unclear refusal: {result.stderr!r}")

            # Client stream: the summary of a 50,000-byte file of every byte value.
            data = bytes(range(256)) * 195 + bytes(80)
            path = os.path.join(work, "upload.bin")
            with open(path, "wb") as out:
                out.write(data)
            result = client("upload", path)
            check(result.returncode == 0, f"upload exited {result.returncode}: {result.stderr}")
            expected = f"uploaded 13 chunks, {len(data)} bytes, checksum {fnv1a64(data)} (matches)"
            check(expected in result.stdout, f"expected {expected!r}, got {result.stdout!r}")
            empty = os.path.join(work, "empty.bin")
            open(empty, "wb").close()
            result = client("upload", empty)
            check(f"uploaded 0 chunks, 0 bytes, checksum {fnv1a64(b'')}" in result.stdout,
                  f"empty upload: {result.stdout!r} {result.stderr!r}")

            # Bidirectional: Bob joins (his own line comes back: he is in the room), then Ada
            # speaks, and Bob hears her.
            bob = subprocess.Popen([client_binary, *flags, "chat", "Bob"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            participants.append(bob)
            bob.stdin.write("hi, anyone?\n")
            bob.stdin.flush()
            wait_for_line(bob, r"^Bob: hi, anyone\?$", 10)
            result = client("chat", "Ada", stdin="hello Bob\nbye\n")
            check(result.returncode == 0, f"Ada's chat exited {result.returncode}: {result.stderr}")
            check(result.stdout.splitlines()[-2:] == ["Ada: hello Bob", "Ada: bye"],
                  f"Ada did not hear herself: {result.stdout!r}")
            _, heard = wait_for_line(bob, r"^Ada: bye$", 10)
            check([line.strip() for line in heard] == ["Ada: hello Bob", "Ada: bye"],
                  f"Bob heard {heard!r}")
            bob.stdin.close()  # Bob leaves
            check(bob.wait(timeout=10) == 0, f"Bob's chat exited {bob.returncode}")

            server.send_signal(signal.SIGTERM)
            wait_for_line(server, r"streaming stopped", 15)
            check(server.wait(timeout=15) == 0, "the SIGTERM'd server did not exit 0")
        finally:
            for process in participants + [server]:
                if process.poll() is None:
                    process.kill()
                process.wait(timeout=10)
    print("streaming example:", "FAILED" if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
