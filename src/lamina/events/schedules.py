"""EventBridge Scheduler: Create/Get/Update/Delete/ListSchedules, in the default group.

- Expressions: at(yyyy-mm-ddThh:mm:ss), rate() and cron() (see expressions.py), in
  ScheduleExpressionTimezone (UTC by default), between StartDate and EndDate.
- A flexible time window (Mode FLEXIBLE, MaximumWindowInMinutes) moves each firing to
  a point inside the window after its scheduled time, the same point for the same
  firing (derived from the schedule and the time), so a restart does not move it.
- The target (a Lamina function, by ARN) is invoked asynchronously with Target.Input
  (default "{}"), its context attributes `<aws.scheduler.schedule-arn>`,
  `<aws.scheduler.scheduled-time>`, `<aws.scheduler.execution-id>` and
  `<aws.scheduler.attempt-number>` filled in. The target's role is not checked: like
  EventBridge Scheduler, which invokes as that role, this needs no resource policy.
- Failures: a throttled or failed call is retried with back-off within the
  RetryPolicy (MaximumRetryAttempts 0-185, default 185; MaximumEventAgeInSeconds
  60-86,400, default 86,400); a missing function is not retried. What is not
  delivered goes to the DeadLetterConfig queue with Scheduler's message attributes
  (ERROR_CODE, ERROR_MESSAGE, EXHAUSTED_RETRY_CONDITION, RETRY_ATTEMPTS,
  SCHEDULE_ARN, TARGET_ARN). Retries in progress live in memory: a crash ends them.
- A one-time schedule with ActionAfterCompletion DELETE is deleted after it fired.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import re
import uuid
from typing import Any

from lamina.control.arns import Region, parse_function_ref
from lamina.control.queues import QueueRegistry
from lamina.errors import (
    ConflictException,
    LambdaError,
    ResourceNotFoundException,
    TooManyRequestsException,
    ValidationException,
)
from lamina.events import expressions
from lamina.events.timer import Clock, from_ms, to_ms
from lamina.invoke.service import InvocationRequest, Invoker
from lamina.store.triggers import TimedRow, TimedStore

log = logging.getLogger("lamina.events.schedules")

UTC = datetime.timezone.utc
DEFAULT_GROUP = "default"
DEFAULT_RETRY = {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400}
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 300.0
_LAMBDA_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:lambda:")


class Schedules:
    def __init__(self, store: TimedStore, invoker: Invoker, queues: QueueRegistry,
                 region: Region, clock: Clock) -> None:
        self.store = store
        self.invoker = invoker
        self.queues = queues
        self.region = region
        self.clock = clock
        self.changed = lambda: None
        self._retries: set[asyncio.Task[None]] = set()

    def arn(self, group: str, name: str) -> str:
        return f"arn:aws:scheduler:{self.region.region}:{self.region.account_id}:schedule/{group}/{name}"

    @staticmethod
    def _group(group: str | None) -> str:
        group = group or DEFAULT_GROUP
        if group != DEFAULT_GROUP:
            raise ResourceNotFoundException(f"Schedule group {group} does not exist.")
        return group

    def _row(self, group: str, name: str) -> TimedRow:
        row = self.store.get((group, name))
        if row is None:
            raise ResourceNotFoundException(f"Schedule {name} does not exist.")
        return row

    # -- the API ----------------------------------------------------------------

    def _checked(self, params: dict[str, Any], group: str) -> dict[str, Any]:
        text = params["ScheduleExpression"]
        try:
            expressions.parse(text, allow_at=True)
        except expressions.InvalidExpression:
            raise ValidationException(f"Invalid Schedule Expression {text}.") from None
        try:
            expressions.zone(params.get("ScheduleExpressionTimezone"))
        except expressions.InvalidExpression:
            raise ValidationException(
                f"Invalid Time Zone {params.get('ScheduleExpressionTimezone')}.") from None
        window = params["FlexibleTimeWindow"]
        if window.get("Mode") == "FLEXIBLE" and not window.get("MaximumWindowInMinutes"):
            raise ValidationException(
                "MaximumWindowInMinutes must be provided when FlexibleTimeWindow Mode is FLEXIBLE.")
        if window.get("Mode") == "OFF" and window.get("MaximumWindowInMinutes"):
            raise ValidationException(
                "MaximumWindowInMinutes must not be provided when FlexibleTimeWindow Mode is OFF.")
        target = params["Target"]
        if not _LAMBDA_ARN.match(target["Arn"]):
            raise ValidationException(
                "Only Lambda function targets are supported by this Lamina server.")
        start, end = params.get("StartDate"), params.get("EndDate")
        if start is not None and end is not None and float(end) <= float(start):
            raise ValidationException("The StartDate must come before the EndDate.")
        now = self.clock.now().timestamp()
        config = {k: v for k, v in params.items() if v is not None and k not in ("ClientToken",)}
        config.update({
            "Name": params["Name"],
            "GroupName": group,
            "Arn": self.arn(group, params["Name"]),
            "State": params.get("State") or "ENABLED",
            "ActionAfterCompletion": params.get("ActionAfterCompletion") or "NONE",
            "LastModificationDate": now,
            "Anchor": to_ms(self.clock.now()),
        })
        return config

    def create(self, params: dict[str, Any]) -> str:
        group = self._group(params.get("GroupName"))
        config = self._checked(params, group)
        config["CreationDate"] = config["LastModificationDate"]
        if not self.store.create((group, params["Name"]), config, self._first(config)):
            raise ConflictException(f"Schedule {params['Name']} already exists.")
        self.changed()
        return str(config["Arn"])

    def update(self, params: dict[str, Any]) -> str:
        group = self._group(params.get("GroupName"))
        row = self._row(group, params["Name"])
        config = self._checked(params, group)
        config["CreationDate"] = row.config["CreationDate"]
        self.store.update((group, params["Name"]), config, self._first(config))
        self.changed()
        return str(config["Arn"])

    def get(self, group: str | None, name: str) -> dict[str, Any]:
        config = self._row(self._group(group), name).config
        return {k: v for k, v in config.items() if k != "Anchor"}

    def delete(self, group: str | None, name: str) -> None:
        group = self._group(group)
        self._row(group, name)
        self.store.delete((group, name))
        self.changed()

    def list_schedules(self, group: str | None, prefix: str | None, state: str | None,
                       token: str | None, limit: int | None) -> tuple[list[dict[str, Any]], str | None]:
        rows = [r for r in self.store.all()
                if (group is None or r.key[0] == group)
                and (not prefix or r.key[1].startswith(prefix))
                and (state is None or r.config.get("State") == state)]
        start = int(token) if token and token.isdigit() else 0
        size = limit or 100
        summaries = [{
            "Arn": c["Arn"], "CreationDate": c["CreationDate"], "GroupName": c["GroupName"],
            "LastModificationDate": c["LastModificationDate"], "Name": c["Name"],
            "State": c["State"], "Target": {"Arn": c["Target"]["Arn"]},
        } for c in (r.config for r in rows[start:start + size])]
        return summaries, str(start + size) if start + size < len(rows) else None

    # -- when -------------------------------------------------------------------

    def _window_s(self, config: dict[str, Any]) -> float:
        window = config.get("FlexibleTimeWindow") or {}
        if window.get("Mode") != "FLEXIBLE":
            return 0.0
        return float(window.get("MaximumWindowInMinutes") or 0) * 60

    def _jitter(self, config: dict[str, Any], scheduled: datetime.datetime) -> datetime.timedelta:
        window = self._window_s(config)
        if not window:
            return datetime.timedelta(0)
        digest = hashlib.sha256(f"{config['Arn']}@{scheduled.isoformat()}".encode()).digest()
        fraction = int.from_bytes(digest[:8], "big") / 2**64
        return datetime.timedelta(seconds=window * fraction)

    def _scheduled_after(self, config: dict[str, Any], after: datetime.datetime) -> datetime.datetime | None:
        """The first scheduled time after `after` within StartDate-EndDate."""
        expression = expressions.parse(config["ScheduleExpression"], allow_at=True)
        tz = expressions.zone(config.get("ScheduleExpressionTimezone"))
        start = from_ms(int(float(config["StartDate"]) * 1000)) if config.get("StartDate") else None
        end = from_ms(int(float(config["EndDate"]) * 1000)) if config.get("EndDate") else None
        anchor = None
        if isinstance(expression, expressions.Rate):
            period = datetime.timedelta(seconds=expression.seconds)
            anchor = start or from_ms(config["Anchor"]) + period
        elif isinstance(expression, expressions.At):
            return expressions.next_fire(expression, after, tz)
        if start is not None and after < start and not isinstance(expression, expressions.Rate):
            after = start - datetime.timedelta(microseconds=1)
        found = expressions.next_fire(expression, after, tz, anchor=anchor)
        if found is None or (end is not None and found > end):
            return None
        return found

    def _first(self, config: dict[str, Any]) -> int | None:
        if config.get("State") != "ENABLED":
            return None
        now = self.clock.now()
        expression = expressions.parse(config["ScheduleExpression"], allow_at=True)
        if isinstance(expression, expressions.At):
            # A one-time schedule in the past fires at once.
            when = expressions.next_fire(expression, now,
                                         expressions.zone(config.get("ScheduleExpressionTimezone")))
            return to_ms(max(when, now) if when is not None else None)
        scheduled = self._scheduled_after(config, now)
        return to_ms(scheduled + self._jitter(config, scheduled)) if scheduled else None

    def following(self, row: TimedRow, due: datetime.datetime) -> datetime.datetime | None:
        config = row.config
        expression = expressions.parse(config["ScheduleExpression"], allow_at=True)
        if isinstance(expression, expressions.At):
            return None
        # `due` is a scheduled time plus its jitter (less than the window): the next
        # firing is the first scheduled time whose own jittered moment comes later.
        candidate = self._scheduled_after(
            config, due - datetime.timedelta(seconds=self._window_s(config)))
        while candidate is not None and candidate + self._jitter(config, candidate) <= due:
            candidate = self._scheduled_after(config, candidate)
        return candidate + self._jitter(config, candidate) if candidate is not None else None

    def _scheduled_for(self, config: dict[str, Any], due: datetime.datetime) -> datetime.datetime:
        """The scheduled time whose (jittered) firing is `due`."""
        window = self._window_s(config)
        if not window:
            return due
        tick = datetime.timedelta(milliseconds=1)
        candidate = self._scheduled_after(config, due - datetime.timedelta(seconds=window) - tick)
        while candidate is not None and candidate + self._jitter(config, candidate) < due - tick:
            candidate = self._scheduled_after(config, candidate)
        return candidate if candidate is not None and candidate <= due else due

    def after_downtime(self, row: TimedRow, due: datetime.datetime,
                       now: datetime.datetime) -> datetime.datetime | None:
        expression = expressions.parse(row.config["ScheduleExpression"], allow_at=True)
        if isinstance(expression, expressions.At):
            return now
        return self.following(row, now)

    # -- firing -----------------------------------------------------------------

    def fire(self, row: TimedRow, due: datetime.datetime) -> None:
        config = row.config
        scheduled = self._scheduled_for(config, due)
        execution_id = str(uuid.uuid4())
        if not self._attempt(config, scheduled, execution_id, 1):
            task = asyncio.get_running_loop().create_task(
                self._retry(config, scheduled, execution_id))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)
        expression = expressions.parse(config["ScheduleExpression"], allow_at=True)
        if isinstance(expression, expressions.At) and config.get("ActionAfterCompletion") == "DELETE":
            self.store.delete(row.key)

    def _payload(self, config: dict[str, Any], scheduled: datetime.datetime, execution_id: str,
                 attempt: int) -> str:
        text = config["Target"].get("Input") or "{}"
        for key, value in {
            "<aws.scheduler.schedule-arn>": config["Arn"],
            "<aws.scheduler.scheduled-time>": scheduled.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "<aws.scheduler.execution-id>": execution_id,
            "<aws.scheduler.attempt-number>": str(attempt),
        }.items():
            text = text.replace(key, value)
        return text

    def _attempt(self, config: dict[str, Any], scheduled: datetime.datetime, execution_id: str,
                 attempt: int, final: bool = False) -> bool:
        """One delivery; True when done (delivered, or given up on and dead-lettered)."""
        payload = self._payload(config, scheduled, execution_id, attempt)
        try:
            ref = parse_function_ref(config["Target"]["Arn"], self.region)
            self.invoker.invoke_queued(InvocationRequest(
                function_name=ref.name, qualifier=ref.qualifier, payload=payload.encode(),
                invocation_type="Event"))
            return True
        except LambdaError as error:
            retryable = isinstance(error, TooManyRequestsException) or error.fault != "User"
            policy = {**DEFAULT_RETRY, **(config["Target"].get("RetryPolicy") or {})}
            if retryable and not final and attempt <= policy["MaximumRetryAttempts"]:
                return False
            condition = "MaximumRetryAttempts" if retryable else ""
            self._dead_letter(config, payload, error, attempt - 1, condition)
            return True

    async def _retry(self, config: dict[str, Any], scheduled: datetime.datetime,
                     execution_id: str) -> None:
        policy = {**DEFAULT_RETRY, **(config["Target"].get("RetryPolicy") or {})}
        age_limit = datetime.timedelta(seconds=policy["MaximumEventAgeInSeconds"])
        backoff = BACKOFF_FIRST_S
        attempt = 2
        while True:
            await asyncio.sleep(self.clock.real_seconds(backoff))
            too_old = self.clock.now() - scheduled + datetime.timedelta(seconds=backoff) > age_limit
            if self._attempt(config, scheduled, execution_id, attempt, final=too_old):
                return
            attempt += 1
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _dead_letter(self, config: dict[str, Any], payload: str, error: LambdaError,
                     retries: int, condition: str) -> None:
        target = config["Target"]
        dlq = (target.get("DeadLetterConfig") or {}).get("Arn")
        log.warning("schedule %s: target not invoked: %s", config["Arn"], error.message)
        if not dlq:
            return
        values = {
            "ERROR_CODE": error.error_type,
            "ERROR_MESSAGE": error.message[:256],
            "RETRY_ATTEMPTS": str(retries),
            "SCHEDULE_ARN": config["Arn"],
            "TARGET_ARN": target["Arn"],
        }
        if condition:
            values["EXHAUSTED_RETRY_CONDITION"] = condition
        attributes = {k: {"DataType": "String", "StringValue": v} for k, v in values.items()}
        try:
            self.queues.send_message(dlq, payload, attributes)
        except LambdaError as failure:
            log.warning("schedule %s: dead-letter queue %s: %s", config["Arn"], dlq, failure.message)

    async def stop(self) -> None:
        tasks = list(self._retries)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
