"""Event invoke configs: how asynchronous invocations of a function (or of one of
its versions or aliases) are retried, how old they may get, and where their
results go (Put/Update/Get/List/DeleteFunctionEventInvokeConfig).

The service model checks the ranges (MaximumRetryAttempts 0-2,
MaximumEventAgeInSeconds 60-21,600); this module checks what the model cannot:
that the function and qualifier exist and that each destination is something this
server can deliver to.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from dataclasses import dataclass
from typing import Any, Callable

from lamina.control.arns import Region
from lamina.control.functions import FunctionRegistry
from lamina.control.models import LATEST
from lamina.control.paging import Page, page_of
from lamina.errors import InvalidParameterValueException, ResourceNotFoundException
from lamina.limits import Limits
from lamina.store.async_events import EventInvokeConfigStore
from lamina.store.changes import unannounced

# DestinationConfig members, and the record field each one is stored in.
# The services AWS delivers async results to; Lamina delivers to two of them.
DESTINATION_SERVICES = frozenset({"lambda", "sqs", "sns", "events", "s3"})
DESTINATIONS = {"OnSuccess": "on_success", "OnFailure": "on_failure"}


@dataclass(frozen=True)
class EventInvokeConfig:
    function_name: str
    qualifier: str  # $LATEST, a version number or an alias name
    last_modified: float  # epoch seconds
    maximum_retry_attempts: int | None = None
    maximum_event_age_s: int | None = None
    on_success: str | None = None
    on_failure: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EventInvokeConfig:
        return cls(**data)

    def to_api(self, region: Region) -> dict[str, Any]:
        """The FunctionEventInvokeConfig shape; unset numbers are left out, as on AWS."""
        output: dict[str, Any] = {
            "LastModified": datetime.datetime.fromtimestamp(self.last_modified,
                                                            datetime.timezone.utc),
            "FunctionArn": region.function_arn(self.function_name, self.qualifier),
            "DestinationConfig": {
                member: {"Destination": getattr(self, field)} if getattr(self, field) else {}
                for member, field in DESTINATIONS.items()
            },
        }
        if self.maximum_retry_attempts is not None:
            output["MaximumRetryAttempts"] = self.maximum_retry_attempts
        if self.maximum_event_age_s is not None:
            output["MaximumEventAgeInSeconds"] = self.maximum_event_age_s
        return output


@dataclass(frozen=True)
class AsyncPolicy:
    """What applies to one asynchronous event: its config with AWS's defaults filled in."""

    maximum_retry_attempts: int
    maximum_event_age_s: int
    on_success: str | None = None
    on_failure: str | None = None




class EventInvokeConfigs:
    def __init__(self, store: EventInvokeConfigStore, functions: FunctionRegistry,
                 limits: Limits) -> None:
        self.store = store
        self.functions = functions
        self.region = functions.region
        self.limits = limits
        # Read for every asynchronous event; every write in this process updates it.
        self._cache: dict[tuple[str, str], EventInvokeConfig | None] = {}
        # Tells other front ends which config changed, "NAME:QUALIFIER" (store/changes.py).
        self.announce: Callable[[str], None] = unannounced

    def _target(self, function_name: str, qualifier: str | None) -> tuple[str, str]:
        """(function name, qualifier) after checking both exist; no qualifier is $LATEST."""
        ref = self.functions.resolve(function_name, qualifier)
        try:
            self.functions.target(ref.name, ref.qualifier or LATEST)
        except ResourceNotFoundException:
            raise ResourceNotFoundException("The function doesn't exist.") from None
        return ref.name, ref.qualifier or LATEST

    def _named(self, function_name: str, qualifier: str | None) -> tuple[str, str]:
        """(function name, qualifier) unchecked: reading or deleting the config of a
        missing function or version, AWS just says there is no config."""
        ref = self.functions.resolve(function_name, qualifier)
        return ref.name, ref.qualifier or LATEST

    def _missing(self, name: str, qualifier: str) -> ResourceNotFoundException:
        return ResourceNotFoundException(
            f"The function {self.region.function_arn(name, qualifier)} doesn't have an "
            "EventInvokeConfig"
        )

    def _check_destination(self, name: str, member: str, arn: str | None) -> None:
        if not arn:
            return
        region = self.region
        if region.queue_name(arn) is not None:
            return
        target = region.function_ref(arn)
        service = arn.split(":")[2] if arn.count(":") >= 2 else ""
        if target is None and service not in DESTINATION_SERVICES:
            # Not a destination on AWS either: AWS's own (Java-flavoured) wording.
            parts = {kind: f"{kind}(destination={arn})" if kind == member else "null"
                     for kind in ("OnSuccess", "OnFailure")}
            raise InvalidParameterValueException(
                f"The provided destination config DestinationConfig(onSuccess={parts['OnSuccess']}, "
                f"onFailure={parts['OnFailure']}) is invalid."
            )
        if target is None:
            raise InvalidParameterValueException(
                f"DestinationConfig.{member}.Destination: {arn} is not a destination this "
                "Lamina server can deliver to. Supported destinations are Lamina functions "
                f"({region.function_arn('NAME')}[:QUALIFIER]) and SQS queues "
                f"({region.queue_arn('NAME')}); SNS topics, EventBridge buses and S3 "
                "buckets are not."
            )
        if target.name == name:
            raise InvalidParameterValueException(
                "You can't specify the function as a destination for itself."
            )
        if self.functions.load_version(target.name, LATEST) is None:
            raise InvalidParameterValueException(f"The destination ARN {arn} is invalid.")

    def _save(self, config: EventInvokeConfig) -> EventInvokeConfig:
        for member, field in DESTINATIONS.items():
            self._check_destination(config.function_name, member, getattr(config, field))
        if not self.store.put(config.function_name, config.qualifier, config.to_json()):
            raise self.functions.not_found(config.function_name)
        self._cache[(config.function_name, config.qualifier)] = config
        self.announce(f"{config.function_name}:{config.qualifier}")
        return config

    # -- the API ------------------------------------------------------------------

    def put(self, function_name: str, qualifier: str | None, retry_attempts: int | None,
            event_age_s: int | None, destinations: dict[str, Any] | None) -> EventInvokeConfig:
        """Replace the whole config: what is not given goes back to the default."""
        name, qualifier = self._target(function_name, qualifier)
        given = destinations or {}
        if retry_attempts is None and event_age_s is None and destinations is None:
            raise InvalidParameterValueException(
                "You must specify at least one of error handling or destination setting."
            )
        return self._save(EventInvokeConfig(
            function_name=name, qualifier=qualifier, last_modified=time.time(),
            maximum_retry_attempts=retry_attempts, maximum_event_age_s=event_age_s,
            **{field: (given.get(member) or {}).get("Destination") or None
               for member, field in DESTINATIONS.items()},
        ))

    def update(self, function_name: str, qualifier: str | None, retry_attempts: int | None,
               event_age_s: int | None, destinations: dict[str, Any] | None) -> EventInvokeConfig:
        """Change what is given and keep the rest; a destination given as {} is removed."""
        self._target(function_name, qualifier)  # a missing function is reported as such
        current = self.get(function_name, qualifier)
        changes: dict[str, Any] = {"last_modified": time.time()}
        if retry_attempts is not None:
            changes["maximum_retry_attempts"] = retry_attempts
        if event_age_s is not None:
            changes["maximum_event_age_s"] = event_age_s
        for member, field in DESTINATIONS.items():
            if destinations is not None and member in destinations:
                changes[field] = (destinations[member] or {}).get("Destination") or None
        return self._save(dataclasses.replace(current, **changes))

    def get(self, function_name: str, qualifier: str | None) -> EventInvokeConfig:
        name, qualifier = self._named(function_name, qualifier)
        data = self.store.get(name, qualifier)
        if data is None:
            raise self._missing(name, qualifier)
        return EventInvokeConfig.from_json(data)

    def delete(self, function_name: str, qualifier: str | None) -> None:
        name, qualifier = self._named(function_name, qualifier)
        if not self.store.delete(name, qualifier):
            raise self._missing(name, qualifier)
        self._cache.pop((name, qualifier), None)
        self.announce(f"{name}:{qualifier}")

    def changed_elsewhere(self, key: str) -> None:
        if key == "*":
            self._cache.clear()
            return
        name, _, qualifier = key.partition(":")
        self._cache.pop((name, qualifier), None)

    def list(self, function_name: str, marker: str | None,
             max_items: int | None) -> Page[EventInvokeConfig]:
        name, _ = self._target(self.functions.resolve(function_name).name, None)
        found = [EventInvokeConfig.from_json(data) for data in self.store.list(name)]
        if marker:
            found = [config for config in found if config.qualifier > marker]
        return page_of(found, max_items, lambda config: config.qualifier)

    # -- for asynchronous events -------------------------------------------------

    def policy(self, function_name: str, qualifier: str | None) -> AsyncPolicy:
        """The rules for an event invoked as FUNCTION[:QUALIFIER]: that qualifier's
        config (an unqualified invoke is $LATEST's), with AWS's defaults."""
        key = (function_name, qualifier or LATEST)
        if key not in self._cache:
            data = self.store.get(*key)
            self._cache[key] = EventInvokeConfig.from_json(data) if data else None
        config = self._cache[key]
        if config is None:
            return AsyncPolicy(self.limits.async_retry_attempts, self.limits.max_event_age_s)
        return AsyncPolicy(
            maximum_retry_attempts=(self.limits.async_retry_attempts
                                    if config.maximum_retry_attempts is None
                                    else config.maximum_retry_attempts),
            maximum_event_age_s=config.maximum_event_age_s or self.limits.max_event_age_s,
            on_success=config.on_success,
            on_failure=config.on_failure,
        )

    def function_changed(self, function_name: str, version: str | None = None) -> None:
        """Forget cached configs of a changed or deleted function (the rows go with it)."""
        for key in [k for k in self._cache if k[0] == function_name]:
            del self._cache[key]
