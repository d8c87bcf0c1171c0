#!/usr/bin/env python3
"""examples/registry-swap: the same greeter binaries, first with registry=file, then with
registry=etcd://… against a real etcd started here — nothing but the string changes.

    registry_swap_test.py SERVER CLIENT [--transport=http]"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import greeter_test  # noqa: E402

transport = greeter_test.take_transport(sys.argv)
server_binary, client_binary = sys.argv[1], sys.argv[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_etcd(data_dir):
    client_port, peer_port = free_port(), free_port()
    client_url, peer_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    process = subprocess.Popen(
        ["etcd", "--name", "swap", "--data-dir", data_dir,
         "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
         "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
         "--initial-cluster", f"swap={peer_url}", "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(client_url + "/health", timeout=1) as response:
                if b'"health":"true"' in response.read():
                    return process, f"127.0.0.1:{client_port}"
        except OSError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("etcd did not become healthy")


failed = []
with tempfile.TemporaryDirectory() as work:
    problems = greeter_test.run_scenario(server_binary, client_binary, f"file?dir={work}/file",
                                         transport)
    print(f"registry=file transport={transport}:", "FAILED" if problems else "ok")
    failed += problems
    if shutil.which("etcd") is None:
        print("FAIL: etcd is not installed (Debian package etcd-server)")
        sys.exit(1)
    etcd, address = start_etcd(f"{work}/etcd")
    try:
        problems = greeter_test.run_scenario(server_binary, client_binary, f"etcd://{address}",
                                             transport)
        print(f"registry=etcd transport={transport}:", "FAILED" if problems else "ok")
        failed += problems
    finally:
        etcd.terminate()
        try:
            etcd.wait(timeout=10)
        except subprocess.TimeoutExpired:
            etcd.kill()
            etcd.wait()
sys.exit(1 if failed else 0)
