"""The content-addressed cache of runtime images, shared by every Lamina server.

    <cache>/<hex>/rootfs        a ready root file system (used read-only)
    <cache>/<hex>/image.json    what it is: name, source, versions, size, build time
    <cache>/refs/<name>.json    the digest a registry last gave for an image name
    <cache>/locks/<hex>.lock    held while the image <hex> is being made
    <cache>/tmp/<hex>.<random>  a build in progress

<hex> is the sha256 of a recipe (images built here) or an image's manifest digest
(images pulled from a registry). An image is made in tmp/ and renamed into place
in one step, under an exclusive lock per digest: two servers asking for the same
image at once end with one copy (the second waits and reuses it), and a build that
dies leaves only a tmp/ entry, which the next build of that digest removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lamina.config import Settings
from lamina.images import debian, oci
from lamina.images.errors import ImageError, ImagePullError, UnknownImageError
from lamina.images.layout import tree_size
from lamina.images.recipes import RECIPES, Recipe

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RuntimeImage:
    name: str  # e.g. "python3.13": the image, not the Lambda identifier
    digest: str
    root: Path  # a ready rootfs directory, for read-only use
    source: str  # e.g. "debian trixie (mmdebstrap)" or "oci 127.0.0.1:5000/lambda/python:3.13"
    versions: dict[str, str] = field(default_factory=dict)
    # The image brings its own runtime client in /var/runtime (AWS's images do): the
    # sandbox must not mount Lamina's over it, and runs /var/runtime/bootstrap.
    own_runtime: bool = False
    size: int = 0
    created: str = ""
    build_seconds: float = 0.0

    @classmethod
    def load(cls, directory: Path) -> RuntimeImage:
        record = json.loads((directory / "image.json").read_text())
        return cls(
            name=record["name"], digest=record["digest"], root=directory / "rootfs",
            source=record["source"], versions=record.get("versions", {}),
            own_runtime=record.get("own_runtime", False), size=record.get("size", 0),
            created=record.get("created", ""), build_seconds=record.get("build_seconds", 0.0),
        )

    def record(self) -> dict[str, object]:
        return {
            "name": self.name, "digest": self.digest, "source": self.source,
            "versions": self.versions, "own_runtime": self.own_runtime, "size": self.size,
            "created": self.created, "build_seconds": self.build_seconds,
        }


def _hex(digest: str) -> str:
    return digest.split(":", 1)[-1]


def _quiet(_line: str) -> None:
    pass


class ImageStore:
    def __init__(self, cache_dir: Path, *, registry: str = "", insecure_registries: tuple[str, ...] = (),
                 mirror: str = "", recipes: dict[str, Recipe] | None = None) -> None:
        self.cache_dir = cache_dir
        self.registry = registry
        self.insecure_registries = insecure_registries
        self.mirror = mirror
        self.recipes = RECIPES if recipes is None else recipes

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageStore:
        return cls(
            settings.image_cache_dir,
            registry=settings.runtime_image_registry,
            insecure_registries=tuple(
                host.strip() for host in settings.insecure_image_registries.split(",") if host.strip()),
            mirror=settings.debian_mirror,
        )

    # -- looking up -------------------------------------------------------------

    def _ready(self, digest: str) -> RuntimeImage | None:
        directory = self.cache_dir / _hex(digest)
        try:
            return RuntimeImage.load(directory)
        except (OSError, ValueError, KeyError):
            return None

    def _ref_path(self, name: str) -> Path:
        return self.cache_dir / "refs" / f"{name}.json"

    def installed(self, name: str) -> RuntimeImage | None:
        """The image `name` if it is ready in the cache; never builds or pulls.

        With a registry set, the image last pulled from it comes first."""
        if self.registry:
            with contextlib.suppress(OSError, ValueError, KeyError):
                pulled = json.loads(self._ref_path(name).read_text())
                if pulled["reference"] == oci.reference(self.registry, name):
                    image = self._ready(pulled["digest"])
                    if image is not None:
                        return image
        recipe = self.recipes.get(name)
        return self._ready(recipe.digest()) if recipe else None

    def list(self) -> list[RuntimeImage]:
        """Every ready image in the cache, by name."""
        images = []
        if self.cache_dir.is_dir():
            for directory in self.cache_dir.iterdir():
                if (directory / "image.json").is_file():
                    with contextlib.suppress(OSError, ValueError, KeyError):
                        images.append(RuntimeImage.load(directory))
        return sorted(images, key=lambda image: (image.name, image.created))

    # -- making ready -----------------------------------------------------------

    def ensure(self, name: str, progress: Progress | None = None, *, refresh: bool = False) -> RuntimeImage:
        """The image `name`, pulled or built first if it is not in the cache (blocking).

        `refresh` asks the registry (when one is set) for its current image even if
        one is cached; Debian builds are pinned by their recipe and never refreshed.
        """
        report = progress or _quiet
        if not refresh:
            ready = self.installed(name)
            if ready is not None:
                return ready
        if self.registry:
            try:
                return self._pull(name, report)
            except ImagePullError as error:
                if name not in self.recipes:
                    raise
                report(f"{oci.reference(self.registry, name)} could not be pulled ({error}); "
                       "building from Debian instead")
        recipe = self.recipes.get(name)
        if recipe is None:
            raise UnknownImageError(f"no runtime image named {name!r} (known: {', '.join(sorted(self.recipes))})")
        return self._build(recipe, report)

    def _build(self, recipe: Recipe, progress: Progress) -> RuntimeImage:
        digest = recipe.digest()
        with self._making(digest, recipe.name, progress) as (ready, scratch):
            if ready is not None:
                return ready
            started = time.monotonic()
            versions = debian.build(recipe, scratch / "rootfs", progress, self.mirror)
            return self._commit(scratch, RuntimeImage(
                name=recipe.name, digest=digest, root=Path(), versions=versions,
                source=f"debian {recipe.suite} (mmdebstrap)", build_seconds=time.monotonic() - started,
            ))

    def _pull(self, name: str, progress: Progress) -> RuntimeImage:
        ref = oci.reference(self.registry, name)
        progress(f"asking {ref}")
        digest = oci.manifest_digest(ref, self.insecure_registries)
        with self._making(digest, name, progress) as (ready, scratch):
            if ready is None:
                started = time.monotonic()
                versions, own_runtime = oci.pull(ref, digest, scratch / "rootfs", progress,
                                                 self.insecure_registries)
                ready = self._commit(scratch, RuntimeImage(
                    name=name, digest=digest, root=Path(), source=f"oci {ref}", versions=versions,
                    own_runtime=own_runtime, build_seconds=time.monotonic() - started,
                ))
        self._ref_path(name).parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(self._ref_path(name), json.dumps({"reference": ref, "digest": digest}))
        return ready

    @contextlib.contextmanager
    def _making(self, digest: str, name: str,
                progress: Progress) -> Iterator[tuple[RuntimeImage | None, Path]]:
        """Hold the lock for `digest`; yields the image if it is (now) ready, else
        a fresh scratch directory to make it in, removed afterwards in any case."""
        for sub in ("locks", "tmp"):
            (self.cache_dir / sub).mkdir(parents=True, exist_ok=True)
        key = _hex(digest)
        with open(self.cache_dir / "locks" / f"{key}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                progress(f"waiting for another build of {name}")
                fcntl.flock(lock, fcntl.LOCK_EX)
            ready = self._ready(digest)
            if ready is not None:
                yield ready, Path()
                return
            # Whatever is left in tmp/ for this digest belongs to a build that died:
            # a live one would hold the lock.
            for stale in (self.cache_dir / "tmp").glob(f"{key}.*"):
                shutil.rmtree(stale, ignore_errors=True)
            scratch = self.cache_dir / "tmp" / f"{key}.{secrets.token_hex(4)}"
            scratch.mkdir()
            try:
                yield None, scratch
            finally:
                shutil.rmtree(scratch, ignore_errors=True)

    def _commit(self, scratch: Path, image: RuntimeImage) -> RuntimeImage:
        final = self.cache_dir / _hex(image.digest)
        record = image.record() | {
            "size": tree_size(scratch / "rootfs"),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "build_seconds": round(image.build_seconds, 1),
        }
        (scratch / "image.json").write_text(json.dumps(record, indent=2) + "\n")
        (scratch / "rootfs").chmod(0o755)
        try:
            scratch.rename(final)
        except OSError as error:
            raise ImageError(f"could not move the image into {final}: {error}") from None
        return RuntimeImage.load(final)


def _atomic_write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    temporary.write_text(text)
    temporary.replace(path)
