"""Cold-launch cost of each sandbox backend: launch() until the process inside has
connected to its Runtime API socket.

    .venv/bin/python bench/sandbox.py [--runs 30]

Two commands inside: bash opening a TCP connection (almost no start-up of its own,
so the figure is the sandbox's cost) and python3 doing the same (a realistic
runtime start). Memory is 1,769 MB (one full core), so the CPU quota does not
stretch the start, except in the 128 MB row (7% of a core). "outbound" adds
slirp4netns; "setns" is the part spent creating the listener inside the
sandbox's network namespace. Cases run interleaved, so load from elsewhere on a
shared machine hits them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina.sandbox import namespaces
from lamina.sandbox.base import SandboxBackend, SandboxSpec
from lamina.sandbox.namespaces import NamespaceBackend, NamespaceSettings, probe
from lamina.sandbox.process import ProcessBackend

CONNECT = {
    "bash": ["/bin/bash", "-c",
             'exec 3<>"/dev/tcp/${AWS_LAMBDA_RUNTIME_API%:*}/${AWS_LAMBDA_RUNTIME_API#*:}"'],
    "python3": ["/usr/bin/python3", "-S", "-c",
                "import os, socket; h, p = os.environ['AWS_LAMBDA_RUNTIME_API'].split(':'); "
                "socket.create_connection((h, int(p))).close()"],
}

DEVNULL = os.open(os.devnull, os.O_WRONLY)
setns_times: list[float] = []
_listen_inside = namespaces.listen_inside


async def _timed_listen_inside(pid: int, *args: Any, **kwargs: Any) -> Any:
    start = time.perf_counter()
    try:
        return await _listen_inside(pid, *args, **kwargs)
    finally:
        setns_times.append(time.perf_counter() - start)


namespaces.listen_inside = _timed_listen_inside  # type: ignore[assignment]


async def cold_start(backend: SandboxBackend, spec: SandboxSpec) -> tuple[float, float]:
    """(seconds in launch(), seconds until the inside connected)."""
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    sandbox = await backend.launch(spec, DEVNULL)
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


@dataclass
class Case:
    backend: SandboxBackend
    command: str
    memory_mb: int = 1769
    network: bool = False
    launch: list[float] = field(default_factory=list)
    connect: list[float] = field(default_factory=list)
    setns: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        network = "outbound" if self.network else "loopback"
        return f"{self.backend.name:10} {self.command:7} {self.memory_mb:5} MB {network:8}"


async def main(runs: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="lamina-bench-"))
    root.chmod(0o755)  # sandbox users (unprivileged host uids) must reach the code
    for name in ("task", "runtime", "tmp"):
        (root / name).mkdir()
    process = ProcessBackend()
    cases = [Case(process, "bash"), Case(process, "python3")]
    reason = probe()
    namespaced: NamespaceBackend | None = None
    if reason is None:
        namespaced = NamespaceBackend(NamespaceSettings(
            cgroup_parent=f"lamina-bench-{uuid.uuid4().hex[:6]}", ephemeral_dir=root / "ephemeral"))
        cases += [Case(namespaced, "bash"), Case(namespaced, "bash", network=True),
                  Case(namespaced, "python3"), Case(namespaced, "python3", memory_mb=128)]
    else:
        print(f"namespaces backend unavailable: {reason}", file=sys.stderr)
    try:
        await measure(cases, root, runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if namespaced is not None:
            await namespaced.close()
            namespaced._cgroups.remove_empty_parents()
    print(f"cold launch -> the process inside connects to its Runtime API; {runs} runs each")
    for case in cases:
        extra = f"  setns {ms(case.setns)}" if case.setns else ""
        print(f"{case.label}  connect {ms(case.connect)}  launch() {ms(case.launch)}{extra}")


async def measure(cases: list[Case], root: Path, runs: int) -> None:
    # Interleaved, so load from elsewhere on the machine hits every case alike.
    for _ in range(runs):
        for case in cases:
            spec = SandboxSpec(
                environment_id=f"bench-{uuid.uuid4().hex[:12]}", argv=CONNECT[case.command],
                env={"PATH": "/usr/bin:/bin"}, task_root=root / "task",
                runtime_root=root / "runtime", scratch_root=root / "tmp",
                memory_mb=case.memory_mb, network=case.network,
            )
            before = len(setns_times)
            launched, connected = await cold_start(case.backend, spec)
            case.launch.append(launched)
            case.connect.append(connected)
            case.setns += setns_times[before:]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    asyncio.run(main(parser.parse_args().runs))
