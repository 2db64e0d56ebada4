"""Where a new environment's start goes, phase by phase, and what each sandbox
process costs idle: the breakdown behind bench/density.py's totals.

    .venv/bin/python bench/start_phases.py [--runs 20] [--parallel 100] [--compare CHECKOUT]

The namespaces backend is driven directly (no API server): each run launches the
python3.11 runtime client with a no-op handler, exactly as an environment does
(runtime image as `/`, disk-backed /tmp, outbound network), and waits for its first
GET /next, the end of INIT. Runs are sequential so every phase's CPU is its own:

- server phases (cgroup, uid, /tmp disk, bubblewrap until it reports its PID, the
  listeners and egress routes inside, slirp4netns until ready, then the runtime
  until /next): wall time, and the CPU of the server process (all its threads) plus
  the short-lived tools it ran (mkfs.ext4, mount);
- the /tmp disk made ahead in the background (ephemeral.py), which a burst
  larger than the ready disks waits for: wall and CPU;
- each sandbox process's own CPU (from /proc/PID/schedstat, in ns) and its
  PSS/USS once idle in /next.

--parallel N then launches N at once (asyncio.gather) and reports the time until
the last one is in /next: the backend's burst rate on this machine, without the
API server's share.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from lamina.config import default_image_cache_dir
from lamina.images.store import ImageStore
from lamina.runtimes.catalog import CLIENTS_DIR, runtime_spec
from lamina.sandbox import ephemeral, namespaces
from lamina.sandbox.base import DEFAULT_EPHEMERAL_MB, SandboxSpec
from lamina.sandbox.namespaces import NamespaceBackend, NamespaceSettings, probe

sys.path.insert(0, str(Path(__file__).parent))
from density import pss_uss_kb  # noqa: E402

DEVNULL = os.open(os.devnull, os.O_WRONLY)
HANDLER = "def handler(event, context):\n    return {}\n"


def cpu_self_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_ns(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except OSError:
        return 0


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


class Stamps:
    """(wall, CPU) at named points of the current launch."""

    def __init__(self) -> None:
        self.points: list[tuple[str, float, float]] = []

    def mark(self, name: str) -> None:
        self.points.append((name, time.perf_counter(), cpu_self_s()))


stamps = Stamps()
made: list[tuple[float, float]] = []  # /tmp disks made: (wall, CPU of the thread + tools)


def instrument(backend: NamespaceBackend) -> None:
    """Stamp the phases of NamespaceBackend.launch by wrapping what it calls."""
    cgroups = backend._cgroups
    create = cgroups.create

    def timed_create(*args: Any, **kwargs: Any) -> Any:
        result = create(*args, **kwargs)
        stamps.mark("cgroup")
        return result

    cgroups.create = timed_create  # type: ignore[method-assign]
    users = backend._users
    acquire_uid = users.acquire

    def timed_acquire_uid() -> Any:
        result = acquire_uid()
        stamps.mark("uid")
        return result

    users.acquire = timed_acquire_uid  # type: ignore[method-assign]
    disks = backend._disks
    if disks is not None:
        acquire_disk = disks.acquire

        async def timed_acquire_disk(*args: Any) -> Any:
            result = await acquire_disk(*args)
            stamps.mark("/tmp disk (ready one)")
            return result

        disks.acquire = timed_acquire_disk  # type: ignore[method-assign]
    make = ephemeral._make

    def timed_make(*args: Any) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            return make(*args)
        finally:
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            tools = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
            made.append((time.perf_counter() - wall, time.thread_time() - cpu + tools))

    ephemeral._make = timed_make
    read_pipe = namespaces.read_pipe

    async def timed_read_pipe(*args: Any) -> Any:
        result = await read_pipe(*args)
        stamps.mark("bubblewrap until its PID")
        return result

    namespaces.read_pipe = timed_read_pipe  # type: ignore[assignment]
    listen_inside = namespaces.listen_inside

    async def timed_listen_inside(*args: Any, **kwargs: Any) -> Any:
        result = await listen_inside(*args, **kwargs)
        stamps.mark("listeners + egress routes inside")
        return result

    namespaces.listen_inside = timed_listen_inside  # type: ignore[assignment]
    mount_inside = getattr(namespaces, "mount_inside", None)
    if mount_inside is not None:
        async def timed_mount_inside(*args: Any) -> Any:
            result = await mount_inside(*args)
            stamps.mark("/tmp mounted inside (beside the network)")
            return result

        namespaces.mount_inside = timed_mount_inside
    start_outbound = namespaces.Outbound.start

    async def timed_outbound(slirp4netns: str, pid: int) -> Any:
        result = await start_outbound(slirp4netns, pid)
        stamps.mark("slirp4netns until ready")
        return result

    namespaces.Outbound.start = timed_outbound  # type: ignore[assignment,method-assign]


def make_spec(root: Path, image_root: Path, argv: list[str]) -> SandboxSpec:
    return SandboxSpec(
        environment_id=f"bench-{uuid.uuid4().hex[:12]}", argv=argv,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "_HANDLER": "app.handler",
             "LAMBDA_TASK_ROOT": "/var/task", "LANG": "en_US.UTF-8"},
        task_root=root / "task", runtime_root=CLIENTS_DIR, scratch_root=root / "scratch",
        memory_mb=128, root_image=image_root, network=True)


async def until_next(sandbox: Any) -> None:
    """Accept the runtime's connection and read its first request (GET /next)."""
    loop = asyncio.get_running_loop()
    conn, _ = await asyncio.wait_for(loop.sock_accept(sandbox.runtime_api_socket), 60)
    conn.setblocking(False)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await asyncio.wait_for(loop.sock_recv(conn, 65536), 60)
        if not chunk:
            raise RuntimeError("the runtime closed its connection before asking for work")
        data += chunk
    assert b"/invocation/next" in data, data[:200]
    sandbox.bench_connection = conn  # held open: the runtime stays idle in /next


def process_kinds(sandbox: Any) -> dict[str, int]:
    """The sandbox's processes by kind -> host PID."""
    kinds = {"bwrap (outside, with sh + setpriv)": sandbox.process.pid,
             "bwrap (PID 1 inside)": sandbox.pid}
    for child in children_of(sandbox.pid):
        kinds["python3.11 runtime client"] = child
    if sandbox._outbound is not None:
        kinds["slirp4netns"] = sandbox._outbound.process.pid
    return kinds


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.1f}" if values else "      -"


async def sequential(backend: NamespaceBackend, root: Path, image_root: Path, argv: list[str],
                     runs: int) -> None:
    phases: dict[str, list[tuple[float, float]]] = defaultdict(list)
    process_cpu: dict[str, list[float]] = defaultdict(list)
    memory: dict[str, list[tuple[int, int]]] = defaultdict(list)
    destroys: list[float] = []
    order: list[str] = []
    for _ in range(runs):
        disks = backend._disks
        if disks is not None and disks._tasks:  # the disks made ahead: not this launch's cost
            await asyncio.gather(*disks._tasks)
        stamps.points.clear()
        stamps.mark("start")
        sandbox = await backend.launch(make_spec(root, image_root, argv), DEVNULL)
        stamps.mark("launch() returns (block fd written)")
        await until_next(sandbox)
        stamps.mark("runtime until GET /next")
        for (_, wall0, cpu0), (name, wall1, cpu1) in zip(stamps.points, stamps.points[1:]):
            if name not in order:
                order.append(name)
            phases[name].append((wall1 - wall0, cpu1 - cpu0))
        await asyncio.sleep(0.2)  # idle, as a warm environment is
        for kind, pid in process_kinds(sandbox).items():
            process_cpu[kind].append(run_ns(pid) / 1e9)
            memory[kind].append(pss_uss_kb(pid))
        started = time.perf_counter()
        sandbox.bench_connection.close()
        await sandbox.destroy()
        destroys.append(time.perf_counter() - started)
    print(f"\none new environment, phase by phase (median of {runs} sequential launches; CPU: "
          "the server's threads and the tools it ran)")
    print(f"  {'phase':40} {'wall ms':>8} {'CPU ms':>8}")
    total_wall = total_cpu = 0.0
    for name in order:
        walls = [wall for wall, _ in phases[name]]
        cpus = [cpu for _, cpu in phases[name]]
        total_wall += statistics.median(walls)
        total_cpu += statistics.median(cpus)
        print(f"  {name:40} {ms(walls):>8} {ms(cpus):>8}")
    print(f"  {'(sum of medians)':40} {total_wall * 1000:8.1f} {total_cpu * 1000:8.1f}")
    if made:
        print(f"  {'/tmp disk made ahead':40} {ms([w for w, _ in made]):>8} "
              f"{ms([c for _, c in made]):>8}   (x{len(made)}; a burst past the ready ones waits for it)")
    print("  (phases end in the order listed; each runs from the end of the one before)")
    print(f"  {'destroy()':40} {ms(destroys):>8}")
    print("\nper sandbox process (median): CPU until idle in /next, memory once idle")
    print(f"  {'process':40} {'CPU ms':>8} {'PSS MB':>8} {'USS MB':>8}")
    pss_total = uss_total = cpu_total = 0.0
    for kind, cpus in process_cpu.items():
        pss = statistics.median(p for p, _ in memory[kind]) / 1024
        uss = statistics.median(u for _, u in memory[kind]) / 1024
        cpu_total += statistics.median(cpus)
        pss_total, uss_total = pss_total + pss, uss_total + uss
        print(f"  {kind:40} {statistics.median(cpus) * 1000:8.1f} {pss:8.2f} {uss:8.2f}")
    print(f"  {'(sum; PSS of a lone sandbox: shared pages count whole)':40} "
          f"{cpu_total * 1000:8.1f} {pss_total:8.2f} {uss_total:8.2f}")


async def parallel(backend: NamespaceBackend, root: Path, image_root: Path, argv: list[str],
                   count: int) -> None:
    disks = backend._disks
    if disks is not None and disks._tasks:
        await asyncio.gather(*disks._tasks)
    made.clear()
    cpu0 = cpu_self_s()
    started = time.perf_counter()

    async def one() -> Any:
        sandbox = await backend.launch(make_spec(root, image_root, argv), DEVNULL)
        await until_next(sandbox)
        return sandbox

    sandboxes = await asyncio.gather(*(one() for _ in range(count)))
    elapsed = time.perf_counter() - started
    server_cpu = cpu_self_s() - cpu0
    sandbox_cpu = sum(run_ns(pid) for sandbox in sandboxes
                      for pid in process_kinds(sandbox).values()) / 1e9
    print(f"\n{count} new environments launched at once (backend only, no API server): "
          f"{elapsed:.2f} s until the last is in /next; CPU per environment: server "
          f"{server_cpu / count * 1000:.1f} ms, sandbox processes {sandbox_cpu / count * 1000:.1f} ms; "
          f"{len(made)} /tmp disks made during the burst; {os.cpu_count()} cores; "
          f"load {os.getloadavg()[0]:.2f}")
    await asyncio.sleep(0.5)  # idle, as warm environments are
    memory: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for sandbox in sandboxes:
        for kind, pid in process_kinds(sandbox).items():
            memory[kind].append(pss_uss_kb(pid))
    print("  memory once idle, mean per process: " + "; ".join(
        f"{kind} PSS {sum(p for p, _ in values) / len(values) / 1024:.2f} MB, "
        f"USS {sum(u for _, u in values) / len(values) / 1024:.2f} MB"
        for kind, values in memory.items()))
    for sandbox in sandboxes:
        sandbox.bench_connection.close()
    await asyncio.gather(*(sandbox.destroy() for sandbox in sandboxes))


async def main(runs: int, count: int) -> None:
    reason = probe()
    if reason is not None:
        sys.exit(f"namespaces backend unavailable: {reason}")
    image = await asyncio.to_thread(ImageStore(default_image_cache_dir()).ensure, "python3.11")
    argv = list(runtime_spec("python3.11", source="image").argv)
    root = Path(tempfile.mkdtemp(prefix="lamina-phases-"))
    root.chmod(0o755)  # sandbox users (unprivileged host uids) reach the code
    (root / "task").mkdir()
    (root / "task" / "app.py").write_text(HANDLER)
    (root / "task" / "app.py").chmod(0o644)
    (root / "task").chmod(0o755)
    (root / "scratch").mkdir()
    backend = NamespaceBackend(NamespaceSettings(
        cgroup_parent=f"lamina-bench-{uuid.uuid4().hex[:6]}", ephemeral_dir=root / "ephemeral"))
    instrument(backend)
    print(f"runtime: {' '.join(argv)} on {image.name}; load {os.getloadavg()[0]:.2f}")
    try:
        if backend._disks is not None:  # the first /tmp disks, made ahead as a server does
            backend._disks.prepare(DEFAULT_EPHEMERAL_MB)
        await sequential(backend, root, image.root, argv, runs)
        if count:
            await parallel(backend, root, image.root, argv, count)
    finally:
        await backend.close()
        backend._cgroups.remove_empty_parents()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=100)
    parser.add_argument("--compare", type=Path, metavar="CHECKOUT",
                        help="first run the same on another checkout's src (before/after)")
    args = parser.parse_args()
    if args.compare is not None:
        print(f"=== {args.compare} ===", flush=True)
        subprocess.run([sys.executable, __file__, "--runs", str(args.runs),
                        "--parallel", str(args.parallel)], check=True,
                       env=dict(os.environ, PYTHONPATH=str(args.compare.resolve() / "src")))
        print("\n=== this checkout ===", flush=True)
    asyncio.run(main(args.runs, args.parallel))
