"""Metrics: Lambda's CloudWatch metrics per function, as Prometheus scrapes them
(`GET /metrics`) and as `aws cloudwatch` reads them (namespace AWS/Lambda)."""

from __future__ import annotations

import uuid

import boto3
import httpx
import pytest
from botocore.config import Config
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
