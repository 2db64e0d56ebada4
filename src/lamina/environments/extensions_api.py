"""The Extensions API (`/2020-01-01/extension/...`), on the Runtime API's port.

HTTP only: requests become calls on the environment's `Extensions` registry
(extensions.py), answers take AWS's shapes (the `Lambda-Extension-Identifier`
header on register, `Lambda-Extension-Event-Identifier` on each event). It also
serves the requests of Lamina's launcher inside the sandbox (launcher.py): the
gate that holds the runtime back until every external extension has registered,
the report of an extension's exit, and the word that SHUTDOWN has begun.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from lamina.environments.extensions import Extensions, ExtensionsApiError
from lamina.environments.runtime_api import ApiResponse

PREFIX = "/2020-01-01/extension/"
REGISTER = PREFIX + "register"
NEXT = PREFIX + "event/next"
INIT_ERROR = PREFIX + "init/error"
EXIT_ERROR = PREFIX + "exit/error"
# Lamina's own, for its launcher (launcher.py); not part of AWS's API.
LAUNCHER_GATE = "/lamina/launcher/runtime-gate"
LAUNCHER_EXITED = "/lamina/launcher/extension-exited"
LAUNCHER_STOPPING = "/lamina/launcher/stopping"


@dataclass(frozen=True)
class FunctionInfo:
    """What register answers with."""

    function_name: str
    function_version: str
    handler: str
    account_id: str


def _error(error: ExtensionsApiError) -> ApiResponse:
    return ApiResponse.error(error.status, error.error_type, error.message)


class ExtensionsApi:
    def __init__(self, extensions: Extensions, function: FunctionInfo) -> None:
        self.extensions = extensions
        self.function = function

    async def route(self, method: str, path: str, headers: dict[str, str],
                    body: bytes) -> ApiResponse | None:
        """The answer to an Extensions API request; None when `path` is not one."""
        if not path.startswith((PREFIX, "/lamina/launcher/")):
            return None
        try:
            if method == "POST" and path == REGISTER:
                return self._register(headers, body)
            if method == "GET" and path == NEXT:
                extension = self.extensions.by_id(headers.get("lambda-extension-identifier"))
                event = await self.extensions.next_event(extension)
                return ApiResponse(200, json.dumps(event).encode(), {
                    "Content-Type": "application/json",
                    "Lambda-Extension-Event-Identifier": str(uuid.uuid4()),
                })
            if method == "POST" and path in (INIT_ERROR, EXIT_ERROR):
                extension = self.extensions.by_id(headers.get("lambda-extension-identifier"))
                self.extensions.report_error(
                    extension, headers.get("lambda-extension-function-error-type"))
                return ApiResponse.accepted()
            if method == "GET" and path == LAUNCHER_GATE:
                await self.extensions.until(self.extensions.externals_registered)
                return ApiResponse(200, b"go")
            if method == "GET" and path == LAUNCHER_STOPPING:
                await self.extensions.stopping.wait()
                return ApiResponse(200, b"stop")
            if method == "POST" and path.startswith(LAUNCHER_EXITED + "/"):
                # .../extension-exited/<file name>/<exit status>
                name, _, status = path[len(LAUNCHER_EXITED) + 1:].rpartition("/")
                self.extensions.exited(name, int(status) if status.isdigit() else 0)
                return ApiResponse(200, b"ok")
        except ExtensionsApiError as error:
            return _error(error)
        return ApiResponse.error(404, "InvalidRequest",
                                 f"no such Extensions API route: {method} {path}")

    def _register(self, headers: dict[str, str], body: bytes) -> ApiResponse:
        try:
            parsed = json.loads(body or b"{}")
            events = parsed.get("events", [])
            if not isinstance(events, list):
                raise ValueError
        except (ValueError, AttributeError, RecursionError):
            return ApiResponse.error(400, "InvalidRequestFormat",
                                     'The body must be JSON: {"events": ["INVOKE", "SHUTDOWN"]}')
        extension = self.extensions.register(headers.get("lambda-extension-name"), events)
        answer = {"functionName": self.function.function_name,
                  "functionVersion": self.function.function_version,
                  "handler": self.function.handler}
        if "accountId" in headers.get("lambda-extension-accept-feature", ""):
            answer["accountId"] = self.function.account_id
        return ApiResponse(200, json.dumps(answer).encode(), {
            "Content-Type": "application/json",
            "Lambda-Extension-Identifier": extension.id,
        })
