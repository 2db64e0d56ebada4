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

import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

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


def _state_dir() -> Path:
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


def build_etc() -> Path:
    """The sandbox's /etc, copied from the host's current files (reused if unchanged)."""
    base = _state_dir()
    final = base / f"etc-{_source_key()}"
    if final.is_dir():
        return final
    staging = Path(tempfile.mkdtemp(dir=base, prefix=".etc-"))
    try:
        for entry in ETC_ENTRIES:
            source = Path("/etc") / entry
            if source.exists():
                _copy_entry(source, staging / entry)
        (staging / "passwd").write_text(PASSWD)
        (staging / "group").write_text(GROUP)
        for directory, _, files in os.walk(staging):
            os.chmod(directory, 0o755)
            for name in files:
                os.chmod(os.path.join(directory, name), 0o644)
        try:
            staging.rename(final)
        except OSError:
            if not final.is_dir():  # not just another server winning the same race
                raise
        return final
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def outbound_resolv_conf(etc_dir: Path) -> Path:
    """resolv.conf for sandboxes with outbound access: slirp4netns's DNS forwarder.

    The host's own nameserver may be a loopback address (systemd-resolved's
    127.0.0.53) that a sandbox cannot reach; the forwarder asks it for them.
    """
    path = etc_dir.parent / f"{etc_dir.name}.resolv.conf"
    if not path.exists():
        staging = path.with_suffix(f".{os.getpid()}")
        staging.write_text(f"nameserver {SLIRP_DNS}\n")
        staging.chmod(0o644)
        staging.rename(path)
    return path


def _covered(path: str, mounted: list[str]) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounted)


def mount_args(spec: SandboxSpec, etc_dir: Path, resolv_conf: Path | None = None) -> list[str]:
    """bubblewrap arguments building the sandbox's whole filesystem."""
    args = ["--proc", "/proc", "--dev", "/dev"]
    mounted: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
            mounted.append(path)
    args += ["--ro-bind", str(etc_dir), "/etc"]
    if resolv_conf is not None:
        args += ["--ro-bind", str(resolv_conf), "/etc/resolv.conf"]
    for system_path in spec.system_paths:
        # Only the prefix itself: binding /root/.pyenv/versions/3.11.7 shows that
        # one directory, the rest of /root stays absent.
        named, host = str(system_path), os.path.realpath(system_path)
        if not _covered(host, mounted):
            args += ["--ro-bind", host, host]
            mounted.append(host)
        if named != host and not _covered(named, mounted):
            args += ["--symlink", host, named]
    args += ["--ro-bind", str(spec.task_root), "/var/task",
             "--ro-bind", str(spec.runtime_root), "/var/runtime"]
    if spec.layers_root is not None:
        args += ["--ro-bind", str(spec.layers_root), "/opt"]
    # --size applies to the next --tmpfs only; after it, it is silently ignored.
    args += ["--size", str(spec.ephemeral_storage_mb * 1024 * 1024), "--perms", "1777",
             "--tmpfs", "/tmp"]
    # Everything outside /tmp is read-only, as on Lambda.
    return args + ["--remount-ro", "/"]
