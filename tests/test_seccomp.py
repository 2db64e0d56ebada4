"""The seccomp filter, loaded by a real bubblewrap in front of real programs.

Each refusal is checked twice: under the filter the call fails with EPERM, and in the
same sandbox without the filter it does not, so the refusal is the filter's doing and
not a missing capability's. Syscall numbers are x86_64's.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from lamina.runtimes.catalog import _host_pythons
from lamina.sandbox import seccomp

BWRAP = shutil.which("bwrap") or "bwrap"
pytestmark = [
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
    pytest.mark.skipif(platform.machine() != "x86_64", reason="probes use x86_64 syscall numbers"),
]

PYTHON = "/usr/bin/python3"
# Like the namespaces backend runs a function (uid 993, no capabilities, new namespaces),
# with the host's programs visible read-only so any interpreter on it can run, and without
# --disable-userns, so only the filter stands in unshare(CLONE_NEWUSER)'s way. Not all of
# `/`: servers on this host mount and unmount below /run, which races a recursive bind.
SANDBOX = ["--unshare-all", "--unshare-user", "--uid", "993", "--gid", "990", "--cap-drop", "ALL",
           "--die-with-parent", "--new-session", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
for top in ("bin", "lib", "lib64", "sbin", "usr", "etc", "opt", "root"):
    if os.path.islink(f"/{top}"):
        SANDBOX += ["--symlink", os.readlink(f"/{top}"), f"/{top}"]
    elif os.path.isdir(f"/{top}"):
        SANDBOX += ["--ro-bind", f"/{top}", f"/{top}"]


def sandboxed(argv: list[str], filtered: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    fd = seccomp.filter_fd() if filtered else None
    try:
        options = ["--seccomp", str(fd)] if fd is not None else []
        return subprocess.run([BWRAP, *SANDBOX, *options, "--", *argv], pass_fds=[fd] if fd is not None else [],
                              check=False, capture_output=True, text=True, timeout=timeout,
                              env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    finally:
        if fd is not None:
            os.close(fd)


# Each probe runs in a forked child, so a call that succeeds without the filter
# (ptrace(TRACEME), unshare, a raw clone) changes nothing for the next one.
PROBE = textwrap.dedent("""
    import ctypes, json, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long

    def call(nr, *args):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            me = os.getpid()
            ctypes.set_errno(0)
            result = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
            if os.getpid() == me:  # not the child of a raw clone
                os.write(w, json.dumps(ctypes.get_errno() if result == -1 else 0).encode())
            os._exit(0)
        os.close(w)
        answer = os.read(r, 64)
        os.close(r)
        os.waitpid(pid, 0)
        return json.loads(answer)

    print(json.dumps({name: call(*spec) for name, spec in json.loads(sys.argv[1]).items()}))
""")


def probe(calls: dict[str, list[int]], filtered: bool = True) -> dict[str, int]:
    """name -> errno (0: the call succeeded)."""
    done = sandboxed([PYTHON, "-c", PROBE, json.dumps(calls)], filtered)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


CLONE_NEWUSER = 0x10000000
SIGCHLD = 17
O_CLOEXEC = 0o2000000
# Calls a function running as uid 993 without capabilities could make but for the filter,
# with arguments the kernel answers without EPERM when no filter is loaded.
REFUSED_BY_THE_FILTER = {
    "ptrace(PTRACE_TRACEME)": [101, 0, 0, 0, 0],
    "process_vm_readv": [310, 0, 0, 0, 0, 0, 0],
    "process_vm_writev": [311, 0, 0, 0, 0, 0, 0],
    "keyctl(KEYCTL_GET_KEYRING_ID)": [250, 0, -3, 0],
    "add_key": [248, 0, 0, 0, 0, 0],
    "request_key": [249, 0, 0, 0, 0],
    "io_uring_setup": [425, 0, 0],
    "io_uring_enter": [426, -1, 0, 0, 0, 0, 0],
    "io_uring_register": [427, -1, 0, 0, 0],
    "perf_event_open": [298, 0, 0, -1, -1, 0],
    "bpf": [321, 9999, 0, 0],
    "userfaultfd(UFFD_USER_MODE_ONLY)": [323, 1 | O_CLOEXEC],
    "unshare(CLONE_NEWUSER)": [272, CLONE_NEWUSER],
    "clone(CLONE_NEWUSER)": [56, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0],
    "setns": [308, -1, 0],
    "mount": [165, 0, 0, 0, 0, 0],
    "umount2": [166, 0, 0],
    "chroot": [161, 0],
    "open_by_handle_at": [304, -1, 0, 0],
    "kcmp": [312, 0, 0, 0, 0, 0],
    "pidfd_getfd": [438, -1, 0, 0],
    "socket(AF_VSOCK)": [41, 40, 1, 0],
    "personality(PER_BSD)": [135, 0x6],
}


def test_calls_the_sandbox_otherwise_allows_are_refused_with_eperm() -> None:
    unfiltered = probe(REFUSED_BY_THE_FILTER, filtered=False)
    filtered = probe(REFUSED_BY_THE_FILTER)
    assert {name: errno.errorcode.get(e, e) for name, e in unfiltered.items() if e == errno.EPERM} == {}
    assert {name: errno.errorcode.get(e, e) for name, e in filtered.items() if e != errno.EPERM} == {}


def test_ptrace_attach_to_pid_1_is_refused_with_eperm() -> None:
    # Not tried without the filter: it would stop the sandbox's PID 1.
    PTRACE_ATTACH = 16
    assert probe({"ptrace(PTRACE_ATTACH, 1)": [101, PTRACE_ATTACH, 1, 0, 0]}) == {"ptrace(PTRACE_ATTACH, 1)": errno.EPERM}


def test_every_denied_syscall_known_here_answers_eperm() -> None:
    import pyseccomp  # type: ignore[import-untyped]

    numbers = {name: pyseccomp.resolve_syscall(pyseccomp.Arch.X86_64, name) for name in seccomp.DENIED}
    calls = {name: [nr, 0, 0, 0, 0, 0, 0] for name, nr in numbers.items() if nr >= 0}
    assert len(calls) > 40
    answers = probe(calls)
    assert {name: errno.errorcode.get(e, e) for name, e in answers.items() if e != errno.EPERM} == {}


def test_a_socket_family_above_32_bits_cannot_smuggle_af_vsock_past_the_filter() -> None:
    # The kernel reads the family's low 32 bits: 1 << 32 | AF_UNIX opens a unix socket
    # without the filter, and 1 << 32 | AF_VSOCK would open a vsock one.
    calls = {"AF_UNIX": [41, 1 << 32 | 1, 1, 0], "AF_VSOCK": [41, 1 << 32 | 40, 1, 0]}
    assert probe(calls, filtered=False)["AF_UNIX"] == 0
    assert probe(calls) == {"AF_UNIX": errno.EAFNOSUPPORT, "AF_VSOCK": errno.EAFNOSUPPORT}


def test_clone3_answers_enosys_so_libc_falls_back_to_clone() -> None:
    assert probe({"clone3": [435, 0, 0]}) == {"clone3": errno.ENOSYS}


def test_syscall_numbers_newer_than_the_filter_answer_enosys_as_an_older_kernel_would() -> None:
    assert probe({"future": [500, 0, 0]}) == {"future": errno.ENOSYS}


def test_allowed_calls_answer_as_they_do_without_the_filter() -> None:
    calls = {
        "socket(AF_UNIX)": [41, 1, 1, 0],
        "personality(0xffffffff)": [135, 0xFFFFFFFF],
        "name_to_handle_at": [303, -100, 0, 0, 0, 0],  # Docker allows it; EFAULT from the kernel
        "fchmodat2": [452, -100, 0, 0, 0],  # newer than Debian 12's libseccomp; glibc 2.39 uses it
        "mseal": [462, 0, 0, 0],  # unknown to libseccomp 2.5.4: added by its number
    }
    assert probe(calls) == probe(calls, filtered=False)


@pytest.mark.parametrize("call", ["x32", "i386"])
def test_a_call_through_another_architecture_kills_the_process(call: str) -> None:
    script = {
        # getpid with the x32 bit set
        "x32": "import ctypes; ctypes.CDLL(None).syscall(0x40000000 | 39)",
        # getpid through the i386 entry: mov eax, 20; int 0x80; ret
        "i386": textwrap.dedent("""
            import ctypes, mmap
            page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            page.write(bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3]))
            ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()
        """),
    }[call]
    assert sandboxed([PYTHON, "-c", script], filtered=False).returncode == 0
    # bubblewrap's PID 1 reports a command killed by signal N as 128 + N.
    assert sandboxed([PYTHON, "-c", script]).returncode == 128 + signal.SIGSYS


ORDINARY_PYTHON = textwrap.dedent("""
    import asyncio, concurrent.futures, hashlib, mmap, os, random, secrets, socket
    import subprocess, sys, tempfile, threading, time

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(lambda n: n * n, range(100))) == 328350
    lock, seen = threading.Lock(), []
    threads = [threading.Thread(target=lambda i=i: (lock.acquire(), seen.append(i), lock.release()))
               for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(seen) == list(range(8))

    assert subprocess.run(["sh", "-c", "echo $((6 * 7))"], capture_output=True, text=True).stdout == "42\\n"
    assert subprocess.run([sys.executable, "-c", "print('child')"], capture_output=True).returncode == 0
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    assert os.waitpid(pid, 0)[1] >> 8 == 7

    a, b = socket.socketpair()
    a.sendall(b"ping")
    assert b.recv(4) == b"ping"
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    client.sendall(b"over tcp")
    assert conn.recv(8) == b"over tcp"
    socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()

    async def echo() -> bytes:
        srv = await asyncio.start_server(lambda r, w: (w.write(b"async"), w.close()), "127.0.0.1", 0)
        reader, _ = await asyncio.open_connection(*srv.sockets[0].getsockname())
        data = await reader.read()
        srv.close()
        return data
    assert asyncio.run(echo()) == b"async"

    with mmap.mmap(-1, 1 << 20) as region:
        region[:5] = b"hello"
        assert region[:5] == b"hello"
    with tempfile.NamedTemporaryFile() as f:
        f.write(b"x" * 4096)
        f.flush()
        os.fsync(f.fileno())
        with open(f.name, "rb") as again:
            assert len(again.read()) == 4096
    start = time.monotonic()
    time.sleep(0.01)
    assert time.monotonic() - start >= 0.01 and time.time() > 1.7e9
    assert len(secrets.token_bytes(32)) == 32 and 0 <= random.random() < 1
    hashlib.sha256(b"x").hexdigest()
    print("ok", sys.version_info[:2])
""")


@pytest.mark.parametrize("python", sorted(p for minor, p in _host_pythons().items() if minor >= 11),
                         ids=lambda p: p.name)
def test_python_does_ordinary_work_under_the_filter(python: Path) -> None:
    done = sandboxed([str(python), "-c", ORDINARY_PYTHON])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")


ORDINARY_NODE = """
const fs = require('fs'), cp = require('child_process'), net = require('net'), crypto = require('crypto');
const expected = fs.readFileSync('/etc/os-release', 'utf8');
fs.readFile('/etc/os-release', 'utf8', (err, text) => {
  if (err || text !== expected) throw err || new Error('read differs');
  if (cp.execFileSync('sh', ['-c', 'echo sync-child']).toString() !== 'sync-child\\n') throw new Error('execFileSync');
  cp.exec('echo async-child', (err, out) => {
    if (err || out !== 'async-child\\n') throw err || new Error('exec');
    const server = net.createServer(s => s.end('tcp')).listen(0, '127.0.0.1', () => {
      net.connect(server.address().port, '127.0.0.1').on('data', d => {
        server.close();
        setTimeout(() => console.log('ok', d.toString(), crypto.randomBytes(4).length), 20);
      });
    });
  });
});
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
@pytest.mark.parametrize("io_uring", ["0", "1"])
def test_node_does_ordinary_work_under_the_filter(io_uring: str) -> None:
    # UV_USE_IO_URING=1 makes libuv try io_uring_setup; refused, it falls back to epoll.
    done = sandboxed(["/usr/bin/env", f"UV_USE_IO_URING={io_uring}", shutil.which("node") or "node",
                      "-e", ORDINARY_NODE])
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok tcp 4\n"


def test_shell_and_curl_run_under_the_filter() -> None:
    done = sandboxed(["/bin/sh", "-c", "echo $(( 2 + 3 )) | cat; (sleep 0.01 &); wait; ls / >/dev/null && echo listed"])
    assert (done.returncode, done.stdout) == (0, "5\nlisted\n"), done.stderr
    curl = shutil.which("curl")
    if curl is not None:
        done = sandboxed([curl, "--version"])
        assert done.returncode == 0 and done.stdout.startswith("curl "), done.stderr


def test_each_fd_holds_the_whole_program_from_its_start() -> None:
    program = seccomp.filter_program()
    # struct sock_filter is 8 bytes; the kernel takes at most 4,096 instructions.
    assert len(program) % 8 == 0 and 0 < len(program) // 8 <= 4096
    fds = [seccomp.filter_fd(), seccomp.filter_fd()]
    try:
        for fd in fds:
            assert os.read(fd, len(program) + 1) == program
    finally:
        for fd in fds:
            os.close(fd)
