"""SigV4: with access keys configured, every request's signature is recomputed."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from lamina.api.auth import SignedRequest, SigV4Verifier
from lamina.errors import InvalidSignatureException
from tests.conftest import Server, free_port
from tests.helpers import aws_cli, aws_error, error_message, function_args

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
