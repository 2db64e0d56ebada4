"""Request bodies: read only after the headers were authenticated, capped per
operation, hashed for SigV4 as they stream, and given a deadline.

A body is read once the request's headers passed every check that does not need
the body (see `api.auth`), and only up to the operation's cap (`body_cap`): a
CreateFunction may carry a 50 MB zip in base64, an Invoke 6 MB (1 MB for Event),
anything else far less. Until the signature is verified the body sits in a spooled
file that keeps at most SPOOL_BYTES in memory, so bodies in flight cost the server
little memory whoever sends them. A body that does not arrive within the deadline
is answered 408 and its connection closed.

A request refused before its body was read (unsigned, unknown operation, too
large) still has that body on the wire. Closing the socket on unread data makes
the kernel reset the connection, and the client may never see the answer, so a
modest body is read and thrown away first (`discard`); a larger one gets the
answer with `Connection: close`.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request

from lamina.errors import (
    InvalidRequestContentException,
    LambdaError,
    RequestEntityTooLargeException,
    RequestTimeoutException,
)
from lamina.limits import Limits

# Memory a body may take before it is verified; beyond it, the spool is a file.
SPOOL_BYTES = 1024 * 1024
# Operations whose request carries a deployment package, base64 in JSON.
CODE_UPLOADS = frozenset({"CreateFunction", "UpdateFunctionCode", "PublishLayerVersion"})


def body_cap(limits: Limits, service: str, operation: str, invocation_type: str | None) -> int:
    """The largest body the operation accepts, in bytes."""
    if service == "lambda":
        if operation in CODE_UPLOADS:
            return limits.max_request_bytes
        if operation in ("Invoke", "InvokeWithResponseStream"):
            if invocation_type == "Event":
                return limits.max_async_payload_bytes
            return limits.max_sync_payload_bytes
        if operation == "InvokeAsync":
            return limits.max_async_payload_bytes
    if service == "sqs":
        return limits.max_queue_request_bytes
    return limits.max_api_request_bytes


def too_large(limit: int, service: str, operation: str, invocation_type: str | None
              ) -> RequestEntityTooLargeException:
    # AWS names Invoke by its internal name, InvokeFunction, and the asynchronous
    # flavour "InvokeAsync".
    if service == "lambda" and operation == "Invoke":
        operation = "InvokeAsync" if invocation_type == "Event" else "InvokeFunction"
    return RequestEntityTooLargeException.for_operation(limit, operation)


@dataclass
class Body:
    sha256: str
    size: int
    data: bytes


def declared_length(request: Request) -> int | None:
    """Content-Length as a number; a malformed one is refused (uvicorn passes it on)."""
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise InvalidRequestContentException(f"Content-Length is not a number: {raw[:32]!r}")
    return int(raw)


class BodyReader:
    """Reads one request's body at most once, within its deadline."""

    def __init__(self, request: Request, timeout_s: float) -> None:
        self.request = request
        self.timeout_s = timeout_s
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + timeout_s
        # True once the client sent its whole body, or it is known never to come.
        self.finished = False
        # Whether the connection must be closed after the answer (body left unread).
        self.close_connection = False
        # Bytes of body received so far, kept or not.
        self.received = 0

    async def _next(self) -> tuple[bytes, bool]:
        """The next piece of the body and whether more follows, or 408 past the deadline."""
        remaining = self._deadline - self._loop.time()
        try:
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                message = await self.request.receive()
        except TimeoutError:
            self.finished = True
            self.close_connection = True
            raise RequestTimeoutException(
                f"The request body was not received within {self.timeout_s:g} seconds"
            ) from None
        if message["type"] == "http.disconnect":
            self.finished = True
            self.close_connection = True
            # Nobody is left to answer; any error type does.
            raise RequestTimeoutException("The client disconnected before sending its body")
        more = bool(message.get("more_body", False))
        if not more:
            self.finished = True
        chunk: bytes = message.get("body", b"")
        self.received += len(chunk)
        return chunk, more

    async def read(self, cap: int, refuse: Callable[[], LambdaError]) -> Body:
        """The whole body, hashed; `refuse()` is raised as soon as it would pass `cap`."""
        declared = declared_length(self.request)
        if declared is not None and declared > cap:
            raise refuse()
        digest = hashlib.sha256()
        size = 0
        # Small bodies (every warm Invoke) stay a list of chunks; the spool is made
        # only once a body outgrows SPOOL_BYTES.
        chunks: list[bytes] = []
        spool: tempfile.SpooledTemporaryFile[bytes] | None = None
        try:
            more = not self.finished
            while more:
                chunk, more = await self._next()
                size += len(chunk)
                if size > cap:
                    raise refuse()
                digest.update(chunk)
                if spool is not None:
                    spool.write(chunk)
                    continue
                chunks.append(chunk)
                if size > SPOOL_BYTES:
                    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
                    for piece in chunks:
                        spool.write(piece)
                    chunks.clear()
            if spool is None:
                data = bytes(chunks[0]) if len(chunks) == 1 else b"".join(chunks)
            else:
                spool.seek(0)
                data = spool.read()
        finally:
            if spool is not None:
                spool.close()
        return Body(digest.hexdigest(), size, data)

    async def discard(self, cap: int) -> None:
        """Read and drop what is left of the body, up to `cap` bytes and the deadline;
        past either, the answer is sent with `Connection: close`."""
        if self.finished:
            return
        try:
            declared = declared_length(self.request)
        except LambdaError:
            declared = None
        if declared is not None and declared > cap:
            self.close_connection = True
            return
        try:
            more = True
            while more:
                _, more = await self._next()
                if self.received > cap:
                    self.close_connection = True
                    return
        except LambdaError:
            self.close_connection = True
