"""SigV4: with access keys configured, every request's signature is recomputed."""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
import uvicorn
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from lamina.api.auth import SignedRequest, SigV4Verifier
from lamina.errors import InvalidSignatureException
from tests.conftest import Server, free_port
from tests.helpers import ECHO, ROLE, aws_cli, aws_error, error_message, function_args

KEY, SECRET = "AKIDTEST", "secret123"
ARN_PREFIX = "arn:aws:lambda:us-east-1:000000000000:function:"


@pytest.fixture(scope="module")
def signed_server(start_server) -> Server:
    return start_server({"LAMINA_ACCESS_KEYS": f"{KEY}:{SECRET}"}, name="sigv4")


@pytest.fixture(scope="module")
def signed(signed_server):
    client = signed_server.client(key=KEY, secret=SECRET)
    client.create_function(**function_args("signed-fn"))
    return client


def test_right_key_can_create_get_update_and_delete(signed):
    signed.create_function(**function_args("signed-lifecycle", Tags={"a": "b"}))
    assert signed.get_function(FunctionName="signed-lifecycle")["Tags"] == {"a": "b"}
    signed.update_function_configuration(FunctionName="signed-lifecycle", Description="signed body")
    signed.delete_function(FunctionName="signed-lifecycle")


@pytest.mark.parametrize("ref", [ARN_PREFIX + "signed-fn", ARN_PREFIX + "signed-fn:$LATEST"])
def test_function_name_that_needs_url_encoding_verifies(signed, ref):
    # ':' and '$' are percent-encoded in the path, and SigV4 encodes them again.
    assert signed.get_function(FunctionName=ref)["Configuration"]["FunctionName"] == "signed-fn"
    arn = ARN_PREFIX + "signed-fn"
    signed.tag_resource(Resource=arn, Tags={"encoded": "yes"})
    assert signed.list_tags(Resource=arn)["Tags"]["encoded"] == "yes"


def test_query_string_with_marker_and_max_items_verifies(signed):
    for name in ("signed-q1", "signed-q2", "signed-q3"):
        signed.create_function(**function_args(name))
    first = signed.list_functions(MaxItems=1)
    second = signed.list_functions(Marker=first["NextMarker"], MaxItems=2)
    assert len(second["Functions"]) == 2
    assert first["Functions"][0]["FunctionName"] < second["Functions"][0]["FunctionName"]
    names = [f["FunctionName"] for p in signed.get_paginator("list_functions").paginate(
        PaginationConfig={"PageSize": 1}) for f in p["Functions"]]
    assert {"signed-fn", "signed-q1", "signed-q2", "signed-q3"} <= set(names)


def test_wrong_secret_is_invalid_signature(signed_server, signed):
    client = signed_server.client(key=KEY, secret="not-the-secret")
    with aws_error(client, "InvalidSignatureException", 403) as info:
        client.get_function(FunctionName="signed-fn")
    assert "does not match the signature you provided" in error_message(info)
    with aws_error(client, "InvalidSignatureException", 403):
        client.create_function(**function_args("signed-never"))
    with aws_error(signed, "ResourceNotFoundException"):
        signed.get_function(FunctionName="signed-never")


def test_unknown_access_key_is_unrecognized_client(signed_server):
    client = signed_server.client(key="AKIDNOBODY", secret=SECRET)
    with aws_error(client, "UnrecognizedClientException", 403) as info:
        client.list_functions()
    assert error_message(info) == "The security token included in the request is invalid."


def test_request_without_authorization_header_is_403(signed_server):
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(signed_server.endpoint + "/2015-03-31/functions/", timeout=10)
    assert info.value.code == 403
    assert info.value.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert json.loads(info.value.read())["Message"] == "Missing Authentication Token"


def test_body_changed_after_signing_is_invalid_signature(signed_server, signed):
    # Sign one body, send another of the same length: only the payload hash differs.
    def swap_body(request, **_):
        request.body = request.body.replace(b"original", b"tampered")

    client = signed_server.client(key=KEY, secret=SECRET)
    client.meta.events.register_first("before-send.lambda.UpdateFunctionConfiguration", swap_body)
    with aws_error(client, "InvalidSignatureException", 403):
        client.update_function_configuration(FunctionName="signed-fn", Description="original")
    assert signed.get_function_configuration(FunctionName="signed-fn")["Description"] == ""


def test_aws_cli_signs_requests_the_server_accepts(signed_server, signed, tmp_path):
    listed = aws_cli(signed_server.endpoint, tmp_path, KEY, SECRET, "get-function",
                     "--function-name", ARN_PREFIX + "signed-fn")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["Configuration"]["FunctionName"] == "signed-fn"
    refused = aws_cli(signed_server.endpoint, tmp_path, KEY, "wrong", "list-functions")
    assert refused.returncode != 0
    assert "InvalidSignatureException" in refused.stderr


def run_serve(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LAMINA_")}
    try:
        return subprocess.run(
            [sys.executable, "-m", "lamina.cli.main", "serve", *args],
            env={**clean, **env}, capture_output=True, text=True, timeout=20,
        )
    except subprocess.TimeoutExpired as exc:  # it started serving: that is the failure
        pytest.fail(f"lamina serve {' '.join(args)} did not refuse to start: {exc.stdout!r}")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_serve_on_all_interfaces_without_keys_refuses_to_start(tmp_path, how):
    port = str(free_port())
    if how == "flag":
        result = run_serve(["--host", "0.0.0.0", "--port", port, "--data-dir", str(tmp_path)], {})
    else:
        result = run_serve(["--port", port, "--data-dir", str(tmp_path)], {"LAMINA_HOST": "0.0.0.0"})
    assert result.returncode != 0
    assert "refusing to listen on 0.0.0.0 without access keys" in result.stderr
    assert "LAMINA_ACCESS_KEYS" in result.stderr


def test_signature_older_than_five_minutes_is_expired():
    # Signed now by botocore, verified as if it arrived ten minutes later.
    request = AWSRequest(method="GET", url="http://127.0.0.1:9000/2015-03-31/functions/")
    SigV4Auth(Credentials(KEY, SECRET), "lambda", "us-east-1").add_auth(request)
    signed = SignedRequest(
        method="GET", raw_path="/2015-03-31/functions/", raw_query="",
        headers={k.lower(): v for k, v in request.headers.items()} | {"host": "127.0.0.1:9000"},
        body=b"",
    )
    verifier = SigV4Verifier({KEY: SECRET})
    assert verifier.verify(signed).access_key_id == KEY
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=10)
    with pytest.raises(InvalidSignatureException, match="Signature expired"):
        verifier.verify(signed, now=later)


# -- the body and the credential scope are part of what is verified ------------------


def send_signed(server: Server, method: str, path: str, sign_body: bytes, send_body: bytes,
                headers: dict[str, str] | None = None, service: str = "lambda",
                region: str = "us-east-1") -> tuple[int, dict[str, str], dict]:
    """Sign `sign_body` (with any extra headers), then send `send_body` instead."""
    request = AWSRequest(method=method, url=server.endpoint + path, data=sign_body,
                         headers=headers or {})
    SigV4Auth(Credentials(KEY, SECRET), service, region).add_auth(request)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path, body=send_body, headers=dict(request.headers))
        response = connection.getresponse()
        content = json.loads(response.read() or b"{}")
    finally:
        connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, content


def create_body(name: str) -> bytes:
    return json.dumps({"FunctionName": name, "Runtime": "python3.11", "Role": ROLE,
                       "Handler": "app.handler",
                       "Code": {"ZipFile": base64.b64encode(ECHO).decode()}}).encode()


def test_body_swapped_under_a_signed_content_sha256_is_invalid_signature(signed_server, signed):
    original, swapped = create_body("signed-original"), create_body("signed-swapped")
    status, headers, content = send_signed(
        signed_server, "POST", "/2015-03-31/functions", original, swapped,
        {"X-Amz-Content-SHA256": hashlib.sha256(original).hexdigest()},
    )
    assert status == 403
    assert headers["x-amzn-errortype"] == "InvalidSignatureException"
    assert "does not match the signature you provided" in content["Message"]
    for name in ("signed-original", "signed-swapped"):
        with aws_error(signed, "ResourceNotFoundException"):
            signed.get_function(FunctionName=name)


def test_unsigned_payload_is_invalid_signature(signed_server, signed):
    body = create_body("signed-unsigned-payload")
    status, headers, _ = send_signed(signed_server, "POST", "/2015-03-31/functions", body, body,
                                     {"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    assert status == 403
    assert headers["x-amzn-errortype"] == "InvalidSignatureException"
    with aws_error(signed, "ResourceNotFoundException"):
        signed.get_function(FunctionName="signed-unsigned-payload")


def test_matching_content_sha256_header_is_accepted(signed_server, signed):
    body = create_body("signed-with-hash")
    status, _, content = send_signed(signed_server, "POST", "/2015-03-31/functions", body, body,
                                     {"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()})
    assert status == 201, content
    assert signed.get_function(FunctionName="signed-with-hash")


def test_credential_scoped_to_another_region_is_invalid_signature(signed_server):
    client = boto3.client("lambda", endpoint_url=signed_server.endpoint, region_name="eu-west-1",
                          aws_access_key_id=KEY, aws_secret_access_key=SECRET)
    with aws_error(client, "InvalidSignatureException", 403) as info:
        client.list_functions()
    assert error_message(info) == "Credential should be scoped to a valid region. "


@pytest.mark.parametrize(("service", "path", "target", "expected"), [
    ("s3", "/2015-03-31/functions/", None, "lambda"),
    ("lambda", "/", "AmazonSQS.ListQueues", "sqs"),
    ("sqs", "/", "Logs_20140328.DescribeLogGroups", "logs"),
])
def test_credential_scoped_to_another_service_is_invalid_signature(signed_server, service, path,
                                                                   target, expected):
    headers = {"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.0"} if target else {}
    method, body = ("POST", b"{}") if target else ("GET", b"")
    status, response_headers, content = send_signed(signed_server, method, path, body, body,
                                                    headers, service=service)
    assert status == 403
    message = content.get("message") or content.get("Message")
    assert message == f"Credential should be scoped to correct service: '{expected}'. "
    assert "InvalidSignatureException" in (response_headers.get("x-amzn-errortype")
                                           or content["__type"])


# -- temporary credentials of execution roles -----------------------------------------

ROLE_ARN = "arn:aws:iam::000000000000:role/signed-role"


class InProcessServer:
    """The real app under uvicorn in a thread, so the test holds its Platform."""

    def __init__(self, data_dir: Path, access_keys: str) -> None:
        from lamina.api.app import create_app
        from lamina.api.server import uvicorn_config
        from lamina.config import load_settings
        from lamina.platform import Platform

        self.port = free_port()
        settings = load_settings(env={"LAMINA_ACCESS_KEYS": access_keys, "LAMINA_LOG_LEVEL": "warning"},
                                 data_dir=data_dir, port=self.port)
        self.platform = Platform(settings)
        app = create_app(self.platform)
        # The principal each request was attributed to, read from its state.
        self.principals: list[object] = []

        async def recording(scope, receive, send):
            await app(scope, receive, send)
            if scope["type"] == "http":
                self.principals.append(scope.get("state", {}).get("principal"))

        self.server = uvicorn.Server(uvicorn_config(recording, settings))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> InProcessServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "in-process server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def client(self, key: str, secret: str, token: str | None = None):
        return boto3.client("lambda", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=key, aws_secret_access_key=secret,
                            aws_session_token=token,
                            config=Config(retries={"max_attempts": 1}))


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    with InProcessServer(tmp_path_factory.mktemp("sigv4-roles") / "data", f"{KEY}:{SECRET}") as srv:
        yield srv


def test_request_signed_with_issued_role_credentials_is_attributed_to_the_role(in_process):
    issued = in_process.platform.credentials.issue(ROLE_ARN)
    assert issued.access_key_id.startswith("ASIA") and len(issued.access_key_id) == 20
    assert len(issued.secret_access_key) == 40
    client = in_process.client(issued.access_key_id, issued.secret_access_key, issued.session_token)
    client.create_function(**function_args("role-made"))
    assert client.get_function(FunctionName="role-made")["Configuration"]["FunctionName"] == "role-made"
    principal = in_process.principals[-1]
    assert principal.access_key_id == issued.access_key_id
    assert principal.role_arn == ROLE_ARN
    assert principal.verified
    # The configured long-term key still works beside it, attributed to no role.
    in_process.client(KEY, SECRET).list_functions()
    assert in_process.principals[-1].role_arn is None


def test_role_credentials_with_a_wrong_or_missing_token_are_unrecognized(in_process):
    issued = in_process.platform.credentials.issue(ROLE_ARN)
    for token in ("not-the-token", None):
        client = in_process.client(issued.access_key_id, issued.secret_access_key, token)
        with aws_error(client, "UnrecognizedClientException", 403) as info:
            client.list_functions()
        assert error_message(info) == "The security token included in the request is invalid."


def test_role_credentials_with_a_wrong_secret_are_invalid_signature(in_process):
    issued = in_process.platform.credentials.issue(ROLE_ARN)
    client = in_process.client(issued.access_key_id, "x" * 40, issued.session_token)
    with aws_error(client, "InvalidSignatureException", 403):
        client.list_functions()


def test_expired_role_credentials_are_expired_token(in_process):
    registry = in_process.platform.credentials
    lifetime = registry.lifetime_s
    registry.lifetime_s = 0.0
    try:
        issued = registry.issue(ROLE_ARN)
    finally:
        registry.lifetime_s = lifetime
    client = in_process.client(issued.access_key_id, issued.secret_access_key, issued.session_token)
    with aws_error(client, "ExpiredTokenException", 403) as info:
        client.list_functions()
    assert error_message(info) == "The security token included in the request is expired"


def test_revoked_role_credentials_are_unrecognized(in_process):
    issued = in_process.platform.credentials.issue(ROLE_ARN)
    client = in_process.client(issued.access_key_id, issued.secret_access_key, issued.session_token)
    client.list_functions()
    in_process.platform.credentials.revoke(issued.access_key_id)
    with aws_error(client, "UnrecognizedClientException", 403):
        client.list_functions()


def test_long_term_key_with_a_session_token_is_unrecognized(in_process):
    client = in_process.client(KEY, SECRET, "some-token")
    with aws_error(client, "UnrecognizedClientException", 403):
        client.list_functions()


def test_role_credentials_are_verified_without_configured_keys(tmp_path):
    with InProcessServer(tmp_path / "data", "") as srv:
        issued = srv.platform.credentials.issue(ROLE_ARN)
        good = srv.client(issued.access_key_id, issued.secret_access_key, issued.session_token)
        good.list_functions()
        assert srv.principals[-1].role_arn == ROLE_ARN
        forged = srv.client(issued.access_key_id, "y" * 40, issued.session_token)
        with aws_error(forged, "InvalidSignatureException", 403):
            forged.list_functions()
        # Any other key is still welcome on a loopback development server.
        srv.client("anything", "goes").list_functions()
        assert srv.principals[-1].role_arn is None
