"""What the console's charts and the function list show, read in one place.

`function_series` is the only reader: it asks the metrics model
(`observe.metrics.Metrics.pending`, the per-minute aggregates not yet drained).
Once those aggregates are drained into the store for the CloudWatch API, this
one function is what changes: it then reads the same statistics through
GetMetricData (the store's metric rows), and every chart follows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lamina.observe.metrics import Aggregate, Metrics

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


def read_aggregates(metrics: Metrics, names: frozenset[str], start_s: int, end_s: int,
                    period_s: int, function_name: str | None = None) -> Aggregates:
    """(function, metric, period start) -> the period's aggregate: the one place the
    console reads metrics. "Cost" is derived here, in USD: GB-seconds at the
    architecture's price plus the requests, as Lambda bills."""
    found: Aggregates = {}
    prices = metrics.prices

    def add(function: str, name: str, minute: int, aggregate: Aggregate) -> None:
        slot = (function, name, start_s + (minute - start_s) // period_s * period_s)
        merged = found.get(slot)
        if merged is None:
            merged = found[slot] = Aggregate()
        merged.merge(aggregate)

    for key, minute, aggregate in metrics.pending():
        function = key.function_name
        if function is None or (function_name is not None and function != function_name):
            continue
        if not start_s <= minute < end_s:
            continue
        if key.name in names:
            add(function, key.name, minute, aggregate)
        if "Cost" in names and key.name in ("GBSeconds", "Invocations"):
            if key.name == "GBSeconds":
                cost = aggregate.sum * prices.gb_second(key.architecture or "x86_64")
            else:
                cost = aggregate.sum * prices.request
            spent = Aggregate()
            spent.add(cost)
            add(function, "Cost", minute, spent)
    return found


def function_series(metrics: Metrics, function_name: str, start_s: int, end_s: int,
                    period_s: int) -> list[Series]:
    """Every chart of one function between start and end, one point per period."""
    names = frozenset(metric for _title, metric, _statistic, _unit in CHARTS)
    found = read_aggregates(metrics, names, start_s, end_s, period_s, function_name)
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


def recent_totals(metrics: Metrics, since_s: int, until_s: int) -> dict[str, tuple[int, int]]:
    """Function name -> (invocations, errors) in a time span, for the function list."""
    span = max(until_s - since_s, 1)
    found = read_aggregates(metrics, frozenset({"Invocations", "Errors"}), since_s, until_s, span)
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
