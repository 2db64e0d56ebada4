"""Which runtime identifiers this server runs, and how.

Like Lambda, each runtime is a root file system image (runtime_source "image"):
Debian's build of the language, with Lambda's layout, mounted read-only as `/` (see
lamina.images). Debian has one Python and one Node.js per suite, so an identifier
with no exact match runs on the nearest newer version of the same language
(python3.12 on 3.13, nodejs22.x on Node.js 24); ordinary code is forward compatible,
but compiled packages built for the identifier's version will not load.

runtime_source "host" runs functions on the host's own interpreters instead:
`python3.X` on the oldest CPython 3.X or newer found on the host, refused when
there is none.

Identifiers AWS no longer accepts for new functions are refused with AWS's message
unless the allow_deprecated_runtimes setting is on; existing functions that use one
keep running (Lambda does not block their invocations either).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lamina.config import Settings, load_settings
from lamina.errors import InvalidParameterValueException

CLIENTS_DIR = Path(__file__).parent / "clients"
PROVIDED = ("provided", "provided.al2", "provided.al2023")
_PYTHON = re.compile(r"^python3\.(\d+)$")
_NODEJS = re.compile(r"^nodejs(\d+)\.x$")
# Where Lambda's Node.js runtime looks for modules besides the function's own.
NODE_PATH = "/opt/nodejs/node_modules:/var/runtime/node_modules:/var/runtime:/var/task"

# The runtime images (lamina.images.recipes builds them) by language version.
PYTHON_IMAGES = {11: "python3.11", 13: "python3.13", 14: "python3.14"}
NODEJS_IMAGES = {20: "nodejs20", 24: "nodejs24"}
PROVIDED_IMAGE = "provided"

# Identifiers AWS accepts for new functions today (its deprecation table), in its order.
CURRENT = (
    "nodejs24.x", "nodejs22.x", "nodejs20.x",
    "python3.14", "python3.13", "python3.12", "python3.11", "python3.10",
    "provided.al2023", "provided.al2",
)
# Identifiers AWS refuses for new functions, with the runtime its message recommends.
DEPRECATED = {
    **{f"python{v}": "python3.14" for v in ("2.7", "3.6", "3.7", "3.8", "3.9")},
    **{v: "nodejs24.x" for v in ("nodejs", "nodejs4.3", "nodejs4.3-edge", "nodejs6.10", "nodejs8.10",
                                 "nodejs10.x", "nodejs12.x", "nodejs14.x", "nodejs16.x", "nodejs18.x")},
    "provided": "provided.al2023", "go1.x": "provided.al2023",
    **{v: "java25" for v in ("java8",)},
    **{v: "ruby3.4" for v in ("ruby2.5", "ruby2.7", "ruby3.2")},
    **{v: "dotnet8" for v in ("dotnetcore1.0", "dotnetcore2.0", "dotnetcore2.1", "dotnetcore3.1", "dotnet6")},
}
# What AWS's runtime environment sets for a runtime that brings its own client in
# /var/runtime (AWS's base images).
_AWS_IMAGE_ENV = (
    ("LAMBDA_RUNTIME_DIR", "/var/runtime"),
    ("PATH", "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin"),
    ("LD_LIBRARY_PATH", ("/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:"
                         "/var/task/lib:/opt/lib")),
)


@dataclass(frozen=True)
class RuntimeSpec:
    identifier: str
    # The command inside the environment (inside paths).
    argv: tuple[str, ...]
    # Host paths the command needs, made visible read-only inside a sandbox (host mode).
    system_paths: tuple[Path, ...]
    # AWS_EXECUTION_ENV as Lambda sets it; None for custom runtimes (Lambda sets none).
    execution_env: str | None
    # Describes the mapping honestly, e.g. for GetAccountSettings and the docs.
    interpreter: str
    # Variables the runtime needs (the function's own may override them).
    env: tuple[tuple[str, str], ...] = ()
    # The runtime image mounted as / (lamina.images), or None: the host's own files.
    image: str | None = None
    # The image brings its own runtime client in /var/runtime: nothing is mounted
    # over it and /var/runtime/bootstrap runs.
    own_runtime_dir: bool = False
    # Said when the identifier runs on another minor version than its own.
    warning: str | None = None

    def on_image(self, own_runtime: bool) -> RuntimeSpec:
        """This spec for the image actually installed: one that brings its own runtime
        client (AWS's images) runs it as Lambda does."""
        if not own_runtime or self.identifier in PROVIDED:
            return self
        return dataclasses.replace(self, argv=("/var/runtime/bootstrap",), own_runtime_dir=True,
                                   env=self.env + _AWS_IMAGE_ENV)


@functools.cache
def _env_settings() -> Settings:
    return load_settings()


# -- the host's interpreters (runtime_source "host") ---------------------------------


@functools.cache
def _host_pythons() -> dict[int, Path]:
    """Minor version -> interpreter, for every CPython 3 found on this host.

    Where a version is installed more than once (Debian's /usr/bin/python3.11 and a
    pyenv build under /root), one that every user can reach wins: sandboxes run as
    unprivileged host uids, which cannot even stat a file under a 0700 home.
    """
    found: dict[int, list[Path]] = {}
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    if base.exists():
        found[sys.version_info.minor] = [base]
    seen = {base.resolve()} if base.exists() else set()
    for minor in range(8, 20):
        for exe in _on_path(f"python3.{minor}"):
            if Path(exe).resolve() in seen:
                continue
            real = _real_python(exe, minor)
            if real is not None and real not in seen:
                seen.add(real)
                found.setdefault(minor, []).append(real)
    return {minor: next((exe for exe in exes if _reachable_by_all(exe)), exes[0])
            for minor, exes in found.items()}


def _on_path(name: str) -> list[str]:
    """Every executable called `name` on PATH, in PATH's order (shutil.which: the first)."""
    found = []
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        exe = shutil.which(name, path=directory or ".")
        if exe is not None and exe not in found:
            found.append(exe)
    return found


def _reachable_by_all(exe: Path) -> bool:
    """Whether any user can run `exe`: it and every directory above it are open to others."""
    try:
        real = exe.resolve()
        if not real.stat().st_mode & stat.S_IXOTH:
            return False
        return all(directory.stat().st_mode & stat.S_IXOTH for directory in real.parents)
    except OSError:
        return False


def _real_python(exe: str, minor: int) -> Path | None:
    """The interpreter binary behind `exe`, if it runs and is CPython 3.<minor>.

    A name on PATH can be a wrapper rather than the interpreter (pyenv's shims
    exist for versions that are not installed, and are not visible inside a
    sandbox), so the interpreter is asked where it really is.
    """
    try:
        answer = subprocess.run(
            [exe, "-S", "-c", "import sys; print(sys.version_info[1]); print(sys.executable)"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = answer.stdout.split()
    if answer.returncode != 0 or len(lines) != 2 or lines[0] != str(minor):
        return None
    return Path(lines[1]).resolve()


@functools.cache
def _host_node() -> tuple[int, Path] | None:
    exe = shutil.which("node")
    if exe is None:
        return None
    try:
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
        return int(version.strip().lstrip("v").split(".")[0]), Path(exe).resolve()
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def _interpreter_prefix(exe: Path) -> Path:
    """The installation prefix to expose inside a sandbox (e.g. /usr or a pyenv dir)."""
    return exe.parent.parent


def _host_spec(identifier: str) -> RuntimeSpec:
    if identifier in PROVIDED:
        return RuntimeSpec(identifier, ("/var/task/bootstrap",), (), None, "the package's bootstrap")
    found = _PYTHON.match(identifier)
    if found:
        wanted = int(found.group(1))
        pythons = _host_pythons()
        usable = [minor for minor in pythons if minor >= wanted]
        if usable:
            exe = pythons[min(usable)]
            return RuntimeSpec(
                identifier,
                # -S: no site-packages of the host's interpreter leak into
                # functions (and no site import on every cold start). /opt is passed
                # as an argument, an inside path like the others, so a backend that
                # cannot mount it (plain processes) rewrites it too.
                (str(exe), "-u", "-S", "/var/runtime/python/main.py", "/opt"),
                (_interpreter_prefix(exe),),
                f"AWS_Lambda_{identifier}",
                f"CPython at {exe}",
            )
        newest = max(pythons) if pythons else None
        raise InvalidParameterValueException(
            f"The runtime parameter of {identifier} is not supported by this Lamina host: no "
            f"CPython 3.{wanted} or newer is installed"
            + (f" (newest found: python3.{newest})." if newest else ".")
        )
    found = _NODEJS.match(identifier)
    if found:
        node = _host_node()
        if node is not None and node[0] >= int(found.group(1)) >= 18:
            major, exe = node
            return RuntimeSpec(
                identifier,
                (str(exe), "/var/runtime/nodejs/index.mjs"),
                (_interpreter_prefix(exe),),
                f"AWS_Lambda_{identifier}",
                f"Node.js {major} at {exe}",
                (("NODE_PATH", NODE_PATH),),
            )
        raise InvalidParameterValueException(
            f"The runtime parameter of {identifier} is not supported by this Lamina host: "
            + (f"its Node.js is version {node[0]}." if node else "no Node.js is installed.")
        )
    raise _not_supported(identifier, "host")


# -- runtime images (runtime_source "image") -----------------------------------------


def _nearest(images: dict[int, str], wanted: int) -> int | None:
    newer = [version for version in images if version >= wanted]
    return min(newer) if newer else None


def _image_spec(identifier: str) -> RuntimeSpec:
    if identifier in PROVIDED:
        return RuntimeSpec(identifier, ("/var/task/bootstrap",), (), None,
                           "the package's bootstrap (Debian 12 with sh, curl and Python 3.11)",
                           image=PROVIDED_IMAGE)
    found = _PYTHON.match(identifier)
    if found and (minor := _nearest(PYTHON_IMAGES, int(found.group(1)))) is not None:
        wanted = int(found.group(1))
        return RuntimeSpec(
            identifier,
            (f"/usr/bin/python3.{minor}", "-u", "-S", "/var/runtime/python/main.py", "/opt"),
            (), f"AWS_Lambda_{identifier}", f"CPython 3.{minor}", image=PYTHON_IMAGES[minor],
            warning=None if minor == wanted else (
                f"{identifier} runs on CPython 3.{minor} (Debian has no 3.{wanted}): compiled "
                f"packages built for 3.{wanted} will not import"),
        )
    found = _NODEJS.match(identifier)
    if found and (major := _nearest(NODEJS_IMAGES, int(found.group(1)))) is not None:
        wanted = int(found.group(1))
        return RuntimeSpec(
            identifier, ("/usr/bin/node", "/var/runtime/nodejs/index.mjs"), (),
            f"AWS_Lambda_{identifier}", f"Node.js {major}", (("NODE_PATH", NODE_PATH),),
            image=NODEJS_IMAGES[major],
            warning=None if major == wanted else (
                f"{identifier} runs on Node.js {major} (Debian has no Node.js {wanted}): native "
                f"addons built for Node.js {wanted} will not load"),
        )
    raise _not_supported(identifier, "image")


def _not_supported(identifier: str, source: str) -> InvalidParameterValueException:
    here = ", ".join(supported_runtimes(source=source))
    return InvalidParameterValueException(
        f"The runtime parameter of {identifier} is not supported by this Lamina server. "
        f"Supported here: {here}."
    )


# -- the API ----------------------------------------------------------------------


def runtime_spec(identifier: str, settings: Settings | None = None,
                 source: str | None = None) -> RuntimeSpec:
    """How to run `identifier` here (on `source`, by default the setting's), or
    InvalidParameterValueException.

    Deprecated identifiers are not refused here: functions created with one keep
    running, as on Lambda (check_runtime refuses them for new functions)."""
    source = source or (settings or _env_settings()).runtime_source
    return _host_spec(identifier) if source == "host" else _image_spec(identifier)


def check_runtime(identifier: str, settings: Settings | None = None) -> None:
    """Refuse what CreateFunction and UpdateFunctionConfiguration would refuse."""
    settings = settings or _env_settings()
    if identifier in DEPRECATED and not settings.allow_deprecated_runtimes:
        raise InvalidParameterValueException(
            f"The runtime parameter of {identifier} is no longer supported for creating or updating "
            f"AWS Lambda functions. We recommend you use the new runtime ({DEPRECATED[identifier]}) "
            "while creating or updating functions."
        )
    runtime_spec(identifier, settings)


def supported_runtimes(settings: Settings | None = None, source: str | None = None) -> dict[str, str]:
    """Identifier -> what runs it here, for the identifiers a new function may use."""
    settings = settings or _env_settings()
    source = source or settings.runtime_source
    candidates = list(CURRENT)
    if settings.allow_deprecated_runtimes:
        candidates += [identifier for identifier in DEPRECATED if identifier not in candidates]
    result = {}
    for identifier in candidates:
        if not (identifier in PROVIDED or _PYTHON.match(identifier) or _NODEJS.match(identifier)):
            continue
        try:
            spec = _host_spec(identifier) if source == "host" else _image_spec(identifier)
        except InvalidParameterValueException:
            continue
        result[identifier] = spec.interpreter
    return result
