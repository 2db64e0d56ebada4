"""The metrics model in Prometheus' exposition format (`GET /metrics`).

A custom collector: the model keeps plain numbers (observe/metrics.py) and the
metric families are built only when scraped, so counting an invocation costs no
prometheus-client call and no lock. Names follow Prometheus' conventions (base
units, `_total` counters); labels are Lambda's dimensions in snake_case:

- `function_name`: FunctionName;
- `resource`: Resource, the function as it was called (`NAME` unqualified,
  `NAME:ALIAS` or `NAME:VERSION`);
- `executed_version`: ExecutedVersion, the version that ran;
- `initialization_type`: on-demand | provisioned-concurrency | snap-start (a
  SnapStart version's one INIT, when it is published; its cold starts are restores);
- `architecture`: x86_64 | arm64 (cost).
"""

from __future__ import annotations

from typing import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from lamina.observe.metrics import DURATION_BUCKETS_S, Metrics, _Histogram

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BOUNDS = [str(b) for b in DURATION_BUCKETS_S] + ["+Inf"]


def _buckets(histogram: _Histogram) -> list[tuple[str, float]]:
    total = 0
    cumulative = []
    for bound, count in zip(_BOUNDS, histogram.counts):
        total += count
        cumulative.append((bound, float(total)))
    return cumulative


class PrometheusCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        m = self.metrics
        call = ["function_name", "resource", "executed_version"]
        invocations = CounterMetricFamily(
            "lambda_invocations", "Invocations that ran (success or function error)", labels=call)
        errors = CounterMetricFamily(
            "lambda_errors", "Invocations that ended in a function error", labels=call)
        duration = HistogramMetricFamily(
            "lambda_duration_seconds", "Invocation duration, as REPORT's Duration", labels=call)
        for labels, series in m.labelled():
            values = list(labels)
            invocations.add_metric(values, series.invocations)
            errors.add_metric(values, series.errors)
            duration.add_metric(values, _buckets(series.duration), series.duration.sum)
        yield from (invocations, errors, duration)

        throttles = CounterMetricFamily("lambda_throttles", "Calls refused with 429",
                                        labels=["function_name", "resource"])
        for (name, resource), count in m.throttle_counts().items():
            throttles.add_metric([name, resource], count)
        yield throttles

        init_labels = ["function_name", "executed_version", "initialization_type"]
        inits = HistogramMetricFamily("lambda_init_duration_seconds",
                                      "INIT phase duration (on-demand ones are cold starts)",
                                      labels=init_labels)
        cold = CounterMetricFamily("lambda_cold_starts", "On-demand INIT phases",
                                   labels=["function_name", "executed_version"])
        for (name, version, kind), histogram in m.init_histograms().items():
            inits.add_metric([name, version, kind], _buckets(histogram), histogram.sum)
            if kind == "on-demand":
                cold.add_metric([name, version], sum(histogram.counts))
        yield from (inits, cold)
        restores = HistogramMetricFamily("lambda_restore_duration_seconds",
                                         "SnapStart restores (a SnapStart version's cold starts)",
                                         labels=["function_name", "executed_version"])
        for (name, version), histogram in m.restore_histograms().items():
            restores.add_metric([name, version], _buckets(histogram), histogram.sum)
        yield restores

        per_function = ["function_name"]
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "concurrent_executions": GaugeMetricFamily(
                "lambda_concurrent_executions", "Executions running now", labels=per_function),
            "provisioned_concurrent_executions": GaugeMetricFamily(
                "lambda_provisioned_concurrent_executions",
                "Executions running on provisioned concurrency now", labels=per_function),
            "provisioned_concurrency_invocations": CounterMetricFamily(
                "lambda_provisioned_concurrency_invocations",
                "Invocations run on provisioned concurrency", labels=per_function),
            "provisioned_concurrency_spillover_invocations": CounterMetricFamily(
                "lambda_provisioned_concurrency_spillover_invocations",
                "Invocations beyond provisioned concurrency, run on demand", labels=per_function),
            "async_events_received": CounterMetricFamily(
                "lambda_async_events_received", "Asynchronous events queued",
                labels=per_function),
            "async_events_dropped": CounterMetricFamily(
                "lambda_async_events_dropped", "Asynchronous events given up",
                labels=per_function),
            "dead_letter_errors": CounterMetricFamily(
                "lambda_dead_letter_errors", "Dead letters that could not be sent",
                labels=per_function),
            "destination_delivery_failures": CounterMetricFamily(
                "lambda_destination_delivery_failures",
                "Invocation records that could not reach their destination",
                labels=per_function),
            "signature_validation_errors": CounterMetricFamily(
                "lambda_signature_validation_errors",
                "Deployments with a failed code signature check, allowed by the Warn policy",
                labels=per_function),
        }
        for name, totals in m.snapshot().items():
            for field, family in families.items():
                family.add_metric([name], getattr(totals, field))
        yield from families.values()

        utilization = GaugeMetricFamily(
            "lambda_provisioned_concurrency_utilization",
            "Provisioned executions running / provisioned concurrency", labels=per_function)
        snapshot = m.snapshot()
        for name, allocated in m.provisioned_allocated().items():
            if allocated:
                running = snapshot[name].provisioned_concurrent_executions if name in snapshot else 0
                utilization.add_metric([name], running / allocated)
        yield utilization

        age = HistogramMetricFamily("lambda_async_event_age_seconds",
                                    "Time from an event's queueing to each attempt",
                                    labels=per_function)
        for name, histogram in m.async_age_histograms().items():
            age.add_metric([name], _buckets(histogram), histogram.sum)
        yield age

        for key, value in m.account_gauges().items():
            snake = "".join("_" + c.lower() if c.isupper() else c for c in key).lstrip("_")
            yield GaugeMetricFamily(f"lambda_account_{snake}", f"{key} of the whole account",
                                    value=value)

        cost_labels = ["function_name", "architecture"]
        requests = CounterMetricFamily("lambda_billed_requests", "Requests billed",
                                       labels=cost_labels)
        compute = CounterMetricFamily("lambda_billed_gb_seconds",
                                      "Billed duration x memory, in GB-seconds", labels=cost_labels)
        cost = CounterMetricFamily("lambda_cost_usd", "Requests and compute at the configured prices",
                                   labels=cost_labels)
        for (name, architecture), (n, gb_s, usd) in m.cost_totals().items():
            requests.add_metric([name, architecture], n)
            compute.add_metric([name, architecture], gb_s)
            cost.add_metric([name, architecture], usd)
        yield from (requests, compute, cost)


def exposition(metrics: Metrics) -> bytes:
    """The whole model as one scrape's body."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PrometheusCollector(metrics))
    return generate_latest(registry)
