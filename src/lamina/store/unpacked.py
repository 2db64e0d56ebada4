"""Code blobs unpacked on disk, once per content, for execution environments.

`unpacked_dir` gives the directory a function's zip unpacks to, for /var/task;
`merged_layers_dir` gives an ordered list of layers unpacked into one tree, for
/opt. Both are content-addressed caches shared by every environment that needs the
same bytes, built in a temporary directory and renamed into place, so a reader
never sees a half-built tree and a crash leaves only a `.tmp-*` to sweep.
`UnpackedCode` lists those trees with their disk usage and removes them (what may
be removed, and when, is decided in control.code_storage).

A package's entries are checked once, by `package_layout`, both at upload
(control.packages, so a package that cannot be unpacked is refused there, never at
a cold start) and again here while unpacking. Symbolic links are kept as they are,
whatever they point at, as on Lambda: they are resolved only inside the sandbox,
where /var/task and /opt are the function's own code and layers and / is the
runtime's, never the host's. Unpacking never follows one: every path is opened a
component at a time relative to its parent's descriptor with O_NOFOLLOW, so no
write can pass through a link, wherever the link points.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import os
import shutil
import stat
import tempfile
import threading
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lamina.limits import FILE_NAME_MAX_BYTES, PACKAGE_MAX_DEPTH, PATH_MAX_BYTES
from lamina.store.blobs import BlobStore

_CHUNK = 1024 * 1024
# Zips made on Windows carry no Unix mode; Lambda's defaults for those.
_DEFAULT_FILE_MODE = 0o644
_DIR_MODE = 0o755
# The longest entry path that still fits PATH_MAX (with its NUL) under /var/task.
MAX_ENTRY_PATH_BYTES = PATH_MAX_BYTES - len("/var/task/") - 1
# A symbolic link's target is at most PATH_MAX - 1 bytes (readlink's limit).
MAX_LINK_TARGET_BYTES = PATH_MAX_BYTES - 1
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LAYERS_PREFIX = "opt-"
_BUILD_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
_SPECIAL_FILES = {
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


class UnsafePackageError(ValueError):
    """A package that cannot be unpacked exactly and safely: an entry that would
    escape its directory or write through a symbolic link, a name the file system
    cannot hold, a device file, a path that is both a file and a directory."""


class EntryKind(enum.Enum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symbolic link"


@dataclass(frozen=True)
class PackageEntry:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]
    kind: EntryKind
    # Permission bits for a file (no setuid/setgid from an uploaded zip).
    mode: int = _DEFAULT_FILE_MODE
    # A symbolic link's target, kept byte for byte.
    target: bytes = b""


def shown_name(name: str, limit: int = 80) -> str:
    """An entry name for an error message: a 5,000-character name is cut short."""
    return name if len(name) <= limit else f"{name[:limit // 2]}...{name[-limit // 4:]}"


def _refuse(name: str, problem: str) -> UnsafePackageError:
    return UnsafePackageError(f"the entry '{shown_name(name)}' {problem}")


def _member_parts(name: str) -> tuple[str, ...]:
    path = PurePosixPath(name.replace("\\", "/"))
    parts = tuple(p for p in path.parts if p not in ("", "."))
    # A Windows drive ("C:") in the first part is absolute on the machine that made it.
    if path.is_absolute() or ".." in parts or (parts and parts[0].endswith(":")):
        raise _refuse(name, "points outside the package")
    return parts


def _entry_kind(info: zipfile.ZipInfo) -> tuple[EntryKind, int]:
    # Only zips made on Unix (create_system 3) carry a mode in the high bits.
    unix_mode = info.external_attr >> 16 if info.create_system == 3 else 0
    file_type = stat.S_IFMT(unix_mode)
    if info.is_dir() or file_type == stat.S_IFDIR:
        return EntryKind.DIRECTORY, _DIR_MODE
    if file_type == stat.S_IFLNK:
        return EntryKind.SYMLINK, 0o777
    if file_type in (0, stat.S_IFREG):
        return EntryKind.FILE, (unix_mode & 0o777) or _DEFAULT_FILE_MODE
    what = _SPECIAL_FILES.get(file_type, f"of unknown file type {file_type:#o}")
    raise _refuse(info.filename, f"is {what}; a package holds only files, directories "
                                 "and symbolic links")


def _check_names(info: zipfile.ZipInfo, parts: tuple[str, ...]) -> None:
    name = info.filename
    if "\x00" in info.orig_filename:
        raise _refuse(info.orig_filename.replace("\x00", "\\0"), "has a NUL byte in its name")
    for part in parts:
        if len(os.fsencode(part)) > FILE_NAME_MAX_BYTES:
            raise _refuse(name, f"has a name of {len(os.fsencode(part))} bytes; file names "
                                f"are at most {FILE_NAME_MAX_BYTES} bytes")
    size = len(os.fsencode("/".join(parts)))
    if size > MAX_ENTRY_PATH_BYTES:
        raise _refuse(name, f"has a path of {size} bytes; at most {MAX_ENTRY_PATH_BYTES} "
                            f"fit under /var/task (PATH_MAX is {PATH_MAX_BYTES})")
    if len(parts) > PACKAGE_MAX_DEPTH:
        raise _refuse(name, f"is nested {len(parts)} directories deep; at most "
                            f"{PACKAGE_MAX_DEPTH} are allowed")


def _link_target(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    if info.file_size > MAX_LINK_TARGET_BYTES:
        raise _refuse(info.filename, f"is a symbolic link to a path of {info.file_size} bytes; "
                                     f"at most {MAX_LINK_TARGET_BYTES} are allowed")
    target = archive.read(info)
    if not target or b"\x00" in target:
        raise _refuse(info.filename, "is a symbolic link without a valid target")
    return target


def package_layout(archive: zipfile.ZipFile) -> list[PackageEntry]:
    """Every entry of a package, in order, checked so that unpacking cannot fail or
    escape; UnsafePackageError names the first entry that would. Reads the targets
    of symbolic links (zipfile's own errors for corrupt data pass through).

    Two entries of the same name are allowed (the later one wins, as with
    `unzip -o`) unless one is a directory and the other is not; an entry below a
    symbolic link of the same package is refused, in either order.
    """
    entries: list[PackageEntry] = []
    kinds: dict[tuple[str, ...], EntryKind] = {}
    for info in archive.infolist():
        parts = _member_parts(info.filename)
        _check_names(info, parts)
        kind, mode = _entry_kind(info)
        if not parts:  # "./": the package root itself
            continue
        for depth in range(1, len(parts)):
            above = kinds.setdefault(parts[:depth], EntryKind.DIRECTORY)
            if above is EntryKind.SYMLINK:
                raise _refuse(info.filename, f"would be written through the symbolic link "
                                             f"'{shown_name('/'.join(parts[:depth]))}'")
            if above is EntryKind.FILE:
                raise _refuse(info.filename, f"needs '{shown_name('/'.join(parts[:depth]))}' "
                                             "to be a directory, and the package has it as a file")
        before = kinds.get(parts)
        if before is not None and (before is EntryKind.DIRECTORY) != (kind is EntryKind.DIRECTORY):
            raise _refuse(info.filename, f"is both a {before.value} and a {kind.value}")
        kinds[parts] = kind
        target = _link_target(archive, info) if kind is EntryKind.SYMLINK else b""
        entries.append(PackageEntry(info, parts, kind, mode, target))
    return entries


# -- unpacking ------------------------------------------------------------------------


def _remove_at(dir_fd: int, name: str) -> None:
    """Remove whatever is at name (file, link or whole directory) without following links."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except IsADirectoryError:
        shutil.rmtree(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _open_dir(root_fd: int, parts: tuple[str, ...], replace: bool) -> int:
    """A descriptor of root/parts, creating missing directories. A file or link in the
    way is replaced (a later layer's directory wins) or, within one package, refused."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(part, _DIR_MODE, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as error:
                # ENOTDIR: a file is in the way; ELOOP: a symbolic link is.
                if error.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                if not replace:
                    raise UnsafePackageError(
                        f"'{shown_name('/'.join(parts))}' would be written through a file "
                        "or symbolic link") from None
                _remove_at(fd, part)
                os.mkdir(part, _DIR_MODE, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _extract(archive_path: Path, root_fd: int, replace: bool = False) -> None:
    """Unpack a zip below root_fd. `replace`: lay it over what is there (a later
    layer's entries replace an earlier one's, whatever their kinds)."""
    with zipfile.ZipFile(archive_path) as archive:
        for entry in package_layout(archive):
            if entry.kind is EntryKind.DIRECTORY:
                os.close(_open_dir(root_fd, entry.parts, replace))
                continue
            parent = _open_dir(root_fd, entry.parts[:-1], replace)
            try:
                name = entry.parts[-1]
                # A later entry of the same name wins, as with unzip -o.
                _remove_at(parent, name)
                if entry.kind is EntryKind.SYMLINK:
                    os.symlink(entry.target, name, dir_fd=parent)
                    continue
                # O_NOFOLLOW|O_EXCL: never write through a link, never reuse a file.
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600, dir_fd=parent)
                with os.fdopen(fd, "wb") as out, archive.open(entry.info) as member:
                    shutil.copyfileobj(member, out, _CHUNK)
                    os.fchmod(out.fileno(), entry.mode)
            finally:
                os.close(parent)


def _publish(build: Path, target: Path) -> None:
    """Rename a finished tree into place; if another builder won the race, keep theirs."""
    try:
        os.rename(build, target)
    except OSError:
        if not target.is_dir():
            raise
        shutil.rmtree(build, ignore_errors=True)


def _build(root: Path, target: Path, fill: Callable[[int], None]) -> Path:
    if target.is_dir():
        # The tree's modification time is when it was last handed out, for eviction.
        _touch(target)
        return target
    root.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=root, prefix=_BUILD_PREFIX))
    try:
        os.chmod(build, _DIR_MODE)
        fd = os.open(build, _DIR_FLAGS)
        try:
            fill(fd)
        finally:
            os.close(fd)
        _publish(build, target)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    _touch(target)
    return target


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except FileNotFoundError:  # removed meanwhile; the caller's next use rebuilds it
        pass


def unpacked_dir(blobs: BlobStore, sha256_hex: str, root: Path) -> Path:
    """root/<sha256_hex>/: the blob's zip unpacked, file modes kept (a `bootstrap`
    stays executable). Built once; later calls return the existing directory."""
    root = root.absolute()
    return _build(root, root / sha256_hex, lambda fd: _extract(blobs.path(sha256_hex), fd))


def layers_tree_name(layer_sha256_hexes: Sequence[str]) -> str:
    """The name of the merged tree of these layers, in this order."""
    return _LAYERS_PREFIX + hashlib.sha256("\n".join(layer_sha256_hexes).encode()).hexdigest()


def merged_layers_dir(blobs: BlobStore, layer_sha256_hexes: Sequence[str], root: Path) -> Path:
    """root/opt-<key>/: the layers unpacked in order into one tree, a later layer's
    entries replacing an earlier one's (Lambda's /opt). `key` hashes the ordered
    list, so environments with the same layers share one tree."""
    root = root.absolute()

    def fill(fd: int) -> None:
        for sha in layer_sha256_hexes:
            _extract(blobs.path(sha), fd, replace=True)

    return _build(root, root / layers_tree_name(layer_sha256_hexes), fill)


# -- what is on disk ----------------------------------------------------------------------


@dataclass(frozen=True)
class UnpackedTree:
    name: str
    size: int
    # When it was last handed out to an environment (time.time()).
    last_used: float


def _disk_usage(path: Path) -> int:
    """Bytes of disk a tree takes (allocated blocks, directories included)."""
    total = 0
    for _top, _dirs, files, top_fd in os.fwalk(path):
        total += os.fstat(top_fd).st_blocks * 512
        for name in files:
            try:
                total += os.stat(name, dir_fd=top_fd, follow_symlinks=False).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


class UnpackedCode:
    """The unpacked trees under root: listing, disk usage, removal.

    Trees are immutable once published, so each one's size is measured once and
    remembered. Removal renames a tree out of the way first (instant, safe to do
    while deciding on the event loop); `empty_trash` deletes it later.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        self._sizes: dict[str, int] = {}
        # trees() runs on a worker thread while discard() runs on the event loop.
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        try:
            return [n for n in os.listdir(self.root) if not n.startswith(".")]
        except FileNotFoundError:
            return []

    def trees(self) -> list[UnpackedTree]:
        """Every published tree with its size (blocking: a new tree is walked once)."""
        found = []
        for name in self.names():
            path = self.root / name
            with self._lock:
                size = self._sizes.get(name)
            try:
                last_used = path.stat().st_mtime
                if size is None:
                    size = _disk_usage(path)
            except FileNotFoundError:
                continue
            found.append(UnpackedTree(name, size, last_used))
        with self._lock:
            self._sizes = {tree.name: tree.size for tree in found}
        return found

    def last_used(self, name: str) -> float | None:
        """When a tree was last handed out (time.time()), None if it is gone."""
        try:
            return (self.root / name).stat().st_mtime
        except FileNotFoundError:
            return None

    def discard(self, name: str) -> bool:
        """Move a tree out of the way of readers and builders; False if it is gone."""
        with self._lock:
            self._sizes.pop(name, None)
        try:
            os.rename(self.root / name, self.root / f"{_TRASH_PREFIX}{uuid.uuid4().hex}")
        except FileNotFoundError:
            return False
        return True

    def empty_trash(self, builds_too: bool = False) -> None:
        """Delete discarded trees; `builds_too` (at start-up, when nothing is being
        built) also half-built ones a crash left behind."""
        prefixes = (_TRASH_PREFIX, _BUILD_PREFIX) if builds_too else (_TRASH_PREFIX,)
        try:
            leftovers = [n for n in os.listdir(self.root) if n.startswith(prefixes)]
        except FileNotFoundError:
            return
        for name in leftovers:
            shutil.rmtree(self.root / name, ignore_errors=True)
