#!/usr/bin/env python3
"""A real Prometheus scrapes a greeter's admin endpoint: after a scrape, its HTTP API answers the
request counter and a histogram_quantile with the values the greeter served.

usage: prometheus_test.py <greeter-server> <greeter-client> <prometheus>
"""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

server_program, client_program, prometheus_program = sys.argv[1:4]


def wait_until(condition, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(port, expression):
    url = "http://127.0.0.1:%d/api/v1/query?%s" % (
        port, urllib.parse.urlencode({"query": expression}))
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            answer = json.loads(response.read())
    except OSError:
        return None
    if answer.get("status") != "success" or not answer["data"]["result"]:
        return None
    return answer["data"]["result"]


processes = []
with tempfile.TemporaryDirectory() as directory:
    try:
        registry = "file?dir=" + directory
        stderr_path = os.path.join(directory, "server.err")
        with open(stderr_path, "w") as stderr_file:
            server = subprocess.Popen(
                [server_program, "--registry=" + registry, "--admin=127.0.0.1:0",
                 "--wrappers=metrics?buckets=0.001%2C0.01%2C0.1%2C1"],
                stdout=subprocess.PIPE, stderr=stderr_file, text=True)
        processes.append(server)

        def admin_address():
            with open(stderr_path) as f:
                found = re.search(r"admin listening on (127\.0\.0\.1:\d+)", f.read())
            return found and found.group(1)
        def started():
            if server.poll() is not None:
                raise AssertionError("the greeter exited: " + open(stderr_path).read())
            return admin_address()
        admin = wait_until(started, "the admin address")
        wait_until(lambda: "listening on" in server.stdout.readline(), "the greeter")
        subprocess.run([client_program, "--registry=" + registry, "7", "Pat"], check=True,
                       stdout=subprocess.DEVNULL, timeout=30)

        port = free_port()
        config = os.path.join(directory, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: greeter\n    static_configs:\n"
                    "      - targets: ['%s']\n" % admin)
        prometheus_log = open(os.path.join(directory, "prometheus.log"), "w")
        prometheus = subprocess.Popen(
            [prometheus_program, "--config.file=" + config,
             "--storage.tsdb.path=" + os.path.join(directory, "data"),
             "--web.listen-address=127.0.0.1:%d" % port],
            stdout=prometheus_log, stderr=subprocess.STDOUT)
        processes.append(prometheus)

        selector = ('micro_requests_total{job="greeter",chain="server",service="greeter",'
                    'endpoint="Greeter.Hello",status="success"}')
        result = wait_until(lambda: query(port, selector), "a scrape of the request counter",
                            timeout=60)
        assert float(result[0]["value"][1]) == 7, result
        up = query(port, 'up{job="greeter"}')
        assert up and up[0]["value"][1] == "1", up

        # Every call of a greeter inside one host takes well under 1 ms: the whole mass is in
        # the first bucket, so the median interpolates inside (0, 0.001].
        quantile = wait_until(lambda: query(
            port, 'histogram_quantile(0.5, sum by (le) (micro_request_duration_seconds_bucket'
                  '{job="greeter",endpoint="Greeter.Hello"}))'), "a histogram quantile")
        median = float(quantile[0]["value"][1])
        assert 0 < median <= 0.001, quantile
        count = query(port, 'sum(micro_request_duration_seconds_count{job="greeter"})')
        assert float(count[0]["value"][1]) == 7, count
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
print("prometheus scrape ok")
