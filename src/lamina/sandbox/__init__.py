"""How execution environments are isolated; see base.py for the interface.

`choose_backend` picks the backend at start-up: kernel isolation (namespaces and
cgroups through bubblewrap) when the machine allows it, plain processes
otherwise, with a warning naming what is then not enforced.
"""

from __future__ import annotations

import logging

from lamina.sandbox.base import ResourceUsage, Sandbox, SandboxBackend, SandboxError, SandboxSpec
from lamina.sandbox.process import ProcessBackend

log = logging.getLogger("lamina.sandbox")

BACKENDS = ("namespaces", "process")
# What the plain-process backend leaves to trust, for the fallback warning.
NOT_ENFORCED_BY_PROCESS = (
    "memory limit, CPU share, process count, /tmp size, network isolation, "
    "read-only code, and isolation from the host's files and other functions"
)


def choose_backend(name: str | None = None) -> SandboxBackend:
    """The named backend, or (None or "auto") the strongest one this machine allows."""
    from lamina.sandbox import namespaces

    if name == "process":
        return ProcessBackend()
    if name == "namespaces":
        return namespaces.NamespaceBackend()
    if name not in (None, "", "auto"):
        raise SandboxError(f"unknown sandbox backend {name!r}; choose one of {', '.join(BACKENDS)}")
    reason = namespaces.probe()
    if reason is None:
        return namespaces.NamespaceBackend()
    log.warning("sandbox: kernel isolation unavailable (%s); running functions as plain "
                "processes, which does NOT enforce: %s", reason, NOT_ENFORCED_BY_PROCESS)
    return ProcessBackend()


__all__ = [
    "BACKENDS", "ResourceUsage", "Sandbox", "SandboxBackend", "SandboxError", "SandboxSpec",
    "choose_backend",
]
