"""The namespaces backend, driven directly: real bubblewrap, real cgroups, hostile code.

Every check runs a small program inside a real sandbox and asserts what the
kernel lets it do. The server is not involved: the Runtime API listener is
proven served by accepting, on the host, the connection the inside makes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lamina.sandbox import SandboxError, choose_backend
from lamina.sandbox.base import SandboxSpec
from lamina.sandbox.cgroups import CgroupLimits, CgroupTree, server_id
from lamina.sandbox.namespaces import (
    NamespaceBackend,
    NamespaceSandbox,
    probe,
)
from lamina.sandbox.process import ProcessBackend
from tests.conftest import ROLE, Server

UNAVAILABLE = probe()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"no kernel isolation: {UNAVAILABLE}")

PYTHON = "/usr/bin/python3"


@dataclass
class Run:
    output: str
    code: int
    sandbox: NamespaceSandbox


def make_spec(roots: dict[str, Path], argv: list[str], **overrides: Any) -> SandboxSpec:
    values: dict[str, Any] = dict(
        environment_id=f"env-{uuid.uuid4().hex[:12]}",
        argv=argv,
        env={"PATH": "/usr/bin:/bin", "LAMBDA_TASK_ROOT": "/var/task"},
        task_root=roots["task"],
        runtime_root=roots["runtime"],
        memory_mb=1769,
    )
    values.update(overrides)
    return SandboxSpec(**values)


def python(code: str) -> list[str]:
    return [PYTHON, "-c", textwrap.dedent(code)]


async def start(backend: NamespaceBackend, spec: SandboxSpec) -> tuple[NamespaceSandbox, asyncio.StreamReader]:
    """Launch as an environment does: output into a pipe whose read end we keep."""
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


async def run(backend: NamespaceBackend, spec: SandboxSpec, timeout: float = 30) -> Run:
    sandbox, output_pipe = await start(backend, spec)
    try:
        output = await asyncio.wait_for(output_pipe.read(), timeout)
        code = await asyncio.wait_for(sandbox.wait(), timeout)
    finally:
        await sandbox.destroy()
    return Run(output.decode(errors="replace"), code, sandbox)


def run_python(backend: NamespaceBackend, roots: dict[str, Path], code: str, **overrides: Any) -> Run:
    return asyncio.run(run(backend, make_spec(roots, python(code), **overrides)))


def test_runtime_api_socket_receives_the_connection_the_inside_makes_to_its_address(
        backend: NamespaceBackend, roots: dict[str, Path]) -> None:
    code = """
        import os, socket
        host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(b"GET /2018-06-01/runtime/invocation/next")
            print("reply:", conn.recv(100).decode())
    """

    async def scenario() -> tuple[str, bytes, str]:
        sandbox, output_pipe = await start(backend, make_spec(roots, python(code)))
        loop = asyncio.get_running_loop()
        try:
            conn, _ = await asyncio.wait_for(loop.sock_accept(sandbox.runtime_api_socket), 10)
            request = await loop.sock_recv(conn, 100)
            await loop.sock_sendall(conn, b"served by the host")
            conn.close()
            output = (await output_pipe.read()).decode()
        finally:
            await sandbox.destroy()
        return sandbox.runtime_api_address, request, output

    address, request, output = asyncio.run(scenario())
    assert address == "127.0.0.1:9001"
    assert request == b"GET /2018-06-01/runtime/invocation/next"
    assert "reply: served by the host" in output


def test_environment_variables_reach_the_command_with_the_runtime_api_address(
        backend: NamespaceBackend, roots: dict[str, Path]) -> None:
    result = run_python(backend, roots, """
        import os, socket
        print(os.environ["AWS_LAMBDA_RUNTIME_API"], os.environ["LAMBDA_TASK_ROOT"], os.getcwd())
        print(socket.gethostname())
    """)
    lines = result.output.split("\n")
    assert lines[0] == "127.0.0.1:9001 /var/task /var/task"
    assert lines[1].startswith("169.254.")


def test_code_is_read_only_and_only_tmp_is_writable(backend: NamespaceBackend, roots: dict[str, Path]) -> None:
    result = run_python(backend, roots, """
        import errno
        print(open("/var/task/handler.py").read().splitlines()[0])
        for path in ("/var/task/handler.py", "/var/task/new.py", "/var/runtime/x", "/etc/passwd",
                     "/usr/evil", "/evil"):
            try:
                open(path, "w").write("x")
                print(path, "WRITABLE")
            except OSError as error:
                print(path, errno.errorcode[error.errno])
        open("/tmp/scratch", "w").write("ok")
        print("tmp", open("/tmp/scratch").read())
    """)
    assert "def handler(event, context):" in result.output
    assert "WRITABLE" not in result.output
    assert "/var/task/handler.py EROFS" in result.output
    assert "tmp ok" in result.output
    assert not (roots["task"] / "new.py").exists()


def test_host_secrets_home_directories_and_other_functions_are_absent(
        backend: NamespaceBackend, roots: dict[str, Path]) -> None:
    sibling = roots["sibling"] / "secret.txt"
    result = run_python(backend, roots, f"""
        import os
        for path in ("/etc/shadow", "/etc/gshadow", "/etc/ssl/private", "/root", "/home", {str(sibling)!r},
                     {str(roots["sibling"])!r}, {str(roots["task"])!r}, "/sys/fs/cgroup", "/data"):
            print(path, "VISIBLE" if os.path.exists(path) else "absent")
    """)
    assert "VISIBLE" not in result.output, result.output
    assert result.output.count("absent") == 10


def test_system_paths_expose_only_the_interpreter_prefix_not_its_home(
        backend: NamespaceBackend, roots: dict[str, Path]) -> None:
    prefix = Path(sys.base_prefix)
    if any(not parent.stat().st_mode & 0o001 for parent in prefix.parents):
        pytest.skip(f"{prefix} lies in a directory sandbox users cannot traverse")
    interpreter = prefix / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    spec = make_spec(roots, [str(interpreter), "-c", textwrap.dedent("""
        import os, sys, json
        parents = []
        path = sys.base_prefix
        while path != "/":
            path = os.path.dirname(path)
            parents.append((path, sorted(os.listdir(path))))
        print(json.dumps({"prefix": sys.base_prefix, "parents": parents}))
    """)], system_paths=(prefix,))
    result = asyncio.run(run(backend, spec))
    assert result.code == 0, result.output
    seen = json.loads(result.output)
    assert seen["prefix"] == str(prefix)
    # Every directory above the prefix holds only the way down to it.
    for path, entries in seen["parents"][:-1]:
        below = str(prefix)[len(path):].strip("/").split("/")[0]
        assert entries == [below], (path, entries)


def test_runtimes_find_their_system_files(backend: NamespaceBackend, roots: dict[str, Path]) -> None:
    result = run_python(backend, roots, """
        import pwd, ssl, time, socket, subprocess
        print("user", pwd.getpwuid(993).pw_name)
        print("certificates", ssl.create_default_context().cert_store_stats()["x509_ca"] > 50)
        print("zone", time.tzname[0])
        print("localhost", socket.gethostbyname("localhost"))
        print(subprocess.run(["/bin/sh", "-c", "echo shell works"], capture_output=True, text=True).stdout)
    """)
    assert "user sbx_user1051" in result.output
    assert "certificates True" in result.output
    assert "zone UTC" in result.output
    assert "localhost 127.0.0.1" in result.output
    assert "shell works" in result.output


def test_only_the_sandbox_processes_are_visible(backend: NamespaceBackend, roots: dict[str, Path]) -> None:
    result = run_python(backend, roots, """
        import os
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        print(pids, os.getpid())
    """)
    pids, own = result.output.rsplit(" ", 1)
    # PID 1 is the sandbox's init, the command is PID 2: nothing of the host.
    assert pids == "[1, 2]"
    assert own.strip() == "2"


def probe_connections(addresses: list[tuple[str, int]]) -> str:
    return f"""
        import socket
        for address in {addresses!r}:
            try:
                socket.create_connection(tuple(address), timeout=2).close()
                print(address, "CONNECTED")
            except OSError as error:
                print(address, type(error).__name__, error.errno)
    """


@pytest.mark.parametrize("network", [False, True], ids=["no-network", "outbound"])
def test_host_loopback_and_other_environments_are_unreachable(
        backend: NamespaceBackend, roots: dict[str, Path], network: bool) -> None:
    host_server = socket.socket()
    host_server.bind(("127.0.0.1", 0))
    host_server.listen(1)
    port = host_server.getsockname()[1]
    # 10.0.2.2 is slirp4netns's alias for the host's loopback: disabled.
    code = probe_connections([("127.0.0.1", port), ("127.0.0.1", 9000), ("10.0.2.2", port)])

    async def scenario() -> str:
        # Another sandbox, with its own Runtime API listener, runs meanwhile.
        other, _ = await start(backend, make_spec(roots, ["/bin/sleep", "30"]))
        try:
            first = await run(backend, make_spec(roots, python(code), network=network))
        finally:
            await other.destroy()
        return first.output

    try:
        output = asyncio.run(scenario())
    finally:
        host_server.close()
    assert "CONNECTED" not in output, output
    assert f"('127.0.0.1', {port}) ConnectionRefusedError" in output


def test_without_network_only_loopback_exists_and_nothing_is_routed(
        backend: NamespaceBackend, roots: dict[str, Path]) -> None:
    code = "import socket\nprint([name for _, name in socket.if_nameindex()])\n"
    code += textwrap.dedent(probe_connections([("10.0.2.3", 53), ("192.0.2.1", 80)]))
    result = run_python(backend, roots, code, network=False)
    assert result.output.startswith("['lo']\n"), result.output
    assert result.output.count("OSError 101") == 2  # ENETUNREACH


DNS_QUERY = """
import socket, struct
query = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + bytes(1) + struct.pack(">HH", 2, 1)
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
    udp.settimeout(3)
    try:
        udp.sendto(query, (SERVER, 53))
        print("dns reply", udp.recvfrom(512)[0][:2] == bytes([0x12, 0x34]))
    except OSError as error:
        print("dns", type(error).__name__)
"""


def host_nameserver_answers() -> bool:
    servers = [line.split()[1] for line in Path("/etc/resolv.conf").read_text().splitlines()
               if line.startswith("nameserver") and len(line.split()) > 1]
    if not servers:
        return False
    check = subprocess.run([sys.executable, "-c", DNS_QUERY.replace("SERVER", repr(servers[0]))],
                           capture_output=True, text=True, timeout=10)
    return "dns reply True" in check.stdout


def test_with_network_the_sandbox_reaches_out_through_its_own_stack(
        backend: NamespaceBackend, roots: dict[str, Path]) -> None:
    if backend._slirp4netns is None:
        pytest.skip("slirp4netns is not installed")
    code = "import socket\nprint([name for _, name in socket.if_nameindex()])\n"
    code += "print(open('/etc/resolv.conf').read().strip())\n"
    code += DNS_QUERY.replace("SERVER", repr("10.0.2.3"))
    result = run_python(backend, roots, code, network=True)
    assert "['lo', 'tap0']" in result.output
    assert "nameserver 10.0.2.3" in result.output
    if host_nameserver_answers():
        # The query left the sandbox and came back through the host's resolver.
        assert "dns reply True" in result.output, result.output


def test_runs_as_unprivileged_user_without_capabilities_or_new_privileges(
        backend: NamespaceBackend, roots: dict[str, Path]) -> None:
    result = run_python(backend, roots, """
        import os, subprocess
        status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
        print("ids", os.getuid(), os.geteuid(), os.getgid())
        for key in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs"):
            print(key, status[key].strip())
        try:
            os.setuid(0)
            print("setuid WORKED")
        except OSError:  # EINVAL: root does not even exist in the user namespace
            print("setuid refused")
        # A setuid-root binary must not raise privileges (no_new_privs).
        su = subprocess.run(["/usr/bin/su", "-c", "id -u", "root"], capture_output=True,
                            stdin=subprocess.DEVNULL, text=True)
        print("su", su.returncode, su.stdout.strip() or "-")
        mount = subprocess.run(["/usr/bin/mount", "-t", "tmpfs", "x", "/mnt"], capture_output=True)
        print("mount", mount.returncode)
    """)
    out = result.output
    assert "ids 993 993 990" in out
    assert "CapEff 0000000000000000" in out
    assert "CapPrm 0000000000000000" in out
    assert "NoNewPrivs 1" in out
    assert "setuid refused" in out
    assert "su 0" not in out and "WORKED" not in out
    assert "mount 0" not in out


def test_open_files_are_limited_to_1024(backend: NamespaceBackend, roots: dict[str, Path]) -> None:
    result = run_python(backend, roots, "import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE))")
    assert result.output.strip() == "(1024, 1024)"


@pytest.mark.slow
def test_fork_bomb_is_stopped_by_the_process_limit(backend: NamespaceBackend, roots: dict[str, Path]) -> None:
    result = run_python(backend, roots, """
        import os, time
        children = 0
        try:
            while True:
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                children += 1
        except OSError as error:
            print("stopped", children, error.errno)
    """, max_processes=64)
    words = result.output.split()
    assert words[0] == "stopped", result.output
    # 64 tasks in the cgroup: bubblewrap, its init, the python parent and its children.
    assert 50 <= int(words[1]) <= 61
    assert words[2] == "11"  # EAGAIN
    # The host still forks, and the sandbox's processes are gone with it.
    assert os.fork() or os._exit(0)  # type: ignore[func-returns-value]
    os.wait()
    assert all(not d.exists() for d in result.sandbox._cgroup.dirs.values())


@pytest.mark.slow
def test_memory_hog_is_oom_killed_at_memory_size(backend: NamespaceBackend, roots: dict[str, Path]) -> None:
    result = run_python(backend, roots, """
        chunks = []
        for megabytes in range(1, 400):
            chunks.append(bytearray(1024 * 1024))
            if megabytes % 32 == 0:
                print("allocated", megabytes, flush=True)
    """, memory_mb=128)
    assert result.code == -9, result.output
    assert result.sandbox.oom_killed()
    assert "allocated 96" in result.output
    assert "allocated 160" not in result.output
    peak = result.sandbox.usage().max_memory_bytes
    assert peak is not None and 100 * 2**20 < peak <= 128 * 2**20


def test_sandbox_within_memory_is_not_reported_oom_killed(backend: NamespaceBackend,
                                                          roots: dict[str, Path]) -> None:
    result = run_python(backend, roots, "print(len(bytearray(20 * 2**20)))", memory_mb=128)
    assert result.code == 0 and not result.sandbox.oom_killed()
    usage = result.sandbox.usage()
    assert usage.max_memory_bytes is not None and usage.max_memory_bytes > 20 * 2**20
    assert usage.cpu_seconds is not None and usage.cpu_seconds > 0


def test_tmp_filler_gets_no_space_left_at_ephemeral_storage_size(
        backend: NamespaceBackend, roots: dict[str, Path]) -> None:
    result = run_python(backend, roots, """
        import errno, os
        st = os.statvfs("/tmp")
        print("size", st.f_bavail * st.f_frsize // 2**20)
        written = 0
        try:
            with open("/tmp/fill", "wb") as f:
                while True:
                    f.write(b"x" * 2**20)
                    f.flush()
                    written += 1
        except OSError as error:
            print("stopped", written, errno.errorcode[error.errno])
    """, ephemeral_storage_mb=24, memory_mb=256)
    assert "size 24" in result.output
    assert "ENOSPC" in result.output
    written = int(result.output.split("stopped ")[1].split()[0])
    assert 20 <= written <= 24


@pytest.mark.slow
def test_cpu_spinner_gets_a_share_proportional_to_memory(backend: NamespaceBackend,
                                                         roots: dict[str, Path]) -> None:
    # 442 MB is a quarter of 1,769 MB: a quarter of one core.
    result = run_python(backend, roots, """
        import time, os
        start, cpu0 = time.monotonic(), time.process_time()
        while time.monotonic() - start < 1.5:
            pass
        print((time.process_time() - cpu0) / (time.monotonic() - start))
    """, memory_mb=442, init_cpu_boost=False)
    share = float(result.output)
    # The quota is a ceiling; a busy shared machine can only give less.
    assert 0.08 < share < 0.25 * 1.2, share
    cpu = result.sandbox.usage().cpu_seconds
    assert cpu is not None and cpu < 1.5 * 0.25 * 1.3


def test_wait_reports_a_killing_signal_as_a_negative_code(backend: NamespaceBackend,
                                                          roots: dict[str, Path]) -> None:
    killed = asyncio.run(run(backend, make_spec(roots, ["/bin/sh", "-c", "kill -TERM $$"])))
    exited = asyncio.run(run(backend, make_spec(roots, ["/bin/sh", "-c", "exit 3"])))
    assert killed.code == -15
    assert exited.code == 3


def test_destroy_kills_background_processes_and_removes_the_cgroups(
        backend: NamespaceBackend, roots: dict[str, Path]) -> None:
    async def scenario() -> tuple[list[int], NamespaceSandbox]:
        sandbox, output_pipe = await start(backend, make_spec(
            roots, ["/bin/sh", "-c", "sleep 300 & sleep 300 & echo started; wait"]))
        assert (await output_pipe.readline()) == b"started\n"
        pids = sandbox._cgroup.pids()
        await sandbox.destroy()
        await sandbox.destroy()  # idempotent
        return pids, sandbox

    pids, sandbox = asyncio.run(scenario())
    assert len(pids) == 5  # bubblewrap, its init, sh, two sleeps
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert all(not directory.exists() for directory in sandbox._cgroup.dirs.values())


def test_reap_leftovers_kills_and_removes_cgroups_of_a_crashed_server(
        backend: NamespaceBackend, roots: dict[str, Path]) -> None:
    parent = backend._cgroups.roots[next(iter(backend._cgroups.roots))].name
    crashed = CgroupTree(parent, server="server-999999999-0")  # no such process
    group = crashed.create("left-behind", CgroupLimits(64 * 2**20, None, 16))
    orphan = os.spawnv(os.P_NOWAIT, "/bin/sleep", ["sleep", "300"])
    group.add(orphan)
    asyncio.run(backend.reap_leftovers())
    _, status = os.waitpid(orphan, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9
    assert all(not directory.exists() for directory in group.dirs.values())
    assert all(not directory.exists() for directory in crashed.parents.values())


def test_reap_leftovers_spares_the_sandboxes_of_a_server_still_running(
        backend: NamespaceBackend, roots: dict[str, Path]) -> None:
    parent = backend._cgroups.roots[next(iter(backend._cgroups.roots))].name
    # Another server on the same machine: here, the process that started pytest.
    running = CgroupTree(parent, server=server_id(os.getppid()))
    group = running.create("in-use", CgroupLimits(64 * 2**20, None, 16))
    try:
        asyncio.run(backend.reap_leftovers())
        assert all(directory.exists() for directory in group.dirs.values())
    finally:
        group.remove_now()
        running.remove_empty_parents()


def test_launch_with_a_missing_code_directory_fails_cleanly(backend: NamespaceBackend,
                                                            roots: dict[str, Path]) -> None:
    spec = make_spec(roots, ["/bin/true"], task_root=roots["task"] / "missing")
    with pytest.raises(SandboxError, match="missing"):
        asyncio.run(start(backend, spec))
    assert backend._cgroups.leftovers() == []
    assert not any(parent.exists() and any(entry.is_dir() for entry in parent.iterdir())
                   for parent in backend._cgroups.parents.values())


def test_choose_backend_prefers_namespaces_here_and_honours_an_explicit_name() -> None:
    assert choose_backend(None).name == "namespaces"
    assert isinstance(choose_backend("process"), ProcessBackend)
    assert choose_backend("namespaces").name == "namespaces"
    with pytest.raises(ValueError, match="unknown sandbox backend"):
        choose_backend("docker")


def test_concurrent_launches_each_serve_their_own_runtime_api(backend: NamespaceBackend,
                                                              roots: dict[str, Path]) -> None:
    code = """
        import os, socket
        with socket.create_connection(("127.0.0.1", 9001)) as conn:
            conn.sendall(os.environ["ME"].encode())
            print(conn.recv(100).decode())
    """

    async def one(name: str, network: bool) -> tuple[str, str, str]:
        spec = make_spec(roots, python(code), env={"PATH": "/usr/bin", "ME": name}, network=network)
        sandbox, output_pipe = await start(backend, spec)
        loop = asyncio.get_running_loop()
        try:
            conn, _ = await asyncio.wait_for(loop.sock_accept(sandbox.runtime_api_socket), 20)
            heard = (await loop.sock_recv(conn, 100)).decode()
            await loop.sock_sendall(conn, f"hello {heard}".encode())
            conn.close()
            output = (await output_pipe.read()).decode().strip()
        finally:
            await sandbox.destroy()
        return name, heard, output

    async def many() -> list[tuple[str, str, str]]:
        return await asyncio.gather(*(one(f"env{i}", i % 2 == 0) for i in range(8)))

    for name, heard, output in asyncio.run(many()):
        assert heard == name
        assert output == f"hello {name}"


# Through a real server: what a function's handler experiences.

HOSTILE_HANDLER = '''
import os, socket
def handler(event, context):
    if event["action"] == "hog":
        chunks = [bytearray(2**20) for _ in range(event["mb"])]
        return len(chunks)
    if event["action"] == "probe":
        found = {}
        for port in event["ports"]:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                found[port] = "connected"
            except OSError as error:
                found[port] = type(error).__name__
        found["uid"] = os.getuid()
        found["code_dir"] = os.environ["LAMBDA_TASK_ROOT"]
        found["shadow"] = os.path.exists("/etc/shadow")
        return found
'''


def _hostile_function(server: Server, memory_mb: int) -> str:
    if server.sandbox_backend() != "namespaces":
        pytest.skip("the server runs another sandbox backend")
    from tests.helpers import make_zip

    name = f"hostile-{uuid.uuid4().hex[:8]}"
    server.client().create_function(
        FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler",
        MemorySize=memory_mb, Timeout=30, Code={"ZipFile": make_zip({"app.py": HOSTILE_HANDLER})})
    return name


def test_function_over_its_memory_size_fails_with_runtime_out_of_memory(server: Server) -> None:
    name = _hostile_function(server, 128)
    response = server.client().invoke(FunctionName=name, Payload=b'{"action": "hog", "mb": 400}',
                                      LogType="Tail")
    error = json.loads(response["Payload"].read())
    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "Runtime.OutOfMemory"
    assert "signal: killed" in error["errorMessage"]
    report = base64.b64decode(response["LogResult"]).decode()
    used = int(re.search(r"Max Memory Used: (\d+) MB", report).group(1))
    assert 100 <= used <= 128


def test_function_reaches_only_the_api_port_of_the_host_and_sees_no_host_secrets(
        server: Server) -> None:
    name = _hostile_function(server, 256)
    # Another service on the host's loopback, which must stay out of reach.
    with socket.create_server(("127.0.0.1", 0)) as other:
        other_port = other.getsockname()[1]
        payload = json.dumps({"action": "probe", "ports": [server.port, other_port]}).encode()
        result = json.loads(server.client().invoke(FunctionName=name, Payload=payload)["Payload"].read())
    # Lamina's API, forwarded into the sandbox on the same port (AWS_ENDPOINT_URL).
    assert result[str(server.port)] == "connected"
    assert result[str(other_port)] == "ConnectionRefusedError"
    assert result["uid"] == 993
    assert result["code_dir"] == "/var/task"
    assert result["shadow"] is False
