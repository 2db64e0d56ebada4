"""Serving the API over HTTP: uvicorn, with the limits a reachable endpoint needs.

uvicorn bounds idle keep-alive connections and, through `limit_concurrency`, the
connections open at once (new requests beyond it get 503). It does not bound how
long a client may take to send its headers, nor how large they may grow: the
httptools protocol below closes a connection whose request headers are not
complete within `request_header_timeout_s`, and answers 400 to headers over
`max_request_header_bytes`. Bodies have their own deadline and caps, enforced by
the application once the headers are authenticated (see `api.bodies`).
"""

from __future__ import annotations

import asyncio

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from lamina.config import Settings


class RequestHeadersTooLarge(Exception):
    """Raised from a parser callback; httptools turns it into a parse error (400)."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size cap for headers."""

    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        super().connection_made(transport)  # type: ignore[arg-type]
        # A connection that never sends a byte is closed too.
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            raise RequestHeadersTooLarge(f"request headers over {self.max_header_bytes} bytes")

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def http_protocol(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with this server's header limits."""
    return type(
        "LaminaHttpProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "header_timeout_s": settings.request_header_timeout_s,
            "max_header_bytes": settings.max_request_header_bytes,
        },
    )


def uvicorn_config(app: Starlette, settings: Settings, **overrides: object) -> uvicorn.Config:
    options: dict[str, object] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": http_protocol(settings),
        "log_level": settings.log_level,
        "access_log": False,
        "timeout_keep_alive": settings.keep_alive_s,
        "limit_concurrency": settings.max_connections,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)  # type: ignore[arg-type]


def serve(app: Starlette, settings: Settings) -> None:
    """Serve in the foreground until interrupted."""
    uvicorn.Server(uvicorn_config(app, settings)).run()
