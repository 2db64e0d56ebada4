"""Rows of CloudWatch metric data: per-period aggregates, merged on write."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, and_, delete, insert, select, update

from lamina.store.schema import metric_data

Dimensions = tuple[tuple[str, str], ...]


@dataclass
class MetricRow:
    namespace: str
    metric_name: str
    dimensions: Dimensions
    period: int
    timestamp: int  # the period's start, epoch seconds
    sum: float
    count: int
    minimum: float
    maximum: float
    buckets: dict[int, int]


def _dimensions_text(dimensions: Dimensions) -> str:
    return json.dumps(sorted([list(pair) for pair in dimensions]), separators=(",", ":"))


def _buckets_text(buckets: dict[int, int]) -> str:
    return json.dumps(buckets, separators=(",", ":")) if buckets else ""


def _row(record: object) -> MetricRow:
    r = record._mapping  # type: ignore[attr-defined]
    buckets = {int(k): v for k, v in json.loads(r["buckets"]).items()} if r["buckets"] else {}
    return MetricRow(r["namespace"], r["metric_name"],
                     tuple((name, value) for name, value in json.loads(r["dimensions"])),
                     r["period"], r["timestamp"], r["sum"], r["count"], r["minimum"],
                     r["maximum"], buckets)


def _merge(into: MetricRow, other: MetricRow) -> None:
    into.sum += other.sum
    into.count += other.count
    into.minimum = min(into.minimum, other.minimum)
    into.maximum = max(into.maximum, other.maximum)
    for index, n in other.buckets.items():
        into.buckets[index] = into.buckets.get(index, 0) + n


class MetricStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, rows: list[MetricRow]) -> None:
        """Merge rows into what is stored for the same metric, dimensions and period."""
        if not rows:
            return
        with self._engine.begin() as conn:
            self._add(conn, rows)

    @staticmethod
    def _add(conn: Connection, rows: list[MetricRow]) -> None:
        t = metric_data
        for row in rows:
            dims = _dimensions_text(row.dimensions)
            where = and_(t.c.namespace == row.namespace, t.c.metric_name == row.metric_name,
                         t.c.dimensions == dims, t.c.period == row.period,
                         t.c.timestamp == row.timestamp)
            found = conn.execute(select(t).where(where)).first()
            if found is None:
                conn.execute(insert(t).values(
                    namespace=row.namespace, metric_name=row.metric_name, dimensions=dims,
                    period=row.period, timestamp=row.timestamp, sum=row.sum,
                    count=row.count, minimum=row.minimum, maximum=row.maximum,
                    buckets=_buckets_text(row.buckets)))
                continue
            merged = _row(found)
            _merge(merged, row)
            conn.execute(update(t).where(where).values(
                sum=merged.sum, count=merged.count, minimum=merged.minimum,
                maximum=merged.maximum, buckets=_buckets_text(merged.buckets)))

    def rows(self, namespace: str, metric_name: str, dimensions: Dimensions,
             start: int, end: int) -> list[MetricRow]:
        """Stored rows of one metric (every period) starting in [start, end)."""
        t = metric_data
        with self._engine.connect() as conn:
            found = conn.execute(select(t).where(
                t.c.namespace == namespace, t.c.metric_name == metric_name,
                t.c.dimensions == _dimensions_text(dimensions),
                t.c.timestamp >= start, t.c.timestamp < end).order_by(t.c.timestamp)).all()
        return [_row(r) for r in found]

    def rows_between(self, namespace: str, metric_names: frozenset[str], start: int,
                     end: int) -> list[MetricRow]:
        """Stored rows of several metrics, every dimension set, starting in [start, end)."""
        t = metric_data
        with self._engine.connect() as conn:
            found = conn.execute(select(t).where(
                t.c.namespace == namespace, t.c.metric_name.in_(sorted(metric_names)),
                t.c.timestamp >= start, t.c.timestamp < end)).all()
        return [_row(r) for r in found]

    def metrics(self, namespace: str | None, metric_name: str | None,
                since: int = 0) -> list[tuple[str, str, Dimensions]]:
        """Every (namespace, metric, dimensions) with data since `since`."""
        t = metric_data
        query = select(t.c.namespace, t.c.metric_name, t.c.dimensions).distinct().where(
            t.c.timestamp >= since)
        if namespace is not None:
            query = query.where(t.c.namespace == namespace)
        if metric_name is not None:
            query = query.where(t.c.metric_name == metric_name)
        with self._engine.connect() as conn:
            found = conn.execute(query.order_by(t.c.namespace, t.c.metric_name,
                                                t.c.dimensions)).all()
        return [(ns, name, tuple((k, v) for k, v in json.loads(dims))) for ns, name, dims in found]

    def downsample(self, before: int, period: int) -> int:
        """Fold 60-second rows older than `before` into rows of `period`; how many went."""
        t = metric_data
        with self._engine.connect() as conn:
            old = [_row(r) for r in conn.execute(select(t).where(
                t.c.period == 60, t.c.timestamp < before)).all()]
        if not old:
            return 0
        folded: dict[tuple[str, str, Dimensions, int], MetricRow] = {}
        for row in old:
            start = row.timestamp - row.timestamp % period
            key = (row.namespace, row.metric_name, row.dimensions, start)
            if key in folded:
                _merge(folded[key], row)
            else:
                folded[key] = MetricRow(row.namespace, row.metric_name, row.dimensions, period,
                                        start, row.sum, row.count, row.minimum, row.maximum,
                                        dict(row.buckets))
        # One transaction: a crash half-way leaves the minutes, never neither.
        with self._engine.begin() as conn:
            conn.execute(delete(t).where(t.c.period == 60, t.c.timestamp < before))
            self._add(conn, list(folded.values()))
        return len(old)

    def expire(self, before: int) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(metric_data).where(metric_data.c.timestamp < before))
