"""Function logs through the CloudWatch Logs API, boto3's `logs` client and `lamina logs`."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.conftest import ROLE
from tests.helpers import make_zip

CHATTY = make_zip({"app.py": (
    "print('module loaded')\n"
    "def handler(event, context):\n"
    "    print('handling', event['n'])\n"
    "    return event['n']\n"
)})


@pytest.fixture(scope="module")
def chatty(lam) -> str:
    name = f"logs-{uuid.uuid4().hex[:8]}"
    lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE,
                        Handler="app.handler", Code={"ZipFile": CHATTY})
    for n in range(3):
        lam.invoke(FunctionName=name, Payload=json.dumps({"n": n}))
    return name


def test_function_output_and_platform_lines_reach_the_log_group(server, chatty):
    logs = server.client("logs")
    group = f"/aws/lambda/{chatty}"
    assert group in [g["logGroupName"] for g in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]]
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    assert len(streams) == 1 and "[$LATEST]" in streams[0]["logStreamName"]
    events = logs.get_log_events(logGroupName=group, logStreamName=streams[0]["logStreamName"],
                                 startFromHead=True)["events"]
    messages = [e["message"] for e in events]
    assert messages[0] == "module loaded"
    assert sum(m.startswith("START RequestId: ") for m in messages) == 3
    assert sum(m.startswith("REPORT RequestId: ") for m in messages) == 3
    assert [m for m in messages if m.startswith("handling")] == ["handling 0", "handling 1", "handling 2"]


def test_filter_log_events_matches_terms_across_streams(server, chatty):
    logs = server.client("logs")
    found = logs.filter_log_events(logGroupName=f"/aws/lambda/{chatty}", filterPattern="handling 1")
    assert [e["message"] for e in found["events"]] == ["handling 1"]
    assert found["events"][0]["eventId"]


def test_unknown_log_group_is_resource_not_found_with_status_400(server):
    logs = server.client("logs")
    with pytest.raises(logs.exceptions.ResourceNotFoundException) as info:
        logs.filter_log_events(logGroupName="/aws/lambda/never-existed")
    # The JSON protocol answers every caller's error with 400 (Lambda's would be 404).
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_lamina_logs_prints_the_functions_events(server, chatty):
    result = subprocess.run(
        [sys.executable, "-m", "lamina.cli.main", "logs", chatty],
        env={**os.environ, "LAMINA_ENDPOINT": server.endpoint}, capture_output=True, text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "handling 2" in result.stdout
    assert "REPORT RequestId:" in result.stdout


def test_root_logger_is_lambdas_before_the_function_imports(lam):
    """AWS's documented snippet: the level set at import time holds, records carry
    the request id, and a handler the function adds after Lambda's is its own."""
    code = make_zip({"app.py": (
        "import logging\n"
        "logger = logging.getLogger()\n"
        "logger.setLevel(logging.INFO)\n"
        "assert len(logger.handlers) == 1, logger.handlers\n"
        "def handler(event, context):\n"
        "    logger.info('info %s', 1)\n"
        "    logger.debug('hidden')\n"
        "    return context.aws_request_id\n"
    )})
    name = f"logging-{uuid.uuid4().hex[:8]}"
    lam.create_function(FunctionName=name, Runtime="python3.13", Role=ROLE,
                        Handler="app.handler", Code={"ZipFile": code})
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    answer = lam.invoke(FunctionName=name, LogType="Tail")
    request_id = json.loads(answer["Payload"].read())
    tail = base64.b64decode(answer["LogResult"]).decode()
    lines = [line for line in tail.splitlines() if line.startswith("[INFO]")]
    assert len(lines) == 1 and lines[0].endswith(f"\t{request_id}\tinfo 1")
    assert "hidden" not in tail
