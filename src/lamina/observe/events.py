"""Typed lifecycle events: what an execution environment reports about itself.

An environment says what happened (INIT started, the runtime finished an
invocation, the invocation's accounting closed, the environment shut down) as
these records, once. Everything that shows it reads them: the START/END/REPORT
lines of the log stream (observe/logs.py), their JSON form under
`LoggingConfig.LogFormat=JSON`, the Telemetry and Logs APIs' platform stream
(environments/telemetry_api.py). Nothing parses a log line to learn what happened.

The JSON shapes (`to_record`) are the Telemetry API's schema 2022-12-13, which is
also what Lambda writes as system log lines in JSON format.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Union


def now_ms() -> int:
    return int(time.time() * 1000)


def iso_time(timestamp_ms: int) -> str:
    """Lambda's event time: UTC, millisecond precision, `Z`."""
    seconds, millis = divmod(timestamp_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _round(ms: float) -> float:
    return round(ms, 3)


@dataclass(frozen=True)
class InitStart:
    initialization_type: str
    function_name: str
    function_version: str
    runtime_version: str
    timestamp_ms: int = field(default_factory=now_ms)
    phase: str = "init"
    type = "platform.initStart"

    def to_record(self) -> dict[str, Any]:
        return {"initializationType": self.initialization_type, "phase": self.phase,
                "runtimeVersion": self.runtime_version,
                "functionName": self.function_name, "functionVersion": self.function_version}


@dataclass(frozen=True)
class InitRuntimeDone:
    """The runtime (and every extension) asked for the first event, or INIT failed."""

    initialization_type: str
    status: str  # success | error | failure
    error_type: str | None = None
    timestamp_ms: int = field(default_factory=now_ms)
    phase: str = "init"
    type = "platform.initRuntimeDone"

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"initializationType": self.initialization_type,
                                  "phase": self.phase, "status": self.status}
        if self.error_type:
            record["errorType"] = self.error_type
        return record


@dataclass(frozen=True)
class InitReport:
    """INIT is over: its duration, and how long each part of it took."""

    initialization_type: str
    status: str
    duration_ms: float
    # Until every external extension had registered (0 without any).
    extensions_ms: float = 0.0
    error_type: str | None = None
    timestamp_ms: int = field(default_factory=now_ms)
    phase: str = "init"
    type = "platform.initReport"

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"initializationType": self.initialization_type,
                                  "phase": self.phase, "status": self.status,
                                  "metrics": {"durationMs": _round(self.duration_ms)}}
        if self.error_type:
            record["errorType"] = self.error_type
        return record


@dataclass(frozen=True)
class RestoreStart:
    """A SnapStart environment is being restored from its version's snapshot (on
    Lambda in place of initStart: the version's INIT ran when it was published)."""

    function_name: str
    function_version: str
    runtime_version: str
    instance_id: str
    instance_max_memory: int
    timestamp_ms: int = field(default_factory=now_ms)
    type = "platform.restoreStart"

    def to_record(self) -> dict[str, Any]:
        return {"runtimeVersion": self.runtime_version, "functionName": self.function_name,
                "functionVersion": self.function_version, "instanceId": self.instance_id,
                "instanceMaxMemory": self.instance_max_memory}


@dataclass(frozen=True)
class RestoreRuntimeDone:
    """The restored runtime ran its after-restore hooks and asked for an event, or
    the restore failed."""

    status: str  # success | error | failure | timeout
    error_type: str | None = None
    timestamp_ms: int = field(default_factory=now_ms)
    type = "platform.restoreRuntimeDone"

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"status": self.status}
        if self.error_type:
            record["errorType"] = self.error_type
        return record


@dataclass(frozen=True)
class RestoreReport:
    status: str
    duration_ms: float
    error_type: str | None = None
    timestamp_ms: int = field(default_factory=now_ms)
    type = "platform.restoreReport"

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"status": self.status,
                                  "metrics": {"durationMs": _round(self.duration_ms)}}
        if self.error_type:
            record["errorType"] = self.error_type
        return record


@dataclass(frozen=True)
class Tracing:
    value: str

    def to_record(self) -> dict[str, Any]:
        return {"type": "X-Amzn-Trace-Id", "value": self.value}


@dataclass(frozen=True)
class InvokeStart:
    request_id: str
    version: str
    trace_id: str
    timestamp_ms: int = field(default_factory=now_ms)
    # The caller's segment (the Parent of the header it sent), which the
    # invocation's span is a child of; not in the record.
    parent_id: str | None = None
    type = "platform.start"

    def to_record(self) -> dict[str, Any]:
        return {"requestId": self.request_id, "version": self.version,
                "tracing": Tracing(self.trace_id).to_record()}


@dataclass(frozen=True)
class RuntimeDone:
    """The runtime answered the invocation (or failed to): the function's own time,
    before any extension's post-invoke work."""

    request_id: str
    status: str  # success | error | failure | timeout
    duration_ms: float
    produced_bytes: int
    trace_id: str
    error_type: str | None = None
    timestamp_ms: int = field(default_factory=now_ms)
    type = "platform.runtimeDone"

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "requestId": self.request_id, "status": self.status,
            "metrics": {"durationMs": _round(self.duration_ms),
                        "producedBytes": self.produced_bytes},
            "tracing": Tracing(self.trace_id).to_record(),
        }
        if self.error_type:
            record["errorType"] = self.error_type
        return record


@dataclass(frozen=True)
class InvokeReport:
    """The invocation's accounting, closed when the runtime and every extension
    subscribed to INVOKE are done: what REPORT says and what is billed."""

    request_id: str
    status: str  # success | error | failure | timeout
    duration_ms: float
    billed_duration_ms: int
    memory_size_mb: int
    max_memory_used_mb: int
    trace_id: str
    init_duration_ms: float | None = None
    error_type: str | None = None
    timestamp_ms: int = field(default_factory=now_ms)
    # The ARN the call named (its qualifier is the metrics' Resource); not in the record.
    invoked_function_arn: str = ""
    # SnapStart: the first invocation of a restored environment reports its restore
    # (from the fork to the runtime's first request for work) and the part billed
    # (the runtime's own: after-restore hooks), instead of an Init Duration.
    restore_duration_ms: float | None = None
    billed_restore_duration_ms: int | None = None
    type = "platform.report"

    def to_record(self) -> dict[str, Any]:
        metrics: dict[str, Any] = {
            "durationMs": _round(self.duration_ms), "billedDurationMs": self.billed_duration_ms,
            "memorySizeMB": self.memory_size_mb, "maxMemoryUsedMB": self.max_memory_used_mb,
        }
        if self.init_duration_ms is not None:
            metrics["initDurationMs"] = _round(self.init_duration_ms)
        if self.restore_duration_ms is not None:
            metrics["restoreDurationMs"] = _round(self.restore_duration_ms)
            metrics["billedRestoreDurationMs"] = self.billed_restore_duration_ms
        record: dict[str, Any] = {"requestId": self.request_id, "metrics": metrics,
                                  "tracing": Tracing(self.trace_id).to_record(),
                                  "status": self.status}
        if self.error_type:
            record["errorType"] = self.error_type
        return record


@dataclass(frozen=True)
class ExtensionRegistered:
    name: str
    events: tuple[str, ...]
    state: str = "Ready"
    timestamp_ms: int = field(default_factory=now_ms)
    type = "platform.extension"

    def to_record(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "events": list(self.events)}


@dataclass(frozen=True)
class TelemetrySubscribed:
    name: str
    types: tuple[str, ...]
    timestamp_ms: int = field(default_factory=now_ms)
    type = "platform.telemetrySubscription"

    def to_record(self) -> dict[str, Any]:
        return {"name": self.name, "state": "Subscribed", "types": list(self.types)}


@dataclass(frozen=True)
class Shutdown:
    reason: str  # spindown | timeout | failure
    timestamp_ms: int = field(default_factory=now_ms)
    type = "platform.shutdown"

    def to_record(self) -> dict[str, Any]:
        return {"shutdownReason": self.reason}


@dataclass(frozen=True)
class FunctionLog:
    """One log record of the function (runtime and handler), a whole record even
    when it spans lines: a traceback is one event."""

    message: str
    timestamp_ms: int = field(default_factory=now_ms)
    type = "function"


@dataclass(frozen=True)
class ExtensionLog:
    """One line an external extension wrote."""

    message: str
    timestamp_ms: int = field(default_factory=now_ms)
    type = "extension"


@dataclass(frozen=True)
class TraceSegment:
    """A datagram the function sent to its X-Ray daemon address (the X-Ray SDK's or
    Powertools Tracer's segments); observe/tracing.py reads it. Not telemetry."""

    data: bytes
    timestamp_ms: int = field(default_factory=now_ms)
    type = "xray.segment"


PlatformEvent = Union[InitStart, InitRuntimeDone, InitReport, RestoreStart, RestoreRuntimeDone,
                      RestoreReport, InvokeStart, RuntimeDone, InvokeReport, ExtensionRegistered,
                      TelemetrySubscribed, Shutdown]
LifecycleEvent = Union[PlatformEvent, FunctionLog, ExtensionLog, TraceSegment]
# Something that consumes lifecycle events (a log stream writer, a telemetry
# subscription); called on the event loop, must not block.
LifecycleListener = Callable[[LifecycleEvent], None]


def telemetry_json(event: PlatformEvent) -> dict[str, Any]:
    """The Telemetry API's (and JSON system log's) form of a platform event."""
    return {"time": iso_time(event.timestamp_ms), "type": event.type, "record": event.to_record()}
