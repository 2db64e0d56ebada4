"""Execution environment lifecycle: precision, reaping, shutdown, runtime choice."""

from __future__ import annotations

import base64
import json
import os
import re
import time
import uuid

import pytest

from tests.conftest import ROLE, Server
from tests.helpers import make_zip

PID_HANDLER = make_zip({"app.py": (
    "import os, time\n"
    "def handler(event, context):\n"
    "    time.sleep(event.get('sleep', 0))\n"
    "    return {'pid': os.getpid()}\n"
)})

# A custom runtime that posts its responses chunked, with a trailer, the way
# streaming runtime clients do.
CHUNKED_BOOTSTRAP = r'''#!/usr/bin/env python3
import json, os, socket
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
sock = socket.create_connection((host, int(port)))
reader = sock.makefile("rb")
def read_response():
    status = reader.readline()
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers.get("content-length", 0)))
    return status, headers, body
while True:
    sock.sendall(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")
    _, headers, body = read_response()
    request_id = headers["lambda-runtime-aws-request-id"]
    payload = json.dumps({"chunked": json.loads(body)}).encode()
    half = len(payload) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (payload[:half], payload[half:]))
    sock.sendall(
        b"POST /2018-06-01/runtime/invocation/" + request_id.encode() + b"/response HTTP/1.1\r\n"
        b"Host: x\r\nTransfer-Encoding: chunked\r\nTrailer: Lambda-Runtime-Function-Error-Type\r\n\r\n"
        + chunks + b"0\r\nLambda-Runtime-Function-Error-Type: none\r\n\r\n")
    read_response()
'''


# A custom runtime that pipelines, as Lamina's Python client does: each result (or
# error) goes out in one send with the GET /next behind it, and the answers are read
# in order. Every response carries the status line of the previous result's answer.
PIPELINING_BOOTSTRAP = r'''#!/usr/bin/env python3
import json, os, socket
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
sock = socket.create_connection((host, int(port)))
reader = sock.makefile("rb")
def read_response():
    status = reader.readline().decode().strip()
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, reader.read(int(headers.get("content-length", 0)))
NEXT = b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n"
sock.sendall(NEXT)
acknowledged = None
while True:
    _, headers, body = read_response()
    request_id = headers["lambda-runtime-aws-request-id"].encode()
    event = json.loads(body)
    if event.get("fail"):
        path, payload = b"/error", json.dumps({"errorMessage": "asked to", "errorType": "Asked"})
    else:
        path, payload = b"/response", json.dumps({"event": event, "previous": acknowledged})
    payload = payload.encode()
    sock.sendall(b"POST /2018-06-01/runtime/invocation/" + request_id + path + b" HTTP/1.1\r\n"
                 b"Host: x\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload + NEXT)
    acknowledged = read_response()[0]
'''


def _name() -> str:
    return f"env-{uuid.uuid4().hex[:10]}"


def _report(response) -> str:
    lines = base64.b64decode(response["LogResult"]).decode().splitlines()
    return next(line for line in lines if line.startswith("REPORT"))


def test_runtime_api_accepts_chunked_bodies_with_trailers(lam):
    name = _name()
    lam.create_function(FunctionName=name, Runtime="provided.al2", Role=ROLE, Handler="x",
                        Code={"ZipFile": make_zip({"bootstrap": CHUNKED_BOOTSTRAP}, mode=0o755)})
    response = lam.invoke(FunctionName=name, Payload=b'{"a": [1, 2, 3]}')
    assert json.loads(response["Payload"].read()) == {"chunked": {"a": [1, 2, 3]}}


def test_runtime_api_answers_pipelined_requests_in_order(lam):
    name = _name()
    lam.create_function(FunctionName=name, Runtime="provided.al2", Role=ROLE, Handler="x",
                        Code={"ZipFile": make_zip({"bootstrap": PIPELINING_BOOTSTRAP}, mode=0o755)})
    first = json.loads(lam.invoke(FunctionName=name, Payload=b'{"n": 1}')["Payload"].read())
    assert first == {"event": {"n": 1}, "previous": None}
    failed = lam.invoke(FunctionName=name, Payload=b'{"fail": true}')
    assert failed["FunctionError"] == "Unhandled"
    assert json.loads(failed["Payload"].read())["errorType"] == "Asked"
    # The same environment, its error acknowledged before the next event came.
    third = json.loads(lam.invoke(FunctionName=name, Payload=b'{"n": 3}')["Payload"].read())
    assert third == {"event": {"n": 3}, "previous": "HTTP/1.1 202 Accepted"}


def test_timeout_stops_the_invocation_at_the_deadline(lam):
    # The 100 ms precision target is measured in bench/invoke.py; on a loaded
    # shared machine a test can only check that the deadline is honoured.
    name = _name()
    lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": PID_HANDLER}, Timeout=1)
    response = lam.invoke(FunctionName=name, Payload=b'{"sleep": 10}', LogType="Tail")
    duration = float(re.search(r"Duration: ([\d.]+) ms", _report(response)).group(1))
    assert 1000 <= duration < 1600
    assert "Status: timeout" in _report(response)


@pytest.mark.parametrize("runtime", ["nodejs4.3", "python3.15"])
def test_runtimes_this_host_cannot_run_are_refused(lam_unchecked, runtime):
    with pytest.raises(lam_unchecked.exceptions.InvalidParameterValueException) as raised:
        lam_unchecked.create_function(FunctionName=_name(), Runtime=runtime, Role=ROLE,
                                      Handler="app.handler", Code={"ZipFile": PID_HANDLER})
    assert runtime in str(raised.value)


def _processes_of(marker: str) -> list[int]:
    """Host PIDs of the processes running with LAMINA_TEST_MARKER=marker.

    Found through /proc/*/environ, so it works whatever the sandbox: a function in
    its own PID namespace cannot tell the host its PID."""
    needle = f"LAMINA_TEST_MARKER={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as environ:
                    if needle in environ.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
    return found


def _create_marked(lam, name: str) -> str:
    marker = uuid.uuid4().hex
    lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE,
                        Handler="app.handler", Code={"ZipFile": PID_HANDLER},
                        Environment={"Variables": {"LAMINA_TEST_MARKER": marker}})
    return marker


def test_idle_environments_are_stopped_and_the_next_invoke_starts_cold(tmp_path):
    server = Server(tmp_path / "data", env={"LAMINA_ENVIRONMENT_IDLE_S": "1"})
    server.start()
    try:
        lam = server.client()
        name = _name()
        marker = _create_marked(lam, name)
        lam.invoke(FunctionName=name)
        assert _processes_of(marker)
        deadline = time.monotonic() + 10
        while _processes_of(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _processes_of(marker)
        response = lam.invoke(FunctionName=name, LogType="Tail")
        assert "Init Duration" in _report(response)
    finally:
        server.stop()


def test_server_shutdown_stops_every_environment(tmp_path):
    server = Server(tmp_path / "data")
    server.start()
    lam = server.client()
    name = _name()
    marker = _create_marked(lam, name)
    lam.invoke(FunctionName=name)
    assert _processes_of(marker)
    server.stop()
    assert not _processes_of(marker)
    assert not list((tmp_path / "data" / "environments").glob("*"))


NET_HANDLER = make_zip({"app.py": (
    "def handler(event, context):\n"
    "    lines = open('/proc/net/dev').read().splitlines()[2:]\n"
    "    return sorted(line.split(':')[0].strip() for line in lines)\n"
)})


def test_a_function_in_a_vpc_has_no_outbound_network_like_a_vpc_without_nat(lam, server):
    if server.sandbox_backend() != "namespaces":
        pytest.skip("network isolation needs the namespaces sandbox")
    open_name, closed_name = _name(), _name()
    lam.create_function(FunctionName=open_name, Runtime="python3.11", Role=ROLE,
                        Handler="app.handler", Code={"ZipFile": NET_HANDLER})
    closed = lam.create_function(
        FunctionName=closed_name, Runtime="python3.11", Role=ROLE, Handler="app.handler",
        Code={"ZipFile": NET_HANDLER},
        VpcConfig={"SubnetIds": ["subnet-0abc"], "SecurityGroupIds": ["sg-0abc"]},
    )
    assert closed["VpcConfig"]["SubnetIds"] == ["subnet-0abc"]
    assert json.loads(lam.invoke(FunctionName=closed_name)["Payload"].read()) == ["lo"]
    assert "tap0" in json.loads(lam.invoke(FunctionName=open_name)["Payload"].read())
    # Leaving the VPC gives the function its way out again.
    lam.update_function_configuration(FunctionName=closed_name, VpcConfig={"SubnetIds": []})
    assert "tap0" in json.loads(lam.invoke(FunctionName=closed_name)["Payload"].read())


COUNTER = make_zip({"app.py": (
    "COUNT = 0\n"
    "def handler(event, context):\n"
    "    global COUNT\n"
    "    COUNT += 1\n"
    "    return COUNT\n"
)})


def test_updating_latest_keeps_published_versions_warm(lam):
    name = _name()
    lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE,
                        Handler="app.handler", Code={"ZipFile": COUNTER})
    lam.publish_version(FunctionName=name)
    assert json.loads(lam.invoke(FunctionName=name, Qualifier="1")["Payload"].read()) == 1
    assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == 1
    lam.update_function_configuration(FunctionName=name, Description="a new $LATEST")
    # Version 1 is immutable: its warm environment goes on counting ...
    assert json.loads(lam.invoke(FunctionName=name, Qualifier="1")["Payload"].read()) == 2
    # ... while $LATEST starts afresh with its new configuration.
    assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == 1
