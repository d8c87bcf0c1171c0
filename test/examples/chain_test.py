#!/usr/bin/env python3
"""The chain example: wrappers run in the configured order, first = outermost, on both the
client (client chain) and the server (handler chain), on any transport.

    chain_test.py CHAIN [--transport=http]"""
import re
import subprocess
import sys

flags = [argument for argument in sys.argv[2:] if argument.startswith("--transport=")]
result = subprocess.run([sys.argv[1], *flags, "1"], capture_output=True, text=True, timeout=60)
print(result.stdout, result.stderr)
if result.returncode != 0:
    sys.exit(f"chain exited {result.returncode}")
lines = [re.sub(r"\d+\.\d+ms", "<t>", line.strip()) for line in result.stdout.splitlines()]
expected = [
    "outer client enter Chain.Ping",
    "inner client enter Chain.Ping",
    "outer handler enter Chain.Ping",
    "inner handler enter Chain.Ping",
    "handler: ping 1",
    "inner handler leave",
    "[micro] handler chain Chain.Ping ok <t>",
    "outer handler leave",
    "inner client leave",
    "[micro] client chain Chain.Ping ok <t>",
    "outer client leave",
    "client: pong 2",
]
if lines[: len(expected)] != expected:
    print("expected:", *expected, sep="\n  ")
    print("got:", *lines, sep="\n  ")
    sys.exit("wrappers did not run in the configured order")
print("chain example" + (f" with {flags[0]}" if flags else "") + ": ok")
