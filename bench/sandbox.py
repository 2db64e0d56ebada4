"""Cold-launch cost of each sandbox backend: launch() until the process inside has
connected to its Runtime API socket.

    .venv/bin/python bench/sandbox.py [--runs 30]

Two commands inside: bash opening a TCP connection (almost no start-up of its own,
so the figure is the sandbox's cost) and python3 doing the same (a realistic
runtime start). Memory is 1,769 MB (one full core), so the CPU quota does not
stretch the start; the last rows show the 128 MB quota (7% of a core) on the same
python start. "setns" is the part spent creating the listener inside the
sandbox's network namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from lamina.sandbox import SandboxBackend, SandboxSpec
from lamina.sandbox import namespaces
from lamina.sandbox.namespaces import NamespaceBackend, probe
from lamina.sandbox.process import ProcessBackend

CONNECT = {
    "bash": ["/bin/bash", "-c",
             'exec 3<>"/dev/tcp/${AWS_LAMBDA_RUNTIME_API%:*}/${AWS_LAMBDA_RUNTIME_API#*:}"'],
    "python3": ["/usr/bin/python3", "-S", "-c",
                "import os, socket; h, p = os.environ['AWS_LAMBDA_RUNTIME_API'].split(':'); "
                "socket.create_connection((h, int(p))).close()"],
}

setns_times: list[float] = []
_listen_inside = namespaces._listen_inside


async def _timed_listen_inside(pid: int) -> Any:
    start = time.perf_counter()
    try:
        return await _listen_inside(pid)
    finally:
        setns_times.append(time.perf_counter() - start)


namespaces._listen_inside = _timed_listen_inside  # type: ignore[assignment]


async def cold_start(backend: SandboxBackend, spec: SandboxSpec) -> tuple[float, float]:
    """(seconds in launch(), seconds until the inside connected)."""
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    sandbox = await backend.launch(spec)
    launched = time.perf_counter()
    try:
        conn, _ = await asyncio.wait_for(loop.sock_accept(sandbox.runtime_api_socket), 30)
        connected = time.perf_counter()
        conn.close()
    finally:
        await sandbox.destroy()
    return launched - start, connected - start


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1000:6.1f} ms  p95 {percentile(values, 0.95) * 1000:6.1f} ms"


async def main(runs: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="lamina-bench-"))
    for name in ("task", "runtime", "tmp"):
        (root / name).mkdir()
    backends: list[SandboxBackend] = [ProcessBackend()]
    reason = probe()
    if reason is None:
        backends.append(NamespaceBackend(cgroup_parent=f"lamina-bench-{uuid.uuid4().hex[:6]}"))
    else:
        print(f"namespaces backend unavailable: {reason}", file=sys.stderr)
    cases = [(command, 1769) for command in CONNECT] + [("python3", 128)]
    print(f"cold launch -> inside connects to the Runtime API, {runs} runs each")
    for command, memory in cases:
        for backend in backends:
            if memory != 1769 and backend.name == "process":
                continue  # no CPU quota there: same as the 1,769 MB row
            launch_times, connect_times = [], []
            setns_times.clear()
            for _ in range(runs):
                spec = SandboxSpec(
                    environment_id=f"bench-{uuid.uuid4().hex[:12]}", argv=CONNECT[command],
                    env={"PATH": "/usr/bin:/bin"}, task_root=root / "task",
                    runtime_root=root / "runtime", scratch_root=root / "tmp", memory_mb=memory,
                )
                launched, connected = await cold_start(backend, spec)
                launch_times.append(launched)
                connect_times.append(connected)
            extra = f"   setns {ms(setns_times)}" if setns_times else ""
            print(f"{backend.name:10} {command:7} {memory:5} MB  connect {ms(connect_times)}"
                  f"   launch() {ms(launch_times)}{extra}")
    for backend in backends:
        if isinstance(backend, NamespaceBackend):
            for parent in backend._cgroups.parents.values():
                parent.rmdir()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    asyncio.run(main(parser.parse_args().runs))
