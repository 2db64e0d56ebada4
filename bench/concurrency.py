"""Concurrency benchmark: first-invocation latency with and without provisioned
concurrency, and a burst of parallel cold starts.

Run: .venv/bin/python bench/concurrency.py [--functions 5] [--burst 100]

Everything goes over HTTP to a real `lamina serve` on loopback (keep-alive
http.client connections, no boto3 overhead):

- first invoke, on demand: a new function's first call (cold start: INIT + invoke);
- first invoke, provisioned: the first call of a version with provisioned
  concurrency 1, once its config is READY (the environment is already initialized);
- burst: N threads release at once, each invoking the same new function; the wall
  time until all N answered, and how many distinct environments served them.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from invoke import ROLE, percentile, start_server  # noqa: E402

# An id made once per environment (at import): pids repeat across sandboxes, which
# each have their own PID namespace.
HANDLER = (
    "import uuid\nENVIRONMENT = uuid.uuid4().hex\n"
    "def handler(event, context):\n    return {'environment': ENVIRONMENT}\n"
)


def request(port: int, method: str, path: str, body: object = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    payload = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, (json.loads(data) if data else {})


def create_function(port: int, name: str) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        # Readable by others (0644), as Lambda requires of code files.
        info = zipfile.ZipInfo("app.py")
        info.external_attr = 0o100644 << 16
        archive.writestr(info, HANDLER)
    status, body = request(port, "POST", "/2015-03-31/functions", {
        "FunctionName": name, "Runtime": "python3.11", "Role": ROLE, "Handler": "app.handler",
        "Code": {"ZipFile": base64.b64encode(buffer.getvalue()).decode()},
    })
    assert status == 201, body


def publish_version(port: int, name: str) -> None:
    status, body = request(port, "POST", f"/2015-03-31/functions/{name}/versions", {})
    assert status == 201 and body["Version"] == "1", body


def provision(port: int, name: str) -> None:
    path = f"/2019-09-30/functions/{name}/provisioned-concurrency?Qualifier=1"
    status, body = request(port, "PUT", path, {"ProvisionedConcurrentExecutions": 1})
    assert status == 202, body
    deadline = time.monotonic() + 30
    while body.get("Status") != "READY":
        assert body.get("Status") != "FAILED" and time.monotonic() < deadline, body
        time.sleep(0.02)
        _, body = request(port, "GET", path)


def timed_invoke(conn: http.client.HTTPConnection, name: str, qualifier: str | None = None) -> tuple[float, dict]:
    path = f"/2015-03-31/functions/{name}/invocations"
    if qualifier:
        path += f"?Qualifier={qualifier}"
    started = time.perf_counter()
    conn.request("POST", path, body=b"{}")
    response = conn.getresponse()
    data = response.read()
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status == 200, (response.status, data)
    return elapsed, json.loads(data)


def first_invoke(port: int, name: str, qualifier: str | None = None) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.connect()  # the TCP handshake is not part of the figure
    elapsed, _ = timed_invoke(conn, name, qualifier)
    conn.close()
    return elapsed


def burst(port: int, name: str, count: int) -> tuple[float, list[float], int]:
    connections = [http.client.HTTPConnection("127.0.0.1", port) for _ in range(count)]
    for conn in connections:
        conn.connect()
    barrier = threading.Barrier(count + 1)
    latencies: list[float] = [0.0] * count
    environments: list[str] = [""] * count

    def worker(index: int) -> None:
        barrier.wait()
        latencies[index], body = timed_invoke(connections[index], name)
        environments[index] = body["environment"]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = (time.perf_counter() - started) * 1000
    for conn in connections:
        conn.close()
    return wall, latencies, len(set(environments))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--functions", type=int, default=5, help="samples of each first-invoke figure")
    parser.add_argument("--burst", type=int, default=100, help="parallel cold starts")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # sandbox users (unprivileged uids) reach the data dir
        data_dir = Path(tmp) / "server"
        process, port = start_server(data_dir, None)
        try:
            on_demand, provisioned = [], []
            for i in range(args.functions):
                create_function(port, f"cold{i}")
                on_demand.append(first_invoke(port, f"cold{i}"))
                create_function(port, f"warm{i}")
                publish_version(port, f"warm{i}")
                provision(port, f"warm{i}")
                provisioned.append(first_invoke(port, f"warm{i}", "1"))
            create_function(port, "burst")
            wall, latencies, environments = burst(port, "burst", args.burst)
        finally:
            process.terminate()
            process.wait(timeout=60)

    print(f"{'first invocation, HTTP end to end (ms)':<52}{'p50':>10}{'max':>10}")
    print(f"{'  on demand (cold start)':<52}{statistics.median(on_demand):>10.2f}{max(on_demand):>10.2f}")
    print(f"{'  provisioned concurrency 1 (READY)':<52}{statistics.median(provisioned):>10.2f}{max(provisioned):>10.2f}")
    print()
    print(f"{args.burst} parallel invocations of a new function:")
    print(f"  wall time until all answered: {wall:.0f} ms; environments started: {environments}")
    print(f"  per-call latency p50 {statistics.median(latencies):.0f} ms, "
          f"p95 {percentile(latencies, 95):.0f} ms, max {max(latencies):.0f} ms")


if __name__ == "__main__":
    main()
