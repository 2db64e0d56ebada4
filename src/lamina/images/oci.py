"""Runtime images from an OCI registry, with Debian's skopeo and umoci.

AWS publishes its runtimes as images (`<registry>/lambda/python:3.13`, ...); a
registry holding those, or Lamina's own images pushed with `push_rootfs`, can
serve every Lamina server so none of them builds.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from lamina.images.errors import ImagePullError
from lamina.images.layout import finish_rootfs

Progress = Callable[[str], None]
# The label Lamina's own images carry: what runs in them, as image.json records it.
VERSIONS_LABEL = "org.lamina.versions"


def reference(registry: str, name: str) -> str:
    """Where image `name` lives in `registry`, named as AWS names its runtime images:
    python3.13 -> python:3.13, nodejs24 -> nodejs:24, provided -> provided:al2023."""
    if name.startswith("python"):
        repo, tag = "python", name.removeprefix("python")
    elif name.startswith("nodejs"):
        repo, tag = "nodejs", name.removeprefix("nodejs")
    elif name == "provided":
        repo, tag = "provided", "al2023"
    else:
        repo, tag = name, "latest"
    return f"{registry.rstrip('/')}/{repo}:{tag}"


def registry_host(ref: str) -> str:
    return ref.split("/", 1)[0]


def tls_verify(ref: str, insecure: tuple[str, ...] = ()) -> bool:
    """TLS is skipped only for a registry on loopback or one a setting names."""
    host = registry_host(ref)
    if host in insecure:
        return False
    if host.startswith("["):
        name = host[1:host.find("]")]
    elif host.count(":") == 1:
        name = host.split(":")[0]
    else:
        name = host
    if name == "localhost":
        return False
    try:
        return not ipaddress.ip_address(name).is_loopback
    except ValueError:
        return True


def _tools() -> None:
    missing = [tool for tool in ("skopeo", "umoci") if shutil.which(tool) is None]
    if missing:
        raise ImagePullError(f"pulling images needs Debian's {' and '.join(missing)} (apt-get install "
                             f"{' '.join(missing)})")


def _run(command: list[str], what: str, progress: Progress | None = None) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ImagePullError(f"{what}: {error}") from None
    if done.returncode != 0:
        message = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise ImagePullError(f"{what}: {message[-1] if message else f'exit {done.returncode}'}")
    if progress is not None:
        for line in done.stdout.splitlines() + done.stderr.splitlines():
            if line.strip():
                progress(line.strip())
    return done.stdout


def _tls_flag(direction: str, ref: str, insecure: tuple[str, ...]) -> list[str]:
    """skopeo's flag for a plain-HTTP registry: --src-, --dest- or (inspect) plain."""
    prefix = f"--{direction}-" if direction else "--"
    return [] if tls_verify(ref, insecure) else [f"{prefix}tls-verify=false"]


def manifest_digest(ref: str, insecure: tuple[str, ...] = ()) -> str:
    """The digest `ref` points at now (of its manifest, or of its index)."""
    _tools()
    raw = _run(["skopeo", "inspect", "--raw", *_tls_flag("", ref, insecure), f"docker://{ref}"],
               f"skopeo inspect {ref}")
    # The manifest's exact bytes (skopeo prints them unchanged): JSON, so UTF-8.
    return "sha256:" + hashlib.sha256(raw.encode("utf-8")).hexdigest()


def pull(ref: str, digest: str, root: Path, progress: Progress,
         insecure: tuple[str, ...] = ()) -> tuple[dict[str, str], bool]:
    """Unpack the image `ref` at `digest` into `root` (which must not exist).

    Returns the versions it records and whether it brings its own runtime client
    (`/var/runtime/bootstrap`, as AWS's images do)."""
    _tools()
    pinned = f"{ref.rsplit(':', 1)[0] if ':' in ref.rsplit('/', 1)[-1] else ref}@{digest}"
    with tempfile.TemporaryDirectory(dir=root.parent, prefix="oci.") as scratch:
        layout = Path(scratch) / "layout"
        bundle = Path(scratch) / "bundle"
        progress(f"skopeo copy docker://{pinned}")
        _run(["skopeo", "copy", "--quiet", *_tls_flag("src", ref, insecure), f"docker://{pinned}",
              f"oci:{layout}:image"], f"skopeo copy {pinned}", progress)
        progress("umoci unpack")
        _run(["umoci", "unpack", "--image", f"{layout}:image", str(bundle)], "umoci unpack")
        config = json.loads((bundle / "config.json").read_text())
        labels = config.get("annotations", {})
        (bundle / "rootfs").rename(root)
    finish_rootfs(root, users=False)
    versions = _versions(root, labels)
    return versions, (root / "var/runtime/bootstrap").exists()


def _versions(root: Path, labels: dict[str, str]) -> dict[str, str]:
    try:
        found = json.loads(labels.get(VERSIONS_LABEL, "{}"))
    except ValueError:
        found = {}
    if found:
        return {str(k): str(v) for k, v in found.items()}
    # AWS's images: the interpreter's name says its minor version.
    for python in sorted((root / "var/lang/bin").glob("python3.*")):
        found["python"] = python.name.removeprefix("python")
    return found


def push_rootfs(rootfs: Path, ref: str, versions: dict[str, str], progress: Progress,
                insecure: tuple[str, ...] = ()) -> str:
    """Publish a root file system as a one-layer image at `ref`; returns its digest.

    How a Lamina image built once is shared with other servers through a registry.
    """
    _tools()
    with tempfile.TemporaryDirectory(prefix="lamina-push.") as scratch:
        layout = Path(scratch) / "layout"
        bundle = Path(scratch) / "bundle"
        _run(["umoci", "init", "--layout", str(layout)], "umoci init")
        _run(["umoci", "new", "--image", f"{layout}:image"], "umoci new")
        _run(["umoci", "unpack", "--image", f"{layout}:image", str(bundle)], "umoci unpack")
        (bundle / "rootfs").rmdir()
        progress(f"copying {rootfs}")
        subprocess.run(["cp", "-a", "--reflink=auto", str(rootfs), str(bundle / "rootfs")], check=True)
        progress("umoci repack")
        _run(["umoci", "repack", "--image", f"{layout}:image", str(bundle)], "umoci repack")
        _run(["umoci", "config", "--image", f"{layout}:image",
              f"--config.label={VERSIONS_LABEL}={json.dumps(versions, sort_keys=True)}"], "umoci config")
        progress(f"skopeo copy to docker://{ref}")
        _run(["skopeo", "copy", "--quiet", *_tls_flag("dest", ref, insecure), f"oci:{layout}:image",
              f"docker://{ref}"], f"skopeo copy to {ref}", progress)
    return manifest_digest(ref, insecure)
