"""How one execution environment is isolated; see base.py for the interface.

`choose_backend` picks the backend at start-up: kernel isolation (namespaces and
cgroups through bubblewrap) when the machine allows it, plain processes
otherwise, with a warning naming what is then not enforced.
"""

from __future__ import annotations

import logging

from lamina.sandbox import namespaces
from lamina.sandbox.base import SandboxBackend, SandboxError
from lamina.sandbox.namespaces import NamespaceSettings
from lamina.sandbox.process import ProcessBackend

log = logging.getLogger("lamina.sandbox")

BACKENDS = ("namespaces", "process")


def choose_backend(name: str | None = None,
                   settings: NamespaceSettings | None = None) -> SandboxBackend:
    """The named backend, or (None, "" or "auto") the strongest this machine allows.

    An explicit name is honoured as is: "namespaces" on a machine that cannot
    run it raises SandboxError rather than silently isolating less.
    """
    if name == "process":
        return ProcessBackend()
    if name == "namespaces":
        return namespaces.NamespaceBackend(settings)
    if name not in (None, "", "auto"):
        raise ValueError(f"unknown sandbox backend: {name} (choose one of {', '.join(BACKENDS)})")
    reason = namespaces.probe()
    if reason is None:
        try:
            return namespaces.NamespaceBackend(settings)
        except SandboxError as error:
            reason = str(error)
    backend = ProcessBackend()
    log.warning(
        "sandbox: kernel isolation unavailable (%s); running functions as plain processes: "
        "only %s are enforced (no memory, CPU, process count, /tmp size, network or "
        "filesystem isolation)", reason, ", ".join(backend.enforced()),
    )
    return backend


__all__ = ["BACKENDS", "NamespaceSettings", "SandboxBackend", "SandboxError", "choose_backend"]
