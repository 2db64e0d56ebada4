"""Code blobs (function and layer zips), stored once per content on disk.

A blob is removed (`delete`) once no function version or layer version refers to
it (control.code_storage decides). Between writing a blob and committing the
record that refers to it, nothing refers to it yet: `stored` holds it for that
while, so a collection running meanwhile keeps it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path

_TEMP_PREFIX = ".tmp-"


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        # Blobs being stored for a record not yet committed, with how many writers.
        self._held: collections.Counter[str] = collections.Counter()
        # Taken around "hold and write" and around "check held and delete".
        self._lock = threading.Lock()

    def path(self, sha256_hex: str) -> Path:
        return self.root / sha256_hex[:2] / f"{sha256_hex}.zip"

    def put(self, data: bytes) -> str:
        """Store data, return its hex SHA-256. Writing twice is a no-op."""
        digest = hashlib.sha256(data).hexdigest()
        self._write(digest, data)
        return digest

    def _write(self, digest: str, data: bytes) -> None:
        target = self.path(digest)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename: a crash never leaves a torn blob
        # under a name that claims its hash.
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=_TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def _hold_and_write(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            # Held before the existence check: a delete either ran before (and the
            # blob is written again) or sees it held.
            self._held[digest] += 1
        try:
            self._write(digest, data)
        except BaseException:
            self._release(digest)
            raise
        return digest

    def _release(self, digest: str) -> None:
        with self._lock:
            self._held[digest] -= 1
            if self._held[digest] <= 0:
                del self._held[digest]

    @contextlib.asynccontextmanager
    async def stored(self, data: bytes) -> AsyncIterator[str]:
        """Store data (off the event loop) and yield its digest; the blob is kept from
        collection until the block ends, by which time a record refers to it."""
        digest = await asyncio.to_thread(self._hold_and_write, data)
        try:
            yield digest
        finally:
            self._release(digest)

    def get(self, sha256_hex: str) -> bytes:
        return self.path(sha256_hex).read_bytes()

    def exists(self, sha256_hex: str) -> bool:
        return self.path(sha256_hex).exists()

    def digests(self) -> dict[str, int]:
        """Every stored blob's digest and size in bytes."""
        found = {}
        for shard in os.scandir(self.root):
            if not shard.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(shard.path):
                if entry.name.endswith(".zip") and not entry.name.startswith("."):
                    with contextlib.suppress(FileNotFoundError):
                        found[entry.name.removesuffix(".zip")] = entry.stat().st_size
        return found

    def delete(self, sha256_hex: str) -> bool:
        """Remove a blob unless it is being stored right now; True if removed."""
        with self._lock:
            if self._held[sha256_hex] > 0:
                return False
            try:
                self.path(sha256_hex).unlink()
            except FileNotFoundError:
                return False
        return True

    def sweep_leftovers(self) -> None:
        """Remove half-written blobs a crash left (at start-up, when nothing is writing)."""
        for shard in os.scandir(self.root):
            if shard.is_dir(follow_symlinks=False):
                for entry in os.scandir(shard.path):
                    if entry.name.startswith(_TEMP_PREFIX):
                        Path(entry.path).unlink(missing_ok=True)
