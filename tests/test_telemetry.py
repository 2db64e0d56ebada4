"""The Telemetry API and the Logs API, subscribed to by extensions inside real
sandboxes: what a subscriber's listener at sandbox.localdomain receives."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from tests.conftest import ROLE
from tests.extension_layers import PYTHON_EXTENSION, SHELL_EXTENSION, extension_layer
from tests.helpers import make_zip

# The function reports what the subscriber's listener wrote to /tmp (the sandbox's
# own, shared by the function and its extensions), once `wanted` types are there.
READER = '''
import json, os, time

def handler(event, context):
    print("function says hello")
    deadline = time.time() + 2
    while True:
        try:
            with open("/tmp/telemetry.jsonl") as found:
                items = [json.loads(line) for line in found]
        except FileNotFoundError:
            items = []
        types = {item["type"] for item in items}
        if set(event.get("wanted", [])) <= types or time.time() > deadline:
            return {"request": context.aws_request_id, "items": items}
        time.sleep(0.02)
'''

PROBE = '''
import http.client, json, os, socket, threading

API = os.environ["AWS_LAMBDA_RUNTIME_API"]


def call(method, path, body=None, headers=None):
    connection = http.client.HTTPConnection(API)
    connection.request(method, path, body=json.dumps(body) if body is not None else None,
                       headers=headers or {})
    response = connection.getresponse()
    body = response.read()
    try:
        body = json.loads(body)
    except ValueError:
        body = body.decode()  # a subscription is answered with a plain "OK"
    return response.status, response.getheader("Lambda-Extension-Identifier"), body


# An internal extension: registered from the runtime's process, then in event/next.
_, ext_id, _ = call("POST", "/2020-01-01/extension/register", {"events": []},
                    {"Lambda-Extension-Name": "probe"})
threading.Thread(target=call, args=("GET", "/2020-01-01/extension/event/next", None,
                                    {"Lambda-Extension-Identifier": ext_id}), daemon=True).start()
subscription = {"schemaVersion": "2022-12-13", "types": ["platform"],
                "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:4243"}}


def handler(event, context):
    mine = {"Lambda-Extension-Identifier": ext_id}
    return {
        "resolved": socket.gethostbyname("sandbox.localdomain"),
        "no_identifier": call("PUT", "/2022-07-01/telemetry", subscription)[::2],
        "unknown_identifier": call("PUT", "/2022-07-01/telemetry", subscription,
                                   {"Lambda-Extension-Identifier": "nope"})[::2],
        "bad_type": call("PUT", "/2022-07-01/telemetry", {**subscription, "types": ["kernel"]},
                         mine)[::2],
        "bad_buffering": call("PUT", "/2022-07-01/telemetry",
                              {**subscription, "buffering": {"timeoutMs": 5}}, mine)[::2],
        "accepted": call("PUT", "/2022-07-01/telemetry", subscription, mine)[0],
        "late_registration": call("POST", "/2020-01-01/extension/register", {"events": []},
                                  {"Lambda-Extension-Name": "late"})[::2],
    }
'''


def run(lam: Any, layers: list[str], code: str, variables: dict[str, str],
        event: dict | None = None) -> dict:
    name = f"tel-{uuid.uuid4().hex[:8]}"
    lam.create_function(FunctionName=name, Runtime="python3.13", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": code})}, Layers=layers,
                        Environment={"Variables": variables}, Timeout=10)
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}))
    assert "FunctionError" not in response, response["Payload"].read()
    return json.loads(response["Payload"].read())


def invoke_until(lam: Any, name: str, wanted: list[str], timeout: float = 20.0) -> dict:
    """Invoke until the subscriber's records hold every `wanted` type: records of an
    invocation arrive after it, and the next call may meet a new environment while
    the last one finishes its post-invoke work."""
    deadline = time.monotonic() + timeout
    while True:
        response = lam.invoke(FunctionName=name, Payload=json.dumps({"wanted": wanted}))
        body = json.loads(response["Payload"].read())
        assert "FunctionError" not in response, body
        if {item["type"] for item in body["items"]} >= set(wanted) or time.monotonic() > deadline:
            return body


def layer(lam: Any, files: dict[str, str]) -> str:
    return lam.publish_layer_version(
        LayerName=f"tel-{uuid.uuid4().hex[:8]}",
        Content={"ZipFile": extension_layer(files)})["LayerVersionArn"]


def test_function_and_extension_streams_reach_the_subscriber(lam):
    arn = layer(lam, {"extensions/subscriber": PYTHON_EXTENSION,
                      "extensions/shell-ext": SHELL_EXTENSION})
    first = run(lam, [arn], READER, {"TELEMETRY_TYPES": "platform,function,extension",
                                     "TELEMETRY_FILE": "/tmp/telemetry.jsonl"},
                {"wanted": ["extension", "platform.initReport"]})
    items = first["items"]
    extension_lines = [item["record"] for item in items if item["type"] == "extension"]
    assert any(line.startswith("shell-ext registered") for line in extension_lines), items
    # The function's own output is the function stream, not the extension stream.
    assert not any("function says hello" in line for line in extension_lines)
    for item in items:
        assert item["time"].endswith("Z") and "T" in item["time"]
    subscription = [item for item in items if item["type"] == "platform.extension"]
    assert {item["record"]["name"] for item in subscription} == {"subscriber", "shell-ext"}


def test_the_function_stream_carries_each_record_once(lam):
    arn = layer(lam, {"extensions/subscriber": PYTHON_EXTENSION})
    name = f"tel-{uuid.uuid4().hex[:8]}"
    lam.create_function(FunctionName=name, Runtime="python3.13", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": READER})}, Layers=[arn],
                        Environment={"Variables": {"TELEMETRY_TYPES": "function",
                                                   "TELEMETRY_FILE": "/tmp/telemetry.jsonl"}})
    body = invoke_until(lam, name, ["function"])
    records = [item["record"] for item in body["items"] if item["type"] == "function"]
    assert "function says hello" in records
    assert all(item["type"] == "function" for item in body["items"])


def test_the_logs_api_delivers_platform_and_function_records(lam):
    arn = layer(lam, {"extensions/subscriber": PYTHON_EXTENSION})
    variables = {"TELEMETRY_TYPES": "platform,function", "TELEMETRY_FILE": "/tmp/telemetry.jsonl",
                 "TELEMETRY_API": "/2020-08-15/logs"}
    name = f"tel-{uuid.uuid4().hex[:8]}"
    lam.create_function(FunctionName=name, Runtime="python3.13", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": READER})}, Layers=[arn],
                        Environment={"Variables": variables})
    body = invoke_until(lam, name, ["platform.end", "platform.report"])
    items = body["items"]
    starts = {item["record"]["requestId"] for item in items if item["type"] == "platform.start"}
    ends = {item["record"]["requestId"] for item in items if item["type"] == "platform.end"}
    assert ends and ends <= starts
    report = next(item for item in items if item["type"] == "platform.report")
    assert "tracing" not in report["record"]
    assert set(report["record"]["metrics"]) >= {"durationMs", "billedDurationMs",
                                                "memorySizeMB", "maxMemoryUsedMB"}
    assert "function says hello" in [item["record"] for item in items if item["type"] == "function"]


def test_sandbox_localdomain_resolves_and_bad_subscriptions_are_refused(lam):
    body = run(lam, [], PROBE, {})
    assert body["resolved"] == "127.0.0.1"
    assert body["no_identifier"][0] == 403
    assert body["no_identifier"][1]["errorType"] == "Extension.MissingExtensionIdentifier"
    assert body["unknown_identifier"][0] == 403
    assert body["unknown_identifier"][1]["errorType"] == "Extension.InvalidExtensionIdentifier"
    for refused in ("bad_type", "bad_buffering"):
        assert body[refused][0] == 400 and body[refused][1]["errorType"] == "ValidationError"
    assert "timeoutMs" in body["bad_buffering"][1]["errorMessage"]
    assert body["accepted"] == 200
    # Extensions register during INIT only.
    assert body["late_registration"][0] == 403
