"""The one place an invocation is carried out, for every caller (API, queues, schedules).

Resolve the version, check the payload, take a concurrency slot (or throttle),
take an environment from the pool, run, and give both back. The async path
(InvocationType=Event) stores the event durably and answers 202; the workers in
async_events.py run it later through the same synchronous path.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass

from lamina.control.aliases import Aliases
from lamina.control.arns import Region
from lamina.control.models import FunctionVersion
from lamina.environments.environment import Invocation, InvocationOutcome
from lamina.environments.pool import EnvironmentPool
from lamina.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    RequestEntityTooLargeException,
    TooManyRequestsException,
)
from lamina.invoke.async_events import EventQueue
from lamina.invoke.concurrency import ConcurrencyCounter
from lamina.invoke.specs import environment_spec
from lamina.limits import Limits
from lamina.observe.metrics import Metrics

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


@dataclass(frozen=True)
class InvocationResult:
    status_code: int
    payload: bytes = b""
    function_error: str | None = None
    executed_version: str | None = None
    # Base64 of the last 4 KB of the log, when LogType=Tail.
    log_result: str | None = None
    outcome: InvocationOutcome | None = None


def new_trace_id() -> str:
    epoch = f"{int(time.time()):08x}"
    return f"Root=1-{epoch}-{os.urandom(12).hex()};Parent={os.urandom(8).hex()};Sampled=0"


class Invoker:
    def __init__(self, targets: Aliases, pool: EnvironmentPool, region: Region,
                 limits: Limits, concurrency: ConcurrencyCounter, metrics: Metrics,
                 events: EventQueue) -> None:
        # Resolves FUNCTION[:QUALIFIER] to a version, applying alias weights.
        self.targets = targets
        self.pool = pool
        self.region = region
        self.limits = limits
        self.concurrency = concurrency
        self.metrics = metrics
        self.events = events

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

    async def invoke(self, request: InvocationRequest) -> InvocationResult:
        fv = self.targets.resolve_invocation_target(
            request.function_name, request.qualifier
        ).function_version
        self.targets.functions.check_invocable(fv)
        # The qualifier may come inside FunctionName ("name:alias" or a qualified ARN).
        qualifier = self.targets.functions.resolve(request.function_name, request.qualifier).qualifier
        payload = self._check_payload(request)
        client_context = self._client_context(request.client_context)
        if request.invocation_type == "DryRun":
            return InvocationResult(204, executed_version=fv.version)
        if request.invocation_type == "Event":
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
        return await self._run(fv, payload, client_context, qualifier,
                               tail=request.log_type == "Tail", request_id=request.request_id)

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
                   qualifier: str | None, tail: bool,
                   request_id: str | None = None) -> InvocationResult:
        name = fv.function_name
        # The slot is taken before anything else, so a throttled call costs nothing.
        slot = self.concurrency.take(name)
        try:
            invocation = Invocation(
                request_id=request_id or str(uuid.uuid4()),
                payload=payload,
                invoked_function_arn=self.region.function_arn(name, qualifier),
                trace_id=new_trace_id(),
                client_context=client_context,
            )
            try:
                env = await self.pool.acquire(environment_spec(fv))
            except TooManyRequestsException:
                # No memory or scaling rate left for a new environment.
                self.metrics.function(name).throttles += 1
                raise
            try:
                outcome = await env.invoke(invocation)
            finally:
                self.pool.release(env)
        finally:
            self.concurrency.release(name, slot)
        usage = self.metrics.function(name)
        usage.invocations += 1
        if outcome.function_error is not None:
            usage.errors += 1
        log_result = base64.b64encode(outcome.log_tail.encode()).decode() if tail else None
        return InvocationResult(
            status_code=200,
            payload=outcome.payload,
            function_error=outcome.function_error,
            executed_version=fv.version,
            log_result=log_result,
            outcome=outcome,
        )
