"""Attacks from inside a function, each asserting containment.

Every test runs hostile code in a real namespaced sandbox (real bubblewrap, real
cgroups, real loop-mounted /tmp, real slirp4netns) and checks, from the host where
it matters, that the kernel refused it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from pathlib import Path
from typing import Iterator

import pytest

from lamina.sandbox.egress import host_addresses
from lamina.sandbox.namespaces import NamespaceBackend
from lamina.sandbox.users import DEFAULT_FIRST_UID
from tests.test_sandbox_namespaces import (
    UNAVAILABLE,
    make_spec,
    python,
    run_python,
    start,
)

pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"no kernel isolation: {UNAVAILABLE}")


def _json_line(output: str) -> dict[str, object]:
    return json.loads(output.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_proc_sys_and_kernel_settings_are_not_writable(backend: NamespaceBackend,
                                                       roots: dict[str, Path]) -> None:
    result = run_python(backend, roots, """
        import json, os
        seen = {}
        for path in ("/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches",
                     "/proc/sysrq-trigger", "/proc/sys/kernel/modprobe"):
            try:
                os.close(os.open(path, os.O_WRONLY))
                seen[path] = "opened"
            except OSError as error:
                seen[path] = error.strerror
        for path in ("/proc/kcore", "/proc/timer_list", "/proc/sched_debug", "/proc/interrupts"):
            if os.path.exists(path):
                try:
                    with open(path, "rb") as f:
                        seen[path] = len(f.read(100))
                except OSError:
                    seen[path] = 0  # refused: as good as empty
        print(json.dumps(seen))
    """)
    seen = _json_line(result.output)
    for path in ("/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches",
                 "/proc/sysrq-trigger", "/proc/sys/kernel/modprobe"):
        assert seen[path] != "opened", path
    # Masked with an empty file, or refused to an unprivileged uid: nothing to read.
    assert all(size == 0 for path, size in seen.items() if not path.startswith("/proc/sys"))


def test_the_sandbox_user_is_an_unprivileged_host_uid_and_so_are_its_files(
        backend: NamespaceBackend, roots: dict[str, Path]) -> None:
    code = """
        import os
        with open("/tmp/made-inside", "w") as f:
            f.write("x")
        os.chmod("/tmp/made-inside", 0o6755)
        print(os.getuid(), flush=True)
        import time; time.sleep(30)
    """

    async def check() -> tuple[int, int, int, str]:
        sandbox, output = await start(backend, make_spec(roots, python(code)))
        try:
            inside_uid = int((await asyncio.wait_for(output.readline(), 20)).decode())
            # The host's view of the command (bubblewrap's PID 1's child).
            children = Path(f"/proc/{sandbox.pid}/task/{sandbox.pid}/children").read_text().split()
            status = Path(f"/proc/{children[0]}/status").read_text()
            host_uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
            info = Path("/proc", str(children[0]), "root", "tmp", "made-inside").stat()
            mounts = Path(f"/proc/{children[0]}/mountinfo").read_text()
            return inside_uid, host_uid, info.st_uid, mounts
        finally:
            await sandbox.destroy()

    inside_uid, host_uid, file_uid, mounts = asyncio.run(check())
    assert inside_uid == 993
    assert host_uid >= DEFAULT_FIRST_UID and file_uid == host_uid
    tmp_line = next(line for line in mounts.splitlines() if line.split()[4] == "/tmp")
    assert "nosuid" in tmp_line and "ext4" in tmp_line


def test_two_live_sandboxes_run_as_different_host_uids(backend: NamespaceBackend,
                                                       roots: dict[str, Path]) -> None:
    code = "import time; print('up', flush=True); time.sleep(30)"

    async def check() -> set[int]:
        launched = [await start(backend, make_spec(roots, python(code))) for _ in range(3)]
        try:
            uids = set()
            for sandbox, output in launched:
                await asyncio.wait_for(output.readline(), 20)
                child = Path(f"/proc/{sandbox.pid}/task/{sandbox.pid}/children").read_text().split()[0]
                status = Path(f"/proc/{child}/status").read_text()
                uids.add(int(next(line for line in status.splitlines()
                                  if line.startswith("Uid:")).split()[1]))
            return uids
        finally:
            for sandbox, _ in launched:
                await sandbox.destroy()

    assert len(asyncio.run(check())) == 3


def test_dev_is_minimal_and_read_only_with_no_shared_memory(backend: NamespaceBackend,
                                                           roots: dict[str, Path]) -> None:
    result = run_python(backend, roots, """
        import json, os
        seen = {"dev": sorted(os.listdir("/dev"))}
        for path in ("/dev/shm/x", "/dev/new"):
            try:
                open(path, "w").close()
                seen[path] = "written"
            except OSError as error:
                seen[path] = error.strerror
        with open("/dev/null", "w") as null:
            null.write("fine")
        print(json.dumps(seen))
    """)
    seen = _json_line(result.output)
    assert seen["/dev/shm/x"] != "written" and seen["/dev/new"] != "written"
    assert set(seen["dev"]) <= {"core", "fd", "full", "null", "ptmx", "pts", "random", "shm",  # type: ignore[arg-type]
                                "stderr", "stdin", "stdout", "tty", "urandom", "zero"}


@pytest.fixture
def host_listener() -> Iterator[tuple[str, int]]:
    """A service on the host's non-loopback address, listening on every address."""
    addresses = [str(n.network_address) for n in host_addresses()
                 if n.prefixlen == 32 and not n.network_address.is_loopback]
    if not addresses:
        pytest.skip("this host has no address besides loopback")
    server = socket.create_server(("0.0.0.0", 0))
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.sendall(b"host secret")
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield addresses[0], port
    stop.set()
    thread.join()
    server.close()


def test_host_addresses_private_and_link_local_ranges_are_unreachable(
        backend: NamespaceBackend, roots: dict[str, Path], host_listener: tuple[str, int]) -> None:
    address, port = host_listener
    # Reachable from the host itself, so the refusal below is the sandbox's doing.
    with socket.create_connection((address, port), timeout=5) as direct:
        assert direct.recv(100) == b"host secret"
    result = run_python(backend, roots, f"""
        import json, socket
        seen = {{}}
        for host, port in (("{address}", {port}), ("169.254.169.254", 80), ("10.1.2.3", 80),
                           ("192.168.1.1", 80), ("172.16.0.1", 80), ("10.0.2.2", {port})):
            try:
                socket.create_connection((host, port), timeout=3).close()
                seen[host] = "connected"
            except OSError as error:
                seen[host] = type(error).__name__
        print(json.dumps(seen))
    """, network=True)
    seen = _json_line(result.output)
    assert all(outcome != "connected" for outcome in seen.values()), seen


def test_tmp_is_disk_a_128_mb_function_writes_500_mb_and_is_refused_past_512(
        backend: NamespaceBackend, roots: dict[str, Path]) -> None:
    result = run_python(backend, roots, """
        import errno, json, os
        chunk = b"x" * 2**20
        written = 0
        with open("/tmp/big", "wb") as f:
            for _ in range(500):
                f.write(chunk)
                written += 1
        with open("/tmp/more", "wb") as f:
            try:
                for _ in range(13):
                    f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
                    written += 1
                outcome = "all written"
            except OSError as error:
                outcome = errno.errorcode[error.errno]
        print(json.dumps({"written": written, "outcome": outcome}))
    """, memory_mb=128, ephemeral_storage_mb=512)
    assert result.code == 0, result.output
    seen = _json_line(result.output)
    assert seen["outcome"] == "ENOSPC"
    assert 500 <= seen["written"] < 513  # type: ignore[operator]
    assert not result.sandbox.oom_killed()


def test_mounted_access_point_root_is_all_a_function_reaches_of_a_file_system(
        backend: NamespaceBackend, roots: dict[str, Path], tmp_path: Path) -> None:
    """An EFS access point's root at /mnt/ap: nothing beside or above it is reachable
    (.., symbolic links, /proc's view of the mounts), nothing made there belongs to
    anyone but the access point's user, and its owner cannot be changed."""
    from lamina.sandbox.base import FileSystemMount

    file_system = tmp_path / "fs"
    (file_system / "ap").mkdir(parents=True)
    os.chown(file_system / "ap", 1000, 1000)
    (file_system / "ap").chmod(0o750)
    sentinel = "beside-the-access-point"
    (file_system / "outside.txt").write_text(sentinel)
    (tmp_path / "outside.txt").write_text(sentinel)
    mount = FileSystemMount(file_system_dir=file_system, path="/ap", target="/mnt/ap",
                            uid=1000, gid=1000)
    result = run_python(backend, roots, f"""
        import json, os
        seen = {{}}
        for path in ("/mnt/ap/../outside.txt", "/mnt/outside.txt", "/mnt/ap/../../outside.txt",
                     "{file_system}/outside.txt", "/proc/self/root{file_system}/outside.txt",
                     "/proc/1/root{file_system}/outside.txt"):
            try:
                seen[path] = open(path).read()
            except OSError as error:
                seen[path] = error.strerror
        os.symlink("{file_system}/outside.txt", "/mnt/ap/link")
        try:
            seen["link"] = open("/mnt/ap/link").read()
        except OSError as error:
            seen["link"] = error.strerror
        os.chdir("/mnt/ap")
        for _ in range(10):
            os.chdir("..")
        seen["cwd after .."] = os.getcwd()
        with open("/mnt/ap/made", "w") as out:
            out.write("x")
        try:
            os.chown("/mnt/ap/made", 0, 0)
            seen["chown"] = "allowed"
        except OSError as error:
            seen["chown"] = error.strerror
        seen["mountinfo"] = "{file_system}" in open("/proc/self/mountinfo").read()
        seen["mnt"] = sorted(os.listdir("/mnt"))
        print(json.dumps(seen))
    """, file_systems=(mount,))
    seen = _json_line(result.output)
    assert sentinel not in json.dumps(seen), seen
    assert seen["chown"] in ("Operation not permitted", "Invalid argument")  # 0 is unmapped
    assert seen["mnt"] == ["ap"] and seen["cwd after .."] == "/"
    made = file_system / "ap" / "made"
    assert (made.stat().st_uid, made.stat().st_gid) == (1000, 1000)
    # The symbolic link is the function's own business: on the host it points nowhere
    # the server would follow (access point roots are opened without following links).
    assert (file_system / "ap" / "link").is_symlink()
