"""Which runtime identifiers this host can run, and how.

`python3.X` runs on a real CPython 3.X found on the host (`python3.X` on PATH, or
the interpreter Lamina itself runs on). An identifier older than the newest host
interpreter runs on that one (Python keeps backward compatibility across minor
versions for ordinary code); a newer one with no interpreter is refused, like AWS
refuses runtimes it cannot run. `provided`, `provided.al2` and `provided.al2023`
run the package's own `bootstrap`.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lamina.errors import InvalidParameterValueException

CLIENTS_DIR = Path(__file__).parent / "clients"
PROVIDED = ("provided", "provided.al2", "provided.al2023")
_PYTHON = re.compile(r"^python3\.(\d+)$")
_NODEJS = re.compile(r"^nodejs(\d+)\.x$")
# Where Lambda's Node.js runtime looks for modules besides the function's own.
NODE_PATH = "/opt/nodejs/node_modules:/var/runtime/node_modules:/var/runtime:/var/task"


@dataclass(frozen=True)
class RuntimeSpec:
    identifier: str
    # The command inside the environment (inside paths).
    argv: tuple[str, ...]
    # Host paths the command needs, made visible read-only inside a sandbox.
    system_paths: tuple[Path, ...]
    # AWS_EXECUTION_ENV as Lambda sets it; None for custom runtimes (Lambda sets none).
    execution_env: str | None
    # Describes the mapping honestly, e.g. for GetAccountSettings and the docs.
    interpreter: str
    # Variables the runtime needs (the function's own may override them).
    env: tuple[tuple[str, str], ...] = ()


@functools.cache
def _host_pythons() -> dict[int, Path]:
    """Minor version -> interpreter, for every CPython 3 found on this host."""
    found: dict[int, Path] = {}
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    if base.exists():
        found[sys.version_info.minor] = base
    for minor in range(8, 20):
        exe = shutil.which(f"python3.{minor}")
        if exe and minor not in found:
            real = _real_python(exe, minor)
            if real is not None:
                found[minor] = real
    return found


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


def runtime_spec(identifier: str) -> RuntimeSpec:
    """How to run `identifier` here, or InvalidParameterValueException."""
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
                (str(exe), "-u", "-S", "/var/runtime/python/bootstrap.py", "/opt"),
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
    raise InvalidParameterValueException(
        f"The runtime parameter of {identifier} is not supported by this Lamina host. "
        f"Supported here: python3.8 to python3.{max(_host_pythons(), default=11)}, "
        + ", ".join(PROVIDED)
        + "."
    )


def check_runtime(identifier: str) -> None:
    runtime_spec(identifier)


def supported_runtimes() -> dict[str, str]:
    """Identifier -> what runs it here."""
    result = {}
    candidates = [f"python3.{m}" for m in range(8, 20)] + [f"nodejs{m}.x" for m in range(18, 30, 2)]
    for identifier in candidates + list(PROVIDED):
        try:
            result[identifier] = runtime_spec(identifier).interpreter
        except InvalidParameterValueException:
            continue
    return result
