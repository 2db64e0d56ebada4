"""The HTTP surface under hostile input: bodies are read only for authenticated
headers, capped and given a deadline; malformed input is an AWS-shaped 4xx."""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import json
import socket
import time
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.conftest import Server
from tests.helpers import aws_error, error_message, function_args

KEY, SECRET = "AKIDSECURITY", "security-secret"
MB = 1024 * 1024
# The server's deadlines for headers and for a body, shortened for these tests.
TIMEOUT_S = 2


@pytest.fixture(scope="module")
def guarded(start_server) -> Server:
    return start_server(
        {
            "LAMINA_ACCESS_KEYS": f"{KEY}:{SECRET}",
            "LAMINA_REQUEST_BODY_TIMEOUT_S": str(TIMEOUT_S),
            "LAMINA_REQUEST_HEADER_TIMEOUT_S": str(TIMEOUT_S),
        },
        name="security",
    )


def peak_rss_kb(server: Server) -> int:
    """The server process's resident memory at its highest so far (VmHWM)."""
    assert server.process is not None
    for line in open(f"/proc/{server.process.pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def signed_headers(server: Server, method: str, path: str, body: bytes,
                   headers: dict[str, str] | None = None, service: str = "lambda",
                   region: str = "us-east-1") -> dict[str, str]:
    request = AWSRequest(method=method, url=server.endpoint + path, data=body,
                         headers=headers or {})
    SigV4Auth(Credentials(KEY, SECRET), service, region).add_auth(request)
    return dict(request.headers)


def send(server: Server, method: str, path: str, body: bytes = b"",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """One request on its own connection: status, headers, JSON body (or raw bytes)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        content: Any = json.loads(raw)
    except ValueError:
        content = raw
    return response.status, {k.lower(): v for k, v in response.getheaders()}, content


def raw_exchange(server: Server, data: bytes, wait_s: float = 15) -> tuple[bytes, float]:
    """Send bytes as they are; what the server answers until it closes, and when."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait_s) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received, time.monotonic() - started


def upload(server: Server, head: bytes, size: int) -> bytes:
    """Send head and then `size` bytes of body, as far as the server lets us;
    whatever it answered."""
    chunk = b"x" * MB
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        try:
            sock.sendall(head)
            sent = 0
            while sent < size:
                sock.sendall(chunk[: size - sent])
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while piece := sock.recv(65536):
                answer += piece
        except (ConnectionResetError, TimeoutError):
            pass
    return answer


# -- bodies are read only after the headers authenticate ---------------------------


def test_unsigned_60_mb_bodies_are_refused_without_growing_server_memory(guarded):
    before = peak_rss_kb(guarded)
    head = (f"POST /2015-03-31/functions HTTP/1.1\r\nHost: 127.0.0.1:{guarded.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {60 * MB}\r\n\r\n").encode()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: upload(guarded, head, 60 * MB), range(8)))
    grown_mb = (peak_rss_kb(guarded) - before) / 1024
    assert grown_mb < 100, f"server's peak RSS grew by {grown_mb:.0f} MB"
    # Whoever read the answer before the connection closed saw AWS's refusal.
    for answer in answers:
        if answer:
            assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
            assert b"MissingAuthenticationTokenException" in answer


def test_create_function_declaring_a_body_over_its_cap_is_413_before_the_body(guarded):
    headers = signed_headers(guarded, "POST", "/2015-03-31/functions", b"{}")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    answer, elapsed = raw_exchange(
        guarded,
        (f"POST /2015-03-31/functions HTTP/1.1\r\nHost: 127.0.0.1:{guarded.port}\r\n{head}"
         f"Content-Length: {80 * MB}\r\n\r\n").encode(),
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"RequestEntityTooLargeException" in answer
    assert b"for the CreateFunction operation" in answer
    assert elapsed < TIMEOUT_S + 5


def test_invoke_over_6_mb_is_413_in_its_usual_shape(guarded):
    client = guarded.client(key=KEY, secret=SECRET)
    client.create_function(**function_args("security-invoke"))
    with aws_error(client, "RequestEntityTooLargeException", 413) as info:
        client.invoke(FunctionName="security-invoke", Payload=b"[" + b" " * (6 * MB) + b"]")
    assert error_message(info) == "Request must be smaller than 6291456 bytes for the InvokeFunction operation"
    with aws_error(client, "RequestEntityTooLargeException", 413) as info:
        client.invoke(FunctionName="security-invoke", InvocationType="Event",
                      Payload=b"[" + b" " * MB + b"]")
    assert error_message(info) == (
        "Request must be smaller than 1048576 bytes for the InvokeAsync operation"
    )


def test_sqs_request_over_its_cap_is_413(guarded):
    body = json.dumps({"QueueUrl": "x", "MessageBody": "y" * (2 * MB)}).encode()
    headers = signed_headers(guarded, "POST", "/", body, {
        "X-Amz-Target": "AmazonSQS.SendMessage", "Content-Type": "application/x-amz-json-1.0",
    }, service="sqs")
    status, _, content = send(guarded, "POST", "/", body, headers)
    assert status == 413
    assert content["__type"].endswith("RequestEntityTooLargeException")


# -- deadlines ----------------------------------------------------------------------


def test_body_that_stops_arriving_is_answered_408_within_the_timeout(guarded):
    body = json.dumps({"FunctionName": "slow"}).encode()
    headers = signed_headers(guarded, "POST", "/2015-03-31/functions", body)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    answer, elapsed = raw_exchange(
        guarded,
        (f"POST /2015-03-31/functions HTTP/1.1\r\nHost: 127.0.0.1:{guarded.port}\r\n{head}"
         f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:5],
    )
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"RequestTimeoutException" in answer
    assert b"connection: close" in answer.lower()
    assert TIMEOUT_S - 0.5 <= elapsed < TIMEOUT_S + 5


def test_unsigned_slow_body_is_refused_and_closed_within_the_timeout(guarded):
    answer, elapsed = raw_exchange(
        guarded,
        (f"POST /2015-03-31/functions HTTP/1.1\r\nHost: 127.0.0.1:{guarded.port}\r\n"
         "Content-Length: 100000\r\n\r\n{\"Fu").encode(),
    )
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
    assert elapsed < TIMEOUT_S + 5


def test_many_connections_that_never_finish_their_headers_are_closed(guarded):
    started = time.monotonic()
    sockets = [socket.create_connection(("127.0.0.1", guarded.port), timeout=15)
               for _ in range(100)]
    try:
        for sock in sockets:
            sock.sendall(b"POST /2015-03-31/functions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        for sock in sockets:
            assert sock.recv(1024) == b""  # closed by the server, nothing answered
    finally:
        for sock in sockets:
            sock.close()
    assert time.monotonic() - started < TIMEOUT_S + 10
    # The server still serves.
    client = guarded.client(key=KEY, secret=SECRET)
    assert "Functions" in client.list_functions()


def test_headers_larger_than_the_cap_get_400(guarded):
    answer, _ = raw_exchange(
        guarded,
        b"GET /2015-03-31/functions/ HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(100)) + b"\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


@pytest.mark.parametrize("size", [b"zz", b"1" + b"f" * 20, b"-1"])
def test_malformed_chunk_size_gets_400_quickly(guarded, size):
    answer, elapsed = raw_exchange(
        guarded,
        b"POST /2015-03-31/functions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + size + b"\r\nabc\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert elapsed < TIMEOUT_S


def test_chunk_announcing_terabytes_gets_400_at_its_size_line(guarded):
    answer, elapsed = raw_exchange(
        guarded,
        b"POST /2015-03-31/functions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"ffffffffffff\r\nabc",
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    # Refused when the size arrives, not cut at the body deadline.
    assert elapsed < TIMEOUT_S


def test_chunked_body_within_limits_is_still_read(guarded):
    body = b'{"FunctionName": "chunked-missing"}'
    answer, _ = raw_exchange(
        guarded,
        b"POST /2015-03-31/functions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body),
    )
    # Through to authentication (this server requires keys): not a framing error.
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]


# -- unknown paths with large bodies ------------------------------------------------


@pytest.mark.parametrize("size_mb", [2, 7])
def test_large_request_to_unknown_path_gets_its_404_not_a_reset(guarded, size_mb):
    body = b"x" * (size_mb * MB)
    headers = signed_headers(guarded, "POST", "/2015-03-31/nothing-here", body)
    status, response_headers, content = send(guarded, "POST", "/2015-03-31/nothing-here",
                                             body, headers)
    assert status == 404
    assert response_headers["x-amzn-errortype"] == "UnknownOperationException"
    assert "No Lambda operation matches" in content["Message"]


def test_large_unsigned_request_gets_its_403_not_a_reset(guarded):
    status, response_headers, _ = send(guarded, "POST", "/2015-03-31/nothing-here",
                                       b"x" * (5 * MB))
    assert status == 403
    assert response_headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"


# -- malformed input is a 4xx in AWS's shape ---------------------------------------

DEEP = b"[" * 5000 + b"]" * 5000


def test_deeply_nested_create_function_body_is_invalid_request_content(server):
    body = b'{"FunctionName": "deep", "Environment": ' + DEEP + b"}"
    status, headers, content = send(server, "POST", "/2015-03-31/functions", body)
    assert status == 400
    assert headers["x-amzn-errortype"] == "InvalidRequestContentException"
    # The model's InvalidRequestContentException spells it "message".
    assert content["message"].startswith("Could not parse request body into json")


def test_deeply_nested_invoke_payload_is_invalid_request_content(lam):
    lam.create_function(**function_args("security-deep"))
    with aws_error(lam, "InvalidRequestContentException", 400) as info:
        lam.invoke(FunctionName="security-deep", Payload=DEEP)
    assert error_message(info).startswith(
        "Could not parse request body into json: Could not parse payload into json"
    )


@pytest.mark.parametrize("target", ["AmazonSQS.SendMessage", "Logs_20140328.DescribeLogGroups"])
def test_deeply_nested_json_protocol_body_is_400(server, target):
    status, _, content = send(server, "POST", "/", b'{"QueueUrl": ' + DEEP + b"}",
                              {"X-Amz-Target": target,
                               "Content-Type": "application/x-amz-json-1.1"})
    assert status == 400
    assert content["__type"].endswith("InvalidRequestContentException")
    assert content["message"].startswith("Could not parse request body into json")


def test_deeply_nested_queue_policy_is_invalid_attribute_value(server):
    sqs = server.client("sqs")
    with aws_error(sqs, "InvalidAttributeValue", 400):
        sqs.create_queue(QueueName="security-deep", Attributes={"Policy": DEEP.decode()})


@pytest.mark.parametrize("version", [2**63, 10**30, -(2**63) - 1])
def test_layer_version_number_out_of_range_is_validation_error(lam_unchecked, version):
    with aws_error(lam_unchecked, "ValidationException", 400) as info:
        lam_unchecked.get_layer_version(LayerName="shared", VersionNumber=version)
    assert "at 'versionNumber' failed to satisfy constraint" in error_message(info)


def test_integer_out_of_range_in_body_and_query_is_validation_error(lam_unchecked):
    with aws_error(lam_unchecked, "ValidationException", 400) as info:
        lam_unchecked.list_functions(MaxItems=2**40)
    assert "Member must have value less than or equal to 10000" in error_message(info)
    with aws_error(lam_unchecked, "ValidationException", 400) as info:
        lam_unchecked.create_function(**function_args("security-int", MemorySize=2**64))
    assert "at 'memorySize' failed to satisfy constraint" in error_message(info)


def test_non_digit_integer_in_path_is_validation_error(server):
    status, headers, content = send(server, "GET", "/2018-10-31/layers/shared/versions/1_0")
    assert status == 400
    assert headers["x-amzn-errortype"] == "ValidationException"
    assert "Member must be a number" in content["Message"]


@pytest.mark.parametrize("name", [".", ".."])
def test_dot_log_group_names_do_not_reach_the_data_dir(server, name):
    logs = server.client("logs")
    with aws_error(logs, "ResourceNotFoundException") as info:
        logs.describe_log_streams(logGroupName=name)
    assert error_message(info) == "The specified log group does not exist."
    with aws_error(logs, "ResourceNotFoundException"):
        logs.get_log_events(logGroupName=name, logStreamName="..")
    with aws_error(logs, "ResourceNotFoundException"):
        logs.filter_log_events(logGroupIdentifier=f"arn:aws:logs:us-east-1:000000000000:log-group:{name}")


def test_log_group_arn_with_a_name_outside_the_model_is_invalid_parameter(server):
    logs = server.client("logs")
    for name in ("", "a+b", "x@y"):
        with aws_error(logs, "InvalidParameterException", 400):
            logs.describe_log_streams(
                logGroupIdentifier=f"arn:aws:logs:us-east-1:000000000000:log-group:{name}"
            )


def test_body_hash_header_that_lies_is_refused_without_keys_too(server):
    body = json.dumps(function_args("security-liar", Code={"ZipFile": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="})).encode()
    status, headers, _ = send(server, "POST", "/2015-03-31/functions", body, {
        "X-Amz-Content-SHA256": hashlib.sha256(b"something else").hexdigest(),
    })
    assert status == 403
    assert headers["x-amzn-errortype"] == "InvalidSignatureException"
