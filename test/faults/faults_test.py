#!/usr/bin/env python3
"""Fault tests with real processes: a fault is injected while load-driver keeps calling the
greeter, and the test checks what a user would: calls keep succeeding, errors stay within
what the fault can explain, the system heals by itself, memory stays bounded. Every process
started is stopped; every wait is bounded.

    faults_test.py SCENARIO --server=greeter-server --driver=load-driver --client=greeter-client

Scenarios: node-kill, etcd-down, collector-down, disk, http-attack, soak (`./run soak
[minutes]`; not in the test suite: it lasts 30 minutes). Figures (throughput, p99
during the fault) are printed for docs/reliability.md; the test asserts behaviour, not speed.
"""
import argparse
import json
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from processes import (Etcd, LineReader, ProcessGroup, free_port, rss_kib, stop,  # noqa: E402
                       wait_until)

failures = []


def check(condition, message):
    print(("ok   " if condition else "FAIL ") + message, flush=True)
    if not condition:
        failures.append(message)


def start_server(group, binary, flags):
    server = group.start([binary] + flags)
    reader = LineReader(server)
    line = reader.wait_for(lambda l: l.startswith("greeter listening on "),
                           "the greeter to listen", timeout=20)
    return server, reader, line.split()[-1]


def intervals(reader):
    """The driver's per-100-ms lines (not the summary)."""
    out = []
    for line in reader.snapshot():
        if line.startswith("{"):
            record = json.loads(line)
            if not record.get("summary"):
                out.append(record)
    return out


def summary(reader):
    for line in reversed(reader.snapshot()):
        if line.startswith("{") and json.loads(line).get("summary"):
            return json.loads(line)
    return None


def run_driver(group, args, flags, concurrency, seconds):
    driver = group.start([args.driver] + flags + [str(concurrency), str(seconds)])
    reader = LineReader(driver)
    reader.wait_for(lambda l: l.startswith("{") and json.loads(l).get("ok", 0) > 0,
                    "the driver's first successful calls", timeout=20)
    return driver, reader


def finish_driver(driver, reader, seconds):
    driver.wait(timeout=seconds + 30)
    reader.join()
    check(driver.returncode == 0, f"load-driver exited 0 (got {driver.returncode}; "
          f"stderr: {driver.stderr.read().strip()[:300]})")
    return summary(reader)


def rate(records):
    return sum(r["ok"] for r in records) / max(len(records) * 0.1, 0.1)


# --- a server node SIGKILLed under load -----------------------------------------------------
def node_kill(args):
    concurrency = 8
    with tempfile.TemporaryDirectory() as work, ProcessGroup() as group:
        etcd = Etcd(group, os.path.join(work, "etcd")).start()
        registry = f"--registry=etcd://{etcd.address}"
        ttl = ["--register_ttl=3s", "--register_interval=1s"]
        victim, _, victim_address = start_server(group, args.server, [registry] + ttl)
        survivor, _, survivor_address = start_server(group, args.server, [registry] + ttl)
        prefix = "/micro/registry/greeter/"
        wait_until(lambda: len(etcd.keys(prefix)) == 2, "both nodes in etcd")
        driver, reader = run_driver(group, args, [registry], concurrency, 8)
        time.sleep(2)  # load on both nodes before the kill
        before = len(intervals(reader))
        victim.kill()
        victim.wait()
        killed_at = time.monotonic()
        wait_until(lambda: len(etcd.keys(prefix)) == 1, "the dead node to leave etcd",
                   timeout=10)
        gone_after = time.monotonic() - killed_at
        result = finish_driver(driver, reader, 8)
        records = intervals(reader)
        after = records[before:]
        errors = sum(r["errors"] for r in after)
        print(f"figures: node-kill errors={errors} ok_before/s={rate(records[:before]):.0f} "
              f"ok_after/s={rate(after[10:]):.0f} left_etcd_after_s={gone_after:.2f} "
              f"summary={result}")
        check(gone_after <= 3 + 2, f"the dead node left etcd within its 3 s TTL "
              f"(+ 2 s for the lease check): {gone_after:.2f} s")
        check(errors <= concurrency, f"errors after the kill ({errors}) are at most the "
              f"{concurrency} calls that can be in flight on the dead node")
        errors_late = [r for r in after[10:] if r["errors"]]
        check(not errors_late, "no error from 1 s after the kill on "
              f"(intervals with errors: {[(r['t_ms'], r.get('last_error')) for r in errors_late][:3]})")
        check(all(r["ok"] > 0 for r in after), "calls succeeded in every 100 ms after the kill")
        check(survivor.poll() is None, f"the surviving node ({survivor_address}) still runs; "
              f"the dead one was {victim_address}")


# --- every etcd member down for 30 s ---------------------------------------------------------
def etcd_down(args):
    outage = float(os.environ.get("FAULT_ETCD_OUTAGE_SECONDS", "30"))
    with tempfile.TemporaryDirectory() as work, ProcessGroup() as group:
        etcd = Etcd(group, os.path.join(work, "etcd")).start()
        registry = f"--registry=etcd://{etcd.address}"
        server, server_reader, _ = start_server(
            group, args.server, [registry, "--register_ttl=5s", "--register_interval=1s"])
        prefix = "/micro/registry/greeter/"
        wait_until(lambda: etcd.keys(prefix), "the greeter in etcd")
        seconds = outage + 25
        driver, reader = run_driver(group, args, [registry], 4, seconds)
        time.sleep(2)
        before = len(intervals(reader))
        etcd.kill()
        time.sleep(outage)
        during = len(intervals(reader))
        etcd.start()
        restarted = time.monotonic()
        wait_until(lambda: etcd.keys(prefix), "the greeter to register again by itself",
                   timeout=15)
        back_after = time.monotonic() - restarted
        # etcd kept the lease through its restart; the registration must outlive its 5 s TTL
        # now, so the server's keepalive found the member again.
        time.sleep(7)
        kept = bool(etcd.keys(prefix))
        # A member that comes back empty (its data lost): the server registers again by
        # itself within its interval.
        etcd.kill()
        shutil.rmtree(etcd.data_dir)
        etcd.start()
        wiped = time.monotonic()
        wait_until(lambda: etcd.keys(prefix), "the greeter to register again in a wiped etcd",
                   timeout=15)
        back_after_wipe = time.monotonic() - wiped
        result = finish_driver(driver, reader, seconds)
        records = intervals(reader)
        errors = sum(r["errors"] for r in records)
        print(f"figures: etcd-down outage_s={outage:g} ok/s_before={rate(records[:before]):.0f} "
              f"ok/s_during={rate(records[before:during]):.0f} re-registered_after_s="
              f"{back_after:.2f} re-registered_after_wipe_s={back_after_wipe:.2f} "
              f"summary={result}")
        check(kept, "the registration outlived its TTL after etcd's restart (keepalive resumed)")
        check(errors == 0, f"no call failed while etcd was down or after "
              f"({errors} errors; last: {[r.get('last_error') for r in records if r['errors']][:2]})")
        check(all(r["ok"] > 0 for r in records[before:during]),
              "calls flowed in every 100 ms of the outage (from the registry cache)")
        fresh = group.start([args.client, registry, "2"])
        out, err = fresh.communicate(timeout=20)
        check(fresh.returncode == 0 and "Hello" in out,
              f"a new client (empty cache) finds the greeter after etcd returned: {err.strip()[:200]}")
        check(server.poll() is None, "the server ran through the outage")
        del server_reader


# --- the OTLP collector down for 60 s under load ---------------------------------------------
class Collector:
    """An OTLP/HTTP JSON receiver that counts spans; stop() closes its socket (the collector is
    down: connections are refused) and start() binds the same port again."""

    def __init__(self):
        self.port = free_port()
        self.spans = 0
        self.lock = threading.Lock()
        self.server = None

    def start(self):
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                document = json.loads(body)
                count = sum(len(scope.get("spans", []))
                            for resource_spans in document.get("resourceSpans", [])
                            for scope in resource_spans.get("scopeSpans", []))
                with collector.lock:
                    collector.spans += count
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def count(self):
        with self.lock:
            return self.spans


def scrape(address, name):
    import urllib.request
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.split()[-1])
    return None


def collector_down(args):
    outage = float(os.environ.get("FAULT_COLLECTOR_OUTAGE_SECONDS", "60"))
    up = 8.0
    collector = Collector()
    collector.start()
    admin_port = free_port()
    with tempfile.TemporaryDirectory() as work, ProcessGroup() as group:
        registry = f"--registry=file?dir={work}"
        trace = (f"--wrappers=trace?ratio=0.1&protocol=http/json&schedule_delay=200ms"
                 f"&timeout=1s&endpoint=http://127.0.0.1:{collector.port}/v1/traces")
        server, _, _ = start_server(group, args.server,
                                    [registry, trace, f"--admin=127.0.0.1:{admin_port}"])
        admin = f"127.0.0.1:{admin_port}"
        seconds = up + outage + up
        driver, reader = run_driver(group, args, [registry], 4, seconds)
        time.sleep(up - 1)
        wait_until(lambda: collector.count() > 0, "spans at the collector before the outage")
        before = len(intervals(reader))
        collector.stop()
        exported_at_stop = scrape(admin, "micro_trace_spans_exported_total")
        rss_start = rss_kib(server.pid)
        rss_peak = rss_start
        outage_end = time.monotonic() + outage
        while time.monotonic() < outage_end:
            rss_peak = max(rss_peak, rss_kib(server.pid))
            time.sleep(0.5)
        during = len(intervals(reader))
        dropped = scrape(admin, "micro_trace_spans_dropped_total")
        spans_before_restart = collector.count()
        collector.start()
        wait_until(lambda: collector.count() > spans_before_restart,
                   "export to resume by itself once the collector is back", timeout=20)
        result = finish_driver(driver, reader, seconds)
        records = intervals(reader)
        up_rate, down_rate = rate(records[10:before]), rate(records[before:during])
        print(f"figures: collector-down outage_s={outage:g} ok/s_up={up_rate:.0f} "
              f"ok/s_down={down_rate:.0f} ratio={down_rate / max(up_rate, 1):.3f} "
              f"rss_kib_start={rss_start} rss_kib_peak={rss_peak} dropped={dropped} "
              f"exported_at_stop={exported_at_stop} summary={result}")
        check(sum(r["errors"] for r in records) == 0, "no call failed while the collector was down")
        check(all(r["ok"] > 0 for r in records[before:during]),
              "calls flowed in every 100 ms of the outage")
        check(dropped is not None and dropped > 0,
              f"spans that could not be exported were counted as dropped ({dropped})")
        check(rss_peak - rss_start < 64 * 1024,
              f"memory bounded during the outage: +{(rss_peak - rss_start) / 1024:.1f} MiB")
        check(stop(server) == 0, "the server stopped cleanly")
    collector.stop()


# --- disk full / unwritable places -----------------------------------------------------------
def disk(args):
    with tempfile.TemporaryDirectory() as work, ProcessGroup() as group:
        not_a_directory = os.path.join(work, "plain-file")
        open(not_a_directory, "w").close()
        # A registry directory below a regular file can never be created or written.
        bad = group.start([args.server, f"--registry=file?dir={not_a_directory}/registry"])
        out, err = bad.communicate(timeout=20)
        check(bad.returncode == 1, f"a file registry that cannot be written ends the server "
              f"with exit code 1, not a crash (got {bad.returncode})")
        check(not_a_directory in err and "greeter-server:" in err,
              f"the error names the path: {err.strip()[:300]}")
        # The file exporter writing to a full disk (/dev/full: every write is ENOSPC).
        registry = f"--registry=file?dir={work}/registry"
        server, _, _ = start_server(group, args.server,
                                    [registry, "--wrappers=trace?exporter=file&file=/dev/full"
                                     "&schedule_delay=100ms"])
        for _ in range(3):
            client = group.start([args.client, registry, "5"])
            out, err = client.communicate(timeout=20)
            check(client.returncode == 0 and out.count("Hello") == 5,
                  f"calls succeed while the exporter's disk is full: {err.strip()[:200]}")
            time.sleep(0.2)
        stop(server)
        err = server.stderr.read()
        check(server.returncode == 0, f"the server stopped cleanly (exit {server.returncode})")
        check("No space left on device" in err and "/dev/full" in err,
              f"the exporter said why it failed, naming the file: {err.strip()[-400:]}")
        counts = [l for l in err.splitlines() if "trace: spans started=" in l]
        check(counts and "export_failed=0" not in counts[-1],
              f"failed exports were counted: {counts[-1] if counts else 'no counts line'}")

        # The file registry's directory made unwritable while the service runs: as root,
        # permissions stop nothing, so the directory is moved away and a regular file put in
        # its place (every write below it fails with ENOTDIR).
        live = os.path.join(work, "live-registry")
        registry = f"--registry=file?dir={live}"
        server, _, _ = start_server(group, args.server,
                                    [registry, "--register_interval=500ms", "--register_ttl=5s"])

        def registered():
            return any(files for _, _, files in os.walk(live)) if os.path.isdir(live) else False

        errors = LineReader(server, server.stderr)
        wait_until(registered, "the greeter's registration in the file registry", 10)
        os.rename(live, live + ".moved")
        open(live, "w").close()
        failed = errors.wait_for(lambda l: "re-register failed" in l,
                                 "a failed refresh to be logged", 10)
        check(live in failed, f"the failed refresh was logged, naming the path: {failed[:300]}")
        wait_until(lambda: sum("re-register failed" in l for l in errors.snapshot()) >= 2,
                   "a second failed refresh", 10)
        check(server.poll() is None, "the server keeps running while its registry is unwritable")
        os.remove(live)
        shutil.rmtree(live + ".moved")
        os.mkdir(live)  # back, and empty: the next refresh writes the registration again
        wait_until(registered, "the registration to come back by itself", 10)
        check(True, "the registration came back by itself once the directory was writable again")
        client = group.start([args.client, registry, "3"])
        out, err = client.communicate(timeout=20)
        check(client.returncode == 0 and out.count("Hello") == 3,
              f"a new client finds the greeter and calls it: {err.strip()[:200]}")
        stop(server)
        check(server.returncode == 0, f"the server stopped cleanly (exit {server.returncode})")


# --- http: slowloris, idle connections, a storm, garbage --------------------------------------
def http_attack(args):
    idle_target = int(os.environ.get("FAULT_IDLE_CONNECTIONS", "10000"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = idle_target + 2048
    if hard < wanted and hard != resource.RLIM_INFINITY:
        idle_target = max(hard - 2048, 256)
        wanted = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))  # inherited by the server
    with tempfile.TemporaryDirectory() as work, ProcessGroup() as group:
        registry = f"--registry=file?dir={work}"
        http = "--transport=http?header_timeout=2s&idle_timeout=60s"
        server, _, address = start_server(group, args.server, [registry, http])
        host, port = address.rsplit(":", 1)
        port = int(port)
        driver, reader = run_driver(group, args, [registry, "--transport=http"], 4, 24)
        time.sleep(3)
        baseline = len(intervals(reader))
        rss_start = rss_kib(server.pid)
        stop_attack = threading.Event()
        results = {}

        def slowloris():
            sockets = []
            for _ in range(200):
                s = socket.create_connection((host, port))
                s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
                sockets.append(s)
            started = time.monotonic()
            closed = 0
            for s in sockets:
                s.settimeout(0.1)
            while closed < len(sockets) and time.monotonic() - started < 10:
                closed = 0
                for s in sockets:
                    try:
                        s.sendall(b"X")  # one more header byte, never a full line
                        data = s.recv(4096)
                        if data == b"" or b"408" in data:
                            closed += 1
                    except socket.timeout:
                        pass
                    except OSError:
                        closed += 1
                time.sleep(0.3)
            results["slowloris_closed"] = closed
            results["slowloris_seconds"] = time.monotonic() - started
            for s in sockets:
                s.close()

        def idle():
            sockets = []
            try:
                for _ in range(idle_target):
                    sockets.append(socket.create_connection((host, port), timeout=5))
            except OSError as e:
                results["idle_error"] = str(e)
            results["idle_open"] = len(sockets)
            stop_attack.wait(30)
            results["idle_rss_kib"] = rss_kib(server.pid)
            for s in sockets:
                s.close()

        def storm():
            count = 0
            while not stop_attack.is_set():
                try:
                    socket.create_connection((host, port), timeout=2).close()
                    count += 1
                except OSError:
                    pass
            results["storm_connections"] = count

        def garbage():
            answers = 0
            for _ in range(50):
                with socket.create_connection((host, port), timeout=5) as s:
                    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd"
                              + os.urandom(512))
                    try:
                        if s.recv(4096).startswith(b"HTTP/1.1 "):
                            answers += 1
                    except OSError:
                        pass
            results["garbage_answered"] = answers

        attacks = [threading.Thread(target=f) for f in (slowloris, idle, storm, garbage)]
        for thread in attacks:
            thread.start()
        wait_until(lambda: "idle_open" in results and "slowloris_closed" in results
                   and "garbage_answered" in results, "the attacks to run", timeout=60)
        during_end = len(intervals(reader))
        rss_attack = rss_kib(server.pid)
        stop_attack.set()
        for thread in attacks:
            thread.join(40)
        result = finish_driver(driver, reader, 24)
        records = intervals(reader)
        calm, attacked = records[10:baseline], records[baseline:during_end]
        p99 = lambda rs: max((r["p99_us"] for r in rs if r["ok"]), default=0)  # noqa: E731
        print(f"figures: http-attack p99_us_calm_max={p99(calm):.0f} "
              f"p99_us_attack_max={p99(attacked):.0f} ok/s_calm={rate(calm):.0f} "
              f"ok/s_attack={rate(attacked):.0f} rss_kib_start={rss_start} "
              f"rss_kib_attack={rss_attack} {results} summary={result}")
        check(sum(r["errors"] for r in records) == 0,
              "no well-behaved call failed during the attacks")
        check(all(r["ok"] > 0 for r in attacked), "well-behaved calls were answered in every "
              "100 ms of the attacks")
        check(results.get("idle_open", 0) >= idle_target,
              f"{idle_target} idle connections were accepted ({results.get('idle_open')}; "
              f"{results.get('idle_error', '')})")
        check(results.get("slowloris_closed") == 200,
              f"every slowloris connection was closed by the header timeout "
              f"({results.get('slowloris_closed')} of 200 in {results.get('slowloris_seconds', 0):.1f} s)")
        check(results.get("garbage_answered") == 50,
              f"a request followed by garbage got an answer each time ({results.get('garbage_answered')} of 50)")
        check(rss_attack < 512 * 1024, f"server memory bounded under attack: "
              f"{rss_attack / 1024:.0f} MiB with {results.get('idle_open')} idle connections")
        check(server.poll() is None, "the server survived")


# --- a soak: mixed unary, streaming and pub/sub load with tracing at 10 % --------------------
def soak(args):
    """Unary calls (load-driver), the greeter's event per call (pub/sub), and stream after
    stream against the streaming example, all traced at 10 % and exported to a live collector,
    for FAULT_SOAK_SECONDS (default 1800). RSS of both servers is sampled every 5 s; after the
    warm-up (the first tenth, at least 60 s) the median of the last tenth must be within 5 % of
    the median of the first tenth after the warm-up, and no sample more than 15 % above it."""
    seconds = float(os.environ.get("FAULT_SOAK_SECONDS", "1800"))
    warm_up = max(seconds / 10, min(60.0, seconds / 2))
    collector = Collector()
    collector.start()
    trace = (f"--wrappers=trace?ratio=0.1&endpoint=http://127.0.0.1:{collector.port}"
             f"/v1/traces&protocol=http/json")
    with tempfile.TemporaryDirectory() as work, ProcessGroup() as group:
        registry = f"--registry=file?dir={work}"
        greeter, _, _ = start_server(group, args.server, [registry, trace])
        streamer = group.start([args.streaming_server, registry, trace])
        LineReader(streamer).wait_for(lambda l: l.startswith("streaming listening on "),
                                      "the streaming server to listen", timeout=20)
        driver, reader = run_driver(group, args, [registry, trace], 4, seconds)
        upload = os.path.join(work, "upload.bin")
        with open(upload, "wb") as f:
            f.write(os.urandom(256 * 1024))
        stream_runs = stream_failures = 0
        samples = []  # (t, greeter kib, streamer kib)
        started = time.monotonic()
        next_sample = started
        while time.monotonic() - started < seconds:
            for command in (["ticker", "SOAK", "50", "1"], ["upload", upload]):
                run = group.start([args.streaming_client, registry, trace] + command)
                try:
                    out, err = run.communicate(timeout=30)
                except Exception:
                    run.kill()
                    out, err = run.communicate()
                group.processes.remove(run)
                stream_runs += 1
                if run.returncode != 0:
                    stream_failures += 1
                    print(f"stream run failed: {command[0]}: {err.strip()[:200]}", flush=True)
            if time.monotonic() >= next_sample:
                samples.append((time.monotonic() - started, rss_kib(greeter.pid),
                                rss_kib(streamer.pid)))
                next_sample += 5
        result = finish_driver(driver, reader, 30)
        settled = [sample for sample in samples if sample[0] >= warm_up]
        base_greeter, base_streamer = settled[0][1], settled[0][2]
        peak_greeter = max(sample[1] for sample in settled)
        peak_streamer = max(sample[2] for sample in settled)
        print(f"figures: soak seconds={seconds:g} unary={result} stream_runs={stream_runs} "
              f"stream_failures={stream_failures} spans_at_collector={collector.count()} "
              f"greeter_rss_kib warm={base_greeter} peak={peak_greeter} "
              f"first={samples[0][1]} streamer_rss_kib warm={base_streamer} "
              f"peak={peak_streamer} first={samples[0][2]}")
        # The series, one sample a minute, so a failure shows a leak's slope or a plateau.
        minute = [s for i, s in enumerate(samples) if i % 12 == 0] + samples[-1:]
        print("rss_kib series (s greeter streamer): " +
              " ".join(f"{t:.0f}:{g}:{st}" for t, g, st in minute), flush=True)
        check(result and result["errors"] == 0, "no unary call failed during the soak")
        check(stream_failures == 0, f"every stream run succeeded ({stream_runs} runs)")
        check(collector.count() > 0, "traces reached the collector")
        # Flat means no trend: the median of the last window against the median of the first
        # window after the warm-up (a single sample swings a few % as malloc keeps or returns
        # memory, and a leak shows as a slope). A spike is bounded apart.
        window = max(60.0, seconds / 10)
        for index, name in ((1, "greeter"), (2, "streaming server")):
            first = sorted(s[index] for s in settled if s[0] < warm_up + window)
            last = sorted(s[index] for s in settled if s[0] >= seconds - window)
            first_median, last_median = first[len(first) // 2], last[len(last) // 2]
            peak = max(s[index] for s in settled)
            print(f"figures: {name} rss_kib median first {window:.0f} s after warm-up "
                  f"{first_median}, median last {window:.0f} s {last_median} "
                  f"({(last_median / first_median - 1) * 100:+.1f} %), peak {peak} "
                  f"({(peak / first_median - 1) * 100:+.1f} %)", flush=True)
            check(last_median <= first_median * 1.05,
                  f"the {name}'s RSS stayed flat: median {first_median} → {last_median} KiB")
            check(peak <= first_median * 1.15,
                  f"the {name}'s RSS never spiked: peak {peak} KiB against {first_median}")
    collector.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["node-kill", "etcd-down", "collector-down", "disk",
                                             "http-attack", "soak"])
    parser.add_argument("--server", required=True)
    parser.add_argument("--driver", required=True)
    parser.add_argument("--client", required=True)
    parser.add_argument("--streaming-server")
    parser.add_argument("--streaming-client")
    args = parser.parse_args()
    {"node-kill": node_kill, "etcd-down": etcd_down, "collector-down": collector_down,
     "disk": disk, "http-attack": http_attack, "soak": soak}[args.scenario](args)
    print(f"{len(failures)} failed" if failures else "all ok")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
