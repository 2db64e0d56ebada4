"""The metrics model's per-minute aggregates, kept in the store as CloudWatch keeps
them: written every few seconds and at shutdown (so figures survive a restart),
one-minute rows down-sampled to one hour after a while, and expired at the end.

The invocation path only adds to an in-memory minute (observe/metrics.py); the
flush swaps that dict out on the event loop and writes it from a thread, so
SQLite never blocks an invocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from lamina.observe.metrics import (
    COST_NAMESPACE,
    NAMESPACE,
    Aggregate,
    MetricKey,
    Metrics,
)
from lamina.store.metrics import Dimensions, MetricRow, MetricStore

log = logging.getLogger("lamina.metrics")

MINUTE = 60
# What one-minute data becomes once it is older than the minute retention
# (CloudWatch: 15 days of one-minute data, then one-hour data for 455 days).
DOWNSAMPLED_PERIOD = 3600
# How often rows are down-sampled and expired: retention is counted in days.
MAINTENANCE_EVERY_S = 600.0


@dataclass(frozen=True)
class Retention:
    flush_s: float
    minute_retention_s: float
    retention_s: float


def rows_of(drained: dict[tuple[MetricKey, int], Aggregate], metrics: Metrics) -> list[MetricRow]:
    """The store rows of drained aggregates: one per dimension set a sample is
    published under (samples of many functions meet in the account-wide series),
    and for cost, Requests and Cost beside GBSeconds."""
    rows: dict[tuple[str, str, Dimensions, int], MetricRow] = {}

    def add(namespace: str, name: str, dimensions: Dimensions, minute: int,
            aggregate: Aggregate) -> None:
        slot = (namespace, name, dimensions, minute)
        row = rows.get(slot)
        if row is None:
            rows[slot] = MetricRow(namespace, name, dimensions, MINUTE, minute, aggregate.sum,
                                   aggregate.count, aggregate.minimum, aggregate.maximum,
                                   dict(aggregate.buckets))
            return
        row.sum += aggregate.sum
        row.count += aggregate.count
        row.minimum = min(row.minimum, aggregate.minimum)
        row.maximum = max(row.maximum, aggregate.maximum)
        for index, n in aggregate.buckets.items():
            row.buckets[index] = row.buckets.get(index, 0) + n

    prices = metrics.prices
    for (key, minute), aggregate in drained.items():
        namespace = COST_NAMESPACE if key.architecture is not None else NAMESPACE
        dimension_sets = key.dimension_sets()
        for dimensions in dimension_sets:
            add(namespace, key.name, dimensions, minute, aggregate)
        if key.name == "GBSeconds" and key.architecture is not None:
            # Derived here rather than sampled per invocation: each sample is one
            # request, and its cost is linear in its GB-seconds.
            rate, request = prices.gb_second(key.architecture), prices.request
            requests = Aggregate(float(aggregate.count), aggregate.count, 1.0, 1.0)
            cost = Aggregate(aggregate.sum * rate + aggregate.count * request, aggregate.count,
                             aggregate.minimum * rate + request, aggregate.maximum * rate + request)
            for dimensions in dimension_sets:
                add(namespace, "Requests", dimensions, minute, requests)
                add(namespace, "Cost", dimensions, minute, cost)
    return list(rows.values())


class MetricArchive:
    """Writes the metrics model's minutes to the store, and keeps the store's
    retention; `flush()` before a read makes the read see every sample so far."""

    def __init__(self, metrics: Metrics, store: MetricStore, retention: Retention) -> None:
        self.metrics = metrics
        self.store = store
        self.retention = retention
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._maintained_at = 0.0

    async def start(self) -> None:
        if self.metrics.enabled:
            self._task = asyncio.create_task(self._run(), name="metric-archive")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # The last minutes counted, after the last invocation ended.
        try:
            await self.flush()
        except Exception:
            # The server still stops (and closes its database) without them.
            log.exception("metrics: the last minutes could not be written")

    async def flush(self) -> None:
        async with self._lock:
            drained = self.metrics.drain()
            if not drained:
                return
            rows = rows_of(drained, self.metrics)
            await asyncio.to_thread(self.store.add, rows)

    def maintain(self, now_s: float) -> None:
        """Down-sample old minutes to hours, and drop what is past retention."""
        hour = DOWNSAMPLED_PERIOD
        before = int(now_s - self.retention.minute_retention_s) // hour * hour
        folded = self.store.downsample(before, hour)
        self.store.expire(int(now_s - self.retention.retention_s))
        if folded:
            log.info("metrics: %d one-minute rows before %d folded into hours", folded, before)

    async def _run(self) -> None:
        while True:
            try:
                if time.time() - self._maintained_at >= MAINTENANCE_EVERY_S:
                    self._maintained_at = time.time()
                    # Under the flush lock: down-sampling rewrites rows a flush may add to.
                    async with self._lock:
                        await asyncio.to_thread(self.maintain, self._maintained_at)
                await asyncio.sleep(self.retention.flush_s)
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A database hiccup must not end metrics for the server's lifetime;
                # the drained minutes are lost, the next ones are written.
                log.exception("metrics flush failed")
