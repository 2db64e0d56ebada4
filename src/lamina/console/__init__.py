"""The web console: `lamina serve` answers `/` and `/console/...` with pages for
browsing functions, testing them, reading their logs and charts, and changing
them through the API's own operations (see console/client.py).

`ConsoleMiddleware` picks the console's requests by path before the Lambda REST
router sees them: one string comparison for every other request, so the Invoke
path does not pay for the console.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from lamina.platform import Platform

PREFIX = "/console"


class ConsoleMiddleware:
    def __init__(self, app: ASGIApp, platform: Platform, code_urls: object) -> None:
        self.app = app
        self.platform = platform
        self.code_urls = code_urls
        self._console: ASGIApp | None = None

    def _console_app(self) -> ASGIApp:
        # Built on first use: templates and routes cost nothing to a server whose
        # console nobody opens.
        if self._console is None:
            from lamina.console.app import Console

            self._console = Console(self.platform, self.code_urls).app()
        return self._console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(PREFIX) and (len(path) == len(PREFIX) or path[len(PREFIX)] == "/"):
                await self._console_app()(scope, receive, send)
                return
            # The bare root opens the console, in a browser: AWS's JSON-protocol
            # services POST to / with X-Amz-Target, and no Lambda operation GETs /.
            if path == "/" and scope["method"] in ("GET", "HEAD") and not any(
                    name == b"x-amz-target" for name, _value in scope["headers"]):
                await send({"type": "http.response.start", "status": 307,
                            "headers": [(b"location", f"{PREFIX}/".encode()),
                                        (b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})
                return
        await self.app(scope, receive, send)
