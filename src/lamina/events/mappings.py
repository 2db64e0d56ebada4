"""Event source mappings: Create/Get/Update/Delete/ListEventSourceMappings, and the
pollers that serve them.

A mapping reads a source (one of Lamina's SQS queues, or a RabbitMQ broker named in
the settings) and invokes its function synchronously through `invoke/`, like any
other client. States are AWS's: Create answers `Creating` and Update `Updating`, and
the mapping becomes `Enabled` (or `Disabled`) once its pollers have started (or
stopped); Delete answers `Deleting` and the mapping goes when its pollers have. On a
restart every mapping that was enabled (or on its way there) is polled again, and
one left `Deleting` is deleted.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import re
import uuid as uuid_module
from dataclasses import dataclass, field
from typing import Any, Protocol

from lamina.control.arns import Region, parse_function_ref
from lamina.control.functions import FunctionRegistry
from lamina.control.queues import QueueRegistry
from lamina.errors import (
    InvalidParameterValueException,
    LambdaError,
    ResourceConflictException,
    ResourceInUseException,
    ResourceNotFoundException,
)
from lamina.events import filters
from lamina.events.rabbitmq import RabbitMqPoller, Secrets
from lamina.events.sqs import PollerStats, SqsPoller
from lamina.invoke.service import InvocationRequest, Invoker
from lamina.limits import Limits
from lamina.store.triggers import MappingStore

log = logging.getLogger("lamina.events")

RESOURCE_MISSING = "The resource you requested does not exist."
USER_INITIATED = "USER_INITIATED"
# Parameters of stream and Kafka sources, which SQS and RabbitMQ mappings refuse.
_STREAM_ONLY = ("StartingPosition", "StartingPositionTimestamp", "ParallelizationFactor",
                "MaximumRecordAgeInSeconds", "BisectBatchOnFunctionError",
                "MaximumRetryAttempts", "TumblingWindowInSeconds", "Topics",
                "SelfManagedEventSource", "AmazonManagedKafkaEventSourceConfig",
                "SelfManagedKafkaEventSourceConfig", "DocumentDBEventSourceConfig")
_MQ_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:mq:[a-z0-9-]+:\d{12}:broker:(?P<name>[^:]+)(:.*)?$")


class Poller(Protocol):
    stats: PollerStats

    def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class EventSourceMapping:
    uuid: str
    function_name: str
    qualifier: str | None
    event_source_arn: str
    # "sqs" or "mq".
    source: str
    batch_size: int
    maximum_batching_window_s: int
    enabled: bool
    state: str
    last_modified: float
    filter_criteria: dict[str, Any] | None = None
    function_response_types: list[str] = field(default_factory=list)
    scaling_config: dict[str, Any] | None = None
    queues: list[str] = field(default_factory=list)
    source_access_configurations: list[dict[str, str]] = field(default_factory=list)
    state_transition_reason: str = USER_INITIATED

    @property
    def filter_patterns(self) -> list[dict[str, Any]]:
        if not self.filter_criteria:
            return []
        return [filters.parse_pattern(f.get("Pattern")) for f in self.filter_criteria.get("Filters", [])]

    def to_record(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> EventSourceMapping:
        return cls(**record)

    def to_api(self, region: Region) -> dict[str, Any]:
        out: dict[str, Any] = {
            "UUID": self.uuid,
            "BatchSize": self.batch_size,
            "MaximumBatchingWindowInSeconds": self.maximum_batching_window_s,
            "EventSourceArn": self.event_source_arn,
            "EventSourceMappingArn": f"arn:aws:lambda:{region.region}:{region.account_id}:"
                                     f"event-source-mapping:{self.uuid}",
            "FunctionArn": region.function_arn(self.function_name, self.qualifier),
            "FunctionResponseTypes": list(self.function_response_types),
            "LastModified": self.last_modified,
            "State": self.state,
            "StateTransitionReason": self.state_transition_reason,
        }
        if self.filter_criteria:
            out["FilterCriteria"] = self.filter_criteria
        if self.scaling_config:
            out["ScalingConfig"] = self.scaling_config
        if self.source == "mq":
            out["Queues"] = list(self.queues)
            out["SourceAccessConfigurations"] = list(self.source_access_configurations)
        return out


class EventSourceMappings:
    def __init__(self, store: MappingStore, functions: FunctionRegistry, queues: QueueRegistry,
                 invoker: Invoker, region: Region, limits: Limits,
                 brokers: dict[str, str] | None = None, secrets: Secrets | None = None) -> None:
        self.store = store
        self.functions = functions
        self.queues = queues
        self.invoker = invoker
        self.region = region
        self.limits = limits
        # RabbitMQ brokers this server may read: broker name -> amqp:// URL.
        self.brokers = brokers or {}
        self.secrets = secrets
        self._pollers: dict[str, Poller] = {}
        # Each mapping's counters since this server started (across its pollers).
        self._stats: dict[str, PollerStats] = {}
        # State changes under way (start, stop), one at a time per mapping.
        self._changes: dict[str, asyncio.Task[None]] = {}
        self._started = False

    # -- the API ----------------------------------------------------------------

    def _function(self, function_name: str) -> tuple[str, str | None]:
        try:
            ref = parse_function_ref(function_name, self.region)
        except LambdaError:
            raise InvalidParameterValueException("Function does not exist") from None
        if self.functions.load_version(ref.name, "$LATEST") is None:
            raise InvalidParameterValueException("Function does not exist")
        return ref.name, ref.qualifier

    def _source(self, arn: str | None) -> str:
        if not arn:
            raise InvalidParameterValueException("Unrecognized event source.")
        if self.region.queue_name(arn) is not None:
            return "sqs"
        if _MQ_ARN.match(arn):
            return "mq"
        raise InvalidParameterValueException("Unrecognized event source.")

    def _check(self, params: dict[str, Any], source: str) -> None:
        for name in _STREAM_ONLY:
            if params.get(name) is not None:
                raise InvalidParameterValueException(
                    f"Unsupported {name} parameter for given event source mapping type.")
        if params.get("DestinationConfig"):
            raise InvalidParameterValueException(
                "Unsupported DestinationConfig parameter for given event source mapping type.")
        criteria = params.get("FilterCriteria")
        if criteria is not None:
            found = criteria.get("Filters") or []
            if len(found) > self.limits.max_mapping_filters:
                raise InvalidParameterValueException(
                    f"The number of filters ({len(found)}) exceeds the maximum of "
                    f"{self.limits.max_mapping_filters} for FilterCriteria.")
            for item in found:
                filters.parse_pattern(item.get("Pattern"))
        types = params.get("FunctionResponseTypes")
        if types and source != "sqs":
            raise InvalidParameterValueException(
                "Unsupported FunctionResponseTypes parameter for given event source mapping type.")

    def _batch(self, source: str, batch_size: int | None, window: int | None) -> tuple[int, int]:
        limits = self.limits
        default = limits.sqs_default_batch_size if source == "sqs" else limits.mq_default_batch_size
        size = default if batch_size is None else batch_size
        high = limits.sqs_max_batch_size if source == "sqs" else limits.mq_max_batch_size
        if not 1 <= size <= high:
            raise InvalidParameterValueException(
                f"BatchSize must be between 1 and {high} for this event source, found {size}.")
        if window is None:
            window = 0
        if source == "sqs" and size > 10 and window == 0:
            raise InvalidParameterValueException(
                "Maximum batch window in seconds must be greater than 0 if maximum batch size "
                "is greater than 10")
        return size, window

    def _mq(self, params: dict[str, Any], arn: str) -> None:
        match = _MQ_ARN.match(arn)
        assert match is not None
        if match.group("name") not in self.brokers:
            raise InvalidParameterValueException(
                f"The broker {arn} does not exist. Configure it in LAMINA_MQ_BROKERS.")
        queues = params.get("Queues") or []
        if len(queues) != 1:
            raise InvalidParameterValueException(
                "Queues must contain exactly one queue name for an Amazon MQ event source.")
        access = params.get("SourceAccessConfigurations") or []
        if not any(a.get("Type") == "BASIC_AUTH" for a in access):
            raise InvalidParameterValueException(
                "Required 'sourceAccessConfigurations' parameter is missing.")

    def create(self, params: dict[str, Any]) -> EventSourceMapping:
        arn = params.get("EventSourceArn")
        source = self._source(arn)
        assert arn is not None
        self._check(params, source)
        name, qualifier = self._function(params["FunctionName"])
        if source == "sqs":
            try:
                self.queues.queue_for_arn(arn)
            except LambdaError:
                raise InvalidParameterValueException(
                    "Error occurred while ReceiveMessage. SQS Error Code: "
                    "AWS.SimpleQueueService.NonExistentQueue. SQS Error Message: The specified "
                    "queue does not exist.") from None
            for existing in self._all():
                if existing.event_source_arn == arn and existing.function_name == name \
                        and existing.qualifier == qualifier:
                    raise ResourceConflictException(
                        f'An event source mapping with SQS arn (" {arn} ") and function '
                        f'(" {name} ") already exists. Please update or delete the existing '
                        f"mapping with UUID {existing.uuid}")
        else:
            self._mq(params, arn)
        size, window = self._batch(source, params.get("BatchSize"),
                                   params.get("MaximumBatchingWindowInSeconds"))
        mapping = EventSourceMapping(
            uuid=str(uuid_module.uuid4()),
            function_name=name,
            qualifier=qualifier,
            event_source_arn=arn,
            source=source,
            batch_size=size,
            maximum_batching_window_s=window,
            enabled=params.get("Enabled", True),
            state="Creating",
            last_modified=_now(),
            filter_criteria=params.get("FilterCriteria") or None,
            function_response_types=list(params.get("FunctionResponseTypes") or []),
            scaling_config=params.get("ScalingConfig") or None,
            queues=list(params.get("Queues") or []),
            source_access_configurations=list(params.get("SourceAccessConfigurations") or []),
        )
        self._save(mapping)
        self._settle(mapping.uuid)
        return mapping

    def get(self, uuid: str) -> EventSourceMapping:
        record = self.store.get(uuid)
        if record is None:
            raise ResourceNotFoundException(RESOURCE_MISSING)
        return EventSourceMapping.from_record(record)

    def update(self, uuid: str, params: dict[str, Any]) -> EventSourceMapping:
        mapping = self.get(uuid)
        if mapping.state in ("Creating", "Updating", "Deleting", "Enabling", "Disabling"):
            raise _in_use(mapping)
        self._check(params, mapping.source)
        if params.get("FunctionName"):
            mapping.function_name, mapping.qualifier = self._function(params["FunctionName"])
        size = params.get("BatchSize", mapping.batch_size)
        window = params.get("MaximumBatchingWindowInSeconds", mapping.maximum_batching_window_s)
        mapping.batch_size, mapping.maximum_batching_window_s = self._batch(
            mapping.source, size, window)
        if "FilterCriteria" in params:
            mapping.filter_criteria = params["FilterCriteria"] or None
        if "FunctionResponseTypes" in params:
            mapping.function_response_types = list(params["FunctionResponseTypes"] or [])
        if "ScalingConfig" in params:
            mapping.scaling_config = params["ScalingConfig"] or None
        if "SourceAccessConfigurations" in params and mapping.source == "mq":
            mapping.source_access_configurations = list(params["SourceAccessConfigurations"])
        if "Enabled" in params and params["Enabled"] != mapping.enabled:
            mapping.enabled = params["Enabled"]
            mapping.state = "Enabling" if mapping.enabled else "Disabling"
        else:
            mapping.state = "Updating"
        mapping.last_modified = _now()
        self._save(mapping)
        self._settle(uuid)
        return mapping

    def delete(self, uuid: str) -> EventSourceMapping:
        mapping = self.get(uuid)
        if mapping.state in ("Creating", "Updating", "Deleting", "Enabling", "Disabling"):
            raise _in_use(mapping)
        mapping.state = "Deleting"
        self._save(mapping)
        self._settle(uuid)
        return mapping

    def list_mappings(self, function_name: str | None, event_source_arn: str | None,
             marker: str | None, max_items: int | None) -> tuple[list[EventSourceMapping], str | None]:
        name = None
        if function_name:
            name = parse_function_ref(function_name, self.region).name
        found = [m for m in self._all()
                 if (name is None or m.function_name == name)
                 and (event_source_arn is None or m.event_source_arn == event_source_arn)]
        start = 0
        if marker:
            uuids = [m.uuid for m in found]
            if marker not in uuids:
                raise InvalidParameterValueException("Invalid marker.")
            start = uuids.index(marker)
        limit = max_items or 100
        page = found[start:start + limit]
        next_marker = found[start + limit].uuid if len(found) > start + limit else None
        return page, next_marker

    def stats(self, uuid: str) -> dict[str, int]:
        return self._stats.get(uuid, PollerStats()).as_dict()

    # -- pollers ------------------------------------------------------------------

    def _all(self) -> list[EventSourceMapping]:
        return [EventSourceMapping.from_record(r) for r in self.store.all()]

    def _save(self, mapping: EventSourceMapping) -> None:
        self.store.put(mapping.uuid, mapping.function_name, mapping.event_source_arn,
                       mapping.to_record())

    def _settle(self, uuid: str) -> None:
        """Carry a state change out after the API call has answered."""
        if not self._started:
            return
        previous = self._changes.get(uuid)
        task = asyncio.get_running_loop().create_task(self._transition(uuid, previous))
        self._changes[uuid] = task
        task.add_done_callback(lambda t: self._changes.pop(uuid, None) if self._changes.get(uuid) is t else None)

    async def _transition(self, uuid: str, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        try:
            record = self.store.get(uuid)
            if record is None:
                return
            mapping = EventSourceMapping.from_record(record)
            poller = self._pollers.pop(uuid, None)
            if poller is not None:
                await poller.stop()
            if mapping.state == "Deleting":
                self.store.delete(uuid)
                self._stats.pop(uuid, None)
                return
            if mapping.enabled:
                poller = self._poller(mapping)
                poller.start()
                self._pollers[uuid] = poller
            mapping.state = "Enabled" if mapping.enabled else "Disabled"
            self._save(mapping)
        except Exception:
            log.exception("event source mapping %s: state change failed", uuid)

    def _poller(self, mapping: EventSourceMapping) -> Poller:
        limits = self.limits
        scaling = mapping.scaling_config or {}
        stats = self._stats.setdefault(mapping.uuid, PollerStats())
        if mapping.source == "mq":
            broker = _MQ_ARN.match(mapping.event_source_arn)
            assert broker is not None
            return RabbitMqPoller(mapping, self.brokers[broker.group("name")], self.secrets,
                                  self._invoke, self.region, stats=stats)
        return SqsPoller(
            mapping, self.queues, self._invoke, self.region.region,
            max_pollers=int(scaling.get("MaximumConcurrency") or limits.sqs_mapping_max_pollers),
            # Room for one more receive of the largest messages after the last check.
            max_payload_bytes=limits.max_sync_payload_bytes
            - limits.max_receive_messages * limits.max_message_bytes,
            stats=stats,
        )

    async def _invoke(self, mapping: EventSourceMapping, payload: bytes) -> tuple[str | None, bytes]:
        result = await self.invoker.invoke(InvocationRequest(
            function_name=mapping.function_name, qualifier=mapping.qualifier, payload=payload))
        return result.function_error, result.payload

    async def start(self) -> None:
        self._started = True
        for mapping in self._all():
            if mapping.state == "Deleting":
                self.store.delete(mapping.uuid)
                continue
            if mapping.state in ("Creating", "Updating", "Enabling", "Disabling") or mapping.enabled:
                self._settle(mapping.uuid)

    async def stop(self) -> None:
        self._started = False
        changes = list(self._changes.values())
        await asyncio.gather(*changes, return_exceptions=True)
        pollers = list(self._pollers.values())
        self._pollers.clear()
        await asyncio.gather(*(p.stop() for p in pollers), return_exceptions=True)


def _in_use(mapping: EventSourceMapping) -> ResourceInUseException:
    """A mapping in the middle of a state change takes no other."""
    return ResourceInUseException(
        "Cannot update the event source mapping because it is in use. Current state: "
        f"{mapping.state}")


def _now() -> float:
    return datetime.datetime.now(datetime.timezone.utc).timestamp()
