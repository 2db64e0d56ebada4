"""Lambda's Amazon MQ (RabbitMQ) source, against a real RabbitMQ broker.

The mapping's EventSourceArn names a broker configured in the settings
(`LAMINA_MQ_BROKERS=name=amqp://host:port`; the ARN's `broker:<name>`), `Queues` its
one queue, and SourceAccessConfigurations the credentials (`BASIC_AUTH`: a secret
of the local secret store, by ARN or name) and optionally the `VIRTUAL_HOST`.

The poller consumes with a prefetch of BatchSize, gathers a batch for at most
MaximumBatchingWindowInSeconds (Lambda's default for this source: 0.5 s), invokes
the function with the `aws:rmq` event (each message's body base64 in `data`, grouped
under "queue::virtual-host"), and acknowledges the batch only when the invocation
succeeded. A failed batch is given back to the broker (`nack` with requeue), so it
is delivered again, marked `redelivered`; a connection lost mid-batch gives it back
the same way (at-least-once).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from lamina.control.arns import Region
from lamina.errors import InvalidParameterValueException, LambdaError
from lamina.events import filters
from lamina.events.sqs import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    InvokeFunction,
    PollerStats,
)

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage

    from lamina.events.mappings import EventSourceMapping

log = logging.getLogger("lamina.events.rabbitmq")

# Lambda's default batching window for Amazon MQ sources.
DEFAULT_WINDOW_S = 0.5


class Secrets:
    """A minimal local secret store: a JSON file of {name: {"username", "password"}},
    found by a Secrets Manager ARN (arn:...:secret:NAME-AbCdEf) or by NAME."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def get(self, reference: str) -> dict[str, str]:
        secrets: dict[str, Any] = {}
        if self.path is not None and str(self.path) not in ("", ".") and self.path.is_file():
            secrets = json.loads(self.path.read_text())
        name = reference
        if ":secret:" in reference:
            name = reference.split(":secret:", 1)[1]
        for candidate in (reference, name, name.rsplit("-", 1)[0]):
            value = secrets.get(candidate)
            if isinstance(value, dict):
                return {k: str(v) for k, v in value.items()}
        raise InvalidParameterValueException(f"Secret {reference} does not exist.")


def rmq_message(message: AbstractIncomingMessage) -> dict[str, Any]:
    """One message of the aws:rmq event, as Lambda shapes it."""
    headers: dict[str, Any] = {}
    for key, value in (message.headers or {}).items():
        # Lambda gives string headers as their bytes.
        headers[key] = {"bytes": list(value.encode() if isinstance(value, str) else value)} \
            if isinstance(value, (str, bytes)) else value
    timestamp = message.timestamp
    if isinstance(timestamp, datetime.datetime):
        stamp: str | None = timestamp.strftime("%b %-d, %Y, %-I:%M:%S %p")
    else:
        stamp = None
    return {
        "basicProperties": {
            "contentType": message.content_type,
            "contentEncoding": message.content_encoding,
            "headers": headers,
            "deliveryMode": int(message.delivery_mode) if message.delivery_mode else None,
            "priority": message.priority,
            "correlationId": message.correlation_id,
            "replyTo": message.reply_to,
            "expiration": str(message.expiration) if message.expiration is not None else None,
            "messageId": message.message_id,
            "timestamp": stamp,
            "type": message.type,
            "userId": message.user_id,
            "appId": message.app_id,
            "clusterId": message.cluster_id,
            "bodySize": len(message.body),
        },
        "redelivered": bool(message.redelivered),
        "data": base64.b64encode(message.body).decode(),
    }


@dataclass
class RabbitMqPoller:
    mapping: EventSourceMapping
    broker_url: str
    secrets: Secrets | None
    invoke: InvokeFunction
    region: Region
    max_payload_bytes: int = 6 * 1024 * 1024 - 64 * 1024
    stats: PollerStats = field(default_factory=PollerStats)
    _task: asyncio.Task[None] | None = None

    def _access(self) -> tuple[dict[str, str], str]:
        credentials: dict[str, str] = {}
        virtual_host = "/"
        for entry in self.mapping.source_access_configurations:
            if entry.get("Type") == "BASIC_AUTH":
                if self.secrets is None:
                    raise InvalidParameterValueException("No secret store is configured.")
                credentials = self.secrets.get(entry["URI"])
            elif entry.get("Type") == "VIRTUAL_HOST":
                virtual_host = entry["URI"]
        return credentials, virtual_host

    def _url(self, credentials: dict[str, str], virtual_host: str) -> str:
        parts = urlsplit(self.broker_url)
        auth = ""
        if credentials:
            auth = f"{quote(credentials.get('username', ''), safe='')}:" \
                   f"{quote(credentials.get('password', ''), safe='')}@"
        netloc = auth + parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, netloc, "/" + quote(virtual_host, safe=""), "", ""))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        import aio_pika

        backoff = BACKOFF_FIRST_S
        while True:
            try:
                credentials, virtual_host = self._access()
                connection = await aio_pika.connect(self._url(credentials, virtual_host))
                async with connection:
                    channel = await connection.channel()
                    await channel.set_qos(prefetch_count=min(self.mapping.batch_size, 65535))
                    queue_name = self.mapping.queues[0]
                    queue = await channel.get_queue(queue_name, ensure=True)
                    arrivals: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
                    await queue.consume(arrivals.put, no_ack=False)
                    backoff = BACKOFF_FIRST_S
                    while True:
                        batch = await self._gather(arrivals)
                        await self._process(batch, f"{queue_name}::{virtual_host}")
            except asyncio.CancelledError:
                raise
            except (LambdaError, OSError, Exception) as error:  # noqa: BLE001 - broker errors vary
                message = error.message if isinstance(error, LambdaError) else repr(error)
                log.warning("mapping %s: broker: %s", self.mapping.uuid, message)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _gather(self, arrivals: asyncio.Queue[AbstractIncomingMessage]) -> list[AbstractIncomingMessage]:
        batch = [await arrivals.get()]
        size = len(batch[0].body)
        loop = asyncio.get_running_loop()
        window = self.mapping.maximum_batching_window_s or DEFAULT_WINDOW_S
        deadline = loop.time() + window
        while len(batch) < self.mapping.batch_size and size < self.max_payload_bytes:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                message = await asyncio.wait_for(arrivals.get(), remaining)
            except asyncio.TimeoutError:
                break
            batch.append(message)
            # base64 grows the body by a third, plus the properties.
            size += len(message.body) * 4 // 3 + 600
        return batch

    async def _process(self, batch: list[AbstractIncomingMessage], key: str) -> None:
        self.stats.polled += len(batch)
        patterns = self.mapping.filter_patterns
        if patterns:
            # Filters see the message's data decoded; what none matches is acknowledged
            # without an invocation, as Lambda does.
            kept = [m for m in batch if filters.any_matches(patterns, {"data": _decoded(m.body)})]
            kept_ids = {id(m) for m in kept}
            for message in batch:
                if id(message) not in kept_ids:
                    self.stats.filtered_out += 1
                    await message.ack()
            if not kept:
                return
            batch = kept
        event = {
            "eventSource": "aws:rmq",
            "eventSourceArn": self.mapping.event_source_arn,
            "rmqMessagesByQueue": {key: [rmq_message(m) for m in batch]},
        }
        payload = json.dumps(event).encode()
        failed = True
        try:
            function_error, _response = await self.invoke(self.mapping, payload)
            failed = function_error is not None
        except LambdaError as error:
            log.warning("mapping %s: invoking %s failed: %s", self.mapping.uuid,
                        self.mapping.function_name, error.message)
        self.stats.invoked += len(batch)
        if failed:
            self.stats.failed_invoke += len(batch)
            # Back off a little, so a failing function is not called in a tight loop.
            await asyncio.sleep(BACKOFF_FIRST_S)
            for message in batch:
                await message.nack(requeue=True)
        else:
            for message in batch:
                await message.ack()


def _decoded(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return body.decode(errors="replace")
