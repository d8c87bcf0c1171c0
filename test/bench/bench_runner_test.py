#!/usr/bin/env python3
# test/bench/bench_runner_test.py — the benchmark runner still works end to end: every group
# runs (with tiny durations), prints `name value unit` lines, writes results JSON with the
# machine and versions, computes the ratios against the baselines and judges the targets.
# It checks presence and sanity (no errors, no lost messages), never speed.
#
#   bench_runner_test.py RUN_BENCHMARKS
import json
import os
import re
import subprocess
import sys
import tempfile

runner = sys.argv[1]
failures = []


def check(condition, what):
    if not condition:
        failures.append(what)


with tempfile.TemporaryDirectory(prefix="micro-bench-test-") as directory:
    output = os.path.join(directory, "latest.json")
    environment = dict(os.environ, BENCH_SECONDS="0.2", BENCH_MESSAGES="20000", BENCH_ROUNDS="1")
    result = subprocess.run([runner, "--output", output], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, timeout=600, env=environment)
    print(result.stdout)
    print(result.stderr, file=sys.stderr)
    check(result.returncode == 0, f"runner exited with {result.returncode}")
    lines = [line for line in result.stdout.splitlines() if line and not line.startswith("#")]
    for line in lines:
        check(re.fullmatch(r"[A-Za-z0-9_.]+ -?[0-9.]+ \S+", line) is not None, f"not `name value unit`: {line!r}")
    check(os.path.exists(output), "no results JSON written")
    document = json.load(open(output))
    figures = {figure["name"]: figure["value"] for figure in document["figures"]}
    printed = {line.split()[0] for line in lines}
    check(printed == set(figures), f"printed and saved figures differ: {sorted(printed ^ set(figures))}")

    check(document["machine"]["cores"] >= 1, "machine cores missing")
    check(document["machine"]["cpu_model"] != "", "CPU model missing")
    check(re.match(r"\d{4}-\d\d-\d\dT", document["date"]) is not None, "date missing")
    check(document["versions"]["micro_cpp_commit"] != "", "commit missing")
    check(document["notes"] == [], f"the runner noted problems: {document['notes']}")

    expected = ["span_tracing_off", "span_unsampled", "span_sampled_4_attributes",
                "greeter_server_idle_rss", "greeter_server_loaded_peak_rss",
                "broker_memory_received_per_second", "broker_nats_received_per_second",
                "broker_nats_bare_client_received_per_second", "broker_nats_to_bare_received_ratio",
                "etcd_cached_lookup_and_select",
                "rpc_tcp_trace_off_c64_requests_per_second", "rpc_tcp_trace_10_c64_requests_per_second",
                "rpc_tcp_trace_100_c64_requests_per_second", "rpc_tcp_trace_100_c64_qps_loss",
                "rpc_tcp_trace_100_spans_exported", "otlp_receiver_spans_received"]
    for prefix in ("rpc_tcp", "asio_echo", "grpc_echo", "greeter_remote", "rpc_http", "beast_echo", "api",
                   "direct"):
        for concurrency in (1, 16, 64):
            for suffix in ("requests_per_second", "p50", "p99"):
                expected.append(f"{prefix}_c{concurrency}_{suffix}")
            errors = figures.get(f"{prefix}_c{concurrency}_errors")
            check(errors == 0, f"{prefix} at c={concurrency}: {errors} errors")
    for concurrency in (1, 16, 64):
        expected += [f"rpc_vs_grpc_c{concurrency}_throughput_ratio",
                     f"rpc_vs_asio_echo_c{concurrency}_throughput_ratio"]
    expected.append("rpc_vs_asio_echo_c1_p50_ratio")
    for concurrency in (1, 16, 64):
        expected += [f"http_vs_beast_echo_c{concurrency}_throughput_ratio",
                     f"http_vs_grpc_c{concurrency}_throughput_ratio",
                     f"api_vs_direct_c{concurrency}_throughput_ratio"]
    expected += ["http_vs_beast_echo_c1_p50_ratio", "api_added_c1_p50"]
    for case in ("server_to_client_1", "server_to_client_16", "bidirectional_1", "bidirectional_16"):
        for prefix in ("stream_tcp", "grpc_stream"):
            expected.append(f"{prefix}_{case}_messages_per_second")
            errors = figures.get(f"{prefix}_{case}_errors")
            check(errors == 0, f"{prefix} {case}: {errors} errors")
        expected.append(f"stream_vs_grpc_{case}_throughput_ratio")
    expected += ["selector_slow_node_p2c_over_roundrobin_p99", "selector_p2c_healthy_select_and_report_ns",
                 "selector_failing_node_roundrobin_defaults_success_rate", "wrapper_breaker_overhead_cpu",
                 "wrapper_ratelimit_rate_overhead_cpu", "wrapper_auth_hs256_overhead_cpu",
                 "metrics_registry_overhead_ns", "metrics_scrape_100_endpoints_us",
                 "mcp_added_c1_p50", "mcp_tools_call_c16_calls_per_second", "mcp_tools_list_p50"]
    check(figures.get("mcp_errors") == 0, f"micro mcp bench: {figures.get('mcp_errors')} errors")
    # The brokers whose client libraries were built (their benches start their own servers).
    for broker, ratio_name in (("rabbitmq", "broker_rabbitmq_to_bare_received_ratio"),
                               ("redis", "broker_redis_streams_to_bare_received_ratio"),
                               ("mqtt", "broker_mqtt_qos1_to_bare_received_ratio")):
        if any(name.startswith(f"broker_{broker}") for name in figures) or os.environ.get("CI"):
            expected.append(ratio_name)
    # The peers (issue 19), beside rpc_bench in the same run, when they were built.
    peers_built = [peer for peer in ("thrift", "capnp")
                   if os.access(os.path.join(os.path.dirname(runner), f"{peer}_echo_bench"), os.X_OK)]
    for prefix in ["rpc_peers"] + [f"{peer}_echo" for peer in peers_built]:
        for concurrency in (1, 16, 64):
            for suffix in ("requests_per_second", "p50", "p99"):
                expected.append(f"{prefix}_c{concurrency}_{suffix}")
            errors = figures.get(f"{prefix}_c{concurrency}_errors")
            check(errors == 0, f"{prefix} at c={concurrency}: {errors} errors")
    for peer in peers_built:
        for concurrency in (1, 16, 64):
            expected.append(f"rpc_vs_{peer}_c{concurrency}_throughput_ratio")
        expected.append(f"rpc_vs_{peer}_c1_p50_ratio")
    for name, value in figures.items():
        if name.startswith("broker_") and name.endswith("_lost"):
            check(value == 0, f"{name} is {value}")
    # transport=grpc beside gRPC C++ (when the plugin is built: it needs nghttp2).
    if os.path.exists(os.path.join(os.path.dirname(os.path.dirname(runner)), "plugins", "grpc",
                                   "micro-transport-grpc.so")):
        for concurrency in (1, 16, 64):
            expected.append(f"grpc_transport_vs_grpc_c{concurrency}_throughput_ratio")
            check(figures.get(f"rpc_grpc_c{concurrency}_errors") == 0, f"rpc_grpc c={concurrency} errors")
        for case in ("server_to_client_1", "server_to_client_16", "bidirectional_1", "bidirectional_16"):
            expected.append(f"grpc_stream_vs_grpc_{case}_throughput_ratio")
            check(figures.get(f"stream_grpc_{case}_errors") == 0, f"stream_grpc {case} errors")
    for name in expected:
        check(name in figures, f"figure {name} missing")
    for name, value in figures.items():
        if name.endswith("_requests_per_second") or name.endswith("_messages_per_second") or name.endswith("_rss"):
            check(value > 0, f"{name} is {value}")
    check(figures.get("broker_memory_lost") == 0, "the memory broker lost messages")
    # Spans really reached the live receiver.
    check(figures.get("otlp_receiver_spans_received", 0) > 0, "the OTLP receiver got no spans")

    targets = {target["figure"]: target for target in document["targets"]}
    check("rpc_vs_grpc_c64_throughput_ratio" in targets, "targets not judged")
    for figure, target in targets.items():
        unbuilt_peer = any(f"_vs_{peer}_" in figure for peer in ("thrift", "capnp") if peer not in peers_built)
        check(target["met"] is not None or unbuilt_peer, f"target {figure} not measured")

if failures:
    print("FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print(f"ok: {len(figures)} figures")
