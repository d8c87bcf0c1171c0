#!/usr/bin/env python3
# bench/grpc_transport_bench.py — transport=grpc beside gRPC C++ in one run, on the same
# machine at the same time: the unary echo of rpc_bench (--transport=grpc, the whole micro-cpp
# pipeline) against grpc_echo_bench (gRPC C++ async unary) at c=1/16/64, and the 128-byte
# streams of stream_bench (--transport=grpc) against grpc_stream_bench, each pair run in
# interleaved rounds with each program's best round kept (damps a noisy neighbour without
# favouring anyone). Prints every figure (`name value unit`), then the ratios and the issue's
# targets: unary ≥ 2× gRPC C++ at c=64, p50 at c=1 ≤ 0.7× gRPC's, bidi ≥ 2×.
#
#   bench/grpc_transport_bench.py [BUILD_DIR (default build)] [--seconds=3] [--rounds=2]
import os
import re
import subprocess
import sys

FIGURE = re.compile(r"^([A-Za-z0-9_.]+) (-?[0-9.eE+]+|nan|inf) (\S+)$")


def run(arguments, timeout):
    env = dict(os.environ, MICRO_PLUGIN_PATH=os.environ.get("MICRO_PLUGIN_PATH", ""))
    result = subprocess.run(arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            timeout=timeout, env=env)
    if result.returncode != 0:
        sys.exit(f"{' '.join(arguments)} failed ({result.returncode}): {result.stderr.strip()[-400:]}")
    figures = {}
    for line in result.stdout.splitlines():
        match = FIGURE.match(line.strip())
        if match:
            figures[match.group(1)] = (float(match.group(2)), match.group(3))
    return figures


def better(new, old, name):
    """Whether `new` beats `old` on the figure that decides a round (higher rate)."""
    return old is None or new.get(name, (0, ""))[0] > old.get(name, (0, ""))[0]


def main():
    build, seconds, rounds = "build", "3", 2
    for argument in sys.argv[1:]:
        if argument.startswith("--seconds="):
            seconds = argument.split("=", 1)[1]
        elif argument.startswith("--rounds="):
            rounds = int(argument.split("=", 1)[1])
        else:
            build = argument
    bench = os.path.join(build, "bench")
    pairs = [
        ("unary", [os.path.join(bench, "rpc_bench"), seconds, "--name=rpc_grpc", "--transport=grpc"],
         [os.path.join(bench, "grpc_echo_bench"), seconds], "rpc_grpc_c64_requests_per_second",
         "grpc_echo_c64_requests_per_second"),
        ("streams", [os.path.join(bench, "stream_bench"), seconds, "--name=stream_grpc",
                     "--transport=grpc"],
         [os.path.join(bench, "grpc_stream_bench"), seconds],
         "stream_grpc_bidirectional_16_messages_per_second",
         "grpc_stream_bidirectional_16_messages_per_second"),
    ]
    results = {}
    for label, ours_command, theirs_command, ours_key, theirs_key in pairs:
        for program in (ours_command[0], theirs_command[0]):
            if not os.path.exists(program):
                sys.exit(f"{program} is not built (ninja -C {build} {os.path.relpath(program, build)})")
        best_ours = best_theirs = None
        for _ in range(rounds):
            ours = run(ours_command, 300)
            theirs = run(theirs_command, 300)
            if better(ours, best_ours, ours_key):
                best_ours = ours
            if better(theirs, best_theirs, theirs_key):
                best_theirs = theirs
        for name, (value, unit) in list(best_ours.items()) + list(best_theirs.items()):
            results[name] = value
            print(f"{name} {value:g} {unit}", flush=True)

    def ratio(name, ours, theirs, target, higher_is_better=True):
        if ours not in results or theirs not in results or results[theirs] == 0:
            return
        value = results[ours] / results[theirs]
        met = value >= target if higher_is_better else value <= target
        sign = "≥" if higher_is_better else "≤"
        print(f"{name} {value:.3f} x  (target {sign} {target}: {'met' if met else 'NOT met'})")

    for c in (1, 16, 64):
        ratio(f"grpc_vs_grpc_cpp_unary_c{c}_throughput", f"rpc_grpc_c{c}_requests_per_second",
              f"grpc_echo_c{c}_requests_per_second", 2.0 if c == 64 else 1.0)
    ratio("grpc_vs_grpc_cpp_unary_c1_p50", "rpc_grpc_c1_p50", "grpc_echo_c1_p50", 0.7, False)
    for case in ("server_to_client_1", "server_to_client_16", "bidirectional_1", "bidirectional_16"):
        ratio(f"grpc_vs_grpc_cpp_stream_{case}", f"stream_grpc_{case}_messages_per_second",
              f"grpc_stream_{case}_messages_per_second", 2.0 if case.startswith("bidi") else 1.0)


if __name__ == "__main__":
    main()
