"""SnapStart's template side, inside the sandbox: a zygote that forks environments.

A SnapStart version is initialized once, in a template sandbox; this process then
stays there, initialized, and every new environment of the version is a fork of
it (Linux has no working process checkpoint/restore here: CRIU fails on this
kernel). The server asks for a fork on the control socket (_LAMINA_ZYGOTE_FD),
handing over a channel of the new environment's own and its output pipes.

The fork gets isolation of its own before any of the function's code runs again:

1. The child (C) unshares a new user namespace with new mount, PID, network, IPC
   and UTS namespaces. The user namespace is a child of the template's and maps
   uid 993 onto itself, so the child holds capabilities over its new namespaces
   only (an unprivileged user namespace: nothing outside them becomes reachable).
   It brings its loopback up, names its host, makes its mounts private and joins
   the environment's cgroup (memory limit, CPU share, process count) through
   descriptors the server opened.
2. C forks the environment's PID 1 (G) into the new PID namespace and exits; G
   becomes the template's child (the template is the subreaper of its forks and
   tells the server how each environment ended). G says hello on its channel; the
   server, seeing its PID through SCM_CREDENTIALS, binds the Runtime API listener
   inside its network namespace (so 127.0.0.1:9001 there is this environment's,
   and the template's listener does not exist there). G unshares a cgroup
   namespace, mounts its own /proc (only its own processes) with runc's masks, and
   a fresh, empty /tmp of EphemeralStorage size. It is now a spare, and waits to
   be activated (the server keeps a few per template, so a cold start does not
   wait for namespaces to be made).
3. Activated, G takes the environment's stdout/stderr and log pipes and environment
   variables (fresh credentials, log stream), then drops every capability and its
   bounding set, sets no_new_privs and loads the same seccomp filter every other
   environment runs under (no namespaces, no mounts, no ptrace), and returns to the
   runtime client's loop, which runs the after-restore hooks and asks for work.

The template itself runs under a filter that, unlike everyone else's, lets it
create user namespaces and mount in them (step 1 needs both): the one relaxation,
and it applies only to the template, in which only INIT and the before-snapshot
hooks run. The template must be single-threaded and alone when it becomes a
template (a thread or process left running by INIT would keep running beside the
forks' parent, with the forks' user namespaces in reach). Until a fork is confined
none of the function's code may run in it: it is made by fork(2) itself (no at-fork
hooks), with no trace or profile function, no garbage collection and no import, and
audit hooks (which Python cannot remove) are refused from before INIT on.

Standard library and ctypes only: this runs on the function's interpreter.
"""

import ctypes
import fcntl
import gc
import json
import os
import signal
import socket
import stat
import struct
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2
PR_SET_CHILD_SUBREAPER = 36
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
SANDBOX_UID = 993
SANDBOX_GID = 990

_libc = ctypes.CDLL(None, use_errno=True)
# fork(2) itself, not os.fork(): no at-fork hook (Python's os.register_at_fork or a
# library's pthread_atfork, which INIT code may have installed) runs in a fork
# before it is confined. The zygote is single-threaded, so nothing else needs the
# interpreter's after-fork repairs.
_SYS_FORK = {"x86_64": (57,), "aarch64": (220, 17, 0, 0, 0, 0)}  # aarch64: clone(SIGCHLD)


_FORK_ARGS = _SYS_FORK.get(os.uname().machine, ())


def _fork():
    if not _FORK_ARGS:
        return os.fork()  # an architecture this module has no number for
    pid = _libc.syscall(*_FORK_ARGS)
    if pid < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"fork: {os.strerror(code)}")
    return pid


def _check(result, what):
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _mount(source, target, fstype, flags, data=None):
    _check(_libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(),
                       ctypes.c_ulong(flags), data and data.encode()), f"mount {target}")


def _prctl(option, arg2=0, arg3=0):
    _check(_libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), 0, 0), f"prctl {option}")


def _write(path, text):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _loopback_up():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(probe, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(probe, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _drop_privileges(program):
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
            break  # past the kernel's last capability
    _libc.prctl(PR_CAP_AMBIENT, ctypes.c_ulong(PR_CAP_AMBIENT_CLEAR_ALL), 0, 0, 0)
    header = struct.pack("Ii", LINUX_CAPABILITY_VERSION_3, 0)
    data = bytes(24)  # two empty {effective, permitted, inheritable} sets
    _check(_libc.capset(header, data), "capset")
    _prctl(PR_SET_NO_NEW_PRIVS, 1)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    prog = SockFprog(len(program) // 8, program)
    _check(_libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER),
                       ctypes.byref(prog), 0, 0), "seccomp")


def _mask_proc(files, dirs):
    """runc's masks over the new /proc: an empty read-only file over files, an empty
    read-only tmpfs over directories. The empty file lives on a scratch tmpfs that
    is detached afterwards (the binds keep it)."""
    if files:
        # Mounts take one lock for the whole machine: a read-only scratch file system
        # (its binds are then read-only too) costs two mounts less per file.
        _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=4k,mode=755")
        empty = "/tmp/empty"
        os.close(os.open(empty, os.O_CREAT | os.O_WRONLY, 0o444))
        _mount(None, "/tmp", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        for name in files:
            target = f"/proc/{name}"
            if os.path.isfile(target):
                _mount(empty, target, None, MS_BIND)
        _check(_libc.umount2(b"/tmp", MNT_DETACH), "umount /tmp")
    for name in dirs:
        target = f"/proc/{name}"
        if os.path.isdir(target):
            _mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0")


def _refuse_audit_hooks(event, _args):
    # Installed before INIT: no audit hook added later could run inside a fork before
    # it is confined (the kernel's view of its siblings is still in reach then).
    if event == "sys.addaudithook":
        raise RuntimeError("audit hooks are not available in SnapStart functions")


class Template:
    def __init__(self):
        sys.addaudithook(_refuse_audit_hooks)
        self.control = socket.socket(fileno=int(os.environ.pop("_LAMINA_ZYGOTE_FD")))
        seccomp_fd = int(os.environ.pop("_LAMINA_SECCOMP_FD"))
        chunks = []
        while chunk := os.read(seccomp_fd, 65536):
            chunks.append(chunk)
        os.close(seccomp_fd)
        self.seccomp = b"".join(chunks)

    def alone(self):
        """Why this process cannot become a template, or None."""
        threads = os.listdir("/proc/self/task")
        if len(threads) > 1:
            return (f"INIT left {len(threads) - 1} thread(s) running; a SnapStart template "
                    "must be single-threaded when it is snapshotted")
        own = {os.getpid(), 1}
        others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in own]
        if others:
            return (f"INIT left {len(others)} process(es) running; a SnapStart template "
                    "must have none when it is snapshotted")
        return None

    def serve(self, log_fd=None):
        """Fork environments until the server closes the control socket; returns only in
        a fork, activated and fully confined, with its activation. `log_fd`: where the
        runtime client writes its framed records in the template (closed in a fork,
        whose own pipe is the activation's "log_fd")."""
        self.forks = set()
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        signal.signal(signal.SIGCHLD, self._reap)
        # Nothing of the function's may run in a fork before it is confined: no trace or
        # profile function, no collection calling finalizers of INIT's objects, no
        # import (finders INIT installed) until then.
        sys.settrace(None)
        sys.setprofile(None)
        gc.disable()
        # INIT's objects out of the collector's reach for good: a collection in a fork
        # would otherwise write to every page holding one, copying the template's
        # memory into each environment (the trick of pre-forking Python servers).
        gc.freeze()
        while True:
            message, fds = _receive(self.control)
            if not message:
                os._exit(0)
            # SIGCHLD held until the fork is known as one (it may exit at once).
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
            pid = -1
            try:
                pid = _fork()
                if pid > 0:
                    self.forks.add(pid)
            finally:
                if pid != 0:  # a fork unblocks it once it no longer reaps
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            if pid == 0:
                try:
                    return self._become_environment(json.loads(message), fds, log_fd)
                except BaseException as error:  # noqa: BLE001 - the channel says why, then exit
                    try:
                        os.write(2, f"lamina: restore failed: {error}{_where(error)}\n".encode())
                    finally:
                        os._exit(125)
            for fd in fds:
                os.close(fd)

    def _reap(self, _signum, _frame):
        """SIGCHLD. The template is its forks' subreaper: each environment's PID 1 is
        its child once the fork that made it exits. Their ends go to the server, which
        cannot wait for them itself; the forks' own ends are nobody's business."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.forks:
                self.forks.discard(pid)
                continue
            try:
                self.control.send(f"exit {pid} {os.waitstatus_to_exitcode(status)}".encode())
            except OSError:
                pass  # the server is gone or going

    def _become_environment(self, request, fds, log_fd):
        channel_fd, *entries = fds
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        self.control.close()
        channel = socket.socket(fileno=channel_fd)
        os.setsid()
        _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET
                             | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{SANDBOX_UID} {SANDBOX_UID} 1\n")
        _write("/proc/self/gid_map", f"{SANDBOX_GID} {SANDBOX_GID} 1\n")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        _loopback_up()
        hostname = request["hostname"].encode()
        _check(_libc.sethostname(hostname, len(hostname)), "sethostname")
        # Into the environment's cgroup, through descriptors the server opened: a
        # process moving itself is cheap, and refused here only if the kernel says so.
        moved = True
        for fd in entries:
            try:
                os.write(fd, b"0")
            except OSError:
                moved = False
            os.close(fd)
        if _fork():
            # Gone at once: its child (PID 1 of the new PID namespace) becomes the
            # template's, which reports its end. Waiting here instead would keep a
            # process per environment whose pages are its own.
            os._exit(0)
        # Hello from PID 1 itself: the server sees its host PID (SCM_CREDENTIALS) and
        # is told the template's number for it (how the template names its end).
        template_pid = os.readlink("/proc/self")  # the template's /proc, still
        channel.sendall(f"hello{' moved' if moved and entries else ''} {template_pid}".encode())
        _check(_libc.unshare(CLONE_NEWCGROUP), "unshare cgroup")
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        _mask_proc(request["masked_files"], request["masked_dirs"])
        _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
               f"size={request['tmp_bytes']},mode=1777")
        # Ready, and waiting to become an environment: the server activates it when a
        # cold start needs one (or at once, when none was waiting).
        message, fds = _receive(channel)
        if not message:
            os._exit(0)
        activation = json.loads(message)
        output_fd, frames_fd = fds
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        os.close(output_fd)
        if log_fd is not None and log_fd != frames_fd:
            # The template's log pipe is not this environment's. Its records go to
            # frames_fd from now on, under that number: the template's may lie past
            # RLIMIT_NOFILE (a sandbox inherits the server's descriptors with their
            # numbers, which grow past 1024 on a busy server), where dup2 fails.
            os.close(log_fd)
        activation["log_fd"] = frames_fd
        os.environ.clear()
        os.environ.update(activation["env"])
        os.environ.pop("_LAMBDA_TELEMETRY_LOG_FD", None)
        _retire_sockets(keep=channel.fileno())
        os.chdir(os.environ.get("LAMBDA_TASK_ROOT", "/var/task"))
        _drop_privileges(self.seccomp)
        channel.sendall(b"resumed")
        channel.close()
        gc.enable()
        return activation


def _where(error):
    """` at file:line < file:line ...` of where `error` was raised, without importing
    traceback (no import may run in a fork before it is confined)."""
    frames = []
    tb = error.__traceback__
    while tb is not None:
        frames.append(f"{os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}")
        tb = tb.tb_next
    return f" at {' < '.join(reversed(frames))}" if frames else ""


def _receive(sock):
    """One message and the descriptors that came with it."""
    while True:
        try:
            message, ancillary, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(16 * 4))
            break
        except InterruptedError:
            continue
    fds = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += list(struct.unpack(f"{len(data) // 4}i", data[:len(data) - len(data) % 4]))
    return message, fds


def _retire_sockets(keep):
    """Network connections made during INIT do not survive a restore (as on Lambda):
    each socket inherited from the template, which belongs to the template's network
    namespace, is replaced by a fresh unconnected one of the environment's own under
    the same number (closing it would let a new descriptor take the number an old
    socket object still holds)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd > 2 and fd != keep and stat.S_ISSOCK(os.fstat(fd).st_mode):
                fresh = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                os.dup2(fresh.fileno(), fd)
                fresh.close()
        except OSError:
            pass


def reseed():
    """Fresh randomness for each restored environment: every fork starts with the
    template's generator state, so `random` would repeat itself across them."""
    module = sys.modules.get("random")
    if module is not None:
        module.seed()
