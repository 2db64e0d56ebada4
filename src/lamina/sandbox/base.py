"""The sandbox seam: how one execution environment's process tree is isolated.

Backends (plain processes, Linux namespaces + cgroups) share this small interface,
chosen once at start-up. Nothing above `sandbox` knows how isolation is done: an
environment asks for a `Sandbox` from a `SandboxSpec` and gets back a running
process, a listening socket for the Runtime API that only this
sandbox can reach, and the kernel's view of its resource use.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# AWS's per-environment quotas for processes/threads and open files.
MAX_PROCESSES = 1024
MAX_OPEN_FILES = 1024
# Lambda gives one full vCPU at 1,769 MB and CPU in proportion below and above.
MB_PER_VCPU = 1769
# Lambda's default EphemeralStorage: the /tmp size most environments ask for.
DEFAULT_EPHEMERAL_MB = 512


class SandboxError(OSError):
    """A sandbox could not be created (the machine refused, or the launcher failed).

    An OSError, like a failed exec: environments report both as a runtime that
    could not start."""


@dataclass(frozen=True)
class FileSystemMount:
    """A shared directory (an EFS access point's root) mounted read-write at `target`,
    every file operation in it done as uid/gid on disk (see sandbox/file_systems.py)."""

    # The file system's own directory, and the access point's root below it.
    file_system_dir: Path
    path: str
    # LocalMountPath, under /mnt.
    target: str
    uid: int
    gid: int


@dataclass(frozen=True)
class SandboxSpec:
    environment_id: str
    # The command to run inside, with paths as seen inside the sandbox.
    argv: list[str]
    # The environment variables, except AWS_LAMBDA_RUNTIME_API (the backend sets it).
    env: dict[str, str]
    # Host directories presented read-only inside at /var/task, /opt, /var/runtime
    # (runtime_root None: the runtime image brings its own /var/runtime; task_root
    # None: a container image brings its own /var/task).
    task_root: Path | None
    runtime_root: Path | None
    layers_root: Path | None = None
    # Host directory backing /tmp for backends that cannot mount a sized tmpfs.
    scratch_root: Path | None = None
    memory_mb: int = 128
    ephemeral_storage_mb: int = DEFAULT_EPHEMERAL_MB
    # Outbound network access (Lambda's default); False leaves only loopback.
    network: bool = True
    max_processes: int = MAX_PROCESSES
    max_open_files: int = MAX_OPEN_FILES
    # INIT runs with the machine's CPU; the share in proportion to memory applies
    # from end_init() on (Lambda's init phase is measured to get a CPU boost, and
    # a 128 MB Python runtime otherwise takes a quarter of a second to start).
    init_cpu_boost: bool = True
    # Extra read-only host paths the runtime needs (e.g. an interpreter's prefix).
    system_paths: tuple[Path, ...] = field(default_factory=tuple)
    # The runtime image's root file system, mounted read-only as `/`; None runs on
    # the host's own system directories (the host-interpreter mode).
    root_image: Path | None = None
    # Lamina's API port on the host's loopback, to be reachable from inside at
    # AWS_ENDPOINT_URL (the backend sets it); None: no way to the API.
    api_port: int | None = None
    # Where the command starts, inside (a container image's WorkingDirectory).
    working_directory: str = "/var/task"
    # Write ends of pipes the environment owns and reads besides stdout (the
    # runtime client's framed log records, the extensions' output), inherited
    # under the same numbers, which the environment names in variables.
    inherited_fds: tuple[int, ...] = ()
    # FileSystemConfigs, resolved: mounted read-write under /mnt.
    file_systems: tuple[FileSystemMount, ...] = ()

    @property
    def cpu_cores(self) -> float:
        return self.memory_mb / MB_PER_VCPU


def add_daemon_variables(env: dict[str, str], host: str, port: int) -> None:
    """The variables Lambda names the X-Ray daemon by (the SDKs read the first; the
    underscored pair is what Lambda's own tooling reads). Not reserved on Lambda: a
    function that sets them (its own daemon elsewhere) keeps its values."""
    env.setdefault("AWS_XRAY_DAEMON_ADDRESS", f"{host}:{port}")
    env.setdefault("_AWS_XRAY_DAEMON_ADDRESS", host)
    env.setdefault("_AWS_XRAY_DAEMON_PORT", str(port))


@dataclass
class ResourceUsage:
    max_memory_bytes: int | None = None
    cpu_seconds: float | None = None


class Sandbox(Protocol):
    """One running, isolated process tree."""

    spec: SandboxSpec
    pid: int
    # The Runtime API listener: already bound and listening, reachable only from
    # inside this sandbox (plus the host), at the address given to the runtime in
    # AWS_LAMBDA_RUNTIME_API. The environment serves HTTP on it.
    runtime_api_socket: socket.socket
    runtime_api_address: str
    # A UDP socket bound where the sandbox's AWS_XRAY_DAEMON_ADDRESS points (the
    # backend sets it): what the function's X-Ray SDK sends arrives here, read by
    # the environment. None: the backend offers no daemon address.
    trace_daemon_socket: socket.socket | None

    async def wait(self) -> int:
        """Wait for the main process to exit; its return code (negative: signal)."""
        ...

    async def destroy(self) -> None:
        """Kill every process of the sandbox and release its resources. Idempotent."""
        ...

    def end_init(self) -> None:
        """INIT is over: apply the steady-state CPU share (see init_cpu_boost)."""
        ...

    def usage(self) -> ResourceUsage:
        """Peak memory and CPU time as the kernel accounts them (None if unknown)."""
        ...

    def oom_killed(self) -> bool:
        """True when the memory limit killed a process of this sandbox."""
        ...

    async def connect(self, port: int) -> socket.socket:
        """A connected socket to 127.0.0.1:`port` as seen from inside the sandbox
        (where an extension's Telemetry API listener is)."""
        ...


class SandboxBackend(Protocol):
    name: str
    # Whether SandboxSpec.root_image is honoured (a runtime image as `/`).
    mounts_images: bool

    async def launch(self, spec: SandboxSpec, output_fd: int) -> Sandbox:
        """Start the sandbox. Its stdout and stderr both go to output_fd (the write
        end of a pipe the environment owns and reads, so it can drain everything
        the runtime wrote before it answered an invocation)."""
        ...

    def enforced(self) -> list[str]:
        """What this backend enforces, for the start-up message."""
        ...

    async def reap_leftovers(self) -> None:
        """Remove what sandboxes of a crashed earlier server left behind."""
        ...

    async def close(self) -> None:
        """Release what the backend holds for all its sandboxes (server stopping)."""
        ...
