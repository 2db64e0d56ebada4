"""The stored metrics: retention (one-minute rows older than the minute retention are
folded into one-hour rows, statistics and percentiles kept; rows past the retention
are dropped) and GetMetricData's pages. Driven through the metrics model, a real
SQLite store and the CloudWatch reads, with report timestamps in the past instead
of a clock of our own."""

from __future__ import annotations

import asyncio
import time

from lamina.observe.cloudwatch import CloudWatchMetrics
from lamina.observe.events import InvokeReport
from lamina.observe.metric_archive import MetricArchive, Retention
from lamina.observe.metrics import Metrics, Prices
from lamina.store.database import open_database
from lamina.store.metrics import MetricStore

DAY = 86400
FUNCTION = (("FunctionName", "fn"),)


def report(at_s: float, duration_ms: float, status: str = "success") -> InvokeReport:
    return InvokeReport("id", status, duration_ms, int(duration_ms) + 1, 128, 40, "Root=1-x",
                        timestamp_ms=int(at_s * 1000),
                        invoked_function_arn="arn:aws:lambda:us-east-1:000000000000:function:fn")


def test_old_minutes_fold_into_hours_and_expire_past_retention(tmp_path):
    engine = open_database(f"sqlite:///{tmp_path / 'metrics.db'}")
    store = MetricStore(engine)
    metrics = Metrics(Prices(0.0000166667, 0.0000133334, 0.0000002))
    archive = MetricArchive(metrics, store, Retention(flush_s=10, minute_retention_s=2 * DAY,
                                                      retention_s=10 * DAY))
    listener = metrics.listener_for("fn", "$LATEST")
    now = time.time()
    three_days_ago = (now - 3 * DAY) // 3600 * 3600
    for offset_s, duration in ((120, 10.0), (600, 20.0), (1200, 300.0)):
        listener(report(three_days_ago + offset_s, duration, "error" if duration > 100 else "success"))
    listener(report(now - 20 * DAY, 5.0))
    listener(report(now - 60, 7.0))
    asyncio.run(archive.flush())
    assert {r.period for r in store.rows("AWS/Lambda", "Duration", FUNCTION, 0, int(now) + 60)} == {60}

    archive.maintain(now)

    rows = store.rows("AWS/Lambda", "Duration", FUNCTION, 0, int(now) + 60)
    assert [(r.period, r.timestamp, r.count) for r in rows] == [
        (3600, three_days_ago, 3), (60, int(now - 60) // 60 * 60, 1)]
    cloudwatch = CloudWatchMetrics(archive)
    answer = asyncio.run(cloudwatch.get_metric_statistics({
        "Namespace": "AWS/Lambda", "MetricName": "Duration", "Dimensions": [
            {"Name": "FunctionName", "Value": "fn"}],
        "StartTime": now - 4 * DAY, "EndTime": now, "Period": 3600,
        "ExtendedStatistics": ["p100", "p50"]}))
    old = answer["Datapoints"][0]
    assert old["Timestamp"].timestamp() == three_days_ago
    assert old["ExtendedStatistics"]["p100"] == 300.0
    assert 19.0 <= old["ExtendedStatistics"]["p50"] <= 21.0
    errors = asyncio.run(cloudwatch.get_metric_statistics({
        "Namespace": "AWS/Lambda", "MetricName": "Errors", "Dimensions": [
            {"Name": "FunctionName", "Value": "fn"}],
        "StartTime": now - 4 * DAY, "EndTime": now, "Period": 86400,
        "Statistics": ["Sum", "SampleCount"]}))
    assert sum(p["Sum"] for p in errors["Datapoints"]) == 1
    assert sum(p["SampleCount"] for p in errors["Datapoints"]) == 4
    # Past the ten days kept: nothing left of the invocation twenty days ago.
    assert store.rows("AWS/Lambda", "Duration", FUNCTION, 0, int(now - 10 * DAY)) == []
    listed = asyncio.run(cloudwatch.list_metrics({"Namespace": "Lamina/Cost"}))
    assert {m["MetricName"] for m in listed["Metrics"]} == {"GBSeconds", "Requests", "Cost"}
    engine.dispose()


def test_get_metric_data_pages_by_max_datapoints(tmp_path):
    engine = open_database(f"sqlite:///{tmp_path / 'metrics.db'}")
    metrics = Metrics()
    archive = MetricArchive(metrics, MetricStore(engine), Retention(10, 2 * DAY, 10 * DAY))
    listener = metrics.listener_for("fn", "$LATEST")
    now = time.time()
    for minutes_ago in (1, 2, 3, 4, 5):
        listener(report(now - minutes_ago * 60, 1.0))
    cloudwatch = CloudWatchMetrics(archive)
    query = {"MetricDataQueries": [
        {"Id": f"q{i}", "MetricStat": {"Metric": {"Namespace": "AWS/Lambda", "MetricName": name,
         "Dimensions": [{"Name": "FunctionName", "Value": "fn"}]}, "Period": 60, "Stat": "Sum"}}
        for i, name in enumerate(("Invocations", "Errors"))],
        "StartTime": now - 600, "EndTime": now, "MaxDatapoints": 3, "ScanBy": "TimestampAscending"}
    pages, token = [], None
    while True:
        page = asyncio.run(cloudwatch.get_metric_data({**query, **({"NextToken": token} if token else {})}))
        pages.append(page)
        token = page.get("NextToken")
        if token is None:
            break
    assert len(pages) == 4  # ten datapoints, three a page
    invocations = [v for p in pages for r in p["MetricDataResults"] if r["Id"] == "q0" for v in r["Values"]]
    errors = [v for p in pages for r in p["MetricDataResults"] if r["Id"] == "q1" for v in r["Values"]]
    assert invocations == [1.0] * 5 and errors == [0.0] * 5
    stamps = [t for p in pages for r in p["MetricDataResults"] if r["Id"] == "q0" for t in r["Timestamps"]]
    assert stamps == sorted(stamps)
    assert [r["StatusCode"] for r in pages[0]["MetricDataResults"]] == ["PartialData", "PartialData"]
    assert [r["StatusCode"] for r in pages[-1]["MetricDataResults"]] == ["Complete", "Complete"]
    engine.dispose()
