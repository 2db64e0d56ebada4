"""Unpacking deployment packages: what a cold start of new code and an upload pay.

Builds a package from an installed library (botocore by default: about 1,000 files
in a few dozen directories, like a typical Python function with dependencies) and
prints, best of --repeat runs:

- check: `package_layout`, the entry checks every upload runs (names, links,
  conflicts) before inflating each member;
- unpack: `unpacked_dir` into an empty directory, as the first cold start of
  new code does (every path opened one component at a time, O_NOFOLLOW);
- merge: `merged_layers_dir` of the same package twice, as /opt for two layers;
- size: what the unpacked tree takes on disk, against the zip.

    .venv/bin/python bench/unpack.py [--library botocore] [--repeat 5]
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from lamina.store.blobs import BlobStore
from lamina.store.unpacked import (
    UnpackedCode,
    merged_layers_dir,
    package_layout,
    unpacked_dir,
)


def package_of(library: str) -> bytes:
    source = Path(importlib.import_module(library).__file__ or "").parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, f"{library}/{path.relative_to(source)}")
    return buffer.getvalue()


def best(runs: int, action) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--library", default="botocore")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    data = package_of(args.library)
    with tempfile.TemporaryDirectory() as temp:
        os.chmod(temp, 0o755)  # sandbox users (unprivileged uids) reach the data dir
        blobs = BlobStore(Path(temp) / "code")
        sha = blobs.put(data)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = len(archive.infolist())
            check = best(args.repeat, lambda: package_layout(archive))
        root = Path(temp) / "unpacked"

        def unpack() -> None:
            shutil.rmtree(root, ignore_errors=True)
            unpacked_dir(blobs, sha, root)

        unpack_s = best(args.repeat, unpack)

        def merge() -> None:
            shutil.rmtree(root, ignore_errors=True)
            merged_layers_dir(blobs, [sha, sha], root)

        merge_s = best(args.repeat, merge)
        unpack()
        size = sum(tree.size for tree in UnpackedCode(root).trees())
    print(f"package: {args.library}, {entries:,} entries, {len(data) / 1e6:.1f} MB zipped, "
          f"{size / 1e6:.1f} MB unpacked on disk")
    print(f"check {check * 1000:.1f} ms, unpack {unpack_s * 1000:.0f} ms, "
          f"merge of two layers {merge_s * 1000:.0f} ms (best of {args.repeat}; "
          f"{os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
