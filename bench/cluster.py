"""Cluster mode against the local pool: warm invoke latency, and invocations/s with
one and with two worker nodes, in one run.

Everything runs on this machine: a `lamina serve` on the local pool (SQLite), then a
Ray head (no environments) with one worker node, PostgreSQL and a front end in
cluster mode, then a second worker node joins. The figures:

- warm latency: sequential Invoke calls of a trivial handler over one keep-alive
  connection, once the environment is warm (p50, p90, p99 in ms). The cluster path
  adds the concurrency ledger's round trip and the node agent's.
- invocations/s: `--threads` client threads invoking a handler that sleeps
  `--sleep-ms` for `--seconds`. Each worker node may hold `--node-memory-mb` of
  environments (128 MB each), so a node runs at most that many at once and calls
  beyond it are throttled (429, counted): with the handler's time spent sleeping, a
  second node doubles what the cluster holds. On one machine the nodes share its
  CPUs, so CPU-bound handlers would not scale this way; this measures placement.

    .venv/bin/python bench/cluster.py [--calls 300] [--threads 8] [--seconds 10]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import Server, reachable  # noqa: E402  (the path above makes `tests` importable)
from tests.helpers import function_args, make_zip  # noqa: E402
from tests.postgres import Postgres  # noqa: E402
from tests.test_cluster import RAY_ENV, RayCluster, cluster_status, worker_nodes  # noqa: E402

HANDLER = make_zip({"app.py": (
    "import time\n"
    "def handler(event, context):\n"
    "    time.sleep(event.get('sleep', 0))\n"
    "    return {'ok': True}\n"
)})


def invoke_path(name: str) -> str:
    return f"/2015-03-31/functions/{name}/invocations"


def deploy(server: Server, name: str) -> None:
    lam = server.client()
    lam.create_function(**function_args(name, HANDLER, Timeout=30))
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.1})


def latency_ms(server: Server, name: str, calls: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port)
    times = []
    for i in range(calls + 5):
        started = time.perf_counter()
        conn.request("POST", invoke_path(name), body=b"{}")
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
        if i >= 5:  # the first ones warm the environment and the connection
            times.append((time.perf_counter() - started) * 1000)
    conn.close()
    return times


def throughput(server: Server, name: str, threads: int, seconds: float,
               sleep_ms: int) -> tuple[float, int]:
    """Successful invocations per second, and how many calls were throttled."""
    counts = {"ok": 0, "throttled": 0}
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    body = json.dumps({"sleep": sleep_ms / 1000}).encode()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port)
        while time.perf_counter() < deadline:
            conn.request("POST", invoke_path(name), body=body)
            response = conn.getresponse()
            response.read()
            with lock:
                if response.status == 200:
                    counts["ok"] += 1
                elif response.status == 429:
                    counts["throttled"] += 1
                else:
                    raise RuntimeError(f"invoke answered {response.status}")
            if response.status == 429:
                time.sleep(0.01)
        conn.close()

    started = time.perf_counter()
    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return counts["ok"] / (time.perf_counter() - started), counts["throttled"]


def percentiles(times: list[float]) -> str:
    ordered = sorted(times)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return (f"p50 {statistics.median(ordered):6.2f}  p90 {at(0.90):6.2f}  "
            f"p99 {at(0.99):6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="sequential calls for latency")
    parser.add_argument("--threads", type=int, default=8, help="client threads for invocations/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each throughput run")
    parser.add_argument("--sleep-ms", type=int, default=100, help="the handler's sleep in throughput runs")
    parser.add_argument("--node-memory-mb", type=int, default=512,
                        help="environment memory per worker node (128 MB per environment)")
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="lamina-bench-cluster-") as tmp:
        base = reachable(Path(tmp))
        # -- the local pool ------------------------------------------------------
        local = Server(base / "local", {"LAMINA_ENVIRONMENT_MEMORY_MB": str(args.node_memory_mb)})
        local.start()
        try:
            deploy(local, "bench")
            rows.append(("warm latency, local pool", percentiles(latency_ms(local, "bench", args.calls))))
            rate, throttled = throughput(local, "bench", args.threads, args.seconds, args.sleep_ms)
            rows.append(("invocations/s, local pool", f"{rate:8.1f}/s  ({throttled} throttled)"))
        finally:
            local.stop()
        # -- the cluster ---------------------------------------------------------
        ray = RayCluster()
        postgres = Postgres(base / "pg")
        (base / "pg").mkdir()
        front = None
        try:
            ray.start_head()
            ray.add_worker("node_a")
            postgres.start()
            while set(worker_nodes(cluster_status(ray.address))) != {"node_a"}:
                time.sleep(0.5)
            front = Server(base / "front", {
                "LAMINA_DATABASE_URL": postgres.new_database(), "LAMINA_CLUSTER": ray.address,
                "LAMINA_CLUSTER_NODE_DIR": str(base / "nodes"),
                "LAMINA_CLUSTER_NODE_MEMORY_MB": str(args.node_memory_mb), **RAY_ENV})
            front.start()
            deploy(front, "bench")
            rows.append(("warm latency, cluster", percentiles(latency_ms(front, "bench", args.calls))))
            rate, throttled = throughput(front, "bench", args.threads, args.seconds, args.sleep_ms)
            rows.append(("invocations/s, cluster, 1 worker node",
                         f"{rate:8.1f}/s  ({throttled} throttled)"))
            ray.add_worker("node_b")
            while set(worker_nodes(cluster_status(ray.address))) != {"node_a", "node_b"}:
                time.sleep(0.5)
            time.sleep(2)  # the front end's next poll sees node_b's agent
            rate, throttled = throughput(front, "bench", args.threads, args.seconds, args.sleep_ms)
            rows.append(("invocations/s, cluster, 2 worker nodes",
                         f"{rate:8.1f}/s  ({throttled} throttled)"))
        finally:
            if front is not None:
                front.stop()
            ray.stop()
            postgres.stop()
    print(f"{args.calls} sequential calls for latency; {args.threads} client threads for "
          f"{args.seconds:g} s, handler sleeping {args.sleep_ms} ms, "
          f"{args.node_memory_mb} MB of environments per node (local pool: the same)")
    for label, value in rows:
        print(f"{label:<40} {value}")
    # Every process here shares the machine's CPUs with whatever else runs on it.
    print("load average at the end (1, 5, 15 min): " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
