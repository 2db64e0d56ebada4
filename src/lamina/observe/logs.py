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
from typing import IO, Iterator
from urllib.parse import quote, unquote


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

    def group_infos(self, prefix: str = "") -> list[GroupInfo]:
        found = []
        for name in self.groups():
            if name.startswith(prefix):
                directory = self._group_dir(name)
                size = sum(p.stat().st_size for p in directory.glob("*.jsonl"))
                found.append(GroupInfo(name, int(directory.stat().st_ctime * 1000), size))
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

