"""Response streaming: InvokeWithResponseStream read with boto3's event stream parser,
from Node.js streaming handlers, buffered Python handlers and a shell-script runtime
posting in the Runtime API's streaming mode, on the real runtime images."""

from __future__ import annotations

import base64
import http.client
import json
import time
import uuid

import pytest

from tests.conftest import ROLE
from tests.helpers import aws_error, make_zip

CHUNKS = """
export const handler = awslambda.streamifyResponse(async (event, responseStream, context) => {
  responseStream.setContentType("text/plain");
  for (const word of event.words) {
    responseStream.write(word);
    await new Promise((resolve) => setTimeout(resolve, event.pause_ms || 0));
  }
  if (event.fail) throw new TypeError("failed after writing");
  if (event.hang) await new Promise(() => {});
  responseStream.end();
});
"""

HTTP_PRELUDE = """
export const handler = awslambda.streamifyResponse(async (event, responseStream) => {
  const stream = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: 201, headers: { "x-made-by": "lamina" }, cookies: ["a=1"] });
  stream.write("body after the prelude");
  stream.end();
});
"""

BIG = """
export const handler = awslambda.streamifyResponse(async (event, responseStream) => {
  const piece = Buffer.alloc(64 * 1024, 120);
  for (let i = 0; i < event.pieces; i++) {
    if (!responseStream.write(piece)) await new Promise((resolve) => responseStream.once("drain", resolve));
  }
  responseStream.end();
});
"""

# A custom runtime posting its response in streaming mode: curl sends stdin chunked
# as the subshell writes it, one line, a pause, another line.
STREAMING_BOOTSTRAP = r"""#!/bin/sh
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  HEADERS=$(mktemp)
  EVENT=$(curl -sS -D "$HEADERS" "$API/invocation/next")
  REQUEST_ID=$(grep -i '^Lambda-Runtime-Aws-Request-Id:' "$HEADERS" | tr -d '\r' | cut -d' ' -f2)
  rm -f "$HEADERS"
  (echo "first line"; sleep 1; echo "got $EVENT") | curl -sS -X POST -T . \
    -H 'Lambda-Runtime-Function-Response-Mode: streaming' -H 'Content-Type: text/plain' \
    "$API/invocation/$REQUEST_ID/response" >/dev/null
done
"""


def _node(lam, code: str, runtime: str = "nodejs24.x", **config: object) -> str:
    name = f"stream-{uuid.uuid4().hex[:10]}"
    lam.create_function(FunctionName=name, Runtime=runtime, Role=ROLE, Handler="index.handler",
                        Code={"ZipFile": make_zip({"index.mjs": code})}, **config)
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    return name


def _read(response) -> tuple[list[tuple[float, bytes]], dict]:
    """The PayloadChunks (with the time each arrived) and the InvokeComplete event."""
    chunks: list[tuple[float, bytes]] = []
    complete: dict | None = None
    for event in response["EventStream"]:
        if "PayloadChunk" in event:
            chunks.append((time.perf_counter(), event["PayloadChunk"]["Payload"]))
        else:
            complete = event["InvokeComplete"]
    assert complete is not None, "the stream ended without InvokeComplete"
    return chunks, complete


def test_chunks_arrive_in_order_then_invoke_complete(lam):
    name = _node(lam, CHUNKS)
    response = lam.invoke_with_response_stream(
        FunctionName=name, Payload=json.dumps({"words": ["Hello", "serverless", "world"], "pause_ms": 20}))
    assert response["StatusCode"] == 200
    assert response["ExecutedVersion"] == "$LATEST"
    assert response["ResponseStreamContentType"] == "application/vnd.amazon.eventstream"
    chunks, complete = _read(response)
    assert [payload for _, payload in chunks] == [b"Hello", b"serverless", b"world"]
    assert complete == {}


def test_log_tail_comes_with_invoke_complete(lam):
    name = _node(lam, CHUNKS)
    response = lam.invoke_with_response_stream(FunctionName=name, LogType="Tail",
                                               Payload=json.dumps({"words": ["x"]}))
    _, complete = _read(response)
    log = base64.b64decode(complete["LogResult"]).decode()
    assert "START RequestId:" in log and "END RequestId:" in log and "REPORT RequestId:" in log


@pytest.mark.parametrize("runtime", ["nodejs24.x", "nodejs20.x"])
def test_first_chunk_reaches_the_client_before_the_handler_finishes(lam, runtime):
    name = _node(lam, CHUNKS, runtime=runtime)
    # Warm the environment, so the measured call has no cold start in it.
    _read(lam.invoke_with_response_stream(FunctionName=name, Payload=json.dumps({"words": ["w"]})))
    response = lam.invoke_with_response_stream(
        FunctionName=name, Payload=json.dumps({"words": ["early", "late"], "pause_ms": 1000}))
    chunks, complete = _read(response)
    ended = time.perf_counter()
    assert [payload for _, payload in chunks] == [b"early", b"late"]
    assert complete == {}
    # The handler sleeps 1 s between its writes: a buffered response would bring
    # both chunks together at the end.
    assert ended - chunks[0][0] > 0.5


def test_error_midway_ends_with_invoke_complete_error_code(lam):
    name = _node(lam, CHUNKS)
    response = lam.invoke_with_response_stream(
        FunctionName=name, Payload=json.dumps({"words": ["partial"], "fail": True}))
    chunks, complete = _read(response)
    assert [payload for _, payload in chunks] == [b"partial"]
    assert complete["ErrorCode"] == "TypeError"
    assert complete["ErrorDetails"] == "failed after writing"
    # Failing before any write: no chunk at all, the error all the same.
    chunks, complete = _read(lam.invoke_with_response_stream(
        FunctionName=name, Payload=json.dumps({"words": [], "fail": True})))
    assert chunks == [] and complete["ErrorCode"] == "TypeError"
    # The environment stays usable after a failed stream.
    chunks, complete = _read(lam.invoke_with_response_stream(
        FunctionName=name, Payload=json.dumps({"words": ["again"]})))
    assert [payload for _, payload in chunks] == [b"again"] and complete == {}


def test_timeout_midway_ends_with_sandbox_timedout(lam):
    name = _node(lam, CHUNKS, Timeout=1)
    response = lam.invoke_with_response_stream(
        FunctionName=name, Payload=json.dumps({"words": ["before"], "hang": True}))
    chunks, complete = _read(response)
    assert [payload for _, payload in chunks] == [b"before"]
    assert complete["ErrorCode"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in complete["ErrorDetails"]


def test_buffered_python_function_streams_its_payload_as_one_chunk(lam):
    name = f"stream-py-{uuid.uuid4().hex[:8]}"
    code = make_zip({"app.py": "def handler(event, context):\n    return {'echo': event, 'items': list(range(2000))}\n"})
    lam.create_function(FunctionName=name, Runtime="python3.13", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": code})
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    chunks, complete = _read(lam.invoke_with_response_stream(FunctionName=name, Payload=b'{"k": "v"}'))
    assert len(chunks) == 1
    assert json.loads(chunks[0][1]) == {"echo": {"k": "v"}, "items": list(range(2000))}
    assert complete == {}


def test_python_function_error_ends_the_stream_with_its_error_type(lam):
    name = f"stream-py-{uuid.uuid4().hex[:8]}"
    code = make_zip({"app.py": "def handler(event, context):\n    raise ValueError('no good')\n"})
    lam.create_function(FunctionName=name, Runtime="python3.13", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": code})
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    chunks, complete = _read(lam.invoke_with_response_stream(FunctionName=name))
    assert chunks == []
    assert complete["ErrorCode"] == "ValueError" and complete["ErrorDetails"] == "no good"


def test_invoke_of_a_streaming_function_buffers_its_response(lam):
    name = _node(lam, CHUNKS)
    response = lam.invoke(FunctionName=name, Payload=json.dumps({"words": ["a", "b", "c"]}))
    assert "FunctionError" not in response
    assert response["Payload"].read() == b"abc"
    failed = lam.invoke(FunctionName=name, Payload=json.dumps({"words": ["a"], "fail": True}))
    assert failed["FunctionError"] == "Unhandled"
    assert json.loads(failed["Payload"].read())["errorMessage"] == "failed after writing"


def test_http_response_stream_puts_the_json_prelude_and_eight_nul_bytes_first(lam):
    name = _node(lam, HTTP_PRELUDE)
    chunks, complete = _read(lam.invoke_with_response_stream(FunctionName=name))
    body = b"".join(payload for _, payload in chunks)
    prelude, _, rest = body.partition(b"\0" * 8)
    assert json.loads(prelude) == {"statusCode": 201, "headers": {"x-made-by": "lamina"},
                                   "cookies": ["a=1"]}
    assert rest == b"body after the prelude" and complete == {}


def test_custom_runtime_bootstrap_posting_in_streaming_mode(lam):
    name = f"stream-sh-{uuid.uuid4().hex[:8]}"
    lam.create_function(FunctionName=name, Runtime="provided.al2023", Role=ROLE, Handler="x.y",
                        Code={"ZipFile": make_zip({"bootstrap": STREAMING_BOOTSTRAP}, mode=0o755)})
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    chunks, complete = _read(lam.invoke_with_response_stream(FunctionName=name, Payload=b'{"n": 1}'))
    ended = time.perf_counter()
    assert b"".join(payload for _, payload in chunks) == b'first line\ngot {"n": 1}\n'
    assert complete == {}
    assert ended - chunks[0][0] > 0.5  # the first line came before the pause


def test_qualifier_names_the_executed_version(lam):
    name = _node(lam, CHUNKS)
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    response = lam.invoke_with_response_stream(FunctionName=name, Qualifier="live",
                                               Payload=json.dumps({"words": ["v"]}))
    assert response["ExecutedVersion"] == version
    assert [payload for _, payload in _read(response)[0]] == [b"v"]


def test_missing_function_and_throttling_are_answered_before_any_stream(lam):
    with aws_error(lam, "ResourceNotFoundException", 404):
        lam.invoke_with_response_stream(FunctionName=f"nothere-{uuid.uuid4().hex[:8]}")
    name = _node(lam, CHUNKS)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with aws_error(lam, "TooManyRequestsException", 429):
        lam.invoke_with_response_stream(FunctionName=name, Payload=json.dumps({"words": []}))


def test_bad_payload_is_refused_like_invoke(lam):
    name = _node(lam, CHUNKS)
    with aws_error(lam, "InvalidRequestContentException", 400):
        lam.invoke_with_response_stream(FunctionName=name, Payload=b"{not json")


def test_stream_over_the_limit_is_cut_with_response_size_too_large(start_server):
    server = start_server({"LAMINA_MAX_STREAMED_RESPONSE_BYTES": str(1024 * 1024)}, name="lamina-stream-limit")
    lam = server.client()
    name = _node(lam, BIG)
    chunks, complete = _read(lam.invoke_with_response_stream(FunctionName=name,
                                                             Payload=json.dumps({"pieces": 40})))
    assert sum(len(payload) for _, payload in chunks) == 1024 * 1024
    assert complete["ErrorCode"] == "Function.ResponseSizeTooLarge"
    assert complete["ErrorDetails"] == (
        "Response payload size exceeded maximum allowed payload size (1048576 bytes).")
    # Within the limit, the same function streams all of it.
    chunks, complete = _read(lam.invoke_with_response_stream(FunctionName=name,
                                                             Payload=json.dumps({"pieces": 8})))
    assert sum(len(payload) for _, payload in chunks) == 8 * 64 * 1024 and complete == {}


def test_a_reader_that_goes_away_does_not_hold_the_function_back(lam, server):
    # Far more than is buffered for a reader (1 MB): were the function's writes
    # still held for the departed reader, it would block until its 30 s timeout.
    name = _node(lam, BIG, Timeout=30)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    connection = http.client.HTTPConnection("127.0.0.1", server.port)
    connection.request("POST", f"/2021-11-15/functions/{name}/response-streaming-invocations",
                       body=json.dumps({"pieces": 400}))
    response = connection.getresponse()
    assert response.status == 200 and response.read1(1024)
    connection.close()
    # Its one concurrency slot comes back when the function has written all and ended.
    deadline = time.monotonic() + 15
    while True:
        try:
            chunks, complete = _read(lam.invoke_with_response_stream(
                FunctionName=name, Payload=json.dumps({"pieces": 1})))
            break
        except lam.exceptions.TooManyRequestsException:
            assert time.monotonic() < deadline, "the abandoned invocation never ended"
            time.sleep(0.2)
    assert sum(len(payload) for _, payload in chunks) == 64 * 1024 and complete == {}


def test_dry_run_streams_the_response_as_lambda_does(lam):
    # Lambda's InvokeWithResponseStream runs the function for InvocationType=DryRun
    # too (the AWS SAM CLI's integration tests record it streaming its chunks).
    name = _node(lam, CHUNKS)
    response = lam.invoke_with_response_stream(FunctionName=name, InvocationType="DryRun",
                                               Payload=json.dumps({"words": ["ran"]}))
    assert [payload for _, payload in _read(response)[0]] == [b"ran"]


INVALID_MODE_BOOTSTRAP = r"""#!/bin/sh
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  HEADERS=$(mktemp)
  curl -sS -D "$HEADERS" "$API/invocation/next" >/dev/null
  REQUEST_ID=$(grep -i '^Lambda-Runtime-Aws-Request-Id:' "$HEADERS" | tr -d '\r' | cut -d' ' -f2)
  rm -f "$HEADERS"
  curl -sS -X POST -H 'Lambda-Runtime-Function-Response-Mode: sideways' -d 'x' \
    "$API/invocation/$REQUEST_ID/response" >/dev/null
done
"""


def test_an_unknown_response_mode_fails_the_invocation(lam):
    name = f"stream-sh-{uuid.uuid4().hex[:8]}"
    lam.create_function(FunctionName=name, Runtime="provided.al2023", Role=ROLE, Handler="x.y",
                        Code={"ZipFile": make_zip({"bootstrap": INVALID_MODE_BOOTSTRAP}, mode=0o755)})
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    response = lam.invoke(FunctionName=name)
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Payload"].read())["errorType"] == "Runtime.InvalidResponseModeHeader"


# A runtime speaking the streaming mode on a bare socket: two chunks, then (when
# the event asks) the error trailers, base64 body and all, exactly as on the wire.
TRAILER_BOOTSTRAP = r'''#!/usr/bin/env python3
import base64, json, os, socket
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
sock = socket.create_connection((host, int(port)))
reader = sock.makefile("rb")
def read_response():
    reader.readline()
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers, reader.read(int(headers.get("content-length", 0)))
while True:
    sock.sendall(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")
    headers, body = read_response()
    request_id = headers["lambda-runtime-aws-request-id"].encode()
    event = json.loads(body)
    sock.sendall(b"POST /2018-06-01/runtime/invocation/" + request_id + b"/response HTTP/1.1\r\n"
                 b"Host: x\r\nLambda-Runtime-Function-Response-Mode: streaming\r\n"
                 b"Transfer-Encoding: chunked\r\nContent-Type: text/plain\r\n"
                 b"Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n\r\n"
                 b"4\r\none \r\n3\r\ntwo\r\n")
    trailers = b""
    if event.get("fail"):
        error = {"errorType": "Custom.Broken", "errorMessage": "the feed went away"}
        trailers = (b"Lambda-Runtime-Function-Error-Type: Custom.Broken\r\n"
                    b"Lambda-Runtime-Function-Error-Body: "
                    + base64.b64encode(json.dumps(error).encode()) + b"\r\n")
    sock.sendall(b"0\r\n" + trailers + b"\r\n")
    read_response()
'''


def test_error_trailers_on_the_wire_end_the_stream_with_their_error(lam):
    name = f"stream-raw-{uuid.uuid4().hex[:8]}"
    lam.create_function(FunctionName=name, Runtime="provided.al2023", Role=ROLE, Handler="x.y",
                        Code={"ZipFile": make_zip({"bootstrap": TRAILER_BOOTSTRAP}, mode=0o755)})
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    chunks, complete = _read(lam.invoke_with_response_stream(FunctionName=name, Payload=b'{"fail": true}'))
    assert [payload for _, payload in chunks] == [b"one ", b"two"]
    assert complete["ErrorCode"] == "Custom.Broken"
    assert complete["ErrorDetails"] == "the feed went away"
    chunks, complete = _read(lam.invoke_with_response_stream(FunctionName=name))
    assert [payload for _, payload in chunks] == [b"one ", b"two"] and complete == {}
    # Invoke buffers the same response, and its trailers make it a function error.
    failed = lam.invoke(FunctionName=name, Payload=b'{"fail": true}')
    assert failed["FunctionError"] == "Unhandled"
    assert json.loads(failed["Payload"].read())["errorType"] == "Custom.Broken"
