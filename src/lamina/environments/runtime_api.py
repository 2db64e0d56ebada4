"""The Runtime API (`/2018-06-01/runtime/...`), served to one environment.

HTTP only: it parses requests (Content-Length or chunked with trailers, as real
runtime clients send them) and hands them to a `RuntimeApiHandler`, which is the
environment's lifecycle (see environment.py). Each environment gets its own
listener from its sandbox, so one environment can never fetch another's events.

Written on httptools rather than a framework because it is on every warm
invocation's path twice (next + response): a bare protocol keeps that to tens of
microseconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Protocol, Sequence

import httptools

log = logging.getLogger("lamina.runtime_api")

_INVOCATION = re.compile(r"^/2018-06-01/runtime/invocation/([^/]+)/(response|error)$")
NEXT = "/2018-06-01/runtime/invocation/next"
INIT_ERROR = "/2018-06-01/runtime/init/error"


@dataclass
class ApiResponse:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def error(cls, status: int, error_type: str, message: str) -> ApiResponse:
        body = json.dumps({"errorMessage": message, "errorType": error_type}).encode()
        return cls(status, body, {"Content-Type": "application/json"})

    @classmethod
    def accepted(cls) -> ApiResponse:
        return cls(202, b'{"status":"OK"}', {"Content-Type": "application/json"})


class RuntimeApiHandler(Protocol):
    async def next_invocation(self) -> ApiResponse: ...

    def invocation_response(self, request_id: str, body: bytes) -> ApiResponse: ...

    def invocation_error(self, request_id: str, body: bytes, error_type: str | None) -> ApiResponse: ...

    def init_error(self, body: bytes, error_type: str | None) -> ApiResponse: ...


# The other APIs served on the same port (the Extensions and Telemetry APIs): the
# answer to a request, or None when the path is not theirs.
Route = Callable[[str, str, dict[str, str], bytes], Awaitable["ApiResponse | None"]]

_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 413: "Request Entity Too Large", 500: "Internal Server Error"}


class _Connection(asyncio.Protocol):
    def __init__(self, handler: RuntimeApiHandler, max_body: int,
                 connections: set[_Connection], routes: Sequence[Route] = ()) -> None:
        self.handler = handler
        self.routes = routes
        self.connections = connections
        self.max_body = max_body
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.too_large = False
        # Requests are answered in order; runtimes do not pipeline, but be correct.
        self.queue: asyncio.Queue[tuple[str, str, dict[str, str], bytes, bool] | None] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.worker = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(ApiResponse.error(400, "InvalidRequest", "malformed HTTP request"), close=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.queue.put_nowait(None)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.headers, self.body, self.size, self.too_large = b"", {}, [], 0, False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_body:
            self.too_large = True
        elif not self.too_large:
            self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        path = self.url.decode("latin-1").split("?", 1)[0]
        self.queue.put_nowait((method, path, self.headers, b"".join(self.body), self.too_large))

    # serving
    async def _serve(self) -> None:
        while (item := await self.queue.get()) is not None:
            method, path, headers, body, too_large = item
            try:
                response = await self._route(method, path, headers, body, too_large)
            except Exception:
                log.exception("Runtime API %s %s", method, path)
                response = ApiResponse.error(500, "ServiceException", "internal error")
            self._write(response)

    async def _route(self, method: str, path: str, headers: dict[str, str], body: bytes,
                     too_large: bool) -> ApiResponse:
        if not path.startswith("/2018-06-01/"):
            for route in self.routes:
                answer = await route(method, path, headers, body)
                if answer is not None:
                    return answer
        error_type = headers.get("lambda-runtime-function-error-type")
        if method == "GET" and path == NEXT:
            return await self.handler.next_invocation()
        if method == "POST" and path == INIT_ERROR:
            return self.handler.init_error(body, error_type)
        found = _INVOCATION.match(path)
        if method == "POST" and found:
            request_id, kind = found.groups()
            if too_large:
                return self._too_large(request_id)
            if kind == "response":
                return self.handler.invocation_response(request_id, body)
            return self.handler.invocation_error(request_id, body, error_type)
        return ApiResponse.error(404, "InvalidRequest", f"no such Runtime API route: {method} {path}")

    def _too_large(self, request_id: str) -> ApiResponse:
        message = (
            f"Response payload size exceeded maximum allowed payload size ({self.max_body} bytes)."
        )
        error = json.dumps({"errorMessage": message, "errorType": "Function.ResponseSizeTooLarge"})
        self.handler.invocation_error(request_id, error.encode(), "Function.ResponseSizeTooLarge")
        return ApiResponse.error(413, "RequestEntityTooLarge", message)

    def _write(self, response: ApiResponse, close: bool = False) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        reason = _REASONS.get(response.status, "OK")
        head = [f"HTTP/1.1 {response.status} {reason}", f"Content-Length: {len(response.body)}"]
        head += [f"{k}: {v}" for k, v in response.headers.items()]
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)
        if close:
            self.transport.close()


class RuntimeApiServer:
    def __init__(self, handler: RuntimeApiHandler, listener: socket.socket, max_body: int,
                 routes: Sequence[Route] = ()) -> None:
        self._handler = handler
        self._routes = routes
        self._listener = listener
        self._max_body = max_body
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[_Connection] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self._handler, self._max_body, self._connections, self._routes),
            sock=self._listener
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        # A runtime may be parked in a long poll on /next; its connection goes too.
        for connection in list(self._connections):
            if connection.transport is not None:
                connection.transport.abort()
            if connection.worker is not None:
                connection.worker.cancel()
