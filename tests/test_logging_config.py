"""LoggingConfig and log capture as Lambda does it: one record one event, JSON
records and level filters, custom log groups and retention, on a real server with
real sandboxes on the runtime images."""

from __future__ import annotations

import io
import json
import re
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import ROLE, Server
from tests.helpers import aws_error, make_zip

PYTHON_SNIPPETS = '''
import logging
import os

logger = logging.getLogger()
logger.setLevel(logging.INFO)


def handler(event, context):
    # AWS's documented examples (Python "Logging" page).
    logger.info("## ENVIRONMENT VARIABLES")
    logger.info(os.environ["AWS_LAMBDA_LOG_GROUP_NAME"])
    logger.debug("not at INFO")
    logger.warning("first line\\nsecond line")
    print("printed line")
    try:
        raise KeyError("missing")
    except KeyError:
        logger.exception("handled")
    if event.get("fail"):
        raise ValueError("boom")
    return context.aws_request_id
'''

NODE_SNIPPETS = '''
export const handler = async (event, context) => {
  console.log("ENVIRONMENT VARIABLES\\n" + JSON.stringify({ group: process.env.AWS_LAMBDA_LOG_GROUP_NAME }, null, 2));
  console.info("info");
  console.warn("warn");
  console.error("error");
  console.debug("debug");
  return context.awsRequestId;
};
'''


def create(lam: Any, files: dict[str, str], runtime: str = "python3.13",
           handler: str = "app.handler", **extra: Any) -> str:
    name = f"logcfg-{uuid.uuid4().hex[:8]}"
    lam.create_function(FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler,
                        Code={"ZipFile": make_zip(files)}, **extra)
    return name


def invoke(lam: Any, name: str, event: dict | None = None) -> tuple[dict, Any]:
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}))
    return response, json.loads(response["Payload"].read())


def events_of(server: Server, group: str, condition: Callable[[list[str]], bool],
              timeout: float = 10.0) -> list[str]:
    logs = server.client("logs")
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = [e["message"] for e in logs.filter_log_events(logGroupName=group)["events"]]
        except logs.exceptions.ResourceNotFoundException:
            found = []
        if condition(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def invocation_events(lines: list[str], request_id: str) -> list[str]:
    """The events between START and END of one invocation."""
    start = next(i for i, m in enumerate(lines) if m.startswith(f"START RequestId: {request_id}"))
    end = next(i for i, m in enumerate(lines) if m.startswith(f"END RequestId: {request_id}"))
    return lines[start + 1:end]


def test_logging_config_defaults_and_switches_as_lambda_keeps_them(lam):
    name = create(lam, {"app.py": "def handler(e, c):\n    return 1\n"})
    config = lam.get_function_configuration(FunctionName=name)["LoggingConfig"]
    assert config == {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{name}"}
    updated = lam.update_function_configuration(FunctionName=name,
                                                LoggingConfig={"LogFormat": "JSON"})
    assert updated["LoggingConfig"] == {"LogFormat": "JSON", "ApplicationLogLevel": "INFO",
                                        "SystemLogLevel": "INFO", "LogGroup": f"/aws/lambda/{name}"}
    partial = lam.update_function_configuration(
        FunctionName=name, LoggingConfig={"ApplicationLogLevel": "DEBUG"})["LoggingConfig"]
    assert partial["ApplicationLogLevel"] == "DEBUG" and partial["SystemLogLevel"] == "INFO"
    back = lam.update_function_configuration(FunctionName=name,
                                             LoggingConfig={"LogFormat": "Text"})
    assert back["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{name}"}


def test_an_unknown_log_format_is_refused_naming_the_field(lam_unchecked):
    name = create(lam_unchecked, {"app.py": "def handler(e, c):\n    return 1\n"})
    with aws_error(lam_unchecked, "ValidationException", 400) as info:
        lam_unchecked.update_function_configuration(FunctionName=name,
                                                    LoggingConfig={"LogFormat": "XML"})
    assert "loggingConfig.logFormat" in info.value.response["Error"]["Message"]


def test_python_logging_snippets_give_lambdas_events(lam, server):
    name = create(lam, {"app.py": PYTHON_SNIPPETS})
    _, request_id = invoke(lam, name)
    lines = events_of(server, f"/aws/lambda/{name}",
                      lambda found: any(m.startswith(f"REPORT RequestId: {request_id}") for m in found))
    events = invocation_events(lines, request_id)
    prefix = re.compile(r"^\[(INFO|WARNING|ERROR)\]\t\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\t" + request_id + "\t")
    assert "" not in events and "\n" not in events  # no empty event after a record
    logged = [m for m in events if prefix.match(m)]
    assert [prefix.sub("", m).rstrip("\n").split("\n")[0] for m in logged] == [
        "## ENVIRONMENT VARIABLES", f"/aws/lambda/{name}", "first line", "handled"]
    # A multi-line message and a traceback are one event each.
    assert prefix.sub("", logged[2]) == "first line\nsecond line\n"
    assert "Traceback (most recent call last):" in logged[3] and "KeyError: 'missing'" in logged[3]
    assert "printed line" in events
    assert len(events) == 5, events


def test_an_unhandled_python_error_is_one_event(lam, server):
    name = create(lam, {"app.py": PYTHON_SNIPPETS})
    response, body = invoke(lam, name, {"fail": True})
    assert body["errorType"] == "ValueError"
    lines = events_of(server, f"/aws/lambda/{name}",
                      lambda found: any(m.startswith("REPORT") for m in found))
    errors = [m for m in lines if m.startswith("[ERROR] ValueError: boom")]
    assert len(errors) == 1
    assert errors[0].startswith("[ERROR] ValueError: boom\nTraceback (most recent call last):\n")
    assert 'raise ValueError("boom")' in errors[0]


def test_json_format_with_warn_keeps_only_json_records_of_warn_and_above(lam, server):
    name = create(lam, {"app.py": PYTHON_SNIPPETS},
                  LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "WARN"})
    _, request_id = invoke(lam, name)
    lines = events_of(server, f"/aws/lambda/{name}", lambda found: any(
        '"platform.report"' in m for m in found))
    records = [json.loads(m) for m in lines]  # every event is a JSON record
    application = [r for r in records if "level" in r]
    system = [r for r in records if "type" in r]
    assert [r["level"] for r in application] == ["WARNING", "ERROR"]
    assert application[0]["message"] == "first line\nsecond line"
    assert application[0]["requestId"] == request_id and application[0]["logger"] == "root"
    assert application[1]["errorType"] == "KeyError" and application[1]["stackTrace"]
    assert [r["type"] for r in system] == ["platform.initStart", "platform.initReport",
                                           "platform.start", "platform.report"]
    report = system[-1]["record"]
    assert report["requestId"] == request_id and report["status"] == "success"
    assert set(report["metrics"]) >= {"durationMs", "billedDurationMs", "memorySizeMB",
                                      "maxMemoryUsedMB", "initDurationMs"}


def test_json_format_sets_lambdas_log_variables(lam):
    code = "import os\ndef handler(e, c):\n    return [os.environ.get('AWS_LAMBDA_LOG_FORMAT'), os.environ.get('AWS_LAMBDA_LOG_LEVEL')]\n"
    name = create(lam, {"app.py": code},
                  LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "ERROR"})
    assert invoke(lam, name)[1] == ["JSON", "ERROR"]


def test_custom_log_group_receives_the_functions_logs(lam, server):
    group = f"/custom/{uuid.uuid4().hex[:8]}"
    name = create(lam, {"app.py": PYTHON_SNIPPETS}, LoggingConfig={"LogGroup": group})
    _, request_id = invoke(lam, name)
    lines = events_of(server, group, lambda found: any(m.startswith("REPORT") for m in found))
    assert any(m.startswith(f"START RequestId: {request_id}") for m in lines)


@pytest.mark.parametrize("log_format", ["Text", "JSON"])
def test_nodejs_console_records_carry_timestamp_request_id_and_level(lam, server, log_format):
    name = create(lam, {"index.mjs": NODE_SNIPPETS}, runtime="nodejs24.x", handler="index.handler",
                  LoggingConfig={"LogFormat": log_format})
    _, request_id = invoke(lam, name)
    lines = events_of(server, f"/aws/lambda/{name}", lambda found: any(
        "REPORT" in m or "platform.report" in m for m in found))
    if log_format == "Text":
        events = invocation_events(lines, request_id)
        pattern = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\t" + request_id + r"\t(\w+)\t")
        assert [pattern.match(m).group(1) for m in events] == ["INFO", "INFO", "WARN", "ERROR", "DEBUG"]
        # A multi-line message is one event.
        assert pattern.sub("", events[0]).startswith("ENVIRONMENT VARIABLES\n{\n  \"group\"")
    else:
        records = [json.loads(m) for m in lines if '"level"' in m]
        # The default ApplicationLogLevel under JSON is INFO: DEBUG is filtered.
        assert [r["level"] for r in records] == ["INFO", "INFO", "WARN", "ERROR"]
        assert all(r["requestId"] == request_id and r["timestamp"].endswith("Z") for r in records)


def test_retention_policy_is_kept_and_expired_events_go(lam, server):
    logs = server.client("logs")
    name = create(lam, {"app.py": "def handler(e, c):\n    print('hello')\n"})
    invoke(lam, name)
    group = f"/aws/lambda/{name}"
    events_of(server, group, lambda found: "hello" in found)
    logs.put_retention_policy(logGroupName=group, retentionInDays=1)
    described = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]
    assert described["retentionInDays"] == 1
    with aws_error(logs, "InvalidParameterException"):
        logs.put_retention_policy(logGroupName=group, retentionInDays=2)
    # An event older than the retention is gone; a fresh one stays.
    old_ms = int((time.time() - 3 * 86400) * 1000)
    logs.create_log_stream(logGroupName=group, logStreamName="old")
    logs.put_log_events(logGroupName=group, logStreamName="old",
                        logEvents=[{"timestamp": old_ms, "message": "ancient"}])
    messages = [e["message"] for e in logs.filter_log_events(logGroupName=group)["events"]]
    assert "ancient" not in messages and "hello" in messages
    logs.delete_retention_policy(logGroupName=group)
    described = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]
    assert "retentionInDays" not in described


POWERTOOLS = '''
from aws_lambda_powertools import Logger

logger = Logger(service="payment")


@logger.inject_lambda_context
def handler(event, context):
    logger.info("Collecting payment")
    logger.info({"operation": "collect_payment", "charge_id": "ch_AZFlk2345C0"})
    return context.aws_request_id
'''


def powertools_layer() -> bytes:
    """Powertools for AWS Lambda (Python) as its own layer zip is laid out: python/..."""
    import aws_lambda_powertools
    import typing_extensions

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        package = Path(aws_lambda_powertools.__file__).parent
        for path in package.rglob("*.py"):
            archive.write(path, f"python/aws_lambda_powertools/{path.relative_to(package)}")
        archive.write(typing_extensions.__file__, "python/typing_extensions.py")
    return buffer.getvalue()


def test_a_powertools_logger_gives_one_event_per_record(lam, server):
    pytest.importorskip("aws_lambda_powertools")
    layer = lam.publish_layer_version(LayerName=f"powertools-{uuid.uuid4().hex[:6]}",
                                      Content={"ZipFile": powertools_layer()})["LayerVersionArn"]
    name = create(lam, {"app.py": POWERTOOLS}, Layers=[layer])
    response, request_id = invoke(lam, name)
    assert "FunctionError" not in response, request_id
    lines = events_of(server, f"/aws/lambda/{name}",
                      lambda found: any(m.startswith(f"REPORT RequestId: {request_id}") for m in found))
    events = invocation_events(lines, request_id)
    records = [json.loads(m) for m in events]
    assert [r["message"] for r in records] == [
        "Collecting payment", {"operation": "collect_payment", "charge_id": "ch_AZFlk2345C0"}]
    assert all(r["service"] == "payment" and r["function_request_id"] == request_id
               for r in records)
