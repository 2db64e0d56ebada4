"""Building functions and layers as `sam build` does, with a cache.

- Python (`requirements.txt`): `pip install --target` for the runtime's Python
  version and Linux platform (`--platform manylinux2014_x86_64 --only-binary=:all:`),
  so wheels for Lambda's Python are installed whatever Python runs the build;
- Node.js (`package.json`): `npm ci --omit=dev` with a lock file, `npm install
  --omit=dev` without;
- `Metadata: BuildMethod: makefile`: `make build-<LogicalId>` with `ARTIFACTS_DIR`;
- anything else: the directory as it is.

Layers built for a runtime put their packages where Lambda looks in `/opt`
(`python/`, `nodejs/node_modules`). The result is a zip written the same way every
time (sorted names, fixed dates, modes 644/755), so unchanged code keeps its
CodeSha256 and a redeploy can tell. Built zips are cached (XDG cache,
`~/.cache/lamina/build`) under a key made of every source file (lock files
included), the runtime, the architecture and the build method.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# Directories a build never reads from the source: they are outputs or tool state
# (node_modules is remade by npm; a directory zipped as it is keeps its own).
SKIPPED = {".aws-sam", "node_modules", "__pycache__", ".git", ".venv", ".pytest_cache"}
SKIPPED_AS_IS = {".aws-sam", "__pycache__", ".git"}
BUILD_FORMAT = "1"

Progress = Callable[[str], None]


class BuildError(Exception):
    pass


@dataclass(frozen=True)
class BuildTarget:
    logical_id: str
    source: Path
    runtime: str | None
    architecture: str = "x86_64"
    build_method: str | None = None   # "makefile", a runtime identifier, or None
    layer: bool = False


@dataclass(frozen=True)
class Artifact:
    target: BuildTarget
    path: Path            # the cached zip
    code_sha256: str      # as Lambda reports it: base64 of the SHA-256
    size: int
    cached: bool

    def read(self) -> bytes:
        return self.path.read_bytes()


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lamina" / "build"


def _skipped(target: BuildTarget) -> set[str]:
    runtime = target.build_method or target.runtime or ""
    return SKIPPED if runtime.startswith(("python", "nodejs")) or runtime == "makefile" else SKIPPED_AS_IS


def _source_files(source: Path, skipped: set[str]) -> list[Path]:
    files: list[Path] = []
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in skipped)
        files.extend(Path(root) / name for name in sorted(names) if not name.endswith(".pyc"))
    return files


def cache_key(target: BuildTarget) -> str:
    digest = hashlib.sha256()
    for part in (BUILD_FORMAT, target.logical_id if target.build_method == "makefile" else "",
                 target.runtime or "", target.architecture, target.build_method or "", str(target.layer)):
        digest.update(part.encode() + b"\0")
    for path in _source_files(target.source, _skipped(target)):
        digest.update(path.relative_to(target.source).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def build(target: BuildTarget, progress: Progress, cache: Path | None = None) -> Artifact:
    """The zip for `target`, from the cache when its sources have not changed."""
    if not target.source.is_dir():
        raise BuildError(f"{target.logical_id}: code directory {target.source} does not exist")
    cache = cache or cache_dir()
    path = cache / f"{cache_key(target)}.zip"
    cached = path.exists()
    if not cached:
        with tempfile.TemporaryDirectory(prefix="lamina-build-") as scratch:
            staging = Path(scratch) / "artifact"
            _build_into(target, staging, Path(scratch), progress)
            data = deterministic_zip(staging)
        cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(data)
        partial.replace(path)
    data = path.read_bytes()
    sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
    return Artifact(target, path, sha, len(data), cached)


def _build_into(target: BuildTarget, staging: Path, scratch: Path, progress: Progress) -> None:
    source = target.source
    if target.build_method == "makefile":
        work = scratch / "source"
        _copy(source, work, SKIPPED)
        staging.mkdir()
        _run(["make", "-f", str(work / "Makefile"), f"build-{target.logical_id}"], work, progress,
             {"ARTIFACTS_DIR": str(staging)})
        return
    runtime = target.build_method or target.runtime or ""
    if runtime.startswith("python"):
        # A layer's Python packages live in /opt/python.
        root = staging / "python" if target.layer else staging
        _copy(source, root, SKIPPED)
        if (source / "requirements.txt").is_file():
            _pip_install(source / "requirements.txt", root, runtime, target.architecture, progress)
    elif runtime.startswith("nodejs"):
        root = staging / "nodejs" if target.layer else staging
        _copy(source, root, SKIPPED)
        if (source / "package.json").is_file():
            locked = (source / "package-lock.json").is_file()
            _run(["npm", "ci" if locked else "install", "--omit=dev", "--no-audit", "--no-fund",
                  "--no-update-notifier"], root, progress)
    else:
        _copy(source, staging, SKIPPED_AS_IS)


def _pip_install(requirements: Path, target: Path, runtime: str, architecture: str,
                 progress: Progress) -> None:
    version = runtime.removeprefix("python")
    platform = "manylinux2014_aarch64" if architecture == "arm64" else "manylinux2014_x86_64"
    _run([sys.executable, "-m", "pip", "install", "-r", str(requirements), "--target", str(target),
          "--platform", platform, "--implementation", "cp", "--python-version", version,
          "--only-binary=:all:", "--upgrade", "--no-compile", "--disable-pip-version-check", "--no-input",
          "--progress-bar", "off"], target, progress)


def _copy(source: Path, destination: Path, skipped: set[str]) -> None:
    shutil.copytree(source, destination, symlinks=False, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(*skipped, "*.pyc"))


def _run(command: list[str], cwd: Path, progress: Progress, env: dict[str, str] | None = None) -> None:
    progress(f"$ {' '.join(Path(command[0]).name if i == 0 else c for i, c in enumerate(command))}")
    process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **(env or {})}, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    tail: list[str] = []
    for line in process.stdout:
        line = line.rstrip()
        if line:
            progress(line)
            tail = (tail + [line])[-15:]
    if process.wait() != 0:
        raise BuildError(f"{command[0]} exited with {process.returncode}:\n" + "\n".join(tail))


def deterministic_zip(directory: Path) -> bytes:
    """The same bytes for the same files: sorted, dated 1980-01-01, modes 644/755."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in _all_files(directory):
            info = zipfile.ZipInfo(path.relative_to(directory).as_posix(), (1980, 1, 1, 0, 0, 0))
            executable = os.access(path, os.X_OK)
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def deterministic_zip_of(files: dict[str, str]) -> bytes:
    """InlineCode / `Code: ZipFile:` as a package of one file, like CloudFormation makes."""
    with tempfile.TemporaryDirectory(prefix="lamina-inline-") as scratch:
        for name, text in files.items():
            (Path(scratch) / name).write_text(text)
        return deterministic_zip(Path(scratch))


def _all_files(directory: Path) -> list[Path]:
    files: list[Path] = []
    for root, dirs, names in os.walk(directory, followlinks=True):
        dirs.sort()
        files.extend(Path(root) / name for name in sorted(names))
    return [f for f in files if f.is_file()]
