"""What the console's charts and the function list show, read in one place.

`read_aggregates` is the only reader: it reads the CloudWatch metric data the
metrics model writes to the store (observe/metric_archive.py), after writing out
the minutes not yet stored, so the charts show what GetMetricData shows, across
restarts and with the store's retention.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

from lamina.observe.metric_archive import MetricArchive
from lamina.observe.metrics import COST_NAMESPACE, NAMESPACE, Aggregate, Metrics

# What each chart plots: (metric, statistic) read per period.
CHARTS: tuple[tuple[str, str, str, str], ...] = (
    # (chart title, metric, statistic, unit)
    ("Invocations", "Invocations", "Sum", "count"),
    ("Duration p50", "Duration", "p50", "ms"),
    ("Duration p99", "Duration", "p99", "ms"),
    ("Errors", "Errors", "Sum", "count"),
    ("Throttles", "Throttles", "Sum", "count"),
    ("Concurrent executions", "ConcurrentExecutions", "Maximum", "count"),
    ("Cold starts", "ColdStarts", "Sum", "count"),
    ("Cost", "Cost", "Sum", "USD"),
)

# Ranges the monitor tab offers: name -> (seconds, period in seconds), so that a
# chart has at most 60-ish points whatever the range (CloudWatch's own choice).
RANGES: dict[str, tuple[int, int]] = {
    "1h": (3600, 60),
    "3h": (3 * 3600, 300),
    "12h": (12 * 3600, 900),
    "1d": (86400, 3600),
    "1w": (7 * 86400, 3 * 3600),
}


@dataclass
class Series:
    """One chart: points (period start in epoch seconds, value), periods with no
    data left out as CloudWatch does."""

    title: str
    unit: str
    points: list[tuple[int, float]] = field(default_factory=list)


def _statistic(aggregate: Aggregate, statistic: str) -> float:
    if statistic == "Sum":
        return aggregate.sum
    if statistic == "Maximum":
        return aggregate.maximum
    return aggregate.percentile(float(statistic[1:]))


Aggregates = dict[tuple[str, str, int], Aggregate]


async def read_aggregates(archive: MetricArchive, names: frozenset[str], start_s: int,
                          end_s: int, period_s: int,
                          function_name: str | None = None) -> Aggregates:
    """(function, metric, period start) -> the period's aggregate, from the per-function
    series (dimension FunctionName alone; "Cost" from Lamina/Cost, summed over
    architectures): the one place the console reads metrics."""
    await archive.flush()
    store = archive.store
    lambda_rows, cost_rows = await asyncio.gather(
        asyncio.to_thread(store.rows_between, NAMESPACE, names - {"Cost"}, start_s, end_s),
        asyncio.to_thread(store.rows_between, COST_NAMESPACE, names & {"Cost"}, start_s, end_s)
        if "Cost" in names else asyncio.sleep(0, result=[]))
    found: Aggregates = {}
    for row in [*lambda_rows, *cost_rows]:
        dimensions = dict(row.dimensions)
        function = dimensions.get("FunctionName")
        if function is None or set(dimensions) - {"FunctionName", "Architecture"}:
            continue
        if function_name is not None and function != function_name:
            continue
        slot = (function, row.metric_name,
                start_s + (row.timestamp - start_s) // period_s * period_s)
        merged = found.get(slot)
        if merged is None:
            merged = found[slot] = Aggregate()
        merged.merge(Aggregate(row.sum, row.count, row.minimum, row.maximum, dict(row.buckets)))
    return found


async def function_series(archive: MetricArchive, function_name: str, start_s: int, end_s: int,
                          period_s: int) -> list[Series]:
    """Every chart of one function between start and end, one point per period."""
    names = frozenset(metric for _title, metric, _statistic, _unit in CHARTS)
    found = await read_aggregates(archive, names, start_s, end_s, period_s, function_name)
    charts = []
    for title, metric, statistic, unit in CHARTS:
        series = Series(title, unit)
        for (_function, name, at), aggregate in sorted(found.items(), key=lambda item: item[0][2]):
            if name == metric and aggregate.count:
                value = _statistic(aggregate, statistic)
                if math.isfinite(value):
                    series.points.append((at, value))
        charts.append(series)
    return charts


async def recent_totals(archive: MetricArchive, since_s: int,
                        until_s: int) -> dict[str, tuple[int, int]]:
    """Function name -> (invocations, errors) in a time span, for the function list."""
    span = max(until_s - since_s, 1)
    found = await read_aggregates(archive, frozenset({"Invocations", "Errors"}), since_s,
                                  until_s, span)
    totals: dict[str, tuple[int, int]] = {}
    for (function, name, _at), aggregate in found.items():
        invocations, errors = totals.get(function, (0, 0))
        if name == "Invocations":
            invocations += int(aggregate.sum)
        else:
            errors += int(aggregate.sum)
        totals[function] = (invocations, errors)
    return totals


def in_flight(metrics: Metrics, function_name: str) -> int:
    """Executions of the function running now (Lambda's ConcurrentExecutions gauge)."""
    found = metrics.snapshot().get(function_name)
    return found.concurrent_executions if found is not None else 0
