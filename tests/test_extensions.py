"""External and internal extensions, on a real server with real sandboxes on the
runtime images: Lambda's phases (Extension init, Runtime init, Invoke with its
post-runtime part, Shutdown) as extensions see them."""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from typing import Any, Callable

import pytest

from tests.conftest import ROLE, Server
from tests.extension_layers import (
    CRASHING_EXTENSION,
    EXEC_WRAPPER,
    PYTHON_EXTENSION,
    SHELL_EXTENSION,
    extension_layer,
)
from tests.helpers import make_zip

ECHO = make_zip({"app.py": "def handler(event, context):\n    return {'request': context.aws_request_id}\n"})


def publish(lam: Any, files: dict[str, str]) -> str:
    name = f"ext-{uuid.uuid4().hex[:8]}"
    return lam.publish_layer_version(LayerName=name, Content={"ZipFile": extension_layer(files)},
                                     CompatibleRuntimes=["python3.13"])["LayerVersionArn"]


def create(lam: Any, layers: list[str], code: bytes = ECHO, runtime: str = "python3.13",
           handler: str = "app.handler", **extra: Any) -> str:
    name = f"ext-fn-{uuid.uuid4().hex[:8]}"
    lam.create_function(FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler,
                        Code={"ZipFile": code}, Layers=layers, **extra)
    return name


def invoke(lam: Any, name: str, event: dict | None = None) -> tuple[dict, Any]:
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}))
    return response, json.loads(response["Payload"].read())


def messages(server: Server, name: str) -> list[str]:
    logs = server.client("logs")
    try:
        found = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]
    except logs.exceptions.ResourceNotFoundException:
        return []
    return [event["message"] for event in found]


def wait_for(server: Server, name: str, condition: Callable[[list[str]], bool],
             timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = messages(server, name)
        if condition(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def stop_environments(lam: Any, name: str) -> None:
    """SHUTDOWN for the function's environments: a configuration change retires them."""
    lam.update_function_configuration(FunctionName=name, Description=uuid.uuid4().hex)
    invoke(lam, name)  # the new revision's first invocation retires the old environments


def report_of(lines: list[str], request_id: str) -> str:
    return next(line for line in lines if line.startswith(f"REPORT RequestId: {request_id}"))


def test_shell_and_python_extensions_register_get_each_invoke_and_shutdown(lam, server):
    layer = publish(lam, {"extensions/shell-ext": SHELL_EXTENSION,
                          "extensions/py-ext": PYTHON_EXTENSION})
    name = create(lam, [layer])
    request_ids = []
    for _ in range(2):
        response, body = invoke(lam, name)
        assert "FunctionError" not in response, body
        request_ids.append(body["request"])
    stop_environments(lam, name)
    lines = wait_for(server, name, lambda found: sum(
        m.startswith(("shell-ext SHUTDOWN", "py-ext SHUTDOWN")) for m in found) >= 2)
    for extension in ("shell-ext", "py-ext"):
        assert any(m.startswith(f"{extension} registered") for m in lines), lines
        invokes = [json.loads(m.split(" ", 2)[2]) for m in lines
                   if m.startswith(f"{extension} INVOKE ")]
        assert [event["requestId"] for event in invokes][:2] == request_ids
        event = invokes[0]
        assert event["eventType"] == "INVOKE"
        assert event["invokedFunctionArn"].endswith(f":function:{name}")
        assert event["tracing"]["type"] == "X-Amzn-Trace-Id" and event["tracing"]["value"]
        assert event["deadlineMs"] > time.time() * 1000 - 60_000
        shutdown = [json.loads(m.split(" ", 2)[2]) for m in lines
                    if m.startswith(f"{extension} SHUTDOWN ")]
        assert shutdown and shutdown[0]["shutdownReason"] == "spindown"
        assert shutdown[0]["deadlineMs"] > 0
    # Lambda's own record of each registration, in the log stream.
    assert any(m.startswith("EXTENSION\tName: shell-ext\tState: Ready\tEvents: [INVOKE,SHUTDOWN]")
               for m in lines)


def test_post_invoke_work_of_an_extension_is_in_reports_duration_and_billed(lam, server):
    layer = publish(lam, {"extensions/slow-ext": PYTHON_EXTENSION})
    name = create(lam, [layer], Environment={"Variables": {"POST_INVOKE_MS": "300"}})
    invoke(lam, name)  # the cold start, with its Init Duration billed too
    response, body = invoke(lam, name)
    lines = wait_for(server, name, lambda found: any(
        m.startswith(f"REPORT RequestId: {body['request']}") for m in found))
    report = report_of(lines, body["request"])
    duration = float(re.search(r"\tDuration: ([\d.]+) ms", report).group(1))
    billed = int(re.search(r"Billed Duration: (\d+) ms", report).group(1))
    # The caller had its response before the extension's work: while the first
    # environment is still busy with it, the second call may get a new one.
    init = re.search(r"Init Duration: ([\d.]+) ms", report)
    assert duration >= 300, report
    assert billed == math.ceil(duration + (float(init.group(1)) if init else 0)), report


def test_phases_reach_a_telemetry_subscriber_in_lambdas_order(lam, server):
    layer = publish(lam, {"extensions/telemetry-ext": PYTHON_EXTENSION})
    name = create(lam, [layer], Environment={"Variables": {"TELEMETRY_TYPES": "platform"}})
    _, body = invoke(lam, name)
    request_id = body["request"]

    def received(found: list[str]) -> list[dict]:
        return [json.loads(m.split(" ", 2)[2]) for m in found
                if m.startswith("telemetry-ext TELEMETRY ")]

    lines = wait_for(server, name, lambda found: any(
        item["type"] == "platform.report" for item in received(found)))
    items = received(lines)
    phases = [item["type"] for item in items if item["type"] in {
        "platform.initStart", "platform.initRuntimeDone", "platform.initReport",
        "platform.start", "platform.runtimeDone", "platform.report"}]
    assert phases == ["platform.initStart", "platform.initRuntimeDone", "platform.initReport",
                      "platform.start", "platform.runtimeDone", "platform.report"], items
    assert any(m.startswith("telemetry-ext subscribed 200 OK") for m in lines)
    assert "TELEMETRY\tName: telemetry-ext\tState: Subscribed\tTypes: [Platform]" in lines
    report = next(item for item in items if item["type"] == "platform.report")
    assert report["record"]["requestId"] == request_id
    assert report["record"]["status"] == "success"
    # The same figures as the REPORT line.
    line = report_of(lines, request_id)
    metrics = report["record"]["metrics"]
    # REPORT shows two decimals, the record three: the same figure, rounded.
    shown = {key: float(value) for key, value in
             re.findall(r"\t(Duration|Init Duration): ([\d.]+) ms", line)}
    assert abs(shown["Duration"] - metrics["durationMs"]) <= 0.0051
    assert abs(shown["Init Duration"] - metrics["initDurationMs"]) <= 0.0051
    assert f"Billed Duration: {metrics['billedDurationMs']} ms" in line
    assert f"Max Memory Used: {metrics['maxMemoryUsedMB']} MB" in line


def test_an_extension_that_crashes_during_init_fails_the_invocation(lam, server):
    layer = publish(lam, {"extensions/crasher": CRASHING_EXTENSION})
    name = create(lam, [layer])
    response, body = invoke(lam, name)
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Extension.Crash"
    lines = wait_for(server, name, lambda found: any(m.startswith("REPORT") for m in found))
    assert any(m.startswith("INIT_REPORT") and "Error Type: Extension.Crash" in m for m in lines)


def test_an_extension_that_crashes_after_an_invoke_ends_its_environment(lam, server):
    layer = publish(lam, {"extensions/shell-ext": SHELL_EXTENSION})
    name = create(lam, [layer], Environment={"Variables": {"CRASH_AFTER_INVOKE": "1"}})
    # The caller has its response before the extension's post-invoke work.
    response, first = invoke(lam, name)
    assert "FunctionError" not in response, first
    lines = wait_for(server, name, lambda found: any(
        m.startswith(f"REPORT RequestId: {first['request']}") for m in found))
    report = report_of(lines, first["request"])
    assert report.endswith("\tStatus: error\tError Type: Extension.Crash"), report
    # The environment is gone: the next call is a cold start.
    _, second = invoke(lam, name)
    lines = wait_for(server, name, lambda found: any(
        m.startswith(f"REPORT RequestId: {second['request']}") for m in found))
    assert "Init Duration" in report_of(lines, second["request"])


def test_the_runtime_gets_sigterm_at_shutdown_with_extensions(lam, server):
    layer = publish(lam, {"extensions/shell-ext": SHELL_EXTENSION})
    code = make_zip({"app.py": '''
import signal, sys

def on_sigterm(signum, frame):
    print("[runtime] SIGTERM received, cleaning up", flush=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, on_sigterm)

def handler(event, context):
    return {"request": context.aws_request_id}
'''})
    name = create(lam, [layer], code=code)
    invoke(lam, name)
    stop_environments(lam, name)
    lines = wait_for(server, name, lambda found: "[runtime] SIGTERM received, cleaning up" in found
                     and any(m.startswith("shell-ext SHUTDOWN") for m in found))
    assert "[runtime] SIGTERM received, cleaning up" in lines
    assert any(m.startswith("shell-ext SHUTDOWN") for m in lines)


def test_exec_wrapper_runs_the_runtime_and_an_internal_extension_gets_invokes(lam, server):
    layer = publish(lam, {"wrapper.sh": EXEC_WRAPPER})
    code = make_zip({"app.py": '''
import http.client, json, os, threading, time

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
seen = []

def call(method, path, body=None, headers=None):
    connection = http.client.HTTPConnection(API)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    return response, response.read()

response, _ = call("POST", "/2020-01-01/extension/register", json.dumps({"events": ["INVOKE"]}),
                   {"Lambda-Extension-Name": "in-process"})
ext_id = response.getheader("Lambda-Extension-Identifier")
refused, _ = call("POST", "/2020-01-01/extension/register",
                  json.dumps({"events": ["SHUTDOWN"]}), {"Lambda-Extension-Name": "other"})

def loop():
    while True:
        _, body = call("GET", "/2020-01-01/extension/event/next",
                       headers={"Lambda-Extension-Identifier": ext_id})
        seen.append(json.loads(body)["requestId"])

threading.Thread(target=loop, daemon=True).start()

def handler(event, context):
    # The extension gets this invocation's INVOKE event as the handler runs.
    deadline = time.time() + 5
    while context.aws_request_id not in seen and time.time() < deadline:
        time.sleep(0.01)
    return {"wrapped": os.environ.get("WRAPPED_BY"), "seen": list(seen),
            "request": context.aws_request_id, "refused": refused.status}
'''})
    name = create(lam, [layer], code=code,
                  Environment={"Variables": {"AWS_LAMBDA_EXEC_WRAPPER": "/opt/wrapper.sh"}})
    _, first = invoke(lam, name)
    assert first["wrapped"] == "/opt/wrapper.sh"
    # Internal extensions may not subscribe to SHUTDOWN.
    assert first["refused"] == 400
    assert first["request"] in first["seen"]


@pytest.mark.parametrize("runtime,handler,code", [
    ("nodejs24.x", "index.handler",
     {"index.mjs": "export const handler = async (e, c) => ({request: c.awsRequestId});"}),
    ("provided.al2023", "unused", {"bootstrap": r"""#!/bin/bash
while true; do
  headers=$(mktemp)
  curl -sS -D "$headers" -o /dev/null "http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/invocation/next"
  id=$(grep -i Lambda-Runtime-Aws-Request-Id "$headers" | tr -d '\r' | cut -d' ' -f2)
  curl -sS -o /dev/null -d "{\"request\": \"$id\"}" \
    "http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/invocation/$id/response"
done
"""}),
])
def test_a_shell_extension_runs_beside_other_runtimes(lam, server, runtime, handler, code):
    layer = publish(lam, {"extensions/shell-ext": SHELL_EXTENSION})
    name = f"ext-fn-{uuid.uuid4().hex[:8]}"
    lam.create_function(FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler,
                        Code={"ZipFile": make_zip(code, mode=0o755)}, Layers=[layer])
    response, body = invoke(lam, name)
    assert "FunctionError" not in response, body
    lines = wait_for(server, name, lambda found: any(
        m.startswith("shell-ext INVOKE") for m in found))
    assert any(body["request"] in m for m in lines if m.startswith("shell-ext INVOKE")), lines
