"""The Runtime API (`/2018-06-01/runtime/...`), served to one environment.

HTTP only: it parses requests (Content-Length or chunked with trailers, as real
runtime clients send them) and hands them to a `RuntimeApiHandler`, which is the
environment's lifecycle (see environment.py). Each environment gets its own
listener from its sandbox, so one environment can never fetch another's events.

A `/response` for an invocation whose caller reads a stream (InvokeWithResponseStream,
a RESPONSE_STREAM function URL) is not buffered: its body goes to the caller's
`ResponseStream` as it arrives, HTTP chunk by HTTP chunk when the runtime posts in
streaming mode (`Lambda-Runtime-Function-Response-Mode: streaming`, chunked, an
error in the `Lambda-Runtime-Function-Error-Type`/`-Body` trailers), with the
socket's reading paused while the caller lags. Every other request is buffered,
as before: that path costs a path match and a header lookup more, within the
noise of the ~15 us a buffered /response takes here.

Written on httptools rather than a framework because it is on every warm
invocation's path twice (next + response): a bare protocol keeps that to tens of
microseconds.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import socket
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Protocol, Sequence

import httptools

from lamina.environments.streaming import Accepted, ResponseStream

log = logging.getLogger("lamina.runtime_api")

_INVOCATION = re.compile(r"^/2018-06-01/runtime/invocation/([^/]+)/(response|error)$")
NEXT = "/2018-06-01/runtime/invocation/next"
INIT_ERROR = "/2018-06-01/runtime/init/error"
RESPONSE_MODE = "lambda-runtime-function-response-mode"
STREAMING_MODE = "streaming"
ERROR_TYPE = "lambda-runtime-function-error-type"
ERROR_BODY = "lambda-runtime-function-error-body"
# Streaming-mode HTTP chunks are handed over whole (a write in the function is one
# chunk, as on Lambda) unless one grows past this; a body posted without streaming
# mode goes over as one piece (up to the stream's size limit).
_MAX_PIECE_BYTES = 1024 * 1024


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

    def response_stream(self, request_id: str) -> ResponseStream | None:
        """Where the body of this invocation's /response goes as it arrives; None
        when its caller wants it buffered."""
        ...

    def response_streamed(self, request_id: str, error_type: str | None, error_body: bytes | None,
                          cut: bool) -> ApiResponse:
        """The streamed /response has ended (cut: it was over the size limit)."""
        ...

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
        # Trailers of a chunked body (a streamed response's error).
        self.trailers: dict[str, str] = {}
        self.headers_done = False
        # A /response streamed to its caller, and what of it awaits handing over.
        self.stream: ResponseStream | None = None
        self.pieces: list[bytes] = []
        self.piece_size = 0
        self.piece_limit = _MAX_PIECE_BYTES
        self.cut = False
        # Requests are answered in order: a runtime may pipeline them (Lamina's Python
        # runtime client sends GET /next right behind each result).
        self.queue: asyncio.Queue[_Request | None] = asyncio.Queue()
        # The serving task is answering a request (answers must go out in order).
        self.serving = False
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
        self.trailers, self.headers_done, self.stream, self.cut = {}, False, None, False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        target = self.trailers if self.headers_done else self.headers
        target[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True
        if self.parser.get_method() != b"POST":
            return
        if self.headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            # curl (and libcurl runtimes) ask before sending a body they stream, and
            # wait a second for the answer otherwise; Lambda's Go server gives it.
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        found = _INVOCATION.match(self.url.decode("latin-1").split("?", 1)[0])
        if found is None or found.group(2) != "response":
            return
        mode = self.headers.get(RESPONSE_MODE)
        if mode is not None and mode != STREAMING_MODE:
            return  # refused when the request is complete
        stream = self.handler.response_stream(found.group(1))
        if stream is None:
            return
        self.stream = stream
        streaming = mode == STREAMING_MODE
        self.piece_limit = _MAX_PIECE_BYTES if streaming else stream.limit_bytes
        self.pieces, self.piece_size = [], 0
        stream.open(self.headers.get("content-type"), streaming, self._resume_reading)

    def on_body(self, body: bytes) -> None:
        if self.stream is not None:
            if not self.cut:
                self.pieces.append(body)
                self.piece_size += len(body)
                if self.piece_size >= self.piece_limit:
                    self._hand_over()
            return
        self.size += len(body)
        if self.size > self.max_body:
            self.too_large = True
        elif not self.too_large:
            self.body.append(body)

    def on_chunk_complete(self) -> None:
        if self.stream is not None and self.stream.streaming_mode and not self.cut:
            self._hand_over()

    def _hand_over(self) -> None:
        assert self.stream is not None
        if not self.pieces:
            return
        piece = self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)
        self.pieces, self.piece_size = [], 0
        accepted = self.stream.put(piece)
        if accepted is Accepted.FULL and self.transport is not None:
            self.transport.pause_reading()
        elif accepted is Accepted.CUT:
            self.cut = True

    def _resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        path = self.url.decode("latin-1").split("?", 1)[0]
        if self.stream is not None and not self.cut:
            self._hand_over()
        request = _Request(method, path, self.headers, b"".join(self.body), self.too_large,
                           self.trailers, self.stream is not None, self.cut)
        if not self.serving and self.queue.empty():
            # Nothing before it to answer: a request that needs no waiting (a
            # response, an error) is answered now, without a turn through the
            # serving task (a task switch on every invocation's /response).
            try:
                response = self._answer_now(request)
            except Exception:
                response = self._failed(request)
            if response is not None:
                self._write(response)
                return
        self.queue.put_nowait(request)

    # serving
    async def _serve(self) -> None:
        while (request := await self.queue.get()) is not None:
            self.serving = True
            try:
                response = self._answer_now(request) or await self._route(request)
            except Exception:
                response = self._failed(request)
            self.serving = False
            self._write(response)

    @staticmethod
    def _failed(request: _Request) -> ApiResponse:
        log.exception("Runtime API %s %s", request.method, request.path)
        return ApiResponse.error(500, "ServiceException", "internal error")

    def _answer_now(self, request: _Request) -> ApiResponse | None:
        """The answer to a request of the runtime's own API that needs no waiting, or
        None (GET /next, the routes of other APIs)."""
        if request.method != "POST" or not request.path.startswith("/2018-06-01/"):
            return None
        return self._post(request)

    async def _route(self, request: _Request) -> ApiResponse:
        method, path, headers, body = request.method, request.path, request.headers, request.body
        if not path.startswith("/2018-06-01/"):
            for route in self.routes:
                answer = await route(method, path, headers, body)
                if answer is not None:
                    return answer
        if method == "GET" and path == NEXT:
            return await self.handler.next_invocation()
        if method == "POST":
            return self._post(request)
        return ApiResponse.error(404, "InvalidRequest", f"no such Runtime API route: {method} {path}")

    def _post(self, request: _Request) -> ApiResponse:
        method, path, headers, body = request.method, request.path, request.headers, request.body
        error_type = headers.get(ERROR_TYPE)
        if path == INIT_ERROR:
            return self.handler.init_error(body, error_type)
        found = _INVOCATION.match(path)
        if found:
            request_id, kind = found.groups()
            if kind == "error":
                return self.handler.invocation_error(request_id, body, error_type)
            mode = headers.get(RESPONSE_MODE)
            # Error trailers count in streaming mode only, as in Lambda's RAPID (a
            # buffered response's trailers are ignored; some runtimes send "none").
            trailers = request.trailers if mode == STREAMING_MODE else {}
            trailer_type = trailers.get(ERROR_TYPE) or None
            trailer_body = _error_body(trailers.get(ERROR_BODY))
            if request.streamed:
                return self.handler.response_streamed(request_id, trailer_type, trailer_body,
                                                      request.cut)
            if mode is not None and mode != STREAMING_MODE:
                # Lambda fails the invocation, and tells the runtime why.
                invalid = "Runtime.InvalidResponseModeHeader"
                self.handler.invocation_error(request_id, b"", invalid)
                return ApiResponse.error(400, invalid,
                                         f"Invalid {RESPONSE_MODE} header value: {mode!r}")
            if request.too_large:
                return self._too_large(request_id)
            if trailer_type is not None:
                # A streaming-mode response buffered for its caller, which failed midway.
                return self.handler.invocation_error(request_id, trailer_body or b"", trailer_type)
            return self.handler.invocation_response(request_id, body)
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


@dataclass
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    too_large: bool
    trailers: dict[str, str]
    # The body went to a ResponseStream as it arrived (and was cut at its limit).
    streamed: bool = False
    cut: bool = False


def _error_body(value: str | None) -> bytes | None:
    """The Lambda-Runtime-Function-Error-Body trailer: base64 of the error document."""
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value.encode()


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
