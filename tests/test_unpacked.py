"""Unpacking code and merging layers on disk for execution environments."""

from __future__ import annotations

import os
import stat
import threading
import zipfile
from pathlib import Path

import pytest

from lamina.limits import PATH_MAX_BYTES
from lamina.store.blobs import BlobStore
from lamina.store.unpacked import (
    MAX_ENTRY_PATH_BYTES,
    UnpackedCode,
    UnsafePackageError,
    merged_layers_dir,
    package_layout,
    unpacked_dir,
)
from tests.helpers import make_zip, raw_zip


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "code")


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


def test_unpacked_dir_keeps_symlinks_as_they_are_wherever_they_point(blobs, tmp_path):
    # Resolved only inside the sandbox, where / is the runtime's and /var/task the code.
    links = {"inside.txt": b"real.txt", "up": b"../../outside", "passwd": b"/etc/passwd",
             "dangling": b"nowhere/at/all", "binary": b"\xff\xfe"}
    sha = blobs.put(raw_zip([("real.txt", b"r", 0o100644)]
                            + [(name, target, 0o120777) for name, target in links.items()]))
    target = unpacked_dir(blobs, sha, tmp_path / "u")
    for name, link in links.items():
        assert os.readlink(os.fsencode(target / name)) == link
    assert (target / "inside.txt").read_text() == "r"
    assert not (tmp_path / "outside").exists()


@pytest.mark.parametrize("link", [b".", b"/etc", b"../../", b"sub"])
def test_unpacked_dir_never_writes_through_a_symlink_from_the_same_zip(blobs, tmp_path, link):
    # Whether the link comes before or after the entry below it.
    for entries in ([("dir", link, 0o120777), ("dir/evil.py", b"x", 0o100644)],
                    [("dir/evil.py", b"x", 0o100644), ("dir", link, 0o120777)]):
        sha = blobs.put(raw_zip([("sub/keep", b"k", 0o100644), *entries]))
        with pytest.raises(UnsafePackageError, match="symbolic link|both"):
            unpacked_dir(blobs, sha, tmp_path / "u")
        assert [p.name for p in (tmp_path / "u").iterdir()] == []
    assert not Path("/etc/evil.py").exists()
    assert not (tmp_path / "evil.py").exists()


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


# -- what a package may hold: checked at upload (control.packages) and again here ------


def nul_named_zip() -> bytes:
    """A zip whose one entry's name holds a NUL byte (zipfile cuts names at NUL on write)."""
    return raw_zip([("appXpy", b"x", 0o100644)]).replace(b"appXpy", b"app\0py")


def deepest_path() -> str:
    """A path of exactly MAX_ENTRY_PATH_BYTES, in components of 254 bytes."""
    parts = ["d" * 254] * 16
    head = "/".join(parts)
    return head + "/" + "f" * (MAX_ENTRY_PATH_BYTES - len(head) - 1)


@pytest.mark.parametrize(("entries", "problem"), [
    ([("a" * 253 + ".py", b"x", 0o100644)], "name of 256 bytes"),
    ([("é" * 128, b"x", 0o100644)], "name of 256 bytes"),  # bytes, not characters
    ([("x" * 5000, b"x", 0o100644)], "name of 5000 bytes"),
    ([(deepest_path() + "g", b"x", 0o100644)], f"path of {MAX_ENTRY_PATH_BYTES + 1} bytes"),
    ([("a/" * 257 + "f", b"x", 0o100644)], "nested 258 directories deep"),
    ([("dev", b"", 0o020644)], "is a character device"),
    ([("blk", b"", 0o060644)], "is a block device"),
    ([("fifo", b"", 0o010644)], "is a FIFO"),
    ([("sock", b"", 0o140644)], "is a socket"),
    ([("odd", b"", 0o170644)], "unknown file type"),
    ([("thing", b"file", 0o100644), ("thing/inner", b"x", 0o100644)], "as a file"),
    ([("thing/inner", b"x", 0o100644), ("thing", b"file", 0o100644)], "both a directory and a file"),
    ([("thing/", b"", 0o040755), ("thing", b"file", 0o100644)], "both a directory and a file"),
    ([("link", b"x" * 4096, 0o120777)], "symbolic link to a path of 4096 bytes"),
    ([("link", b"", 0o120777)], "symbolic link without a valid target"),
    ([("link", b"a\0b", 0o120777)], "symbolic link without a valid target"),
])
def test_package_layout_refuses_what_cannot_be_unpacked(blobs, tmp_path, entries, problem):
    sha = blobs.put(raw_zip(entries))
    with zipfile.ZipFile(blobs.path(sha)) as archive, pytest.raises(UnsafePackageError) as info:
        package_layout(archive)
    assert problem in str(info.value)
    assert len(str(info.value)) < 300  # a 5,000-byte name is not repeated whole
    with pytest.raises(UnsafePackageError):
        unpacked_dir(blobs, sha, tmp_path / "u")
    assert list((tmp_path / "u").iterdir()) == []


def test_package_layout_refuses_a_nul_byte_in_a_name(blobs):
    sha = blobs.put(nul_named_zip())
    with zipfile.ZipFile(blobs.path(sha)) as archive, pytest.raises(UnsafePackageError, match="NUL"):
        package_layout(archive)


def test_names_and_paths_at_the_file_systems_limits_unpack(blobs, tmp_path):
    longest = "n" * 255
    deepest = deepest_path()
    sha = blobs.put(raw_zip([(longest, b"long", 0o100644), (deepest, b"deep", 0o100644),
                             ("é" * 127, b"accents", 0o100644)]))
    # Under a host prefix long enough that host paths pass PATH_MAX: unpacking goes
    # one component at a time, so only the path inside the package counts.
    root = tmp_path.joinpath(*["p" * 200] * 3)
    target = unpacked_dir(blobs, sha, root)
    assert (target / longest).read_text() == "long"
    fd = os.open(target, os.O_RDONLY)
    try:
        for part in deepest.split("/")[:-1]:
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        with os.fdopen(os.open(deepest.rsplit("/", 1)[1], os.O_RDONLY, dir_fd=fd)) as deep:
            assert deep.read() == "deep"
    finally:
        os.close(fd)
    assert len(("/var/task/" + deepest).encode()) == PATH_MAX_BYTES - 1


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_duplicate_entries_unpack_with_the_later_one_winning(blobs, tmp_path):
    sha = blobs.put(raw_zip([("a.txt", b"first", 0o100644), ("a.txt", b"second", 0o100644),
                             ("b", b"file", 0o100644), ("b", b"a.txt", 0o120777),
                             ("dir/", b"", 0o040755), ("dir/", b"", 0o040755)]))
    target = unpacked_dir(blobs, sha, tmp_path / "u")
    assert (target / "a.txt").read_text() == "second"
    assert os.readlink(target / "b") == "a.txt"
    assert (target / "dir").is_dir()


def test_a_later_layer_replaces_a_symlink_of_an_earlier_one_instead_of_writing_through_it(blobs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    linking = blobs.put(raw_zip([("python", str(outside).encode(), 0o120777),
                                 ("bin", b"../../..", 0o120777)]))
    writing = blobs.put(raw_zip([("python/lib.py", b"x = 1\n", 0o100644),
                                 ("bin/tool", b"#!/bin/sh\n", 0o100755)]))
    opt = merged_layers_dir(blobs, [linking, writing], tmp_path / "layers")
    assert not (opt / "python").is_symlink() and (opt / "python" / "lib.py").read_text() == "x = 1\n"
    assert not (opt / "bin").is_symlink() and os.access(opt / "bin" / "tool", os.X_OK)
    assert list(outside.iterdir()) == []
    # The other way round, the later layer's symlinks replace the directories.
    opt = merged_layers_dir(blobs, [writing, linking], tmp_path / "layers")
    assert os.readlink(opt / "python") == str(outside)
    assert os.readlink(opt / "bin") == "../../.."


# -- what is on disk: sizes, removal ------------------------------------------------------


def test_unpacked_code_measures_and_discards_trees(blobs, tmp_path):
    root = tmp_path / "u"
    small = unpacked_dir(blobs, blobs.put(make_zip({"a.txt": "x"})), root)
    large = unpacked_dir(blobs, blobs.put(make_zip({"zeros.bin": b"\0" * 3_000_000})), root)
    code = UnpackedCode(root)
    sizes = {tree.name: tree.size for tree in code.trees()}
    assert sizes[large.name] >= 3_000_000 > sizes[small.name]
    assert code.discard(large.name)
    assert not large.exists()
    assert {tree.name for tree in code.trees()} == {small.name}
    code.empty_trash()
    assert sorted(p.name for p in root.iterdir()) == [small.name]
    assert not code.discard(large.name)
