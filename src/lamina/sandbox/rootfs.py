"""The filesystem a namespaced sandbox sees, as bubblewrap mount arguments.

Lambda's layout: `/var/task`, `/opt`, `/var/runtime` read-only, `/tmp` private and
sized, everything else read-only. Of the host only the system directories
(`/usr` and the `/bin`, `/lib`, ... links into it, mirrored as on the host), the
interpreter prefixes the environment names, and a small `/etc` are visible.

That `/etc` is a copy, built once per backend start into a root-owned directory
and bind-mounted whole: one mount instead of one per file saves about 2.5 ms of
every cold start (bench/sandbox.py). It holds what runtimes read (dynamic linker
cache, name resolution, CA certificates, time zone, MIME types) and stub
passwd/group files naming Lambda's `sbx_user1051`; never shadow files, private
keys (`/etc/ssl/private`) or anything else of the host's. Its name is a digest
of its sources (inode, size, mtime), so servers sharing a machine share it, and a
host change (a new resolv.conf) yields a fresh copy at the next start.
"""

from __future__ import annotations

import compileall
import hashlib
import os
import py_compile
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Callable

from lamina.sandbox.base import SandboxError, SandboxSpec
from lamina.sandbox.network import SLIRP_DNS

SANDBOX_UID = 993  # Lambda's sbx_user1051
SANDBOX_GID = 990
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_ENTRIES = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "resolv.conf", "hosts", "host.conf",
    "gai.conf", "nsswitch.conf", "protocols", "services", "mime.types", "localtime",
    "ssl/certs", "ssl/openssl.cnf",
)
PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    f"sbx_user1051:x:{SANDBOX_UID}:{SANDBOX_GID}::/home/sbx_user1051:/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/:/sbin/nologin\n"
)
GROUP = f"root:x:0:\nsbx_user1051:x:{SANDBOX_GID}:\nnobody:x:65534:\n"


def state_dir() -> Path:
    """A directory only this user can write (the copy must not be swappable by others)."""
    base = Path("/run/lamina") if os.geteuid() == 0 and os.path.isdir("/run") \
        else Path(tempfile.gettempdir()) / f"lamina-{os.geteuid()}"
    base.mkdir(mode=0o755, exist_ok=True)
    info = os.lstat(base)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise SandboxError(f"{base} is not a directory owned and writable only by this user")
    return base


def _copy_entry(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        # Symlinks kept: /etc/ssl/certs links into /usr/share, which the sandbox sees.
        shutil.copytree(source, target, symlinks=True)
    else:
        # The file itself: /etc/localtime is usually a link the sandbox could not follow.
        shutil.copyfile(source.resolve(), target)


def _source_key() -> str:
    """A digest of the host entries' identity (inode, size, mtime) and the stubs.

    Cheap enough for every start (a few stats), unlike copying /etc/ssl/certs'
    hundreds of symlinks, which is done only when this key changes.
    """
    digest = hashlib.sha256((PASSWD + GROUP).encode())
    for entry in ETC_ENTRIES:
        path = Path("/etc") / entry
        try:
            info = path.stat()
        except OSError:
            continue
        digest.update(f"{entry}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def _write_once(path: Path, data: bytes, mode: int) -> Path:
    """`path` with `data`, written once (atomically: servers may race to make it)."""
    if not path.exists():
        staging = path.with_suffix(f".{os.getpid()}")
        staging.write_bytes(data)
        staging.chmod(mode)
        staging.rename(path)
    return path


def _staged_tree(final: Path, fill: Callable[[Path], object]) -> Path:
    """`final`, made by `fill` in a staging directory beside it, readable by everyone
    (sandbox users) and renamed into place in one step."""
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-"))
    try:
        fill(staging)
        for directory, _, files in os.walk(staging):
            os.chmod(directory, 0o755)
            for name in files:
                path = os.path.join(directory, name)
                if not os.path.islink(path):  # a link's mode is its target's business
                    os.chmod(path, 0o755 if os.stat(path).st_mode & 0o111 else 0o644)
        try:
            staging.rename(final)
        except OSError:
            if not final.is_dir():  # not just another server winning the same race
                raise
        return final
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def build_etc() -> Path:
    """The sandbox's /etc, copied from the host's current files (reused if unchanged)."""
    base = state_dir()
    final = base / f"etc-{_source_key()}"
    if final.is_dir():
        return final

    def fill(staging: Path) -> None:
        for entry in ETC_ENTRIES:
            source = Path("/etc") / entry
            if source.exists():
                _copy_entry(source, staging / entry)
        (staging / "passwd").write_text(PASSWD)
        (staging / "group").write_text(GROUP)

    return _staged_tree(final, fill)


def _tree_key(source: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(source.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(f"{path.relative_to(source)}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def stage_directory(source: Path, prefix: str, compile_python: bool = False) -> Path:
    """A read-only copy of `source` in the state directory, named by its content.

    Sandboxes run as unprivileged host users, who cannot traverse directories such
    as /root (where a Lamina installed in a home directory keeps its files).
    With `compile_python`, its .py files get .pyc files for this server's
    interpreter (and so for every runtime of the same CPython 3.X, whose bytecode
    is the same): a sandbox cannot write them itself, and compiling in every
    environment costs each one its time and the compiler's memory."""
    base = state_dir()
    final = base / f"{prefix}-{_tree_key(source)}"
    if final.is_dir():
        return final

    def fill(staging: Path) -> None:
        shutil.copytree(source, staging, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
        if compile_python:
            # Checked against the source's mtime and size, which the copy keeps.
            compileall.compile_dir(staging, quiet=1,
                                   invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)

    return _staged_tree(final, fill)


def outbound_resolv_conf(etc_dir: Path) -> Path:
    """resolv.conf for sandboxes with outbound access: slirp4netns's DNS forwarder.

    The host's own nameserver may be a loopback address (systemd-resolved's
    127.0.0.53) that a sandbox cannot reach; the forwarder asks it for them.
    """
    return _write_once(etc_dir.parent / f"{etc_dir.name}.resolv.conf",
                       f"nameserver {SLIRP_DNS}\n".encode(), 0o644)


# Lambda's name for the environment itself, where extensions' Telemetry API
# listeners are reached (`http://sandbox.localdomain:PORT`).
SANDBOX_HOSTS = (
    "127.0.0.1\tlocalhost sandbox.localdomain\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
)


def sandbox_hosts(etc_dir: Path) -> Path:
    """The sandbox's /etc/hosts: loopback, under Lambda's names for it."""
    return _write_once(etc_dir.parent / f"{etc_dir.name}.hosts", SANDBOX_HOSTS.encode(), 0o644)


def _covered(path: str, mounted: list[str]) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounted)


# runc's defaults: files of /proc that show kernel memory or other tenants' activity
# are covered with an empty file, directories with an empty read-only tmpfs. (Its
# read-only paths, /proc/sys, /proc/sysrq-trigger, ..., are root's files, which an
# unprivileged sandbox user cannot write anyway.) Only those this kernel has
# (bubblewrap cannot create a mount point inside /proc) and others may read: each
# cover costs about 0.3 ms of a cold start, and the kernel already refuses the
# rest to an unprivileged uid. /proc/keys is left out: it lists only keys its
# reader may view, and the seccomp filter refuses every call that makes one.
MASKED_PROC_FILES = ("kcore", "latency_stats", "timer_list", "timer_stats",
                     "sched_debug", "interrupts")
MASKED_PROC_DIRS = ("acpi", "asound", "scsi")


def _readable_by_others(path: str) -> bool:
    try:
        return bool(os.stat(path).st_mode & 0o004)
    except OSError:
        return False


def _empty_file() -> Path:
    """An empty read-only file to cover /proc files with (runc uses /dev/null, which
    bubblewrap's binds would make unopenable: they are nodev)."""
    return _write_once(state_dir() / "empty", b"", 0o444)


def proc_masks_needed() -> tuple[list[str], list[str]]:
    """The names of the /proc files and directories to mask on this kernel (those
    that exist and others may read), for a sandbox that mounts its own /proc."""
    return ([name for name in MASKED_PROC_FILES
             if os.path.isfile(f"/proc/{name}") and _readable_by_others(f"/proc/{name}")],
            [name for name in MASKED_PROC_DIRS
             if os.path.isdir(f"/proc/{name}") and _readable_by_others(f"/proc/{name}")])


def _proc_masks() -> list[str]:
    args: list[str] = []
    empty = str(_empty_file())
    for name in MASKED_PROC_FILES:
        if os.path.isfile(f"/proc/{name}") and _readable_by_others(f"/proc/{name}"):
            args += ["--ro-bind", empty, f"/proc/{name}"]
    for name in MASKED_PROC_DIRS:
        if os.path.isdir(f"/proc/{name}") and _readable_by_others(f"/proc/{name}"):
            args += ["--tmpfs", f"/proc/{name}", "--remount-ro", f"/proc/{name}"]
    return args


def _host_view(spec: SandboxSpec, etc_dir: Path) -> list[str]:
    """The host's system directories, for runtimes that run on a host interpreter."""
    args: list[str] = []
    mounted: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
            mounted.append(path)
    args += ["--ro-bind", str(etc_dir), "/etc"]
    for system_path in spec.system_paths:
        # Only the prefix itself: binding /root/.pyenv/versions/3.11.7 shows that
        # one directory, the rest of /root stays absent.
        named, host = str(system_path), os.path.realpath(system_path)
        if not _covered(host, mounted):
            args += ["--ro-bind", host, host]
            mounted.append(host)
        if named != host and not _covered(named, mounted):
            args += ["--symlink", host, named]
    return args


def mount_args(spec: SandboxSpec, etc_dir: Path, resolv_conf: Path | None = None,
               tmp_dir: Path | None = None, extra: list[str] | None = None,
               mask_proc: bool = True) -> list[str]:
    """bubblewrap arguments building the sandbox's whole filesystem.

    With a runtime image, the image is `/` (read-only; it holds the mount points)
    and nothing of the host's file system is visible. `tmp_dir` is the disk-backed
    `/tmp` (ephemeral.py); without one, `/tmp` is a tmpfs of EphemeralStorage size.
    `extra` mounts (file systems under /mnt) come last, before `/` turns read-only.
    """
    if spec.root_image is not None:
        args = ["--ro-bind", str(spec.root_image), "/"]
    else:
        args = _host_view(spec, etc_dir)
    # Without masks for a SnapStart template: the kernel lets its forks mount a /proc
    # of their own only while an unobstructed one is in view; they mask theirs.
    args += ["--proc", "/proc", *(_proc_masks() if mask_proc else []), "--dev", "/dev"]
    if resolv_conf is not None:
        args += ["--ro-bind", str(resolv_conf), "/etc/resolv.conf"]
    args += ["--ro-bind", str(sandbox_hosts(etc_dir)), "/etc/hosts"]
    if spec.task_root is not None:
        args += ["--ro-bind", str(spec.task_root), "/var/task"]
    if spec.runtime_root is not None:
        args += ["--ro-bind", str(spec.runtime_root), "/var/runtime"]
    if spec.layers_root is not None:
        args += ["--ro-bind", str(spec.layers_root), "/opt"]
    if tmp_dir is not None:
        args += ["--bind", str(tmp_dir), "/tmp"]
    else:
        # --size applies to the next --tmpfs only; after it, it is silently ignored.
        args += ["--size", str(spec.ephemeral_storage_mb * 1024 * 1024), "--perms", "1777",
                 "--tmpfs", "/tmp"]
    args += extra or []
    # Everything outside /tmp is read-only, as on Lambda; /dev too, so there is no
    # writable /dev/shm (Lambda has none: multiprocessing's semaphores fail there too).
    return args + ["--remount-ro", "/dev", "--remount-ro", "/"]
