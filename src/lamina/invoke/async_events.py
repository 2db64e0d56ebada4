"""Asynchronous invocation (InvocationType=Event): the durable queue and its workers.

The rules are AWS's (Lambda developer guide, "Asynchronous invocation"):

- Accepting. Invoke with InvocationType=Event writes the event to the store, and
  the write commits, before the 202 is answered. From then on the event is run at
  least once or handed to the dead-letter queue / OnFailure destination; it is never
  dropped silently. (The one exception is AWS's too: the function is deleted. The
  event is then dropped, and that is logged and counted.)
- Draining. Per function, up to min(reserved concurrency, async_workers_per_function)
  workers claim events and run them through the synchronous path, with the event's
  own request id: the id the 202 carried, kept across retries as on AWS.
- Function errors (FunctionError set: an unhandled error, a timeout, a crash, an
  INIT failure) are retried up to MaximumRetryAttempts times (0-2, default 2): the
  first retry 1 minute after the failure, the second 2 minutes after the next one.
- Throttles (TooManyRequestsException) and system errors (anything else that is not
  the function's doing) are retried with exponential back-off, from 1 second
  doubling up to 5 minutes, for as long as the event is young enough. They do not
  use up retry attempts.
- Age. An event older than MaximumEventAgeInSeconds (60-21,600, default 21,600) when
  its next attempt comes is not run again: condition EventAgeExceeded. A retry that
  would come later than that is brought forward to the moment the age runs out.
- Failure (RetriesExhausted or EventAgeExceeded): the original event goes to the
  function's DeadLetterConfig queue, with the message attributes RequestID,
  ErrorCode and ErrorMessage, and an invocation record goes to the OnFailure
  destination. Both, when both are set, as on AWS.
- Success: an invocation record goes to the OnSuccess destination.
- Destinations are Lamina functions (the record becomes an asynchronous event of
  that function, queued durably like any other) or Lamina's SQS queues.
- Time. `async_retry_delay_scale` multiplies every delay and the maximum event age
  alike, so 0.01 runs the whole schedule in miniature (a 60 s age is 0.6 s, the
  1 and 2 minute retries come after 0.6 and 1.2 s) with AWS's relative timing.
- Crashes. A claim is a lease of `async_lease_s`, renewed every third of it while
  the invocation runs, and every write after the claim names the lease's token.
  When a server dies its leases run out and the events are claimed again, so an
  event whose function ran but whose outcome was never written runs again
  (at-least-once). Such claims are counted per event and reported in
  `stats.redelivered` (possible duplicates).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from lamina.control.event_invoke_configs import AsyncPolicy, EventInvokeConfigs
from lamina.control.models import LATEST, FunctionVersion
from lamina.control.queues import QueueRegistry
from lamina.errors import (
    LambdaError,
    ResourceNotFoundException,
    TooManyRequestsException,
)
from lamina.observe.metrics import Metrics
from lamina.store.async_events import AsyncEvent, AsyncEventStore

if TYPE_CHECKING:
    from lamina.invoke.service import InvocationResult, Invoker

log = logging.getLogger("lamina.invoke.async")

# After the first and the second function error.
RETRY_DELAYS_S = (60.0, 120.0)
# Back-off after throttles and system errors: 1 s, 2 s, 4 s, ... at most 5 minutes.
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 300.0
# The dispatcher looks for due events at least this often when nothing wakes it:
# for leases of a dead server running out, and events other nodes queued.
POLL_S = 1.0
# ...and at most this often, so a burst of accepted events costs one scan, not one each.
MIN_SCAN_INTERVAL_S = 0.01
# The most events one worker claims at once.
MAX_CLAIM_BATCH = 10


def now_ms() -> int:
    return int(time.time() * 1000)


def _iso(epoch_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(epoch_ms / 1000, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _json_or_text(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode(errors="replace")


@dataclass(frozen=True)
class AsyncSettings:
    delay_scale: float = 1.0
    workers_per_function: int = 10
    lease_s: float = 30.0


@dataclass(frozen=True)
class Attempt:
    """How one attempt ended, for the dead letter's attributes and the record."""

    status_code: int
    error_type: str
    error_message: str
    function_error: str | None = None
    executed_version: str | None = None
    response: bytes | None = None

    @classmethod
    def of_result(cls, result: InvocationResult) -> Attempt:
        body = _json_or_text(result.payload)
        details = body if isinstance(body, dict) else {}
        return cls(
            status_code=result.status_code,
            error_type=str(details.get("errorType") or result.function_error or ""),
            error_message=str(details.get("errorMessage") or result.function_error or ""),
            function_error=result.function_error,
            executed_version=result.executed_version,
            response=result.payload,
        )

    @classmethod
    def of_error(cls, error: LambdaError) -> Attempt:
        reason = error.fields.get("Reason")
        message = f"{error.message} ({reason})" if reason else error.message
        return cls(error.status_code, error.error_type, message)

    def to_json(self) -> dict[str, Any]:
        # The response itself is not kept between attempts (it may be 6 MB).
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "response"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attempt:
        return cls(**data)


class EventQueue:
    """The accepting side: durable enqueue, and a wake-up for the workers."""

    def __init__(self, store: AsyncEventStore, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        # The queue's outcomes, kept in the one metrics model.
        self.stats = metrics.async_stats
        self.wakeup = asyncio.Event()

    def enqueue(self, function_name: str, qualifier: str | None, payload: str,
                client_context: str | None = None, request_id: str | None = None) -> str:
        """Store an event (committed on return) and return its request id."""
        now = now_ms()
        event = AsyncEvent(
            request_id=request_id or str(uuid.uuid4()), function_name=function_name,
            qualifier=qualifier, payload=payload, client_context=client_context,
            enqueued_at=now, visible_at=now,
        )
        self.store.add(event)
        self.metrics.async_received(function_name)
        self.wakeup.set()
        return event.request_id


class EventWorkers:
    """The draining side: claims due events per function, runs them, and applies the
    retry, age, dead-letter and destination rules (the module docstring)."""

    def __init__(self, queue: EventQueue, invoker: Invoker, configs: EventInvokeConfigs,
                 queues: QueueRegistry, settings: AsyncSettings,
                 reserved: Callable[[str], int | None] = lambda _name: None) -> None:
        self.queue = queue
        self.store = queue.store
        self.stats = queue.stats
        self.metrics = queue.metrics
        self.invoker = invoker
        self.configs = configs
        self.queues = queues
        self.region = configs.region
        self.settings = settings
        # The function's reserved concurrency, None when it has none.
        self.reserved = reserved
        self._workers: dict[str, set[asyncio.Task[None]]] = {}
        # The lease tokens of the claims in progress.
        self._leases: set[str] = set()
        # Functions that were throttled (or failed for a system reason), and until
        # when no worker claims their events: claiming the next event at once would
        # only be throttled too, one store write per event, for every waiting event.
        self._paused_until: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def _lease_ms(self) -> int:
        return int(self.settings.lease_s * 1000)

    def _scaled_ms(self, seconds: float) -> int:
        return int(seconds * 1000 * self.settings.delay_scale)

    # -- running ------------------------------------------------------------------

    async def start(self) -> None:
        pending = self.store.pending()
        if pending:
            log.warning("resuming %d asynchronous events accepted before the last stop", pending)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._dispatch()), loop.create_task(self._renew())]

    async def stop(self) -> None:
        """Stop claiming; give the events in progress back, due at once."""
        tokens = list(self._leases)
        tasks = [*self._tasks, *(task for tasks in self._workers.values() for task in tasks)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.store.release(tokens, now_ms())
        pending = self.store.pending()
        stats = self.stats
        # Worth a look (a warning) when something was run twice, dropped or left.
        notable = pending or stats.redelivered or stats.dropped or stats.delivery_failures
        log.log(logging.WARNING if notable else logging.INFO,
                "asynchronous invocations: %s; %d events pending", stats.as_dict(), pending)

    def worker_cap(self, function_name: str) -> int:
        cap = self.settings.workers_per_function
        reserved = self.reserved(function_name)
        if reserved is not None:
            cap = min(cap, reserved)
        # With reserved concurrency 0 one worker still tries, is throttled and backs
        # off: the events wait for the reservation to be raised, they are not lost.
        return max(cap, 1)

    async def _dispatch(self) -> None:
        while True:
            self.queue.wakeup.clear()
            now = now_ms()
            wake_at = [until for until in self._paused_until.values() if until > now]
            try:
                for function_name, count in self.store.ready_functions(now).items():
                    self._spawn(function_name, count, now)
                wake_at.append(self.store.next_visible_at(now) or now + int(POLL_S * 1000))
            except Exception:
                log.exception("looking for due asynchronous events")
            timeout = min(POLL_S, max((min(wake_at, default=now) - now) / 1000, 0))
            try:
                await asyncio.wait_for(self.queue.wakeup.wait(), timeout)
            except TimeoutError:
                pass
            await asyncio.sleep(MIN_SCAN_INTERVAL_S)

    def _spawn(self, function_name: str, due: int, now: int) -> None:
        if self._paused_until.get(function_name, 0) > now:
            return
        running = self._workers.setdefault(function_name, set())
        cap = self.worker_cap(function_name)
        # A backlog is claimed a few events per claim (one store write for several),
        # yet never so many that a worker holds events another one could run now.
        batch = min(-(-due // cap), MAX_CLAIM_BATCH)
        for _ in range(min(cap - len(running), due)):
            task = asyncio.get_running_loop().create_task(self._work(function_name, batch))
            running.add(task)
            task.add_done_callback(running.discard)

    async def _work(self, function_name: str, batch: int) -> None:
        while len(self._workers.get(function_name, ())) <= self.worker_cap(function_name):
            token = uuid.uuid4().hex
            now = now_ms()
            if self._paused_until.get(function_name, 0) > now:
                return
            claimed = self.store.claim(function_name, now, now + self._lease_ms, token, batch)
            if not claimed:
                return
            self._leases.add(token)
            try:
                for event in claimed:
                    if self._paused_until.get(function_name, 0) > now_ms():
                        # Throttled meanwhile: the rest go back, due when the pause ends.
                        self._give_back(event, token)
                        continue
                    try:
                        await self._process(event, token)
                    except Exception:
                        # Left to its lease: it runs out and the event is claimed again.
                        log.exception("asynchronous event %s of %s", event.request_id,
                                      function_name)
            finally:
                self._leases.discard(token)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            try:
                self.store.renew(list(self._leases), now_ms() + self._lease_ms)
            except Exception:
                log.exception("renewing leases of asynchronous events")

    # -- one event --------------------------------------------------------------------

    async def _process(self, event: AsyncEvent, token: str) -> None:
        policy = self.configs.policy(event.function_name, event.qualifier)
        expires_at = event.enqueued_at + self._scaled_ms(policy.maximum_event_age_s)
        if now_ms() > expires_at:
            self._fail(event, token, policy, "EventAgeExceeded", None)
            return
        self.metrics.async_event_age(event.function_name, now_ms() - event.enqueued_at)
        try:
            result = await self.invoker.invoke_event(
                event.function_name, event.qualifier, event.payload.encode(),
                event.client_context, event.request_id,
            )
        except ResourceNotFoundException as error:
            self.stats.dropped += 1
            self.metrics.async_dropped(event.function_name)
            log.warning("asynchronous event %s dropped: %s", event.request_id, error.message)
            self._finish(event, token)
            return
        except LambdaError as error:
            if isinstance(error, TooManyRequestsException):
                self.stats.throttles += 1
            else:
                self.stats.system_errors += 1
            self._back_off(event, token, expires_at, Attempt.of_error(error))
            return
        if result.function_error is None:
            self.stats.succeeded += 1
            if policy.on_success:
                self._deliver(event, policy.on_success, self._record(
                    event, "Success", Attempt.of_result(result), invoked=True))
            self._finish(event, token)
            return
        self.stats.function_errors += 1
        attempt = Attempt.of_result(result)
        errors = event.function_errors + 1
        if errors > policy.maximum_retry_attempts:
            self._fail(event, token, policy, "RetriesExhausted", attempt)
            return
        delay_ms = self._scaled_ms(RETRY_DELAYS_S[min(errors, len(RETRY_DELAYS_S)) - 1])
        self._retry_later(event, token, now_ms() + delay_ms, expires_at, attempt, throttled=False)

    def _back_off(self, event: AsyncEvent, token: str, expires_at: int, attempt: Attempt) -> None:
        delay_s = min(BACKOFF_FIRST_S * 2 ** min(event.throttles, 16), BACKOFF_MAX_S)
        log.info("asynchronous event %s of %s: %s; next attempt in %.3f s", event.request_id,
                 event.function_name, attempt.error_type, delay_s * self.settings.delay_scale)
        due = now_ms() + self._scaled_ms(delay_s)
        # The function's other events wait one first back-off (1 s) before the next
        # try: while it is throttled, one attempt a second, not one per waiting event.
        pause = now_ms() + self._scaled_ms(BACKOFF_FIRST_S)
        self._paused_until[event.function_name] = max(
            self._paused_until.get(event.function_name, 0), pause)
        self._retry_later(event, token, due, expires_at, attempt, throttled=True)

    def _give_back(self, event: AsyncEvent, token: str) -> None:
        due = self._paused_until.get(event.function_name, now_ms())
        self.store.give_back(event.request_id, token, due)

    def _retry_later(self, event: AsyncEvent, token: str, due: int, expires_at: int,
                     attempt: Attempt, throttled: bool) -> None:
        # Past the age limit the event only has its failure left: no later than that.
        due = min(due, expires_at + 1)
        if not self.store.retry_later(event.request_id, token, due, throttled, attempt.to_json()):
            log.warning("asynchronous event %s: lease lost before its retry was recorded",
                        event.request_id)

    def _finish(self, event: AsyncEvent, token: str) -> None:
        if self.store.finish(event.request_id, token):
            if event.unrecorded_claims:
                self.stats.redelivered += event.unrecorded_claims
                log.warning("asynchronous event %s finished after %d claim(s) that may have "
                            "run it already", event.request_id, event.unrecorded_claims)
        else:
            log.warning("asynchronous event %s: lease lost before it was finished",
                        event.request_id)

    def _fail(self, event: AsyncEvent, token: str, policy: AsyncPolicy, condition: str,
              attempt: Attempt | None) -> None:
        if condition == "RetriesExhausted":
            self.stats.retries_exhausted += 1
        else:
            self.stats.event_age_exceeded += 1
        self.metrics.async_dropped(event.function_name)
        last = attempt or (Attempt.from_json(event.last_error) if event.last_error else None)
        fv = self._version(event, last.executed_version if last else None)
        if fv is not None and fv.dead_letter_target_arn:
            self._dead_letter(event, fv.dead_letter_target_arn, condition, last)
        if policy.on_failure:
            self._deliver(event, policy.on_failure,
                          self._record(event, condition, last, invoked=attempt is not None))
        self._finish(event, token)

    def _version(self, event: AsyncEvent, executed: str | None) -> FunctionVersion | None:
        """The version whose dead-letter queue applies: the one that last ran, else
        the one the event's qualifier names now."""
        try:
            return self.invoker.targets.functions.get_version(event.function_name,
                                                              executed or event.qualifier)
        except LambdaError:
            return None

    def _dead_letter(self, event: AsyncEvent, target_arn: str, condition: str,
                     last: Attempt | None) -> None:
        # What AWS puts on a dead letter: the event as sent, and why it failed.
        attributes = {
            "RequestID": {"DataType": "String", "StringValue": event.request_id},
            "ErrorCode": {"DataType": "Number", "StringValue": str(last.status_code if last else 200)},
            "ErrorMessage": {"DataType": "String",
                             "StringValue": (last.error_message if last else "") or condition},
        }
        try:
            self.queues.send_message(target_arn, event.payload, attributes)
            self.stats.dead_lettered += 1
        except LambdaError as error:
            self.metrics.dead_letter_error(event.function_name)
            log.warning("asynchronous event %s: dead-letter queue %s: %s", event.request_id,
                        target_arn, error.message)

    def _record(self, event: AsyncEvent, condition: str,
                outcome: Attempt | None, invoked: bool) -> dict[str, Any]:
        """The invocation record AWS sends to destinations."""
        invokes = event.function_errors + event.unrecorded_claims + (1 if invoked else 0)
        record: dict[str, Any] = {
            "version": "1.0",
            "timestamp": _iso(now_ms()),
            "requestContext": {
                "requestId": event.request_id,
                "functionArn": self.region.function_arn(event.function_name,
                                                        event.qualifier or LATEST),
                "condition": condition,
                "approximateInvokeCount": invokes,
            },
            "requestPayload": _json_or_text(event.payload.encode()),
        }
        if outcome is not None:
            context: dict[str, Any] = {"statusCode": outcome.status_code}
            if outcome.executed_version:  # none when it never ran (throttled)
                context["executedVersion"] = outcome.executed_version
            if outcome.function_error:
                context["functionError"] = outcome.function_error
            record["responseContext"] = context
            if outcome.response is not None:
                record["responsePayload"] = _json_or_text(outcome.response)
        return record

    def _deliver(self, event: AsyncEvent, destination: str, record: dict[str, Any]) -> None:
        body = json.dumps(record)
        try:
            if self.region.queue_name(destination) is not None:
                self.queues.send_message(destination, body)
            else:
                target = self.region.function_ref(destination)
                if target is None:
                    raise ResourceNotFoundException(f"Unknown destination {destination}")
                self.queue.enqueue(target.name, target.qualifier, body)
            self.stats.destinations_delivered += 1
        except LambdaError as error:
            self.metrics.destination_delivery_failure(event.function_name)
            log.warning("asynchronous invocation record for %s not delivered to %s: %s",
                        event.request_id, destination, error.message)
