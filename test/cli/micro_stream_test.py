#!/usr/bin/env python3
"""`micro stream <service> <endpoint>` against examples/streaming's server: JSON lines from
stdin are sent and every message received is printed as one JSON line, for a server stream,
a client stream and a bidirectional one; the stream's end ends the command even while stdin
is still open; bad input and refused streams go to stderr with a non-zero exit.

    micro_stream_test.py MICRO STREAMING_SERVER"""
import base64
import json
import re
import subprocess
import sys
import tempfile
import time

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
        print("FAIL:", message)


def main(micro, server_binary):
    with tempfile.TemporaryDirectory() as work:
        flags = [f"--registry=file?dir={work}"]

        def stream(service, endpoint, lines):
            return subprocess.run([micro, *flags, "stream", service, endpoint],
                                  input="".join(line + "\n" for line in lines),
                                  capture_output=True, text=True, timeout=30)

        server = subprocess.Popen([server_binary, *flags], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                line = server.stdout.readline()
                if not line or "listening on" in line:
                    break
            check(server.poll() is None, "the streaming server did not start")

            # Server stream: one request line, three answers, one JSON object per line.
            result = stream("streaming", "Ticker.Watch",
                            [json.dumps({"symbol": "ACME", "count": 3, "interval_ms": 0})])
            check(result.returncode == 0, f"ticker: exit {result.returncode}: {result.stderr}")
            ticks = [json.loads(line) for line in result.stdout.splitlines()]
            check([tick["sequence"] for tick in ticks] == [1, 2, 3], f"ticks: {result.stdout!r}")
            check(all(tick["symbol"] == "ACME" for tick in ticks), f"ticks: {result.stdout!r}")

            # Client stream: chunks (blank lines skipped), end of stdin, one summary.
            chunks = [b"hello ", b"streaming ", b"world"]
            lines = [json.dumps({"data": base64.b64encode(chunk).decode()}) for chunk in chunks]
            result = stream("streaming", "Upload.Send", [lines[0], "", lines[1], lines[2]])
            check(result.returncode == 0, f"upload: exit {result.returncode}: {result.stderr}")
            answers = result.stdout.splitlines()
            check(len(answers) == 1, f"upload answered {answers!r}")
            if answers:
                summary = json.loads(answers[0])
                check(summary["chunks"] == 3 and summary["bytes"] == 21,
                      f"upload summary {summary!r}")

            # Bidirectional: every line comes back, in order.
            said = [json.dumps({"from": "cli", "text": f"line {i}"}) for i in range(20)]
            result = stream("streaming", "Chat.Talk", said)
            check(result.returncode == 0, f"chat: exit {result.returncode}: {result.stderr}")
            heard = [json.loads(line) for line in result.stdout.splitlines()]
            check([m["text"] for m in heard] == [f"line {i}" for i in range(20)],
                  f"chat heard {result.stdout!r}")

            # The stream's end ends the command while stdin is still open.
            process = subprocess.Popen([micro, *flags, "stream", "streaming", "Ticker.Watch"],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
            process.stdin.write(json.dumps({"symbol": "X", "count": 2, "interval_ms": 0}) + "\n")
            process.stdin.flush()
            try:
                process.wait(timeout=10)
                out = process.stdout.read()
                check(process.returncode == 0, f"open stdin: exit {process.returncode}")
                check(len(out.splitlines()) == 2, f"open stdin: printed {out!r}")
            except subprocess.TimeoutExpired:
                check(False, "micro stream did not end with its stream while stdin was open")
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)
                process.stdin.close()

            # Errors: not JSON (with the line), refused by the server, no such service.
            result = stream("streaming", "Chat.Talk", [said[0], "{not json"])
            check(result.returncode != 0, "a line that is not JSON did not fail the command")
            check("stdin line 2 is not JSON" in result.stderr, f"not JSON: {result.stderr!r}")
            result = stream("streaming", "Ticker.Watch", [json.dumps({"count": 0})])
            check(result.returncode == 1, f"refused: exit {result.returncode}")
            check(re.search(r"400 Bad Request: count must be 1\.\.100000, got 0", result.stderr),
                  f"refused: {result.stderr!r}")
            check(result.stdout == "", f"refused stream printed {result.stdout!r}")
            result = stream("nobody", "Ticker.Watch", ["{}"])
            check(result.returncode == 1, f"no such service: exit {result.returncode}")
            check("nobody" in result.stderr and "not found" in result.stderr,
                  f"no such service: {result.stderr!r}")
            result = stream("streaming", "Nothing.Here", ["{}"])
            check(result.returncode == 1 and "404" in result.stderr,
                  f"no such endpoint: exit {result.returncode}, {result.stderr!r}")
            result = subprocess.run([micro, *flags, "stream", "streaming"], capture_output=True,
                                    text=True, timeout=30)
            check(result.returncode != 0 and "usage: micro stream <service> <endpoint>"
                  in result.stderr, f"missing endpoint: {result.stderr!r}")
        finally:
            server.terminate()
            server.wait(timeout=15)
    print("micro stream:", "FAILED" if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
