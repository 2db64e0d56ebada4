"""The Telemetry API (`PUT /2022-07-01/telemetry`) and the older Logs API
(`PUT /2020-08-15/logs`), on the Runtime API's port.

An extension subscribes its own HTTP listener inside the sandbox (usually
`http://sandbox.localdomain:PORT`) to some of the `platform`, `function` and
`extension` streams. The environment hands every lifecycle event to
`Telemetry.publish`; each subscription buffers what it takes and POSTs it as a
JSON array when `maxItems` or `maxBytes` is reached or `timeoutMs` has passed
(Lambda's buffering settings). Events from the start of INIT are kept until INIT
ends, so a subscriber that subscribes during INIT receives `platform.initStart`
too, as on Lambda.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from lamina.environments.extensions import Extensions, ExtensionsApiError
from lamina.environments.runtime_api import ApiResponse
from lamina.observe.events import (
    ExtensionLog,
    FunctionLog,
    InvokeReport,
    LifecycleEvent,
    Shutdown,
    TraceSegment,
    iso_time,
    now_ms,
    telemetry_json,
)

log = logging.getLogger("lamina.telemetry")

TELEMETRY = "/2022-07-01/telemetry"
LOGS = "/2020-08-15/logs"
STREAM_TYPES = frozenset({"platform", "function", "extension"})
SCHEMA_VERSIONS = frozenset({"2022-07-01", "2022-12-13", "2025-01-29"})


@dataclass(frozen=True)
class BufferRange:
    default: int
    low: int
    high: int


# Lambda's buffering settings, per API: (default, minimum, maximum).
BUFFERING = {
    TELEMETRY: {"maxItems": BufferRange(1000, 1000, 10000),
                "maxBytes": BufferRange(262144, 262144, 1048576),
                "timeoutMs": BufferRange(1000, 25, 30000)},
    LOGS: {"maxItems": BufferRange(10000, 1000, 10000),
           "maxBytes": BufferRange(262144, 262144, 1048576),
           "timeoutMs": BufferRange(1000, 25, 30000)},
}
# How much INIT output is kept for subscribers that are not there yet.
BACKLOG_ITEMS = 10000
# A subscriber slower than this many buffers' worth loses records (and is told so
# with platform.logsDropped, as on Lambda).
BUFFERS_KEPT = 4
DROPPED_REASON = ("Some logs were dropped because the downstream consumer is slower "
                  "than the logs production rate")


class TelemetryValidationError(Exception):
    pass


@dataclass
class Subscription:
    extension_name: str
    api: str  # TELEMETRY or LOGS
    types: frozenset[str]
    port: int
    max_items: int
    max_bytes: int
    timeout_ms: int
    items: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0
    full: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    sock: socket.socket | None = None
    # Records lost (a full buffer, a listener not there) since the last report.
    dropped_records: int = 0
    dropped_bytes: int = 0


def _number(buffering: dict[str, Any], key: str, limits: BufferRange) -> int:
    value = buffering.get(key, limits.default)
    if not isinstance(value, int) or isinstance(value, bool) or not limits.low <= value <= limits.high:
        raise TelemetryValidationError(
            f"buffering.{key} must be an integer between {limits.low} and {limits.high}")
    return value


def _stream_of(event: LifecycleEvent) -> str:
    if isinstance(event, FunctionLog):
        return "function"
    return "extension" if isinstance(event, ExtensionLog) else "platform"


def _function_record(message: str, log_format: str) -> Any:
    if log_format == "JSON":
        try:
            return json.loads(message)
        except ValueError:
            pass
    return message


class Telemetry:
    def __init__(self, extensions: Extensions,
                 connect: Callable[[int], Awaitable[socket.socket]],
                 log_format: str = "Text") -> None:
        self._extensions = extensions
        self._connect = connect
        self._log_format = log_format
        self._subscriptions: dict[str, Subscription] = {}
        # Told of each subscription (the platform.telemetrySubscription event).
        self.on_subscribe: Callable[[Subscription], None] | None = None
        # Every event since INIT started, until INIT is over.
        self._backlog: list[LifecycleEvent] | None = []

    # -- HTTP -------------------------------------------------------------------------

    async def route(self, method: str, path: str, headers: dict[str, str],
                    body: bytes) -> ApiResponse | None:
        if path not in (TELEMETRY, LOGS):
            return None
        if method != "PUT":
            return ApiResponse.error(405, "InvalidRequest", f"{path} takes PUT")
        try:
            extension = self._extensions.by_id(headers.get("lambda-extension-identifier"))
        except ExtensionsApiError as error:
            return ApiResponse.error(error.status, error.error_type, error.message)
        try:
            subscription = self._parse(extension.name, path, body)
        except TelemetryValidationError as error:
            return ApiResponse.error(400, "ValidationError", str(error))
        self._subscribe(subscription)
        return ApiResponse(200, b"OK", {"Content-Type": "text/plain"})

    def _parse(self, name: str, api: str, body: bytes) -> Subscription:
        try:
            request = json.loads(body)
        except (ValueError, RecursionError) as error:
            raise TelemetryValidationError("The request body must be JSON") from error
        if not isinstance(request, dict):
            raise TelemetryValidationError("The request body must be a JSON object")
        if api == TELEMETRY and request.get("schemaVersion", "2022-12-13") not in SCHEMA_VERSIONS:
            raise TelemetryValidationError(
                f"schemaVersion must be one of {sorted(SCHEMA_VERSIONS)}")
        types = request.get("types")
        if not isinstance(types, list) or not types or not set(types) <= STREAM_TYPES:
            raise TelemetryValidationError(
                "types must be a non-empty list of platform, function, extension")
        destination = request.get("destination")
        if not isinstance(destination, dict) or destination.get("protocol") != "HTTP":
            raise TelemetryValidationError("destination.protocol must be HTTP")
        try:
            uri = urlsplit(str(destination.get("URI", "")))
            port = uri.port or 80
        except ValueError as error:
            raise TelemetryValidationError("destination.URI is not a URL") from error
        if uri.scheme != "http" or not uri.hostname:
            raise TelemetryValidationError(
                "destination.URI must be http://sandbox.localdomain:PORT/...")
        buffering = request.get("buffering") or {}
        if not isinstance(buffering, dict):
            raise TelemetryValidationError("buffering must be an object")
        limits = BUFFERING[api]
        return Subscription(
            extension_name=name, api=api, types=frozenset(types), port=port,
            max_items=_number(buffering, "maxItems", limits["maxItems"]),
            max_bytes=_number(buffering, "maxBytes", limits["maxBytes"]),
            timeout_ms=_number(buffering, "timeoutMs", limits["timeoutMs"]),
        )

    def _subscribe(self, subscription: Subscription) -> None:
        previous = self._subscriptions.pop(subscription.extension_name, None)
        if previous is not None and previous.task is not None:
            previous.task.cancel()
        self._subscriptions[subscription.extension_name] = subscription
        for event in self._backlog or ():
            self._offer(subscription, event)
        subscription.task = asyncio.get_running_loop().create_task(self._deliver(subscription))
        if self.on_subscribe is not None:
            self.on_subscribe(subscription)

    # -- events -----------------------------------------------------------------------

    def publish(self, event: LifecycleEvent) -> None:
        """A LifecycleListener: hand `event` to every subscription that wants it."""
        if isinstance(event, TraceSegment):
            return  # X-Ray documents are no telemetry (they become spans)
        if self._backlog is not None and len(self._backlog) < BACKLOG_ITEMS:
            self._backlog.append(event)
        for subscription in self._subscriptions.values():
            self._offer(subscription, event)

    def end_init(self) -> None:
        self._backlog = None

    def _shape(self, subscription: Subscription, event: LifecycleEvent) -> list[dict[str, Any]]:
        if isinstance(event, (FunctionLog, ExtensionLog)):
            return [{"time": iso_time(event.timestamp_ms), "type": event.type,
                     "record": _function_record(event.message, self._log_format)}]
        if isinstance(event, TraceSegment):
            return []
        shaped = telemetry_json(event)
        if subscription.api == LOGS:
            # The Logs API's platform events: no tracing, and an end before the report.
            shaped["record"].pop("tracing", None)
            if isinstance(event, InvokeReport):
                end = {"time": shaped["time"], "type": "platform.end",
                       "record": {"requestId": event.request_id}}
                return [end, shaped]
        return [shaped]

    def _offer(self, subscription: Subscription, event: LifecycleEvent) -> None:
        if _stream_of(event) not in subscription.types or isinstance(event, Shutdown):
            return  # SHUTDOWN reaches extensions as their event, not as telemetry
        for item in self._shape(subscription, event):
            size = len(json.dumps(item))
            if (len(subscription.items) >= BUFFERS_KEPT * subscription.max_items
                    or subscription.size + size > BUFFERS_KEPT * subscription.max_bytes):
                subscription.dropped_records += 1
                subscription.dropped_bytes += size
                continue
            subscription.items.append(item)
            subscription.size += size
        if len(subscription.items) >= subscription.max_items or subscription.size >= subscription.max_bytes:
            subscription.full.set()

    async def _deliver(self, subscription: Subscription) -> None:
        while True:
            try:
                await asyncio.wait_for(subscription.full.wait(), subscription.timeout_ms / 1000)
            except asyncio.TimeoutError:
                pass
            await self._send(subscription)

    async def _send(self, subscription: Subscription) -> None:
        subscription.full.clear()
        if not subscription.items:
            return
        batch, subscription.items, subscription.size = subscription.items, [], 0
        if subscription.dropped_records:
            batch.insert(0, {"time": iso_time(now_ms()), "type": "platform.logsDropped", "record": {
                "reason": DROPPED_REASON, "droppedRecords": subscription.dropped_records,
                "droppedBytes": subscription.dropped_bytes}})
            subscription.dropped_records = subscription.dropped_bytes = 0
        body = json.dumps(batch).encode()
        try:
            await self._post(subscription, body)
        except (OSError, asyncio.TimeoutError, ValueError):
            # The listener is not there (yet, or any more): Lambda drops the batch.
            if subscription.sock is not None:
                subscription.sock.close()
                subscription.sock = None
            subscription.dropped_records += len(batch)
            subscription.dropped_bytes += len(body)

    async def _post(self, subscription: Subscription, body: bytes) -> None:
        loop = asyncio.get_running_loop()
        head = (f"POST / HTTP/1.1\r\nHost: sandbox.localdomain:{subscription.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        # A kept connection may have been closed by the listener since: one retry
        # on a fresh one.
        for attempt in range(2):
            fresh = subscription.sock is None
            if fresh:
                subscription.sock = await asyncio.wait_for(self._connect(subscription.port), 2.0)
            sock = subscription.sock
            assert sock is not None
            try:
                await loop.sock_sendall(sock, head.encode() + body)
                keep = await asyncio.wait_for(_read_response(loop, sock), 5.0)
            except (OSError, ConnectionError):
                sock.close()
                subscription.sock = None
                if fresh or attempt:
                    raise
                continue
            if not keep:
                sock.close()
                subscription.sock = None
            return

    async def flush(self) -> None:
        """Deliver whatever is buffered now (before SHUTDOWN ends the listeners)."""
        await asyncio.gather(*(self._send(s) for s in self._subscriptions.values()),
                             return_exceptions=True)

    def close(self) -> None:
        for subscription in self._subscriptions.values():
            if subscription.task is not None:
                subscription.task.cancel()
            if subscription.sock is not None:
                subscription.sock.close()
                subscription.sock = None
        self._subscriptions.clear()


async def _read_response(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bool:
    """Read one HTTP response (status line, headers, a Content-Length body); whether
    the connection stays open after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            raise ConnectionError("the subscriber closed the connection")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            break
        rest += chunk
    lowered = head.lower()
    return not (b"connection: close" in lowered or lowered.startswith(b"http/1.0"))
