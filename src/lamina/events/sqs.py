"""Lambda's SQS poller, for one event source mapping on one of Lamina's queues.

What AWS documents for standard queues, and this does:

- Pollers long-poll the queue and scale with the backlog: one to start, one more
  each time a poller finds a full batch already waiting, up to the mapping's
  `ScalingConfig.MaximumConcurrency` (default: `limits.sqs_mapping_max_pollers`);
  an added poller that finds the queue empty for a second stops.
- A batch is gathered up to `BatchSize` messages, for at most
  `MaximumBatchingWindowInSeconds` (none: it goes as soon as a receive returns), or
  until the next message would take the payload past 6 MB.
- Messages that no filter matches are deleted without an invocation.
- The function is invoked synchronously with the `aws:sqs` event; on success the
  batch is deleted, or, with `ReportBatchItemFailures`, every message but the
  `batchItemFailures` listed. On a function error nothing is deleted: the messages
  become visible again when their visibility timeout runs out, and the queue's
  redrive policy moves them to its dead-letter queue after maxReceiveCount receives.
- A throttled invocation is tried again (with back-off) while the batch's messages
  are still hidden; after that they are simply received again.
- Nothing is deleted before the invocation succeeded, so a crash of the server
  loses nothing: at-least-once, duplicates only after a visibility timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from lamina.control.messages import ReceivedMessage, md5_of_attributes, md5_of_body
from lamina.control.queues import QueueRegistry
from lamina.errors import LambdaError, TooManyRequestsException
from lamina.events import filters

if TYPE_CHECKING:
    from lamina.events.mappings import EventSourceMapping

log = logging.getLogger("lamina.events.sqs")

# How long one receive waits for messages (SQS's longest long poll); pollers added
# for a backlog wait this long before they end.
LONG_POLL_S = 20
IDLE_POLL_S = 1
# Back-off after a failed invocation that is not the function's error.
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0

# Invokes the mapping's function with a payload: (function error or None, payload).
InvokeFunction = Callable[["EventSourceMapping", bytes], Awaitable[tuple[str | None, bytes]]]


@dataclass
class PollerStats:
    """Counts since this server started, as Lambda's ESM metrics name them."""

    polled: int = 0
    filtered_out: int = 0
    invoked: int = 0
    failed_invoke: int = 0
    # Age (ms) of the oldest message in the last batch, when it was received.
    oldest_message_age_ms: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"PolledEventCount": self.polled, "FilteredOutEventCount": self.filtered_out,
                "InvokedEventCount": self.invoked, "FailedInvokeEventCount": self.failed_invoke,
                "OldestMessageAgeMs": self.oldest_message_age_ms}


def sqs_record(message: ReceivedMessage, queue_arn: str, region: str) -> dict[str, Any]:
    """One record of the `aws:sqs` event, as Lambda builds it."""
    row = message.row
    attributes = {
        "ApproximateReceiveCount": str(row.receive_count),
        "SentTimestamp": str(row.sent_at),
        "SenderId": row.sender_id,
        "ApproximateFirstReceiveTimestamp": str(row.first_received_at),
    }
    if row.trace_header:
        attributes["AWSTraceHeader"] = row.trace_header
    if row.dead_letter_source_arn:
        attributes["DeadLetterQueueSourceArn"] = row.dead_letter_source_arn
    message_attributes: dict[str, dict[str, Any]] = {
        name: {
            "stringValue": value.get("StringValue"),
            "binaryValue": value.get("BinaryValue"),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value["DataType"],
        }
        for name, value in row.message_attributes.items()
    }
    return {
        "messageId": row.message_id,
        "receiptHandle": message.receipt_handle,
        "body": row.body,
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfMessageAttributes": md5_of_attributes(row.message_attributes)
        if row.message_attributes else None,
        "md5OfBody": md5_of_body(row.body),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def _filter_view(record: dict[str, Any]) -> dict[str, Any]:
    """What filter patterns see: the record, with a JSON body decoded."""
    try:
        body = json.loads(record["body"])
    except (ValueError, RecursionError):
        return record
    return {**record, "body": body}


def failed_items(payload: bytes, message_ids: set[str]) -> set[str] | None:
    """The message ids a ReportBatchItemFailures response names; None when the response
    fails the whole batch (not JSON, or an identifier that is empty or not in it).
    An empty or null response, or no `batchItemFailures`, means all succeeded."""
    if not payload.strip():
        return set()
    try:
        response = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if response is None or not isinstance(response, dict):
        return set()
    items = response.get("batchItemFailures")
    if items is None:
        return set()
    if not isinstance(items, list):
        return None
    failed = set()
    for item in items:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or identifier not in message_ids:
            return None
        failed.add(identifier)
    return failed


@dataclass
class SqsPoller:
    mapping: EventSourceMapping
    queues: QueueRegistry
    invoke: InvokeFunction
    region: str
    max_pollers: int
    max_payload_bytes: int
    stats: PollerStats = field(default_factory=PollerStats)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _stopping: bool = False

    @property
    def queue_name(self) -> str:
        return self.mapping.event_source_arn.rsplit(":", 1)[1]

    @property
    def pollers(self) -> int:
        return len(self._tasks)

    def start(self) -> None:
        self._spawn(primary=True)

    def _spawn(self, primary: bool = False) -> None:
        task = asyncio.get_running_loop().create_task(self._poll(primary))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Stop every poller; a batch being invoked is abandoned, its messages stay
        in the queue and come back after their visibility timeout."""
        self._stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _poll(self, primary: bool) -> None:
        """One poller. The primary one long-polls for as long as the mapping lives;
        the others are added while there is a backlog and end when they find none,
        so an idle queue has one waiting receiver, not a crowd woken by every send."""
        backoff = BACKOFF_FIRST_S
        while not self._stopping:
            try:
                batch, backlog = await self._gather(LONG_POLL_S if primary else IDLE_POLL_S)
            except asyncio.CancelledError:
                raise
            except LambdaError as error:
                # The queue was deleted, say: keep trying, as Lambda does.
                log.warning("mapping %s: %s", self.mapping.uuid, error.message)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_FIRST_S
            if not batch:
                if not primary:
                    return
                continue
            # A full batch that was waiting already: scale up by one poller.
            if backlog and len(batch) >= self.mapping.batch_size \
                    and len(self._tasks) < self.max_pollers:
                self._spawn()
            await self._process(batch)

    async def _gather(self, wait_s: int) -> tuple[list[ReceivedMessage], bool]:
        """A batch: up to BatchSize messages, gathered for at most the batching window
        from the first one's arrival (no window: what the first receive returns); and
        whether messages were waiting already (a backlog) rather than awaited."""
        mapping = self.mapping
        limit = mapping.batch_size
        loop = asyncio.get_running_loop()
        batch: list[ReceivedMessage] = []
        size = 0
        deadline = 0.0
        backlog = False
        while len(batch) < limit and size < self.max_payload_bytes:
            wanted = min(self.queues.limits.max_receive_messages, limit - len(batch))
            if not batch:
                received = await self.queues.receive(self.queue_name, max_messages=wanted,
                                                     wait_seconds=0)
                backlog = bool(received)
                if not received:
                    received = await self.queues.receive(self.queue_name, max_messages=wanted,
                                                         wait_seconds=wait_s)
                    if not received:
                        return [], False
                deadline = loop.time() + mapping.maximum_batching_window_s
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    # A receive cancelled while it waits has claimed nothing.
                    received = await asyncio.wait_for(self.queues.receive(
                        self.queue_name, max_messages=wanted, wait_seconds=LONG_POLL_S),
                        remaining)
                except asyncio.TimeoutError:
                    break
            for message in received:
                # The record's fixed part (ids, handle, attributes) is about 700 bytes.
                size += len(message.row.body.encode()) + 700
                batch.append(message)
        return batch, backlog

    async def _process(self, batch: list[ReceivedMessage]) -> None:
        mapping = self.mapping
        queue_arn = mapping.event_source_arn
        now = int(time.time() * 1000)
        self.stats.polled += len(batch)
        self.stats.oldest_message_age_ms = max(now - m.row.sent_at for m in batch)
        records = [sqs_record(m, queue_arn, self.region) for m in batch]
        patterns = mapping.filter_patterns
        if patterns:
            kept = [(m, r) for m, r in zip(batch, records)
                    if filters.any_matches(patterns, _filter_view(r))]
            kept_ids = {id(m) for m, _ in kept}
            dropped = [m for m in batch if id(m) not in kept_ids]
            if dropped:
                # Lambda deletes messages no filter matches.
                self.stats.filtered_out += len(dropped)
                self._delete(dropped)
            if not kept:
                return
            batch = [m for m, _ in kept]
            records = [r for _, r in kept]
        payload = json.dumps({"Records": records}).encode()
        hidden_until = min(m.row.visible_at for m in batch)
        backoff = BACKOFF_FIRST_S
        while True:
            try:
                function_error, response = await self.invoke(mapping, payload)
                break
            except TooManyRequestsException:
                pass
            except LambdaError as error:
                log.warning("mapping %s: invoking %s failed: %s", mapping.uuid,
                            mapping.function_name, error.message)
            # Retried while the messages are still ours; after that they are
            # received again anyway.
            if time.time() * 1000 + backoff * 1000 >= hidden_until:
                self.stats.failed_invoke += len(batch)
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
        self.stats.invoked += len(batch)
        if function_error is not None:
            self.stats.failed_invoke += len(batch)
            return
        if "ReportBatchItemFailures" in mapping.function_response_types:
            failed = failed_items(response, {m.row.message_id for m in batch})
            if failed is None:
                self.stats.failed_invoke += len(batch)
                return
            self.stats.failed_invoke += len(failed)
            batch = [m for m in batch if m.row.message_id not in failed]
        self._delete(batch)

    def _delete(self, messages: list[ReceivedMessage]) -> None:
        try:
            self.queues.delete_received(self.queue_name, [m.receipt_handle for m in messages])
        except LambdaError as error:
            log.warning("mapping %s: deleting messages failed: %s", self.mapping.uuid,
                        error.message)
