"""Function URLs: the config API (boto3 and the AWS CLI), then real HTTP requests by
host name and by path prefix (httpx, curl), payload format 2.0 events, response
mapping, AuthType NONE and AWS_IAM, CORS, and unmodified web apps (FastAPI with
Mangum, Flask with apig-wsgi, Powertools' APIGatewayHttpResolver) installed from the
package index into the function's package."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.conftest import Server
from tests.helpers import aws_error, error_message, function_args, make_zip

ACCOUNT = "000000000000"
RUNTIME = "python3.13"
FORBIDDEN = {"Message": "Forbidden. For troubleshooting Function URL authorization issues, see: "
                        "https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html"}
OWN_KEY, OWN_SECRET = "AKIDURLOWNER", "url-owner-secret"
OTHER_KEY, OTHER_SECRET, OTHER_ACCOUNT = "AKIDURLPARTNER", "url-partner-secret", "444455556666"
# Packages installed into functions are kept here between runs (outside the clone).
WHEELS = Path.home() / ".cache" / "lamina-test-wheels"

HANDLER = """
import base64, json, time

def handler(event, context):
    path = event["rawPath"]
    if path == "/error":
        raise RuntimeError("boom")
    if path == "/sleep":
        time.sleep(5)
    if path == "/plain":
        return {"hello": "world"}
    if path == "/number":
        return 42
    if path == "/binary":
        return {"statusCode": 200, "headers": {"content-type": "image/png"},
                "body": base64.b64encode(bytes(range(256))).decode(), "isBase64Encoded": True}
    if path == "/cookies":
        return {"statusCode": 202,
                "headers": {"x-custom": "yes", "access-control-allow-origin": "http://function"},
                "cookies": ["a=1; Path=/", "b=2"], "body": "made"}
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": json.dumps(event)}
"""


def new_name(prefix: str = "url") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_public(lam, name: str, qualifier: str | None = None) -> None:
    """The two statements AWS requires for AuthType NONE since October 2025."""
    extra = {"Qualifier": qualifier} if qualifier else {}
    lam.add_permission(FunctionName=name, StatementId="FunctionURLAllowPublicAccess",
                       Action="lambda:InvokeFunctionUrl", Principal="*",
                       FunctionUrlAuthType="NONE", **extra)
    lam.add_permission(FunctionName=name, StatementId="FunctionURLInvokeAllowPublicAccess",
                       Action="lambda:InvokeFunction", Principal="*",
                       InvokedViaFunctionUrl=True, **extra)


def create_function(lam, name: str, code: bytes, **overrides: Any) -> None:
    lam.create_function(**function_args(name, code, Runtime=RUNTIME, **overrides))
    lam.get_waiter("function_active_v2").wait(FunctionName=name)


class Url:
    """A function URL, reached by host name (Host header) or by path prefix."""

    def __init__(self, server: Server, function_url: str) -> None:
        self.server = server
        self.function_url = function_url
        self.host = function_url.split("//", 1)[1].rstrip("/")
        self.url_id = self.host.split(".", 1)[0]

    def request(self, method: str, path: str = "/", by: str = "host", **kwargs: Any) -> httpx.Response:
        headers = httpx.Headers(kwargs.pop("headers", None))
        if by == "host":
            headers["host"] = self.host
            target = self.server.endpoint + path
        else:
            target = f"{self.server.endpoint}/lambda-url/{self.url_id}{path}"
        return httpx.request(method, target, headers=headers, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def echo(lam, server) -> tuple[str, Url]:
    name = new_name("echo")
    create_function(lam, name, make_zip({"app.py": HANDLER}), Timeout=2)
    config = lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    make_public(lam, name)
    return name, Url(server, config["FunctionUrl"])


# -- the config API -----------------------------------------------------------------


def test_url_config_lifecycle(lam, server):
    name = new_name()
    create_function(lam, name, make_zip({"app.py": HANDLER}))
    created = lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    url = created["FunctionUrl"]
    assert url.startswith("http://") and url.endswith(
        f".lambda-url.us-east-1.localhost:{server.port}/")
    assert created["FunctionArn"] == f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}"
    assert "InvokeMode" not in created and "LastModifiedTime" not in created
    with aws_error(lam, "ResourceConflictException", 409) as info:
        lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert error_message(info) == (
        f"Failed to create function url config for [functionArn = {created['FunctionArn']}]. "
        "Error message:  FunctionUrlConfig exists for this Lambda function")
    got = lam.get_function_url_config(FunctionName=name)
    assert (got["AuthType"], got["InvokeMode"], got["FunctionUrl"]) == ("NONE", "BUFFERED", url)
    assert got["LastModifiedTime"] and got["CreationTime"] == created["CreationTime"]
    cors = {"AllowOrigins": ["https://example.com"], "AllowMethods": ["GET"], "MaxAge": 60}
    updated = lam.update_function_url_config(FunctionName=name, AuthType="AWS_IAM", Cors=cors)
    assert (updated["AuthType"], updated["FunctionUrl"], updated["Cors"]) == ("AWS_IAM", url, cors)
    assert "InvokeMode" not in updated
    streamed = lam.update_function_url_config(FunctionName=name, InvokeMode="RESPONSE_STREAM")
    assert streamed["InvokeMode"] == "RESPONSE_STREAM"
    got = lam.get_function_url_config(FunctionName=name)
    assert (got["AuthType"], got["InvokeMode"], got["Cors"]) == ("AWS_IAM", "RESPONSE_STREAM", cors)
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    alias_url = lam.create_function_url_config(FunctionName=name, Qualifier="live",
                                               AuthType="NONE")
    assert alias_url["FunctionArn"].endswith(f":{name}:live")
    assert alias_url["FunctionUrl"] != url
    listed = lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"]
    assert [c["FunctionArn"].rsplit(":", 1)[1] for c in listed] == [name, "live"]
    assert all("InvokeMode" in c and "LastModifiedTime" in c for c in listed)
    assert len(lam.list_function_url_configs(FunctionName=name, MaxItems=1)["FunctionUrlConfigs"]) == 1
    lam.delete_function_url_config(FunctionName=name)
    with aws_error(lam, "ResourceNotFoundException", 404) as info:
        lam.get_function_url_config(FunctionName=name)
    assert error_message(info) == "The resource you requested does not exist."
    # Created again, the URL is the one it was: it never changes.
    assert lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"] == url


def test_url_config_errors_carry_aws_messages(lam, lam_unchecked):
    name = new_name()
    create_function(lam, name, make_zip({"app.py": HANDLER}))
    lam.publish_version(FunctionName=name)
    for kwargs in ({"FunctionName": "doesnotexist"},
                   {"FunctionName": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:doesnotexist"},
                   {"FunctionName": name, "Qualifier": "alias-doesnotexist"}):
        with aws_error(lam, "ResourceNotFoundException", 404) as info:
            lam.create_function_url_config(AuthType="NONE", **kwargs)
        assert error_message(info) == "Function does not exist"
        with aws_error(lam, "ResourceNotFoundException", 404) as info:
            lam.get_function_url_config(**kwargs)
        assert error_message(info) == "The resource you requested does not exist."
        with aws_error(lam, "ResourceNotFoundException", 404) as info:
            lam.delete_function_url_config(**kwargs)
        assert error_message(info) == "The resource you requested does not exist."
    pattern = "((?!^\\d+$)^[0-9a-zA-Z-_]+$)"
    for qualifier in ("1", "2", "$LATEST"):
        for call in (lam_unchecked.create_function_url_config, lam_unchecked.get_function_url_config,
                     lam_unchecked.delete_function_url_config):
            extra = {"AuthType": "NONE"} if call == lam_unchecked.create_function_url_config else {}
            with aws_error(lam_unchecked, "ValidationException", 400) as info:
                call(FunctionName=name, Qualifier=qualifier, **extra)
            assert error_message(info) == (
                f"1 validation error detected: Value '{qualifier}' at 'qualifier' failed to "
                f"satisfy constraint: Member must satisfy regular expression pattern: {pattern}")
    with aws_error(lam, "InvalidParameterValueException", 400) as info:
        lam.create_function_url_config(FunctionName=f"{name}:live", Qualifier="other",
                                       AuthType="NONE")
    assert error_message(info) == (
        "The derived qualifier from the function name does not match the specified qualifier.")
    with aws_error(lam, "ResourceNotFoundException", 404) as info:
        lam.list_function_url_configs(FunctionName="doesnotexist")
    assert error_message(info) == "Function does not exist"
    assert lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"] == []
    with aws_error(lam_unchecked, "ValidationException", 400) as info:
        lam_unchecked.create_function_url_config(FunctionName=name, AuthType="OPEN")
    assert "Member must satisfy enum value set: [NONE, AWS_IAM]" in error_message(info)
    with aws_error(lam_unchecked, "ValidationException", 400) as info:
        lam_unchecked.create_function_url_config(FunctionName=name, AuthType="NONE",
                                                 InvokeMode="CHUNKED")
    assert "Member must satisfy enum value set: [BUFFERED, RESPONSE_STREAM]" in error_message(info)
    with aws_error(lam_unchecked, "ValidationException", 400) as info:
        lam_unchecked.create_function_url_config(FunctionName=name, AuthType="NONE",
                                                 Cors={"MaxAge": 86401})
    assert "Member must have value less than or equal to 86400" in error_message(info)


def test_aws_cli_creates_a_url_that_curl_reaches_by_host_name(lam, server):
    name = new_name("cli")
    create_function(lam, name, make_zip({"app.py": HANDLER}))
    make_public(lam, name)
    aws = Path(sys.executable).with_name("aws")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}
    out = subprocess.run(
        [str(aws), "lambda", "create-function-url-config", "--function-name", name,
         "--auth-type", "NONE", "--endpoint-url", server.endpoint, "--output", "json"],
        env=env, capture_output=True, text=True, check=True,
    )
    function_url = json.loads(out.stdout)["FunctionUrl"]
    host = function_url.split("//", 1)[1].split(":", 1)[0]
    # curl resolves names under .localhost to loopback itself; --resolve says so explicitly.
    for extra in ([], ["--resolve", f"{host}:{server.port}:127.0.0.1"]):
        shown = subprocess.run(["curl", "-s", *extra, f"{function_url}hello?x=1"],
                               capture_output=True, text=True, check=True, timeout=60).stdout
        event = json.loads(shown)
        assert (event["rawPath"], event["rawQueryString"]) == ("/hello", "x=1")
        assert event["requestContext"]["domainName"] == host
    by_path = subprocess.run(
        ["curl", "-s", f"{server.endpoint}/lambda-url/{host.split('.')[0]}/p"],
        capture_output=True, text=True, check=True, timeout=60).stdout
    assert json.loads(by_path)["rawPath"] == "/p"


# -- requests and events ---------------------------------------------------------------


def test_event_is_payload_format_2_0(echo):
    _, url = echo
    response = url.request("GET", "/some/path?b=2&a=1&a=3&empty=",
                           headers={"Cookie": "s=1; t=2", "X-Multi": "one", "User-Agent": "spec/1"})
    assert response.status_code == 200
    event = response.json()
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert (event["rawPath"], event["rawQueryString"]) == ("/some/path", "b=2&a=1&a=3&empty=")
    assert event["cookies"] == ["s=1", "t=2"]
    assert "cookie" not in event["headers"]
    assert event["headers"]["x-multi"] == "one" and event["headers"]["host"] == url.host
    assert event["queryStringParameters"] == {"b": "2", "a": "1,3", "empty": ""}
    context = event["requestContext"]
    assert context["accountId"] == "anonymous" and "authorizer" not in context
    assert (context["apiId"], context["domainPrefix"]) == (url.url_id, url.url_id)
    assert context["domainName"] == url.host.split(":")[0]
    assert context["http"] == {"method": "GET", "path": "/some/path", "protocol": "HTTP/1.1",
                               "sourceIp": "127.0.0.1", "userAgent": "spec/1"}
    assert (context["routeKey"], context["stage"]) == ("$default", "$default")
    assert context["requestId"] == response.headers["x-amzn-requestid"]
    assert isinstance(context["timeEpoch"], int) and context["time"].endswith(" +0000")
    assert event["isBase64Encoded"] is False and "body" not in event


def test_repeated_headers_are_comma_joined_and_bodies_keep_their_encoding(echo):
    _, url = echo
    response = url.request("POST", "/", by="path",
                           headers=[("x-dup", "a"), ("x-dup", "b"),
                                    ("content-type", "application/json")],
                           content=b'{"k": "v"}')
    event = response.json()
    assert event["headers"]["x-dup"] == "a,b"
    assert (event["body"], event["isBase64Encoded"]) == ('{"k": "v"}', False)
    binary = bytes(range(256))
    event = url.request("PUT", "/bin", content=binary,
                        headers={"content-type": "application/octet-stream"}).json()
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == binary
    assert event["requestContext"]["http"]["method"] == "PUT"


def test_responses_map_back_as_aws_maps_them(echo):
    _, url = echo
    shaped = url.request("GET", "/cookies")
    assert (shaped.status_code, shaped.text) == (202, "made")
    assert shaped.headers["x-custom"] == "yes"
    assert shaped.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2"]
    binary = url.request("GET", "/binary")
    assert binary.content == bytes(range(256)) and binary.headers["content-type"] == "image/png"
    plain = url.request("GET", "/plain")
    assert (plain.status_code, plain.json()) == (200, {"hello": "world"})
    assert plain.headers["content-type"] == "application/json"
    assert url.request("GET", "/number").json() == 42
    failed = url.request("GET", "/error")
    assert (failed.status_code, failed.text) == (502, "Internal Server Error")
    timed_out = url.request("GET", "/sleep")
    assert timed_out.status_code == 502


def test_throttled_url_requests_get_429(lam, server):
    name = new_name("throttled")
    create_function(lam, name, make_zip({"app.py": HANDLER}))
    url = Url(server, lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"])
    make_public(lam, name)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    assert url.request("GET", "/").status_code == 429


def test_request_body_over_6_mb_gets_413(echo):
    _, url = echo
    response = url.request("POST", "/", content=b"x" * (6 * 1024 * 1024 + 1),
                           headers={"content-type": "text/plain"})
    assert response.status_code == 413


def test_url_of_a_deleted_function_answers_404(lam, server):
    name = new_name("gone")
    create_function(lam, name, make_zip({"app.py": HANDLER}))
    url = Url(server, lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"])
    make_public(lam, name)
    assert url.request("GET", "/").status_code == 200
    lam.delete_function(FunctionName=name)
    for by in ("host", "path"):
        assert url.request("GET", "/", by=by).status_code == 404
    assert url.request("GET", "/", headers={"host": "nosuchid.lambda-url.us-east-1.localhost"}
                       ).status_code == 404


def test_response_stream_urls_answer_buffered_for_now(lam, server):
    name = new_name("stream")
    create_function(lam, name, make_zip({"app.py": HANDLER}))
    config = lam.create_function_url_config(FunctionName=name, AuthType="NONE",
                                            InvokeMode="RESPONSE_STREAM")
    assert config["InvokeMode"] == "RESPONSE_STREAM"
    make_public(lam, name)
    assert Url(server, config["FunctionUrl"]).request("GET", "/plain").json() == {"hello": "world"}


# -- AuthType NONE needs both public statements ------------------------------------------


def test_auth_none_needs_both_public_statements(lam, server):
    name = new_name("public")
    create_function(lam, name, make_zip({"app.py": HANDLER}))
    url = Url(server, lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"])
    denied = url.request("GET", "/plain")
    assert (denied.status_code, denied.json()) == (403, FORBIDDEN)
    lam.add_permission(FunctionName=name, StatementId="url", Action="lambda:InvokeFunctionUrl",
                       Principal="*", FunctionUrlAuthType="NONE")
    assert url.request("GET", "/plain").status_code == 403
    lam.add_permission(FunctionName=name, StatementId="invoke", Action="lambda:InvokeFunction",
                       Principal="*", InvokedViaFunctionUrl=True)
    assert url.request("GET", "/plain").status_code == 200
    # A statement for the other auth type does not open a NONE URL.
    lam.remove_permission(FunctionName=name, StatementId="url")
    lam.add_permission(FunctionName=name, StatementId="iam", Action="lambda:InvokeFunctionUrl",
                       Principal="*", FunctionUrlAuthType="AWS_IAM")
    assert url.request("GET", "/plain").status_code == 403


def test_alias_url_uses_the_alias_policy(lam, server):
    name = new_name("aliased")
    create_function(lam, name, make_zip({"app.py": HANDLER}))
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    url = Url(server, lam.create_function_url_config(FunctionName=name, Qualifier="live",
                                                     AuthType="NONE")["FunctionUrl"])
    make_public(lam, name)
    assert url.request("GET", "/").status_code == 403
    make_public(lam, name, qualifier="live")
    assert url.request("GET", "/").status_code == 200


# -- CORS --------------------------------------------------------------------------------


def test_cors_preflight_is_answered_without_invoking(lam, server):
    name = new_name("cors")
    # A function that fails for anything it is given: a preflight must never reach it.
    create_function(lam, name, make_zip({"app.py": "def handler(event, context):\n    raise Exception('invoked')\n"}))
    cors = {"AllowOrigins": ["https://app.example"], "AllowMethods": ["GET", "POST"],
            "AllowHeaders": ["X-Token"], "ExposeHeaders": ["X-Result"], "MaxAge": 300,
            "AllowCredentials": True}
    url = Url(server, lam.create_function_url_config(FunctionName=name, AuthType="NONE",
                                                     Cors=cors)["FunctionUrl"])
    preflight = url.request("OPTIONS", "/anything", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-token"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert preflight.headers["access-control-allow-methods"] == "GET,POST"
    assert preflight.headers["access-control-allow-headers"] == "x-token"
    assert preflight.headers["access-control-max-age"] == "300"
    assert preflight.headers["access-control-allow-credentials"] == "true"
    other = url.request("OPTIONS", "/", headers={"Origin": "https://evil.example",
                                                 "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in other.headers


def test_cors_headers_are_merged_over_the_function_headers(echo, lam):
    name, url = echo
    lam.update_function_url_config(FunctionName=name, Cors={
        "AllowOrigins": ["*"], "ExposeHeaders": ["x-custom"]})
    try:
        response = url.request("GET", "/cookies", headers={"Origin": "http://site.example"})
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.headers["access-control-expose-headers"] == "x-custom"
        assert response.headers["x-custom"] == "yes"
    finally:
        lam.update_function_url_config(FunctionName=name, Cors={})


# -- AuthType AWS_IAM ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(start_server) -> Server:
    return start_server(
        {"LAMINA_ACCESS_KEYS": f"{OWN_KEY}:{OWN_SECRET},{OTHER_KEY}:{OTHER_SECRET}:{OTHER_ACCOUNT}"},
        name="lamina-url-iam",
    )


def signed(url: Url, key: str, secret: str, method: str, path: str, body: bytes = b"") -> httpx.Response:
    request = AWSRequest(method=method, url=f"http://{url.host}{path}", data=body,
                         headers={"content-type": "application/json"} if body else {})
    SigV4Auth(Credentials(key, secret), "lambda", "us-east-1").add_auth(request)
    headers = {k: v for k, v in request.headers.items()}
    return url.request(method, path, headers=headers, content=body)


def test_aws_iam_urls_verify_sigv4_and_the_policy(keyed):
    own = keyed.client(key=OWN_KEY, secret=OWN_SECRET)
    name = new_name("iam")
    create_function(own, name, make_zip({"app.py": HANDLER}))
    url = Url(keyed, own.create_function_url_config(FunctionName=name, AuthType="AWS_IAM")["FunctionUrl"])
    ok = signed(url, OWN_KEY, OWN_SECRET, "POST", "/signed?q=1", b'{"x": 1}')
    assert ok.status_code == 200, ok.text
    event = ok.json()
    assert event["requestContext"]["accountId"] == ACCOUNT
    assert event["requestContext"]["authorizer"]["iam"]["accessKey"] == OWN_KEY
    assert event["body"] == '{"x": 1}'
    unsigned = url.request("GET", "/signed")
    assert (unsigned.status_code, unsigned.json()) == (403, FORBIDDEN)
    forged = signed(url, OWN_KEY, "not-the-secret", "GET", "/signed")
    assert forged.status_code == 403
    partner = signed(url, OTHER_KEY, OTHER_SECRET, "GET", "/signed")
    assert (partner.status_code, partner.json()) == (403, FORBIDDEN)
    for action in ("lambda:InvokeFunctionUrl", "lambda:InvokeFunction"):
        own.add_permission(FunctionName=name, StatementId=action.split(":")[1], Action=action,
                           Principal=OTHER_ACCOUNT)
    partner = signed(url, OTHER_KEY, OTHER_SECRET, "GET", "/signed")
    assert partner.status_code == 200
    assert partner.json()["requestContext"]["authorizer"]["iam"]["accountId"] == OTHER_ACCOUNT


# -- web frameworks, unmodified ----------------------------------------------------------------


def site_packages(*requirements: str) -> Path:
    """The requirements installed for the function's runtime (CPython 3.13, Linux),
    cached across runs."""
    target = WHEELS / "-".join(requirements)
    if not (target / ".complete").exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--target", str(target),
             "--python-version", "3.13", "--implementation", "cp",
             "--platform", "manylinux2014_x86_64", "--only-binary=:all:", *requirements],
            check=True, timeout=600,
        )
        (target / ".complete").touch()
    return target


def package(packages: Path, app: str) -> bytes:
    zip_path = packages.with_suffix(".zip")
    if not zip_path.exists():
        partial = zip_path.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(packages.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.name != ".complete":
                    info = zipfile.ZipInfo(path.relative_to(packages).as_posix())
                    info.external_attr = (0o100644) << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, path.read_bytes())
        partial.rename(zip_path)
    # The app itself is appended to a copy of the cached dependencies' zip.
    buffer = io.BytesIO(zip_path.read_bytes())
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("app.py")
        info.external_attr = (0o100644) << 16
        archive.writestr(info, app)
    return buffer.getvalue()


def framework_url(lam, server: Server, requirements: tuple[str, ...], app: str) -> Url:
    name = new_name("web")
    code = package(site_packages(*requirements), app)
    create_function(lam, name, code, Timeout=30, MemorySize=512)
    url = Url(server, lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"])
    make_public(lam, name)
    return url


FASTAPI_APP = """
from fastapi import FastAPI, Query, Request, Response
from mangum import Mangum

app = FastAPI()

@app.get("/items/{item_id}")
def read_item(item_id: str, request: Request, tag: list[str] = Query(default=[])):
    return {"item_id": item_id, "tags": tag, "session": request.cookies.get("session")}

@app.post("/upload")
async def upload(request: Request):
    body = await request.body()
    response = Response(content=body[::-1], media_type="application/octet-stream")
    response.set_cookie("seen", "yes")
    return response

handler = Mangum(app, lifespan="off")
"""

FLASK_APP = """
from apig_wsgi import make_lambda_handler
from flask import Flask, make_response, request

app = Flask(__name__)

@app.route("/hello", methods=["GET", "POST"])
def hello():
    response = make_response({"name": request.args.get("name"), "method": request.method,
                              "session": request.cookies.get("session"),
                              "length": len(request.get_data())})
    response.set_cookie("flask", "yes")
    return response

@app.route("/bytes", methods=["POST"])
def reverse():
    return app.response_class(request.get_data()[::-1], mimetype="application/octet-stream")

handler = make_lambda_handler(app, binary_support=True)
"""

POWERTOOLS_APP = """
import base64
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

app = APIGatewayHttpResolver()

@app.get("/greet/<name>")
def greet(name):
    event = app.current_event
    return {"greeting": f"hello {name}", "x": event.get_query_string_value("x"),
            "cookies": event.cookies}

@app.post("/echo")
def echo():
    event = app.current_event
    body = base64.b64decode(event.body) if event.is_base64_encoded else event.body.encode()
    return Response(status_code=201, content_type="application/octet-stream", body=body[::-1])

def handler(event, context):
    return app.resolve(event, context)
"""

BINARY = bytes(range(256)) * 4


@pytest.mark.slow
def test_fastapi_with_mangum_answers_unmodified(lam, server):
    url = framework_url(lam, server, ("fastapi", "mangum"), FASTAPI_APP)
    got = url.request("GET", "/items/7?tag=a&tag=b", headers={"Cookie": "session=s1"})
    assert got.status_code == 200, got.text
    assert got.json() == {"item_id": "7", "tags": ["a", "b"], "session": "s1"}
    posted = url.request("POST", "/upload", by="path", content=BINARY,
                         headers={"content-type": "application/octet-stream"})
    assert posted.status_code == 200 and posted.content == BINARY[::-1]
    assert "seen=yes" in posted.headers["set-cookie"]
    assert url.request("GET", "/missing").status_code == 404


@pytest.mark.slow
def test_flask_with_apig_wsgi_answers_unmodified(lam, server):
    url = framework_url(lam, server, ("flask", "apig-wsgi"), FLASK_APP)
    got = url.request("GET", "/hello?name=ada", headers={"Cookie": "session=s2"})
    assert got.status_code == 200, got.text
    assert got.json() == {"name": "ada", "method": "GET", "session": "s2", "length": 0}
    assert "flask=yes" in got.headers["set-cookie"]
    posted = url.request("POST", "/hello?name=bob", content=b"form=1",
                         headers={"content-type": "application/x-www-form-urlencoded"})
    assert posted.json() == {"name": "bob", "method": "POST", "session": None, "length": 6}
    reversed_ = url.request("POST", "/bytes", by="path", content=BINARY,
                            headers={"content-type": "application/octet-stream"})
    assert reversed_.content == BINARY[::-1]


@pytest.mark.slow
def test_powertools_http_resolver_answers_unmodified(lam, server):
    url = framework_url(lam, server, ("aws-lambda-powertools",), POWERTOOLS_APP)
    got = url.request("GET", "/greet/grace?x=1", headers={"Cookie": "a=1; b=2"})
    assert got.status_code == 200, got.text
    assert got.json() == {"greeting": "hello grace", "x": "1", "cookies": ["a=1", "b=2"]}
    posted = url.request("POST", "/echo", content=BINARY,
                         headers={"content-type": "application/octet-stream"})
    assert (posted.status_code, posted.content) == (201, BINARY[::-1])
    assert url.request("GET", "/nowhere").status_code == 404


def test_deleting_an_alias_deletes_its_url_and_policy(lam, server):
    name = new_name("alias-gone")
    create_function(lam, name, make_zip({"app.py": HANDLER}))
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    url = Url(server, lam.create_function_url_config(FunctionName=name, Qualifier="live",
                                                     AuthType="NONE")["FunctionUrl"])
    make_public(lam, name, qualifier="live")
    assert url.request("GET", "/").status_code == 200
    lam.delete_alias(FunctionName=name, Name="live")
    assert url.request("GET", "/").status_code == 404
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    with aws_error(lam, "ResourceNotFoundException", 404):
        lam.get_function_url_config(FunctionName=name, Qualifier="live")
    with aws_error(lam, "ResourceNotFoundException", 404):
        lam.get_policy(FunctionName=name, Qualifier="live")


# -- InvokeMode=RESPONSE_STREAM ------------------------------------------------------

STREAMING_NODE = """
export const handler = awslambda.streamifyResponse(async (event, responseStream) => {
  const stream = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: 201, headers: {"content-type": "text/plain", "x-streamed": "yes"},
    cookies: ["s=1"],
  });
  stream.write("early\\n");
  await new Promise((resolve) => setTimeout(resolve, 1000));
  stream.write("late " + event.rawPath + "\\n");
  stream.end();
});
"""


def test_response_stream_url_sends_the_first_bytes_before_the_function_ends(lam, server):
    import time

    name = new_name("stream")
    lam.create_function(**function_args(name, make_zip({"index.mjs": STREAMING_NODE}),
                                        Runtime="nodejs24.x", Handler="index.handler"))
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    config = lam.create_function_url_config(FunctionName=name, AuthType="NONE",
                                            InvokeMode="RESPONSE_STREAM")
    make_public(lam, name)
    url = Url(server, config["FunctionUrl"])
    url.request("GET", "/warm")
    with httpx.stream("GET", f"{server.endpoint}/lambda-url/{url.url_id}/path", timeout=60) as answer:
        assert answer.status_code == 201
        assert answer.headers["x-streamed"] == "yes" and answer.headers["content-type"] == "text/plain"
        assert answer.headers.get_list("set-cookie") == ["s=1"]
        arrivals = [(time.perf_counter(), chunk) for chunk in answer.iter_bytes() if chunk]
    ended = time.perf_counter()
    assert b"".join(chunk for _, chunk in arrivals) == b"early\nlate /path\n"
    # One second between the writes: a buffered answer would bring it all at the end.
    assert ended - arrivals[0][0] > 0.5


def test_response_stream_url_of_a_buffered_function_gets_its_payload_as_is(lam, server):
    name = new_name("streamed-py")
    create_function(lam, name, make_zip({"app.py": HANDLER}), Timeout=2)
    config = lam.create_function_url_config(FunctionName=name, AuthType="NONE",
                                            InvokeMode="RESPONSE_STREAM")
    make_public(lam, name)
    url = Url(server, config["FunctionUrl"])
    answer = url.request("GET", "/plain")
    assert answer.status_code == 200 and answer.json() == {"hello": "world"}
    assert url.request("GET", "/error").status_code == 502
