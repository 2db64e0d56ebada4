"""The ASGI application: one dispatcher for every operation in the Lambda model,
for JSON-protocol services (SQS, CloudWatch, ...) addressed by X-Amz-Target on the
same endpoint, and for CloudWatch's query protocol (a form-encoded POST /)."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator, Iterator, Sequence
from urllib.parse import parse_qsl

from botocore.model import OperationModel
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from lamina.api import json_protocol, protocol, query_protocol
from lamina.api.auth import Principal, RequestHead, SigV4Verifier
from lamina.api.bodies import BodyReader, body_cap, too_large
from lamina.api.code_urls import PATH_PREFIX, CodeUrlSigner
from lamina.api.function_urls import FunctionUrlMiddleware, FunctionUrlServer
from lamina.api.operations import HANDLERS, Call, Handler, load_all
from lamina.errors import (
    AccessDeniedException,
    LambdaError,
    ResourceNotFoundException,
    ServiceException,
    TooManyRequestsException,
    UnknownOperationException,
    UnsupportedOperationException,
)
from lamina.observe import prometheus
from lamina.platform import Platform

log = logging.getLogger("lamina.api")

# REST-JSON services besides Lambda, by the path prefixes their operations use.
REST_SERVICES = {"scheduler": ("/schedules", "/schedule-groups"),
                 "signer": ("/signing-profiles", "/signing-jobs", "/signing-platforms"),
                 "efs": ("/2015-02-01/",)}
# Services whose SigV4 signing name is not their botocore name.
SIGNING_NAMES = {"efs": "elasticfilesystem"}


def rest_service(path: str) -> str:
    """The REST-JSON service a request path belongs to (Lambda's unless another's)."""
    for service, prefixes in REST_SERVICES.items():
        if path.startswith(prefixes):
            return service
    return "lambda"


# Characters Starlette's URL escapes or urlsplit drops: a path or query holding any
# of them goes through request.url, every other is taken from the scope as is.
_URL_SPECIAL = re.compile(r"[?#\\\t\r\n]")


def url_path(request: Request) -> str:
    """`request.url.path`, without building the URL for the usual request."""
    path: str = request.scope["path"]
    return request.url.path if _URL_SPECIAL.search(path) else path


def url_query(request: Request) -> str:
    """`request.url.query`, likewise."""
    query: str = request.scope.get("query_string", b"").decode()
    return request.url.query if _URL_SPECIAL.search(query) else query


def error_response(error: LambdaError, request_id: str) -> Response:
    """The error as AWS shapes it: status, x-amzn-ErrorType, {"Type", "Message"}."""
    model = protocol.service_model("lambda")
    body: dict[str, object] = {"Type": error.fault}
    headers = {"x-amzn-RequestId": request_id, "x-amzn-ErrorType": error.error_type}
    message_key = "Message"
    if error.error_type in model.shape_names:
        shape = model.shape_for(error.error_type)
        message_key = "message" if "message" in shape.members else "Message"
        for name, value in error.fields.items():
            member = shape.members.get(name)
            if member is not None and member.serialization.get("location") == "header":
                headers[member.serialization["name"]] = str(value)
            else:
                body[name] = value
    else:
        body.update(error.fields)
    body[message_key] = error.message
    return Response(
        json.dumps(body),
        status_code=error.status_code,
        headers=headers,
        media_type="application/json",
    )


class IndexedHeaders(Headers):
    """Starlette's Headers, looked up through a dict: an API request's headers are
    read a dozen times (signature, protocol, operation members), and Starlette's
    lookup decodes and compares every header each time."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope=scope)
        self._index: dict[str, str] = {}
        for key, value in self.raw:
            self._index.setdefault(key.decode("latin-1"), value.decode("latin-1"))

    def __getitem__(self, key: str) -> str:
        try:
            return self._index[key.lower()]
        except KeyError:
            raise KeyError(key) from None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._index


@dataclass(frozen=True)
class _Route:
    # botocore's name of the service, and the operation the request is for.
    service: str
    operation: OperationModel
    # rest-json (Lambda): the path's and the query's parameters.
    path_params: dict[str, str] = field(default_factory=dict)
    query: list[tuple[str, str]] = field(default_factory=list)
    # JSON protocol (SQS, Logs): the service named by X-Amz-Target.
    json_service: json_protocol.JsonService | None = None


class Dispatcher:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.settings = platform.settings
        self.routers = {name: protocol.Router(protocol.service_model(name))
                        for name in ("lambda", *REST_SERVICES)}
        self.verifier = SigV4Verifier(
            platform.settings.credentials, platform.settings.region, platform.credentials,
            accounts=platform.settings.key_accounts,
        )
        # Requests reading their body before their signature could be checked.
        self._unverified = 0
        load_all()

    async def handle(self, request: Request) -> Response:
        # Starlette builds request.headers on first use; ours is indexed (see IndexedHeaders).
        request._headers = IndexedHeaders(scope=request.scope)
        request_id = str(uuid.uuid4())
        target = request.headers.get("x-amz-target")
        query = target is None and query_protocol.is_query_request(
            request.method, url_path(request), request.headers.get("content-type"))
        body = BodyReader(request, self.settings.request_body_timeout_s)
        try:
            if query:
                response = await self._query(request, request_id, body)
            else:
                response = await self._dispatch(request, request_id, target, body)
        except LambdaError as error:
            response = self._error(error, request_id, target, query)
        except Exception:
            log.exception("unhandled error in request %s %s", request.method, request.url.path)
            response = self._error(ServiceException("An internal error occurred."), request_id,
                                   target, query)
        # A body left on the wire (the request was refused before it was read) is
        # drained, or the connection closed after the answer.
        await body.discard(self.settings.limits.max_discarded_request_bytes)
        if body.close_connection:
            response.headers["connection"] = "close"
        return response

    @staticmethod
    def _error(error: LambdaError, request_id: str, target: str | None,
               query: bool = False) -> Response:
        if query:
            return query_protocol.error_response(error, request_id)
        if target is None:
            return error_response(error, request_id)
        return json_protocol.error_response(error, request_id, json_protocol.service_for(target))

    @contextlib.contextmanager
    def _unverified_slot(self) -> Iterator[None]:
        if self._unverified >= self.settings.max_unverified_requests:
            raise TooManyRequestsException("Rate exceeded")
        self._unverified += 1
        try:
            yield
        finally:
            self._unverified -= 1

    async def _dispatch(
        self, request: Request, request_id: str, target: str | None, body: BodyReader
    ) -> Response:
        head = RequestHead(
            method=request.method,
            raw_path=(request.scope["raw_path"] if "raw_path" in request.scope
                      else url_path(request).encode()).decode(),
            raw_query=request.scope.get("query_string", b"").decode(),
            headers=request.headers,
        )
        # Headers first: nothing of the body is read for a request that cannot be
        # authentic, nor for an operation that does not exist.
        named = json_protocol.service_for(target) if target is not None else None
        path = url_path(request)
        rest = rest_service(path)
        signing_name = SIGNING_NAMES.get(rest, rest) if target is None \
            else named.signing_name if named else None
        authorization = self.verifier.authenticate(head, signing_name)
        route = self._route(request, target, rest, path)
        handler = self._handler(route.service, route.operation.name)
        invocation_type = request.headers.get("x-amz-invocation-type")
        cap = body_cap(self.settings.limits, route.service, route.operation.name, invocation_type)
        with self._unverified_slot():
            payload = await body.read(
                cap, lambda: too_large(cap, route.service, route.operation.name, invocation_type)
            )
            principal = self.verifier.verify_signature(authorization, head, payload.sha256)
        request.state.principal = principal
        if route.json_service is None:
            return await self._rest_json(route, handler, request, request_id, payload.data, principal)
        params = json_protocol.parse_request(route.operation, payload.data)
        if route.json_service.query_errors:
            json_protocol.validate_as_query(route.operation, params)
        else:
            protocol.validate(route.operation, params, enums=route.json_service.check_enums)
        output = await handler(Call(self.platform, params, request, request_id, principal))
        return Response(
            json_protocol.serialize_response(route.operation, output),
            headers={"x-amzn-RequestId": request_id},
            media_type=route.json_service.content_type,
        )

    async def _query(self, request: Request, request_id: str, body: BodyReader) -> Response:
        """A query-protocol request (CloudWatch's older clients): the operation is
        named in the form body, so the signature's service scope is checked first."""
        service = query_protocol.SERVICE
        head = RequestHead(
            method=request.method,
            raw_path=(request.scope["raw_path"] if "raw_path" in request.scope
                      else url_path(request).encode()).decode(),
            raw_query=request.scope.get("query_string", b"").decode(),
            headers=request.headers,
        )
        authorization = self.verifier.authenticate(head, service.signing_name)
        cap = body_cap(self.settings.limits, service.name, "", None)
        with self._unverified_slot():
            payload = await body.read(cap, lambda: too_large(cap, service.name, "", None))
            principal = self.verifier.verify_signature(authorization, head, payload.sha256)
        request.state.principal = principal
        form = query_protocol.parse_form(payload.data)
        operation = query_protocol.resolve(form)
        handler = self._handler(service.name, operation.name)
        params = query_protocol.parse_request(operation, form)
        json_protocol.validate_as_query(operation, params)
        output = await handler(Call(self.platform, params, request, request_id, principal))
        return query_protocol.serialize_response(operation, output, request_id)

    def _route(self, request: Request, target: str | None, rest: str, path: str) -> _Route:
        """The operation a request names: by X-Amz-Target, else by method and path."""
        if target is not None:
            service, operation = json_protocol.resolve(target)
            return _Route(service.name, operation, json_service=service)
        query = parse_qsl(url_query(request), keep_blank_values=True)
        found = self.routers[rest].match(request.method, path, dict(query))
        if found is None:
            name = "Lambda" if rest == "lambda" else rest
            raise UnknownOperationException(
                f"No {name} operation matches {request.method} {path}"
            )
        operation, path_params = found
        return _Route(rest, operation, path_params=path_params, query=query)

    async def _rest_json(self, route: _Route, handler: Handler, request: Request,
                         request_id: str, body: bytes, principal: Principal) -> Response:
        params = protocol.parse_request(
            route.operation, route.path_params, route.query, request.headers, body
        )
        protocol.validate(route.operation, params)
        call = Call(self.platform, params, request, request_id, principal)
        output = await handler(call)
        serialized = protocol.serialize_response(route.operation, output)
        serialized.headers.update(call.headers)
        serialized.headers["x-amzn-RequestId"] = request_id
        if serialized.stream is not None:
            return StreamingResponse(serialized.stream, serialized.status_code, serialized.headers)
        return Response(serialized.body, serialized.status_code, serialized.headers)

    @staticmethod
    def _handler(service: str, operation: str) -> Handler:
        handler = HANDLERS.get((service, operation))
        if handler is None:
            # A 4xx naming the operation: a tool sees at once what Lamina lacks.
            raise UnsupportedOperationException(
                f"The {operation} operation is not supported by this Lamina server. "
                f"Supported operations: `lamina serve --help`."
            )
        return handler


class InvocationRoute:
    """Invoke's requests go straight to the dispatcher.

    Invoke is on the path of every warm invocation; Starlette's router, its
    exception middleware and the endpoint wrapper add nothing to it (the
    dispatcher answers every error itself, and the catch-all route would send the
    request to the same `Dispatcher.handle`), but cost a tenth of the server's CPU
    per call. Function URLs are matched before this, as before.
    """

    PREFIX = "/2015-03-31/functions/"
    SUFFIX = "/invocations"

    def __init__(self, app: ASGIApp, dispatcher: Dispatcher) -> None:
        self.app = app
        self.dispatcher = dispatcher

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith(self.PREFIX) and path.endswith(self.SUFFIX):
                request = Request(scope, receive, send)
                response = await self.dispatcher.handle(request)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def download_code(request: Request) -> Response:
    platform: Platform = request.app.state.platform
    signer: CodeUrlSigner = request.app.state.code_urls
    name = request.path_params["blob"]
    digest = name.removesuffix(".zip")
    query = request.query_params
    if not signer.verify(digest, query.get("Expires", ""), query.get("Signature", "")):
        return error_response(AccessDeniedException("Request has expired or is not signed"), "-")
    path = platform.blobs.path(digest)
    if not path.exists():
        return error_response(ResourceNotFoundException("The specified key does not exist."), "-")
    return FileResponse(path, media_type="application/zip")


async def prometheus_metrics(request: Request) -> Response:
    """`GET /metrics`: every function's metrics in Prometheus' exposition format."""
    platform: Platform = request.app.state.platform
    return Response(prometheus.exposition(platform.metrics), media_type=prometheus.CONTENT_TYPE)


def create_app(platform: Platform, code_urls: CodeUrlSigner | None = None,
               pages: Sequence[Middleware] = ()) -> Starlette:
    """The ASGI app. `pages`: middleware of the layers above the API (the web
    console), tried after function URLs and Invoke, before the Lambda API."""
    dispatcher = Dispatcher(platform)
    code_urls = code_urls or CodeUrlSigner()

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await platform.start()
        try:
            yield
        finally:
            await platform.stop()

    app = Starlette(
        routes=[
            Route(PATH_PREFIX + "{blob}", download_code, methods=["GET"]),
            Route("/metrics", prometheus_metrics, methods=["GET"]),
            Route("/{path:path}", dispatcher.handle, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
        ],
        # Function URLs (by host name or /lambda-url/ prefix) before the Lambda API.
        # Pages (the console: / and /console/...) next, by path prefix as well.
        middleware=[Middleware(FunctionUrlMiddleware,
                               server=FunctionUrlServer(platform, dispatcher.verifier)),
                    Middleware(InvocationRoute, dispatcher=dispatcher), *pages],
        lifespan=lifespan,
    )
    app.state.platform = platform
    app.state.code_urls = code_urls
    return app
