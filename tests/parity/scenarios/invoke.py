"""Invoke: results, function errors as AWS reports them, and its size limits."""

from __future__ import annotations

from tests.parity.model import (
    ANY,
    Call,
    Matches,
    Prefix,
    Scenario,
    create,
    make_zip,
    not_found,
)

LAMBDA = "test_lambda.snapshot.json: "
ERROR_CODE = make_zip({"handler.py": "def handler(event, context):\n    raise Exception(\"Handler fails\")\n"})
LARGE_RESPONSE = make_zip({"handler.py": "def handler(event, context):\n    return 'x' * (7 * 1024 * 1024)\n"})
SLEEPER = make_zip({"handler.py": "import time\n\ndef handler(event, context):\n    time.sleep(5)\n"})
UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

SCENARIOS = [
    Scenario("invoke_returns_result", LAMBDA + "test_lambda_invoke (StatusCode, ExecutedVersion)", [
        *create(),
        Call("Invoke", {"FunctionName": "<fn>", "Payload": b'{"hello": "world"}'},
             response={"StatusCode": 200, "ExecutedVersion": "$LATEST", "Payload": {"hello": "world"}}),
    ]),
    Scenario("invoke_handler_error", LAMBDA + "test_lambda_handler_error/invocation_error", [
        *create(Code={"ZipFile": ERROR_CODE}),
        Call("Invoke", {"FunctionName": "<fn>", "Payload": b"{}"},
             response={"StatusCode": 200, "ExecutedVersion": "$LATEST", "FunctionError": "Unhandled",
                       "Payload": {"errorMessage": "Handler fails", "errorType": "Exception",
                                   "requestId": ANY, "stackTrace": ANY}}),
    ]),
    Scenario("invoke_times_out", LAMBDA + "test_lambda_invoke_with_timeout/invoke-result", [
        *create(Code={"ZipFile": SLEEPER}, Timeout=1),
        Call("Invoke", {"FunctionName": "<fn>", "Payload": b"{}"},
             response={"StatusCode": 200, "ExecutedVersion": "$LATEST", "FunctionError": "Unhandled",
                       "Payload": {"errorType": "Sandbox.Timedout", "errorMessage": Matches(
                           f"RequestId: {UUID} Error: Task timed out after 1.00 seconds")}}),
    ]),
    Scenario("invoke_response_too_large", LAMBDA + "test_lambda_too_large_response/invoke_result", [
        *create(Code={"ZipFile": LARGE_RESPONSE}, MemorySize=512),
        Call("Invoke", {"FunctionName": "<fn>", "Payload": b"{}"},
             response={"StatusCode": 200, "ExecutedVersion": "$LATEST", "FunctionError": "Unhandled",
                       "Payload": {"errorMessage": "Response payload size exceeded maximum allowed "
                                                   "payload size (6291556 bytes).",
                                   "errorType": "Function.ResponseSizeTooLarge"}}),
    ]),
    Scenario("invoke_request_too_large", "AWS Lambda quotas: 6 MB synchronous payload (InvokeFunction)", [
        *create(),
        Call("Invoke", {"FunctionName": "<fn>", "Payload": b'"' + b"x" * (6 * 1024 * 1024) + b'"'},
             error=("RequestEntityTooLargeException", 413,
                    "Request must be smaller than 6291456 bytes for the InvokeFunction operation")),
    ]),
    Scenario("invoke_payload_not_json", LAMBDA + "test_lambda_invoke_payload_encoding_error/invoke_function_invalid_payload_body", [
        *create(),
        Call("Invoke", {"FunctionName": "<fn>", "Payload": b"n\x87r\x9e\xe9"},
             error=("InvalidRequestContentException", 400,
                    Prefix("Could not parse request body into json: Could not parse payload into json: "))),
    ]),
    Scenario("invoke_missing_function", LAMBDA + "test_invoke_exceptions/invoke_function_doesnotexist", [
        Call("Invoke", {"FunctionName": "<fn>", "Payload": b"{}"}, error=not_found("<fn_arn>:$LATEST")),
    ]),
    Scenario("invoke_missing_alias", LAMBDA + "test_lambda_alias_moving/invocation_exc_not_existent", [
        *create(),
        Call("Invoke", {"FunctionName": "<fn>", "Qualifier": "non-existent-alias", "Payload": b"{}"},
             error=not_found("<fn_arn>:non-existent-alias")),
    ]),
    Scenario("invoke_with_reserved_concurrency_zero", LAMBDA + "test_lambda_concurrency_block/invoke_latest_first_exc", [
        *create(),
        Call("PutFunctionConcurrency", {"FunctionName": "<fn>", "ReservedConcurrentExecutions": 0}),
        Call("Invoke", {"FunctionName": "<fn>", "Payload": b"{}"},
             error=("TooManyRequestsException", 429, "Rate Exceeded.")),
    ]),
    Scenario("invoke_event_accepted", "AWS CLI reference, lambda invoke --invocation-type Event: StatusCode 202", [
        *create(),
        Call("Invoke", {"FunctionName": "<fn>", "InvocationType": "Event", "Payload": b"{}"},
             response={"StatusCode": 202}, status=202),
    ]),
    Scenario("invoke_dry_run", "Lambda API reference, Invoke: DryRun answers 204", [
        *create(),
        Call("Invoke", {"FunctionName": "<fn>", "InvocationType": "DryRun", "Payload": b"{}"},
             response={"StatusCode": 204}, status=204),
    ]),
]

SCENARIOS += [
    Scenario("invoke_version_and_alias_report_the_executed_version", LAMBDA + "test_lambda_alias_moving (ExecutedVersion)", [
        *create(),
        Call("PublishVersion", {"FunctionName": "<fn>"}),
        Call("CreateAlias", {"FunctionName": "<fn>", "Name": "live", "FunctionVersion": "1"}),
        Call("Invoke", {"FunctionName": "<fn>", "Qualifier": "1", "Payload": b"{}"},
             response={"StatusCode": 200, "ExecutedVersion": "1"}),
        Call("Invoke", {"FunctionName": "<fn>:live", "Payload": b"{}"},
             response={"StatusCode": 200, "ExecutedVersion": "1"}),
    ]),
    Scenario("invoke_missing_version", "test_lambda_api.snapshot.json: test_ops_on_nonexisting_version (the same not-found answer, for Invoke)", [
        *create(),
        Call("Invoke", {"FunctionName": "<fn>", "Qualifier": "9", "Payload": b"{}"},
             error=not_found("<fn_arn>:9")),
    ]),
]
