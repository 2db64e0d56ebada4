"""Invoke and InvokeWithResponseStream (and the runtime interface emulator's
single-function path)."""

from __future__ import annotations

from typing import Any, AsyncIterator

from lamina.api import eventstream
from lamina.api.operations import Call, operation
from lamina.invoke.service import InvocationRequest, StreamedInvocation

# The runtime interface emulator serves one function as "function"; tools written
# for it POST to /2015-03-31/functions/function/invocations.
EMULATOR_FUNCTION_NAME = "function"


@operation("Invoke")
async def invoke(call: Call) -> dict[str, Any]:
    result = await call.platform.invoker.invoke(_invocation_request(call))
    return {
        "StatusCode": result.status_code,
        "FunctionError": result.function_error,
        "LogResult": result.log_result,
        "ExecutedVersion": result.executed_version,
        "Payload": result.payload,
    }


def _invocation_request(call: Call) -> InvocationRequest:
    """Invoke's and InvokeWithResponseStream's request, once the caller may make it:
    keys of other accounts invoke only what the function's policy grants them."""
    p = call.params
    name = p["FunctionName"]
    if name == EMULATOR_FUNCTION_NAME:
        name = call.platform.functions.sole_function_name() or name
    call.platform.permissions.check_invoke(name, p.get("Qualifier"), call.principal.account_id,
                                           call.principal.role_arn)
    return InvocationRequest(
        function_name=name,
        payload=p.get("Payload") or b"",
        qualifier=p.get("Qualifier"),
        invocation_type=p.get("InvocationType", "RequestResponse"),
        log_type=p.get("LogType", "None"),
        client_context=p.get("ClientContext"),
        request_id=call.request_id,
        trace_header=call.request.headers.get("x-amzn-trace-id"),
    )


@operation("InvokeWithResponseStream")
async def invoke_with_response_stream(call: Call) -> dict[str, Any]:
    invocation = await call.platform.invoker.invoke_stream(_invocation_request(call))
    return {
        "StatusCode": invocation.status_code,
        "ExecutedVersion": invocation.executed_version,
        "ResponseStreamContentType": eventstream.CONTENT_TYPE,
        "EventStream": _events(invocation),
    }


async def _events(invocation: StreamedInvocation) -> AsyncIterator[bytes]:
    """PayloadChunk per chunk the function wrote, then InvokeComplete, as Lambda sends them."""
    try:
        async for chunk in invocation.chunks():
            yield eventstream.event("PayloadChunk", chunk, "application/octet-stream")
        yield eventstream.json_event("InvokeComplete", {
            "ErrorCode": invocation.error_type,
            "ErrorDetails": invocation.error_details,
            "LogResult": invocation.log_result,
        })
    finally:
        # The client may have gone mid-stream: the function runs on, unread.
        await invocation.aclose()
