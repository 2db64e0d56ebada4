"""EventBridge rules on the default event bus: the subset SAM and the CLI use for
schedules (PutRule with a ScheduleExpression, PutTargets with Lambda functions,
Enable/DisableRule, DeleteRule, RemoveTargets, DescribeRule, ListRules,
ListTargetsByRule).

A scheduled rule sends its targets the "Scheduled Event" (source aws.events) or the
target's Input / the part of the event its InputPath names. EventBridge invokes a
Lambda function asynchronously, and only if the function's resource-based policy
lets `events.amazonaws.com` invoke it (AddPermission with the rule's ARN as
SourceArn, as the console and SAM add it); an invocation the policy refuses, or of a
function that does not exist, is not retried (as on AWS) and goes to the target's
dead-letter queue when it has one, else it is dropped and logged.

Rules with only an EventPattern are stored and listed; no events reach the bus here,
so they never match.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import uuid
from typing import Any

from lamina.control.arns import Region, parse_function_ref
from lamina.control.permissions import INVOKE_FUNCTION, AccessRequest, FunctionPolicies
from lamina.control.queues import QueueRegistry
from lamina.errors import (
    LambdaError,
    LimitExceededException,
    ResourceNotFoundException,
    ValidationException,
)
from lamina.events import expressions
from lamina.events.timer import Clock, to_ms
from lamina.invoke.service import InvocationRequest, Invoker
from lamina.store.triggers import TimedRow, TimedStore

log = logging.getLogger("lamina.events.rules")

EVENTS_PRINCIPAL = "events.amazonaws.com"
DEFAULT_BUS = "default"
MAX_TARGETS = 5
_LAMBDA_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:lambda:")
_PATH_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


def input_path(document: Any, path: str) -> Any:
    """The part of the event an InputPath ($, $.detail, $.resources[0]) names."""
    if not path.startswith("$"):
        raise ValidationException(f"Invalid InputPath {path}")
    value = document
    for key, index in _PATH_STEP.findall(path[1:]):
        if key:
            value = value.get(key) if isinstance(value, dict) else None
        else:
            value = value[int(index)] if isinstance(value, list) and int(index) < len(value) else None
    return value


class EventRules:
    def __init__(self, store: TimedStore, invoker: Invoker, permissions: FunctionPolicies,
                 queues: QueueRegistry, region: Region, clock: Clock) -> None:
        self.store = store
        self.invoker = invoker
        self.permissions = permissions
        self.queues = queues
        self.region = region
        self.clock = clock
        self.changed = lambda: None
        # Firings refused or failed, since this server started.
        self.failed_invocations = 0

    def arn(self, name: str) -> str:
        return f"arn:aws:events:{self.region.region}:{self.region.account_id}:rule/{name}"

    def _row(self, name: str) -> TimedRow:
        row = self.store.get((name,))
        if row is None:
            raise ResourceNotFoundException(f"Rule {name} does not exist on EventBus default.")
        return row

    @staticmethod
    def _bus(name: str | None) -> None:
        if name and name not in (DEFAULT_BUS, ) and not name.endswith(":event-bus/default"):
            raise ResourceNotFoundException(f"Event bus {name} does not exist.")

    def _first(self, config: dict[str, Any]) -> int | None:
        if config.get("State") != "ENABLED" or not config.get("ScheduleExpression"):
            return None
        expression = expressions.parse(config["ScheduleExpression"])
        now = self.clock.now()
        anchor = datetime.datetime.fromtimestamp(config["Anchor"] / 1000, datetime.timezone.utc)
        return to_ms(expressions.next_fire(expression, now, datetime.timezone.utc,
                                           anchor=anchor + _period(expression)))

    # -- the API ----------------------------------------------------------------

    def put_rule(self, params: dict[str, Any]) -> str:
        name = params["Name"]
        bus = params.get("EventBusName")
        schedule = params.get("ScheduleExpression")
        if schedule and bus and bus != DEFAULT_BUS:
            raise ValidationException("ScheduleExpression is supported only on the default event bus.")
        self._bus(bus)
        if not schedule and not params.get("EventPattern"):
            raise ValidationException(
                "Parameter(s) EventPattern or ScheduleExpression must be specified.")
        if schedule:
            try:
                expressions.parse(schedule)
            except expressions.InvalidExpression:
                raise ValidationException("Parameter ScheduleExpression is not valid.") from None
        if params.get("EventPattern"):
            try:
                json.loads(params["EventPattern"])
            except (ValueError, RecursionError):
                raise ValidationException("Event pattern is not valid. Reason: not JSON") from None
        existing = self.store.get((name,))
        config: dict[str, Any] = dict(existing.config) if existing else {"Targets": []}
        config.update({
            "Name": name,
            "Arn": self.arn(name),
            "EventBusName": DEFAULT_BUS,
            "State": params.get("State") or "ENABLED",
            "ScheduleExpression": schedule,
            "EventPattern": params.get("EventPattern"),
            "Description": params.get("Description"),
            "RoleArn": params.get("RoleArn"),
            # A rate counts from when the rule (or its expression) was put.
            "Anchor": to_ms(self.clock.now()),
        })
        if existing is None:
            if not self.store.create((name,), config, self._first(config)):
                return self.put_rule(params)
        else:
            self.store.update((name,), config, self._first(config))
        self.changed()
        return self.arn(name)

    def describe_rule(self, name: str, bus: str | None) -> dict[str, Any]:
        self._bus(bus)
        config = self._row(name).config
        out = self._rule(config)
        out["CreatedBy"] = self.region.account_id
        return out

    @staticmethod
    def _rule(config: dict[str, Any]) -> dict[str, Any]:
        keys = ("Name", "Arn", "EventPattern", "State", "Description", "ScheduleExpression",
                "RoleArn", "EventBusName")
        return {k: config[k] for k in keys if config.get(k) is not None}

    def set_state(self, name: str, bus: str | None, state: str) -> None:
        self._bus(bus)
        row = self._row(name)
        config = dict(row.config, State=state)
        if state == "ENABLED" and row.config.get("State") != "ENABLED":
            config["Anchor"] = to_ms(self.clock.now())
        next_fire = row.next_fire_at if state == row.config.get("State") else self._first(config)
        self.store.update((name,), config, next_fire)
        self.changed()

    def delete_rule(self, name: str, bus: str | None) -> None:
        self._bus(bus)
        row = self.store.get((name,))
        if row is None:
            return
        if row.config.get("Targets"):
            raise ValidationException("Rule can't be deleted since it has targets.")
        self.store.delete((name,))
        self.changed()

    def list_rules(self, prefix: str | None, bus: str | None, token: str | None,
                   limit: int | None) -> tuple[list[dict[str, Any]], str | None]:
        self._bus(bus)
        rules = [self._rule(r.config) for r in self.store.all()
                 if not prefix or r.key[0].startswith(prefix)]
        start = int(token) if token and token.isdigit() else 0
        size = limit or 100
        page = rules[start:start + size]
        return page, str(start + size) if start + size < len(rules) else None

    def put_targets(self, rule: str, bus: str | None, targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self._bus(bus)
        row = self._row(rule)
        current = {t["Id"]: t for t in row.config.get("Targets", [])}
        failed = []
        for target in targets:
            given = [k for k in ("Input", "InputPath", "InputTransformer") if target.get(k)]
            if len(given) > 1:
                raise ValidationException(
                    "Only one of Input, InputPath, or InputTransformer must be provided.")
            if target.get("InputTransformer"):
                failed.append({"TargetId": target["Id"], "ErrorCode": "ValidationException",
                               "ErrorMessage": "InputTransformer is not supported by this Lamina server."})
                continue
            if target.get("Input"):
                try:
                    json.loads(target["Input"])
                except (ValueError, RecursionError):
                    raise ValidationException("Target Input is not valid JSON text.") from None
            if not _LAMBDA_ARN.match(target["Arn"]):
                failed.append({"TargetId": target["Id"], "ErrorCode": "ValidationException",
                               "ErrorMessage": "Only Lambda function targets are supported by "
                                               "this Lamina server."})
                continue
            current[target["Id"]] = {k: v for k, v in target.items() if v is not None}
        if len(current) > MAX_TARGETS:
            raise LimitExceededException(
                f"The requested resource exceeds the maximum number allowed ({MAX_TARGETS} "
                "targets per rule).")
        self.store.update((rule,), dict(row.config, Targets=list(current.values())), row.next_fire_at)
        return failed

    def remove_targets(self, rule: str, bus: str | None, ids: list[str]) -> None:
        self._bus(bus)
        row = self._row(rule)
        kept = [t for t in row.config.get("Targets", []) if t["Id"] not in ids]
        self.store.update((rule,), dict(row.config, Targets=kept), row.next_fire_at)

    def list_targets(self, rule: str, bus: str | None) -> list[dict[str, Any]]:
        self._bus(bus)
        return list(self._row(rule).config.get("Targets", []))

    # -- firing -----------------------------------------------------------------

    def following(self, row: TimedRow, due: datetime.datetime) -> datetime.datetime | None:
        expression = expressions.parse(row.config["ScheduleExpression"])
        if isinstance(expression, expressions.Rate):
            return due + _period(expression)
        return expressions.next_fire(expression, due, datetime.timezone.utc)

    def after_downtime(self, row: TimedRow, due: datetime.datetime,
                       now: datetime.datetime) -> datetime.datetime | None:
        expression = expressions.parse(row.config["ScheduleExpression"])
        if isinstance(expression, expressions.Rate):
            return now + _period(expression)
        return expressions.next_fire(expression, now, datetime.timezone.utc)

    def scheduled_event(self, rule_arn: str, due: datetime.datetime) -> dict[str, Any]:
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.region.account_id,
            "time": due.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.region.region,
            "resources": [rule_arn],
            "detail": {},
        }

    def fire(self, row: TimedRow, due: datetime.datetime) -> None:
        config = row.config
        event = self.scheduled_event(config["Arn"], due)
        for target in config.get("Targets", []):
            if target.get("Input"):
                payload = target["Input"]
            elif target.get("InputPath"):
                payload = json.dumps(input_path(event, target["InputPath"]))
            else:
                payload = json.dumps(event)
            self._deliver(config["Arn"], target, payload)

    def _deliver(self, rule_arn: str, target: dict[str, Any], payload: str) -> None:
        try:
            ref = parse_function_ref(target["Arn"], self.region)
            request = AccessRequest(INVOKE_FUNCTION, None, service=EVENTS_PRINCIPAL,
                                    source_arn=rule_arn, source_account=self.region.account_id)
            if self.permissions.functions.load_version(ref.name, "$LATEST") is None:
                raise ResourceNotFoundException(f"Function not found: {target['Arn']}")
            if not self.permissions.authorize(ref.name, ref.qualifier, [request]):
                self._failed(rule_arn, target, payload, "NO_PERMISSIONS",
                             f"The resource-based policy of {target['Arn']} does not allow "
                             f"{EVENTS_PRINCIPAL} to invoke it from {rule_arn}")
                return
            self.invoker.invoke_queued(InvocationRequest(
                function_name=ref.name, qualifier=ref.qualifier, payload=payload.encode(),
                invocation_type="Event"))
        except LambdaError as error:
            code = "RESOURCE_NOT_FOUND" if isinstance(error, ResourceNotFoundException) \
                else "SDK_CLIENT_ERROR"
            self._failed(rule_arn, target, payload, code, error.message)

    def _failed(self, rule_arn: str, target: dict[str, Any], payload: str, code: str,
                message: str) -> None:
        self.failed_invocations += 1
        dlq = (target.get("DeadLetterConfig") or {}).get("Arn")
        log.warning("rule %s: target %s not invoked (%s): %s", rule_arn, target["Id"], code, message)
        if not dlq:
            return
        attributes = {name: {"DataType": "String", "StringValue": value} for name, value in {
            "RULE_ARN": rule_arn, "TARGET_ARN": target["Arn"], "ERROR_CODE": code,
            "ERROR_MESSAGE": message[:256]}.items()}
        try:
            self.queues.send_message(dlq, payload, attributes)
        except LambdaError as error:
            log.warning("rule %s: dead-letter queue %s: %s", rule_arn, dlq, error.message)


def _period(expression: expressions.Expression) -> datetime.timedelta:
    if isinstance(expression, expressions.Rate):
        return datetime.timedelta(seconds=expression.seconds)
    return datetime.timedelta(0)

