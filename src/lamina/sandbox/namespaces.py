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

How the Runtime API is reached, and nothing else of Lamina
-----------------------------------------------------------
The sandbox's network namespace holds only `lo`. The listener for its Runtime
API is created *inside* that namespace, but by the server:

1. `bwrap` starts with `--info-fd` (it reports the host PID of the sandbox's
   PID 1) and `--block-fd` (the sandbox waits before running the command).
2. A short-lived thread `setns()`es into `/proc/<pid>/ns/net`, binds a TCP
   socket to 127.0.0.1:9001 there, listens, and switches back. `setns` changes
   only the calling thread's namespace, which is why this one step runs on its
   own thread; the socket stays in the namespace it was created in.
3. The server moves PID 1 into the cgroups and sets RLIMIT_NOFILE, then writes
   to the block fd. The command starts with every limit already in place (its
   processes inherit the cgroups) and `AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001`.

The listening socket's fd belongs to the server, which serves it with asyncio
like any other socket. From inside, 127.0.0.1 is the sandbox's own loopback: the
control plane on the host's 127.0.0.1, other environments' listeners and every
other host port are simply not there (no route, no address), and no socket file
is shared. The dance costs well under a millisecond (measured by
bench/sandbox.py together with the whole start). The alternatives were worse: a
Unix socket bind-mounted into the sandbox needs a forwarder process inside (a
runtime client speaks TCP), and a veth pair per sandbox needs routes and
firewall rules on the host to keep the control plane out of reach.

Network access
--------------
`SandboxSpec.network=False` leaves the sandbox with loopback only. Outbound
internet access (Lambda's default, `network=True`) is not provided yet: both
settings get the same isolated namespace, since a route out (veth + NAT, or a
user-mode stack such as slirp4netns run with its host-loopback access disabled)
must never make the host's loopback reachable. `enforced()` says so.

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
import ctypes
import hashlib
import json
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Callable

from lamina.sandbox.base import ResourceUsage, SandboxError, SandboxSpec
from lamina.sandbox.cgroups import (
    CPU_PERIOD_US, PARENT_NAME, CgroupLimits, CgroupTree, CgroupUnavailable, EnvironmentCgroup,
    cgroup_name,
)
from lamina.sandbox.rootfs import SANDBOX_GID, SANDBOX_UID, build_etc, mount_args

log = logging.getLogger("lamina.sandbox")

RUNTIME_API_HOST = "127.0.0.1"
RUNTIME_API_PORT = 9001
# How long bubblewrap may take to set the sandbox up before the launch fails.
LAUNCH_TIMEOUT_S = 10.0

_CLONE_NEWNET = 0x40000000
_IP_FREEBIND = 15


def _setns_function() -> Callable[[int, int], None]:
    if hasattr(os, "setns"):  # Python 3.12+
        return os.setns  # type: ignore[attr-defined,no-any-return]
    libc = ctypes.CDLL(None, use_errno=True)

    def setns(fd: int, nstype: int) -> None:
        if libc.setns(fd, nstype) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"setns: {os.strerror(code)}")

    return setns


_setns = _setns_function()


def _listen_in_netns(pid: int) -> socket.socket:
    """Runs on a dedicated thread: a listener bound inside `pid`'s network namespace."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, _CLONE_NEWNET)
        finally:
            os.close(target)
        try:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                # bubblewrap brings `lo` up in the child concurrently; FREEBIND lets the
                # bind succeed even before 127.0.0.1 is configured.
                listener.setsockopt(socket.SOL_IP, _IP_FREEBIND, 1)
                listener.bind((RUNTIME_API_HOST, RUNTIME_API_PORT))
                listener.listen(64)
            except BaseException:
                listener.close()
                raise
        finally:
            # If switching back failed this thread would be left in the sandbox's
            # namespace; it ends right after, so nothing else runs there.
            _setns(own, _CLONE_NEWNET)
        return listener
    finally:
        os.close(own)


async def _listen_inside(pid: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[socket.socket] = loop.create_future()

    def deliver(listener: socket.socket | None, error: BaseException | None) -> None:
        if done.cancelled():
            if listener is not None:
                listener.close()
        elif error is not None:
            done.set_exception(error)
        else:
            done.set_result(listener)  # type: ignore[arg-type]

    def run() -> None:
        try:
            listener = _listen_in_netns(pid)
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(deliver, None, error)
        else:
            loop.call_soon_threadsafe(deliver, listener, None)

    threading.Thread(target=run, name=f"lamina-netns-{pid}", daemon=True).start()
    return await done


async def _read_info(fd: int) -> dict[str, int] | None:
    """bubblewrap's --info-fd JSON, or None when it exited before writing it."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    data = b""
    while True:
        readable: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, lambda: readable.done() or readable.set_result(None))
        try:
            await readable
        finally:
            loop.remove_reader(fd)
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            continue
        if not chunk:
            return None
        data += chunk
        try:
            return json.loads(data)  # type: ignore[no-any-return]
        except ValueError:
            continue


def _hostname(environment_id: str) -> str:
    # Lambda's sandboxes are named after their link-local address, e.g. 169.254.42.9.
    digest = hashlib.sha1(environment_id.encode()).digest()
    return f"169.254.{digest[0]}.{digest[1] or 1}"


def bwrap_argv(bwrap: str, spec: SandboxSpec, etc_dir: Path, *, info_fd: int,
               block_fd: int) -> list[str]:
    return [
        bwrap,
        "--unshare-all", "--unshare-user", "--disable-userns",
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID),
        "--cap-drop", "ALL",
        "--die-with-parent", "--new-session",
        "--hostname", _hostname(spec.environment_id),
        "--info-fd", str(info_fd), "--block-fd", str(block_fd),
        *mount_args(spec, etc_dir),
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
    """The error for a bubblewrap that failed while setting up: its own message if it wrote one."""
    if process.returncode is None:
        await _end(process, grace=1.0)
    assert process.stdout is not None
    message = (await process.stdout.read(4096)).decode(errors="replace").strip()
    return SandboxError(f"bubblewrap failed to start the sandbox: {message or detail}")


def cgroup_limits(spec: SandboxSpec) -> CgroupLimits:
    cores = min(spec.cpu_cores, float(os.cpu_count() or 1))
    return CgroupLimits(
        memory_bytes=spec.memory_mb * 1024 * 1024,
        cpu_quota_us=max(1000, int(cores * CPU_PERIOD_US)),
        max_processes=spec.max_processes,
    )


class NamespaceSandbox:
    def __init__(self, spec: SandboxSpec, process: asyncio.subprocess.Process, init_pid: int,
                 init_pidfd: int, cgroup: EnvironmentCgroup, listener: socket.socket) -> None:
        self.spec = spec
        self.process = process
        # The host PID of the sandbox's PID 1 (bubblewrap's init); the command is its child.
        self.pid = init_pid
        self.runtime_api_socket = listener
        self.runtime_api_address = f"{RUNTIME_API_HOST}:{RUNTIME_API_PORT}"
        assert process.stdout is not None
        self.output = process.stdout
        self._pidfd = init_pidfd
        self._cgroup = cgroup
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
        CgroupTree().ensure_parents()
    except CgroupUnavailable as error:
        return str(error)
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

    def enforced(self) -> list[str]:
        return [
            "timeout", "open files", f"memory (cgroup v{self._cgroups.version})", "CPU share",
            "process count", "/tmp size", "read-only code", "private filesystem view",
            "PID/IPC/UTS/user namespaces", "no capabilities",
            "network namespace with loopback only (no outbound access yet)",
        ]

    async def reap_leftovers(self) -> None:
        for group in self._cgroups.leftovers():
            group.kill_all()
            if not await group.remove():
                log.warning("could not remove leftover cgroup %s", group.dirs)

    async def launch(self, spec: SandboxSpec) -> NamespaceSandbox:
        try:
            cgroup = self._cgroups.create(cgroup_name(spec.environment_id), cgroup_limits(spec))
        except (OSError, CgroupUnavailable) as error:
            raise SandboxError(f"cannot create the cgroup for {spec.environment_id}: {error}") from error
        try:
            return await self._start(spec, cgroup)
        except BaseException:
            await cgroup.remove()
            raise

    async def _start(self, spec: SandboxSpec, cgroup: EnvironmentCgroup) -> NamespaceSandbox:
        info_read, info_write = os.pipe()
        block_read, block_write = os.pipe()
        child_fds = (info_write, block_read)
        env = dict(spec.env)
        env["AWS_LAMBDA_RUNTIME_API"] = f"{RUNTIME_API_HOST}:{RUNTIME_API_PORT}"
        argv = bwrap_argv(self._bwrap, spec, self._etc, info_fd=info_write, block_fd=block_read)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, env=env, pass_fds=child_fds,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True, limit=1024 * 1024,
            )
        finally:
            for fd in child_fds:
                os.close(fd)
        pidfd = -1
        listener: socket.socket | None = None
        try:
            try:
                info = await asyncio.wait_for(_read_info(info_read), LAUNCH_TIMEOUT_S)
            finally:
                os.close(info_read)
            if info is None:
                raise await _launch_failure(process, "it exited before reporting")
            init_pid = int(info["child-pid"])
            try:
                pidfd = os.pidfd_open(init_pid)
                # The limits go on before the command exists: PID 1 is waiting on the
                # block fd, and everything it forks inherits its cgroups and rlimits.
                cgroup.add(init_pid)
                limit = (spec.max_open_files, spec.max_open_files)
                resource.prlimit(init_pid, resource.RLIMIT_NOFILE, limit)
                resource.prlimit(init_pid, resource.RLIMIT_CORE, (0, 0))
                listener = await _listen_inside(init_pid)
            except OSError as error:
                # Typically the sandbox's PID 1 is already gone: a mount failed.
                raise await _launch_failure(process, str(error)) from error
            listener.setblocking(False)
            os.write(block_write, b"1")
        except BaseException:
            if listener is not None:
                listener.close()
            if pidfd >= 0:
                os.close(pidfd)
            await _end(process, grace=0.0)
            raise
        finally:
            os.close(block_write)
        return NamespaceSandbox(spec, process, init_pid, pidfd, cgroup, listener)
