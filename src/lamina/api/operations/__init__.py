"""Operation handlers, one per Lambda API operation, registered by name.

A handler gets the parsed and validated input (model member names) and returns the
output members; `api.app` does the HTTP. Handlers stay thin: the logic lives with
the resource in `control` or `invoke`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from starlette.requests import Request

from lamina.platform import Platform


@dataclass
class Call:
    platform: Platform
    params: dict[str, Any]
    request: Request
    request_id: str


Handler = Callable[[Call], Awaitable[dict[str, Any]]]
HANDLERS: dict[str, Handler] = {}


def operation(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        HANDLERS[name] = handler
        return handler

    return register


def load_all() -> None:
    """Import every handler module so its operations register."""
    from lamina.api.operations import (  # noqa: F401
        account, aliases, functions, invoke, layers, tags, versions,
    )
