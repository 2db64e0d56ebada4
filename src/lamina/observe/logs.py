"""Log groups and streams, persisted as one JSON-lines file per stream.

Lambda sends each line a function prints, plus the platform's START/END/REPORT
lines, to the stream of the environment that ran it, in the group
`/aws/lambda/NAME`. Files keep the write path cheap (one buffered append per line,
one flush per invocation) and survive restarts.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator
from urllib.parse import quote, unquote

from lamina.observe.events import (
    ExtensionLog,
    ExtensionRegistered,
    FunctionLog,
    InitReport,
    InvokeReport,
    InvokeStart,
    LifecycleEvent,
    PlatformEvent,
    RestoreReport,
    RestoreStart,
    TelemetrySubscribed,
    TraceSegment,
    telemetry_json,
)


@dataclass(frozen=True)
class LogEvent:
    timestamp_ms: int
    message: str
    stream: str
    # Unique within the group: the stream and the event's line in it.
    event_id: str = ""


@dataclass(frozen=True)
class StreamInfo:
    name: str
    created_ms: int
    first_event_ms: int | None
    last_event_ms: int | None
    stored_bytes: int


@dataclass(frozen=True)
class GroupInfo:
    name: str
    created_ms: int
    stored_bytes: int
    retention_days: int | None = None


def matches_filter(message: str, pattern: str | None) -> bool:
    """CloudWatch Logs' plain-text filter: every term (or "quoted phrase") appears."""
    if not pattern or not pattern.strip():
        return True
    terms = shlex.split(pattern) if pattern.count('"') % 2 == 0 else pattern.split()
    return all(term in message for term in terms)


def now_ms() -> int:
    return int(time.time() * 1000)


class LogStream:
    def __init__(self, path: Path, name: str) -> None:
        self.name = name
        self._file: IO[str] | None = open(path, "a", encoding="utf-8")

    def write(self, message: str, timestamp_ms: int | None = None) -> None:
        if self._file is not None:
            self._file.write(json.dumps([timestamp_ms or now_ms(), message]) + "\n")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class LogStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _group_dir(self, group: str) -> Path:
        return self.root / quote(group, safe="")

    def open_stream(self, group: str, stream: str) -> LogStream:
        directory = self._group_dir(group)
        directory.mkdir(parents=True, exist_ok=True)
        return LogStream(directory / (quote(stream, safe="") + ".jsonl"), stream)

    def groups(self) -> list[str]:
        return sorted(unquote(p.name) for p in self.root.iterdir() if p.is_dir())

    def streams(self, group: str) -> list[str]:
        """Stream names, oldest first by last write."""
        directory = self._group_dir(group)
        if not directory.is_dir():
            return []
        files = sorted(directory.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
        return [unquote(p.name[: -len(".jsonl")]) for p in files]

    def _stream_path(self, group: str, stream: str) -> Path:
        return self._group_dir(group) / (quote(stream, safe="") + ".jsonl")

    def has_group(self, group: str) -> bool:
        return self._group_dir(group).is_dir()

    # -- retention (PutRetentionPolicy) ------------------------------------------------

    def _retention_path(self, group: str) -> Path:
        # Beside the streams, under a name no stream file can have (they end .jsonl).
        return self._group_dir(group) / "retention"

    def retention_days(self, group: str) -> int | None:
        try:
            return int(self._retention_path(group).read_text())
        except (OSError, ValueError):
            return None

    def set_retention(self, group: str, days: int | None) -> None:
        path = self._retention_path(group)
        if days is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(str(days))
            self.expire(group)

    def expire(self, group: str) -> None:
        """Apply the group's retention: streams with nothing newer than it go whole
        (readers skip older events of the others)."""
        days = self.retention_days(group)
        if days is None:
            return
        cutoff = time.time() - days * 86400
        for path in self._group_dir(group).glob("*.jsonl"):
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)

    def _cutoff_ms(self, group: str) -> int:
        """The oldest time a read may return; streams wholly older are removed here,
        so expiry needs no timer of its own."""
        days = self.retention_days(group)
        if days is None:
            return 0
        self.expire(group)
        return now_ms() - days * 86_400_000

    def group_infos(self, prefix: str = "") -> list[GroupInfo]:
        found = []
        for name in self.groups():
            if name.startswith(prefix):
                directory = self._group_dir(name)
                size = sum(p.stat().st_size for p in directory.glob("*.jsonl"))
                found.append(GroupInfo(name, int(directory.stat().st_ctime * 1000), size,
                                       self.retention_days(name)))
        return found

    def stream_infos(self, group: str, prefix: str = "") -> list[StreamInfo]:
        """Streams of a group, oldest last write first."""
        found = []
        for name in self.streams(group):
            if not name.startswith(prefix):
                continue
            path = self._stream_path(group, name)
            stat = path.stat()
            first = None
            with open(path, encoding="utf-8") as lines:
                try:
                    first = json.loads(lines.readline())[0]
                except (ValueError, IndexError):
                    pass
            found.append(StreamInfo(name, int(stat.st_ctime * 1000), first,
                                    int(stat.st_mtime * 1000) if first is not None else None,
                                    stat.st_size))
        return found

    def events(self, group: str, streams: list[str] | None = None, start_ms: int = 0,
               end_ms: int | None = None, pattern: str | None = None) -> Iterator[LogEvent]:
        """Events of the given streams (default: all of the group), merged by time."""
        names = streams if streams is not None else self.streams(group)
        start_ms = max(start_ms, self._cutoff_ms(group))
        found: list[LogEvent] = []
        for name in names:
            path = self._stream_path(group, name)
            if not path.exists():
                continue
            with open(path, encoding="utf-8") as lines:
                for number, line in enumerate(lines):
                    try:
                        timestamp, message = json.loads(line)
                    except ValueError:
                        continue  # a torn last line after a crash
                    if timestamp < start_ms or (end_ms is not None and timestamp >= end_ms):
                        continue
                    if matches_filter(message, pattern):
                        found.append(LogEvent(timestamp, message, name, f"{name}/{number}"))
        found.sort(key=lambda e: e.timestamp_ms)
        return iter(found)


# -- the platform's own lines, from lifecycle events --------------------------------

# Where Lambda puts each system event under SystemLogLevel (its "event mapping for
# system log levels"): start and report at INFO, the runtime's own milestones at
# DEBUG; an event reporting a failure counts as WARN.
_SYSTEM_LEVELS = {"platform.initRuntimeDone": "DEBUG", "platform.runtimeDone": "DEBUG",
                  "platform.restoreRuntimeDone": "DEBUG",
                  "platform.logsDropped": "WARN"}
LEVEL_ORDER = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")


def level_at_least(level: str, threshold: str) -> bool:
    """Whether a record of `level` passes a filter set to `threshold`."""
    rank = {name: index for index, name in enumerate(LEVEL_ORDER)}
    return rank.get(level.upper(), rank["INFO"]) >= rank.get(threshold.upper(), rank["INFO"])


def application_level_of(record: str) -> str:
    """A function record's level as Lambda's filter sees it: the "level" of a JSON
    record; INFO for anything else."""
    if record.startswith("{"):
        try:
            level = json.loads(record).get("level")
        except (ValueError, AttributeError, RecursionError):
            return "INFO"
        if isinstance(level, str):
            # Python's names for two of them (its runtime writes record.levelname).
            level = {"WARNING": "WARN", "CRITICAL": "FATAL"}.get(level.upper(), level.upper())
            if level in LEVEL_ORDER:
                return level
    return "INFO"


def _system_level(event: PlatformEvent) -> str:
    if getattr(event, "status", "success") != "success":
        return "WARN"
    return _SYSTEM_LEVELS.get(event.type, "INFO")


def text_lines(event: PlatformEvent) -> list[str]:
    """The plain-text system lines Lambda writes for an event (most write none)."""
    if isinstance(event, InvokeStart):
        return [f"START RequestId: {event.request_id} Version: {event.version}"]
    if isinstance(event, InvokeReport):
        report = (f"REPORT RequestId: {event.request_id}\tDuration: {event.duration_ms:.2f} ms\t"
                  f"Billed Duration: {event.billed_duration_ms} ms\t"
                  f"Memory Size: {event.memory_size_mb} MB\t"
                  f"Max Memory Used: {event.max_memory_used_mb} MB")
        if event.init_duration_ms is not None:
            report += f"\tInit Duration: {event.init_duration_ms:.2f} ms"
        if event.restore_duration_ms is not None:
            report += (f"\tRestore Duration: {event.restore_duration_ms:.2f} ms"
                       f"\tBilled Restore Duration: {event.billed_restore_duration_ms} ms")
        # A function's own error is no platform failure: REPORT says nothing of it.
        if event.status == "timeout":
            report += "\tStatus: timeout"
        elif event.status == "failure":
            report += "\tStatus: error"
            if event.error_type:
                report += f"\tError Type: {event.error_type}"
        return [f"END RequestId: {event.request_id}", report]
    if isinstance(event, InitReport) and event.status != "success":
        return [f"INIT_REPORT Init Duration: {event.duration_ms:.2f} ms\tPhase: init\t"
                f"Status: error\tError Type: {event.error_type}"]
    if isinstance(event, RestoreStart):
        return [f"RESTORE_START Runtime Version: {event.runtime_version}"]
    if isinstance(event, RestoreReport):
        line = f"RESTORE_REPORT Restore Duration: {event.duration_ms:.2f} ms"
        if event.status != "success":
            line += f"\tStatus: {event.status}\tError Type: {event.error_type}"
        return [line]
    if isinstance(event, TelemetrySubscribed):
        return [f"TELEMETRY\tName: {event.name}\tState: Subscribed\t"
                f"Types: [{','.join(t.capitalize() for t in event.types)}]"]
    if isinstance(event, ExtensionRegistered):
        return [f"EXTENSION\tName: {event.name}\tState: {event.state}\t"
                f"Events: [{','.join(event.events)}]"]
    return []


# What Lambda writes in JSON format: the Telemetry API's records, one per line.
_JSON_SYSTEM_TYPES = frozenset({"platform.initStart", "platform.initRuntimeDone",
                                "platform.initReport", "platform.restoreStart",
                                "platform.restoreRuntimeDone", "platform.restoreReport",
                                "platform.start",
                                "platform.runtimeDone", "platform.report",
                                "platform.extension", "platform.telemetrySubscription",
                                "platform.logsDropped"})


@dataclass(frozen=True)
class LoggingSettings:
    """A function's LoggingConfig as the environment applies it."""

    log_format: str = "Text"  # Text | JSON
    application_log_level: str | None = None
    system_log_level: str | None = None


class SystemLogWriter:
    """Turns an environment's lifecycle events into the lines of its log stream:
    START/END/REPORT in Text format, Telemetry-shaped records in JSON format
    (filtered by SystemLogLevel), and the function's own records as they come."""

    def __init__(self, stream: LogStream, settings: LoggingSettings) -> None:
        self._stream = stream
        self._settings = settings
        # Lines written for the current invocation, for LogResult (its last 4 KB).
        self.sink: Callable[[str], None] | None = None

    def __call__(self, event: LifecycleEvent) -> None:
        if isinstance(event, (FunctionLog, ExtensionLog)):
            self._write(event.message, event.timestamp_ms)
            return
        if isinstance(event, TraceSegment):
            return  # the function's X-Ray documents: spans, not log lines
        if self._settings.log_format == "JSON":
            threshold = self._settings.system_log_level or "INFO"
            if event.type in _JSON_SYSTEM_TYPES and level_at_least(_system_level(event), threshold):
                self._write(json.dumps(telemetry_json(event), separators=(",", ":")),
                            event.timestamp_ms)
            return
        for line in text_lines(event):
            self._write(line, event.timestamp_ms)

    def _write(self, message: str, timestamp_ms: int) -> None:
        self._stream.write(message, timestamp_ms)
        if self.sink is not None:
            self.sink(message)
