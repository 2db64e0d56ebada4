"""Serving function URLs: HTTP requests in, payload format 2.0 events to the function,
its answer mapped back to HTTP, as AWS's function URL front end does.

A request reaches a URL in one of two ways, both on Lamina's own port:
- by host name, AWS style: `http://<url-id>.lambda-url.<region>.localhost:<port>/path`
  (names under .localhost resolve to loopback in browsers and curl);
- by path prefix, for clients that cannot set the Host header:
  `http://127.0.0.1:<port>/lambda-url/<url-id>/path`.

This runs before the Lambda REST API's router (see `FunctionUrlMiddleware`), answers
CORS preflights itself, checks AuthType (SigV4 for AWS_IAM, the public policy
statements for NONE) and invokes through the invoke service like any other caller.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from lamina.api.auth import ANONYMOUS, Principal, RequestHead, SigV4Verifier
from lamina.api.bodies import BodyReader
from lamina.control.function_urls import URL_DOMAIN, FunctionUrlConfig
from lamina.control.models import LATEST
from lamina.control.permissions import (
    INVOKE_FUNCTION,
    INVOKE_FUNCTION_URL,
    AccessRequest,
)
from lamina.errors import (
    LambdaError,
    RequestEntityTooLargeException,
    RequestTimeoutException,
    ResourceNotFoundException,
    TooManyRequestsException,
)
from lamina.invoke.service import (
    InvocationRequest,
    InvocationResult,
    StreamedInvocation,
)
from lamina.observe.trace_headers import new_root
from lamina.platform import Platform

log = logging.getLogger("lamina.api.function_urls")

PATH_PREFIX = "/lambda-url/"
_PATH = re.compile(r"^/lambda-url/(?P<id>[a-z0-9]{1,64})(?P<rest>/.*)?$")
# AWS's bodies for what the front end refuses itself.
FORBIDDEN = ("Forbidden. For troubleshooting Function URL authorization issues, see: "
             "https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html")
# Request bodies sent to the function as text; everything else goes base64.
_TEXT_TYPES = re.compile(
    r"^(text/.*|application/(.*\+)?(json|xml|javascript|x-www-form-urlencoded|graphql)|"
    r"application/x-javascript)(;.*)?$",
    re.IGNORECASE,
)


def _json_response(status: int, message: str | None, request_id: str,
                   extra: dict[str, str] | None = None) -> Response:
    headers = {"x-amzn-RequestId": request_id, **(extra or {})}
    return Response(json.dumps({"Message": message}), status, headers,
                    media_type="application/json")


class FunctionUrlServer:
    def __init__(self, platform: Platform, verifier: SigV4Verifier) -> None:
        self.platform = platform
        self.urls = platform.function_urls
        self.region = platform.region
        self.verifier = verifier
        self._host = re.compile(
            rf"^(?P<id>[a-z0-9]{{1,64}})\.lambda-url\.{re.escape(self.region.region)}\."
            rf"{re.escape(URL_DOMAIN)}\.?(:\d+)?$",
            re.IGNORECASE,
        )

    def match(self, scope: Scope) -> tuple[str, str] | None:
        """(url id, the path the function sees) if the request is for a function URL."""
        path: str = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        path = path.split("?", 1)[0]
        for name, value in scope.get("headers", []):
            if name == b"host":
                found = self._host.match(value.decode("latin-1"))
                if found:
                    return found["id"].lower(), path or "/"
                break
        found = _PATH.match(path)
        if found:
            return found["id"], found["rest"] or "/"
        return None

    async def handle(self, request: Request, url_id: str, raw_path: str) -> Response:
        request_id = str(uuid.uuid4())
        body = BodyReader(request, self.platform.settings.request_body_timeout_s)
        try:
            response = await self._serve(request, url_id, raw_path, request_id, body)
        except RequestTimeoutException as error:
            response = _json_response(408, error.message, request_id, {"connection": "close"})
        except Exception:
            log.exception("function URL request %s %s failed", request.method, raw_path)
            response = _json_response(500, "Internal Server Error", request_id)
        await body.discard(self.platform.settings.limits.max_discarded_request_bytes)
        if body.close_connection:
            response.headers["connection"] = "close"
        return response

    async def _serve(self, request: Request, url_id: str, raw_path: str, request_id: str,
                     body: BodyReader) -> Response:
        config = self.urls.by_url_id(url_id)
        if config is None:
            # No such URL, or its function (or config) was deleted.
            return _json_response(404, None, request_id)
        cors = config.cors or None
        if cors is not None and _is_preflight(request):
            return _preflight(cors, request, request_id)
        head = RequestHead(
            method=request.method,
            raw_path=request.scope.get("raw_path", request.url.path.encode()).decode("latin-1"),
            raw_query=request.scope.get("query_string", b"").decode("latin-1"),
            headers=request.headers,
        )
        principal = ANONYMOUS
        authorization = None
        if config.auth_type == "AWS_IAM":
            if "authorization" not in request.headers:
                return _json_response(403, FORBIDDEN, request_id)
            try:
                authorization = self.verifier.authenticate(head, "lambda")
            except LambdaError as error:
                return _json_response(403, error.message, request_id)
        limit = self.platform.settings.limits.max_sync_payload_bytes
        try:
            payload = await body.read(
                limit, lambda: RequestEntityTooLargeException.for_operation(limit, "Invoke")
            )
        except RequestEntityTooLargeException:
            return _json_response(413, "Request Entity Too Large", request_id)
        if authorization is not None:
            try:
                principal = self.verifier.verify_signature(authorization, head, payload.sha256)
            except LambdaError as error:
                return _json_response(403, error.message, request_id)
        caller = self._caller_account(config, principal)
        if not self._authorized(config, caller, principal):
            return _json_response(403, FORBIDDEN, request_id)
        event = self.event(config, request, raw_path, payload.data, request_id, caller, principal)
        try:
            result = await self._invoke(config, event, request_id)
        except TooManyRequestsException:
            return _json_response(429, "Rate Exceeded.", request_id)
        except RequestEntityTooLargeException:
            return _json_response(413, "Request Entity Too Large", request_id)
        except ResourceNotFoundException:
            return _json_response(404, None, request_id)
        except LambdaError as error:
            log.info("function URL %s: %s", url_id, error.message)
            return _json_response(502, "Internal Server Error", request_id)
        if isinstance(result, StreamedInvocation):
            response = await streamed_response(result, self.platform.settings.limits.max_sync_payload_bytes)
        else:
            response = function_response(result)
        response.headers["x-amzn-RequestId"] = request_id
        if cors is not None:
            _apply_cors(cors, request, response)
        return response

    # -- who is calling ----------------------------------------------------------

    def _caller_account(self, config: FunctionUrlConfig, principal: Principal) -> str | None:
        """The caller's account: None for NONE (the public), else the key's."""
        if config.auth_type == "NONE":
            return None
        return principal.account_id or self.region.account_id

    def _authorized(self, config: FunctionUrlConfig, account: str | None,
                    principal: Principal) -> bool:
        # Since October 2025 a URL needs both actions granted (AWS adds the second
        # statement in its console, not through the API).
        requests = [
            AccessRequest(action, account, principal.role_arn, url_auth_type=config.auth_type)
            for action in (INVOKE_FUNCTION_URL, INVOKE_FUNCTION)
        ]
        qualifier = None if config.qualifier == LATEST else config.qualifier
        return self.platform.permissions.authorize(config.function_name, qualifier, requests)

    # -- the event ----------------------------------------------------------------

    def event(self, config: FunctionUrlConfig, request: Request, raw_path: str, body: bytes,
              request_id: str, account: str | None, principal: Principal) -> dict[str, Any]:
        """The payload format 2.0 event AWS builds for a function URL request."""
        headers: dict[str, str] = {}
        cookies: list[str] = []
        for name, value in request.headers.raw:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            if key == "cookie":
                cookies.extend(c.strip() for c in text.split(";") if c.strip())
                continue
            headers[key] = f"{headers[key]},{text}" if key in headers else text
        source_ip = request.client.host if request.client else "127.0.0.1"
        headers.setdefault("x-forwarded-for", source_ip)
        headers.setdefault("x-forwarded-proto", request.url.scheme)
        headers.setdefault("x-forwarded-port", str(request.url.port or self.platform.settings.port))
        # The function's _X_AMZN_TRACE_ID has the same Root (api/function_urls passes it on).
        headers.setdefault("x-amzn-trace-id", f"Root={new_root()}")
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        now = datetime.datetime.now(datetime.timezone.utc)
        domain = config.domain_name(self.region)
        context: dict[str, Any] = {
            "accountId": account or "anonymous",
            "apiId": config.url_id,
            "domainName": domain,
            "domainPrefix": config.url_id,
            "http": {
                "method": request.method,
                "path": raw_path,
                "protocol": f"HTTP/{request.scope.get('http_version', '1.1')}",
                "sourceIp": source_ip,
                "userAgent": request.headers.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(time.time() * 1000),
        }
        if config.auth_type == "AWS_IAM":
            user_arn = principal.role_arn or f"arn:aws:iam::{account}:root"
            context["authorizer"] = {"iam": {
                "accessKey": principal.access_key_id,
                "accountId": account,
                "callerId": principal.access_key_id,
                "cognitoIdentity": None,
                "principalOrgId": None,
                "userArn": user_arn,
                "userId": principal.access_key_id,
            }}
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": raw_path,
            "rawQueryString": raw_query,
        }
        if cookies:
            event["cookies"] = cookies
        event["headers"] = headers
        query: dict[str, str] = {}
        for key, value in parse_qsl(raw_query, keep_blank_values=True):
            query[key] = f"{query[key]},{value}" if key in query else value
        if query:
            event["queryStringParameters"] = query
        event["requestContext"] = context
        if body:
            plain = _as_text(body, headers.get("content-type", ""))
            if plain is not None:
                event["body"] = plain
                event["isBase64Encoded"] = False
            else:
                event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
        else:
            event["isBase64Encoded"] = False
        return event

    # -- invoking -----------------------------------------------------------------

    async def _invoke(self, config: FunctionUrlConfig, event: dict[str, Any],
                      request_id: str) -> InvocationResult | StreamedInvocation:
        """Every URL invocation passes here: buffered, or with InvokeMode=RESPONSE_STREAM
        streamed to the client as the function writes."""
        request = InvocationRequest(
            function_name=config.function_name,
            qualifier=None if config.qualifier == LATEST else config.qualifier,
            payload=json.dumps(event).encode(),
            request_id=request_id,
            trace_header=event["headers"].get("x-amzn-trace-id"),
        )
        if config.streams:
            return await self.platform.invoker.invoke_stream(request)
        return await self.platform.invoker.invoke(request)


def _as_text(body: bytes, content_type: str) -> str | None:
    if not _TEXT_TYPES.match(content_type.strip()):
        return None
    try:
        return body.decode()
    except UnicodeDecodeError:
        return None


# -- the function's answer -------------------------------------------------------


def function_response(result: InvocationResult) -> Response:
    """The HTTP response for a function's result, by AWS's rules: a JSON object with
    a statusCode is a structured response (headers, cookies, body, isBase64Encoded);
    any other JSON value is a 200 application/json body."""
    if result.function_error is not None:
        return Response("Internal Server Error", 502, media_type="text/plain")
    try:
        value = json.loads(result.payload) if result.payload else None
    except ValueError:
        return Response("Internal Server Error", 502, media_type="text/plain")
    if not (isinstance(value, dict) and "statusCode" in value):
        return Response(result.payload, 200, media_type="application/json")
    try:
        status = int(value["statusCode"])
    except (TypeError, ValueError):
        return Response("Internal Server Error", 502, media_type="text/plain")
    if not 100 <= status <= 599:
        return Response("Internal Server Error", 502, media_type="text/plain")
    body = value.get("body")
    content: bytes
    if body is None:
        content = b""
    elif value.get("isBase64Encoded"):
        try:
            content = base64.b64decode(str(body))
        except ValueError:
            return Response("Internal Server Error", 502, media_type="text/plain")
    else:
        content = (body if isinstance(body, str) else json.dumps(body)).encode()
    headers = {str(k).lower(): str(v) for k, v in (value.get("headers") or {}).items()}
    headers.setdefault("content-type", "application/json")
    response = Response(content, status)
    raw = [(b"content-length", str(len(content)).encode())]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
            if k != "content-length"]
    raw += [(b"set-cookie", str(c).encode("latin-1")) for c in value.get("cookies") or []]
    response.raw_headers = raw
    return response


# A streamed response's Content-Type when the function sends a prelude (Node.js's
# `awslambda.HttpResponseStream.from`): a JSON object with statusCode, headers and
# cookies, then 8 NUL bytes, then the body.
HTTP_INTEGRATION_RESPONSE = "application/vnd.awslambda.http-integration-response"
PRELUDE_END = b"\0" * 8


async def streamed_response(invocation: StreamedInvocation, max_prelude: int) -> Response:
    """A RESPONSE_STREAM URL's answer: status and headers from the function's prelude
    (or 200 and its Content-Type), then the body as it arrives. A function that fails
    before writing anything gets the buffered path's 502; once bytes are out, a
    failure can only end the stream early, as on Lambda."""
    await invocation.wait_open()
    chunks = invocation.chunks()
    status = 200
    headers = {"content-type": invocation.content_type or "application/octet-stream"}
    cookies: list[str] = []
    first = b""
    try:
        if invocation.content_type == HTTP_INTEGRATION_RESPONSE:
            async for chunk in chunks:
                first += chunk
                if PRELUDE_END in first or len(first) > max_prelude:
                    break
            prelude, found, first = first.partition(PRELUDE_END)
            if not found:
                raise ValueError("no prelude")
            value = json.loads(prelude)
            status = int(value.get("statusCode", 200))
            headers = {str(k).lower(): str(v) for k, v in (value.get("headers") or {}).items()}
            headers.setdefault("content-type", "application/octet-stream")
            cookies = [str(c) for c in value.get("cookies") or []]
            if not 100 <= status <= 599:
                raise ValueError("status out of range")
        else:
            first = await anext(aiter(chunks), b"")
    except (ValueError, TypeError, AttributeError):
        await invocation.aclose()
        return Response("Internal Server Error", 502, media_type="text/plain")
    if not first and invocation.error_type is not None:
        return Response("Internal Server Error", 502, media_type="text/plain")

    async def body() -> Any:
        try:
            if first:
                yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await invocation.aclose()

    headers.pop("content-length", None)
    response = StreamingResponse(body(), status, headers)
    response.raw_headers += [(b"set-cookie", c.encode("latin-1")) for c in cookies]
    return response


# -- CORS -------------------------------------------------------------------------


def _is_preflight(request: Request) -> bool:
    return (request.method == "OPTIONS" and "origin" in request.headers
            and "access-control-request-method" in request.headers)


def _allowed_origin(cors: dict[str, Any], origin: str | None) -> str | None:
    if origin is None:
        return None
    origins = cors.get("AllowOrigins") or []
    if "*" in origins:
        # With credentials a wildcard cannot be sent; the origin itself is.
        return origin if cors.get("AllowCredentials") else "*"
    lowered = origin.lower()
    return origin if any(o.lower() == lowered for o in origins) else None


def _preflight(cors: dict[str, Any], request: Request, request_id: str) -> Response:
    """AWS answers a preflight itself, without invoking the function."""
    headers: dict[str, str] = {"x-amzn-RequestId": request_id}
    origin = _allowed_origin(cors, request.headers.get("origin"))
    if origin is not None:
        headers["access-control-allow-origin"] = origin
        methods = cors.get("AllowMethods") or []
        if methods:
            headers["access-control-allow-methods"] = ",".join(methods)
        allow_headers = cors.get("AllowHeaders") or []
        if allow_headers:
            headers["access-control-allow-headers"] = ",".join(h.lower() for h in allow_headers)
        if cors.get("ExposeHeaders"):
            headers["access-control-expose-headers"] = ",".join(cors["ExposeHeaders"])
        if cors.get("MaxAge") is not None:
            headers["access-control-max-age"] = str(cors["MaxAge"])
        if cors.get("AllowCredentials"):
            headers["access-control-allow-credentials"] = "true"
        headers["vary"] = "Origin"
    return Response(b"", 200, headers)


def _apply_cors(cors: dict[str, Any], request: Request, response: Response) -> None:
    """The URL's CORS headers, set over any the function returned."""
    origin = _allowed_origin(cors, request.headers.get("origin"))
    if origin is None:
        return
    response.headers["access-control-allow-origin"] = origin
    if cors.get("ExposeHeaders"):
        response.headers["access-control-expose-headers"] = ",".join(cors["ExposeHeaders"])
    if cors.get("AllowCredentials"):
        response.headers["access-control-allow-credentials"] = "true"
    response.headers["vary"] = "Origin"


class FunctionUrlMiddleware:
    """Sends function URL requests (by host name or path prefix) to the URL server,
    everything else on to the Lambda API."""

    def __init__(self, app: ASGIApp, server: FunctionUrlServer) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            found = self.server.match(scope)
            if found is not None:
                response = await self.server.handle(Request(scope, receive), *found)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
