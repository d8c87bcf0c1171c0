"""Process helpers for the Python tests: free loopback ports, waiting on a condition with a
bound, a real etcd on free ports, and a group that stops every process it started, whatever
the test's outcome."""
import base64
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, what, timeout=15.0, interval=0.05):
    """Polls `condition` until it returns something truthy; raises naming `what` after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class LineReader:
    """Collects a process's stdout lines (or `stream`'s, say its stderr) on a thread, so a test
    can wait for one without blocking on the pipe."""

    def __init__(self, process, stream=None):
        self.lines = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read,
                                        args=(stream if stream else process.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for line in stream:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def snapshot(self):
        with self._lock:
            return list(self.lines)

    def wait_for(self, predicate, what, timeout=15.0):
        return wait_until(lambda: next((l for l in self.snapshot() if predicate(l)), None),
                          what, timeout)

    def join(self, timeout=10.0):
        self._thread.join(timeout)


class ProcessGroup:
    """Starts processes and stops all of them on exit (SIGTERM, then SIGKILL after 5 s)."""

    def __init__(self):
        self.processes = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for process in reversed(self.processes):
            stop(process)
        return False

    def start(self, args, **kwargs):
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        process = subprocess.Popen(args, **kwargs)
        self.processes.append(process)
        return process


def stop(process, sig=signal.SIGTERM, timeout=5.0):
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class Etcd:
    """One etcd member on free loopback ports; stop() and start() again keep its data and ports,
    as an operator's restart does."""

    def __init__(self, group, data_dir):
        self.group, self.data_dir = group, data_dir
        self.client_port, self.peer_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.client_port}"
        self.process = None

    def start(self):
        client_url = f"http://127.0.0.1:{self.client_port}"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        self.process = self.group.start(
            ["etcd", "--name", "fault", "--data-dir", self.data_dir,
             "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", f"fault={peer_url}", "--log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.healthy, "etcd to become healthy", timeout=20)
        return self

    def kill(self):
        self.process.kill()
        self.process.wait()

    def healthy(self):
        try:
            with urllib.request.urlopen(f"http://{self.address}/health", timeout=1) as response:
                return b'"health":"true"' in response.read()
        except OSError:
            return False

    def keys(self, prefix):
        """The keys under `prefix`, through etcd's JSON gateway."""
        end = bytearray(prefix.encode())
        end[-1] += 1
        body = json.dumps({"key": base64.b64encode(prefix.encode()).decode(),
                           "range_end": base64.b64encode(bytes(end)).decode(),
                           "keys_only": True}).encode()
        request = urllib.request.Request(f"http://{self.address}/v3/kv/range", data=body,
                                         method="POST")
        with urllib.request.urlopen(request, timeout=2) as response:
            answer = json.loads(response.read())
        return [base64.b64decode(kv["key"]).decode() for kv in answer.get("kvs", [])]


def environment_without_proxies():
    env = dict(os.environ)
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(key, None)
    return env
