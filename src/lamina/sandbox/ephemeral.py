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
  a disk is a sparse copy of it (copy_file_range over its data extents), attached
  to a free loop device with LOOP_CONFIGURE (auto-cleared once the file system
  lets go of it) and mounted with mount(2): about 2 ms, against 80 ms (40 ms of
  CPU) for mkfs.ext4 and mount(8), which probes the file and scans every loop
  device in use on each call.
- A disk stays mounted on the host only until its sandbox has a copy: bubblewrap
  clones the host's mount namespace (the disk's mount included) before it reports
  its PID, and binds that copy on `/tmp`; the host's mount is detached right after
  the PID arrives (`detach`). Every new mount namespace starts as a copy of the
  whole host table, so a host mount kept per environment made each new sandbox
  slower the more ran (about 90 ms more per bubblewrap start with 1,000 extra
  mounts here); now the host holds only the disks made ahead and those of the
  sandboxes being launched. The disks' directory is a private mount of its own,
  so detaching on the host never reaches a sandbox's copy, even where the host's
  mounts propagate. When the sandbox's last process exits, its mount namespace,
  the file system and the loop device go with it.
- Disks are made ahead (a few per size in use) so a launch finds one ready; a
  used disk is deleted, never reused, so nothing of one environment's `/tmp`
  reaches the next. The sparse files take only the blocks written (mounted with
  `discard`, deleted files give their blocks back), under `<data dir>/ephemeral`;
  the mount points live under the state directory, which sandbox users can reach.
"""

from __future__ import annotations

import asyncio
import contextlib
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
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable

from lamina.sandbox.base import SandboxError

log = logging.getLogger("lamina.sandbox")

# Disks made ahead per size once that size has been asked for.
PREPARED_PER_SIZE = 4
MKFS = ("mkfs.ext4", "-q", "-F", "-m", "0", "-i", "65536",
        # No journal (nothing on /tmp survives the environment anyway) means no
        # jbd2 thread per mount; lazy init keeps mkfs to a few milliseconds.
        "-O", "^has_journal,^resize_inode", "-E", "lazy_itable_init=1,nodiscard")
# No set-uid programs or device files on /tmp; `discard` gives deleted files'
# blocks back to the sparse file.
MOUNT_FLAGS = 0x2 | 0x4  # MS_NOSUID | MS_NODEV
MOUNT_DATA = b"discard"
_MS_BIND, _MS_PRIVATE = 0x1000, 1 << 18
_MNT_DETACH = 0x2
_LOOP_CTL_GET_FREE = 0x4C82
_LOOP_CONFIGURE = 0x4C0A
_LO_FLAGS_AUTOCLEAR = 4
# struct loop_config: fd, block_size, struct loop_info64 (lo_flags at offset 52,
# lo_file_name[64] at 56; 232 bytes), 8 reserved u64.
_LOOP_CONFIG_SIZE = 4 + 4 + 232 + 64

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
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
    """An empty ext4 file system of `size_mb` in the sparse file `image`, mounted on
    the host at `mount_point` until its sandbox has its own copy."""
    size_mb: int
    image: Path
    mount_point: Path


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


def _mount(source: bytes, target: Path, fstype: bytes | None, flags: int,
           data: bytes | None) -> None:
    if _libc.mount(source, os.fsencode(target), fstype, flags, data) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"cannot mount on {target}: {os.strerror(code)}")


def _loop_mount(image: Path, mount_point: Path) -> None:
    """Mount `image`'s ext4 on `mount_point` through a loop device of its own."""
    loop, device = _attach_loop(image)
    try:
        _mount(device.encode(), mount_point, b"ext4", MOUNT_FLAGS, MOUNT_DATA)
    finally:
        os.close(loop)  # the mount holds the device now; without one, it clears


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


def _template(size_mb: int, images: Path, mounts: Path) -> Path:
    """The empty file system every disk of `size_mb` is copied from (made once):
    mkfs.ext4's output without lost+found (Lambda's /tmp starts empty)."""
    template = images / f"template-{size_mb}.ext4"
    with _template_lock:
        if template.exists():
            return template
        staging = images / f".template-{size_mb}-{uuid.uuid4().hex}.ext4"
        mount_point = mounts / f".template-{uuid.uuid4().hex}"
        with open(staging, "wb") as sparse:
            sparse.truncate(file_size_bytes(size_mb))
        try:
            _run([*MKFS, str(staging)])
            mount_point.mkdir()
            try:
                _loop_mount(staging, mount_point)
                try:
                    (mount_point / "lost+found").rmdir()
                finally:
                    _detach(mount_point)  # the superblock is written back by then
            finally:
                mount_point.rmdir()
            staging.rename(template)
        finally:
            staging.unlink(missing_ok=True)
        return template


def _make(size_mb: int, images: Path, mounts: Path) -> EphemeralDisk:
    name = uuid.uuid4().hex
    image, mount_point = images / f"{name}.ext4", mounts / name
    try:
        _copy_sparse(_template(size_mb, images, mounts), image)
        mount_point.mkdir(mode=0o755)
        _loop_mount(image, mount_point)
    except BaseException:
        image.unlink(missing_ok=True)
        if mount_point.exists():
            mount_point.rmdir()
        raise
    return EphemeralDisk(size_mb, image, mount_point)


def _private_mount(directory: Path) -> None:
    """`directory` as a private mount of its own (once): what is detached under it
    on the host stays mounted in the sandboxes' copies, whatever the host's
    propagation."""
    if os.path.ismount(directory):
        return
    _mount(os.fsencode(directory), directory, None, _MS_BIND, None)
    _mount(b"none", directory, None, _MS_PRIVATE, None)


def _unmount(mount_point: Path, image: Path | None) -> None:
    _detach(mount_point)
    try:
        mount_point.rmdir()
    except OSError:
        pass
    if image is not None:
        image.unlink(missing_ok=True)


def probe(images: Path, mounts: Path) -> str | None:
    """Why disk-backed /tmp cannot be had here, or None."""
    if shutil.which("mkfs.ext4") is None:
        return "mkfs.ext4 (e2fsprogs) is not installed"
    try:
        images.mkdir(parents=True, exist_ok=True)
        mounts.mkdir(parents=True, exist_ok=True)
        disk = _make(1, images, mounts)
    except (OSError, SandboxError) as error:
        return f"cannot loop-mount an ext4 file system: {error}"
    _unmount(disk.mount_point, disk.image)
    return None


class EphemeralDisks:
    """The /tmp disks of one server's sandboxes."""

    def __init__(self, images: Path, mounts: Path) -> None:
        self._images = images
        self._mounts = mounts
        self._ready: dict[int, list[EphemeralDisk]] = {}
        self._making: dict[int, int] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        images.mkdir(parents=True, exist_ok=True)
        mounts.mkdir(parents=True, exist_ok=True)
        _private_mount(mounts)

    @staticmethod
    def unmount_all(mounts: Path) -> None:
        """Unmount every disk under `mounts` (a crashed server's) and remove the dir."""
        try:
            leftovers = list(mounts.iterdir())
        except FileNotFoundError:
            return  # another server sharing the data dir reaped them first
        for mount_point in leftovers:
            _unmount(mount_point, None)
        _detach(mounts)
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
            disk = await asyncio.to_thread(_make, size_mb, self._images, self._mounts)
        except (OSError, SandboxError) as error:
            log.warning("could not prepare a %d MB /tmp disk: %s", size_mb, error)
            return
        finally:
            self._making[size_mb] -= 1
        self._ready.setdefault(size_mb, []).append(disk)

    def prepare(self, size_mb: int) -> None:
        """Make disks of this size ahead, in the background, up to PREPARED_PER_SIZE."""
        missing = PREPARED_PER_SIZE - len(self._ready.get(size_mb, ())) - self._making.get(size_mb, 0)
        for _ in range(missing):
            self._making[size_mb] = self._making.get(size_mb, 0) + 1
            self._spawn(self._prepare(size_mb))

    async def acquire(self, size_mb: int, owner: int) -> EphemeralDisk:
        """An empty disk of `size_mb`, its root owned by host uid/gid `owner`."""
        ready = self._ready.get(size_mb)
        disk = ready.pop() if ready else None
        self.prepare(size_mb)
        if disk is None:
            disk = await asyncio.to_thread(_make, size_mb, self._images, self._mounts)
        os.chown(disk.mount_point, owner, owner)
        os.chmod(disk.mount_point, 0o1777)
        return disk

    @staticmethod
    async def detach(disk: EphemeralDisk) -> None:
        """Unmount `disk` on the host once its sandbox's mount namespace holds a
        copy (bubblewrap reported its PID): the sandbox keeps it. Its mount point
        stays until `release` (removing it would detach the copy too)."""
        await asyncio.to_thread(_detach, disk.mount_point)

    def release(self, disk: EphemeralDisk) -> None:
        """Delete a disk once its sandbox is gone (its file system went with the
        sandbox's mount namespace; the file's blocks go when the loop device clears)."""
        _detach(disk.mount_point)  # a launch that failed before `detach`
        try:
            disk.mount_point.rmdir()
        except OSError as error:
            log.warning("could not remove the /tmp mount point %s: %s", disk.mount_point, error)
        disk.image.unlink(missing_ok=True)

    async def close(self) -> None:
        """Unmount and delete the disks made ahead (the server is stopping)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        disks = [disk for ready in self._ready.values() for disk in ready]
        self._ready.clear()
        for disk in disks:
            await asyncio.to_thread(_unmount, disk.mount_point, disk.image)
        await asyncio.to_thread(_detach, self._mounts)
        with contextlib.suppress(OSError):  # not empty: a sandbox still holds a disk
            self._mounts.rmdir()
