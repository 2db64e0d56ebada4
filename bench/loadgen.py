"""A small keep-alive HTTP/1.1 load generator, and the floor it is compared with.

Shared by bench/peers.py and bench/density.py. The client sends one prepared
request over each of N kept-alive connections and reads each answer by its
Content-Length before sending the next (no pipelining): the pattern of N SDK
clients invoking in a loop. It is a raw asyncio protocol, so on a 2-core machine
it takes as little CPU as a Python client can from the server it measures.

`python bench/loadgen.py floor PORT` serves the floor: a bare asyncio responder
that answers every request with a fixed 200, parsing with httptools like uvicorn.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def request_bytes(method: str, path: str, body: bytes = b"",
                  headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end]).lower()
        start = head.find(b"content-length:")
        if start < 0:
            raise RuntimeError(f"no Content-Length in {head!r}")
        line_end = head.find(b"\r\n", start)
        length = int(head[start + 15:line_end if line_end > 0 else len(head)])
        if len(self.buffer) < end + 4 + length:
            return
        status = int(head[9:12])
        body = bytes(self.buffer[end + 4:end + 4 + length])
        del self.buffer[:end + 4 + length]
        waiter, self.waiter = self.waiter, None
        waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("server closed the connection"))

    async def call(self, request: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


async def connect(port: int) -> _Client:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(_Client, "127.0.0.1", port)
    return client


@dataclass
class Figures:
    p50_ms: float
    p99_ms: float
    per_s: dict[int, float]


async def latencies(port: int, request: bytes, count: int, expect: int = 200) -> list[float]:
    """Milliseconds per call, one after another on one connection."""
    client = await connect(port)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        status, body = await client.call(request)
        times.append((time.perf_counter() - started) * 1000)
        if status != expect:
            raise RuntimeError(f"status {status}: {body[:300]!r}")
    assert client.transport is not None
    client.transport.close()
    return times


async def rate(port: int, request: bytes, concurrency: int, seconds: float,
               expect: int = 200) -> float:
    """Calls per second with `concurrency` connections, each calling in a loop."""
    clients = [await connect(port) for _ in range(concurrency)]
    count = 0
    deadline = time.perf_counter() + seconds

    async def loop(client: _Client) -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            status, body = await client.call(request)
            if status != expect:
                raise RuntimeError(f"status {status}: {body[:300]!r}")
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(c) for c in clients))
    elapsed = time.perf_counter() - started
    for client in clients:
        assert client.transport is not None
        client.transport.close()
    return count / elapsed


# -- the floor ------------------------------------------------------------------------


def serve_floor(port: int) -> None:
    import httptools

    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
              b"Content-Length: 2\r\n\r\n{}")

    class Responder(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            self.transport.write(answer)  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Responder, "127.0.0.1", port)
        await server.serve_forever()

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())


if __name__ == "__main__":
    if sys.argv[1:2] == ["floor"]:
        serve_floor(int(sys.argv[2]))
