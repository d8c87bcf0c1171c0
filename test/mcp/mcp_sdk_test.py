#!/usr/bin/env python3
"""`micro mcp` driven by the official TypeScript SDK client (@modelcontextprotocol/sdk from
npm, on Debian's nodejs) over stdio and over Streamable HTTP, against a running greeter and
test service. The SDK is installed into the build tree on first run (npm); without node or
npm, or when the install fails, the test is skipped (exit 77), saying why."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

micro, greeter_binary, service_binary, node_dir = sys.argv[1:5]
SDK_VERSION = "1.32.2"
here = os.path.dirname(os.path.abspath(__file__))
processes = []


def skip(why):
    print("SKIP:", why)
    sys.exit(77)


def start(command, ready_word):
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    processes.append(process)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode()
        if not line:
            break
        if ready_word in line:
            return process, line.split()[-1]
    raise RuntimeError(f"{command[0]} did not start")


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def install_sdk():
    if shutil.which("node") is None or shutil.which("npm") is None:
        skip("node and npm are needed (Debian: apt-get install nodejs npm)")
    package = os.path.join(node_dir, "node_modules", "@modelcontextprotocol", "sdk")
    if not os.path.isdir(package):
        os.makedirs(node_dir, exist_ok=True)
        result = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", node_dir,
                                 f"@modelcontextprotocol/sdk@{SDK_VERSION}"],
                                capture_output=True, timeout=240)
        if result.returncode != 0:
            skip("npm could not install @modelcontextprotocol/sdk: " +
                 result.stderr.decode()[-500:])
    # Node resolves the SDK from the script's own folder upwards.
    shutil.copy(os.path.join(here, "sdk_client.mjs"), node_dir)
    return os.path.join(node_dir, "sdk_client.mjs")


def run_client(script, arguments, registry):
    """Runs the SDK client; when it is ready for a list change, registers another service."""
    client = subprocess.Popen(["node", script] + arguments, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    processes.append(client)
    second = None
    output = []
    timer = threading.Timer(120, client.kill)
    timer.start()
    try:
        for raw in client.stdout:
            line = raw.decode().rstrip()
            output.append(line)
            print("  sdk:", line)
            if line == "WAITING_FOR_CHANGE" and second is None:
                second, _ = start([service_binary, "second", registry], "second listening")
        code = client.wait()
    finally:
        timer.cancel()
        if second:
            stop(second)
    return code == 0 and "SDK CHECKS PASSED" in output


def main():
    script = install_sdk()
    registry_dir = tempfile.mkdtemp(prefix="mcp-sdk-registry-")
    registry = f"--registry=file?dir={registry_dir}"
    start([greeter_binary, registry], "greeter listening")
    start([service_binary, "catalog", registry], "catalog listening")
    ok = True
    print("stdio:")
    ok = run_client(script, ["stdio", micro, registry], registry) and ok
    # The second service must be gone (deregistered) before the next round lists tools.
    time.sleep(0)
    gateway, url = start([micro, registry, "mcp", "--address=127.0.0.1:0"], "micro mcp listening")
    print("Streamable HTTP:", url)
    wait_gone(registry_dir)
    ok = run_client(script, ["http", url], registry) and ok
    stop(gateway)
    return ok


def wait_gone(registry_dir):
    """Waits (bounded) until the first round's second service has left the registry."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not any("second" in name for _, _, files in os.walk(registry_dir) for name in files) \
                and not any("second" in d for _, dirs, _ in os.walk(registry_dir) for d in dirs):
            return
        time.sleep(0.1)


try:
    passed = main()
finally:
    for process in processes:
        stop(process)
print("all SDK checks passed" if passed else "SDK checks FAILED")
sys.exit(0 if passed else 1)
