"""Invocation benchmark: warm latency, throughput, cold start, against a naive baseline.

Run: .venv/bin/python bench/invoke.py [--sandbox process|namespaces] [--quick] [--metrics-only]

Every figure is measured in this one run, beside the same figure for a naive
baseline (a fresh `python -c` that imports the handler and calls it once per
event), so the ratios hold on a noisy shared machine even when absolute numbers
drift. Three views:

- end to end: Invoke over HTTP on loopback (keep-alive client, no boto3 overhead)
  against a real `lamina serve` process;
- platform overhead: the in-process invoker with an echo handler, i.e. what Lamina
  adds to a warm invocation (routing, environment hand-off, Runtime API round trip);
- cold start: a new execution environment per call (INIT + first invoke);
- metrics: warm invokes through the Invoker with metrics on and off
  (LAMINA_METRICS_ENABLED), wall time and the server side's CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from typing import Any, AsyncIterator, Callable

from lamina.config import load_settings
from lamina.control.models import FunctionVersion
from lamina.environments.environment import Invocation, InvocationOutcome
from lamina.environments.pool import EnvironmentPool
from lamina.invoke.specs import environment_spec
from lamina.platform import Platform
from lamina.sandbox.namespaces import probe

HANDLER = (
    "import time\n"
    "def handler(event, context):\n"
    "    time.sleep(event.get('sleep', 0))\n"
    "    return event\n"
)
ROLE = "arn:aws:iam::000000000000:role/bench"
# One full vCPU (Lambda's 1,769 MB): the figures are Lamina's overhead, not the
# CPU share of a small function (at 128 MB a tight loop of invokes is throttled
# to 7% of a core by design, as on Lambda).
MEMORY_MB = 1769


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def code_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        # Readable by others (0644), as Lambda requires of code files.
        info = zipfile.ZipInfo("app.py")
        info.external_attr = 0o100644 << 16
        archive.writestr(info, HANDLER)
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
                       "Handler": "app.handler", "MemorySize": MEMORY_MB,
                       "Code": {"ZipFile": base64.b64encode(code_zip()).decode()}})
    conn.request("POST", "/2015-03-31/functions", body=body,
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    assert response.status == 201, response.status


# -- in process: platform overhead and cold starts ---------------------------------


@contextlib.asynccontextmanager
async def running_platform(data_dir: Path, sandbox: str | None,
                           **overrides: Any) -> AsyncIterator[Platform]:
    """A started Platform in data_dir (no HTTP server), stopped on the way out."""
    settings = load_settings(data_dir=data_dir, **overrides)
    if sandbox:
        settings = settings.replace(sandbox=sandbox)
    platform = Platform(settings)
    await platform.start()
    try:
        yield platform
    finally:
        await platform.stop()


async def cold_start(pool: EnvironmentPool, fv: FunctionVersion,
                     request_id: str) -> tuple[float, InvocationOutcome, float]:
    """A new environment's first invocation: (ms to its result, outcome, Init Duration).
    The environment is stopped afterwards, outside the timing."""
    started = time.perf_counter()
    env = await pool.start_environment(environment_spec(fv))
    outcome = await env.invoke(Invocation(request_id, b"{}", "arn", "Root=1-0-0"))
    elapsed = (time.perf_counter() - started) * 1000
    await pool.stop_environment(env)
    return elapsed, outcome, env.init_duration_ms or 0.0


async def in_process(data_dir: Path, sandbox: str | None, warm_n: int, cold_n: int,
                     timeout_n: int) -> dict[str, list[float]]:
    async with running_platform(data_dir, sandbox) as platform:
        await platform.functions.create_function(
            "inproc", code_zip(),
            {"role": ROLE, "runtime": "python3.11", "handler": "app.handler", "memory_size": MEMORY_MB},
            {},
        )
        fv: FunctionVersion = platform.functions.get_version("inproc")
        pool = platform.environments
        warm: list[float] = []
        handler_ms: list[float] = []
        env = await pool.start_environment(environment_spec(fv))
        for i in range(warm_n):
            invocation = Invocation(f"req-{i}", b'{"n": 1}', "arn", "Root=1-0-0")
            started = time.perf_counter()
            outcome = await env.invoke(invocation)
            warm.append((time.perf_counter() - started) * 1000)
            handler_ms.append(outcome.duration_ms)
        await pool.stop_environment(env)
        cold: list[float] = []
        init: list[float] = []
        # The sandbox's own share of a cold start: backend.launch() alone.
        launch_ms: list[float] = []
        launch = pool.backend.launch

        async def timed_launch(spec: Any, output_fd: int) -> Any:
            started = time.perf_counter()
            try:
                return await launch(spec, output_fd)
            finally:
                launch_ms.append((time.perf_counter() - started) * 1000)

        pool.backend.launch = timed_launch  # type: ignore[method-assign]
        for i in range(cold_n):
            elapsed, _, init_ms = await cold_start(pool, fv, f"cold-{i}")
            cold.append(elapsed)
            init.append(init_ms)
        # Timeout precision: how long after the deadline the invocation is stopped.
        platform.functions.update_configuration("inproc", {"timeout": 1})
        slow = platform.functions.get_version("inproc")
        overshoot: list[float] = []
        for i in range(timeout_n):
            env = await pool.start_environment(environment_spec(slow))
            outcome = await env.invoke(Invocation(f"slow-{i}", b'{"sleep": 5}', "arn", "Root=1-0-0"))
            assert outcome.status == "timeout", (outcome.status, outcome.payload[:300])
            overshoot.append(outcome.duration_ms - 1000)
            await pool.stop_environment(env)
        return {"warm": warm, "cold": cold, "init": init, "launch": launch_ms,
                "overshoot": overshoot}


async def metrics_overhead(data_dir: Path, sandbox: str | None, rounds: int,
                           per_round: int) -> dict[str, list[float]]:
    """Warm invocations through the whole invoke path (Invoker: resolve, admission,
    environment, Runtime API, report) on two platforms in this process, one with
    metrics on and one with them off (LAMINA_METRICS_ENABLED), in alternating blocks
    so drift on a shared machine hits both alike. Microseconds per invocation."""
    from lamina.invoke.service import InvocationRequest

    async with contextlib.AsyncExitStack() as stack:
        platforms: dict[str, Platform] = {}
        for label, enabled in (("on", True), ("off", False)):
            platform = await stack.enter_async_context(running_platform(
                data_dir / f"metrics-{label}", sandbox, metrics_enabled=enabled))
            await platform.functions.create_function(
                "bench", code_zip(),
                {"role": ROLE, "runtime": "python3.11", "handler": "app.handler",
                 "memory_size": MEMORY_MB}, {})
            for _ in range(600):
                if platform.functions.get_version("bench").state == "Active":
                    break
                await asyncio.sleep(0.05)
            for _ in range(50):  # the environment, warm
                await platform.invoker.invoke(InvocationRequest("bench", b"{}"))
            platforms[label] = platform
        times: dict[str, list[float]] = {"on": [], "off": [], "difference": [],
                                         "cpu on": [], "cpu off": [], "cpu difference": []}
        for r in range(rounds):
            order = ("on", "off") if r % 2 == 0 else ("off", "on")
            medians, cpu = {}, {}
            for label in order:
                invoker = platforms[label].invoker
                block = []
                cpu_started = time.process_time()
                for _ in range(per_round):
                    started = time.perf_counter()
                    result = await invoker.invoke(InvocationRequest("bench", b'{"n": 1}'))
                    block.append((time.perf_counter() - started) * 1e6)
                    assert result.status_code == 200, result.payload[:300]
                # The server side's CPU per invocation (this process; the function
                # runs in another): what metrics add, whatever else the machine runs.
                cpu[label] = (time.process_time() - cpu_started) / per_round * 1e6
                times[label] += block
                times[f"cpu {label}"].append(cpu[label])
                medians[label] = statistics.median(block)
            # Paired by round: the two blocks ran back to back.
            times["difference"].append(medians["on"] - medians["off"])
            times["cpu difference"].append(cpu["on"] - cpu["off"])
        return times


def print_metrics_overhead(times: dict[str, list[float]]) -> None:
    def p50(values: list[float]) -> float:
        return statistics.median(values)

    print()
    on, off = times["on"], times["off"]
    print(f"{'warm invoke via Invoker (process), µs':<44}{'metrics on':>13}{'off':>13}{'on - off':>13}")
    for label, pick in (("p50", p50), ("mean", statistics.fmean)):
        print(f"{'  ' + label:<44}{pick(on):>13.1f}{pick(off):>13.1f}{pick(on) - pick(off):>13.1f}")
    paired = statistics.median(times["difference"])
    print(f"{'  median of paired block p50 differences':<44}{'':>26}{paired:>13.1f}")
    cpu_on, cpu_off = p50(times["cpu on"]), p50(times["cpu off"])
    cpu_paired = statistics.median(times["cpu difference"])
    print(f"{'  server CPU per invocation, block median':<44}{cpu_on:>13.1f}{cpu_off:>13.1f}"
          f"{cpu_on - cpu_off:>13.1f}")
    print(f"{'  median of paired block CPU differences':<44}{'':>26}{cpu_paired:>13.1f}")
    print("  (budget for metrics: 20 µs per invocation; the model alone: bench/metrics.py)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sandbox", default=None,
                        help="backend of the HTTP server: process | namespaces (default: auto)")
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--metrics-only", action="store_true",
                        help="only warm invokes with metrics on and off")
    args = parser.parse_args()
    if args.metrics_only:
        with tempfile.TemporaryDirectory() as tmp:
            os.chmod(tmp, 0o755)
            print_metrics_overhead(asyncio.run(metrics_overhead(
                Path(tmp), "process", 10 if args.quick else 40, 100 if args.quick else 250)))
        return
    warm_n, cold_n, naive_n, seconds = (300, 10, 10, 1.0) if args.quick else (2000, 40, 30, 3.0)
    concurrency_levels = [1, 2, 4, 8]
    backends = ["process"] + (["namespaces"] if probe() is None else [])

    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # sandbox users (unprivileged uids) reach the data dir
        tmp_path = Path(tmp)
        code_dir = tmp_path / "naive"
        code_dir.mkdir()
        (code_dir / "app.py").write_text(HANDLER)

        naive = [naive_call(code_dir, {"n": i}) for i in range(naive_n)]
        # Every in-process figure per sandbox backend, in this one run.
        results = {
            backend: asyncio.run(in_process(tmp_path / f"inproc-{backend}", backend, warm_n,
                                            cold_n, 3 if args.quick else 5))
            for backend in backends
        }

        metrics_rounds = 10 if args.quick else 40
        # The process backend: the least noisy path, so a few µs can show.
        metrics_times = asyncio.run(metrics_overhead(
            tmp_path / "metrics", "process", metrics_rounds, 100 if args.quick else 250))

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

    print(f"cores: {os.cpu_count()}; function MemorySize {MEMORY_MB} MB; "
          f"HTTP server sandbox: {args.sandbox or 'auto'}")
    print()
    print(f"{'measure (ms)':<44}" + "".join(f"{b:>13}" for b in backends) + f"{'naive':>13}")

    def row(label: str, key: str, pick: Callable[[list[float]], float], naive_value: float) -> None:
        cells = "".join(f"{pick(results[b][key]):>13.3f}" for b in backends)
        print(f"{label:<44}{cells}{naive_value:>13.3f}")

    def p50(values: list[float]) -> float:
        return statistics.median(values)

    def p99(values: list[float]) -> float:
        return percentile(values, 99)

    def p95(values: list[float]) -> float:
        return percentile(values, 95)

    row("warm overhead in process, p50", "warm", p50, p50(naive))
    row("warm overhead in process, p99", "warm", p99, p99(naive))
    row("cold start to first result, p50", "cold", p50, p50(naive))
    row("cold start to first result, p95", "cold", p95, p95(naive))
    row("  of which INIT (Init Duration), p50", "init", p50, float("nan"))
    row("  of which sandbox launch, p50", "launch", p50, float("nan"))
    row("timeout: stopped after deadline, max", "overshoot", max, float("nan"))
    if "namespaces" in results:
        added = p50(results["namespaces"]["launch"]) - p50(results["process"]["launch"])
        print(f"{'isolation added to a launch, p50':<44}{added:>13.3f}   (target: well under 10)")
    print()
    print(f"{'HTTP end to end (auto backend)':<44}{'Lamina':>13}{'naive':>13}{'ratio':>9}")
    for label, ours, theirs in [
        ("warm invoke p50 (ms)", p50(http_warm), p50(naive)),
        ("warm invoke p99 (ms)", p99(http_warm), p99(naive)),
    ]:
        print(f"{label:<44}{ours:>13.3f}{theirs:>13.3f}{theirs / ours:>8.1f}x")
    for c in concurrency_levels:
        theirs = f"{naive_tp[c]:>13.1f}" if c in naive_tp else f"{'-':>13}"
        print(f"{'throughput, concurrency ' + str(c) + ' (invocations/s)':<44}{lamina_tp[c]:>13.1f}{theirs}")
    print_metrics_overhead(metrics_times)

if __name__ == "__main__":
    main()
