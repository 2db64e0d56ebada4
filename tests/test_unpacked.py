"""Unpacking code and merging layers on disk for execution environments."""

from __future__ import annotations

import io
import os
import stat
import threading
import zipfile
from pathlib import Path

import pytest

from lamina.store.blobs import BlobStore
from lamina.store.unpacked import UnsafePackageError, merged_layers_dir, unpacked_dir
from tests.helpers import make_zip


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "code")


def raw_zip(entries: list[tuple[str, bytes, int]], windows: bool = False) -> bytes:
    """A zip with exact names and Unix modes (including symlinks), unchecked;
    `windows` makes one the way Windows tools do: no Unix mode at all."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content, mode in entries:
            info = zipfile.ZipInfo(name)
            if windows:
                info.create_system = 0
                info.external_attr = 0x20  # the DOS "archive" attribute
            else:
                info.external_attr = mode << 16
            archive.writestr(info, content)
    return buffer.getvalue()


def test_unpacked_dir_extracts_once_and_keeps_the_executable_bit(blobs, tmp_path):
    sha = blobs.put(raw_zip([
        ("bootstrap", b"#!/bin/sh\necho hi\n", 0o100755),
        ("lib/data.txt", b"data", 0o100644),
    ]))
    root = tmp_path / "unpacked"
    target = unpacked_dir(blobs, sha, root)
    assert target == root / sha
    assert (target / "lib" / "data.txt").read_bytes() == b"data"
    assert os.access(target / "bootstrap", os.X_OK)
    assert stat.S_IMODE((target / "lib" / "data.txt").stat().st_mode) == 0o644
    inode = (target / "bootstrap").stat().st_ino
    assert unpacked_dir(blobs, sha, root) == target
    assert (target / "bootstrap").stat().st_ino == inode
    assert [p.name for p in root.iterdir()] == [sha]  # no temporary directory left


def test_unpacked_dir_strips_setuid_and_defaults_modes_of_windows_zips(blobs, tmp_path):
    suid = blobs.put(raw_zip([("suid", b"x", 0o104755)]))
    assert stat.S_IMODE((unpacked_dir(blobs, suid, tmp_path / "u") / "suid").stat().st_mode) == 0o755
    windows = blobs.put(raw_zip([("plain.txt", b"y", 0)], windows=True))
    plain = unpacked_dir(blobs, windows, tmp_path / "u") / "plain.txt"
    assert stat.S_IMODE(plain.stat().st_mode) == 0o644


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/evil", "a/../../escape.txt", "C:/x"])
def test_unpacked_dir_refuses_zip_slip_and_leaves_nothing(blobs, tmp_path, name):
    sha = blobs.put(raw_zip([("ok.txt", b"ok", 0o100644), (name, b"bad", 0o100644)]))
    root = tmp_path / "u"
    with pytest.raises(UnsafePackageError):
        unpacked_dir(blobs, sha, root)
    assert list(root.iterdir()) == []
    assert not (tmp_path / "escape.txt").exists()


def test_unpacked_dir_keeps_inside_symlinks_and_refuses_outside_ones(blobs, tmp_path):
    inside = blobs.put(raw_zip([("real.txt", b"r", 0o100644), ("link.txt", b"real.txt", 0o120777)]))
    target = unpacked_dir(blobs, inside, tmp_path / "u")
    assert os.readlink(target / "link.txt") == "real.txt"
    for link in (b"../../outside", b"/etc/passwd"):
        outside = blobs.put(raw_zip([("link", link, 0o120777)]))
        with pytest.raises(UnsafePackageError):
            unpacked_dir(blobs, outside, tmp_path / "u")


def test_unpacked_dir_never_writes_through_a_symlink_from_the_same_zip(blobs, tmp_path):
    sha = blobs.put(raw_zip([("dir", b".", 0o120777), ("dir/file", b"x", 0o100644)]))
    with pytest.raises(UnsafePackageError):
        unpacked_dir(blobs, sha, tmp_path / "u")


def test_concurrent_unpacking_of_one_blob_yields_one_complete_directory(blobs, tmp_path):
    sha = blobs.put(make_zip({f"f{i}.txt": "x" * 1000 for i in range(200)}))
    root = tmp_path / "u"
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(unpacked_dir(blobs, sha, root))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(results) == {root / sha}
    assert len(list((root / sha).iterdir())) == 200
    assert [p.name for p in root.iterdir()] == [sha]


def test_merged_layers_dir_lays_later_layers_over_earlier_ones(blobs, tmp_path):
    base = blobs.put(raw_zip([
        ("python/lib.py", b"VERSION = 'base'\n", 0o100644),
        ("python/only_base.py", b"", 0o100644),
        ("bin/tool", b"old", 0o100644),
    ]))
    patch = blobs.put(raw_zip([
        ("python/lib.py", b"VERSION = 'patch'\n", 0o100644),
        ("bin/tool", b"#!/bin/sh\n", 0o100755),
        ("extensions/ext", b"#!/bin/sh\n", 0o100755),
    ]))
    root = tmp_path / "layers"
    opt = merged_layers_dir(blobs, [base, patch], root)
    assert (opt / "python" / "lib.py").read_text() == "VERSION = 'patch'\n"
    assert (opt / "python" / "only_base.py").exists()
    assert (opt / "bin" / "tool").read_text() == "#!/bin/sh\n"
    assert os.access(opt / "bin" / "tool", os.X_OK)
    assert os.access(opt / "extensions" / "ext", os.X_OK)
    # The same ordered list is shared; the reverse order is another tree.
    assert merged_layers_dir(blobs, [base, patch], root) == opt
    reverse = merged_layers_dir(blobs, [patch, base], root)
    assert reverse != opt
    assert (reverse / "python" / "lib.py").read_text() == "VERSION = 'base'\n"
    # Building the merge did not change the layers' own unpacked trees.
    assert (unpacked_dir(blobs, base, root) / "bin" / "tool").read_text() == "old"


def test_merged_layers_dir_replaces_a_file_by_a_directory_and_back(blobs, tmp_path):
    as_file = blobs.put(raw_zip([("thing", b"file", 0o100644)]))
    as_dir = blobs.put(raw_zip([("thing/inner", b"in", 0o100644)]))
    root = tmp_path / "layers"
    assert (merged_layers_dir(blobs, [as_file, as_dir], root) / "thing" / "inner").read_text() == "in"
    assert (merged_layers_dir(blobs, [as_dir, as_file], root) / "thing").read_text() == "file"


def test_merged_layers_dir_of_no_layers_is_an_empty_directory(blobs, tmp_path):
    opt = merged_layers_dir(blobs, [], tmp_path / "layers")
    assert opt.is_dir() and list(opt.iterdir()) == []
