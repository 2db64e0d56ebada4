"""File systems (EFS access points) mounted into a namespaced sandbox.

The problem: a sandbox runs as an unprivileged host uid of its own, different for
every environment (users.py), and its user namespace maps only Lambda's uid 993
onto it. Files a function writes to a shared directory would belong to whichever
host uid its sandbox happened to get, and another environment (another uid) could
not write them. EFS access points instead make every file operation run as one
POSIX identity (PosixUser).

The answer is an idmapped mount (Linux 5.12+, `mount_setattr(MOUNT_ATTR_IDMAP)`):
the server clones the access point's root directory as a detached mount whose
idmap translates the access point's uid/gid on disk to the sandbox's host uid, and
back. Inside, the function owns what the access point's user owns; on disk
everything it creates belongs to the access point's uid/gid, so any environment
of any function that mounts the same access point shares the files. The clone is
moved under the state directory and bubblewrap binds it at LocalMountPath.

Confinement: the root directory is opened with `openat2(RESOLVE_BENEATH |
RESOLVE_NO_SYMLINKS)` below the file system's directory, so a symbolic link a
function planted cannot make another access point's root point elsewhere on the
host; the mount shows nothing above that directory, and `..` at a mount's root
stays there.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import time
from pathlib import Path

from lamina.sandbox.base import FileSystemMount, SandboxError

# x86_64 and aarch64 share these (the new mount API came after the tables merged).
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_OPENAT2 = 437
SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE = 1
AT_EMPTY_PATH = 0x1000
AT_FDCWD = -100
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x00100000
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise SandboxError(errno, f"{what}: {os.strerror(errno)}")
    return result


def open_beneath(base: Path, path: str) -> int:
    """An O_PATH fd of the directory `path` below `base`, reached without following
    any symbolic link and without leaving `base`."""
    base_fd = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        relative = path.strip("/") or "."
        how = _OpenHow(os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0,
                       RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
        return _check(_libc.syscall(SYS_OPENAT2, base_fd, relative.encode(), ctypes.byref(how),
                                    ctypes.sizeof(how)), f"cannot open {path} in {base}")
    finally:
        os.close(base_fd)


def _user_namespace(uid: int, gid: int, host_id: int) -> int:
    """An fd of a user namespace mapping uid/gid (on disk) to host_id (the sandbox's)."""
    holder = subprocess.Popen(["unshare", "--user", "cat"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        own = os.readlink("/proc/self/ns/user")
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{holder.pid}/ns/user") == own:
            if time.monotonic() > deadline or holder.poll() is not None:
                raise SandboxError("could not create a user namespace for an idmapped mount")
            time.sleep(0.0005)
        with open(f"/proc/{holder.pid}/uid_map", "w") as out:
            out.write(f"{uid} {host_id} 1\n")
        with open(f"/proc/{holder.pid}/gid_map", "w") as out:
            out.write(f"{gid} {host_id} 1\n")
        return os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.kill()
        holder.wait()


def mount_for(mount: FileSystemMount, host_id: int, at: Path) -> Path:
    """The access point's root directory, idmapped for a sandbox running as host_id,
    mounted at `at` (created); unmount with `unmount`."""
    source = open_beneath(mount.file_system_dir, mount.path)
    userns = -1
    tree = -1
    try:
        userns = _user_namespace(mount.uid, mount.gid, host_id)
        tree = _check(_libc.syscall(SYS_OPEN_TREE, source, b"",
                                    OPEN_TREE_CLONE | os.O_CLOEXEC | AT_EMPTY_PATH),
                      "open_tree")
        attr = _MountAttr(MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, userns)
        _check(_libc.syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH, ctypes.byref(attr),
                             ctypes.sizeof(attr)), "mount_setattr (idmapped mounts need "
               "Linux 5.12+ and a file system that supports them)")
        # The environment's directory is its sandbox user's alone: bubblewrap (running
        # as that uid) must reach the mount; no other host user needs to.
        at.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chown(at.parent, host_id, host_id)
        at.mkdir(exist_ok=True, mode=0o755)
        _check(_libc.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, str(at).encode(),
                             MOVE_MOUNT_F_EMPTY_PATH), "move_mount")
        return at
    finally:
        for fd in (source, userns, tree):
            if fd >= 0:
                os.close(fd)


def unmount_all(server_dir: Path) -> None:
    """Unmount what a crashed server left mounted for its environments."""
    for environment in list(server_dir.iterdir()):
        for at in list(environment.iterdir()):
            try:
                unmount(at)
            except OSError:
                pass
    try:
        server_dir.rmdir()
    except OSError:
        pass


def unmount(at: Path) -> None:
    """Detach what mount_for mounted at `at`, and remove the (then empty) directory."""
    if _libc.umount2(str(at).encode(), MNT_DETACH) != 0 and ctypes.get_errno() not in (22, 2):
        raise SandboxError(ctypes.get_errno(), f"cannot unmount {at}")
    # Never rmtree: were it still mounted, that would delete shared files. The
    # environment's directory goes with its last mount point.
    for directory in (at, at.parent):
        try:
            os.rmdir(directory)
        except OSError:
            break
