"""Code blobs (function and layer zips), stored once per content on disk."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256_hex: str) -> Path:
        return self.root / sha256_hex[:2] / f"{sha256_hex}.zip"

    def put(self, data: bytes) -> str:
        """Store data, return its hex SHA-256. Writing twice is a no-op."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename: a crash never leaves a torn blob
        # under a name that claims its hash.
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return digest

    def get(self, sha256_hex: str) -> bytes:
        return self.path(sha256_hex).read_bytes()

    def exists(self, sha256_hex: str) -> bool:
        return self.path(sha256_hex).exists()
