"""Disk-backed `/tmp` of `EphemeralStorage` size, as Lambda has it.

Lambda's `/tmp` is disk, 512-10,240 MB, and not part of the function's memory: a
128 MB function may download and unpack 500 MB there. A tmpfs cannot do that (its
pages are memory, charged to the sandbox's memory cgroup, and never reclaimable
without swap), and this kernel has no ext4 quota support for per-directory limits.
So each environment gets a small ext4 file system of its own, in a sparse file,
loop-mounted: the kernel enforces the size (ENOSPC past it), and the page cache
of its files is reclaimable, so writing more than MemorySize to `/tmp` is not an
OOM kill.

How a disk is made and mounted, and why so:
- mkfs.ext4 runs once per size, for a template (about 130 KB of blocks for 512 MB);
  a disk is a sparse copy of it (copy_file_range over its data extents, under a
  millisecond). Copies share the template's file-system UUID, which nothing reads.
- The file system is mounted in the sandbox's own mount namespace only, on its
  `/tmp`, while bubblewrap waits on its block fd (`mount_inside`): attached to a
  free loop device with LOOP_CONFIGURE (auto-cleared when the file system goes),
  mounted detached with fsopen/fsmount, and moved onto `/tmp` by a thread that
  has joined that namespace. Nothing is mounted on the host: every new mount
  namespace starts as a copy of its creator's, so a host mount per environment
  made each new sandbox slower the more were running (about 90 ms more per
  bubblewrap start with 1,000 extra mounts here), and mount(8) scanned every loop
  device in use on each call. When the sandbox's last process exits, its mount
  namespace, the file system and the loop device go with it.
- Disks are copied ahead (a few per size in use) so a launch finds one ready; a
  used disk is deleted, never reused, so nothing of one environment's `/tmp`
  reaches the next. The sparse files take only the blocks written (mounted with
  `discard`, deleted files give their blocks back), under `<data dir>/ephemeral`.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import logging
import math
import os
import shutil
import struct
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable

from lamina.sandbox.base import SandboxError

log = logging.getLogger("lamina.sandbox")

# How long bubblewrap may take to build a sandbox's file system (its launch timeout).
SETUP_TIMEOUT_S = 10.0
# Disks copied ahead per size once that size has been asked for.
PREPARED_PER_SIZE = 4
MKFS = ("mkfs.ext4", "-q", "-F", "-m", "0", "-i", "65536",
        # No journal (nothing on /tmp survives the environment anyway) means no
        # jbd2 thread per mount; lazy init keeps mkfs to a few milliseconds.
        "-O", "^has_journal,^resize_inode", "-E", "lazy_itable_init=1,nodiscard")
# No set-uid programs or device files on /tmp (and `discard`, below, gives deleted
# files' blocks back to the sparse file).
_MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x2, 0x4
_MNT_DETACH = 0x2
_LOOP_CTL_GET_FREE = 0x4C82
_LOOP_CONFIGURE = 0x4C0A
_LO_FLAGS_AUTOCLEAR = 4
# struct loop_config: fd, block_size, struct loop_info64 (lo_flags at offset 52,
# lo_file_name[64] at 56; 232 bytes), 8 reserved u64.
_LOOP_CONFIG_SIZE = 4 + 4 + 232 + 64
# The new mount API's system calls: one numbering on every architecture.
_SYS_MOVE_MOUNT, _SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 429, 430, 431, 432
_FSOPEN_CLOEXEC = _FSMOUNT_CLOEXEC = 1
_FSCONFIG_SET_FLAG, _FSCONFIG_SET_STRING, _FSCONFIG_CMD_CREATE = 0, 1, 6
_MOVE_MOUNT_F_EMPTY_PATH, _MOVE_MOUNT_T_SYMLINKS = 0x4, 0x10
_AT_FDCWD = -100
_CLONE_FS = 0x200
_CLONE_NEWNS = 0x20000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long
# One template per size, made once (by whichever thread needs it first).
_template_lock = threading.Lock()


def file_size_bytes(size_mb: int) -> int:
    """The sparse file's size for `size_mb` writable MiB (and less than half a MiB
    more): ext4 keeps 0.4 % of its blocks for its own tables and holds back 2 % of
    the rest, at most 16 MiB, for delayed allocation (measured from 24 MiB to
    10 GiB: statvfs's f_bavail then lies within [size_mb, size_mb + 0.5])."""
    target = size_mb + 0.5
    usable = target / 0.98 if target / 0.98 * 0.02 < 16 else target + 16
    return math.ceil(usable / 0.996 * 256) * 4096


@dataclass(eq=False)
class EphemeralDisk:
    """An empty ext4 file system of `size_mb` in the sparse file `image`."""
    size_mb: int
    image: Path


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip() or f"exit code {result.returncode}"
        raise SandboxError(f"{argv[0]}: {message}")


def _loop_config(backing_fd: int, image: Path) -> bytes:
    config = bytearray(_LOOP_CONFIG_SIZE)
    struct.pack_into("=I", config, 0, backing_fd)
    struct.pack_into("=I", config, 8 + 52, _LO_FLAGS_AUTOCLEAR)
    name = os.fsencode(image)[:63]
    config[8 + 56:8 + 56 + len(name)] = name
    return bytes(config)


def _attach_loop(image: Path) -> tuple[int, str]:
    """A free loop device backed by `image` (auto-cleared once its last user, the
    file system or this fd, lets go): its open fd and path."""
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(100):
                number = fcntl.ioctl(control, _LOOP_CTL_GET_FREE)
                device = f"/dev/loop{number}"
                loop = os.open(device, os.O_RDWR | os.O_CLOEXEC)
                try:
                    fcntl.ioctl(loop, _LOOP_CONFIGURE, _loop_config(backing, image))
                except OSError as error:
                    os.close(loop)
                    if error.errno == errno.EBUSY:  # another process took it first
                        continue
                    raise SandboxError(f"cannot attach {image} to {device}: {error}") from error
                return loop, device
            raise SandboxError("cannot attach a loop device: every free one was taken first")
        finally:
            os.close(control)
    finally:
        os.close(backing)


def _syscall(number: int, *args: object) -> int:
    result = int(_libc.syscall(number, *args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _detached_mount(image: Path) -> int:
    """`image`'s ext4 as a mount attached nowhere yet (fsmount): its fd."""
    loop, device = _attach_loop(image)
    try:
        context = _syscall(_SYS_FSOPEN, b"ext4", ctypes.c_uint(_FSOPEN_CLOEXEC))
        try:
            _syscall(_SYS_FSCONFIG, context, ctypes.c_uint(_FSCONFIG_SET_STRING), b"source",
                     device.encode(), ctypes.c_int(0))
            _syscall(_SYS_FSCONFIG, context, ctypes.c_uint(_FSCONFIG_SET_FLAG), b"discard",
                     None, ctypes.c_int(0))
            _syscall(_SYS_FSCONFIG, context, ctypes.c_uint(_FSCONFIG_CMD_CREATE), None, None,
                     ctypes.c_int(0))
            return _syscall(_SYS_FSMOUNT, context, ctypes.c_uint(_FSMOUNT_CLOEXEC),
                            ctypes.c_uint(_MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV))
        finally:
            os.close(context)
    finally:
        os.close(loop)


def _wait_for_setup(pid: int, timeout_s: float) -> None:
    """Wait until bubblewrap's sandbox process `pid` has built its file system.

    Unprivileged bubblewrap reports its PID before it mounts anything; it drops
    its capabilities right after the last step (pivot_root, the old root
    detached, chroot) and before it waits on its block fd. A mount made earlier
    could land under the old root and vanish with it."""
    deadline = time.monotonic() + timeout_s
    status = f"/proc/{pid}/status"
    pause = 0.0005  # setting up takes bubblewrap 10-30 ms: a few dozen looks at most
    while True:
        with open(status, "rb") as file:  # FileNotFoundError: bubblewrap gave up
            for line in file:
                if line.startswith(b"CapEff:"):
                    if int(line.split()[1], 16) == 0:
                        return
                    break
        if time.monotonic() > deadline:
            raise OSError(errno.ETIMEDOUT, "bubblewrap did not finish setting up the sandbox")
        time.sleep(pause)
        pause = min(0.002, pause * 1.5)


def _mount_in_namespace(disk: EphemeralDisk, pid: int, target: str, owner: int) -> None:
    """Runs on a thread of its own, which ends right after: `disk` mounted on
    `target` in `pid`'s mount namespace, its root owned by host uid/gid `owner`."""
    mount = _detached_mount(disk.image)
    try:
        root = f"/proc/thread-self/fd/{mount}"
        os.chown(root, owner, owner)
        os.chmod(root, 0o1777)
        _wait_for_setup(pid, SETUP_TIMEOUT_S)
        namespace = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        try:
            # A thread may enter another mount namespace only with a file-system
            # context (root, cwd) of its own; this one ends in that namespace.
            if _libc.unshare(_CLONE_FS) != 0 or _libc.setns(namespace, _CLONE_NEWNS) != 0:
                code = ctypes.get_errno()
                raise OSError(code, f"cannot enter the sandbox's mount namespace: {os.strerror(code)}")
        finally:
            os.close(namespace)
        # `target` is looked up from the sandbox's root now: a symbolic link in an
        # image resolves inside the sandbox, as bubblewrap's own mounts do.
        _syscall(_SYS_MOVE_MOUNT, mount, b"", ctypes.c_int(_AT_FDCWD), target.encode(),
                 ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_SYMLINKS))
    finally:
        os.close(mount)  # unmounted and its loop device cleared, unless moved


async def mount_inside(disk: EphemeralDisk, pid: int, target: str, owner: int) -> None:
    """Mount `disk` on `target` (an existing directory) in the mount namespace of
    `pid`, a sandbox's process, its root owned by `owner` with /tmp's mode 1777."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def deliver(error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def run() -> None:
        try:
            _mount_in_namespace(disk, pid, target, owner)
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(deliver, error)
        else:
            loop.call_soon_threadsafe(deliver, None)

    threading.Thread(target=run, name=f"lamina-tmp-{pid}", daemon=True).start()
    try:
        await done
    except OSError as error:  # e.g. the sandbox is already gone: bubblewrap failed
        raise OSError(error.errno, f"cannot mount /tmp in the sandbox: {error.strerror}") from error


def _detach(mount_point: Path) -> None:
    """Unmount lazily (a sandbox still dying may hold it); its loop device clears
    itself once the file system is released."""
    if _libc.umount2(os.fsencode(mount_point), _MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount point
            log.warning("could not unmount %s: %s", mount_point, os.strerror(code))


def _copy_sparse(source: Path, target: Path) -> None:
    """`target`: a copy of sparse `source` holding only its data extents."""
    with open(source, "rb") as reader, open(target, "xb") as writer:
        size = os.fstat(reader.fileno()).st_size
        writer.truncate(size)
        offset = 0
        while offset < size:
            try:
                start = os.lseek(reader.fileno(), offset, os.SEEK_DATA)
            except OSError as error:
                if error.errno == errno.ENXIO:  # no data past offset
                    break
                raise
            end = os.lseek(reader.fileno(), start, os.SEEK_HOLE)
            while start < end:
                copied = os.copy_file_range(reader.fileno(), writer.fileno(), end - start,
                                            start, start)
                if copied == 0:
                    raise OSError(errno.EIO, f"short copy of {source}")
                start += copied
            offset = end


def _template(size_mb: int, images: Path) -> Path:
    """The empty file system every disk of `size_mb` is copied from (made once):
    mkfs.ext4's output without lost+found (Lambda's /tmp starts empty), removed
    through a mount attached nowhere."""
    template = images / f"template-{size_mb}.ext4"
    with _template_lock:
        if template.exists():
            return template
        staging = images / f".template-{size_mb}-{uuid.uuid4().hex}.ext4"
        with open(staging, "wb") as sparse:
            sparse.truncate(file_size_bytes(size_mb))
        try:
            _run([*MKFS, str(staging)])
            mount = _detached_mount(staging)
            try:
                os.rmdir(f"/proc/self/fd/{mount}/lost+found")
            finally:
                os.close(mount)  # unmounted (the superblock written back) before this returns
            staging.rename(template)
        finally:
            staging.unlink(missing_ok=True)
        return template


def _make(size_mb: int, images: Path) -> EphemeralDisk:
    image = images / f"{uuid.uuid4().hex}.ext4"
    try:
        _copy_sparse(_template(size_mb, images), image)
    except BaseException:
        image.unlink(missing_ok=True)
        raise
    return EphemeralDisk(size_mb, image)


def _unmount(mount_point: Path, image: Path | None) -> None:
    """A disk an earlier server mounted on the host, as disks once were."""
    _detach(mount_point)
    try:
        mount_point.rmdir()
    except OSError:
        pass
    if image is not None:
        image.unlink(missing_ok=True)


def probe(images: Path) -> str | None:
    """Why disk-backed /tmp cannot be had here, or None."""
    if shutil.which("mkfs.ext4") is None:
        return "mkfs.ext4 (e2fsprogs) is not installed"
    try:
        images.mkdir(parents=True, exist_ok=True)
        disk = _make(1, images)
        try:
            os.close(_detached_mount(disk.image))
        finally:
            disk.image.unlink(missing_ok=True)
    except (OSError, SandboxError) as error:
        return f"cannot loop-mount an ext4 file system: {error}"
    return None


class EphemeralDisks:
    """The /tmp disks of one server's sandboxes."""

    def __init__(self, images: Path) -> None:
        self._images = images
        self._ready: dict[int, list[EphemeralDisk]] = {}
        self._making: dict[int, int] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        images.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def unmount_all(mounts: Path) -> None:
        """Unmount every disk under `mounts` (where servers before this one's
        version mounted them on the host, one dir per server) and remove the dir."""
        try:
            leftovers = list(mounts.iterdir())
        except FileNotFoundError:
            return  # another server sharing the data dir reaped them first
        for mount_point in leftovers:
            _unmount(mount_point, None)
        try:
            mounts.rmdir()
        except OSError:
            pass

    def reap_leftovers(self) -> None:
        """Delete the files a crashed earlier server with this data dir left."""
        for image in self._images.glob("*.ext4"):
            image.unlink(missing_ok=True)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prepare(self, size_mb: int) -> None:
        try:
            disk = await asyncio.to_thread(_make, size_mb, self._images)
        except (OSError, SandboxError) as error:
            log.warning("could not prepare a %d MB /tmp disk: %s", size_mb, error)
            return
        finally:
            self._making[size_mb] -= 1
        self._ready.setdefault(size_mb, []).append(disk)

    def prepare(self, size_mb: int) -> None:
        """Copy disks of this size ahead, in the background, up to PREPARED_PER_SIZE."""
        missing = PREPARED_PER_SIZE - len(self._ready.get(size_mb, ())) - self._making.get(size_mb, 0)
        for _ in range(missing):
            self._making[size_mb] = self._making.get(size_mb, 0) + 1
            self._spawn(self._prepare(size_mb))

    async def acquire(self, size_mb: int) -> EphemeralDisk:
        """An empty disk of `size_mb`, for one sandbox (mount_inside mounts it)."""
        ready = self._ready.get(size_mb)
        disk = ready.pop() if ready else None
        self.prepare(size_mb)
        if disk is None:
            disk = await asyncio.to_thread(_make, size_mb, self._images)
        return disk

    def release(self, disk: EphemeralDisk) -> None:
        """Delete a disk once its sandbox is gone (its file system went with the
        sandbox's mount namespace; the file's blocks go when the loop device clears)."""
        disk.image.unlink(missing_ok=True)

    async def close(self) -> None:
        """Delete the disks made ahead (the server is stopping)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for ready in self._ready.values():
            for disk in ready:
                disk.image.unlink(missing_ok=True)
        self._ready.clear()
