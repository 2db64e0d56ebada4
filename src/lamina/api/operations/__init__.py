"""Operation handlers, one per API operation, registered by (service, operation).

Lambda's are the default; other services served on the same endpoint (SQS) name
their botocore service: `@operation("SendMessage", service="sqs")`.

A handler gets the parsed and validated input (model member names) and returns the
output members; `api.app` does the HTTP. Handlers stay thin: the logic lives with
the resource in `control` or `invoke`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from starlette.requests import Request

from lamina.api.auth import ANONYMOUS, Principal
from lamina.platform import Platform


@dataclass
class Call:
    platform: Platform
    params: dict[str, Any]
    request: Request
    request_id: str
    # Who signed the request (an execution role's credentials name the role).
    principal: Principal = ANONYMOUS
    # Extra response headers, beyond the output members (Lamina extensions such as
    # X-Lamina-Concurrent-Executions; AWS's clients ignore headers they do not model).
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Call], Awaitable[dict[str, Any]]]
HANDLERS: dict[tuple[str, str], Handler] = {}


def operation(name: str, service: str = "lambda") -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        HANDLERS[(service, name)] = handler
        return handler

    return register


def implemented_operations() -> dict[str, list[str]]:
    """Service name -> the operations this server answers, sorted."""
    load_all()
    found: dict[str, list[str]] = {}
    for service, name in sorted(HANDLERS):
        found.setdefault(service, []).append(name)
    return found


def load_all() -> None:
    """Import every handler module so its operations register."""
    from lamina.api.operations import (  # noqa: F401
        account,
        aliases,
        cloudwatch,
        code_signing,
        concurrency,
        efs,
        event_invoke_config,
        event_source_mappings,
        events,
        function_urls,
        functions,
        invoke,
        kms,
        layers,
        logs,
        permissions,
        scheduler,
        signer,
        sqs,
        tags,
        versions,
    )
