"""Per-function counters, named after Lambda's CloudWatch metrics.

Plain integers updated in place on the invocation path (a dict lookup and an
addition), so keeping them costs nothing measurable; exporters (Prometheus,
the CLI) read `snapshot()`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class FunctionMetrics:
    # Invocations that ran (success or function error); throttles are not counted,
    # as on Lambda.
    invocations: int = 0
    # Calls refused with 429 TooManyRequestsException.
    throttles: int = 0
    # Invocations that ended in a function error (FunctionError set).
    errors: int = 0
    # Executions in flight now (Lambda's ConcurrentExecutions); the concurrency
    # counter in invoke/ keeps it, so there is one number, not two.
    concurrent_executions: int = 0
    # Asynchronous invocation, as Lambda names them: events queued; events given up
    # (retries exhausted, too old, function deleted; after their DLQ/OnFailure
    # delivery); dead letters and destination records that could not be delivered.
    async_events_received: int = 0
    async_events_dropped: int = 0
    dead_letter_errors: int = 0
    destination_delivery_failures: int = 0


class Metrics:
    def __init__(self) -> None:
        self._functions: dict[str, FunctionMetrics] = {}

    def function(self, name: str) -> FunctionMetrics:
        found = self._functions.get(name)
        if found is None:
            found = self._functions[name] = FunctionMetrics()
        return found

    def snapshot(self) -> dict[str, FunctionMetrics]:
        """A copy of every function's counters."""
        return {name: dataclasses.replace(m) for name, m in self._functions.items()}
