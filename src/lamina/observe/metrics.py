"""The one metrics model: Lambda's CloudWatch metrics, counted once, read three ways.

What feeds it:
- the environments' lifecycle events (observe/events.py): every `InvokeReport`
  is one invocation (Invocations, Errors, Duration, and its cost), every
  `InitReport` one INIT (cold starts and their duration); `listener_for` gives the
  pool a listener per environment that knows the environment's function, version,
  memory and architecture;
- invoke/: throttles, concurrency (ConcurrentExecutions is the admission counter
  itself, so there is one number), provisioned-concurrency use, and the
  asynchronous queue (AsyncEventsReceived, AsyncEventAge, AsyncEventsDropped,
  DeadLetterErrors, DestinationDeliveryFailures).

What reads it:
- `GET /metrics` (Prometheus exposition, `PrometheusCollector`): cumulative
  counters and histograms, built at scrape time from plain numbers, so the
  invocation path takes no lock and calls nothing of prometheus-client;
- the CloudWatch API (observe/cloudwatch.py): per-minute aggregates (sum,
  count, min, max and a log-bucketed histogram for percentiles), drained by
  `drain()` into the store every few seconds (observe/metric_archive.py);
- `snapshot()`: per-function totals since start (tests, the CLI).

Everything here runs on the event loop and only does dict look-ups and arithmetic:
bench/metrics.py measures what it adds to an invocation.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from lamina.observe.events import (
    InitReport,
    InvokeReport,
    LifecycleEvent,
    LifecycleListener,
    RestoreReport,
)

NAMESPACE = "AWS/Lambda"
# Lamina's own figures beside Lambda's: what each function's invocations cost
# (GBSeconds, Requests, Cost in USD), by FunctionName and Architecture.
COST_NAMESPACE = "Lamina/Cost"

# Prometheus buckets for durations, in seconds: 1 ms to 15 minutes (Lambda's timeout).
DURATION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                      5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
# CloudWatch percentiles come from buckets 5 % wide (p99 is off by at most that).
_LOG_BASE = math.log(1.05)


def percentile_bucket(value: float) -> int:
    """The log bucket a positive value falls in (values <= 0 share bucket -10**6)."""
    if value <= 0:
        return -1_000_000
    return math.ceil(math.log(value) / _LOG_BASE)


def bucket_upper(index: int) -> float:
    return 0.0 if index == -1_000_000 else math.exp(index * _LOG_BASE)


@dataclass(slots=True)
class Aggregate:
    """One CloudWatch statistic set: what a minute (or a down-sampled period) keeps."""

    sum: float = 0.0
    count: int = 0
    minimum: float = math.inf
    maximum: float = -math.inf
    # Log bucket -> samples, for percentiles; empty for counts (every value is 1).
    buckets: dict[int, int] = field(default_factory=dict)

    def add(self, value: float, distribution: bool = False) -> None:
        self.sum += value
        self.count += 1
        if value < self.minimum:
            self.minimum = value
        if value > self.maximum:
            self.maximum = value
        if distribution:
            index = percentile_bucket(value)
            self.buckets[index] = self.buckets.get(index, 0) + 1

    def merge(self, other: Aggregate) -> None:
        self.sum += other.sum
        self.count += other.count
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n

    def percentile(self, p: float) -> float:
        """The p-th percentile (0-100): a bucket's upper bound, clamped to min..max."""
        if not self.buckets:
            return self.maximum
        rank = max(1, math.ceil(self.count * p / 100))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(max(bucket_upper(index), self.minimum), self.maximum)
        return self.maximum


# Metrics whose samples are durations or ages (kept with a distribution).
DISTRIBUTIONS = frozenset({"Duration", "InitDuration", "AsyncEventAge", "PostRuntimeExtensionsDuration"})


@dataclass(frozen=True, eq=True)
class MetricKey:
    """A metric of one function as it is counted: the dimensions are expanded
    (FunctionName; FunctionName+Resource; ...+ExecutedVersion) when stored."""

    name: str
    function_name: str | None = None
    resource: str | None = None
    executed_version: str | None = None
    # Whether the account-wide series (no dimensions) gets the sample too: not for
    # gauges, whose account figure is a total of its own.
    account: bool = True
    # Cost samples (COST_NAMESPACE) are kept by function and architecture.
    architecture: str | None = None

    def __hash__(self) -> int:
        # Hashed on every sample: computed once (the key is frozen).
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash((self.name, self.function_name, self.resource, self.executed_version,
                           self.account, self.architecture))
            object.__setattr__(self, "_hash", cached)
        return cached

    def dimension_sets(self) -> list[tuple[tuple[str, str], ...]]:
        """Every dimension combination Lambda publishes this sample under: the
        account (none), the function, the qualifier it was called by, and (for a
        qualified call) the version that ran."""
        if self.function_name is None:
            return [()]
        if self.architecture is not None:
            return [(("Architecture", self.architecture), ("FunctionName", self.function_name))]
        sets: list[tuple[tuple[str, str], ...]] = [(("FunctionName", self.function_name),)]
        if self.account:
            sets.insert(0, ())
        if self.resource is not None:
            sets.append((("FunctionName", self.function_name), ("Resource", self.resource)))
            if self.executed_version is not None:
                sets.append((("ExecutedVersion", self.executed_version),
                             ("FunctionName", self.function_name), ("Resource", self.resource)))
        return sets


_ACCOUNT_CONCURRENT = MetricKey("ConcurrentExecutions")
_ACCOUNT_UNRESERVED = MetricKey("UnreservedConcurrentExecutions")


@dataclass
class FunctionMetrics:
    """One function's totals since the server started, under Lambda's metric names."""

    # Invocations that ran (success or function error); throttles are not counted,
    # as on Lambda.
    invocations: int = 0
    # Calls refused with 429 TooManyRequestsException.
    throttles: int = 0
    # Invocations that ended in a function error (a handler error, a timeout, a crash).
    errors: int = 0
    # Executions in flight now (Lambda's ConcurrentExecutions); the concurrency
    # counter in invoke/ keeps it, so there is one number, not two.
    concurrent_executions: int = 0
    provisioned_concurrent_executions: int = 0
    provisioned_concurrency_invocations: int = 0
    provisioned_concurrency_spillover_invocations: int = 0
    # INIT phases and their time (on-demand ones are the cold starts).
    inits: int = 0
    cold_starts: int = 0
    init_duration_ms: float = 0.0
    # SnapStart restores (cold starts of a SnapStart version, from its snapshot).
    restores: int = 0
    restore_duration_ms: float = 0.0
    duration_ms: float = 0.0
    billed_duration_ms: int = 0
    gb_seconds: float = 0.0
    cost_usd: float = 0.0
    # Asynchronous invocation, as Lambda names them: events queued; events given up
    # (retries exhausted, too old, function deleted; after their DLQ/OnFailure
    # delivery); dead letters and destination records that could not be delivered.
    async_events_received: int = 0
    async_events_dropped: int = 0
    dead_letter_errors: int = 0
    destination_delivery_failures: int = 0
    # Deployments whose code signature failed a check and went ahead under the Warn
    # policy of the function's code signing config.
    signature_validation_errors: int = 0


@dataclass
class AsyncStats:
    """The asynchronous queue's outcomes since this server started (each server
    counts its own): the operator's view beside Lambda's per-function metrics."""

    accepted: int = 0
    succeeded: int = 0
    function_errors: int = 0
    throttles: int = 0
    system_errors: int = 0
    retries_exhausted: int = 0
    event_age_exceeded: int = 0
    dead_lettered: int = 0
    destinations_delivered: int = 0
    delivery_failures: int = 0
    # Events whose function was deleted before they ran.
    dropped: int = 0
    # Claims that ended without an outcome written (a crash, a lost lease), counted
    # when the event finishes: each may have run the function once more.
    redelivered: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Prices:
    """What an invocation costs: per GB-second by architecture, and per request."""

    gb_second_x86_64: float
    gb_second_arm64: float
    request: float

    def gb_second(self, architecture: str) -> float:
        return self.gb_second_arm64 if architecture == "arm64" else self.gb_second_x86_64


def gb_seconds(billed_duration_ms: int, memory_size_mb: int) -> float:
    """Lambda's unit of compute: billed seconds x memory in GB (1 GB = 1,024 MB)."""
    return billed_duration_ms / 1000 * memory_size_mb / 1024


@dataclass
class _Histogram:
    # Cumulative like Prometheus wants them only when read; counts per bucket here.
    counts: list[int]
    sum: float = 0.0

    def observe(self, seconds: float) -> None:
        self.sum += seconds
        # The first bound >= seconds (the last slot is +Inf), found in C.
        self.counts[bisect.bisect_left(DURATION_BUCKETS_S, seconds)] += 1


def _new_histogram() -> _Histogram:
    return _Histogram([0] * (len(DURATION_BUCKETS_S) + 1))


@dataclass
class _Labelled:
    """Prometheus series of one (function, resource, executed version)."""

    invocations: int = 0
    errors: int = 0
    duration: _Histogram = field(default_factory=_new_histogram)


# Gauges read when scraped: the concurrency figures live in invoke/ and are asked.
GaugeSource = Callable[[], dict[str, float]]


@dataclass(slots=True)
class _Series:
    """The metric keys one kind of sample goes to, and their aggregates for the
    minute being counted: an invocation adds to them directly, without hashing a
    key, until the minute changes or a drain takes the aggregates away."""

    keys: tuple[MetricKey, ...]
    minute: int = -1
    generation: int = -1
    aggregates: tuple[Aggregate, ...] = ()


def _ignore(event: LifecycleEvent) -> None:
    pass


class Metrics:
    def __init__(self, prices: Prices | None = None, enabled: bool = True) -> None:
        self.prices = prices or Prices(0.0, 0.0, 0.0)
        # Off (Settings.metrics_enabled): nothing is counted but what admission
        # needs (concurrent executions); rebinding the sampling entry points keeps
        # the enabled path free of a flag test per call.
        self.enabled = enabled
        if not enabled:
            self.concurrency_sampled = lambda *args: None  # type: ignore[method-assign]
            # Nothing drains the minutes when metrics are off: keep none.
            self._sample = lambda *args: None  # type: ignore[method-assign]
        self._functions: dict[str, FunctionMetrics] = {}
        self.async_stats = AsyncStats()
        self._labelled: dict[tuple[str, str, str], _Labelled] = {}
        self._throttles: dict[tuple[str, str], int] = {}
        self._init: dict[tuple[str, str, str], _Histogram] = {}
        self._restore: dict[tuple[str, str], _Histogram] = {}
        self._async_age: dict[str, _Histogram] = {}
        self._cost: dict[tuple[str, str], list[float]] = {}
        # The minute being counted for CloudWatch: (metric key, minute start) -> aggregate.
        self._minutes: dict[tuple[MetricKey, int], Aggregate] = {}
        # Bumped by each drain: cached aggregates of an older generation are gone.
        self._generation = 0
        self._series: dict[tuple[tuple[str, str, str], str], _Series] = {}
        self._concurrency_series: dict[str, _Series] = {}
        # ARN -> the Resource dimension (FUNCTION[:QUALIFIER]).
        self._resources: dict[str, tuple[str | None, bool]] = {}
        # Account-level gauges (UnreservedConcurrentExecutions, ClaimedAccountConcurrency)
        # and per-function ones, asked for when read.
        self.account_gauges: GaugeSource = dict
        self.provisioned_allocated: Callable[[], dict[str, int]] = dict

    # -- totals -----------------------------------------------------------------------

    def function(self, name: str) -> FunctionMetrics:
        found = self._functions.get(name)
        if found is None:
            found = self._functions[name] = FunctionMetrics()
        return found

    def snapshot(self) -> dict[str, FunctionMetrics]:
        """A copy of every function's counters."""
        return {name: dataclasses.replace(m) for name, m in self._functions.items()}

    def _sample(self, key: MetricKey, value: float, now_s: float | None = None) -> None:
        minute = int((now_s if now_s is not None else time.time()) // 60 * 60)
        slot = (key, minute)
        aggregate = self._minutes.get(slot)
        if aggregate is None:
            aggregate = self._minutes[slot] = Aggregate()
        aggregate.add(value, key.name in DISTRIBUTIONS)

    def _current(self, series: _Series, minute: int) -> tuple[Aggregate, ...]:
        """The series' aggregates for this minute (looked up once a minute)."""
        if series.minute != minute or series.generation != self._generation:
            aggregates = []
            for key in series.keys:
                slot = (key, minute)
                aggregate = self._minutes.get(slot)
                if aggregate is None:
                    aggregate = self._minutes[slot] = Aggregate()
                aggregates.append(aggregate)
            series.aggregates = tuple(aggregates)
            series.minute, series.generation = minute, self._generation
        return series.aggregates

    def drain(self) -> dict[tuple[MetricKey, int], Aggregate]:
        """The per-minute aggregates counted since the last drain (for the store)."""
        drained, self._minutes = self._minutes, {}
        self._generation += 1
        return drained

    # -- from the environments' lifecycle events -----------------------------------------

    def listener_for(self, function_name: str, version: str,
                     architecture: str = "x86_64") -> LifecycleListener:
        """The listener one environment of this function version publishes to."""
        if not self.enabled:
            return _ignore
        totals = self.function(function_name)
        gb_price = self.prices.gb_second(architecture)
        request_price = self.prices.request

        def listener(event: LifecycleEvent) -> None:
            if isinstance(event, InvokeReport):
                self._invoked(totals, function_name, version, architecture, gb_price,
                              request_price, event)
            elif isinstance(event, InitReport):
                self._initialized(totals, function_name, version, event)
            elif isinstance(event, RestoreReport):
                self._restored(totals, function_name, version, event)

        return listener

    def _resource(self, function_arn: str) -> tuple[str | None, bool]:
        """The Resource dimension of a call by this ARN (None: unqualified), and
        whether it named an alias (ExecutedVersion is then published too)."""
        found = self._resources.get(function_arn)
        if found is None:
            parts = function_arn.split(":")
            if len(parts) >= 8 and parts[7]:
                qualifier = parts[7]
                found = (f"{parts[6]}:{qualifier}", True)
            else:
                found = (None, False)
            self._resources[function_arn] = found
        return found

    def _invoked(self, totals: FunctionMetrics, function_name: str, version: str,
                 architecture: str, gb_price: float, request_price: float,
                 event: InvokeReport) -> None:
        resource, qualified = self._resource(event.invoked_function_arn)
        failed = event.status != "success"
        totals.invocations += 1
        totals.duration_ms += event.duration_ms
        totals.billed_duration_ms += event.billed_duration_ms
        compute = gb_seconds(event.billed_duration_ms, event.memory_size_mb)
        cost = compute * gb_price + request_price
        totals.gb_seconds += compute
        totals.cost_usd += cost
        if failed:
            totals.errors += 1
        labels = (function_name, resource or function_name, version)
        series = self._labelled.get(labels)
        if series is None:
            series = self._labelled[labels] = _Labelled()
        series.invocations += 1
        series.errors += failed
        series.duration.observe(event.duration_ms / 1000)
        spent = self._cost.get((function_name, architecture))
        if spent is None:
            spent = self._cost[(function_name, architecture)] = [0.0, 0.0, 0.0]
        spent[0] += 1
        spent[1] += compute
        spent[2] += cost
        minutes = self._series.get((labels, architecture))
        if minutes is None:
            # Built once per series: a key's construction costs more than its use.
            executed = version if qualified else None
            minutes = self._series[(labels, architecture)] = _Series((
                MetricKey("Invocations", function_name, resource, executed),
                MetricKey("Errors", function_name, resource, executed),
                MetricKey("Duration", function_name, resource, executed),
                MetricKey("GBSeconds", function_name, architecture=architecture)))
        invocations, errors, duration, compute_used = self._current(
            minutes, event.timestamp_ms // 60_000 * 60)
        invocations.add(1.0)
        errors.add(float(failed))
        duration.add(event.duration_ms, True)
        compute_used.add(compute)

    def _initialized(self, totals: FunctionMetrics, function_name: str, version: str,
                     event: InitReport) -> None:
        totals.inits += 1
        cold = event.initialization_type == "on-demand"
        totals.cold_starts += cold
        totals.init_duration_ms += event.duration_ms
        labels = (function_name, version, event.initialization_type)
        histogram = self._init.get(labels)
        if histogram is None:
            histogram = self._init[labels] = _new_histogram()
        histogram.observe(event.duration_ms / 1000)
        now_s = event.timestamp_ms / 1000
        if cold:
            self._sample(MetricKey("ColdStarts", function_name), 1, now_s)
        self._sample(MetricKey("InitDuration", function_name), event.duration_ms, now_s)

    def _restored(self, totals: FunctionMetrics, function_name: str, version: str,
                  event: RestoreReport) -> None:
        totals.restores += 1
        totals.restore_duration_ms += event.duration_ms
        histogram = self._restore.get((function_name, version))
        if histogram is None:
            histogram = self._restore[(function_name, version)] = _new_histogram()
        histogram.observe(event.duration_ms / 1000)

    # -- from invoke/ -----------------------------------------------------------------

    def throttled(self, function_name: str, resource: str | None = None) -> None:
        self.function(function_name).throttles += 1
        key = (function_name, resource or function_name)
        self._throttles[key] = self._throttles.get(key, 0) + 1
        self._sample(MetricKey("Throttles", function_name, resource), 1)

    def concurrency_sampled(self, function_name: str, in_use: int, account_in_use: int,
                            unreserved: int) -> None:
        """A slot was taken: CloudWatch keeps the minute's Maximum of each."""
        series = self._concurrency_series.get(function_name)
        if series is None:
            series = self._concurrency_series[function_name] = _Series((
                MetricKey("ConcurrentExecutions", function_name, account=False),
                _ACCOUNT_CONCURRENT, _ACCOUNT_UNRESERVED))
        function, account, account_unreserved = self._current(series, int(time.time()) // 60 * 60)
        function.add(in_use)
        account.add(account_in_use)
        account_unreserved.add(unreserved)

    def provisioned_used(self, function_name: str, spillover: bool) -> None:
        totals = self.function(function_name)
        if spillover:
            totals.provisioned_concurrency_spillover_invocations += 1
            self._sample(MetricKey("ProvisionedConcurrencySpilloverInvocations", function_name), 1)
        else:
            totals.provisioned_concurrency_invocations += 1
            self._sample(MetricKey("ProvisionedConcurrencyInvocations", function_name), 1)

    def async_received(self, function_name: str) -> None:
        self.async_stats.accepted += 1
        self.function(function_name).async_events_received += 1
        self._sample(MetricKey("AsyncEventsReceived", function_name), 1)

    def async_event_age(self, function_name: str, age_ms: float) -> None:
        """How long an event waited before this attempt (Lambda's AsyncEventAge)."""
        histogram = self._async_age.get(function_name)
        if histogram is None:
            histogram = self._async_age[function_name] = _new_histogram()
        histogram.observe(age_ms / 1000)
        self._sample(MetricKey("AsyncEventAge", function_name), age_ms)

    def async_dropped(self, function_name: str) -> None:
        self.function(function_name).async_events_dropped += 1
        self._sample(MetricKey("AsyncEventsDropped", function_name), 1)

    def dead_letter_error(self, function_name: str) -> None:
        self.async_stats.delivery_failures += 1
        self.function(function_name).dead_letter_errors += 1
        self._sample(MetricKey("DeadLetterErrors", function_name), 1)

    def destination_delivery_failure(self, function_name: str) -> None:
        self.async_stats.delivery_failures += 1
        self.function(function_name).destination_delivery_failures += 1
        self._sample(MetricKey("DestinationDeliveryFailures", function_name), 1)

    # -- from control/ ------------------------------------------------------------------

    def signature_validation_error(self, function_name: str) -> None:
        self.function(function_name).signature_validation_errors += 1
        self._sample(MetricKey("SignatureValidationErrors", function_name), 1)

    # -- for the Prometheus collector -----------------------------------------------------

    def labelled(self) -> Iterator[tuple[tuple[str, str, str], _Labelled]]:
        return iter(list(self._labelled.items()))

    def throttle_counts(self) -> dict[tuple[str, str], int]:
        return dict(self._throttles)

    def init_histograms(self) -> dict[tuple[str, str, str], _Histogram]:
        return dict(self._init)

    def restore_histograms(self) -> dict[tuple[str, str], _Histogram]:
        return dict(self._restore)

    def async_age_histograms(self) -> dict[str, _Histogram]:
        return dict(self._async_age)

    def cost_totals(self) -> dict[tuple[str, str], list[float]]:
        """(function, architecture) -> [requests, GB-seconds, cost in USD]."""
        return {key: list(value) for key, value in self._cost.items()}
