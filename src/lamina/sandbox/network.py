"""A sandbox's network: its Runtime API listener, the way to Lamina's API, and
(optionally) a way out.

Every sandbox has its own network namespace. These are put into it from the
host, all while the sandbox waits on bubblewrap's block fd:

- The Runtime API listener. A short-lived thread `setns()`es into
  `/proc/<pid>/ns/net`, binds 127.0.0.1:9001 there, listens and switches back.
  `setns` changes only the calling thread's namespace, hence the dedicated
  thread; the socket stays in the namespace it was created in and its fd is the
  server's, served with asyncio like any socket. Inside, 127.0.0.1 is the
  sandbox's own loopback: the control plane on the host's 127.0.0.1, other
  environments' listeners and every other host port simply do not exist there.
  About 0.5 ms (bench/sandbox.py).
- A second listener on Lamina's own port, joined to the API on the host's
  loopback (ApiForwarder): the one host service a function can reach.
- A UDP socket on 127.0.0.1:2000, the X-Ray daemon's address: the server reads
  the segments the function's X-Ray SDK sends (it answers nothing).
- The egress routes (egress.py), before anything else runs inside.
- Outbound access (`SandboxSpec.network`, on by default like Lambda's), through
  slirp4netns: a user-mode TCP/IP stack outside the sandbox that owns a tap
  device inside it and turns the sandbox's connections into ordinary sockets of
  its own. It runs with `--disable-host-loopback` (10.0.2.2, its alias for the
  host's 127.0.0.1, is refused: the control plane stays out of reach), with its
  own sandbox and seccomp filter (it parses untrusted packets), and exits when
  the server closes its exit fd or dies. DNS goes to its forwarder at 10.0.2.3.
  No host firewall rules or routes are touched, unlike a veth pair with NAT;
  the routes that keep the host's and private addresses out live in the
  sandbox's namespace.
  Without slirp4netns installed, or with `network=False`, the sandbox has
  loopback only.

The alternatives for the Runtime API were worse: a Unix socket bind-mounted
into the sandbox needs a forwarder process inside (runtime clients speak TCP),
and a veth pair makes the host reachable unless firewall rules keep it out.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import os
import socket
import struct
import subprocess
import threading
import time
from typing import Callable, TypeVar

from lamina.sandbox.children import Child
from lamina.sandbox.egress import EgressRules

RUNTIME_API_HOST = "127.0.0.1"
RUNTIME_API_PORT = 9001
# The X-Ray daemon's port (AWS_XRAY_DAEMON_ADDRESS): a UDP socket of the server's,
# bound on the sandbox's own loopback like the Runtime API.
XRAY_DAEMON_PORT = 2000
SLIRP_DNS = "10.0.2.3"
SLIRP_OPTIONS = ("--configure", "--mtu=65520", "--disable-host-loopback",
                 "--enable-sandbox", "--enable-seccomp")
# bubblewrap configures `lo` in the sandbox concurrently with our setup; slirp4netns
# configuring its interface at the same moment makes bubblewrap's netlink call fail.
LOOPBACK_WAIT_S = 2.0

_CLONE_NEWNET = 0x40000000
_IP_FREEBIND = 15
_SIOCGIFFLAGS = 0x8913
_IFF_UP = 0x1

T = TypeVar("T")


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


def _loopback_is_up() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(probe, _SIOCGIFFLAGS, request))[1]
    return bool(flags & _IFF_UP)


def _bind(host: str, port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # bubblewrap may not have configured 127.0.0.1 on `lo` yet; FREEBIND
        # lets the bind succeed regardless.
        listener.setsockopt(socket.SOL_IP, _IP_FREEBIND, 1)
        listener.bind((host, port))
        listener.listen(64)
    except BaseException:
        listener.close()
        raise
    return listener


def _bind_datagram(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_IP, _IP_FREEBIND, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _set_up_netns(pid: int, ports: tuple[int, ...], wait_for_loopback: bool,
                  egress: EgressRules | None,
                  datagram_ports: tuple[int, ...] = ()) -> list[socket.socket]:
    """Runs on a dedicated thread: listeners bound inside `pid`'s network namespace
    on 127.0.0.1:`ports` (then UDP sockets on `datagram_ports`), after adding the
    egress routes there."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    listeners: list[socket.socket] = []
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, _CLONE_NEWNET)
        finally:
            os.close(target)
        try:
            if wait_for_loopback:
                deadline = time.monotonic() + LOOPBACK_WAIT_S
                while not _loopback_is_up():
                    if time.monotonic() > deadline:
                        raise OSError("the sandbox's loopback interface did not come up")
                    time.sleep(0.0002)
            if egress is not None:
                egress.apply_here()
            for port in ports:
                listeners.append(_bind(RUNTIME_API_HOST, port))
            for port in datagram_ports:
                listeners.append(_bind_datagram(RUNTIME_API_HOST, port))
        except BaseException:
            for listener in listeners:
                listener.close()
            raise
        finally:
            # If switching back failed this thread would be left in the sandbox's
            # namespace; it ends right after, so nothing else runs there.
            _setns(own, _CLONE_NEWNET)
        return listeners
    finally:
        os.close(own)


async def listen_inside(pid: int, ports: tuple[int, ...] = (RUNTIME_API_PORT,),
                        wait_for_loopback: bool = False,
                        egress: EgressRules | None = None,
                        datagram_ports: tuple[int, ...] = ()) -> list[socket.socket]:
    """Listeners on 127.0.0.1:`ports` in `pid`'s network namespace (the Runtime API's
    first), then UDP sockets on `datagram_ports`, with the egress routes added there
    first."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[list[socket.socket]] = loop.create_future()

    def deliver(listeners: list[socket.socket] | None, error: BaseException | None) -> None:
        if done.cancelled():
            for listener in listeners or ():
                listener.close()
        elif error is not None:
            done.set_exception(error)
        else:
            done.set_result(listeners or [])

    def run() -> None:
        try:
            listeners = _set_up_netns(pid, ports, wait_for_loopback, egress, datagram_ports)
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(deliver, None, error)
        else:
            loop.call_soon_threadsafe(deliver, listeners, None)

    threading.Thread(target=run, name=f"lamina-netns-{pid}", daemon=True).start()
    listeners = await done
    for listener in listeners:
        listener.setblocking(False)
    return listeners


def _socket_in_netns(pid: int) -> socket.socket:
    """Runs on a dedicated thread: a TCP socket created in `pid`'s network namespace
    (a socket keeps the namespace it was made in, whoever uses it afterwards)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, _CLONE_NEWNET)
        finally:
            os.close(target)
        try:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            _setns(own, _CLONE_NEWNET)
    finally:
        os.close(own)


async def connect_inside(pid: int, port: int) -> socket.socket:
    """A connection to 127.0.0.1:`port` in `pid`'s network namespace: how the
    platform reaches a listener of the sandbox (a Telemetry API subscriber)."""
    loop = asyncio.get_running_loop()
    made: asyncio.Future[socket.socket] = loop.create_future()

    def run() -> None:
        try:
            sock = _socket_in_netns(pid)
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(made.set_exception, error)
        else:
            loop.call_soon_threadsafe(made.set_result, sock)

    threading.Thread(target=run, name=f"lamina-netns-connect-{pid}", daemon=True).start()
    sock = await made
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (RUNTIME_API_HOST, port))
    except BaseException:
        sock.close()
        raise
    return sock


class ApiForwarder:
    """Lamina's own API inside a sandbox: a listener in its namespace whose
    connections are joined to the API's listener on the host's loopback.

    This is the one host port a function can reach (the rest of the host's
    loopback does not exist in its namespace), and it leads only to the API,
    where requests are authenticated like anyone's, with the credentials of the
    function's execution role.
    """

    def __init__(self, listener: socket.socket, target: tuple[str, int]) -> None:
        self._listener = listener
        self._target = target
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._join, sock=self._listener)

    async def _join(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            api_reader, api_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, api_writer), pipe(api_reader, writer))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._listener.close()


async def read_pipe(fd: int, parse: Callable[[bytes], T | None]) -> T | None:
    """Read a pipe until `parse` accepts what arrived; None at end of file."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    data = b""
    while True:
        readable: asyncio.Future[None] = loop.create_future()

        def wake(future: asyncio.Future[None] = readable) -> None:
            if not future.done():  # the loop may call a reader more than once
                future.set_result(None)

        loop.add_reader(fd, wake)
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
        parsed = parse(data)
        if parsed is not None:
            return parsed


class Outbound:
    """A running slirp4netns giving one sandbox its way out."""

    def __init__(self, process: Child, exit_fd: int) -> None:
        self.process = process
        self._exit_fd = exit_fd

    @classmethod
    async def start(cls, slirp4netns: str, pid: int) -> Outbound:
        ready_read, ready_write = os.pipe()
        exit_read, exit_write = os.pipe()
        try:
            process = Child.start(
                [slirp4netns, *SLIRP_OPTIONS, "--ready-fd", str(ready_write),
                 "--exit-fd", str(exit_read), "--netns-type=path", f"/proc/{pid}/ns/net", "tap0"],
                pass_fds=(ready_write, exit_read), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        except BaseException:
            os.close(exit_write)
            os.close(ready_read)
            raise
        finally:
            os.close(ready_write)
            os.close(exit_read)
        outbound = cls(process, exit_write)
        try:
            ready = await read_pipe(ready_read, lambda data: data or None)
        except BaseException:
            await outbound.stop()
            raise
        finally:
            os.close(ready_read)
        if ready is None:
            await outbound.stop()
            raise OSError(f"slirp4netns exited with code {process.returncode} before "
                          "configuring the sandbox's network")
        return outbound

    async def stop(self) -> None:
        if self._exit_fd >= 0:
            os.close(self._exit_fd)  # slirp4netns exits when this closes
            self._exit_fd = -1
        try:
            await asyncio.wait_for(asyncio.shield(self.process.wait()), 2.0)
        except asyncio.TimeoutError:
            try:
                os.kill(self.process.pid, 9)
            except ProcessLookupError:
                pass  # it exited meanwhile (a thousand sandboxes stopping at once)
            await self.process.wait()
