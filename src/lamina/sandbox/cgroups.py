"""Control groups for sandboxes: one per environment, under a `lamina` parent.

Both cgroup layouts are handled, behind one small class:

- v2 (one unified hierarchy, `cgroup.controllers` at its root, what current
  distributions mount at /sys/fs/cgroup): `memory.max`, `memory.swap.max`,
  `cpu.max`, `pids.max`; peak memory from `memory.peak`, OOM kills from the
  `oom_kill` counter of `memory.events`, and `cgroup.kill` to end every process.
- v1 (one hierarchy per controller, possibly co-mounted such as `cpu,cpuacct`):
  `memory.limit_in_bytes` plus `memory.memsw.limit_in_bytes` (no swap),
  `cpu.cfs_quota_us`, `pids.max`; peak memory from `memory.max_usage_in_bytes`,
  CPU time from `cpuacct.usage`, OOM kills from the `oom_kill` line of
  `memory.oom_control` (kernel 4.13+), and the freezer to kill a tree that forks
  while it is being killed.

Where the `lamina` parent goes: on v1 it is created under the server's own cgroup
in each hierarchy, so sandboxes stay inside whatever accounting and limits the
server itself runs under. On v2 the "no internal processes" rule forbids enabling
controllers for children of a cgroup that holds processes (the server's own), so
the parent sits at the root of the hierarchy (`/sys/fs/cgroup/lamina`), as
container engines do. Below it, one directory per running server (see
CgroupTree), so that a server starting next to another never mistakes the
other's sandboxes for leftovers.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from lamina.sandbox.base import ResourceUsage

PARENT_NAME = "lamina"
CPU_PERIOD_US = 100_000
# v1 controllers a sandbox uses; `freezer` is optional (it only makes killing a
# fork storm quicker), the others are required for the limits to hold.
V1_REQUIRED = ("memory", "cpu", "cpuacct", "pids")
V1_OPTIONAL = ("freezer",)
V2_REQUIRED = ("memory", "cpu", "pids")


class CgroupUnavailable(Exception):
    """The machine does not let this process create limited cgroups."""


@dataclass(frozen=True)
class CgroupLimits:
    memory_bytes: int
    # CPU time per period in microseconds; None for no quota.
    cpu_quota_us: int | None
    max_processes: int


def _write(path: Path, value: str) -> None:
    # One write(2) per value: cgroup files act on each write, not on close.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _keyed(path: Path, key: str) -> int | None:
    """A `key value` line from a flat-keyed cgroup file (memory.events, cpu.stat)."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def _pids(directory: Path) -> list[int]:
    try:
        return [int(line) for line in (directory / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, options) of every cgroup mount."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] in ("cgroup", "cgroup2"):
            found.append((fields[1].replace("\\040", " "), fields[2], set(fields[3].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """This process's cgroup path per v1 controller ("" key: the v2 path)."""
    paths: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _start_time(pid: int) -> str | None:
    """A process's start time in clock ticks since boot: with the PID, a unique identity."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; fields after it do not.
    return stat.rsplit(")", 1)[1].split()[19]


def server_id(pid: int | None = None) -> str:
    """The name of one server's cgroup: its PID and start time, so a reused PID differs."""
    pid = os.getpid() if pid is None else pid
    return f"server-{pid}-{_start_time(pid)}"


def server_alive(name: str) -> bool:
    _, pid, started = (name.split("-", 2) + ["", ""])[:3]
    return pid.isdigit() and _start_time(int(pid)) == started


class CgroupTree:
    """Where this server's sandboxes' cgroups go, for v1 or v2.

    Layout: `<hierarchy>/lamina/server-<pid>-<start time>/<environment>`. Several
    servers can share a machine (and the same v1 hierarchies); each finds its own
    sandboxes under its own directory, and only the directories of servers that
    no longer run are leftovers.
    """

    def __init__(self, parent_name: str = PARENT_NAME, server: str | None = None) -> None:
        self.server = server or server_id()
        mounts = _mounts()
        unified = next((m for m in mounts if m[1] == "cgroup2"
                        and set(self._v2_controllers(Path(m[0]))) >= set(V2_REQUIRED)), None)
        self._ready = False
        if unified is not None:
            self.version = 2
            self.roots = {"": Path(unified[0]) / parent_name}
        else:
            self.version = 1
            own = _own_paths()
            self.roots = {}
            for controller in V1_REQUIRED + V1_OPTIONAL:
                mount = next((m for m in mounts if m[1] == "cgroup" and controller in m[2]), None)
                if mount is None:
                    if controller in V1_REQUIRED:
                        raise CgroupUnavailable(f"no cgroup v1 '{controller}' hierarchy is mounted")
                    continue
                relative = own.get(controller, "/").lstrip("/")
                self.roots[controller] = Path(mount[0]) / relative / parent_name
        self.parents = {c: root / self.server for c, root in self.roots.items()}

    @staticmethod
    def _v2_controllers(root: Path) -> list[str]:
        try:
            return (root / "cgroup.controllers").read_text().split()
        except OSError:
            return []

    def ensure_parents(self) -> None:
        """Create this server's parents; raises CgroupUnavailable when that is not allowed."""
        if self._ready:
            return
        try:
            for parent in self.parents.values():
                parent.mkdir(parents=True, exist_ok=True)
            if self.version == 2:
                wanted = " ".join("+" + c for c in V2_REQUIRED)
                root = self.roots[""]
                for directory in (root.parent, root, self.parents[""]):
                    enabled = (directory / "cgroup.subtree_control").read_text().split()
                    if not set(V2_REQUIRED) <= set(enabled):
                        _write(directory / "cgroup.subtree_control", wanted)
        except OSError as error:
            raise CgroupUnavailable(f"cannot create cgroups: {error}") from error
        self._ready = True

    def create(self, name: str, limits: CgroupLimits) -> EnvironmentCgroup:
        self.ensure_parents()
        group = EnvironmentCgroup(self.version,
                                  {c: parent / name for c, parent in self.parents.items()})
        try:
            for directory in group.dirs.values():
                directory.mkdir()
            group.apply(limits)
        except OSError:
            group.remove_now()
            raise
        return group

    def leftovers(self) -> list[EnvironmentCgroup]:
        """Environment cgroups of servers that no longer run (crashed), and this one's."""
        groups: dict[tuple[str, str], dict[str, Path]] = {}
        for controller, root in self.roots.items():
            if not root.is_dir():
                continue
            for server in root.iterdir():
                if not server.is_dir() or (server.name != self.server and server_alive(server.name)):
                    continue
                for environment in server.iterdir():
                    if environment.is_dir():
                        groups.setdefault((server.name, environment.name), {})[controller] = environment
        return [EnvironmentCgroup(self.version, dirs) for _, dirs in sorted(groups.items())]

    def remove_empty_parents(self) -> None:
        """rmdir server directories with no environment left (ours included) and the root."""
        for root in self.roots.values():
            if not root.is_dir():
                continue
            for server in root.iterdir():
                if server.is_dir() and (server.name == self.server or not server_alive(server.name)):
                    try:
                        server.rmdir()
                    except OSError:
                        pass  # still holds environments
            try:
                root.rmdir()
            except OSError:
                pass  # other servers' directories
        self._ready = False


class EnvironmentCgroup:
    """The cgroup(s) of one sandbox: one directory on v2, one per controller on v1."""

    def __init__(self, version: int, dirs: dict[str, Path]) -> None:
        self.version = version
        self.dirs = dirs
        # Counter files read after every invocation (REPORT's Max Memory Used), kept
        # open: a pread() of one costs ~2 us here, open-read-close through pathlib ~70 us.
        self._counters: dict[str, int] = {}

    def _counter(self, controller: str, name: str, key: str | None = None) -> int | None:
        """A single-value file's number, or a `key value` line's of a flat-keyed one."""
        fd = self._counters.get(name)
        try:
            if fd is None:
                fd = os.open(self.dirs[controller] / name, os.O_RDONLY | os.O_CLOEXEC)
                self._counters[name] = fd
            data = os.pread(fd, 4096, 0)
            if key is None:
                return int(data.split()[0])
            for line in data.decode().splitlines():
                found, _, value = line.partition(" ")
                if found == key:
                    return int(value)
            return None
        except (OSError, ValueError, IndexError):
            return None

    def _close_counters(self) -> None:
        for fd in self._counters.values():
            os.close(fd)
        self._counters.clear()

    def _dir(self, controller: str) -> Path:
        return self.dirs[""] if self.version == 2 else self.dirs[controller]

    def apply(self, limits: CgroupLimits) -> None:
        if self.version == 2:
            directory = self.dirs[""]
            _write(directory / "memory.max", str(limits.memory_bytes))
            if (directory / "memory.swap.max").exists():
                _write(directory / "memory.swap.max", "0")
            quota = "max" if limits.cpu_quota_us is None else str(limits.cpu_quota_us)
            _write(directory / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            _write(directory / "pids.max", str(limits.max_processes))
            return
        memory = self.dirs["memory"]
        _write(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
        # memsw (memory + swap) exists only with swap accounting on; without it,
        # swappiness 0 keeps the group from being swapped instead of limited.
        if (memory / "memory.memsw.limit_in_bytes").exists():
            _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
        else:
            _write(memory / "memory.swappiness", "0")
        cpu = self.dirs["cpu"]
        _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        _write(cpu / "cpu.cfs_quota_us", str(limits.cpu_quota_us or -1))
        _write(self.dirs["pids"] / "pids.max", str(limits.max_processes))

    def set_cpu_quota(self, quota_us: int | None) -> None:
        """CPU time per period the group may use; None for no limit."""
        if self.version == 2:
            quota = "max" if quota_us is None else str(quota_us)
            _write(self.dirs[""] / "cpu.max", f"{quota} {CPU_PERIOD_US}")
        else:
            _write(self.dirs["cpu"] / "cpu.cfs_quota_us", str(quota_us or -1))

    def entry_files(self) -> list[Path]:
        """The files a process writes "0" to, to move itself in (see below why)."""
        if self.version == 2:
            return [self.dirs[""] / "cgroup.procs"]
        # v1: a single-threaded process moving itself through `tasks` skips the
        # global cgroup_threadgroup_rwsem that moving any other process takes.
        # Taking that lock for writing waits for an RCU grace period: 10-15 ms on
        # this machine whenever no other migration happened just before, which
        # was most of the isolation's cost of a cold start.
        return [directory / "tasks" for directory in self.dirs.values()]

    def add(self, pid: int) -> None:
        """Move another process in; the children it forks afterwards are born inside."""
        for directory in self.dirs.values():
            _write(directory / "cgroup.procs", str(pid))

    def usage(self) -> ResourceUsage:
        if self.version == 2:
            usec = self._counter("", "cpu.stat", "usage_usec")
            return ResourceUsage(
                max_memory_bytes=self._counter("", "memory.peak"),
                cpu_seconds=None if usec is None else usec / 1e6,
            )
        nanoseconds = self._counter("cpuacct", "cpuacct.usage")
        return ResourceUsage(
            max_memory_bytes=self._counter("memory", "memory.max_usage_in_bytes"),
            cpu_seconds=None if nanoseconds is None else nanoseconds / 1e9,
        )

    def oom_kills(self) -> int:
        if self.version == 2:
            return _keyed(self.dirs[""] / "memory.events", "oom_kill") or 0
        return _keyed(self.dirs["memory"] / "memory.oom_control", "oom_kill") or 0

    def pids(self) -> list[int]:
        # Every directory, not just the pids controller's: a crashed server's
        # leftover may lack some controllers' directories (removed half-way).
        return sorted({pid for directory in self.dirs.values() for pid in _pids(directory)})

    def kill_all(self) -> None:
        """SIGKILL every process in the group, including ones forking right now."""
        if self.version == 2:
            kill = self.dirs[""] / "cgroup.kill"
            if kill.exists():
                try:
                    _write(kill, "1")
                    return
                except OSError:
                    pass
            self._kill_listed()
            return
        freezer = self.dirs.get("freezer")
        state = None if freezer is None else freezer / "freezer.state"
        try:
            # A frozen group cannot fork, so one pass over cgroup.procs gets all;
            # SIGKILL is delivered once the group thaws.
            if state is not None:
                _write(state, "FROZEN")
        except OSError:
            state = None
        try:
            self._kill_listed()
        finally:
            if state is not None:
                _write(state, "THAWED")

    def _kill_listed(self) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def remove_now(self) -> bool:
        """rmdir every directory; False while processes are still exiting."""
        self._close_counters()
        done = True
        for directory in self.dirs.values():
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                done = False
        return done

    async def remove(self, timeout: float = 5.0) -> bool:
        """Kill what is left and remove the group, waiting for the kernel to let go."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.001
        while True:
            if self.remove_now():
                return True
            if loop.time() > deadline:
                return False
            self.kill_all()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)


_NAME_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def cgroup_name(environment_id: str) -> str:
    """A directory name from an environment id (ids may hold ':' or '/' from ARNs)."""
    name = _NAME_SAFE.sub("_", environment_id).lstrip(".") or "environment"
    return name[:200]
