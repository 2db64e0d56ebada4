"""Metrics: Lambda's CloudWatch metrics per function, as Prometheus scrapes them
(`GET /metrics`) and as `aws cloudwatch` reads them (namespace AWS/Lambda)."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import boto3
import botocore.loaders
import botocore.session
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROLE, make_zip

HANDLER = make_zip({"app.py": (
    "import time\n"
    "def handler(event, context):\n"
    "    time.sleep(event.get('sleep', 0))\n"
    "    if event.get('fail'):\n"
    "        raise ValueError('asked to fail')\n"
    "    return {'ok': True}\n"
)})


def create(lam, name: str | None = None, **overrides: object) -> str:
    name = name or f"metrics-{uuid.uuid4().hex[:8]}"
    lam.create_function(FunctionName=name, Runtime="python3.13", Role=ROLE,
                        Handler="app.handler", Code={"ZipFile": HANDLER}, **overrides)
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    return name


def scrape(endpoint: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of `GET /metrics`, by sample name then sorted labels."""
    response = httpx.get(endpoint + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def no_retries(server):
    """A Lambda client that sends each call once (boto3 retries a 429 by itself)."""
    return boto3.client("lambda", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test",
                        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))


def run(lam, name: str, invocations: int, errors: int, throttles: int) -> None:
    """`invocations` invocations, `errors` of them failing, then `throttles` refused calls
    (`lam` must not retry them)."""
    for i in range(invocations):
        payload = b'{"fail": true}' if i < errors else b"{}"
        answer = lam.invoke(FunctionName=name, Payload=payload)
        assert ("FunctionError" in answer) == (i < errors)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    for _ in range(throttles):
        with pytest.raises(lam.exceptions.TooManyRequestsException):
            lam.invoke(FunctionName=name, Payload=b"{}")
    lam.delete_function_concurrency(FunctionName=name)


def test_metrics_endpoint_counts_invocations_errors_throttles_and_durations(server, lam):
    name = create(lam)
    run(no_retries(server), name, invocations=5, errors=2, throttles=3)
    samples = scrape(server.endpoint)
    call = (("executed_version", "$LATEST"), ("function_name", name), ("resource", name))
    assert samples["lambda_invocations_total"][call] == 5
    assert samples["lambda_errors_total"][call] == 2
    assert samples["lambda_throttles_total"][(("function_name", name), ("resource", name))] == 3
    assert samples["lambda_duration_seconds_count"][call] == 5
    buckets = {dict(labels)["le"]: value for labels, value in samples["lambda_duration_seconds_bucket"].items()
               if dict(labels)["function_name"] == name}
    assert buckets["+Inf"] == 5
    assert samples["lambda_duration_seconds_sum"][call] > 0
    cold = (("executed_version", "$LATEST"), ("function_name", name))
    assert samples["lambda_cold_starts_total"][cold] >= 1
    assert samples["lambda_concurrent_executions"][(("function_name", name),)] == 0
    # Cost: a request each, and billed time x 128 MB.
    billed = (("architecture", "x86_64"), ("function_name", name))
    assert samples["lambda_billed_requests_total"][billed] == 5
    assert samples["lambda_billed_gb_seconds_total"][billed] > 0


def test_a_call_by_alias_is_counted_under_its_resource_and_executed_version(server, lam):
    name = create(lam)
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    lam.invoke(FunctionName=name, Qualifier="live", Payload=b"{}")
    samples = scrape(server.endpoint)
    labels = (("executed_version", version), ("function_name", name), ("resource", f"{name}:live"))
    assert samples["lambda_invocations_total"][labels] == 1


# -- the CloudWatch API (namespace AWS/Lambda) ------------------------------------------

AWS_CLI = shutil.which("aws")


def cloudwatch(server, protocol: str = "json", tmp_path: Path | None = None):
    """boto3's CloudWatch client; `protocol="query"` makes it speak the query protocol
    (form-encoded, XML answers), as older SDKs and CLIs do, from a copy of botocore's
    own model that declares only that protocol."""
    session = botocore.session.Session()
    if protocol == "query":
        assert tmp_path is not None
        session.set_config_variable("data_path", str(query_model(tmp_path)))
    return boto3.Session(botocore_session=session).client(
        "cloudwatch", endpoint_url=server.endpoint, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}))


def query_model(tmp_path: Path) -> Path:
    """A data path whose cloudwatch model speaks only the query protocol."""
    loader = botocore.loaders.Loader()
    model = loader.load_service_model("cloudwatch", "service-2")
    model["metadata"]["protocol"] = "query"
    model["metadata"]["protocols"] = ["query"]
    version = model["metadata"]["apiVersion"]
    target = tmp_path / "models" / "cloudwatch" / version
    target.mkdir(parents=True, exist_ok=True)
    (target / "service-2.json").write_text(json.dumps(model))
    return tmp_path / "models"


def window() -> dict[str, datetime.datetime]:
    now = datetime.datetime.now(datetime.timezone.utc)
    return {"StartTime": now - datetime.timedelta(minutes=30),
            "EndTime": now + datetime.timedelta(minutes=1)}


def sums(cw, name: str, metric: str, stat: str = "Sum", **dims: str) -> float:
    dimensions = [{"Name": "FunctionName", "Value": name}] + [
        {"Name": k, "Value": v} for k, v in dims.items()]
    answer = cw.get_metric_statistics(Namespace="AWS/Lambda", MetricName=metric,
                                      Dimensions=dimensions, Period=60, Statistics=[stat],
                                      **window())
    return sum(point[stat] for point in answer["Datapoints"])


def cli_sum(server, name: str, metric: str, extra_env: dict[str, str] | None = None) -> float:
    start, end = window().values()
    out = subprocess.run(
        [AWS_CLI, "cloudwatch", "get-metric-statistics", "--namespace", "AWS/Lambda",
         "--metric-name", metric, "--dimensions", f"Name=FunctionName,Value={name}",
         "--start-time", start.isoformat(), "--end-time", end.isoformat(),
         "--period", "60", "--statistics", "Sum", "--endpoint-url", server.endpoint,
         "--output", "json"],
        env={**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
             "AWS_DEFAULT_REGION": "us-east-1", **(extra_env or {})},
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["Label"] == metric
    return sum(point["Sum"] for point in answer["Datapoints"])


def test_get_metric_statistics_sums_invocations_errors_and_throttles(server, lam):
    name = create(lam)
    run(no_retries(server), name, invocations=5, errors=2, throttles=3)
    cw = cloudwatch(server)
    assert sums(cw, name, "Invocations") == 5
    assert sums(cw, name, "Errors") == 2
    assert sums(cw, name, "Throttles") == 3
    assert sums(cw, name, "Duration", "SampleCount") == 5
    # Resource names a version or an alias: an unqualified call has none.
    assert sums(cw, name, "Invocations", Resource=name) == 0
    answer = cw.get_metric_statistics(
        Namespace="AWS/Lambda", MetricName="Duration", Period=3600, ExtendedStatistics=["p99", "p50"],
        Dimensions=[{"Name": "FunctionName", "Value": name}], **window())
    points = answer["Datapoints"]
    assert points and all(p["Unit"] == "Milliseconds" for p in points)
    assert all(0 < p["ExtendedStatistics"]["p50"] <= p["ExtendedStatistics"]["p99"] for p in points)


def test_percentiles_come_from_the_stored_distribution(server, lam):
    name = create(lam)
    for sleep in (0, 0, 0, 0, 0.3):
        lam.invoke(FunctionName=name, Payload=json.dumps({"sleep": sleep}).encode())
    answer = cloudwatch(server).get_metric_statistics(
        Namespace="AWS/Lambda", MetricName="Duration", Period=86400,
        ExtendedStatistics=["p50", "p100"], Dimensions=[{"Name": "FunctionName", "Value": name}],
        **window())
    stats = [p["ExtendedStatistics"] for p in answer["Datapoints"]]
    # One datapoint, unless the invocations straddled midnight UTC.
    assert max(s["p100"] for s in stats) >= 300
    assert min(s["p50"] for s in stats) < 300


@pytest.mark.skipif(AWS_CLI is None, reason="the AWS CLI is not installed")
def test_the_aws_cli_and_boto3_read_the_same_sums_over_both_protocols(server, lam, tmp_path):
    name = create(lam)
    run(no_retries(server), name, invocations=4, errors=1, throttles=2)
    json_client, query_client = cloudwatch(server), cloudwatch(server, "query", tmp_path)
    for metric, expected in (("Invocations", 4), ("Errors", 1), ("Throttles", 2)):
        assert sums(json_client, name, metric) == expected
        assert sums(query_client, name, metric) == expected
        assert cli_sum(server, name, metric) == expected
        assert cli_sum(server, name, metric, {"AWS_DATA_PATH": str(query_model(tmp_path))}) == expected


def test_get_metric_data_and_list_metrics_over_both_protocols(server, lam, tmp_path):
    name = create(lam)
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    for _ in range(3):
        lam.invoke(FunctionName=name, Qualifier="live", Payload=b"{}")
    alias = [{"Name": "FunctionName", "Value": name}, {"Name": "Resource", "Value": f"{name}:live"},
             {"Name": "ExecutedVersion", "Value": version}]
    for cw in (cloudwatch(server), cloudwatch(server, "query", tmp_path)):
        answer = cw.get_metric_data(MetricDataQueries=[
            {"Id": "calls", "MetricStat": {"Metric": {"Namespace": "AWS/Lambda",
             "MetricName": "Invocations", "Dimensions": alias}, "Period": 60, "Stat": "Sum"}},
            {"Id": "slowest", "Label": "slowest", "MetricStat": {"Metric": {
             "Namespace": "AWS/Lambda", "MetricName": "Duration",
             "Dimensions": alias[:1]}, "Period": 60, "Stat": "p99"}},
        ], **window())
        calls, slowest = answer["MetricDataResults"]
        assert (calls["Id"], calls["Label"], calls["StatusCode"]) == ("calls", "Invocations", "Complete")
        assert sum(calls["Values"]) == 3
        assert len(calls["Timestamps"]) == len(calls["Values"])
        assert slowest["Label"] == "slowest" and all(v > 0 for v in slowest["Values"])
        listed = [m for page in cw.get_paginator("list_metrics").paginate(
            Namespace="AWS/Lambda", Dimensions=[{"Name": "FunctionName", "Value": name}])
            for m in page["Metrics"]]
        seen = {(m["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"])))
                for m in listed}
        assert ("Invocations", ((("ExecutedVersion", version), ("FunctionName", name),
                                 ("Resource", f"{name}:live")))) in seen
        assert ("Duration", (("FunctionName", name),)) in seen
        assert all(m["Namespace"] == "AWS/Lambda" for m in listed)


def test_bad_requests_are_refused_naming_the_parameter(server, tmp_path):
    base = {"Namespace": "AWS/Lambda", "MetricName": "Invocations", **window()}
    for cw in (cloudwatch(server), cloudwatch(server, "query", tmp_path)):
        with pytest.raises(ClientError) as refused:
            cw.get_metric_statistics(Period=30, Statistics=["Sum"], **base)
        assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"
        assert "Period" in refused.value.response["Error"]["Message"]
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        with pytest.raises(ClientError) as refused:
            cw.get_metric_statistics(Period=60, Statistics=["Sum"], **{
                **base, "StartTime": base["EndTime"], "EndTime": base["StartTime"]})
        assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"
        assert "StartTime" in refused.value.response["Error"]["Message"]
        with pytest.raises(ClientError) as refused:
            cw.get_metric_statistics(Period=60, **base)
        assert refused.value.response["Error"]["Code"] == "MissingParameter"
        with pytest.raises(ClientError) as refused:
            cw.get_metric_statistics(Period=60, Statistics=["Sum"], **{
                **base, "StartTime": base["EndTime"] - datetime.timedelta(days=2)})
        assert refused.value.response["Error"]["Code"] == "InvalidParameterCombination"
        assert "1,440" in refused.value.response["Error"]["Message"]
        with pytest.raises(ClientError) as refused:
            cw.get_metric_data(MetricDataQueries=[{"Id": "a", "MetricStat": {"Metric": {
                "Namespace": "AWS/Lambda", "MetricName": "Duration"}, "Period": 60,
                "Stat": "median"}}], **window())
        assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"
        assert "MetricDataQueries.member.1.MetricStat.Stat" in refused.value.response["Error"]["Message"]
    unchecked = server.client("cloudwatch", validate=False)
    with pytest.raises(ClientError) as refused:
        unchecked.get_metric_statistics(Namespace="AWS/Lambda", Period=60, Statistics=["Sum"],
                                        **window())
    assert refused.value.response["Error"]["Code"] == "MissingParameter"
    assert "MetricName" in refused.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as refused:
        unchecked.get_metric_statistics(Period=60, Statistics=["Median"], **base)
    assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert "statistics" in refused.value.response["Error"]["Message"].lower()


def test_a_malformed_query_request_gets_an_xml_error_not_a_500(server):
    form = {"Action": "GetMetricStatistics", "Version": "2010-08-01", "Namespace": "AWS/Lambda",
            "MetricName": "Invocations", "StartTime": "yesterday", "EndTime": "2026-01-01T00:00:00Z",
            "Period": "60", "Statistics.member.1": "Sum"}
    for changes, code, named in (
        ({}, "InvalidParameterValue", "StartTime"),
        ({"Period": "sixty"}, "InvalidParameterValue", "sixty"),
        ({"Action": "PutMetricAlarmz"}, "UnknownOperationException", "PutMetricAlarmz"),
        ({"Version": "2009-01-01"}, "InvalidParameterValue", "Version"),
    ):
        answer = httpx.post(server.endpoint + "/", data={**form, **changes})
        assert answer.status_code == 400, answer.text
        assert answer.headers["content-type"].startswith("text/xml")
        assert f"<Code>{code}</Code>" in answer.text
        assert named in answer.text


def test_metrics_survive_a_restart(start_server):
    server = start_server({"LAMINA_METRICS_FLUSH_S": "3600"}, name="metrics-restart")
    lam = server.client()
    name = create(lam)
    run(no_retries(server), name, invocations=3, errors=1, throttles=1)
    # Nothing was flushed yet (an hour between flushes): what is stored was
    # written when the server stopped.
    server.stop()
    server.start()
    cw = cloudwatch(server)
    assert sums(cw, name, "Invocations") == 3
    assert sums(cw, name, "Errors") == 1
    assert sums(cw, name, "Throttles") == 1
    assert sums(cw, name, "Duration", "SampleCount") == 3


def stored_invocations(server, name: str) -> float:
    """Invocations of `name` written to the server's database so far."""
    with contextlib.closing(sqlite3.connect(server.data_dir / "lamina.db")) as db:
        row = db.execute(
            "SELECT COALESCE(SUM(sum), 0) FROM metric_data WHERE namespace = 'AWS/Lambda' "
            "AND metric_name = 'Invocations' AND dimensions = ?",
            (json.dumps([["FunctionName", name]], separators=(",", ":")),)).fetchone()
    return row[0]


def test_metrics_flushed_before_a_crash_survive_it(start_server):
    server = start_server({"LAMINA_METRICS_FLUSH_S": "0.2"}, name="metrics-crash")
    lam = server.client()
    name = create(lam)
    for _ in range(2):
        lam.invoke(FunctionName=name, Payload=b"{}")
    deadline = time.monotonic() + 30
    while stored_invocations(server, name) < 2:
        assert time.monotonic() < deadline, "the flush did not write the invocations"
        time.sleep(0.1)
    server.stop(kill=True)
    server.start()
    assert sums(cloudwatch(server), name, "Invocations") == 2
