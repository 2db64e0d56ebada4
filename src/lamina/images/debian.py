"""Build a runtime image from Debian's packages with mmdebstrap.

mmdebstrap installs a suite's essential packages plus the recipe's into a
directory, without apt or a container engine on the host. Lamina then adds the
Python packages Lambda's runtimes ship (boto3) with the host's pip and gives the
tree Lambda's layout (see layout.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lamina.images.errors import ImageBuildError
from lamina.images.layout import finish_rootfs
from lamina.images.recipes import Recipe

Progress = Callable[[str], None]

# Kept out of images: documentation is most of a minimal system's size and nothing
# reads it at run time (the copyright files stay, as Debian's licences ask).
_DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
)


_PRIVATE_MOUNTS = ("unshare", "--mount", "--propagation", "private")


def build(recipe: Recipe, root: Path, progress: Progress, mirror: str = "") -> dict[str, str]:
    """Build `recipe` into the empty or missing directory `root`; returns the
    versions of what runs in it (e.g. {"python": "3.13.5", "boto3": "1.40.1"})."""
    if shutil.which("mmdebstrap") is None:
        raise ImageBuildError(
            "building runtime images needs Debian's mmdebstrap (apt-get install mmdebstrap), "
            "or set LAMINA_RUNTIME_IMAGE_REGISTRY to pull them from a registry"
        )
    if os.geteuid() != 0:
        # Unprivileged builds (--mode=unshare) leave files owned by subordinate ids
        # that the later steps (pip, ownership, compileall in a chroot) cannot
        # handle as an ordinary user.
        raise ImageBuildError(
            "building runtime images needs root (mmdebstrap --mode=root); run "
            "`sudo lamina runtimes install ...` once, or set LAMINA_RUNTIME_IMAGE_REGISTRY "
            "to pull them from a registry"
        )
    # In a mount namespace of its own: the proc, sys and dev mounts mmdebstrap makes
    # inside the new root vanish with it, even when a stopped server kills it half-way.
    command = [
        *_PRIVATE_MOUNTS, "mmdebstrap", f"--variant={recipe.variant}", "--mode=root", "--format=directory",
        "--include=" + ",".join(recipe.packages),
        *(f"--dpkgopt={option}" for option in _DPKG_EXCLUDES),
        recipe.suite, str(root),
    ]
    if mirror:
        command.append(mirror)
    progress(f"mmdebstrap {recipe.suite}: {', '.join(recipe.packages)}")
    try:
        _run(command, progress, "mmdebstrap")
    except ImageBuildError as error:
        if "is expired" not in str(error):
            raise
        # A mirror that serves a snapshot of a suite (sid moves daily) can carry a
        # Release file past its Valid-Until date. Its signature is still checked.
        progress(f"warning: the {recipe.suite} Release file is past its Valid-Until date; "
                 "building again without that check (signatures are still verified)")
        shutil.rmtree(root, ignore_errors=True)
        mmdebstrap = len(_PRIVATE_MOUNTS) + 1
        _run([*command[:mmdebstrap], "--aptopt=Acquire::Check-Valid-Until \"false\"",
              *command[mmdebstrap:]], progress, "mmdebstrap")
    versions = _package_versions(root, recipe)
    if recipe.pip_packages and recipe.python:
        versions |= _install_pip_packages(recipe, root, progress)
    finish_rootfs(root)
    return versions


def _run(command: list[str], progress: Progress, what: str, cwd: Path | None = None) -> None:
    """Run `command`, passing each line it prints to `progress`."""
    started = time.monotonic()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
        env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"},
    )
    assert process.stdout is not None
    tail: list[str] = []
    for line in process.stdout:
        line = line.rstrip()
        if line:
            progress(line)
            tail = (tail + [line])[-20:]
    if process.wait() != 0:
        raise ImageBuildError(
            f"{what} failed (exit {process.returncode}) after {time.monotonic() - started:.0f} s:\n"
            + "\n".join(tail)
        )


def _dpkg_versions(root: Path) -> dict[str, str]:
    """Package -> version for every package installed in `root`."""
    versions: dict[str, str] = {}
    status = (root / "var/lib/dpkg/status").read_text(errors="replace")
    for stanza in status.split("\n\n"):
        fields = dict(re.findall(r"^(Package|Version|Status): (.*)$", stanza, re.MULTILINE))
        if "installed" in fields.get("Status", "") and "Package" in fields:
            versions[fields["Package"]] = fields.get("Version", "")
    return versions


def _upstream(version: str) -> str:
    """"3.13.5-2" -> "3.13.5", "20.19.2+dfsg-1" -> "20.19.2"."""
    version = version.split(":", 1)[-1]
    return re.split(r"[-+~]", version, maxsplit=1)[0]


def _package_versions(root: Path, recipe: Recipe) -> dict[str, str]:
    installed = _dpkg_versions(root)
    python = f"python{recipe.python}-minimal" if recipe.python else "python3-minimal"
    found = {key: _upstream(installed[package])
             for key, package in (("python", python), ("node", "nodejs"), ("curl", "curl"))
             if package in installed}
    found["debian"] = (root / "etc/debian_version").read_text().strip()
    return found


def _install_pip_packages(recipe: Recipe, root: Path, progress: Progress) -> dict[str, str]:
    """Install pure-Python wheels for the image's Python where Lambda has them."""
    assert recipe.python is not None
    inside = f"/var/lang/lib/python{recipe.python}/site-packages"
    target = root / inside.lstrip("/")
    target.mkdir(parents=True)
    progress(f"pip: {', '.join(recipe.pip_packages)} for Python {recipe.python} into {inside}")
    _run([
        sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
        "--no-warn-conflicts", "--root-user-action=ignore",
        "--target", str(target), "--only-binary=:all:", "--implementation", "cp",
        "--python-version", recipe.python, "--no-compile", *recipe.pip_packages,
    ], progress, "pip install")
    for leftover in target.glob("bin"):
        shutil.rmtree(leftover)
    # Compiled by the image's own interpreter now: the image is read-only when it
    # runs, so a .pyc missing then would be recompiled on every cold start.
    _run(["chroot", str(root), f"/usr/bin/python{recipe.python}", "-m", "compileall", "-q", "-j0",
          inside], progress, "compileall")
    # Lambda's layout: /var/lang/bin/python3.X (and python3) next to its packages.
    bin_dir = root / "var/lang/bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for link in (f"python{recipe.python}", "python3"):
        (bin_dir / link).symlink_to(f"/usr/bin/python{recipe.python}")
    versions = {}
    for dist_info in target.glob("*.dist-info"):
        name, _, version = dist_info.name.removesuffix(".dist-info").partition("-")
        if name.lower() in recipe.pip_packages:
            versions[name.lower()] = version
    return versions
