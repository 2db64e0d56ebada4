"""Container images (PackageType Image): pulled from a registry or imported from a
file, unpacked once per layer, content-addressed, with no container engine.

    <cache>/blobs/sha256/<hex>          compressed blobs (skopeo's shared blob dir):
                                        a layer shared by two images is fetched once
    <cache>/layers/<hex>/               one layer unpacked, whiteouts kept as files
    <cache>/containers/<hex>/rootfs     an image's root file system: its layers merged
                                        in order as hard links into the unpacked layers
    <cache>/containers/<hex>/image.json what it is: reference, config, layers, size
    <cache>/imported/<hex>.json         an imported image's ImageUri and its digest
    <cache>/locks/, <cache>/tmp/        as for runtime images (store.py)

<hex> of a container is its manifest digest, which is the function's CodeSha256, as on
Lambda. Every step happens in tmp/ under an exclusive lock per digest and is renamed
into place at its end, so a pull interrupted half-way leaves nothing half-written and
two servers pulling the same image end with one copy. skopeo writes each blob to a
temporary file and renames it too.

Merging layers by hard links instead of an overlay mount keeps the sandbox as it is
(one read-only `/`) and costs a link per file, not a copy of its data.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lamina.images.errors import ImagePullError
from lamina.images.layout import finish_rootfs, tree_size
from lamina.images.oci import tls_verify

Progress = Callable[[str], None]

# The registry name of images imported from a file (`lamina image import`): no
# registry is asked for them, their ImageUri is looked up in <cache>/imported.
IMPORTED_REGISTRY = "lamina.local"
# Lambda's architecture names and the OCI ones (the image config's "architecture").
OCI_ARCHITECTURES = {"x86_64": "amd64", "arm64": "arm64"}
_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json")
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
# A registry reference as Docker and ECR write it: host[:port]/repo[/more]:tag or @digest.
_URI = re.compile(
    r"^(?P<registry>(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?)/"
    r"(?P<repository>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


def host_architecture() -> str:
    """This machine's architecture in Lambda's words (x86_64 or arm64)."""
    return _MACHINES.get(platform.machine(), platform.machine())


@dataclass(frozen=True)
class ImageReference:
    """A parsed ImageUri. Lambda needs a tag or a digest: a bare repository is refused."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, uri: str) -> ImageReference | None:
        found = _URI.match(uri)
        if found is None or not (found["tag"] or found["digest"]):
            return None
        return cls(found["registry"], found["repository"], found["tag"], found["digest"])

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def imported(self) -> bool:
        return self.registry == IMPORTED_REGISTRY

    def pinned(self, digest: str) -> str:
        """ResolvedImageUri: the repository at exactly this manifest."""
        return f"{self.name}@{digest}"

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


@dataclass(frozen=True)
class ImageConfig:
    """What the image's config says about running it (Docker's ENTRYPOINT, CMD, ENV, WORKDIR)."""

    entrypoint: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    working_dir: str = ""
    architecture: str = ""

    @classmethod
    def from_oci(cls, config: dict[str, object]) -> ImageConfig:
        inner = config.get("config") or {}
        assert isinstance(inner, dict)
        env = []
        for item in inner.get("Env") or ():
            key, _, value = str(item).partition("=")
            env.append((key, value))
        return cls(
            entrypoint=tuple(inner.get("Entrypoint") or ()),
            command=tuple(inner.get("Cmd") or ()),
            env=tuple(env),
            working_dir=str(inner.get("WorkingDir") or ""),
            architecture=str(config.get("architecture") or ""),
        )

    def record(self) -> dict[str, object]:
        return {"entrypoint": list(self.entrypoint), "command": list(self.command),
                "env": [list(pair) for pair in self.env], "working_dir": self.working_dir,
                "architecture": self.architecture}

    @classmethod
    def load(cls, record: dict[str, object]) -> ImageConfig:
        return cls(
            entrypoint=tuple(record.get("entrypoint") or ()),  # type: ignore[arg-type]
            command=tuple(record.get("command") or ()),  # type: ignore[arg-type]
            env=tuple((str(k), str(v)) for k, v in record.get("env") or ()),  # type: ignore[attr-defined]
            working_dir=str(record.get("working_dir") or ""),
            architecture=str(record.get("architecture") or ""),
        )


@dataclass(frozen=True)
class ResolvedImage:
    """An ImageUri resolved to one manifest, before anything is pulled."""

    reference: ImageReference
    digest: str
    config: ImageConfig
    # The sum of the compressed layers the manifest lists.
    compressed_size: int

    @property
    def resolved_uri(self) -> str:
        return self.reference.pinned(self.digest)


@dataclass(frozen=True)
class ContainerImage:
    """A container image ready to be `/` of an environment."""

    digest: str
    root: Path
    source: str
    config: ImageConfig
    layers: tuple[str, ...] = ()
    size: int = 0
    created: str = ""
    pull_seconds: float = 0.0

    @classmethod
    def load(cls, directory: Path) -> ContainerImage:
        record = json.loads((directory / "image.json").read_text())
        return cls(digest=record["digest"], root=directory / "rootfs", source=record["source"],
                   config=ImageConfig.load(record["config"]), layers=tuple(record.get("layers", ())),
                   size=record.get("size", 0), created=record.get("created", ""),
                   pull_seconds=record.get("pull_seconds", 0.0))


@dataclass(frozen=True)
class ImportedImage:
    image_uri: str
    digest: str


class ImageNotFoundError(ImagePullError):
    """No such registry, repository, tag or digest (Lambda: the source image does not exist)."""


class ImageAccessDeniedError(ImagePullError):
    """The registry refused the credentials, or asked for some and none were given."""


class ImageTooLargeError(ImagePullError):
    """Larger unpacked than the limit (Lambda: 10 GB)."""


class UnsupportedImageError(ImagePullError):
    """A manifest, media type or architecture Lambda would not run."""


def _classify(what: str, output: str) -> ImagePullError:
    text = output.lower()
    line = (output.strip().splitlines() or [""])[-1]
    if any(word in text for word in ("unauthorized", "authentication required", "denied",
                                     "status 401", "status 403", "invalid username/password")):
        return ImageAccessDeniedError(f"{what}: {line}")
    if any(word in text for word in ("manifest unknown", "name unknown", "not found", "status 404",
                                     "no such host", "connection refused", "no such file",
                                     "does not exist", "no route to host")):
        return ImageNotFoundError(f"{what}: {line}")
    return ImagePullError(f"{what}: {line}")


@dataclass
class ContainerImages:
    """The container images on this machine, and pulling or importing more."""

    cache_dir: Path
    # Registries (host[:port]) reached without TLS verification; loopback ones always are.
    insecure_registries: tuple[str, ...] = ()
    # A Docker-style auth file (config.json / auth.json); empty: skopeo's own search,
    # $REGISTRY_AUTH_FILE, then ~/.docker/config.json.
    auth_file: str = ""
    # Unpacked size limit of one image (Lambda: 10 GB).
    max_bytes: int = 10 * 1024 ** 3
    _tool_checked: bool = field(default=False, repr=False)

    # -- registry access ------------------------------------------------------------

    def _skopeo(self, args: list[str], what: str, timeout: float = 3600) -> str:
        if not self._tool_checked:
            if shutil.which("skopeo") is None:
                raise ImagePullError("container images need Debian's skopeo (apt-get install skopeo)")
            self._tool_checked = True
        auth = ["--authfile", self.auth_file] if self.auth_file else []
        try:
            done = subprocess.run(["skopeo", *args[:1], *auth, *args[1:]], capture_output=True,
                                  timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ImagePullError(f"{what}: {error}") from None
        if done.returncode != 0:
            raise _classify(what, done.stderr.decode(errors="replace") or done.stdout.decode(errors="replace"))
        return done.stdout.decode("utf-8")

    def _tls(self, direction: str, reference: ImageReference) -> list[str]:
        prefix = f"--{direction}-" if direction else "--"
        return [] if tls_verify(reference.name, self.insecure_registries) else [f"{prefix}tls-verify=false"]

    def resolve(self, uri: str, architecture: str) -> ResolvedImage:
        """Ask the registry (or the imported images) which manifest `uri` names now,
        and read its config: what CreateFunction can check before answering."""
        reference = ImageReference.parse(uri)
        if reference is None:
            raise UnsupportedImageError(f"{uri} is not an image reference with a tag or digest")
        if reference.imported:
            return self._resolve_imported(reference)
        flags = self._tls("", reference)
        raw = self._skopeo(["inspect", "--raw", *flags, f"docker://{reference}"], f"skopeo inspect {reference}")
        digest = "sha256:" + hashlib.sha256(raw.encode("utf-8")).hexdigest()
        manifest = json.loads(raw)
        if manifest.get("mediaType") in _INDEX_TYPES or "manifests" in manifest:
            # A multi-platform index: the manifest for this architecture is the image.
            wanted = OCI_ARCHITECTURES.get(architecture, architecture)
            entry = next((item for item in manifest.get("manifests", [])
                          if (item.get("platform") or {}).get("architecture") == wanted
                          and (item.get("platform") or {}).get("os", "linux") == "linux"), None)
            if entry is None:
                raise UnsupportedImageError(f"{reference} has no image for linux/{wanted}")
            digest = entry["digest"]
            raw = self._skopeo(["inspect", "--raw", *flags, f"docker://{reference.pinned(digest)}"],
                               f"skopeo inspect {reference}")
            manifest = json.loads(raw)
        if "layers" not in manifest or "config" not in manifest:
            raise UnsupportedImageError(f"{reference}: unsupported manifest {manifest.get('mediaType')}")
        config = json.loads(self._skopeo(
            ["inspect", "--config", *flags, f"docker://{reference.pinned(digest)}"],
            f"skopeo inspect --config {reference}"))
        return ResolvedImage(reference, digest, ImageConfig.from_oci(config),
                             sum(int(layer.get("size", 0)) for layer in manifest["layers"]))

    def _resolve_imported(self, reference: ImageReference) -> ResolvedImage:
        if reference.digest:
            digest = reference.digest
        else:
            try:
                digest = json.loads(self._imported_path(str(reference)).read_text())["digest"]
            except (OSError, ValueError, KeyError):
                raise ImageNotFoundError(f"no image imported as {reference}") from None
        image = self.installed(digest)
        if image is None:
            raise ImageNotFoundError(f"the image imported as {reference} is no longer on this machine")
        return ResolvedImage(reference, digest, image.config, 0)

    # -- the cache ----------------------------------------------------------------------

    def installed(self, digest: str) -> ContainerImage | None:
        """The image with this manifest digest if it is ready here; never pulls."""
        try:
            return ContainerImage.load(self.cache_dir / "containers" / digest.split(":", 1)[-1])
        except (OSError, ValueError, KeyError):
            return None

    def ensure(self, resolved_uri: str, progress: Progress | None = None) -> ContainerImage:
        """The image `resolved_uri` (repository@digest), pulled first if need be (blocking)."""
        reference = ImageReference.parse(resolved_uri)
        if reference is None or reference.digest is None:
            raise UnsupportedImageError(f"{resolved_uri} is not pinned to a digest")
        ready = self.installed(reference.digest)
        if ready is not None:
            return ready
        if reference.imported:
            raise ImageNotFoundError(f"the image imported as {resolved_uri} is no longer on this machine")
        report = progress or (lambda _line: None)
        started = time.monotonic()
        with self._making("container", reference.digest, report) as scratch:
            if scratch is None:
                image = self.installed(reference.digest)
                assert image is not None
                return image
            layout = scratch / "layout"
            report(f"skopeo copy docker://{resolved_uri}")
            self._skopeo(["copy", "--quiet", *self._tls("src", reference),
                          "--dest-shared-blob-dir", str(self._blobs()), f"docker://{resolved_uri}",
                          f"oci:{layout}:image"], f"skopeo copy {resolved_uri}")
            return self._assemble(scratch, layout, reference.digest, f"oci {resolved_uri}", started, report)

    def import_archive(self, source: Path, image_uri: str | None = None,
                       progress: Progress | None = None) -> ImportedImage:
        """Import a `docker save` tarball or an OCI image layout directory; returns
        the ImageUri that names it in CreateFunction."""
        report = progress or (lambda _line: None)
        if source.is_dir():
            transport = f"oci:{source}"
        elif source.is_file():
            transport = f"docker-archive:{source}"
        else:
            raise ImageNotFoundError(f"{source} does not exist")
        started = time.monotonic()
        for sub in ("tmp",):
            (self.cache_dir / sub).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache_dir / "tmp", prefix="import.") as scratch_dir:
            layout = Path(scratch_dir) / "layout"
            report(f"skopeo copy {transport}")
            self._skopeo(["copy", "--quiet", "--dest-shared-blob-dir", str(self._blobs()), transport,
                          f"oci:{layout}:image"], f"skopeo copy {transport}")
            index = json.loads((layout / "index.json").read_text())
            digest = index["manifests"][0]["digest"]
            if image_uri is None:
                image_uri = self._archive_name(source, digest)
            reference = ImageReference.parse(_imported_name(image_uri))
            if reference is None or reference.digest:
                raise UnsupportedImageError(f"{image_uri} is not an image name with a tag (e.g. fn:1)")
            if self.installed(digest) is None:
                with self._making("container", digest, report) as scratch:
                    if scratch is not None:
                        (Path(scratch_dir) / "layout").rename(scratch / "layout")
                        self._assemble(scratch, scratch / "layout", digest, f"imported {source.name}",
                                       started, report)
        imported = ImportedImage(str(reference), digest)
        path = self._imported_path(imported.image_uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, json.dumps({"image_uri": imported.image_uri, "digest": digest}))
        return imported

    def _archive_name(self, source: Path, digest: str) -> str:
        """The archive's own tag (docker save's `fn:1`), else a name from the file's."""
        if source.is_file():
            with contextlib.suppress(OSError, ValueError, KeyError, IndexError, tarfile.TarError):
                # docker save's manifest.json names its tags (skopeo inspect does not show them).
                with tarfile.open(source) as archive:
                    member = archive.extractfile("manifest.json")
                    tags = json.loads(member.read())[0].get("RepoTags") or [] if member else []
                if tags:
                    return str(tags[0])
        stem = re.sub(r"[^a-z0-9]+", "-", source.name.lower().split(".")[0]).strip("-") or "image"
        return f"{stem}:{digest.split(':')[-1][:12]}"

    def imported(self) -> list[ImportedImage]:
        found = []
        for path in sorted((self.cache_dir / "imported").glob("*.json")):
            with contextlib.suppress(OSError, ValueError, KeyError):
                record = json.loads(path.read_text())
                found.append(ImportedImage(record["image_uri"], record["digest"]))
        return found

    def list(self) -> list[ContainerImage]:
        directory = self.cache_dir / "containers"
        images = []
        if directory.is_dir():
            for entry in directory.iterdir():
                with contextlib.suppress(OSError, ValueError, KeyError):
                    images.append(ContainerImage.load(entry))
        return sorted(images, key=lambda image: image.created)

    def _imported_path(self, image_uri: str) -> Path:
        return self.cache_dir / "imported" / f"{hashlib.sha256(image_uri.encode()).hexdigest()}.json"

    def _blobs(self) -> Path:
        blobs = self.cache_dir / "blobs"
        blobs.mkdir(parents=True, exist_ok=True)
        return blobs

    # -- unpacking ------------------------------------------------------------------------

    def _assemble(self, scratch: Path, layout: Path, digest: str, source: str, started: float,
                  progress: Progress) -> ContainerImage:
        """Unpack the layers the layout's manifest lists (each once) and merge them into
        scratch/rootfs, then move scratch into place as the image `digest`."""
        index = json.loads((layout / "index.json").read_text())
        manifest = json.loads(self._blob(layout, index["manifests"][0]["digest"]).read_text())
        config = json.loads(self._blob(layout, manifest["config"]["digest"]).read_text())
        layers = [layer["digest"] for layer in manifest["layers"]]
        total = 0
        roots = []
        for layer in layers:
            root, size = self._layer(layout, layer, progress)
            total += size
            if total > self.max_bytes:
                raise ImageTooLargeError(
                    f"the image is larger than {self.max_bytes} bytes unpacked (at least {total})")
            roots.append(root)
        rootfs = scratch / "rootfs"
        rootfs.mkdir(mode=0o755)
        progress(f"merging {len(roots)} layers")
        for root in roots:
            merge_layer(root, rootfs)
        finish_rootfs(rootfs, users=False, prune=False)
        record = {
            "digest": digest, "source": source, "config": ImageConfig.from_oci(config).record(),
            "layers": layers, "size": total, "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "pull_seconds": round(time.monotonic() - started, 2),
        }
        shutil.rmtree(layout, ignore_errors=True)
        (scratch / "image.json").write_text(json.dumps(record, indent=2) + "\n")
        final = self.cache_dir / "containers" / digest.split(":", 1)[-1]
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch.rename(final)
        return ContainerImage.load(final)

    def _blob(self, layout: Path, digest: str) -> Path:
        algorithm, _, hex_digest = digest.partition(":")
        for base in (self._blobs(), layout / "blobs"):
            if (base / algorithm / hex_digest).is_file():
                return base / algorithm / hex_digest
        raise ImagePullError(f"blob {digest} is missing after the copy")

    def _layer(self, layout: Path, digest: str, progress: Progress) -> tuple[Path, int]:
        """The unpacked layer `digest` and its size, unpacking it unless some image did."""
        final = self.cache_dir / "layers" / digest.split(":", 1)[-1]
        if (final / ".size").is_file():
            return final / "tree", int((final / ".size").read_text())
        with self._making("layer", digest, progress) as scratch:
            if scratch is None:
                return final / "tree", int((final / ".size").read_text())
            tree = scratch / "tree"
            tree.mkdir()
            progress(f"unpacking layer {digest[:19]}")
            # GNU tar recognises gzip, bzip2, xz and zstd itself; as root it would
            # keep the archive's owners and make device nodes: neither belongs in an
            # image every sandbox user reads.
            done = subprocess.run(
                ["tar", "-x", "-f", str(self._blob(layout, digest)), "-C", str(tree), "--no-same-owner",
                 "--numeric-owner", "--exclude=dev/*", "--exclude=./dev/*"],
                capture_output=True, check=False)
            if done.returncode != 0:
                message = done.stderr.decode(errors="replace").strip().splitlines()
                raise UnsupportedImageError(f"layer {digest} could not be unpacked: "
                                            f"{message[-1] if message else done.returncode}")
            size = tree_size(tree)
            (scratch / ".size").write_text(str(size))
            final.parent.mkdir(parents=True, exist_ok=True)
            scratch.rename(final)
        return final / "tree", size

    @contextlib.contextmanager
    def _making(self, kind: str, digest: str, progress: Progress) -> Iterator[Path | None]:
        """Hold the lock of `digest`; yields None if another holder made it meanwhile,
        else a fresh scratch directory (removed afterwards unless renamed into place)."""
        for sub in ("locks", "tmp"):
            (self.cache_dir / sub).mkdir(parents=True, exist_ok=True)
        key = f"{kind}-{digest.split(':', 1)[-1]}"
        final = self.cache_dir / ("containers" if kind == "container" else "layers") / digest.split(":", 1)[-1]
        with open(self.cache_dir / "locks" / f"{key}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                progress(f"waiting for another pull of {digest[:19]}")
                fcntl.flock(lock, fcntl.LOCK_EX)
            if final.exists():
                yield None
                return
            # Left by a pull that died: a live one would hold the lock.
            for stale in (self.cache_dir / "tmp").glob(f"{key}.*"):
                shutil.rmtree(stale, ignore_errors=True)
            scratch = self.cache_dir / "tmp" / f"{key}.{secrets.token_hex(4)}"
            scratch.mkdir()
            try:
                yield scratch
            finally:
                shutil.rmtree(scratch, ignore_errors=True)


def _imported_name(name: str) -> str:
    """`name` under lamina.local/, without the registry it may name (Docker's rule: a
    first component with a dot or a port, or localhost, is a registry)."""
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        name = rest
        if first == "docker.io":
            # How Docker writes `fn:1` in full; it shows it as `fn:1`.
            name = name.removeprefix("library/")
    return f"{IMPORTED_REGISTRY}/{name}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def merge_layer(layer: Path, rootfs: Path) -> None:
    """Apply one unpacked layer onto `rootfs` as the OCI image spec says: whiteouts
    (`.wh.NAME`) remove NAME from the layers below, an opaque marker empties its
    directory, everything else replaces what was there. Files become hard links to the
    layer's own, so the image costs no copy of its data.

    Every directory written into is one this function made (a symlink a lower layer
    left in the way is replaced), so nothing is ever written outside `rootfs`.
    """
    for dirpath, dirnames, filenames in os.walk(layer):
        relative = os.path.relpath(dirpath, layer)
        target = rootfs if relative == "." else rootfs / relative
        names = dirnames + filenames
        if _OPAQUE in filenames:
            for existing in list(target.iterdir()):
                _remove(existing)
        for name in names:
            if name.startswith(_WHITEOUT) and name != _OPAQUE:
                _remove(target / name[len(_WHITEOUT):])
        for name in names:
            if name.startswith(_WHITEOUT):
                continue
            source = os.path.join(dirpath, name)
            destination = target / name
            info = os.lstat(source)
            if stat.S_ISDIR(info.st_mode):
                if not (destination.is_dir() and not destination.is_symlink()):
                    _remove(destination)
                    destination.mkdir()
                os.chmod(destination, stat.S_IMODE(info.st_mode))
            elif stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
                continue
            else:
                _remove(destination)
                os.link(source, destination, follow_symlinks=False)


def _atomic_write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    temporary.write_text(text)
    temporary.replace(path)
