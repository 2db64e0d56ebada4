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
- cold start: a new execution environment per call (INIT + first invoke), for a
  plain function, one whose environment variables are sealed under a KMS key
  (opened as the environment starts) and one with an EFS access point mounted
  (an idmapped mount per environment; namespaces backend only).
- tracing: warm invokes with spans exported over OTLP to a local receiver, sampled
  and unsampled alternating, beside the same without a collector.
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
from lamina.sandbox import file_systems as sandbox_file_systems
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

        # The same cold start with sealed variables, and with a file system mounted,
        # interleaved with the plain one so that the machine's drift hits all three.
        base = {"role": ROLE, "runtime": "python3.11", "handler": "app.handler",
                "memory_size": MEMORY_MB}
        await platform.functions.create_function(
            "sealed", code_zip(),
            {**base, "environment": {"API_KEY": "bench-secret", "DB_URL": "postgres://bench"},
             "environment_given": True}, {})
        sealed = platform.functions.get_version("sealed")
        mounted: FunctionVersion | None = None
        if pool.backend.name == "namespaces":
            fs = platform.file_systems.create_file_system({"CreationToken": "bench"})
            ap = platform.file_systems.create_access_point({
                "ClientToken": "bench", "FileSystemId": fs["FileSystemId"],
                "PosixUser": {"Uid": 1000, "Gid": 1000},
                "RootDirectory": {"Path": "/bench", "CreationInfo": {
                    "OwnerUid": 1000, "OwnerGid": 1000, "Permissions": "750"}}})
            await platform.functions.create_function(
                "mounted", code_zip(),
                {**base, "file_system_configs": [{"Arn": ap["AccessPointArn"],
                                                  "LocalMountPath": "/mnt/bench"}]}, {})
            mounted = platform.functions.get_version("mounted")
        cold_sealed: list[float] = []
        cold_mounted: list[float] = []
        # Their own shares: opening the variables (and finding the access point), and
        # making the idmapped mount.
        prepare_ms: list[float] = []
        mount_ms: list[float] = []
        prepare = pool.prepare
        assert prepare is not None

        def timed_prepare(spec: Any) -> Any:
            started = time.perf_counter()
            try:
                return prepare(spec)
            finally:
                prepare_ms.append((time.perf_counter() - started) * 1000)

        mount_for = sandbox_file_systems.mount_for

        def timed_mount(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return mount_for(*args)
            finally:
                mount_ms.append((time.perf_counter() - started) * 1000)

        pool.prepare = timed_prepare
        sandbox_file_systems.mount_for = timed_mount  # type: ignore[assignment]
        for i in range(cold_n):
            pool.backend.launch = timed_launch  # type: ignore[method-assign]
            elapsed, _, init_ms = await cold_start(pool, fv, f"cold-{i}")
            cold.append(elapsed)
            init.append(init_ms)
            pool.backend.launch = launch  # type: ignore[method-assign]
            cold_sealed.append((await cold_start(pool, sealed, f"sealed-{i}"))[0])
            if mounted is not None:
                cold_mounted.append((await cold_start(pool, mounted, f"mounted-{i}"))[0])
        cold_mounted = cold_mounted or [float("nan")]
        sandbox_file_systems.mount_for = mount_for  # type: ignore[assignment]
        pool.prepare = prepare
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
                "overshoot": overshoot, "cold_sealed": cold_sealed, "cold_mounted": cold_mounted,
                "prepare": prepare_ms, "mount": mount_ms or [float("nan")]}


# -- tracing: warm overhead with spans exported over OTLP, and without ----------------


class OtlpSink:
    """An OTLP/HTTP collector on loopback that accepts and counts what it is sent."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        sink = self
        self.requests = 0
        self.bytes = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                sink.requests += 1
                sink.bytes += len(body)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def traced_warm(data_dir: Path, sandbox: str | None, warm_n: int,
                      endpoint: str) -> dict[str, list[float]]:
    """Warm invocations of one environment, tracing off, on but unsampled (Sampled=0)
    and on and sampled, in turn, so all three see the same machine. Off is the
    environment without the tracing listener, as on a server without a collector."""
    from lamina.observe.trace_headers import TraceHeader, new_root, new_span_id

    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint  # read by the OTLP exporter
    try:
        async with running_platform(data_dir, sandbox) as platform:
            assert platform.tracer is not None
            await platform.functions.create_function(
                "traced", code_zip(),
                {"role": ROLE, "runtime": "python3.11", "handler": "app.handler",
                 "memory_size": MEMORY_MB}, {})
            pool = platform.environments
            env = await pool.start_environment(environment_spec(platform.functions.get_version("traced")))
            with_tracing = list(env.listeners)
            without = with_tracing[:-1]  # the tracing listener is the pool's last
            timings: dict[str, list[float]] = {"off": [], "unsampled": [], "sampled": []}
            kinds = ("off", "unsampled", "sampled")
            for i in range(-60, warm_n * 3):  # the first 60 warm up, uncounted
                kind = kinds[i % 3]
                env.listeners[:] = without if kind == "off" else with_tracing
                header = TraceHeader(new_root(), new_span_id(), kind == "sampled")
                invocation = Invocation(f"t-{i}", b'{"n": 1}', "arn", str(header))
                started = time.perf_counter()
                await env.invoke(invocation)
                elapsed = (time.perf_counter() - started) * 1000
                if i >= 0:
                    timings[kind].append(elapsed)
            await pool.stop_environment(env)
        return timings
    finally:
        os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)


def tracing_costs_us(n: int) -> tuple[float, float]:
    """What a sampled invocation costs: on the event loop, the tracing listener (its
    START, runtimeDone and REPORT events, four spans built and queued); on the
    exporting thread, encoding those four spans for OTLP. µs each."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from lamina.observe.events import InvokeReport, InvokeStart, RuntimeDone
    from lamina.observe.trace_headers import TraceHeader, new_root, new_span_id
    from lamina.observe.tracing import FunctionResource, InvocationTracer

    class Queue:
        def __init__(self) -> None:
            self.spans: list[Any] = []

        def on_end(self, span: Any) -> None:
            self.spans.append(span)

        def shutdown(self) -> None:
            pass

    queue = Queue()
    tracer = InvocationTracer(queue)  # type: ignore[arg-type]
    listener = tracer.listener_for(FunctionResource("bench", "$LATEST", 1769, "us-east-1", "0" * 12))
    listener_us = encode_us = float("inf")
    # Best of five: on a shared machine the least disturbed run is the cost.
    for _ in range(5):
        events = []
        for i in range(n):
            header = str(TraceHeader(new_root(), new_span_id(), True))
            events.append((InvokeStart(f"r{i}", "$LATEST", header),
                           RuntimeDone(f"r{i}", "success", 1.0, 10, header),
                           InvokeReport(f"r{i}", "success", 1.2, 2, 1769, 40, header,
                                        invoked_function_arn="arn:aws:lambda:us-east-1:0:function:bench")))
        queue.spans.clear()
        started = time.perf_counter()
        for start, done, report in events:
            listener(start)
            listener(done)
            listener(report)
        listener_us = min(listener_us, (time.perf_counter() - started) / n * 1e6)
        started = time.perf_counter()
        for batch in range(0, len(queue.spans), 512):  # the processor's batch size
            encode_spans(queue.spans[batch:batch + 512]).SerializeToString()
        encode_us = min(encode_us, (time.perf_counter() - started) / n * 1e6)
    return listener_us, encode_us


def tracing_overhead(tmp_path: Path, sandbox: str, warm_n: int) -> list[str]:
    """The tracing figures, as lines to print."""
    sink = OtlpSink()
    try:
        timings = asyncio.run(traced_warm(tmp_path / "traced", sandbox, warm_n, sink.endpoint))
    finally:
        sink.close()
    listener_us, encode_us = tracing_costs_us(1000)
    lines = [f"{'tracing, warm invoke in process (' + sandbox + ')':<44}{'p50 (ms)':>13}{'p99 (ms)':>13}"]
    for label, kind in [("off (no OTEL_EXPORTER_OTLP_ENDPOINT)", "off"),
                        ("on, Sampled=0", "unsampled"),
                        ("on, Sampled=1 (4 spans over OTLP)", "sampled")]:
        values = timings[kind]
        lines.append(f"{label:<44}{statistics.median(values):>13.3f}{percentile(values, 99):>13.3f}")
    for label, kind in [("Sampled=0 vs off, p50 (µs)", "unsampled"),
                        ("Sampled=1 vs off, p50 (µs)", "sampled")]:
        added = (statistics.median(timings[kind]) - statistics.median(timings["off"])) * 1000
        lines.append(f"{label:<44}{added:>13.1f}")
    lines.append(f"{'listener per sampled invocation (µs, loop)':<44}{listener_us:>13.1f}")
    lines.append(f"{'OTLP encoding of its 4 spans (µs, thread)':<44}{encode_us:>13.1f}")
    lines.append(f"{'OTLP requests / bytes the receiver got':<44}{sink.requests:>13}{sink.bytes:>13}")
    return lines


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
    parser.add_argument("--cold", type=int, default=None,
                        help="cold starts per variant (default: 10 quick, 40 otherwise)")
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
    cold_n = args.cold or cold_n
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

        tracing = tracing_overhead(tmp_path, backends[-1], warm_n)

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
    row("cold start, sealed environment, p50", "cold_sealed", p50, float("nan"))
    row("cold start, file system mounted, p50", "cold_mounted", p50, float("nan"))
    row("  of which variables opened / AP found, p50", "prepare", p50, float("nan"))
    row("  of which idmapped mount made, p50", "mount", p50, float("nan"))
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

    print()
    print("\n".join(tracing))


if __name__ == "__main__":
    main()
