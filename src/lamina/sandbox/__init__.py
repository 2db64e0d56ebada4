"""How one execution environment is isolated; backends chosen at start-up."""

from __future__ import annotations

import logging

from lamina.sandbox.base import SandboxBackend
from lamina.sandbox.process import ProcessBackend

log = logging.getLogger("lamina.sandbox")


def choose_backend(name: str | None = None) -> SandboxBackend:
    """The named backend, or the strongest this host supports."""
    if name in (None, "process"):
        backend = ProcessBackend()
        if name is None:
            log.warning(
                "sandbox: plain processes; only %s are enforced (no memory, CPU, /tmp size, "
                "network or filesystem isolation)", ", ".join(backend.enforced())
            )
        return backend
    raise ValueError(f"unknown sandbox backend: {name}")
