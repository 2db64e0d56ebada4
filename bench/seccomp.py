"""What the seccomp filter costs: compiling it once, each bubblewrap launch, each call.

    .venv/bin/python bench/seccomp.py [--runs 200]

Prints the time to build the program (the first call, which loads libseccomp, and a
rebuild) and its size; `bwrap ... /bin/true` with and without `--seccomp`, as wall
time and as the CPU time of the launched processes (the CPU figure holds up better on
a busy machine); and the cost per system call seen from Python, a loop of
os.getppid() that the kernel runs through the filter each time, with no filter, with
a one-rule filter (the cost of having a filter at all) and with Lamina's. Cases run
interleaved, so load from elsewhere hits them alike.
"""

from __future__ import annotations

import argparse
import errno
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

from lamina.sandbox import seccomp

# The host's programs, read-only. Not all of `/`: servers on this host mount and unmount
# below /run, which races a recursive bind.
SANDBOX = ["--unshare-all", "--unshare-user", "--uid", "993", "--cap-drop", "ALL",
           "--die-with-parent", "--new-session", "--proc", "/proc", "--dev", "/dev"]
for top in ("bin", "lib", "lib64", "sbin", "usr", "etc"):
    if os.path.islink(f"/{top}"):
        SANDBOX += ["--symlink", os.readlink(f"/{top}"), f"/{top}"]
    elif os.path.isdir(f"/{top}"):
        SANDBOX += ["--ro-bind", f"/{top}", f"/{top}"]
SYSCALL_LOOP = ("import os, time; n = 200_000; t = time.perf_counter()\n"
                "for _ in range(n): os.getppid()\n"
                "print((time.perf_counter() - t) / n * 1e9)")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def launch(bwrap: str, argv: list[str], program: bytes | None) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of bwrap and the command, the command's output)."""
    fds = []
    if program is not None:
        fds.append(os.memfd_create("bench-seccomp"))
        os.write(fds[0], program)
        os.lseek(fds[0], 0, os.SEEK_SET)
    options = ["--seccomp", str(fds[0])] if fds else []
    cpu, start = children_cpu(), time.perf_counter()
    done = subprocess.run([bwrap, *SANDBOX, *options, "--", *argv], pass_fds=fds,
                          stdout=subprocess.PIPE, check=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    for fd in fds:
        os.close(fd)
    return wall, cpu, done.stdout


def one_rule_program() -> bytes:
    import pyseccomp as sc  # type: ignore[import-untyped]

    flt = sc.SyscallFilter(defaction=sc.ALLOW)
    flt.add_rule(sc.ERRNO(errno.EPERM), "ptrace")
    with open(os.memfd_create("bench-one-rule"), "w+b") as exported:
        flt.export_bpf(exported)
        exported.seek(0)
        return exported.read()


def ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1000:6.2f} ms  p95 {percentile(values, 0.95) * 1000:6.2f} ms"


def main(runs: int) -> None:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        sys.exit("bubblewrap is not installed")

    start = time.perf_counter()
    program = seccomp.filter_program()
    first = time.perf_counter() - start
    rebuilds = []
    for _ in range(20):
        start = time.perf_counter()
        seccomp._compile()
        rebuilds.append(time.perf_counter() - start)
    print(f"compile: first call {first * 1000:.1f} ms (loads libseccomp), "
          f"rebuild p50 {statistics.median(rebuilds) * 1000:.1f} ms; "
          f"program {len(program)} bytes = {len(program) // 8} BPF instructions")

    cases: dict[str, bytes | None] = {"without": None, "with": program}
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for run in range(runs):
        # Alternating which goes first, so neither always follows the other.
        for name in list(cases) if run % 2 else reversed(cases):
            elapsed, used, _ = launch(bwrap, ["/bin/true"], cases[name])
            wall[name].append(elapsed)
            cpu[name].append(used)
    print(f"bwrap /bin/true, {runs} runs each")
    for name in cases:
        print(f"  {name:7} --seccomp: wall {ms(wall[name])}   CPU {ms(cpu[name])}")
    added = {kind: statistics.median(values["with"]) - statistics.median(values["without"])
             for kind, values in (("wall", wall), ("CPU", cpu))}
    print(f"  added per launch (p50): wall {added['wall'] * 1000:+.2f} ms, CPU {added['CPU'] * 1000:+.2f} ms")

    filters = {"no filter": None, "one rule": one_rule_program(), "Lamina's": program}
    per_call: dict[str, list[float]] = {name: [] for name in filters}
    for _ in range(7):
        for name, filter_program in filters.items():
            per_call[name].append(float(launch(bwrap, ["/usr/bin/python3", "-S", "-c", SYSCALL_LOOP],
                                               filter_program)[2]))
    print("os.getppid() from Python, ns per call (p50 of 7 runs of 200,000): " + ", ".join(
        f"{name} {statistics.median(values):.0f}" for name, values in per_call.items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    main(parser.parse_args().runs)
