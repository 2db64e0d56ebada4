"""An invocation's accounting: what REPORT says, what is billed, what LogResult shows.

Kept apart from the lifecycle (environment.py) the way the runtime interface
emulator keeps its metrics apart from its states: these are facts computed from
what happened, never a reason for anything to happen.
"""

from __future__ import annotations

import json
import math

from lamina.sandbox.base import ResourceUsage

# Lambda's LogResult is the last 4 KB of the invocation's log.
LOG_TAIL_BYTES = 4096
# An invocation's outcome as the Telemetry API's records say it.
EVENT_STATUS = {"success": "success", "error": "error", "timeout": "timeout",
                "crash": "failure", "init_error": "failure"}


def billed_duration_ms(duration_ms: float, init_duration_ms: float | None) -> int:
    """Rounded up to the millisecond; since August 2025 Lambda bills the INIT phase of
    on-demand functions too (init_duration_ms is None for the others)."""
    return math.ceil(duration_ms + (init_duration_ms or 0))


def max_memory_used_mb(usage: ResourceUsage | None) -> int:
    if usage is None:
        return 0
    return math.ceil((usage.max_memory_bytes or 0) / 1048576)


def error_type_of(payload: bytes) -> str | None:
    """The errorType of an error payload (any shape a runtime sends)."""
    try:
        found = json.loads(payload).get("errorType")
    except (ValueError, AttributeError, RecursionError):
        return None
    return found if isinstance(found, str) else None


class LogTail:
    """The lines of one invocation's log, kept to a little more than LogResult needs."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.size = 0

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.size += len(line) + 1
        while self.size > 2 * LOG_TAIL_BYTES and len(self.lines) > 1:
            self.size -= len(self.lines.pop(0)) + 1

    def take(self, other: LogTail) -> None:
        """Put `other`'s lines first (INIT's output belongs to the first invocation)."""
        for line in other.lines:
            self.add(line)
        other.lines, other.size = [], 0

    def text(self) -> str:
        """The last 4 KB, as LogResult carries them."""
        tail = ("\n".join(self.lines) + "\n").encode()[-LOG_TAIL_BYTES:]
        return tail.decode("utf-8", "ignore")
