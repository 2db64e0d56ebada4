"""The kernel-isolation backend: bubblewrap namespaces plus cgroup limits.

Each sandbox is one `bwrap` process tree with new user, mount, PID, IPC, UTS,
cgroup and network namespaces, and a Lambda-shaped filesystem (rootfs.py:
`/var/task`, `/opt`, `/var/runtime` read-only, a sized private `/tmp`, a
read-only view of `/usr` and a small `/etc`, nothing of `/root`, `/home`, the
data dir or other functions). The command runs as Lambda's uid 993 / gid 990
with no capabilities, `no_new_privs` (bubblewrap always sets it, so setuid
binaries such as `su` cannot raise privileges), a new session (no TIOCSTI into
the server's terminal), and no way to create further user namespaces
(`--disable-userns`: they are the usual door to kernel attack surface).

User mapping: bubblewrap started by root maps the sandbox's uid 993 to the
server's host uid, so inside, host-root-owned files appear as the sandbox
user's. That only matters for what is visible, which is why the view is
minimal and entirely read-only (and /proc/sys is read-only, bubblewrap's
doing); the PID namespace keeps every host process unnameable. Mapping to an
unprivileged host uid instead needs `--userns` with a pre-made namespace, which
bubblewrap 0.8 cannot combine with a different gid (it drops CAP_SETGID by
calling setuid first), or setuid mode, which forbids `--size` for `/tmp`.

Start-up, and why the limits hold from the first instruction
------------------------------------------------------------
1. A two-line shell moves itself into the environment's cgroups and sets
   RLIMIT_NOFILE (and no core dumps), then execs `bwrap`: every process of the
   sandbox, bubblewrap's own included, is born inside the limits.
2. `bwrap` starts with `--info-fd` (it reports the host PID of the sandbox's
   PID 1) and `--block-fd` (the sandbox waits before running the command).
3. The Runtime API listener is created inside the sandbox's network namespace,
   and slirp4netns attached when outbound access is wanted (network.py says
   how, and why the host's loopback, so the control plane, stays unreachable).
4. The server writes to the block fd; the command starts with
   `AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001`.

Limits
------
memory (= MemorySize, no swap; an OOM kill is read from the cgroup's counter),
CPU quota in proportion to memory (1,769 MB = one core, at most the machine's
cores), 1,024 processes, 1,024 open files, `/tmp` size. Pages written to the
`/tmp` tmpfs are memory and count toward the memory limit, as tmpfs pages do
in any memory cgroup; Lambda's `/tmp` is disk-backed and does not. `destroy()`
kills the sandbox's PID 1 through a pidfd, which makes the kernel kill every
process in the PID namespace, then removes the cgroups.

Exit codes: bubblewrap's PID 1 reports a command killed by signal N as 128+N;
`wait()` turns that back into -N, as the plain-process backend reports it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from lamina.sandbox.base import ResourceUsage, SandboxError, SandboxSpec
from lamina.sandbox.cgroups import (
    CPU_PERIOD_US, PARENT_NAME, CgroupLimits, CgroupTree, CgroupUnavailable, EnvironmentCgroup,
    cgroup_name,
)
from lamina.sandbox.network import (
    RUNTIME_API_HOST, RUNTIME_API_PORT, Outbound, listen_inside, read_pipe,
)
from lamina.sandbox.rootfs import (
    SANDBOX_GID, SANDBOX_UID, build_etc, mount_args, outbound_resolv_conf,
)

log = logging.getLogger("lamina.sandbox")

# How long bubblewrap may take to set the sandbox up before the launch fails.
LAUNCH_TIMEOUT_S = 10.0

# Runs as the sandbox's first process, before bubblewrap: moves itself into the
# environment's cgroups (cheaper than being moved, see cgroups.py) and sets the
# resource limits, then becomes bubblewrap, which inherits all of it.
# Arguments: N, N cgroup files, the open-files limit, the bwrap command line.
ENTER_SCRIPT = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do echo 0 > "$1" || exit 125; shift; n=$((n - 1)); done; '
    'ulimit -n "$1" && ulimit -c 0 || exit 125; shift; exec "$@"'
)


def _parse_info(data: bytes) -> dict[str, int] | None:
    """bubblewrap's --info-fd JSON once complete (it may arrive in pieces)."""
    try:
        return json.loads(data)  # type: ignore[no-any-return]
    except ValueError:
        return None


def _hostname(environment_id: str) -> str:
    # Lambda's sandboxes are named after their link-local address, e.g. 169.254.42.9.
    digest = hashlib.sha1(environment_id.encode()).digest()
    return f"169.254.{digest[0]}.{digest[1] or 1}"


def bwrap_argv(bwrap: str, spec: SandboxSpec, etc_dir: Path, *, info_fd: int,
               block_fd: int, resolv_conf: Path | None = None) -> list[str]:
    return [
        bwrap,
        "--unshare-all", "--unshare-user", "--disable-userns",
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID),
        "--cap-drop", "ALL",
        "--die-with-parent", "--new-session",
        "--hostname", _hostname(spec.environment_id),
        "--info-fd", str(info_fd), "--block-fd", str(block_fd),
        *mount_args(spec, etc_dir, resolv_conf),
        "--chdir", "/var/task", "--", *spec.argv,
    ]


async def _end(process: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    """Wait for bubblewrap to exit, killing it after `grace` seconds.

    Not Process.kill(): Popen.send_signal() polls first and may reap the child
    itself, racing asyncio's child watcher (which then reports exit code 255).
    bubblewrap exits by itself once the sandbox's PID 1 is gone.
    """
    if process.returncode is None and grace > 0:
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), grace)
        except asyncio.TimeoutError:
            pass
    if process.returncode is None:
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    await process.wait()


async def _launch_failure(process: asyncio.subprocess.Process, detail: str) -> SandboxError:
    """The error for a bubblewrap that failed while setting up.

    Its own message (e.g. "Can't find source path") went to the output pipe,
    which the environment reads and logs like the runtime's output.
    """
    if process.returncode is None:
        await _end(process, grace=1.0)
    return SandboxError(f"bubblewrap failed to start the sandbox (exit code {process.returncode}, "
                        f"{detail}); its message is in the function's output")


def cgroup_limits(spec: SandboxSpec) -> CgroupLimits:
    cores = min(spec.cpu_cores, float(os.cpu_count() or 1))
    return CgroupLimits(
        memory_bytes=spec.memory_mb * 1024 * 1024,
        cpu_quota_us=max(1000, int(cores * CPU_PERIOD_US)),
        max_processes=spec.max_processes,
    )


class NamespaceSandbox:
    def __init__(self, spec: SandboxSpec, process: asyncio.subprocess.Process, init_pid: int,
                 init_pidfd: int, cgroup: EnvironmentCgroup, listener: socket.socket,
                 outbound: Outbound | None) -> None:
        self.spec = spec
        self.process = process
        # The host PID of the sandbox's PID 1 (bubblewrap's init); the command is its child.
        self.pid = init_pid
        self.runtime_api_socket = listener
        self.runtime_api_address = f"{RUNTIME_API_HOST}:{RUNTIME_API_PORT}"
        self._pidfd = init_pidfd
        self._cgroup = cgroup
        self._outbound = outbound
        self._final_usage: ResourceUsage | None = None
        self._final_oom_kills: int | None = None
        self._destroyed = False

    async def wait(self) -> int:
        code = await self.process.wait()
        if 128 < code <= 128 + 64:
            return -(code - 128)
        return code

    def usage(self) -> ResourceUsage:
        if self._final_usage is not None:
            return self._final_usage
        return self._cgroup.usage()

    def oom_killed(self) -> bool:
        kills = self._final_oom_kills if self._final_oom_kills is not None else self._cgroup.oom_kills()
        return kills > 0

    def _kill_init(self) -> None:
        # Through the pidfd, so a recycled PID can never be hit. When PID 1 of a
        # PID namespace dies the kernel kills every other process in it.
        if self._pidfd < 0:
            return
        try:
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass

    async def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        self._kill_init()
        await _end(self.process)
        if self._outbound is not None:
            await self._outbound.stop()
        self._final_usage = self._cgroup.usage()
        self._final_oom_kills = self._cgroup.oom_kills()
        self._cgroup.kill_all()
        if not await self._cgroup.remove():
            log.warning("sandbox %s: cgroup still busy, left for the next start-up",
                        self.spec.environment_id)
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        self.runtime_api_socket.close()


def probe() -> str | None:
    """Why this backend cannot run here, or None when it can."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    try:
        result = subprocess.run(
            [bwrap, "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID),
             "--cap-drop", "ALL", "--die-with-parent", "--ro-bind", "/", "/",
             "--proc", "/proc", "--dev", "/dev", "--", "/bin/true"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bubblewrap does not run: {error}"
    if result.returncode != 0:
        return f"bubblewrap cannot create namespaces: {result.stderr.decode(errors='replace').strip()}"
    if not hasattr(os, "pidfd_open"):
        return "this kernel or Python lacks pidfd_open"
    try:
        tree = CgroupTree()
        tree.ensure_parents()
    except CgroupUnavailable as error:
        return str(error)
    tree.remove_empty_parents()  # created only to prove it can be
    return None


class NamespaceBackend:
    name = "namespaces"

    def __init__(self, cgroup_parent: str = PARENT_NAME) -> None:
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxError("bubblewrap (bwrap) is not installed")
        self._bwrap = bwrap
        try:
            self._cgroups = CgroupTree(cgroup_parent)
        except CgroupUnavailable as error:
            raise SandboxError(str(error)) from error
        self._etc = build_etc()
        self._slirp4netns = shutil.which("slirp4netns")
        self._outbound_resolv_conf = outbound_resolv_conf(self._etc)
        if self._slirp4netns is None:
            log.warning("sandbox: slirp4netns is not installed; functions get no outbound network")

    def enforced(self) -> list[str]:
        network = ("own network namespace, outbound through slirp4netns, host loopback unreachable"
                   if self._slirp4netns else "own network namespace with loopback only (no outbound)")
        return [
            "timeout", "open files", f"memory (cgroup v{self._cgroups.version})", "CPU share",
            "process count", "/tmp size", "read-only code", "private filesystem view",
            "PID/IPC/UTS/user namespaces", "no capabilities", network,
        ]

    async def reap_leftovers(self) -> None:
        """Kill the sandboxes of servers that no longer run, and remove their cgroups.

        Their processes normally die with their server (--die-with-parent), leaving
        empty cgroups; whatever still runs in them is killed first."""
        for group in self._cgroups.leftovers():
            group.kill_all()
            if not await group.remove():
                log.warning("could not remove leftover cgroup %s", group.dirs)
        self._cgroups.remove_empty_parents()

    async def launch(self, spec: SandboxSpec, output_fd: int) -> NamespaceSandbox:
        try:
            cgroup = self._cgroups.create(cgroup_name(spec.environment_id), cgroup_limits(spec))
        except (OSError, CgroupUnavailable) as error:
            raise SandboxError(f"cannot create the cgroup for {spec.environment_id}: {error}") from error
        try:
            return await self._start(spec, cgroup, output_fd)
        except BaseException:
            await cgroup.remove()
            raise

    async def _start(self, spec: SandboxSpec, cgroup: EnvironmentCgroup,
                     output_fd: int) -> NamespaceSandbox:
        info_read, info_write = os.pipe()
        block_read, block_write = os.pipe()
        child_fds = (info_write, block_read)
        env = dict(spec.env)
        env["AWS_LAMBDA_RUNTIME_API"] = f"{RUNTIME_API_HOST}:{RUNTIME_API_PORT}"
        outbound_wanted = spec.network and self._slirp4netns is not None
        argv = bwrap_argv(self._bwrap, spec, self._etc, info_fd=info_write, block_fd=block_read,
                          resolv_conf=self._outbound_resolv_conf if outbound_wanted else None)
        entry = [str(path) for path in cgroup.entry_files()]
        argv = ["/bin/sh", "-c", ENTER_SCRIPT, "lamina-sandbox", str(len(entry)), *entry,
                str(spec.max_open_files), *argv]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, env=env, pass_fds=child_fds,
                stdin=asyncio.subprocess.DEVNULL, stdout=output_fd, stderr=output_fd,
                start_new_session=True,
            )
        finally:
            for fd in child_fds:
                os.close(fd)
        pidfd = -1
        listener: socket.socket | None = None
        outbound: Outbound | None = None
        try:
            try:
                info = await asyncio.wait_for(read_pipe(info_read, _parse_info), LAUNCH_TIMEOUT_S)
            finally:
                os.close(info_read)
            if info is None:
                raise await _launch_failure(process, "it exited before reporting its PID")
            init_pid = int(info["child-pid"])
            try:
                pidfd = os.pidfd_open(init_pid)
                listener = await listen_inside(init_pid, wait_for_loopback=outbound_wanted)
                if outbound_wanted:
                    assert self._slirp4netns is not None
                    outbound = await Outbound.start(self._slirp4netns, init_pid)
            except OSError as error:
                # Typically the sandbox's PID 1 is already gone: a mount failed.
                raise await _launch_failure(process, str(error)) from error
            os.write(block_write, b"1")
        except BaseException:
            if outbound is not None:
                await outbound.stop()
            if listener is not None:
                listener.close()
            if pidfd >= 0:
                os.close(pidfd)
            await _end(process, grace=0.0)
            raise
        finally:
            os.close(block_write)
        return NamespaceSandbox(spec, process, init_pid, pidfd, cgroup, listener, outbound)
