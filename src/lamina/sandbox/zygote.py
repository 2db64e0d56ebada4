"""SnapStart on the namespaces backend: a template sandbox whose initialized runtime
forks new environments, each as isolated as one bubblewrap starts.

CRIU cannot checkpoint processes on this kernel, so a SnapStart "snapshot" is a
live process: the version's runtime, initialized once in a template sandbox
(the namespaces backend's usual sandbox, with two differences: it may create
user namespaces, and its /proc is unmasked), waiting as a zygote. How a fork
confines itself is told in the runtime client's lamina_zygote.py; this side
does the part only the host can:

- the environment's cgroup (memory limit = MemorySize, CPU share, process
  count), created here; the fork enters it itself through `tasks`/`cgroup.procs`
  descriptors opened here (a process moving itself is 10-15 ms cheaper than being
  moved, see cgroups.py), or is moved if that is refused;
- its Runtime API listener, bound inside its new network namespace, as for any
  sandbox (network.py), with the egress routes, slirp4netns for outbound access
  and the way to Lamina's API;
- its end: the fork's PID 1 is killed through a pidfd, which takes its PID
  namespace down with it, and the cgroup is emptied and removed. How it ended
  (its exit status) only its parent can learn, which is the template: the
  template reports each end on the control socket.

What a restored environment does not share with a cold one: its host uid (every
fork of a template runs as the template's, under user namespaces of its own; its
siblings are out of reach because nothing of theirs is in its namespaces, not
because the uid differs) and a disk-backed /tmp (its /tmp is a tmpfs, counted as
memory). Pages of the template are shared copy-on-write and stay charged to the
template's cgroup; what a fork writes is charged to its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import socket
import struct
import time
import uuid
from typing import Any

from lamina.sandbox import seccomp
from lamina.sandbox.base import (
    ResourceUsage,
    SandboxError,
    SandboxSpec,
    add_daemon_variables,
)
from lamina.sandbox.cgroups import CgroupUnavailable, EnvironmentCgroup, cgroup_name
from lamina.sandbox.namespaces import (
    CgroupBackedSandbox,
    NamespaceBackend,
    NamespaceSandbox,
    _hostname,
    cgroup_limits,
    inside_api_port,
)
from lamina.sandbox.network import (
    RUNTIME_API_HOST,
    RUNTIME_API_PORT,
    XRAY_DAEMON_PORT,
    ApiForwarder,
    Outbound,
    listen_inside,
)
from lamina.sandbox.rootfs import proc_masks_needed

log = logging.getLogger("lamina.sandbox")

# How long a fork may take to confine itself and answer.
RESTORE_TIMEOUT_S = 10.0
# Forks kept ready per template, so that a cold start only activates one: making the
# namespaces (a network namespace alone takes 1-30 ms here, more under load), the
# cgroup and the Runtime API listener is then off the cold start's path. Each is a
# copy-on-write fork of the template, a few hundred KB of its own.
SPARES = 2
_UCRED = struct.Struct("iII")


class ZygoteUnavailable(SandboxError):
    """This backend cannot keep templates (no kernel isolation, no seccomp)."""


async def _receive(sock: socket.socket, size: int = 64) -> tuple[bytes, int | None]:
    """One message from a non-blocking SOCK_SEQPACKET socket, with its sender's PID
    (SO_PASSCRED: the kernel attaches it, translated into this PID namespace)."""
    loop = asyncio.get_running_loop()
    # The number, kept: destroy() may close the socket while a wait() is parked here.
    fd = sock.fileno()
    while True:
        try:
            data, ancillary, _, _ = sock.recvmsg(size, socket.CMSG_SPACE(_UCRED.size))
        except BlockingIOError:
            readable: asyncio.Future[None] = loop.create_future()

            def wake(future: asyncio.Future[None] = readable) -> None:
                if not future.done():
                    future.set_result(None)

            loop.add_reader(fd, wake)
            try:
                await readable
            finally:
                loop.remove_reader(fd)
            continue
        pid = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = _UCRED.unpack(payload[:_UCRED.size])[0]
        return data, pid


async def _exit_status(exited: asyncio.Future[int], pidfd: int) -> int:
    """How a fork ended, as the template reports it; if the process is gone (its
    pidfd readable) and no report came within a second (the template itself ended,
    say), it was killed."""
    if not exited.done() and pidfd >= 0:
        loop = asyncio.get_running_loop()
        gone: asyncio.Future[int] = loop.create_future()

        def ended() -> None:
            if not gone.done():
                gone.set_result(0)

        loop.add_reader(pidfd, ended)
        try:
            await asyncio.wait({exited, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            loop.remove_reader(pidfd)
            gone.cancel()
        if not exited.done():
            try:
                await asyncio.wait_for(asyncio.shield(exited), 1.0)
            except asyncio.TimeoutError:
                pass
    return exited.result() if exited.done() else -signal.SIGKILL


class RestoredSandbox(CgroupBackedSandbox):
    """One environment forked from a template: the Sandbox interface of base.py."""

    def __init__(self, spec: SandboxSpec, pid: int, pidfd: int, exited: asyncio.Future[int],
                 cgroup: EnvironmentCgroup, listener: socket.socket, channel: socket.socket,
                 outbound: Outbound | None, api: ApiForwarder | None, requested_at: float,
                 resumed_at: float, trace_daemon: socket.socket | None = None) -> None:
        self.spec = spec
        # The host PID of the environment's PID 1 (the runtime).
        self.pid = pid
        self._exited = exited
        self.runtime_api_socket = listener
        self.runtime_api_address = f"{RUNTIME_API_HOST}:{RUNTIME_API_PORT}"
        # The X-Ray daemon address inside (observe/tracing.py reads its datagrams).
        self.trace_daemon_socket = trace_daemon
        # perf_counter times: the fork was asked for, and the fork ran again confined.
        self.requested_at = requested_at
        self.resumed_at = resumed_at
        self._pidfd = pidfd
        self._cgroup = cgroup
        self._channel = channel
        self._outbound = outbound
        self._api = api
        self._exit_code: int | None = None
        self._final_usage: ResourceUsage | None = None
        self._final_oom_kills: int | None = None
        self._destroyed = False

    async def wait(self) -> int:
        if self._exit_code is None:
            self._exit_code = await _exit_status(self._exited, self._pidfd)
        return self._exit_code

    async def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        if self._pidfd >= 0:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._cgroup.kill_all()
        if self._outbound is not None:
            await self._outbound.stop()
        if self._api is not None:
            await self._api.stop()
        self._final_usage = self._cgroup.usage()
        self._final_oom_kills = self._cgroup.oom_kills()
        await self._cgroup.remove()
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        self._channel.close()
        self.runtime_api_socket.close()
        if self.trace_daemon_socket is not None:
            self.trace_daemon_socket.close()


class ZygoteTemplate:
    """A template sandbox (its runtime a zygote), and how to fork environments from it."""

    def __init__(self, backend: NamespaceBackend) -> None:
        self._backend = backend
        self._control: socket.socket | None = None
        self.sandbox: NamespaceSandbox | None = None
        # The template's own spec: what its spares are made to (the version's limits).
        self._spec: SandboxSpec | None = None
        self._spares: list[_Spare] = []
        self._spare_target = 0
        self._refilling: asyncio.Task[None] | None = None
        self._masked_files, self._masked_dirs = proc_masks_needed()
        # Forks' ends as the template reports them, by its PID for each; ends reported
        # before the fork's hello was read wait in _early (a few at most).
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._early: dict[int, int] = {}
        self._reading: asyncio.Task[None] | None = None

    # -- the template's own launch (the ExecutionEnvironment of its INIT calls this) --

    name = "namespaces"
    mounts_images = True

    async def launch(self, spec: SandboxSpec, output_fd: int) -> NamespaceSandbox:
        if not self._backend.seccomp_enabled:
            raise ZygoteUnavailable("SnapStart needs the seccomp filter, which this machine "
                                    "cannot build")
        control, inside = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        filter_fd = seccomp.filter_fd()
        try:
            env = {**spec.env, "_LAMINA_ZYGOTE_FD": str(inside.fileno()),
                   "_LAMINA_SECCOMP_FD": str(filter_fd)}
            spec = dataclasses.replace(spec, env=env, inherited_fds=(
                *spec.inherited_fds, inside.fileno(), filter_fd))
            self.sandbox = await self._backend.launch(spec, output_fd, template=True)
        except BaseException:
            control.close()
            raise
        finally:
            inside.close()
            os.close(filter_fd)
        control.setblocking(False)
        self._control = control
        self._spec = spec
        self._reading = asyncio.get_running_loop().create_task(self._read_exits(control))
        return self.sandbox

    async def _read_exits(self, control: socket.socket) -> None:
        """`exit PID STATUS` from the template, for each fork's PID 1 that ended."""
        while True:
            try:
                message, _ = await _receive(control)
            except OSError:
                return
            if not message:
                return  # the template has ended
            parts = message.split()
            if len(parts) != 3 or parts[0] != b"exit":
                continue
            pid, code = int(parts[1]), int(parts[2])
            exited = self._exits.pop(pid, None)
            if exited is None:
                while len(self._early) >= 64:
                    self._early.pop(next(iter(self._early)))
                self._early[pid] = code
            elif not exited.done():
                exited.set_result(code)

    def _exit_of(self, template_pid: int) -> asyncio.Future[int]:
        exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        code = self._early.pop(template_pid, None)
        if code is not None:
            exited.set_result(code)
        else:
            self._exits[template_pid] = exited
        return exited

    def enforced(self) -> list[str]:
        return self._backend.enforced()

    async def reap_leftovers(self) -> None:
        pass

    async def close(self) -> None:
        pass

    # -- forks ------------------------------------------------------------------------

    def keep_spares(self, count: int = SPARES) -> None:
        """Keep `count` forks ready (namespaces made, cgroup joined, Runtime API
        listening, /proc and /tmp mounted), waiting to be activated by a cold start."""
        self._spare_target = count
        self._refill()

    def _refill(self) -> None:
        if self._refilling is not None or self._spec is None or self._control is None:
            return
        if len(self._spares) >= self._spare_target:
            return

        async def refill() -> None:
            try:
                while self._control is not None and len(self._spares) < self._spare_target:
                    assert self._spec is not None
                    spare = await self._spawn(dataclasses.replace(
                        self._spec, environment_id=uuid.uuid4().hex))
                    if self._control is None:
                        await spare.discard()
                        return
                    self._spares.append(spare)
            except (OSError, asyncio.TimeoutError) as error:
                log.warning("SnapStart: could not keep a spare fork: %s", error)
            finally:
                self._refilling = None

        self._refilling = asyncio.get_running_loop().create_task(refill())

    async def fork(self, spec: SandboxSpec, output_fd: int) -> RestoredSandbox:
        """A new environment from the template, confined and with its Runtime API
        listening, its runtime running the after-restore hooks."""
        if self._control is None or self.sandbox is None:
            raise SandboxError("the SnapStart template is not running")
        requested_at = time.perf_counter()
        spare = None
        while self._spares and spare is None:
            candidate = self._spares.pop(0)
            if candidate.fits(spec) and candidate.alive():
                spare = candidate
            else:
                await candidate.discard()
        self._refill()
        if spare is not None:
            try:
                return await self._activate(spare, spec, output_fd, requested_at)
            except (OSError, asyncio.TimeoutError) as error:
                # A spare that died waiting (or was killed): a fresh fork instead.
                log.warning("SnapStart: a spare fork could not be activated: %s", error)
                await spare.discard()
            except BaseException:
                await spare.discard()
                raise
        spare = await self._spawn(spec)
        try:
            return await self._activate(spare, spec, output_fd, requested_at)
        except BaseException:
            await spare.discard()
            raise

    async def _spawn(self, spec: SandboxSpec) -> _Spare:
        """A fork of the template in namespaces, a cgroup and a network of its own,
        waiting for its activation."""
        assert self._control is not None
        try:
            # Off the event loop: a cgroup is a directory per controller on v1, a few
            # milliseconds, which a burst of forks would otherwise queue behind.
            cgroup = await asyncio.to_thread(self._backend.cgroups.create,
                                             cgroup_name(spec.environment_id), cgroup_limits(spec))
        except (OSError, CgroupUnavailable) as error:
            raise SandboxError(f"cannot create the cgroup for {spec.environment_id}: {error}") from error
        channel, inside = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        channel.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        channel.setblocking(False)
        spare = _Spare(spec, cgroup, channel)
        entries: list[int] = []
        try:
            for path in cgroup.entry_files():
                entries.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
            request = {
                "hostname": _hostname(spec.environment_id),
                "tmp_bytes": spec.ephemeral_storage_mb * 1024 * 1024,
                "masked_files": self._masked_files, "masked_dirs": self._masked_dirs,
            }
            fds = [inside.fileno(), *entries]
            self._control.sendmsg([json.dumps(request).encode()], [
                (socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])
            inside.close()
            hello, pid = await asyncio.wait_for(_receive(channel), RESTORE_TIMEOUT_S)
            parts = hello.split()
            if not parts or parts[0] != b"hello" or not parts[-1].isdigit() or pid is None:
                raise SandboxError("the SnapStart template could not fork an environment "
                                   "(its message is in the function's output)")
            spare.pidfd = os.pidfd_open(pid)
            spare.pid = pid
            spare.exited = self._exit_of(int(parts[-1]))
            if b"moved" not in parts:
                cgroup.add(pid)
            network = spec.network and self._backend.outbound_available
            api_port = inside_api_port(spec)
            ports = (RUNTIME_API_PORT,) if api_port is None else (RUNTIME_API_PORT, api_port)
            spare.listeners = await listen_inside(
                pid, ports, egress=self._backend.egress if network else None,
                datagram_ports=(XRAY_DAEMON_PORT,))
            if network:
                spare.outbound = await Outbound.start(self._backend.slirp4netns, pid)
            if api_port is not None and spec.api_port is not None:
                spare.api = ApiForwarder(spare.listeners[1], (RUNTIME_API_HOST, spec.api_port))
                await spare.api.start()
        except BaseException:
            inside.close()
            for fd in entries:
                os.close(fd)
            await spare.discard()
            raise
        for fd in entries:
            os.close(fd)
        return spare

    async def _activate(self, spare: _Spare, spec: SandboxSpec, output_fd: int,
                        requested_at: float) -> RestoredSandbox:
        env = dict(spec.env)
        env["AWS_LAMBDA_RUNTIME_API"] = f"{RUNTIME_API_HOST}:{RUNTIME_API_PORT}"
        api_port = inside_api_port(spec)
        if api_port is not None:
            env["AWS_ENDPOINT_URL"] = f"http://{RUNTIME_API_HOST}:{api_port}"
        add_daemon_variables(env, RUNTIME_API_HOST, XRAY_DAEMON_PORT)
        frames_fd = spec.inherited_fds[0] if spec.inherited_fds else output_fd
        fds = [output_fd, frames_fd]
        spare.channel.sendmsg([json.dumps({"env": env}).encode()], [
            (socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("2i", *fds))])
        resumed, _ = await asyncio.wait_for(_receive(spare.channel), RESTORE_TIMEOUT_S)
        if resumed != b"resumed":
            raise SandboxError("the restored environment failed to confine itself "
                               "(its message is in the function's output)")
        assert spare.pid is not None and spare.exited is not None
        return RestoredSandbox(spec, spare.pid, spare.pidfd, spare.exited, spare.cgroup,
                               spare.listeners[0],
                               spare.channel, spare.outbound, spare.api, requested_at,
                               time.perf_counter(), trace_daemon=spare.listeners[-1])

    async def destroy(self) -> None:
        """Stop forking (the template's zygote exits) and discard the spares."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._reading is not None:
            self._reading.cancel()
            self._reading = None
        if self._refilling is not None:
            self._refilling.cancel()
        spares, self._spares = self._spares, []
        await asyncio.gather(*(spare.discard() for spare in spares), return_exceptions=True)


class _Spare:
    """A fork waiting for its activation, and what the host made for it."""

    def __init__(self, spec: SandboxSpec, cgroup: EnvironmentCgroup,
                 channel: socket.socket) -> None:
        self.spec = spec
        self.cgroup = cgroup
        self.channel = channel
        self.pid: int | None = None
        self.pidfd = -1
        self.exited: asyncio.Future[int] | None = None
        self.listeners: list[socket.socket] = []
        self.outbound: Outbound | None = None
        self.api: ApiForwarder | None = None

    def fits(self, spec: SandboxSpec) -> bool:
        mine = self.spec
        return (mine.memory_mb, mine.ephemeral_storage_mb, mine.network, mine.api_port,
                mine.max_processes) == (spec.memory_mb, spec.ephemeral_storage_mb, spec.network,
                                        spec.api_port, spec.max_processes)

    def alive(self) -> bool:
        if self.pidfd < 0:
            return False
        try:
            signal.pidfd_send_signal(self.pidfd, 0)
        except ProcessLookupError:
            return False
        return True

    async def discard(self) -> None:
        if self.pidfd >= 0:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.close(self.pidfd)
            self.pidfd = -1
        self.cgroup.kill_all()
        if self.api is not None:
            await self.api.stop()
        if self.outbound is not None:
            await self.outbound.stop()
        for listener in self.listeners:
            listener.close()
        self.channel.close()
        await self.cgroup.remove()


class RestoringBackend:
    """The SandboxBackend an environment restored from a template starts through."""

    name = "namespaces"
    mounts_images = True

    def __init__(self, template: ZygoteTemplate) -> None:
        self.template = template

    async def launch(self, spec: SandboxSpec, output_fd: int) -> RestoredSandbox:
        return await self.template.fork(spec, output_fd)

    def enforced(self) -> list[str]:
        return self.template.enforced()

    async def reap_leftovers(self) -> None:
        pass

    async def close(self) -> None:
        pass


def supports_templates(backend: Any) -> bool:
    return isinstance(backend, NamespaceBackend) and backend.seccomp_enabled


__all__ = ["RestoredSandbox", "RestoringBackend", "ZygoteTemplate", "ZygoteUnavailable",
           "supports_templates"]
