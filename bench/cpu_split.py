"""Where the CPU goes when Lamina is saturated: CPU time per invocation of the
server, of the sandboxes (runtime client, bubblewrap, network helper) and of the
load generator, at a given concurrency, with a no-op Python handler.

Run: .venv/bin/python bench/cpu_split.py [--concurrency 4] [--seconds 10] [--profile]

The figures come from /proc (utime + stime of each process, summed over the
server's process tree and over this process) before and after the load, so they
are exact whatever else runs; the load on the machine only changes the rate.
With `--profile`, py-spy (pip install py-spy) samples the server during a second
load of the same length and prints its busiest functions: the profile that says
what bounds throughput on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from density import process_tree  # noqa: E402
from loadgen import rate  # noqa: E402
from peers import lamina  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def server_pid(port: int) -> int:
    """The `lamina serve` listening on port (the process group's leader runs it)."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True,
                         text=True).stdout
    return int(out.split("pid=")[1].split(",")[0])


def snapshot(server: int) -> tuple[float, float, float]:
    tree = list(process_tree(server))
    return cpu_seconds(server), sum(cpu_seconds(p) for p in tree), cpu_seconds(os.getpid())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sandbox", default="namespaces")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with lamina(args) as started:
        assert not isinstance(started, str), started
        port, request = started
        server = server_pid(port)
        asyncio.run(rate(port, request, args.concurrency, 1.0))  # environments started
        before = snapshot(server)
        per_s = asyncio.run(rate(port, request, args.concurrency, args.seconds))
        after = snapshot(server)
        calls = per_s * args.seconds
        names = ("server (API + Runtime API, one event loop)",
                 "sandboxes (runtime clients, bwrap, network helpers)",
                 "load generator (this process)")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
              f"concurrency {args.concurrency}: {per_s:,.0f} invocations/s")
        total = 0.0
        for name, start, end in zip(names, before, after):
            used = end - start
            total += used
            print(f"  {name:55} {used / calls * 1e6:7.0f} us CPU per invocation "
                  f"({used / args.seconds:.2f} cores)")
        print(f"  {'all of it':55} {total / calls * 1e6:7.0f} us CPU per invocation "
              f"({total / args.seconds:.2f} of {os.cpu_count()} cores)")
        if args.profile:
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            if not Path(spy).exists():
                sys.exit(f"--profile needs py-spy: {Path(sys.executable).parent}/pip install py-spy")
            out = Path(tempfile.mkdtemp(prefix="cpu-split-")) / "profile.txt"
            record = subprocess.Popen(
                [spy, "record", "--pid", str(server), "--duration", str(int(args.seconds)),
                 "--format", "raw", "--output", str(out), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            asyncio.run(rate(port, request, args.concurrency, args.seconds))
            record.wait()
            print_top(out)
            if os.environ.get("CPU_SPLIT_KEEP"):
                print(f"raw profile kept in {out}")
            else:
                shutil.rmtree(out.parent, ignore_errors=True)


def print_top(raw: Path, count: int = 25) -> None:
    """Self time by function from py-spy's collapsed stacks ("a;b;c N" lines)."""
    own: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        own[leaf] = own.get(leaf, 0) + int(samples)
        total += int(samples)
    print(f"server profile: {total} samples; self time by function")
    for leaf, samples in sorted(own.items(), key=lambda item: -item[1])[:count]:
        print(f"  {samples / total * 100:5.1f}%  {leaf[:110]}")


if __name__ == "__main__":
    main()
