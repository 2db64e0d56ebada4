"""CloudWatch's read API over the stored metrics: GetMetricStatistics,
GetMetricData and ListMetrics, with CloudWatch's rules (periods a multiple of 60,
at most 1,440 datapoints per statistics call, exact dimension sets, percentiles).

Input and output are the operations' members as botocore names them; the
protocols (JSON, query) are api/'s business. Every read flushes the model's
current minutes first, so a read sees every invocation that has ended.
"""

from __future__ import annotations

import asyncio
import datetime
import math
import re
import time
from typing import Any

from lamina.errors import (
    InvalidNextToken,
    InvalidParameterCombinationException,
    InvalidParameterValueException,
    MissingRequiredParameterException,
)
from lamina.observe.metric_archive import MINUTE, MetricArchive
from lamina.observe.metrics import Aggregate
from lamina.store.metrics import Dimensions, MetricRow

STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
# CloudWatch's percentile statistics: p0 to p100, up to two decimals shown.
_PERCENTILE = re.compile(r"p(\d{1,2}(\.\d+)?|100(\.0+)?)")
_QUERY_ID = re.compile(r"[a-z][a-zA-Z0-9_]*")
MAX_STATISTICS_DATAPOINTS = 1440
MAX_METRIC_DATA_DATAPOINTS = 100_800
LIST_PAGE = 500
# ListMetrics lists metrics with data in the last two weeks (three hours with
# RecentlyActive=PT3H), as CloudWatch does.
LISTED_FOR_S = 14 * 86400
RECENTLY_ACTIVE_S = 3 * 3600

# The unit each metric is published with (Lambda's; Lamina/Cost's own).
UNITS = {
    "Duration": "Milliseconds",
    "InitDuration": "Milliseconds",
    "PostRuntimeExtensionsDuration": "Milliseconds",
    "AsyncEventAge": "Milliseconds",
    "GBSeconds": "None",
    "Cost": "None",
}


def unit_of(metric_name: str) -> str:
    return UNITS.get(metric_name, "Count")


def epoch_seconds(value: Any, member: str) -> float:
    """A timestamp member as the JSON protocol (epoch seconds) or the query
    protocol (ISO 8601, parsed to a datetime) carries it."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        try:
            return epoch_seconds(datetime.datetime.fromisoformat(value.replace("Z", "+00:00")), member)
        except ValueError:
            pass
    raise InvalidParameterValueException(
        f"The parameter {member} must be a timestamp (ISO 8601 or seconds since the epoch).")


def _utc(epoch: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)


def dimensions_of(given: list[dict[str, Any]] | None, member: str) -> Dimensions:
    """Request dimensions as stored: (name, value) pairs sorted by name."""
    pairs: dict[str, str] = {}
    for i, dimension in enumerate(given or [], 1):
        name, value = dimension.get("Name"), dimension.get("Value")
        if name is None or value is None:
            missing = "Name" if name is None else "Value"
            raise MissingRequiredParameterException(
                f"The parameter {member}.member.{i}.{missing} is required.")
        if name in pairs:
            raise InvalidParameterValueException(
                f"The collection {member} must not have a duplicate dimension name: {name}.")
        pairs[name] = value
    return tuple(sorted(pairs.items()))


def _check_period(period: int, member: str) -> None:
    if period < MINUTE or period % MINUTE:
        raise InvalidParameterValueException(
            f"The parameter {member} must be a multiple of 60 and at least 60.")


def _check_range(start: float, end: float) -> None:
    if start >= end:
        raise InvalidParameterValueException(
            "The parameter StartTime must be less than the parameter EndTime.")


def _check_statistic(stat: str, member: str) -> None:
    if stat not in STATISTICS and not _PERCENTILE.fullmatch(stat):
        raise InvalidParameterValueException(
            f"The parameter {member} must be one of {', '.join(STATISTICS)} or a percentile "
            f"p0 to p100 (e.g. p99, p99.9); got '{stat}'.")


def _aggregate(rows: list[MetricRow]) -> Aggregate:
    total = Aggregate()
    for row in rows:
        total.merge(Aggregate(row.sum, row.count, row.minimum, row.maximum, row.buckets))
    return total


def statistic(aggregate: Aggregate, stat: str) -> float:
    if stat == "Sum":
        return aggregate.sum
    if stat == "SampleCount":
        return float(aggregate.count)
    if stat == "Average":
        return aggregate.sum / aggregate.count if aggregate.count else 0.0
    if stat == "Minimum":
        return aggregate.minimum
    if stat == "Maximum":
        return aggregate.maximum
    return aggregate.percentile(float(stat[1:]))


def _periods(rows: list[MetricRow], period: int) -> dict[int, Aggregate]:
    """Rows grouped into periods (rows already coarser than `period`, i.e.
    down-sampled ones, keep their own)."""
    grouped: dict[int, list[MetricRow]] = {}
    for row in rows:
        size = max(period, row.period)
        grouped.setdefault(row.timestamp - row.timestamp % size, []).append(row)
    return {start: _aggregate(found) for start, found in sorted(grouped.items())}


class CloudWatchMetrics:
    def __init__(self, archive: MetricArchive) -> None:
        self.archive = archive
        self.store = archive.store

    async def _rows(self, namespace: str, metric_name: str, dimensions: Dimensions,
                    start: float, end: float) -> list[MetricRow]:
        await self.archive.flush()
        # A sample is stored at its minute's start: a range starting mid-minute
        # still covers that minute.
        first = int(start) - int(start) % MINUTE
        return await asyncio.to_thread(self.store.rows, namespace, metric_name, dimensions,
                                       first, math.ceil(end))

    async def get_metric_statistics(self, p: dict[str, Any]) -> dict[str, Any]:
        start, end = epoch_seconds(p["StartTime"], "StartTime"), epoch_seconds(p["EndTime"], "EndTime")
        period = p["Period"]
        stats, extended = p.get("Statistics") or [], p.get("ExtendedStatistics") or []
        _check_range(start, end)
        _check_period(period, "Period")
        if not stats and not extended:
            raise MissingRequiredParameterException(
                "Must specify either the parameter Statistics or the parameter ExtendedStatistics.")
        if stats and extended:
            raise InvalidParameterCombinationException(
                "The parameters Statistics and ExtendedStatistics are mutually exclusive: "
                "specify one of them.")
        for i, stat in enumerate(extended, 1):
            if not _PERCENTILE.fullmatch(stat):
                raise InvalidParameterValueException(
                    f"The parameter ExtendedStatistics.member.{i} must be a percentile p0 to "
                    f"p100 (e.g. p99, p99.9); got '{stat}'.")
        requested = math.ceil((end - start) / period)
        if requested > MAX_STATISTICS_DATAPOINTS:
            raise InvalidParameterCombinationException(
                f"You have requested up to {requested:,} datapoints, which exceeds the limit of "
                f"{MAX_STATISTICS_DATAPOINTS:,}. You may reduce the datapoints requested by "
                f"increasing Period, or decreasing the time range.")
        name = p["MetricName"]
        dimensions = dimensions_of(p.get("Dimensions"), "Dimensions")
        unit = unit_of(name)
        datapoints: list[dict[str, Any]] = []
        if p.get("Unit") in (None, unit):
            rows = await self._rows(p["Namespace"], name, dimensions, start, end)
            for at, aggregate in _periods(rows, period).items():
                point: dict[str, Any] = {"Timestamp": _utc(at), "Unit": unit}
                for stat in stats:
                    point[stat] = statistic(aggregate, stat)
                if extended:
                    point["ExtendedStatistics"] = {s: statistic(aggregate, s) for s in extended}
                datapoints.append(point)
        return {"Label": name, "Datapoints": datapoints}

    async def get_metric_data(self, p: dict[str, Any]) -> dict[str, Any]:
        start, end = epoch_seconds(p["StartTime"], "StartTime"), epoch_seconds(p["EndTime"], "EndTime")
        _check_range(start, end)
        queries = p["MetricDataQueries"]
        if not 1 <= len(queries) <= 500:
            raise InvalidParameterValueException(
                "The collection MetricDataQueries must contain from 1 to 500 queries.")
        limit = p.get("MaxDatapoints") or MAX_METRIC_DATA_DATAPOINTS
        if limit < 1:
            raise InvalidParameterValueException("The parameter MaxDatapoints must be at least 1.")
        descending = p.get("ScanBy", "TimestampDescending") == "TimestampDescending"
        seen: set[str] = set()
        series: list[tuple[dict[str, Any], list[tuple[int, float]]]] = []
        for i, query in enumerate(queries, 1):
            member = f"MetricDataQueries.member.{i}"
            query_id = query["Id"]
            if not _QUERY_ID.fullmatch(query_id):
                raise InvalidParameterValueException(
                    f"The value {query_id} for parameter {member}.Id is not valid: it must start "
                    f"with a lowercase letter and contain only letters, digits and underscores.")
            if query_id in seen:
                raise InvalidParameterValueException(
                    f"The value {query_id} for parameter {member}.Id is not unique.")
            seen.add(query_id)
            if query.get("Expression") is not None:
                raise InvalidParameterValueException(
                    f"The parameter {member}.Expression is not supported by this server: "
                    f"use {member}.MetricStat.")
            stat_query = query.get("MetricStat")
            if stat_query is None:
                raise MissingRequiredParameterException(
                    f"The parameter {member}.MetricStat is required.")
            metric = stat_query["Metric"]
            for required in ("Namespace", "MetricName"):
                if not metric.get(required):
                    raise MissingRequiredParameterException(
                        f"The parameter {member}.MetricStat.Metric.{required} is required.")
            period, stat = stat_query["Period"], stat_query["Stat"]
            _check_period(period, f"{member}.MetricStat.Period")
            _check_statistic(stat, f"{member}.MetricStat.Stat")
            points: list[tuple[int, float]] = []
            name = metric["MetricName"]
            if stat_query.get("Unit") in (None, unit_of(name)):
                dimensions = dimensions_of(metric.get("Dimensions"),
                                           f"{member}.MetricStat.Metric.Dimensions")
                rows = await self._rows(metric["Namespace"], name, dimensions, start, end)
                points = [(at, statistic(a, stat)) for at, a in _periods(rows, period).items()]
            if descending:
                points.reverse()
            if query.get("ReturnData", True):
                series.append(({"Id": query_id, "Label": query.get("Label") or name}, points))
        # NextToken: how many datapoints (in query order) earlier pages returned.
        token = p.get("NextToken")
        skip = 0
        if token is not None:
            if not token.isdigit():
                raise InvalidNextToken(f"The NextToken {token} is not valid.")
            skip = int(token)
        # The pages cut the queries' datapoints laid end to end, in query order.
        page_end = skip + limit
        results, first = [], 0
        for head, points in series:
            last = first + len(points)
            kept = points[max(0, skip - first):max(0, page_end - first)]
            results.append({**head, "Timestamps": [_utc(at) for at, _ in kept],
                            "Values": [v for _, v in kept],
                            "StatusCode": "PartialData" if last > page_end else "Complete"})
            first = last
        output: dict[str, Any] = {"MetricDataResults": results, "Messages": []}
        if page_end < first:
            output["NextToken"] = str(page_end)
        return output

    async def list_metrics(self, p: dict[str, Any]) -> dict[str, Any]:
        window = RECENTLY_ACTIVE_S if p.get("RecentlyActive") == "PT3H" else LISTED_FOR_S
        await self.archive.flush()
        found = await asyncio.to_thread(self.store.metrics, p.get("Namespace"),
                                        p.get("MetricName"), int(time.time() - window))
        wanted = p.get("Dimensions") or []
        for i, dimension in enumerate(wanted, 1):
            if dimension.get("Name") is None:
                raise MissingRequiredParameterException(
                    f"The parameter Dimensions.member.{i}.Name is required.")

        def matches(dimensions: Dimensions) -> bool:
            have = dict(dimensions)
            return all(d["Name"] in have and d.get("Value") in (None, have[d["Name"]])
                       for d in wanted)

        metrics = [{"Namespace": ns, "MetricName": name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dims]}
                   for ns, name, dims in found if matches(dims)]
        token = p.get("NextToken")
        start = 0
        if token is not None:
            if not token.isdigit() or int(token) > len(metrics):
                raise InvalidNextToken(f"The NextToken {token} is not valid.")
            start = int(token)
        page = metrics[start:start + LIST_PAGE]
        output: dict[str, Any] = {"Metrics": page}
        if start + LIST_PAGE < len(metrics):
            output["NextToken"] = str(start + LIST_PAGE)
        return output
