"""Function code as a directory: each zip unpacked once, shared by its environments."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from lamina.store.blobs import BlobStore


def unpacked_dir(blobs: BlobStore, sha256_hex: str, root: Path) -> Path:
    """root/<sha>: the zip's files with their modes, extracted on first use."""
    target = root / sha256_hex
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".unpack-"))
    # mkdtemp makes it 0700; sandboxed runtimes run as another uid and must read it.
    os.chmod(staging, 0o755)
    try:
        with zipfile.ZipFile(blobs.path(sha256_hex)) as archive:
            for info in archive.infolist():
                # Names were checked at upload (control/packages.py); extract() also
                # strips absolute and parent parts.
                path = Path(archive.extract(info, staging))
                mode = (info.external_attr >> 16) & 0o777
                if mode and not info.is_dir():
                    os.chmod(path, mode)
        # Rename into place: environments never see a half-extracted tree.
        os.rename(staging, target)
    except FileExistsError:
        shutil.rmtree(staging, ignore_errors=True)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not target.is_dir():
            raise
    return target
