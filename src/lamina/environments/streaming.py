"""A streamed response on its way from a runtime to the one reader that asked for it.

The Runtime API connection (runtime_api.py) puts the body of a runtime's
`/response` POST in as it arrives; the invoker iterates the chunks and closes
over the final error. Two things keep a fast runtime and a slow reader apart:

- backpressure: once `high_water` bytes wait unread, `put` says FULL and the
  connection stops reading the runtime's socket (the runtime's writes block, as
  they do on Lambda) until the reader has taken them, then `resume` is called;
- bandwidth: past the first `burst_bytes` the reader gets at most `bytes_per_s`,
  the way Lambda shapes streamed responses (6 MB uncapped, then 2 MB/s).

A response over `limit_bytes` is cut at the limit and ends with
Function.ResponseSizeTooLarge, which is what Lambda does to an oversized stream.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
from collections import deque
from typing import AsyncIterator, Callable

from lamina.limits import MB

OVERSIZED = "Function.ResponseSizeTooLarge"


class Accepted(enum.Enum):
    MORE = "more"  # keep reading
    FULL = "full"  # stop reading until resumed
    CUT = "cut"  # the response is over: drop whatever else the runtime sends


class ResponseStream:
    def __init__(self, limit_bytes: int, burst_bytes: int, bytes_per_s: int,
                 high_water: int = 1 * MB) -> None:
        self.limit_bytes = limit_bytes
        self.high_water = high_water
        # The runtime's Content-Type for the body, once it has begun its response.
        self.content_type: str | None = None
        # The runtime posted in streaming mode (not one buffered body).
        self.streaming_mode = False
        self.opened = False
        self.size = 0
        self.error_type: str | None = None
        # The error document (a runtime's JSON, as sent), when the response failed.
        self.error_body: bytes | None = None
        self.first_byte_at: float | None = None
        self._chunks: deque[bytes] = deque()
        self._waiting = 0
        self._closed = False
        self._abandoned = False
        self._paused = False
        self._resume: Callable[[], None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._tokens = float(burst_bytes)
        self._burst = float(burst_bytes)
        self._rate = float(bytes_per_s)
        self._refilled = time.monotonic()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the writing side (the Runtime API) ----------------------------------------------

    def open(self, content_type: str | None, streaming_mode: bool,
             resume: Callable[[], None] | None = None) -> None:
        self.opened = True
        self.content_type = content_type
        self.streaming_mode = streaming_mode
        self._resume = resume
        self._wake()

    def put(self, chunk: bytes) -> Accepted:
        if self._closed:
            return Accepted.CUT
        if not chunk:
            return Accepted.MORE
        room = self.limit_bytes - self.size
        if len(chunk) > room:
            self._append(chunk[:room])
            message = ("Response payload size exceeded maximum allowed payload size "
                       f"({self.limit_bytes} bytes).")
            self.close(OVERSIZED, json.dumps({"errorMessage": message, "errorType": OVERSIZED}).encode())
            return Accepted.CUT
        self._append(chunk)
        if self._waiting >= self.high_water:
            self._paused = True
            return Accepted.FULL
        return Accepted.MORE

    def _append(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if self.first_byte_at is None:
            self.first_byte_at = time.perf_counter()
        if self._abandoned:
            return
        self._chunks.append(chunk)
        self._waiting += len(chunk)
        self._wake()

    def close(self, error_type: str | None = None, error_body: bytes | None = None) -> None:
        """The end of the response; with an error type when it failed (a runtime's
        error trailers, a crash, a timeout, the size limit). Only the first close counts."""
        if self._closed:
            return
        self._closed = True
        self.error_type = error_type
        self.error_body = error_body if error_type is not None else None
        self._wake()
        self._release()

    # -- the reading side (the invoker) --------------------------------------------------

    def abandon(self) -> None:
        """The reader has gone (its client disconnected): what else the function
        writes is dropped, and never holds the runtime back."""
        self._abandoned = True
        self._chunks.clear()
        self._waiting = 0
        self._release()

    async def wait_open(self) -> None:
        """Until the runtime has begun its response, or the invocation is over."""
        while not self.opened and not self._closed:
            await self._sleep()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._waiting -= len(chunk)
                if self._paused and self._waiting < self.high_water // 2:
                    self._release()
                await self._shape(len(chunk))
                yield chunk
            elif self._closed:
                return
            else:
                await self._sleep()

    async def _shape(self, size: int) -> None:
        """Lambda's bandwidth cap: a token bucket holding burst bytes, refilled at rate."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        self._tokens -= size
        if self._tokens < 0 and self._rate > 0:
            await asyncio.sleep(-self._tokens / self._rate)

    async def _sleep(self) -> None:
        """Until something is put or the stream opens or closes. Shared by whoever
        waits (wait_open and the reader), and shielded: one giving up (a cancelled
        reader) leaves the other waiting."""
        waiter = self._wakeup
        if waiter is None or waiter.done():
            waiter = self._wakeup = asyncio.get_running_loop().create_future()
        await asyncio.shield(waiter)

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _release(self) -> None:
        if self._paused:
            self._paused = False
            if self._resume is not None:
                self._resume()
