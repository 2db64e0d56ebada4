"""Log groups and streams, persisted as one JSON-lines file per stream.

Lambda sends each line a function prints, plus the platform's START/END/REPORT
lines, to the stream of the environment that ran it, in the group
`/aws/lambda/NAME`. Files keep the write path cheap (one buffered append per line,
one flush per invocation) and survive restarts.
"""

from __future__ import annotations

import json
import os
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

    def events(self, group: str, stream: str | None = None, start_ms: int = 0) -> Iterator[LogEvent]:
        """Events of one stream, or of every stream of the group merged by time."""
        names = [stream] if stream else self.streams(group)
        found: list[LogEvent] = []
        for name in names:
            path = self._group_dir(group) / (quote(name, safe="") + ".jsonl")
            if not path.exists():
                continue
            with open(path, encoding="utf-8") as lines:
                for line in lines:
                    try:
                        timestamp, message = json.loads(line)
                    except ValueError:
                        continue  # a torn last line after a crash
                    if timestamp >= start_ms:
                        found.append(LogEvent(timestamp, message, name))
        found.sort(key=lambda e: e.timestamp_ms)
        return iter(found)

    def delete_group(self, group: str) -> None:
        directory = self._group_dir(group)
        if directory.is_dir():
            for path in directory.iterdir():
                os.unlink(path)
            directory.rmdir()
