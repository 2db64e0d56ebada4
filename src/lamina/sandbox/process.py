"""The plain-process backend: no kernel isolation, for machines that allow none.

The process runs as the server's user in its own session (so the whole tree can be
killed at once), with the inside paths (`/var/task`, `/opt`, `/var/runtime`, `/tmp`)
rewritten to the host directories behind them. It enforces the open-files limit
and the timeout, nothing else; the start-up warning says so.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket

from lamina.sandbox.base import (
    ResourceUsage,
    SandboxError,
    SandboxSpec,
    add_daemon_variables,
)


def _path_map(spec: SandboxSpec) -> list[tuple[str, str]]:
    pairs = [("/var/task", spec.task_root)] if spec.task_root is not None else []
    if spec.runtime_root is not None:
        pairs.append(("/var/runtime", spec.runtime_root))
    if spec.layers_root is not None:
        pairs.append(("/opt", spec.layers_root))
    if spec.scratch_root is not None:
        pairs.append(("/tmp", spec.scratch_root))
    return [(inside, str(host)) for inside, host in pairs]


def _to_host(value: str, mapping: list[tuple[str, str]]) -> str:
    """Rewrite inside paths in a value (also inside PATH-like lists) to host paths."""
    parts = value.split(":")
    for index, part in enumerate(parts):
        for inside, host in mapping:
            if part == inside or part.startswith(inside + "/"):
                parts[index] = host + part[len(inside):]
                break
    return ":".join(parts)


class ProcessSandbox:
    def __init__(self, spec: SandboxSpec, process: asyncio.subprocess.Process,
                 listener: socket.socket, address: str,
                 trace_daemon: socket.socket | None = None) -> None:
        self.spec = spec
        self.trace_daemon_socket = trace_daemon
        self.process = process
        self.pid = process.pid
        self.runtime_api_socket = listener
        self.runtime_api_address = address
        self._peak_rss = 0

    async def wait(self) -> int:
        return await self.process.wait()

    def _sample_rss(self) -> None:
        # VmHWM is the kernel's peak resident set of the main process. Read with
        # raw os calls: this runs for every REPORT line.
        try:
            fd = os.open(f"/proc/{self.pid}/status", os.O_RDONLY)
            try:
                status = os.read(fd, 4096)
            finally:
                os.close(fd)
            start = status.index(b"VmHWM:") + 6
            kilobytes = int(status[start:status.index(b"kB", start)])
            self._peak_rss = max(self._peak_rss, kilobytes * 1024)
        except (OSError, ValueError):
            pass

    def usage(self) -> ResourceUsage:
        self._sample_rss()
        return ResourceUsage(max_memory_bytes=self._peak_rss or None)

    def end_init(self) -> None:
        return None  # no CPU share to apply

    def oom_killed(self) -> bool:
        return False

    async def connect(self, port: int) -> socket.socket:
        # The process shares the host's loopback: the listener is right there.
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        return sock

    async def destroy(self) -> None:
        if self.process.returncode is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await self.process.wait()
        else:
            # The main process is gone; children it left in the group may not be.
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.runtime_api_socket.close()
        if self.trace_daemon_socket is not None:
            self.trace_daemon_socket.close()


class ProcessBackend:
    name = "process"
    # A plain process cannot have a runtime image as its `/`: functions run on the
    # host's interpreters here (the host-interpreter mode).
    mounts_images = False

    def enforced(self) -> list[str]:
        return ["timeout", "open files"]

    async def reap_leftovers(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def launch(self, spec: SandboxSpec, output_fd: int) -> ProcessSandbox:
        if spec.file_systems:
            raise SandboxError("FileSystemConfigs need the namespaces sandbox (a plain process "
                               "cannot have a file system mounted at /mnt)")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        address = "127.0.0.1:%d" % listener.getsockname()[1]
        # The X-Ray daemon address: a port of its own on the host's loopback.
        daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        daemon.bind(("127.0.0.1", 0))
        daemon.setblocking(False)
        mapping = _path_map(spec)
        env = {key: _to_host(value, mapping) for key, value in spec.env.items()}
        env["AWS_LAMBDA_RUNTIME_API"] = address
        add_daemon_variables(env, "127.0.0.1", daemon.getsockname()[1])
        if spec.api_port is not None:
            # The host's loopback is the process's own: the API is right there.
            env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{spec.api_port}"
        argv = [_to_host(arg, mapping) for arg in spec.argv]
        if spec.scratch_root is not None:
            spec.scratch_root.mkdir(parents=True, exist_ok=True)

        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=str(spec.task_root or spec.scratch_root or "/"),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output_fd,
                stderr=output_fd,
                start_new_session=True,
                pass_fds=spec.inherited_fds,
            )
        except BaseException:
            # No sandbox will own them (a missing interpreter, a bad working directory).
            listener.close()
            daemon.close()
            raise
        # Set after the spawn rather than in a preexec_fn: a preexec_fn forces a
        # full fork() instead of vfork(), which costs milliseconds per cold start.
        limit = (spec.max_open_files, spec.max_open_files)
        try:
            resource.prlimit(process.pid, resource.RLIMIT_NOFILE, limit)
        except ProcessLookupError:
            pass  # it already exited (and was reaped): nothing left to limit
        return ProcessSandbox(spec, process, listener, address, daemon)
