"""What goes into each runtime image Lamina builds itself.

An image is named after what it runs (`python3.13`, `nodejs24`, `provided`), not
after a Lambda identifier: the runtime catalog maps identifiers onto these names.
Each recipe takes a language version from the Debian suite that has it, so the
interpreter is Debian's own build, updated by Debian.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

# Raised whenever the way images are built or laid out changes, so every cached
# image built the old way gets a new digest and is rebuilt.
IMAGE_FORMAT_VERSION = 1

# The users every image knows, as Lambda's environments have them: functions run as
# sbx_user1051.
PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "sbx_user1051:x:993:990::/home/sbx_user1051:/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
)
GROUP = "root:x:0:\nsbx_user1051:x:990:\nnogroup:x:65534:\n"

# Directories the sandbox mounts over (or into) the read-only image: they must exist
# in it, since nothing can be created in a read-only root.
MOUNT_POINTS = ("var/task", "opt", "var/runtime", "tmp", "proc", "dev", "var/lang")


@dataclass(frozen=True)
class Recipe:
    name: str
    suite: str
    # Debian packages on top of the variant's essential set.
    packages: tuple[str, ...]
    # Python packages installed into /var/lang/lib/python3.X/site-packages, where
    # Lambda's Python runtimes keep boto3.
    pip_packages: tuple[str, ...] = ()
    # The image's Python (for pip's target version and the /var/lang layout).
    python: str | None = None
    variant: str = "essential"

    def digest(self) -> str:
        """sha256 of everything that decides the image's content."""
        recipe = asdict(self) | {"format": IMAGE_FORMAT_VERSION}
        text = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _python(minor: int, suite: str) -> Recipe:
    return Recipe(
        name=f"python3.{minor}",
        suite=suite,
        # python3.X itself, not only its -minimal part: its postinst byte-compiles the
        # standard library of libpython3.X-stdlib (json, re, socket, ...). Without
        # those .pyc files the read-only image made every cold start compile them
        # again (about +20 ms for the runtime client's own imports).
        packages=(f"python3.{minor}-minimal", f"libpython3.{minor}-stdlib", f"python3.{minor}",
                  "ca-certificates", "tzdata"),
        pip_packages=("boto3",),
        python=f"3.{minor}",
    )


def _nodejs(major: int, suite: str) -> Recipe:
    # The AWS SDK for JavaScript v3 that Lambda's nodejs runtimes bundle in
    # /var/runtime/node_modules is not included: functions that use it bundle it.
    return Recipe(name=f"nodejs{major}", suite=suite, packages=("nodejs", "ca-certificates", "tzdata"))


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        _python(11, "bookworm"),
        _python(13, "trixie"),
        _python(14, "sid"),
        _nodejs(20, "trixie"),
        _nodejs(24, "sid"),
        # OS-only runtimes: a shell, curl, CA certificates and the C++ runtime like
        # Amazon Linux's minimal image, plus Python 3.11 (a Lamina addition) so a
        # `bootstrap` written in Python, such as one starting awslambdaric (whose
        # native client needs libstdc++), runs; python3.11 for its compiled stdlib.
        Recipe(
            name="provided",
            suite="bookworm",
            packages=("curl", "ca-certificates", "libstdc++6", "python3-minimal",
                      "libpython3.11-stdlib", "python3.11", "tzdata"),
        ),
    )
}
