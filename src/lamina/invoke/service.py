"""The one place an invocation is carried out, for every caller (API, queues, schedules).

Resolve the version, check the payload, take a concurrency slot (or throttle),
take an environment from the pool, run, and give both back. The async path
(InvocationType=Event) stores the event durably and answers 202; the workers in
async_events.py run it later through the same synchronous path.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from lamina.control.aliases import Aliases
from lamina.control.arns import Region
from lamina.control.models import FunctionVersion
from lamina.environments.environment import (
    Invocation,
    InvocationOutcome,
)
from lamina.environments.streaming import ResponseStream
from lamina.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    RequestEntityTooLargeException,
    TooManyRequestsException,
)
from lamina.invoke.async_events import EventQueue
from lamina.invoke.concurrency import ConcurrencyCounter, Slot
from lamina.invoke.placement import Placed, Placement
from lamina.invoke.specs import environment_spec
from lamina.limits import Limits
from lamina.observe.metrics import Metrics
from lamina.observe.trace_headers import TraceHeaders

log = logging.getLogger("lamina.invoke")
# Lambda's limit on the decoded X-Amz-Client-Context.
MAX_CLIENT_CONTEXT_BYTES = 3583


@dataclass(frozen=True)
class InvocationRequest:
    function_name: str
    payload: bytes = b""
    qualifier: str | None = None
    invocation_type: str = "RequestResponse"
    log_type: str = "None"
    # As sent in X-Amz-Client-Context: base64 of a JSON document.
    client_context: str | None = None
    # The API request's id: on AWS the invocation (and its retries) carry it.
    request_id: str | None = None
    # The caller's X-Amzn-Trace-Id, if it sent one.
    trace_header: str | None = None


@dataclass(frozen=True)
class InvocationResult:
    status_code: int
    payload: bytes = b""
    function_error: str | None = None
    executed_version: str | None = None
    # Base64 of the last 4 KB of the log, when LogType=Tail.
    log_result: str | None = None
    outcome: InvocationOutcome | None = None


@dataclass
class StreamedInvocation:
    """A synchronous invocation whose response is read as the function writes it.

    Returned by `Invoker.invoke_stream` once the invocation has started (every check
    passed, a concurrency slot and an environment taken): errors that can still be
    answered with an HTTP status (throttling, a missing function, a bad payload) are
    raised by `invoke_stream` itself, and anything later arrives as the stream's end.

    - `status_code` (200) and `executed_version` are known at once.
    - `await wait_open()` returns when the function has begun its response (or the
      invocation ended without one); `content_type` is then the runtime's Content-Type
      for the body (None if it sent none). A Node.js handler that used
      `awslambda.HttpResponseStream.from` has `application/vnd.awslambda.http-integration-response`:
      the body then starts with a JSON prelude (statusCode, headers, cookies) and 8 NUL
      bytes, which a function URL turns into its status and headers.
    - `async for chunk in invocation.chunks()` yields the body's bytes in order, as the
      runtime sends them (one chunk per HTTP chunk of a streaming-mode runtime; a
      buffered response is one chunk), paced at Lambda's streaming bandwidth.
    - After the last chunk, `error_type` and `error_details` say how it ended (None:
      success; else e.g. the handler's error type, Sandbox.Timedout, or
      Function.ResponseSizeTooLarge when the stream was cut at its limit), `error_body`
      holds the error document, and `log_result` the base64 log tail if LogType was Tail.
    - `await aclose()` when the reader goes away early: the function runs on to its end
      (as on Lambda) but what it writes is dropped. Calling it after a full read is a no-op.
    """

    status_code: int
    executed_version: str | None
    _stream: ResponseStream | None = None
    _done: asyncio.Future[InvocationOutcome | None] | None = None
    _tail: bool = False
    error_type: str | None = None
    error_details: str | None = None
    error_body: bytes | None = None
    log_result: str | None = None
    outcome: InvocationOutcome | None = field(default=None, repr=False)

    @property
    def content_type(self) -> str | None:
        return self._stream.content_type if self._stream is not None else None

    async def wait_open(self) -> None:
        if self._stream is not None:
            await self._stream.wait_open()

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._stream is None:
            return
        async for chunk in self._stream:
            yield chunk
        self.error_type = self._stream.error_type
        self.error_body = self._stream.error_body
        if self.error_type is not None:
            self.error_details = _error_details(self.error_body)
        if self._done is not None:
            # The stream ends as the invocation does; its log lines follow at once.
            try:
                self.outcome = await asyncio.shield(self._done)
            except Exception:  # already ended the stream as Sandbox.Failure, and logged
                self.outcome = None
            if self._tail and self.outcome is not None:
                self.log_result = base64.b64encode(self.outcome.log_tail.encode()).decode()

    async def aclose(self) -> None:
        if self._stream is not None and not self._stream.closed:
            self._stream.abandon()


def _error_details(body: bytes | None) -> str | None:
    """What InvokeComplete's ErrorDetails carries: the error document's message."""
    if not body:
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return body.decode("utf-8", "replace")
    if isinstance(document, dict) and isinstance(document.get("errorMessage"), str):
        return str(document["errorMessage"])
    return body.decode("utf-8", "replace")


class Invoker:
    def __init__(self, targets: Aliases, pool: Placement[Any], region: Region,
                 limits: Limits, concurrency: ConcurrencyCounter, metrics: Metrics,
                 events: EventQueue) -> None:
        # Resolves FUNCTION[:QUALIFIER] to a version, applying alias weights.
        self.targets = targets
        # Where environments come from: this host's pool or the cluster (placement.py).
        self.pool = pool
        self.region = region
        self.limits = limits
        self.concurrency = concurrency
        self.metrics = metrics
        self.events = events
        # Each invocation's X-Amzn-Trace-Id (the platform sets the sampling rule).
        self.trace_headers = TraceHeaders()
        # Streamed invocations still running after their reader returned.
        self._streaming: set[asyncio.Task[InvocationOutcome | None]] = set()

    def _check_payload(self, request: InvocationRequest) -> bytes:
        asynchronous = request.invocation_type == "Event"
        limit = self.limits.max_async_payload_bytes if asynchronous else self.limits.max_sync_payload_bytes
        if len(request.payload) > limit:
            raise RequestEntityTooLargeException.for_operation(
                limit, "InvokeAsync" if asynchronous else "InvokeFunction")
        payload = request.payload or b"{}"
        try:
            json.loads(payload)
        except ValueError as exc:
            raise InvalidRequestContentException(
                f"Could not parse request body into json: Could not parse payload into json: {exc}"
            ) from None
        except RecursionError:
            # Valid JSON nested deeper than a parser goes (AWS's stops at 1,000 levels).
            raise InvalidRequestContentException(
                "Could not parse request body into json: Could not parse payload into json: "
                "Document nesting depth exceeds the maximum allowed"
            ) from None
        return payload

    def _client_context(self, raw: str | None) -> str | None:
        if not raw:
            return None
        try:
            decoded = base64.b64decode(raw, validate=True)
            json.loads(decoded)
        except (binascii.Error, ValueError, RecursionError):
            raise InvalidParameterValueException(
                "Client context must be a valid Base64-encoded JSON object."
            ) from None
        if len(decoded) > MAX_CLIENT_CONTEXT_BYTES:
            raise InvalidParameterValueException(
                f"Client context must be at most {MAX_CLIENT_CONTEXT_BYTES} bytes."
            )
        return decoded.decode()

    def _target(self, request: InvocationRequest) -> tuple[FunctionVersion, str | None, bytes, str | None]:
        """The version to run, the qualifier it was named by, the checked payload and
        the decoded client context; the errors Invoke answers before anything runs."""
        fv = self.targets.resolve_invocation_target(
            request.function_name, request.qualifier
        ).function_version
        self.targets.functions.check_invocable(fv)
        # The qualifier may come inside FunctionName ("name:alias" or a qualified ARN).
        qualifier = self.targets.functions.resolve(request.function_name, request.qualifier).qualifier
        return fv, qualifier, self._check_payload(request), self._client_context(request.client_context)

    async def _environment(self, fv: FunctionVersion,
                           qualifier: str | None) -> tuple[Placed, Slot]:
        """A concurrency slot and an environment for fv, or TooManyRequestsException.
        The slot is taken before anything else, so a throttled call costs nothing."""
        name = fv.function_name
        resource = f"{name}:{qualifier}" if qualifier else None
        slot = self.concurrency.take(name, resource)
        try:
            return await self.pool.acquire(environment_spec(fv)), slot
        except BaseException as error:
            if isinstance(error, TooManyRequestsException):
                # No memory or scaling rate left for a new environment.
                self.metrics.throttled(name, resource)
            self.concurrency.release(name, slot)
            raise

    def _finished(self, env: Placed, name: str, slot: Slot,
                  outcome: InvocationOutcome | None) -> None:
        # Invocations, errors and durations are counted from the environment's
        # InvokeReport (observe/metrics.py), not here.
        self.pool.release(env)
        self.concurrency.release(name, slot)

    def _invocation(self, fv: FunctionVersion, qualifier: str | None, payload: bytes,
                    client_context: str | None, request_id: str | None,
                    trace_header: str | None = None) -> Invocation:
        trace = self.trace_headers.for_invocation(fv.tracing_mode, trace_header)
        return Invocation(
            request_id=request_id or str(uuid.uuid4()),
            payload=payload,
            invoked_function_arn=self.region.function_arn(fv.function_name, qualifier),
            trace_id=str(trace.header),
            client_context=client_context,
            trace_parent=trace.caller_parent,
        )

    async def invoke(self, request: InvocationRequest) -> InvocationResult:
        fv, qualifier, payload, client_context = self._target(request)
        if request.invocation_type == "DryRun":
            return InvocationResult(204, executed_version=fv.version)
        if request.invocation_type == "Event":
            return self._enqueue(request, fv, qualifier, payload, client_context)
        return await self._run(fv, payload, client_context, qualifier,
                               tail=request.log_type == "Tail", request_id=request.request_id,
                               trace_header=request.trace_header)

    def invoke_queued(self, request: InvocationRequest) -> InvocationResult:
        """InvocationType=Event without awaiting: the event is queued durably when this
        returns (or the error Invoke would answer is raised). For callers inside the
        server that fire from synchronous code, such as schedules."""
        fv, qualifier, payload, client_context = self._target(request)
        return self._enqueue(request, fv, qualifier, payload, client_context)

    def _enqueue(self, request: InvocationRequest, fv: FunctionVersion, qualifier: str | None,
                 payload: bytes, client_context: str | None) -> InvocationResult:
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            raise InvalidRequestContentException(
                "Could not parse request body into json: the payload is not UTF-8"
            ) from None
        # Committed before the 202: from here on the event is not lost.
        self.events.enqueue(fv.function_name, qualifier, text, client_context,
                            request.request_id)
        return InvocationResult(202, executed_version=fv.version)

    async def invoke_stream(self, request: InvocationRequest) -> StreamedInvocation:
        """InvokeWithResponseStream (and RESPONSE_STREAM function URLs): the invocation
        started, its response readable as the function writes it; see StreamedInvocation.

        Raises what Invoke raises before the function runs (ResourceNotFound,
        TooManyRequests, RequestEntityTooLarge, InvalidRequestContent, ...). Like Lambda,
        InvocationType DryRun is not a dry run here: Lambda streams the function's
        response for it all the same. Event is refused by the model (RequestResponse|DryRun).
        """
        fv, qualifier, payload, client_context = self._target(request)
        env, slot = await self._environment(fv, qualifier)
        limits = self.limits
        stream = ResponseStream(limits.max_streamed_response_bytes,
                                limits.streamed_response_burst_bytes,
                                limits.streamed_response_bytes_per_s)
        invocation = self._invocation(fv, qualifier, payload, client_context, request.request_id,
                                      request.trace_header)

        async def run() -> InvocationOutcome | None:
            outcome = None
            try:
                outcome = await env.invoke(invocation, stream)
            except BaseException:
                stream.close("Sandbox.Failure", None)
                raise
            finally:
                self._finished(env, fv.function_name, slot, outcome)
            return outcome

        task = asyncio.get_running_loop().create_task(run())
        self._streaming.add(task)
        task.add_done_callback(self._streaming.discard)
        return StreamedInvocation(status_code=200, executed_version=fv.version, _stream=stream,
                                  _done=task, _tail=request.log_type == "Tail")

    async def invoke_event(self, function_name: str, qualifier: str | None, payload: bytes,
                           client_context: str | None, request_id: str) -> InvocationResult:
        """One attempt at a queued asynchronous event, synchronously; the version is
        resolved again for each attempt (an alias may have moved). Raises
        TooManyRequestsException when the function is over its concurrency."""
        fv = self.targets.resolve_invocation_target(function_name, qualifier).function_version
        self.targets.functions.check_invocable(fv)
        return await self._run(fv, payload, client_context, qualifier, tail=False,
                               request_id=request_id)

    async def _run(self, fv: FunctionVersion, payload: bytes, client_context: str | None,
                   qualifier: str | None, tail: bool, request_id: str | None = None,
                   trace_header: str | None = None) -> InvocationResult:
        invocation = self._invocation(fv, qualifier, payload, client_context, request_id,
                                      trace_header)
        env, slot = await self._environment(fv, qualifier)
        outcome = None
        try:
            outcome = await env.invoke(invocation)
        finally:
            self._finished(env, fv.function_name, slot, outcome)
        log_result = base64.b64encode(outcome.log_tail.encode()).decode() if tail else None
        return InvocationResult(
            status_code=200,
            payload=outcome.payload,
            function_error=outcome.function_error,
            executed_version=fv.version,
            log_result=log_result,
            outcome=outcome,
        )
