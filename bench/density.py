"""Density and scale-up: how many idle warm environments one host keeps, what each
costs, and how fast a burst of new ones starts.

Run: .venv/bin/python bench/density.py [--max 1000] [--step 50] [--sandbox namespaces]
         [--compare OTHER_CHECKOUT]

1. Scale-up: 100 (--burst) concurrent Invokes of a fresh no-op Python function, each
   on a new environment: the time from the first request to the last answer, and
   how many environments it took.
2. Density: provisioned concurrency of a no-op Python function (128 MB) raised in
   steps of --step, each step waited for (status READY), until --max environments
   are up, the server refuses (its memory budget; LAMINA_ENVIRONMENT_MEMORY_MB is
   raised here to allow --max, and so is the account's concurrency), or the host's
   available memory would fall under --reserve-mb. Provisioned environments are the idle warm environments Lambda
   keeps: initialized, waiting in /next.
   Printed: the count; per environment, the PSS and USS of its processes (from
   /proc/PID/smaps_rollup, split by process kind) and the host's used memory
   (MemTotal - MemAvailable, which also counts the kernel's side: page tables,
   sockets, cgroups, namespaces); warm p50 at concurrency 1 with the first
   environment up and with the last one up.

Every new sandbox's mount namespace starts as a copy of the host's mount table,
and bubblewrap keeps the memory it took to parse it: on a machine where other
servers keep many mounts (older Lamina kept one per environment's /tmp), every
sandbox's bubblewrap grows with them. For figures of this server alone, run it
in a mount namespace of its own without them, e.g.
    unshare -m --propagation private sh -c 'for m in $(awk "{print \$5}" \
        /proc/self/mountinfo | grep ^/run/lamina/ephemeral/); do umount -l "$m"; done;
        exec .venv/bin/python bench/density.py'

The server runs on loopback and is stopped (its process group, by id) at the end.
With --compare, a server from another checkout's src is measured the same way
first, and a before/after table ends the output.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import latencies, percentile, request_bytes  # noqa: E402

HANDLER = "def handler(event, context):\n    return {}\n"
ROLE = "arn:aws:iam::000000000000:role/bench"
MEMORY_MB = 128


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def code_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("app.py")
        info.external_attr = 0o100644 << 16
        archive.writestr(info, HANDLER)
    return buffer.getvalue()


class Api:
    def __init__(self, port: int) -> None:
        self.port = port

    def call(self, method: str, path: str, body: object = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        data = json.dumps(body) if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
        conn.close()
        return response.status, (json.loads(raw) if raw else {})

    def create_function(self, name: str, memory_mb: int = MEMORY_MB) -> None:
        status, answer = self.call("POST", "/2015-03-31/functions", {
            "FunctionName": name, "Runtime": "python3.11", "Role": ROLE,
            "Handler": "app.handler", "MemorySize": memory_mb,
            "Code": {"ZipFile": base64.b64encode(code_zip()).decode()}})
        assert status == 201, answer
        for _ in range(600):
            status, answer = self.call("GET", f"/2015-03-31/functions/{name}/configuration")
            if answer.get("State") == "Active":
                return
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not become Active: {answer}")


def meminfo() -> dict[str, int]:
    found = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        found[name] = int(value.split()[0])  # kB
    return found


# /proc/meminfo's kernel-side counters: namespaces, sockets, mounts, cgroups and
# tasks live in slab; each process has page tables and kernel stacks.
KERNEL_COUNTERS = ("SUnreclaim", "SReclaimable", "PageTables", "KernelStack")


def kernel_kb() -> dict[str, int]:
    info = meminfo()
    return {name: info[name] for name in KERNEL_COUNTERS}


def host_used_kb() -> int:
    info = meminfo()
    return info["MemTotal"] - info["MemAvailable"]


def process_tree(root: int) -> dict[int, str]:
    """Every descendant of root: pid -> its command name."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
        names[int(entry)] = stat[stat.find("(") + 1:stat.rfind(")")]
    found: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found[pid] = names.get(pid, "?")
        todo.extend(children.get(pid, []))
    return found


def cpu_s(pid: int, children: bool = False) -> float:
    """CPU seconds of pid (and of its waited-for children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root: int) -> float:
    """CPU seconds of root, its waited-for children, and every live descendant."""
    return cpu_s(root, children=True) + sum(cpu_s(pid) for pid in process_tree(root))


def pss_uss_kb(pid: int) -> tuple[int, int]:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    values = {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            values[name] = int(rest.split()[0])
    uss = values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)
    return values.get("Pss", 0), uss


def memory_by_kind(root: int) -> dict[str, tuple[int, int, int]]:
    """Process kind -> (count, PSS kB, USS kB) over the server's descendants."""
    kinds: dict[str, tuple[int, int, int]] = {}
    for pid, name in process_tree(root).items():
        pss, uss = pss_uss_kb(pid)
        count, total_pss, total_uss = kinds.get(name, (0, 0, 0))
        kinds[name] = (count + 1, total_pss + pss, total_uss + uss)
    return kinds


def warm_p50(port: int, path: str, count: int = 300) -> float:
    request = request_bytes("POST", path, b"{}")
    times = asyncio.run(latencies(port, request, count))
    return percentile(times[count // 5:], 50)


async def burst(port: int, path: str, count: int) -> tuple[float, list[int]]:
    """count Invokes sent at once, each on its own connection: seconds to the last answer."""
    from loadgen import connect

    request = request_bytes("POST", path, b"{}")
    clients = [await connect(port) for _ in range(count)]
    started = time.perf_counter()
    answers = await asyncio.gather(*(client.call(request) for client in clients))
    elapsed = time.perf_counter() - started
    for client in clients:
        assert client.transport is not None
        client.transport.close()
    return elapsed, [status for status, _ in answers]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sandbox", default="namespaces")
    parser.add_argument("--max", type=int, default=1000)
    parser.add_argument("--step", type=int, default=50)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--reserve-mb", type=int, default=4096,
                        help="stop before the host's available memory falls under this")
    parser.add_argument("--compare", type=Path, metavar="CHECKOUT",
                        help="measure another checkout's src first (a before/after pair)")
    args = parser.parse_args()
    runs: list[tuple[str, Path | None]] = [("this checkout", None)]
    if args.compare is not None:
        runs.insert(0, (f"{args.compare}", args.compare))
    summaries = []
    for label, source in runs:
        print(f"\n=== Lamina from {label} ===")
        summaries.append((label, measure(args, source)))
    if len(summaries) > 1:
        print("\n| | scale-up (s) | CPU per new env (ms) | envs | PSS per env (MB) | "
              "USS per env (MB) | host used per env (MB) | kernel per env (kB) | "
              "warm p50 first/last (ms) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for label, figures in summaries:
            print(f"| {label} | {figures['burst_s']:.2f} | {figures['burst_cpu_ms']:.1f} | "
                  f"{figures['count']} | {figures['pss_mb']:.2f} | {figures['uss_mb']:.2f} | "
                  f"{figures['host_mb']:.2f} | {figures['kernel_kb']:.0f} | {figures['first_p50']:.3f} / {figures['last_p50']:.3f} |")


def measure(args: argparse.Namespace, source: Path | None) -> dict[str, float]:
    """One server (from `source`'s src, or this checkout's): the burst, then density."""
    figures: dict[str, float] = {}
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="density-lamina-"))
    data.chmod(0o755)  # sandbox users (unprivileged uids) reach the code under it
    env = dict(os.environ, LAMINA_ENVIRONMENT_MEMORY_MB=str(MEMORY_MB * (args.max + 8)
                                                             + 128 * args.burst))
    # Provisioned concurrency may take all but 100 of the account's concurrency (as on
    # Lambda): the account's limit is raised with --max.
    env["LAMINA_CONCURRENT_EXECUTIONS"] = str(max(1000, args.max + 200))
    if args.sandbox:
        env["LAMINA_SANDBOX"] = args.sandbox
    if source is not None:
        env["PYTHONPATH"] = str(source.resolve() / "src")
    log = open(data / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "lamina.cli.main", "serve", "--port", str(port),
         "--data-dir", str(data)],
        env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        for _ in range(1200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        api = Api(port)
        print(f"load {os.getloadavg()[0]:.2f}; host used {host_used_kb() / 1024:.0f} MB")

        # 1. Scale-up: a burst of new environments.
        api.create_function("burst")
        cpu_before = tree_cpu_s(server.pid)
        seconds, statuses = asyncio.run(
            burst(port, "/2015-03-31/functions/burst/invocations", args.burst))
        cpu = tree_cpu_s(server.pid) - cpu_before
        started = sum(1 for name in process_tree(server.pid).values()
                      if name.startswith("python"))
        print(f"scale-up: {args.burst} concurrent Invokes on new environments: {seconds:.2f} s "
              f"to the last answer; statuses {sorted(set(statuses))}; {started} runtimes up; "
              f"{cpu / max(started, 1) * 1000:.1f} ms CPU per new environment (server, "
              f"sandbox tools, runtime); {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}")
        figures["burst_s"], figures["burst_cpu_ms"] = seconds, cpu / max(started, 1) * 1000
        status, answer = api.call("DELETE", "/2015-03-31/functions/burst")
        assert status in (200, 204), answer
        time.sleep(2)  # its environments go

        # 2. Density: provisioned environments in steps.
        api.create_function("idle")
        status, answer = api.call("POST", "/2015-03-31/functions/idle/versions", {})
        assert status == 201, answer
        version = answer["Version"]
        path = f"/2015-03-31/functions/idle:{version}/invocations"
        baseline_kb = host_used_kb()
        baseline_kernel = kernel_kb()
        first_p50 = None
        first_kinds: dict[str, tuple[int, int, int]] = {}
        count = 0
        step_times = []
        while count < args.max:
            target = min(args.max, count + (1 if count == 0 else args.step))
            if meminfo()["MemAvailable"] < args.reserve_mb * 1024:
                print(f"stopping at {count}: host available memory under {args.reserve_mb} MB")
                break
            started_at = time.perf_counter()
            status, answer = api.call(
                "PUT", f"/2019-09-30/functions/idle/provisioned-concurrency?Qualifier={version}",
                {"ProvisionedConcurrentExecutions": target})
            if status != 202:
                print(f"stopping at {count}: {status} {answer}")
                break
            while True:
                status, answer = api.call(
                    "GET", f"/2019-09-30/functions/idle/provisioned-concurrency?Qualifier={version}")
                if answer.get("Status") != "IN_PROGRESS":
                    break
                time.sleep(0.1)
            if answer.get("Status") != "READY":
                print(f"stopping at {count}: {answer}")
                break
            step_times.append((target - count, time.perf_counter() - started_at))
            count = target
            if first_p50 is None:
                first_p50 = warm_p50(port, path)
                baseline_kb = host_used_kb()  # the first environment's cost is measured below
                baseline_kernel = kernel_kb()
                first_kinds = memory_by_kind(server.pid)
        used_kb = host_used_kb()
        used_kernel = kernel_kb()
        kinds = memory_by_kind(server.pid)
        last_p50 = warm_p50(port, path)
        allocated = answer.get("AllocatedProvisionedConcurrentExecutions")
        if allocated is not None:
            count = max(count, int(allocated))
        print(f"\nidle warm environments: {count} (MemorySize {MEMORY_MB} MB, "
              f"{args.sandbox} sandbox); load {os.getloadavg()[0]:.2f}")
        figures["count"] = count
        figures["host_mb"] = figures["kernel_kb"] = float("nan")
        if count > 1:
            per_env = figures["host_mb"] = (used_kb - baseline_kb) / (count - 1) / 1024
            print(f"host used memory per environment: {per_env:.2f} MB "
                  f"(MemTotal - MemAvailable, from 1 to {count})")
            kernel = {name: (used_kernel[name] - baseline_kernel[name]) / (count - 1)
                      for name in KERNEL_COUNTERS}
            figures["kernel_kb"] = sum(kernel.values())
            print("  of which the kernel's, per environment: " + ", ".join(
                f"{name} {value:.0f} kB" for name, value in kernel.items())
                + " (the machine's counters: other work on it moves them too)")
        # Per environment: over the runtimes actually up (each environment has one).
        envs = max(1, sum(n for name, (n, _, _) in kinds.items() if name.startswith("python")))
        total_pss = sum(pss for _, pss, _ in kinds.values())
        total_uss = sum(uss for _, _, uss in kinds.values())
        figures["pss_mb"], figures["uss_mb"] = total_pss / envs / 1024, total_uss / envs / 1024
        figures["first_p50"], figures["last_p50"] = first_p50 or float("nan"), last_p50
        print(f"PSS per environment: {total_pss / envs / 1024:.2f} MB, "
              f"USS {total_uss / envs / 1024:.2f} MB ({envs} runtimes up); by process:")
        for name, (n, pss, uss) in sorted(kinds.items(), key=lambda item: -item[1][1]):
            print(f"  {name:14} x{n:5}  PSS {pss / max(n, 1) / 1024:6.2f} MB each, "
                  f"USS {uss / max(n, 1) / 1024:6.2f} MB each")
        if first_kinds:
            pss1 = sum(pss for _, pss, _ in first_kinds.values())
            print(f"  (one environment alone: PSS {pss1 / 1024:.2f} MB)")
        print(f"warm p50 at concurrency 1: {first_p50:.3f} ms with the first environment up, "
              f"{last_p50:.3f} ms with all {count} up")
        if step_times:
            rates = [n / s for n, s in step_times if n > 1]
            if rates:
                print(f"provisioned steps: {sorted(rates)[len(rates) // 2]:.0f} environments/s "
                      f"(median over {len(rates)} steps of {args.step})")
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=120)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        shutil.rmtree(data, ignore_errors=True)
    return figures


if __name__ == "__main__":
    main()
