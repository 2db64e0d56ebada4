"""The kernel-isolation backend: bubblewrap namespaces plus cgroup limits.

Each sandbox is one `bwrap` process tree with new user, mount, PID, IPC, UTS,
cgroup and network namespaces and a Lambda-shaped file system (rootfs.py: the
runtime image as a read-only `/`, `/var/task`, `/opt`, `/var/runtime` read-only,
a disk-backed `/tmp` of EphemeralStorage size (ephemeral.py), `/proc` with runc's
masked paths, a minimal read-only `/dev`). The command runs as Lambda's uid 993 /
gid 990 with no capabilities, `no_new_privs`, a new session (no TIOCSTI into the
server's terminal), no way to create further user namespaces
(`--disable-userns`: they are the usual door to kernel attack surface), and a
seccomp filter modelled on Docker's default profile (seccomp.py).

User mapping, the way hardened container runtimes do it: bubblewrap runs
unprivileged, as a host uid of its own for each sandbox (users.py: from
1,000,000, never 0), so the user namespace it creates maps 993 onto that uid.
Whatever a function touches on the host is checked against an unprivileged
stranger: /proc/sys and the other kernel knobs are not writable, its files are
not root's. Unprivileged bubblewrap resolves its bind sources with that uid's
rights, so every directory it mounts must be reachable by others (the image
cache, the code dir, the state dir; the backend checks the code dir at start).

Start-up, and why the limits hold from the first instruction
------------------------------------------------------------
1. A short shell moves itself into the environment's cgroups and sets
   RLIMIT_NOFILE (and no core dumps) as root, then execs `setpriv` to become the
   sandbox's host uid, which execs `bwrap`: every process of the sandbox,
   bubblewrap's own included, is born inside the limits.
2. `bwrap` starts with `--info-fd` (it reports the host PID of the sandbox's
   PID 1) and `--block-fd` (the sandbox waits before running the command).
3. The Runtime API listener (and the one leading to Lamina's API) are created
   inside the sandbox's network namespace after the egress routes (egress.py),
   and slirp4netns is attached when outbound access is wanted (network.py says
   how, and why the host's loopback stays unreachable).
4. The server writes to the block fd; the command starts with
   `AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001`.

Limits
------
memory (= MemorySize, no swap; an OOM kill is read from the cgroup's counter),
CPU quota in proportion to memory (1,769 MB = one core, at most the machine's
cores), 1,024 processes, 1,024 open files, `/tmp` size (its own file system, so
not counted as memory). `destroy()` kills the sandbox's PID 1 through a pidfd,
which makes the kernel kill every process in the PID namespace, then removes
the cgroups and gives the uid and the `/tmp` disk back.

Exit codes: bubblewrap's PID 1 reports a command killed by signal N as 128+N;
`wait()` turns that back into -N, as the plain-process backend reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lamina.sandbox import file_systems, seccomp
from lamina.sandbox.base import (
    DEFAULT_EPHEMERAL_MB,
    ResourceUsage,
    SandboxError,
    SandboxSpec,
    add_daemon_variables,
)
from lamina.sandbox.cgroups import (
    CPU_PERIOD_US,
    PARENT_NAME,
    CgroupLimits,
    CgroupTree,
    CgroupUnavailable,
    EnvironmentCgroup,
    cgroup_name,
    server_alive,
)
from lamina.sandbox.children import Child
from lamina.sandbox.egress import EgressRules
from lamina.sandbox.ephemeral import EphemeralDisk, EphemeralDisks
from lamina.sandbox.ephemeral import probe as probe_ephemeral
from lamina.sandbox.network import (
    RUNTIME_API_HOST,
    RUNTIME_API_PORT,
    XRAY_DAEMON_PORT,
    ApiForwarder,
    Outbound,
    connect_inside,
    listen_inside,
    read_pipe,
)
from lamina.sandbox.rootfs import (
    SANDBOX_GID,
    SANDBOX_UID,
    build_etc,
    mount_args,
    outbound_resolv_conf,
    stage_directory,
    state_dir,
)
from lamina.sandbox.users import DEFAULT_FIRST_UID, HostUser, SandboxUsers

log = logging.getLogger("lamina.sandbox")

# How long bubblewrap may take to set the sandbox up before the launch fails.
LAUNCH_TIMEOUT_S = 10.0
# Launches between a /tmp disk's mount on the host and bubblewrap's report of its
# PID at any one time. Each new mount namespace copies the host's mount table,
# in-flight disks included, and bubblewrap's heap keeps what parsing it took
# (bench/start_phases.py, 100 launched at once: its PID 1 0.42 MB unbounded, 0.31
# MB with 4). The window is a few milliseconds of exec and clone: no throughput
# is lost.
LAUNCHES_AT_ONCE = max(4, 2 * (os.cpu_count() or 1))

# Runs as the sandbox's first process, before bubblewrap: moves itself into the
# environment's cgroups (cheaper than being moved, see cgroups.py) and sets the
# resource limits, then becomes bubblewrap, which inherits all of it.
# Arguments: N, N cgroup files, the open-files limit, the bwrap command line.
# Arguments: N, N cgroup files, the open-files limit, the host uid, the bwrap
# command line. It drops to the sandbox's unprivileged host uid (setpriv) last, so
# bubblewrap runs unprivileged and its user namespace maps uid 993 onto that uid.
ENTER_SCRIPT = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do echo 0 > "$1" || exit 125; shift; n=$((n - 1)); done; '
    'ulimit -n "$1" && ulimit -c 0 || exit 125; shift; u=$1; shift; '
    'exec setpriv --reuid="$u" --regid="$u" --clear-groups -- "$@"'
)
# The port Lamina's API is reachable on inside when the server's own port is the
# Runtime API's (otherwise the same port as outside, so a hard-coded
# http://127.0.0.1:<port> endpoint works from inside too).
FALLBACK_API_PORT = 9002


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


def unreachable_parent(path: Path) -> Path | None:
    """The first directory on the way to `path` that others may not search."""
    for directory in reversed((path.resolve(), *path.resolve().parents)):
        try:
            if not directory.stat().st_mode & 0o001:
                return directory
        except FileNotFoundError:
            return None  # created later, by this server, searchable
    return None


def inside_api_port(spec: SandboxSpec) -> int | None:
    if spec.api_port is None:
        return None
    return FALLBACK_API_PORT if spec.api_port == RUNTIME_API_PORT else spec.api_port


def file_system_args(mounted: list[tuple[str, Path]]) -> list[str]:
    """LocalMountPaths (under /mnt), each bound to its idmapped access point root.
    /mnt is a fresh tmpfs holding only the mount points, read-only once they exist
    (the runtime image's root, read-only, cannot hold new directories)."""
    if not mounted:
        return []
    args = ["--perms", "0755", "--tmpfs", "/mnt"]
    for target, source in mounted:
        args += ["--bind", str(source), target]
    return args + ["--remount-ro", "/mnt"]


def bwrap_argv(bwrap: str, spec: SandboxSpec, etc_dir: Path, *, info_fd: int,
               block_fd: int, resolv_conf: Path | None = None, tmp_dir: Path | None = None,
               seccomp_fd: int | None = None,
               mounted: list[tuple[str, Path]] | None = None, template: bool = False) -> list[str]:
    # A SnapStart template (zygote.py) keeps the right to make user namespaces, for
    # the environments it forks; each of those gives it up before running anything.
    return [
        bwrap,
        "--unshare-all", "--unshare-user", *([] if template else ["--disable-userns"]),
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID),
        "--cap-drop", "ALL",
        "--die-with-parent", "--new-session",
        "--hostname", _hostname(spec.environment_id),
        "--info-fd", str(info_fd), "--block-fd", str(block_fd),
        *mount_args(spec, etc_dir, resolv_conf, tmp_dir, file_system_args(mounted or []),
                    mask_proc=not template),
        *(["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []),
        "--chdir", spec.working_directory, "--", *spec.argv,
    ]


async def _end(process: Child, grace: float = 5.0) -> None:
    """Wait for bubblewrap to exit, killing it after `grace` seconds.

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


async def _launch_failure(process: Child, detail: str) -> SandboxError:
    """The error for a bubblewrap that failed while setting up.

    Its own message (e.g. "Can't find source path") went to the output pipe,
    which the environment reads and logs like the runtime's output.
    """
    if process.returncode is None:
        await _end(process, grace=1.0)
    return SandboxError(f"bubblewrap failed to start the sandbox (exit code {process.returncode}, "
                        f"{detail}); its message is in the function's output")


def cpu_quota_us(spec: SandboxSpec) -> int:
    cores = min(spec.cpu_cores, float(os.cpu_count() or 1))
    return max(1000, int(cores * CPU_PERIOD_US))


def cgroup_limits(spec: SandboxSpec) -> CgroupLimits:
    return CgroupLimits(
        memory_bytes=spec.memory_mb * 1024 * 1024,
        cpu_quota_us=None if spec.init_cpu_boost else cpu_quota_us(spec),
        max_processes=spec.max_processes,
    )


class CgroupBackedSandbox:
    """What every sandbox in a cgroup of its own answers alike (this backend's and
    SnapStart's restored ones, zygote.py): usage and OOM kills from the cgroup (as
    they were at destroy, once destroyed), the CPU share after INIT, and connections
    into its network namespace."""

    spec: SandboxSpec
    pid: int
    _cgroup: EnvironmentCgroup
    _final_usage: ResourceUsage | None
    _final_oom_kills: int | None

    def usage(self) -> ResourceUsage:
        if self._final_usage is not None:
            return self._final_usage
        return self._cgroup.usage()

    def end_init(self) -> None:
        if self.spec.init_cpu_boost:
            try:
                self._cgroup.set_cpu_quota(cpu_quota_us(self.spec))
            except OSError:
                log.warning("sandbox %s: could not apply the CPU share", self.spec.environment_id)

    def oom_killed(self) -> bool:
        kills = self._final_oom_kills if self._final_oom_kills is not None else self._cgroup.oom_kills()
        return kills > 0

    async def connect(self, port: int) -> socket.socket:
        return await connect_inside(self.pid, port)


class NamespaceSandbox(CgroupBackedSandbox):
    def __init__(self, spec: SandboxSpec, process: Child, init_pid: int,
                 init_pidfd: int, cgroup: EnvironmentCgroup, listener: socket.socket,
                 outbound: Outbound | None, api: ApiForwarder | None,
                 release: Callable[[], None],
                 trace_daemon: socket.socket | None = None) -> None:
        self.spec = spec
        self.process = process
        # The host PID of the sandbox's PID 1 (bubblewrap's init); the command is its child.
        self.pid = init_pid
        self.runtime_api_socket = listener
        self.runtime_api_address = f"{RUNTIME_API_HOST}:{RUNTIME_API_PORT}"
        self.trace_daemon_socket = trace_daemon
        self._pidfd = init_pidfd
        self._cgroup = cgroup
        self._outbound = outbound
        self._api = api
        self._release = release
        self._final_usage: ResourceUsage | None = None
        self._final_oom_kills: int | None = None
        self._destroyed = False

    async def wait(self) -> int:
        code = await self.process.wait()
        if 128 < code <= 128 + 64:
            return -(code - 128)
        return code

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
        if self._api is not None:
            await self._api.stop()
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
        if self.trace_daemon_socket is not None:
            self.trace_daemon_socket.close()
        # The uid and the /tmp disk go back only now: no process of the sandbox is left.
        self._release()


def probe() -> str | None:
    """Why this backend cannot run here, or None when it can."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    try:
        result = subprocess.run(
            ["setpriv", f"--reuid={DEFAULT_FIRST_UID}", f"--regid={DEFAULT_FIRST_UID}",
             "--clear-groups", "--",
             bwrap, "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID),
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


@dataclass(frozen=True)
class NamespaceSettings:
    # Where the sparse files of the disk-backed /tmp live (None: /tmp is a tmpfs,
    # counted as memory, as before).
    ephemeral_dir: Path | None = None
    # The directory functions' code is unpacked under: sandbox users must be able to
    # reach it (every directory above it searchable by others).
    code_dir: Path | None = None
    # CIDRs functions may reach although they are private or the host's.
    egress_allow: str = ""
    first_uid: int = DEFAULT_FIRST_UID
    uid_count: int = 65_536
    cgroup_parent: str = PARENT_NAME


class NamespaceBackend:
    name = "namespaces"
    mounts_images = True

    def __init__(self, settings: NamespaceSettings | None = None) -> None:
        settings = settings or NamespaceSettings()
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxError("bubblewrap (bwrap) is not installed")
        self._bwrap = bwrap
        if settings.code_dir is not None:
            blocking = unreachable_parent(settings.code_dir)
            if blocking is not None:
                raise SandboxError(
                    f"sandbox users (unprivileged uids) cannot reach {settings.code_dir}: "
                    f"{blocking} is not searchable by others (chmod o+x it, or choose a data "
                    "dir elsewhere)")
        try:
            self._cgroups = CgroupTree(settings.cgroup_parent)
        except CgroupUnavailable as error:
            raise SandboxError(str(error)) from error
        self._etc = build_etc()
        self._runtime_clients: dict[Path, Path] = {}
        self._users = SandboxUsers(state_dir() / "uids", settings.first_uid, settings.uid_count)
        self._egress = EgressRules.for_host(settings.egress_allow)
        try:
            seccomp.filter_program()  # compiled once, here, so a failure shows at start-up
            self._seccomp = True
        except (OSError, ImportError) as error:
            log.warning("sandbox: no seccomp filter (%s)", error)
            self._seccomp = False
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None
        self._disks: EphemeralDisks | None = None
        if settings.ephemeral_dir is not None:
            mounts = state_dir() / "ephemeral" / self._cgroups.server
            reason = probe_ephemeral(settings.ephemeral_dir, mounts)
            if reason is None:
                self._disks = EphemeralDisks(settings.ephemeral_dir, mounts)
            else:
                log.warning("sandbox: /tmp is a tmpfs counted as memory: %s", reason)
        self._slirp4netns = shutil.which("slirp4netns")
        self._outbound_resolv_conf = outbound_resolv_conf(self._etc)
        if self._slirp4netns is None:
            log.warning("sandbox: slirp4netns is not installed; functions get no outbound network")

    # What sandbox/zygote.py needs to give a forked environment the same limits.
    @property
    def seccomp_enabled(self) -> bool:
        return self._seccomp

    @property
    def cgroups(self) -> CgroupTree:
        return self._cgroups

    @property
    def egress(self) -> EgressRules:
        return self._egress

    @property
    def slirp4netns(self) -> str:
        return self._slirp4netns or ""

    @property
    def outbound_available(self) -> bool:
        return self._slirp4netns is not None

    def enforced(self) -> list[str]:
        network = ("own network namespace, outbound through slirp4netns, host and private "
                   "networks unreachable" if self._slirp4netns
                   else "own network namespace with loopback only (no outbound)")
        return [
            "timeout", "open files", f"memory (cgroup v{self._cgroups.version})", "CPU share",
            "process count", "/tmp size" + (" (disk)" if self._disks else " (tmpfs)"),
            "read-only code", "private filesystem view", "PID/IPC/UTS/user namespaces",
            f"unprivileged host uids from {self._users.first_uid}", "no capabilities",
            "seccomp" if self._seccomp else "no seccomp", network,
        ]

    async def reap_leftovers(self) -> None:
        """Kill the sandboxes of servers that no longer run, and remove their cgroups
        and /tmp disks.

        Their processes normally die with their server (--die-with-parent), leaving
        empty cgroups; whatever still runs in them is killed first."""
        for group in self._cgroups.leftovers():
            group.kill_all()
            if not await group.remove():
                log.warning("could not remove leftover cgroup %s", group.dirs)
        self._cgroups.remove_empty_parents()
        ephemeral = state_dir() / "ephemeral"
        for server in ephemeral.iterdir() if ephemeral.is_dir() else ():
            if server.name != self._cgroups.server and not server_alive(server.name):
                await asyncio.to_thread(EphemeralDisks.unmount_all, server)
        mounts = state_dir() / "file-systems"
        for server in mounts.iterdir() if mounts.is_dir() else ():
            if server.name != self._cgroups.server and not server_alive(server.name):
                await asyncio.to_thread(file_systems.unmount_all, server)
        if self._disks is not None:
            self._disks.reap_leftovers()
            self._disks.prepare(DEFAULT_EPHEMERAL_MB)

    async def close(self) -> None:
        if self._disks is not None:
            await self._disks.close()
        with contextlib.suppress(OSError):  # not empty: environments still hold mounts
            (state_dir() / "file-systems" / self._cgroups.server).rmdir()

    def _runtime_dir(self, source: Path | None) -> Path | None:
        """Lamina's runtime clients, staged where every sandbox user can read them."""
        if source is None:
            return None
        staged = self._runtime_clients.get(source)
        if staged is None:
            staged = self._runtime_clients[source] = stage_directory(source, "runtime",
                                                                     compile_python=True)
        return staged

    async def launch(self, spec: SandboxSpec, output_fd: int, *,
                     template: bool = False) -> NamespaceSandbox:
        # Checked here: unprivileged bubblewrap reports its PID before it mounts, so
        # a missing source would otherwise surface as a runtime that exited.
        for source in (spec.root_image, spec.task_root, spec.runtime_root, spec.layers_root):
            if source is not None and not source.is_dir():
                raise SandboxError(f"cannot start the sandbox: {source} is missing")
        try:
            cgroup = self._cgroups.create(cgroup_name(spec.environment_id), cgroup_limits(spec))
        except (OSError, CgroupUnavailable) as error:
            raise SandboxError(f"cannot create the cgroup for {spec.environment_id}: {error}") from error
        user = self._users.acquire()
        disk: EphemeralDisk | None = None
        released = False
        mounted: list[tuple[str, Path]] = []

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            for _target, at in mounted:
                try:
                    file_systems.unmount(at)
                except OSError as error:
                    log.warning("sandbox: %s", error)
            SandboxUsers.release(user)
            if disk is not None and self._disks is not None:
                self._disks.release(disk)

        slots = self._launch_slots()
        holding = False

        def leave() -> None:
            nonlocal holding
            if holding:
                holding = False
                slots.release()

        try:
            for index, mount in enumerate(spec.file_systems):
                at = (state_dir() / "file-systems" / self._cgroups.server / spec.environment_id
                      / str(index))
                mounted.append((mount.target, at))
                await asyncio.to_thread(file_systems.mount_for, mount, user.uid, at)
            # From the /tmp disk's mount on the host until bubblewrap's namespace has
            # its copy, a few launches at a time (see LAUNCHES_AT_ONCE).
            await slots.acquire()
            holding = True
            if self._disks is not None:
                disk = await self._disks.acquire(spec.ephemeral_storage_mb, user.uid)
            return await self._start(spec, cgroup, output_fd, user, disk, release, mounted,
                                     template, leave)
        except BaseException:
            await cgroup.remove()
            release()
            raise
        finally:
            leave()

    def _launch_slots(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots_loop is not loop:  # a semaphore serves one event loop
            self._slots, self._slots_loop = asyncio.Semaphore(LAUNCHES_AT_ONCE), loop
        assert self._slots is not None
        return self._slots

    async def _start(self, spec: SandboxSpec, cgroup: EnvironmentCgroup, output_fd: int,
                     user: HostUser, disk: EphemeralDisk | None,
                     release: Callable[[], None],
                     mounted: list[tuple[str, Path]], template: bool = False,
                     launched: Callable[[], None] = lambda: None) -> NamespaceSandbox:
        info_read, info_write = os.pipe()
        block_read, block_write = os.pipe()
        child_fds = [info_write, block_read]
        if self._seccomp:
            child_fds.append(seccomp.template_filter_fd() if template else seccomp.filter_fd())
        env = dict(spec.env)
        env["AWS_LAMBDA_RUNTIME_API"] = f"{RUNTIME_API_HOST}:{RUNTIME_API_PORT}"
        api_port = inside_api_port(spec)
        if api_port is not None:
            env["AWS_ENDPOINT_URL"] = f"http://{RUNTIME_API_HOST}:{api_port}"
        add_daemon_variables(env, RUNTIME_API_HOST, XRAY_DAEMON_PORT)
        outbound_wanted = spec.network and self._slirp4netns is not None
        spec = dataclasses.replace(spec, runtime_root=self._runtime_dir(spec.runtime_root))
        argv = bwrap_argv(self._bwrap, spec, self._etc, info_fd=info_write, block_fd=block_read,
                          resolv_conf=self._outbound_resolv_conf if outbound_wanted else None,
                          tmp_dir=disk.mount_point if disk is not None else None,
                          seccomp_fd=child_fds[2] if self._seccomp else None, mounted=mounted,
                          template=template)
        entry = [str(path) for path in cgroup.entry_files()]
        argv = ["/bin/sh", "-c", ENTER_SCRIPT, "lamina-sandbox", str(len(entry)), *entry,
                str(spec.max_open_files), str(user.uid), *argv]
        try:
            process = Child.start(
                argv, env=env,
                pass_fds=[*child_fds, *spec.inherited_fds],
                stdin=subprocess.DEVNULL, stdout=output_fd, stderr=output_fd,
                start_new_session=True,
            )
        finally:
            for fd in child_fds:
                os.close(fd)
        pidfd = -1
        listeners: list[socket.socket] = []
        outbound: Outbound | None = None
        api: ApiForwarder | None = None
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
                if disk is not None:
                    # The sandbox's mount namespace holds a copy of the disk's mount
                    # now; the host lets go of its own (ephemeral.py says why).
                    await EphemeralDisks.detach(disk)
                launched()
                ports = (RUNTIME_API_PORT,) if api_port is None else (RUNTIME_API_PORT, api_port)
                listeners = await listen_inside(
                    init_pid, ports, wait_for_loopback=outbound_wanted,
                    egress=self._egress if outbound_wanted else None,
                    datagram_ports=(XRAY_DAEMON_PORT,))
                if outbound_wanted:
                    # Only after bubblewrap has brought up `lo` (listen_inside waits
                    # for it): slirp4netns configuring its tap at the same moment
                    # makes bubblewrap's netlink call fail (see network.py).
                    assert self._slirp4netns is not None
                    outbound = await Outbound.start(self._slirp4netns, init_pid)
            except OSError as error:
                # Typically the sandbox's PID 1 is already gone: a mount failed.
                raise await _launch_failure(process, str(error)) from error
            if api_port is not None and spec.api_port is not None:
                api = ApiForwarder(listeners[1], (RUNTIME_API_HOST, spec.api_port))
                await api.start()
            os.write(block_write, b"1")
        except BaseException:
            if api is not None:
                await api.stop()
            if outbound is not None:
                await outbound.stop()
            for listener in listeners:
                listener.close()
            if pidfd >= 0:
                os.close(pidfd)
            await _end(process, grace=0.0)
            raise
        finally:
            os.close(block_write)
        return NamespaceSandbox(spec, process, init_pid, pidfd, cgroup, listeners[0], outbound,
                                api, release, trace_daemon=listeners[-1])
