"""Invocation benchmark: warm latency, throughput, cold start, against a naive baseline.

Run: .venv/bin/python bench/invoke.py [--sandbox process|namespaces] [--quick]

Every figure is measured in this one run, beside the same figure for a naive
baseline (a fresh `python -c` that imports the handler and calls it once per
event), so the ratios hold on a noisy shared machine even when absolute numbers
drift. Three views:

- end to end: Invoke over HTTP on loopback (keep-alive client, no boto3 overhead)
  against a real `lamina serve` process;
- platform overhead: the in-process invoker with an echo handler, i.e. what Lamina
  adds to a warm invocation (routing, environment hand-off, Runtime API round trip);
- cold start: a new execution environment per call (INIT + first invoke).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Callable

from lamina.config import load_settings
from lamina.control.models import FunctionVersion
from lamina.environments.environment import Invocation
from lamina.platform import Platform

HANDLER = (
    "import time\n"
    "def handler(event, context):\n"
    "    time.sleep(event.get('sleep', 0))\n"
    "    return event\n"
)
ROLE = "arn:aws:iam::000000000000:role/bench"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def code_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", HANDLER)
    return buffer.getvalue()


# -- naive baseline ---------------------------------------------------------------


def naive_call(code_dir: Path, event: dict) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c",
         "import json, sys, app; print(json.dumps(app.handler(json.loads(sys.argv[1]), None)))",
         json.dumps(event)],
        cwd=code_dir, check=True, capture_output=True,
    )
    return (time.perf_counter() - started) * 1000


def throughput(make_call: Callable[[], Callable[[], object]], concurrency: int,
               seconds: float) -> float:
    """Calls per second from `concurrency` threads, each with its own make_call()."""
    count = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        nonlocal count
        call = make_call()
        while time.perf_counter() < deadline:
            call()
            with lock:
                count += 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return count / (time.perf_counter() - started)


# -- Lamina over HTTP -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HttpInvoker:
    def __init__(self, port: int, name: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port)
        self.path = f"/2015-03-31/functions/{name}/invocations"

    def call(self, body: bytes) -> float:
        started = time.perf_counter()
        self.conn.request("POST", self.path, body=body)
        response = self.conn.getresponse()
        response.read()
        assert response.status == 200, response.status
        return (time.perf_counter() - started) * 1000


def start_server(data_dir: Path, sandbox: str | None) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = dict(os.environ)
    if sandbox:
        env["LAMINA_SANDBOX"] = sandbox
    process = subprocess.Popen(
        [sys.executable, "-m", "lamina.cli.main", "serve", "--port", str(port),
         "--data-dir", str(data_dir)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def create_function(port: int, name: str) -> None:
    import base64

    conn = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"FunctionName": name, "Runtime": "python3.11", "Role": ROLE,
                       "Handler": "app.handler",
                       "Code": {"ZipFile": base64.b64encode(code_zip()).decode()}})
    conn.request("POST", "/2015-03-31/functions", body=body,
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    assert response.status == 201, response.status


# -- in process: platform overhead and cold starts ---------------------------------


async def in_process(data_dir: Path, sandbox: str | None, warm_n: int, cold_n: int,
                     timeout_n: int) -> dict[str, list[float]]:
    settings = load_settings(data_dir=data_dir)
    if sandbox:
        settings = settings.replace(sandbox=sandbox)
    platform = Platform(settings)
    await platform.start()
    try:
        await platform.functions.create_function(
            "inproc", code_zip(), {"role": ROLE, "runtime": "python3.11", "handler": "app.handler"}, {}
        )
        fv: FunctionVersion = platform.functions.get_version("inproc")
        pool = platform.environments
        warm: list[float] = []
        handler_ms: list[float] = []
        env = await pool.start_environment(fv)
        for i in range(warm_n):
            invocation = Invocation(f"req-{i}", b'{"n": 1}', "arn", "Root=1-0-0")
            started = time.perf_counter()
            outcome = await env.invoke(invocation)
            warm.append((time.perf_counter() - started) * 1000)
            handler_ms.append(outcome.duration_ms)
        await env.shutdown()
        cold: list[float] = []
        init: list[float] = []
        for i in range(cold_n):
            started = time.perf_counter()
            env = await pool.start_environment(fv)
            await env.invoke(Invocation(f"cold-{i}", b"{}", "arn", "Root=1-0-0"))
            cold.append((time.perf_counter() - started) * 1000)
            init.append(env.init_duration_ms or 0)
            await env.shutdown()
        # Timeout precision: how long after the deadline the invocation is stopped.
        platform.functions.update_configuration("inproc", {"timeout": 1})
        slow = platform.functions.get_version("inproc")
        overshoot: list[float] = []
        for i in range(timeout_n):
            env = await pool.start_environment(slow)
            outcome = await env.invoke(Invocation(f"slow-{i}", b'{"sleep": 5}', "arn", "Root=1-0-0"))
            assert outcome.status == "timeout"
            overshoot.append(outcome.duration_ms - 1000)
            await env.shutdown()
        return {"warm": warm, "cold": cold, "init": init, "overshoot": overshoot}
    finally:
        await platform.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sandbox", default=None, help="process | namespaces (default: auto)")
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    warm_n, cold_n, naive_n, seconds = (300, 10, 10, 1.0) if args.quick else (2000, 40, 30, 3.0)
    concurrency_levels = [1, 2, 4, 8]

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        code_dir = tmp_path / "naive"
        code_dir.mkdir()
        (code_dir / "app.py").write_text(HANDLER)

        naive = [naive_call(code_dir, {"n": i}) for i in range(naive_n)]
        results = asyncio.run(in_process(tmp_path / "inproc", args.sandbox, warm_n, cold_n,
                                         3 if args.quick else 5))

        process, port = start_server(tmp_path / "server", args.sandbox)
        try:
            create_function(port, "bench")
            client = HttpInvoker(port, "bench")
            for _ in range(50):
                client.call(b"{}")  # warm up: first environment, connection
            http_warm = [client.call(b'{"n": 1}') for _ in range(warm_n)]
            lamina_tp = {
                c: throughput(lambda: functools.partial(HttpInvoker(port, "bench").call, b'{"n": 1}'),
                              c, seconds)
                for c in concurrency_levels
            }
        finally:
            process.terminate()
            process.wait(timeout=30)
        naive_tp = {
            c: throughput(lambda: functools.partial(naive_call, code_dir, {"n": 1}), c, seconds)
            for c in (1, 2)
        }

    print(f"sandbox backend: {args.sandbox or 'auto'}; cores: {os.cpu_count()}")
    print()
    print(f"{'measure':<46}{'Lamina':>14}{'naive':>14}{'ratio':>10}")
    rows = [
        ("warm invoke, HTTP end to end, p50 (ms)", statistics.median(http_warm), statistics.median(naive)),
        ("warm invoke, HTTP end to end, p99 (ms)", percentile(http_warm, 99), percentile(naive, 99)),
        ("warm overhead in process, p50 (ms)", statistics.median(results["warm"]), statistics.median(naive)),
        ("warm overhead in process, p99 (ms)", percentile(results["warm"], 99), percentile(naive, 99)),
        ("cold start to first result, p50 (ms)", statistics.median(results["cold"]), statistics.median(naive)),
        ("cold start to first result, p95 (ms)", percentile(results["cold"], 95), percentile(naive, 95)),
        ("  of which INIT (Init Duration), p50 (ms)", statistics.median(results["init"]), float("nan")),
    ]
    for label, ours, theirs in rows:
        ratio = theirs / ours if ours else float("nan")
        print(f"{label:<46}{ours:>14.3f}{theirs:>14.3f}{ratio:>9.1f}x")
    overshoot = results["overshoot"]
    print(f"{'timeout: stopped after the deadline, max (ms)':<46}{max(overshoot):>14.3f}"
          f"   (target < 100; median {statistics.median(overshoot):.3f})")
    print()
    print(f"{'throughput (invocations/s)':<46}{'Lamina':>14}{'naive':>14}")
    for c in concurrency_levels:
        theirs = f"{naive_tp[c]:>14.1f}" if c in naive_tp else f"{'-':>14}"
        print(f"{'  concurrency ' + str(c):<46}{lamina_tp[c]:>14.1f}{theirs}")


if __name__ == "__main__":
    main()
