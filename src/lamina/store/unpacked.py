"""Code blobs unpacked on disk, once per content, for execution environments.

`unpacked_dir` gives the directory a function's zip (or one layer's) unpacks to,
for /var/task; `merged_layers_dir` gives an ordered list of layers merged into one
tree, for /opt. Both are content-addressed caches shared by every environment that
needs the same bytes, built in a temporary directory and renamed into place, so a
reader never sees a half-built tree and a crash leaves only a `.tmp-*` to sweep.

Packages were checked at upload (control.packages), yet extraction does not trust
them: no member may land outside its directory, symlinks may only point inside
it, and nothing is ever written through a symlink.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

from lamina.store.blobs import BlobStore

_CHUNK = 1024 * 1024
# Zips made on Windows carry no Unix mode; Lambda's defaults for those.
_DEFAULT_FILE_MODE = 0o644
_DIR_MODE = 0o755


class UnsafePackageError(ValueError):
    """A member that would escape its directory (zip-slip or an outside symlink)."""


def _member_parts(name: str) -> tuple[str, ...]:
    path = PurePosixPath(name.replace("\\", "/"))
    parts = tuple(p for p in path.parts if p not in ("", "."))
    if path.is_absolute() or ".." in parts or (parts and parts[0].endswith(":")):
        raise UnsafePackageError(f"zip entry {name!r} points outside the package")
    return parts


def _inside(root: Path, path: Path) -> bool:
    return os.path.commonpath([root, path]) == str(root)


def _parent_dir(root: Path, parts: tuple[str, ...]) -> Path:
    """Create the member's parent directories, refusing to pass through symlinks."""
    current = root
    for part in parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise UnsafePackageError(f"zip entry {'/'.join(parts)!r} goes through a symlink")
        if not current.is_dir():
            if current.exists():
                current.unlink()
            current.mkdir(mode=_DIR_MODE)
    return current


def _extract(archive_path: Path, root: Path) -> None:
    with zipfile.ZipFile(archive_path) as archive:
        for info in archive.infolist():
            parts = _member_parts(info.filename)
            if not parts:
                continue
            # Only zips made on Unix (create_system 3) carry a mode in the high bits.
            unix_mode = info.external_attr >> 16 if info.create_system == 3 else 0
            if info.is_dir():
                _parent_dir(root, parts + ("",))  # the directory itself and its parents
                continue
            parent = _parent_dir(root, parts)
            target = parent / parts[-1]
            if target.is_symlink() or target.exists():
                # A later entry of the same name wins, as with unzip -o.
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            if stat.S_ISLNK(unix_mode):
                link = archive.read(info).decode()
                resolved = Path(os.path.normpath(parent / link))
                if os.path.isabs(link) or not _inside(root, resolved):
                    raise UnsafePackageError(f"symlink {info.filename!r} points outside the package")
                os.symlink(link, target)
                continue
            # Permission bits only: no setuid/setgid from an uploaded zip.
            mode = (unix_mode & 0o777) or _DEFAULT_FILE_MODE
            # O_NOFOLLOW|O_EXCL: never write through a symlink, never reuse a file.
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out, archive.open(info) as member:
                shutil.copyfileobj(member, out, _CHUNK)
            os.chmod(target, mode)


def _publish(build: Path, target: Path) -> None:
    """Rename a finished tree into place; if another builder won the race, keep theirs."""
    try:
        os.rename(build, target)
    except OSError:
        if not target.is_dir():
            raise
        shutil.rmtree(build, ignore_errors=True)


def _build(root: Path, target: Path, fill: Callable[[Path], None]) -> Path:
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        os.chmod(build, _DIR_MODE)
        fill(build)
        _publish(build, target)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return target


def unpacked_dir(blobs: BlobStore, sha256_hex: str, root: Path) -> Path:
    """root/<sha256_hex>/: the blob's zip unpacked, file modes kept (a `bootstrap`
    stays executable). Built once; later calls return the existing directory."""
    root = root.absolute()
    return _build(root, root / sha256_hex, lambda build: _extract(blobs.path(sha256_hex), build))


def _overlay(source: Path, dest: Path) -> None:
    """Lay `source` over `dest`: files of `source` replace those of the same path."""
    for entry in os.scandir(source):
        target = dest / entry.name
        if entry.is_dir(follow_symlinks=False):
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                target.unlink()
            if not target.exists():
                target.mkdir(mode=_DIR_MODE)
            _overlay(Path(entry.path), target)
            continue
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        else:
            # Hard links: the merged tree costs no extra space, and both trees are
            # mounted read-only, so sharing inodes is safe.
            try:
                os.link(entry.path, target)
            except OSError:
                shutil.copy2(entry.path, target)


def merged_layers_dir(blobs: BlobStore, layer_sha256_hexes: Sequence[str], root: Path) -> Path:
    """root/opt-<key>/: the layers unpacked and merged in order, a later layer's
    files overwriting an earlier one's (Lambda's /opt). `key` hashes the ordered
    list, so environments with the same layers share one tree."""
    root = root.absolute()
    key = hashlib.sha256("\n".join(layer_sha256_hexes).encode()).hexdigest()

    def fill(build: Path) -> None:
        for sha in layer_sha256_hexes:
            _overlay(unpacked_dir(blobs, sha, root), build)

    return _build(root, root / f"opt-{key}", fill)
