"""The last step of every image: the layout a Lambda execution environment expects.

The sandbox mounts an image read-only as `/`, so everything it mounts over (or
into) must already exist, and nothing in it should be writable or privileged:
the function's code, layers, `/tmp`, `/proc` and `/dev` come from the sandbox.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from lamina.images.recipes import GROUP, MOUNT_POINTS, PASSWD

# Left behind by package installation; no use in an image nothing installs into.
_LEFTOVERS = (
    "var/cache/apt", "var/lib/apt/lists", "var/cache/debconf/templates.dat-old",
    "var/cache/debconf/config.dat-old", "var/log", "usr/share/man", "usr/share/info",
    "usr/share/locale", "usr/share/lintian", "usr/share/bash-completion",
)


def finish_rootfs(root: Path, *, users: bool = True, prune: bool = True) -> None:
    """Give `root` Lambda's mount points, users and a read-only-safe tree.

    `users=False` keeps the image's own /etc/passwd and /etc/group (an image from a
    registry knows its own users) unless it has none. `prune=False` keeps what
    package installation left (a user's container image is theirs to trim).
    """
    for leftover in _LEFTOVERS if prune else ():
        path = root / leftover
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
    (root / "var/log").mkdir(mode=0o755, parents=True, exist_ok=True)
    # /dev comes from the sandbox: device nodes have no place in a cache directory.
    dev = root / "dev"
    if dev.is_dir() and not dev.is_symlink():
        shutil.rmtree(dev)
    for mount_point in MOUNT_POINTS:
        path = root / mount_point
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            path.unlink()
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.chmod(0o755)
    etc = root / "etc"
    etc.mkdir(mode=0o755, exist_ok=True)
    # Bound over by the sandbox (it must be a file to bind a file onto).
    _write(etc / "resolv.conf", "")
    _write(etc / "hostname", "localhost\n")
    if not (etc / "hosts").is_file():
        _write(etc / "hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    if users or not (etc / "passwd").is_file():
        _write(etc / "passwd", PASSWD)
    if users or not (etc / "group").is_file():
        _write(etc / "group", GROUP)
    _harden(root)


def _write(path: Path, text: str) -> None:
    if path.is_symlink() or path.exists():
        path.unlink()
    path.write_text(text)
    path.chmod(0o644)


def _harden(root: Path) -> None:
    """Root-owned, nothing world-writable, no setuid or setgid bits: functions run
    as an unprivileged user and must not be able to change or exploit the image."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, ""]:
            path = os.path.join(dirpath, name) if name else dirpath
            info = os.lstat(path)
            if info.st_uid != 0 or info.st_gid != 0:
                os.lchown(path, 0, 0)
            if stat.S_ISLNK(info.st_mode):
                continue
            mode = stat.S_IMODE(info.st_mode)
            safe = mode & ~(stat.S_IWOTH | stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX)
            if safe != mode:
                os.chmod(path, safe)


def tree_size(root: Path) -> int:
    """Bytes used by the files under `root` (hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            info = os.lstat(os.path.join(dirpath, name))
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
    return total
