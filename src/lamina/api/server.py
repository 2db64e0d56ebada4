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


class ChunkSizes:
    """Follows the chunk-size lines of a chunked body as its bytes arrive.

    httptools accepts any chunk size that fits 64 bits and then waits for the data; a
    client announcing `ffffffffffff` would hold the request until the body deadline.
    A chunk larger than any request body Lamina accepts is refused at its size line.
    """

    # A size line longer than this is malformed; the parser refuses it itself.
    MAX_LINE = 1024

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._skip = 0
        self._line = bytearray()
        self._done = False

    def too_large(self, data: bytes) -> bool:
        """Whether data (the body's next bytes) announces a chunk over the cap."""
        i = 0
        while i < len(data) and not self._done:
            if self._skip:
                taken = min(self._skip, len(data) - i)
                self._skip -= taken
                i += taken
                continue
            end = data.find(b"\n", i)
            if end < 0:
                self._line += data[i:]
                return False
            self._line += data[i:end]
            i = end + 1
            text = bytes(self._line).split(b";", 1)[0].strip()
            self._line.clear()
            if len(text) > self.MAX_LINE:
                return False
            try:
                size = int(text, 16)
            except ValueError:
                return False  # malformed: the parser answers 400
            if size > self.cap:
                return True
            if size == 0:
                self._done = True  # trailers follow; nothing more to watch
            else:
                self._skip = size + 2  # the data and its CRLF
        return False


class HeadHeldTransport:
    """The connection's transport as one response writes to it: its first write (the
    status line and headers) is held back and goes out joined with the next one
    (the body), in one send. uvicorn writes them apart, which costs the server a
    second system call and the client a second segment to wake up for, on every
    answer. Whatever is still held at the end of the loop's turn (a stream waiting
    for its first chunk, a file being read) goes out then, alone."""

    __slots__ = ("_transport", "_loop", "_held", "_writes")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._writes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._writes += 1
        if self._writes == 1:
            self._held = bytes(data)
            self._loop.call_soon(self._release)
            return
        if self._held is not None:
            data, self._held = self._held + data, None
        self._transport.write(data)

    def _release(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held)

    def close(self) -> None:
        self._release()
        self._transport.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size cap for headers, and
    an immediate 400 for a chunk larger than any request body."""

    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 80 * 1024 * 1024

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        # Bytes of the current message up to its body, to find where the body starts.
        self._head = bytearray()
        self._in_headers = True
        self._chunked = False
        self._chunk_sizes: ChunkSizes | None = None
        super().connection_made(transport)  # type: ignore[arg-type]
        # A connection that never sends a byte is closed too.
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        body = b""
        if self._chunk_sizes is not None:
            body = data
        elif self._in_headers:
            self._head += data
        super().data_received(data)
        if self._chunk_sizes is None and self._chunked and not self._in_headers:
            # The headers ended in this data: the body starts after their blank line.
            end = self._head.find(b"\r\n\r\n")
            body = bytes(self._head[end + 4:]) if end >= 0 else b""
            self._head.clear()
            self._chunk_sizes = ChunkSizes(self.max_body_bytes)
        if body and self._chunk_sizes is not None and self._chunk_sizes.too_large(body):
            if not self.transport.is_closing():
                self.send_400_response("Chunk larger than any request body this server accepts.")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._in_headers = True
        self._chunked = False
        self._chunk_sizes = None
        self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value))
        if name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            self._chunked = True
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        self._in_headers = False
        if not self._chunked:
            self._head.clear()
        cycle = self.cycle
        super().on_headers_complete()
        if self.cycle is not cycle and self.cycle is not None:
            self.cycle.transport = HeadHeldTransport(self.transport, self.loop)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self._chunk_sizes = None
        self._chunked = False
        self._in_headers = True
        self._head.clear()
        super().on_message_complete()

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
            "max_body_bytes": settings.limits.max_request_bytes,
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
