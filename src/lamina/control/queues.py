"""SQS queues: attributes, sending, receiving with visibility timeouts, long polling.

Rules and error messages follow SQS standard queues (at-least-once, best-effort
order). FIFO queues are not offered. Everything is persisted through
`store.queues` before a call returns; the only in-memory state is the set of
long-polling receivers waiting to be woken.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, TypeVar

from lamina.control.arns import Region
from lamina.control.messages import (
    OutgoingMessage,
    ReceivedMessage,
    SentMessage,
    check_body,
    checked_message_attributes,
    checked_system_attributes,
    invalid_value,
    md5_of_attributes,
    md5_of_body,
    new_receipt_handle,
    now_ms,
    parse_receipt_handle,
)
from lamina.errors import (
    BatchEntryIdsNotDistinct,
    BatchRequestTooLong,
    EmptyBatchRequest,
    InvalidAttributeName,
    InvalidAttributeValue,
    InvalidBatchEntryId,
    InvalidParameterValueException,
    LambdaError,
    QueueDoesNotExist,
    QueueNameExists,
    TooManyEntriesInBatchRequest,
)
from lamina.limits import Limits
from lamina.store.queues import HandleMatch, QueueMessage, QueueRow, QueueStore, Redrive

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")

_COUNT_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)
_COMPUTED_ATTRIBUTES = ("QueueArn", "CreatedTimestamp", "LastModifiedTimestamp",
                        *_COUNT_ATTRIBUTES)
# Settable attributes kept as given (after a JSON check where they are JSON).
_FREE_ATTRIBUTES = ("Policy", "RedriveAllowPolicy", "KmsMasterKeyId",
                    "KmsDataKeyReusePeriodSeconds", "SqsManagedSseEnabled")
_JSON_ATTRIBUTES = ("Policy", "RedriveAllowPolicy", "RedrivePolicy")
# Expired messages are deleted at most this often per queue; until then queries
# simply skip them.
_EXPIRY_SWEEP_S = 60.0

T = TypeVar("T")


def _in_range(parameter: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise invalid_value(parameter, value, f"Must be >= {low} and <= {high}, if provided.")
    return value


@dataclass(frozen=True)
class Queue:
    name: str
    arn: str
    attributes: dict[str, str]
    created_at: int
    modified_at: int

    def number(self, attribute: str) -> int:
        return int(self.attributes[attribute])

    @property
    def retention_ms(self) -> int:
        return self.number("MessageRetentionPeriod") * 1000


@dataclass(frozen=True)
class BatchFailure:
    entry_id: str
    code: str
    message: str
    sender_fault: bool

    def to_api(self) -> dict[str, Any]:
        return {"Id": self.entry_id, "SenderFault": self.sender_fault, "Code": self.code,
                "Message": self.message}


@dataclass(frozen=True)
class BatchResult:
    successful: list[tuple[str, Any]]
    failed: list[BatchFailure]


@dataclass(frozen=True)
class QueueListing:
    names: list[str]
    next_token: str | None


class QueueRegistry:
    def __init__(self, store: QueueStore, region: Region, limits: Limits) -> None:
        self.store = store
        self.region = region
        self.limits = limits
        # One event per queue with long-polling receivers; a send sets and drops it.
        self._arrivals: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_sweep: dict[str, float] = {}

    # -- queues ------------------------------------------------------------------

    def _defaults(self) -> dict[str, str]:
        limits = self.limits
        return {
            "DelaySeconds": "0",
            "MaximumMessageSize": str(limits.max_message_bytes),
            "MessageRetentionPeriod": str(limits.default_retention_s),
            "ReceiveMessageWaitTimeSeconds": "0",
            "VisibilityTimeout": str(limits.default_visibility_timeout_s),
            "SqsManagedSseEnabled": "false",
        }

    def _number_ranges(self) -> dict[str, tuple[int, int]]:
        limits = self.limits
        return {
            "DelaySeconds": (0, limits.max_delay_s),
            "MaximumMessageSize": (limits.min_message_bytes, limits.max_message_bytes),
            "MessageRetentionPeriod": (limits.min_retention_s, limits.max_retention_s),
            "ReceiveMessageWaitTimeSeconds": (0, limits.max_receive_wait_s),
            "VisibilityTimeout": (0, limits.max_visibility_timeout_s),
        }

    def _checked_attributes(self, queue_name: str, given: Mapping[str, str]) -> dict[str, str]:
        """Given attributes validated and normalized; "" for RedrivePolicy means none."""
        ranges = self._number_ranges()
        checked: dict[str, str] = {}
        for name, value in given.items():
            if name == "FifoQueue":
                if value.lower() != "false":
                    raise InvalidAttributeValue(
                        "Invalid value for the parameter FifoQueue. Reason: FIFO queues are "
                        "not supported by this Lamina server."
                    )
                continue
            if name not in ranges and name not in _FREE_ATTRIBUTES and name != "RedrivePolicy":
                raise InvalidAttributeName(f"Unknown Attribute {name}.")
            if name in ranges:
                low, high = ranges[name]
                if not value.strip().lstrip("-").isdigit() or not low <= int(value) <= high:
                    raise InvalidAttributeValue(
                        f"Invalid value for the parameter {name}. Reason: Must be an integer "
                        f"from {low} to {high}."
                    )
                value = str(int(value))
            elif name in _JSON_ATTRIBUTES and value:
                try:
                    json.loads(value)
                except (ValueError, RecursionError):
                    raise InvalidAttributeValue(
                        f"Invalid value for the parameter {name}. Reason: not valid JSON."
                    ) from None
            if name == "RedrivePolicy" and value:
                value = self._checked_redrive_policy(queue_name, value)
            checked[name] = value
        return checked

    def _checked_redrive_policy(self, queue_name: str, value: str) -> str:
        def bad(reason: str) -> InvalidAttributeValue:
            return InvalidAttributeValue(
                f"Value {value} for parameter RedrivePolicy is invalid. Reason: {reason}"
            )

        policy = json.loads(value)
        if not isinstance(policy, dict) or "deadLetterTargetArn" not in policy \
                or "maxReceiveCount" not in policy:
            raise bad("Redrive policy must contain deadLetterTargetArn and maxReceiveCount.")
        target = self.region.queue_name(str(policy["deadLetterTargetArn"]))
        if target is None or target == queue_name or self.store.get_queue(target) is None:
            raise bad("Dead letter target does not exist.")
        count = str(policy["maxReceiveCount"])
        high = self.limits.max_receive_count
        if not count.isdigit() or not 1 <= int(count) <= high:
            raise bad(
                f"Invalid value for maxReceiveCount: {count}, valid values are from 1 to "
                f"{high} both inclusive."
            )
        return json.dumps(
            {"deadLetterTargetArn": policy["deadLetterTargetArn"], "maxReceiveCount": int(count)},
            separators=(",", ":"),
        )

    def _queue(self, row: QueueRow) -> Queue:
        return Queue(row.name, self.region.queue_arn(row.name), row.attributes,
                     row.created_at, row.modified_at)

    def create_queue(self, name: str, attributes: Mapping[str, str]) -> Queue:
        """Create the queue, or return the existing one if its attributes agree."""
        if not _NAME.match(name):
            raise InvalidParameterValueException(
                "Can only include alphanumeric characters, hyphens, or underscores. "
                "1 to 80 in length"
            )
        given = self._checked_attributes(name, attributes)
        wanted = {**self._defaults(), **{k: v for k, v in given.items() if v != ""}}
        if self.store.create_queue(name, wanted, int(time.time())):
            return self.get_queue(name)
        existing = self.get_queue(name)
        for key, value in given.items():
            if existing.attributes.get(key, "") != value:
                raise QueueNameExists(
                    "A queue already exists with the same name and a different value for "
                    f"attribute {key}"
                )
        return existing

    def get_queue(self, name: str) -> Queue:
        row = self.store.get_queue(name)
        if row is None:
            raise QueueDoesNotExist("The specified queue does not exist.")
        return self._queue(row)

    def queue_for_arn(self, arn: str) -> Queue:
        name = self.region.queue_name(arn)
        if name is None:
            raise QueueDoesNotExist("The specified queue does not exist.")
        return self.get_queue(name)

    def list_queues(self, prefix: str | None, max_results: int | None,
                    next_token: str | None) -> QueueListing:
        high = self.limits.max_queues_listed
        if max_results is not None and not 1 <= max_results <= high:
            raise invalid_value("MaxResults", max_results,
                                f"MaxResults must be an integer between 1 and {high}.")
        after = None
        if next_token:
            try:
                after = base64.urlsafe_b64decode(next_token.encode()).decode()
            except (ValueError, UnicodeDecodeError):
                raise InvalidParameterValueException("Invalid NextToken value.") from None
        limit = max_results or high
        names = self.store.list_queue_names(prefix or "", after, limit + 1)
        token = None
        # As on SQS, a NextToken is only given to callers that asked for pages.
        if max_results is not None and len(names) > limit:
            token = base64.urlsafe_b64encode(names[limit - 1].encode()).decode()
        return QueueListing(names[:limit], token)

    def delete_queue(self, name: str) -> None:
        if not self.store.delete_queue(name):
            raise QueueDoesNotExist("The specified queue does not exist.")
        self._arrivals.pop(name, None)
        self._last_sweep.pop(name, None)

    def purge_queue(self, name: str) -> None:
        self.get_queue(name)
        self.store.purge(name)

    def get_attributes(self, name: str, names: Iterable[str]) -> dict[str, str]:
        queue = self.get_queue(name)
        wanted = set(names)
        known = set(self._defaults()) | set(self._number_ranges()) | set(_FREE_ATTRIBUTES) \
            | {"RedrivePolicy", "FifoQueue", *_COMPUTED_ATTRIBUTES}
        unknown = sorted(wanted - known - {"All"})
        if unknown:
            raise InvalidAttributeName(f"Unknown Attribute {unknown[0]}.")
        everything = "All" in wanted
        computed = {
            "QueueArn": queue.arn,
            "CreatedTimestamp": str(queue.created_at),
            "LastModifiedTimestamp": str(queue.modified_at),
        }
        if everything or wanted & set(_COUNT_ATTRIBUTES):
            now = now_ms()
            counts = self.store.counts(name, now, now - queue.retention_ms)
            computed.update(zip(_COUNT_ATTRIBUTES, map(str, (
                counts.visible, counts.in_flight, counts.delayed
            ))))
        return {
            key: value for key, value in {**queue.attributes, **computed}.items()
            if everything or key in wanted
        }

    def set_attributes(self, name: str, attributes: Mapping[str, str]) -> None:
        queue = self.get_queue(name)
        merged = dict(queue.attributes)
        for key, value in self._checked_attributes(name, attributes).items():
            if value == "" and key == "RedrivePolicy":
                merged.pop(key, None)
            else:
                merged[key] = value
        self.store.set_attributes(name, merged, int(time.time()))

    # -- sending -----------------------------------------------------------------

    def _prepare(self, queue: Queue, message: OutgoingMessage,
                 now: int) -> tuple[QueueMessage, SentMessage]:
        check_body(message.body)
        attributes, attributes_size = checked_message_attributes(
            message.message_attributes, self.limits.max_message_attributes
        )
        limit = queue.number("MaximumMessageSize")
        if len(message.body.encode()) + attributes_size > limit:
            raise InvalidParameterValueException(
                f"One or more parameters are invalid. Reason: Message must be shorter than "
                f"{limit} bytes."
            )
        delay = message.delay_seconds
        if delay is None:
            delay = queue.number("DelaySeconds")
        elif not 0 <= delay <= self.limits.max_delay_s:
            raise invalid_value(
                "DelaySeconds", delay,
                f"DelaySeconds must be >= 0 and <= {self.limits.max_delay_s}.",
            )
        system = checked_system_attributes(message.system_attributes)
        new = QueueMessage(
            message_id=str(uuid.uuid4()),
            body=message.body,
            message_attributes=attributes,
            trace_header=system["AWSTraceHeader"]["StringValue"] if system else None,
            sender_id=self.region.account_id,
            sent_at=now,
            visible_at=now + delay * 1000,
        )
        sent = SentMessage(
            message_id=new.message_id,
            md5_of_body=md5_of_body(message.body),
            md5_of_message_attributes=md5_of_attributes(attributes) if attributes else None,
            md5_of_system_attributes=md5_of_attributes(system) if system else None,
        )
        return new, sent

    def send(self, name: str, message: OutgoingMessage) -> SentMessage:
        queue = self.get_queue(name)
        new, sent = self._prepare(queue, message, now_ms())
        self.store.add_messages(name, [new])
        self._notify(name)
        return sent

    def send_message(self, queue_arn: str, body: str,
                     attributes: dict[str, dict] | None = None) -> str:
        """Send to a queue named by ARN (dead-letter queues, destinations): the message id."""
        queue = self.queue_for_arn(queue_arn)
        sent = self.send(queue.name, OutgoingMessage(body, message_attributes=attributes or {}))
        return sent.message_id

    def send_batch(self, name: str, entries: list[tuple[str, OutgoingMessage]]) -> BatchResult:
        queue = self.get_queue(name)
        self._check_batch([entry_id for entry_id, _ in entries])
        total = sum(len(m.body.encode()) for _, m in entries)
        if total > self.limits.max_message_bytes:
            raise BatchRequestTooLong(
                f"Batch requested message too long. Total size of all messages is {total} "
                f"bytes, the maximum is {self.limits.max_message_bytes} bytes."
            )
        now = now_ms()
        prepared = run_batch(entries, lambda m: self._prepare(queue, m, now))
        self.store.add_messages(name, [new for _, (new, _sent) in prepared.successful])
        if prepared.successful:
            self._notify(name)
        return BatchResult([(i, sent) for i, (_new, sent) in prepared.successful], prepared.failed)

    def _check_batch(self, entry_ids: list[str]) -> None:
        """The request-level batch rules SQS applies before looking at any entry."""
        if not entry_ids:
            raise EmptyBatchRequest("There should be at least one entry in the request.")
        limit = self.limits.max_batch_entries
        if len(entry_ids) > limit:
            raise TooManyEntriesInBatchRequest(
                f"Maximum number of entries per request are {limit}. You have sent "
                f"{len(entry_ids)}."
            )
        seen: set[str] = set()
        for entry_id in entry_ids:
            if not _NAME.match(entry_id):
                raise InvalidBatchEntryId(
                    "A batch entry id can only contain alphanumeric characters, hyphens and "
                    "underscores. It can be at most 80 letters long."
                )
            if entry_id in seen:
                raise BatchEntryIdsNotDistinct(f"Id {entry_id} repeated.")
            seen.add(entry_id)

    # -- receiving ---------------------------------------------------------------

    async def receive(self, name: str, max_messages: int | None = None,
                      visibility_timeout: int | None = None,
                      wait_seconds: int | None = None) -> list[ReceivedMessage]:
        """Claim up to max_messages, long-polling up to wait_seconds when none is ready.

        A waiting receiver sleeps on an event that a send to the queue sets, or until
        the next hidden message becomes visible: no polling loop.
        """
        limits = self.limits
        queue = self.get_queue(name)
        count = 1 if max_messages is None else max_messages
        if not 1 <= count <= limits.max_receive_messages:
            raise invalid_value(
                "MaxNumberOfMessages", count,
                f"Must be between 1 and {limits.max_receive_messages}, if provided.",
            )
        hide_s = queue.number("VisibilityTimeout") if visibility_timeout is None else \
            _in_range("VisibilityTimeout", visibility_timeout, 0, limits.max_visibility_timeout_s)
        wait_s = queue.number("ReceiveMessageWaitTimeSeconds") if wait_seconds is None else \
            _in_range("WaitTimeSeconds", wait_seconds, 0, limits.max_receive_wait_s)
        redrive = self._redrive(queue)
        self._sweep_expired(queue)
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Events belong to the loop they were first awaited in.
            self._arrivals.clear()
            self._loop = loop
        deadline = loop.time() + wait_s
        while True:
            # Take the event before looking, so a send between the look and the wait
            # still wakes this receiver.
            arrival = self._arrivals.setdefault(name, asyncio.Event())
            now = now_ms()
            token = uuid.uuid4().hex
            rows = self.store.claim(name, now, count, now + hide_s * 1000,
                                    now - queue.retention_ms, token, redrive)
            if redrive is not None:
                # The claim may have moved messages there; its receivers look again.
                self._notify(redrive.target_queue)
            if rows:
                return [ReceivedMessage(row, new_receipt_handle(name, row.message_id, token))
                        for row in rows]
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            next_visible = self.store.next_visible_at(name, now)
            if next_visible is not None:
                remaining = min(remaining, max(0.005, (next_visible - now) / 1000))
            try:
                await asyncio.wait_for(arrival.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def _redrive(self, queue: Queue) -> Redrive | None:
        policy = queue.attributes.get("RedrivePolicy")
        if not policy:
            return None
        parsed = json.loads(policy)
        target = self.region.queue_name(parsed["deadLetterTargetArn"])
        if target is None or self.store.get_queue(target) is None:
            # A dead-letter queue deleted after the policy was set: keep delivering.
            return None
        return Redrive(target, int(parsed["maxReceiveCount"]), queue.arn)

    def _sweep_expired(self, queue: Queue) -> None:
        now = time.monotonic()
        if now - self._last_sweep.get(queue.name, 0.0) >= _EXPIRY_SWEEP_S:
            self._last_sweep[queue.name] = now
            self.store.delete_expired(queue.name, now_ms() - queue.retention_ms)

    def _notify(self, name: str) -> None:
        arrival = self._arrivals.pop(name, None)
        if arrival is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop or self._loop is None:
            arrival.set()
        else:
            # A sender outside the event loop (a worker thread): hand the wake-up over.
            self._loop.call_soon_threadsafe(arrival.set)

    # -- after receiving ---------------------------------------------------------

    def delete_message(self, name: str, receipt_handle: str) -> None:
        """Delete by the latest receipt handle; an older one succeeds and does nothing."""
        self.get_queue(name)
        self.store.delete_messages(name, [parse_receipt_handle(name, receipt_handle)])

    def delete_received(self, name: str, receipt_handles: list[str]) -> None:
        """Delete any number of received messages at once (event source mappings);
        stale handles are ignored, as DeleteMessage ignores them."""
        self.get_queue(name)
        self.store.delete_messages(name, [parse_receipt_handle(name, h) for h in receipt_handles])

    def delete_batch(self, name: str, entries: list[tuple[str, str]]) -> BatchResult:
        """DeleteMessageBatch: entries are (entry id, receipt handle)."""
        self.get_queue(name)
        self._check_batch([entry_id for entry_id, _ in entries])
        parsed = run_batch(entries, lambda handle: parse_receipt_handle(name, handle))
        self.store.delete_messages(name, [handle for _, handle in parsed.successful])
        return BatchResult([(entry_id, None) for entry_id, _ in parsed.successful], parsed.failed)

    def change_visibility_batch(self, name: str,
                                entries: list[tuple[str, tuple[str, int]]]) -> BatchResult:
        """ChangeMessageVisibilityBatch: entries are (entry id, (receipt handle, timeout))."""
        self.get_queue(name)
        self._check_batch([entry_id for entry_id, _ in entries])
        return run_batch(entries, lambda entry: self.change_visibility(name, *entry))

    def change_visibility(self, name: str, receipt_handle: str, visibility_timeout: int) -> None:
        self.get_queue(name)
        _in_range("VisibilityTimeout", visibility_timeout, 0, self.limits.max_visibility_timeout_s)
        message_id, token = parse_receipt_handle(name, receipt_handle)
        match = self.store.set_visible_at(name, message_id, token,
                                          now_ms() + visibility_timeout * 1000)
        if match is not HandleMatch.CURRENT:
            raise invalid_value(
                "ReceiptHandle", receipt_handle,
                "Message does not exist or is not available for visibility timeout change.",
            )
        if visibility_timeout == 0:
            self._notify(name)


def run_batch(entries: list[tuple[str, T]], apply: Callable[[T], Any]) -> BatchResult:
    """Apply to each entry; an entry's SQS error becomes its Failed item, as SQS reports it."""
    successful: list[tuple[str, Any]] = []
    failed: list[BatchFailure] = []
    for entry_id, entry in entries:
        try:
            successful.append((entry_id, apply(entry)))
        except LambdaError as error:
            failed.append(BatchFailure(entry_id, error.query_code or error.error_type,
                                       error.message, error.fault == "User"))
    return BatchResult(successful, failed)


