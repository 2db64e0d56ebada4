"""The sandbox's limits on cgroup v2: memory (OOM kill), process count, CPU share.

Most machines run cgroup v2; some (this project's own CI among them) still boot
with v1 hierarchies, where cgroups.py takes its other code path. So:

- on a host with usable cgroup v2, the tests below run right here;
- on a cgroup v1 host, one slow test boots a QEMU guest with only cgroup v2
  (scripts/cgroup_v2_vm.py) and runs this module inside it, and fails when
  anything failed in there; it skips, saying why, where no guest can be run.

The run's last lines say which cgroup version the sandbox tests were run on
(see `sandbox_summary`, printed by tests/conftest.py).

This module imports nothing that drags in boto3 at collection time: inside a
guest without hardware virtualisation each import costs seconds.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from lamina.sandbox.base import MAX_PROCESSES, MB_PER_VCPU, SandboxSpec
from lamina.sandbox.cgroups import CPU_PERIOD_US, CgroupTree, CgroupUnavailable
from lamina.sandbox.namespaces import (
    NamespaceBackend,
    NamespaceSandbox,
    NamespaceSettings,
    probe,
)

ROOT = Path(__file__).resolve().parent.parent
VM_SCRIPT = ROOT / "scripts" / "cgroup_v2_vm.py"
# Set by the guest's run script: this process is the inner run (never boot another guest).
IN_GUEST = os.environ.get("LAMINA_CGROUP_V2_GUEST") == "1"
VM_TIMEOUT_S = 300
PYTHON = "/usr/bin/python3"


def host_cgroup_version() -> int | None:
    try:
        return CgroupTree().version
    except CgroupUnavailable:
        return None


VERSION = host_cgroup_version()
UNAVAILABLE = probe()
# The user property the guest's result travels in to the closing summary line (in a
# report, so that it reaches the summary from a parallel test worker too).
GUEST_RESULT = "cgroup_v2_guest"

on_v2 = pytest.mark.skipif(
    VERSION != 2 or UNAVAILABLE is not None,
    reason=f"cgroup v{VERSION} here (the guest test covers v2)" if UNAVAILABLE is None
    else f"no kernel isolation: {UNAVAILABLE}")


@dataclass
class Run:
    output: str
    code: int
    sandbox: NamespaceSandbox


@pytest.fixture
def backend() -> Any:
    backend = NamespaceBackend(NamespaceSettings(
        cgroup_parent=f"lamina-v2test-{os.getpid()}-{uuid.uuid4().hex[:6]}"))
    yield backend
    backend._cgroups.remove_empty_parents()
    assert not any(root.exists() for root in backend._cgroups.roots.values())


def make_spec(tmp_path: Path, argv: list[str], **overrides: Any) -> SandboxSpec:
    task, runtime = tmp_path / "task", tmp_path / "runtime"
    task.mkdir(exist_ok=True)
    runtime.mkdir(exist_ok=True)
    # Sandbox users (unprivileged host uids) must reach the code; pytest makes its
    # temporary directories 0700 (conftest.py, which does this elsewhere, is not
    # loaded in the guest).
    for directory in (tmp_path, *tmp_path.parents):
        if directory.stat().st_mode & 0o001 == 0:
            directory.chmod(directory.stat().st_mode | 0o011)
    values: dict[str, Any] = {
        "environment_id": f"env-{uuid.uuid4().hex[:12]}", "argv": argv, "env": {"PATH": "/usr/bin:/bin"},
        "task_root": task, "runtime_root": runtime, "network": False}
    values.update(overrides)
    return SandboxSpec(**values)


def python(code: str) -> list[str]:
    return [PYTHON, "-c", textwrap.dedent(code)]


async def start(backend: NamespaceBackend, spec: SandboxSpec) -> tuple[NamespaceSandbox, asyncio.StreamReader]:
    read_fd, write_fd = os.pipe()
    try:
        sandbox = await backend.launch(spec, write_fd)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    reader = asyncio.StreamReader(limit=2**20)
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", 0))
    return sandbox, reader


def run(backend: NamespaceBackend, spec: SandboxSpec, timeout: float = 90) -> Run:
    async def scenario() -> Run:
        sandbox, output = await start(backend, spec)
        try:
            text = await asyncio.wait_for(output.read(), timeout)
            code = await asyncio.wait_for(sandbox.wait(), timeout)
        finally:
            await sandbox.destroy()
        return Run(text.decode(errors="replace"), code, sandbox)
    return asyncio.run(scenario())


def limits_while_running(backend: NamespaceBackend, spec: SandboxSpec, end_init: bool) -> dict[str, str]:
    """The v2 interface files of a live sandbox, read from the host side."""
    async def scenario() -> dict[str, str]:
        sandbox, output = await start(backend, spec)
        try:
            assert await asyncio.wait_for(output.readline(), 60) == b"up\n"
            if end_init:
                sandbox.end_init()
            directory = sandbox._cgroup.dirs[""]
            return {name: (directory / name).read_text().strip()
                    for name in ("memory.max", "memory.swap.max", "cpu.max", "pids.max")}
        finally:
            await sandbox.destroy()
    return asyncio.run(scenario())


def test_report_which_cgroup_version_the_sandbox_uses_here() -> None:
    where = "a cgroup v2 guest" if IN_GUEST else "the host"
    print(f"sandbox cgroups on {where}: v{VERSION}"
          + ("" if UNAVAILABLE is None else f" (namespace backend unavailable: {UNAVAILABLE})"))
    if IN_GUEST:
        assert VERSION == 2, "the guest was booted to run cgroup v2 only"
    assert VERSION in (1, 2, None)


@on_v2
@pytest.mark.parametrize(("memory_mb", "cores"), [(442, 0.25), (MB_PER_VCPU, 1.0), (10_240, None)])
def test_v2_limits_are_written_memory_without_swap_cpu_in_proportion_and_1024_pids(
        backend: NamespaceBackend, tmp_path: Path, memory_mb: int, cores: float | None) -> None:
    spec = make_spec(tmp_path, ["/bin/sh", "-c", "echo up; sleep 120"], memory_mb=memory_mb)
    during_init = limits_while_running(backend, spec, end_init=False)
    after_init = limits_while_running(backend, spec, end_init=True)
    # 1,769 MB is one core; no sandbox gets more cores than the machine has.
    cores = float(os.cpu_count() or 1) if cores is None else cores
    quota, period = after_init.pop("cpu.max").split()
    assert int(period) == CPU_PERIOD_US
    assert int(quota) == pytest.approx(cores * CPU_PERIOD_US, rel=0.001)
    assert after_init == {
        "memory.max": str(memory_mb * 2**20),
        "memory.swap.max": "0",
        "pids.max": str(MAX_PROCESSES),
    }
    # INIT gets the machine's CPU (Lambda's init boost); the share applies from end_init on.
    assert during_init["cpu.max"] == f"max {CPU_PERIOD_US}"


@on_v2
def test_v2_memory_hog_is_oom_killed_at_memory_size(backend: NamespaceBackend, tmp_path: Path) -> None:
    result = run(backend, make_spec(tmp_path, python("""
        chunks = []
        for megabytes in range(1, 400):
            chunks.append(bytearray(1024 * 1024))
            if megabytes % 32 == 0:
                print("allocated", megabytes, flush=True)
    """), memory_mb=128))
    assert result.code == -9, result.output
    # What the environment turns into Runtime.OutOfMemory: memory.events' oom_kill.
    assert result.sandbox.oom_killed()
    assert "allocated 96" in result.output
    assert "allocated 160" not in result.output
    peak = result.sandbox.usage().max_memory_bytes
    assert peak is not None and 100 * 2**20 < peak <= 128 * 2**20


@on_v2
def test_v2_sandbox_within_memory_is_not_reported_oom_killed(backend: NamespaceBackend,
                                                             tmp_path: Path) -> None:
    result = run(backend, make_spec(tmp_path, python("print(len(bytearray(20 * 2**20)))"),
                                    memory_mb=128))
    assert result.code == 0 and result.output.strip() == str(20 * 2**20)
    assert not result.sandbox.oom_killed()
    usage = result.sandbox.usage()
    assert usage.max_memory_bytes is not None and usage.max_memory_bytes > 20 * 2**20
    assert usage.cpu_seconds is not None and usage.cpu_seconds > 0


@on_v2
def test_v2_fork_bomb_is_contained_at_1024_processes(backend: NamespaceBackend, tmp_path: Path) -> None:
    # Enough memory that the process limit, not the memory limit, stops it.
    result = run(backend, make_spec(tmp_path, python("""
        import os, time
        children = 0
        try:
            while True:
                if os.fork() == 0:
                    time.sleep(120)
                    os._exit(0)
                children += 1
        except OSError as error:
            print("stopped", children, error.errno, flush=True)
    """), memory_mb=2048), timeout=240)
    words = result.output.split()
    assert words[:1] == ["stopped"], result.output
    # 1,024 tasks in the cgroup: bubblewrap, its init, the python parent and its children.
    assert MAX_PROCESSES - 20 <= int(words[1]) <= MAX_PROCESSES - 3
    assert words[2] == "11"  # EAGAIN
    assert not result.sandbox.oom_killed()
    assert all(not d.exists() for d in result.sandbox._cgroup.dirs.values())


@on_v2
def test_v2_cpu_spinner_gets_a_share_proportional_to_memory(backend: NamespaceBackend,
                                                            tmp_path: Path) -> None:
    # 442 MB is a quarter of 1,769 MB: a quarter of one core.
    result = run(backend, make_spec(tmp_path, python("""
        import time
        start, cpu0 = time.monotonic(), time.process_time()
        while time.monotonic() - start < 3:
            pass
        print((time.process_time() - cpu0) / (time.monotonic() - start))
    """), memory_mb=442, init_cpu_boost=False))
    share = float(result.output)
    # The quota is a ceiling; a busy machine can only give less.
    assert 0.08 < share < 0.25 * 1.2, share


def _why_no_guest() -> str | None:
    if IN_GUEST:
        return "this is the guest's own run"
    if VERSION == 2:
        return "this host runs cgroup v2: the tests above ran on it"
    if UNAVAILABLE is not None:
        return f"no kernel isolation on the host: {UNAVAILABLE}"
    result = subprocess.run([sys.executable, str(VM_SCRIPT), "--check"], capture_output=True, text=True,
                            check=False)
    return result.stdout.strip() or None if result.returncode else None


@pytest.mark.slow
@pytest.mark.timeout(VM_TIMEOUT_S + 60)
def test_sandbox_limits_hold_on_cgroup_v2_inside_a_qemu_guest(
        record_property: Callable[[str, object], None]) -> None:
    why = _why_no_guest()
    if why:
        pytest.skip(why)
    result = subprocess.run([sys.executable, str(VM_SCRIPT), "--timeout", str(VM_TIMEOUT_S),
                             "--python", sys.executable], capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    print(output[-6000:])
    cannot = re.search(r"^cgroup-v2-vm: cannot run: (.*)$", output, re.MULTILINE)
    if result.returncode == 125 and cannot:
        pytest.skip(f"no cgroup v2 guest: {cannot.group(1)}")
    found = re.search(r"^LAMINA-VM RESULT: (.*)$", output, re.MULTILINE)
    assert found, f"the guest gave no result (exit code {result.returncode}):\n{output[-3000:]}"
    fields = dict(re.findall(r"(\w+)=(\S+)", found.group(1)))
    summary = found.group(1).split("summary=", 1)[1]
    record_property(GUEST_RESULT, f"cgroup v2 ({fields['accel']} guest, boot {fields['boot_s']} s, "
                                  f"run {fields['total_s']} s): {summary.split(' in ')[0]}")
    assert result.returncode == 0, output[-3000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary


def sandbox_summary(stats: dict[str, list[Any]]) -> str | None:
    """'sandbox tests: cgroup v1 (host): N passed + cgroup v2 (...guest...): M passed'."""
    counts: dict[str, int] = {}
    guest_results: list[str] = []
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in stats.get(outcome, []):
            guest_results += [str(value) for name, value in getattr(report, "user_properties", ())
                              if name == GUEST_RESULT]
            nodeid = getattr(report, "nodeid", "")
            if nodeid.startswith(("tests/test_sandbox_namespaces.py", "tests/test_cgroup_v2.py")) \
                    and getattr(report, "when", "call") in ("call", "setup") \
                    and "inside_a_qemu_guest" not in nodeid:
                counts[outcome] = counts.get(outcome, 0) + 1
    if not counts and not guest_results:
        return None
    host = ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
    where = "cgroup v2 guest" if IN_GUEST else "host"
    parts = [f"cgroup v{VERSION} ({where}): {host or 'none ran'}", *guest_results]
    return "sandbox tests: " + " + ".join(parts)
