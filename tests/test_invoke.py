"""Invoke: execution environments and the runtime contract, through boto3."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ROLE
from tests.helpers import make_zip

PROBE = '''
import json, os, time, uuid
ENVIRONMENT_ID = uuid.uuid4().hex
COUNT = 0
print("init of", os.environ["AWS_LAMBDA_FUNCTION_NAME"])

def handler(event, context):
    global COUNT
    COUNT += 1
    action = event.get("action")
    if action == "raise":
        raise ValueError("boom: " + str(event.get("detail")))
    if action == "sleep":
        time.sleep(event["seconds"])
    if action == "exit":
        os._exit(3)
    if action == "big":
        return "x" * event["size"]
    if action == "tmp":
        path = "/tmp/" + event["name"]
        with open(path, "w") as f:
            f.write("mine")
        time.sleep(event.get("seconds", 0))
        return {"files": sorted(os.listdir("/tmp"))}
    if action == "print":
        print(event["text"])
        return "printed"
    return {
        "event": event,
        "count": COUNT,
        "environment": ENVIRONMENT_ID,
        "env": {k: v for k, v in os.environ.items()},
        "cwd": os.getcwd(),
        "context": {
            "function_name": context.function_name,
            "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "aws_request_id": context.aws_request_id,
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
            "remaining": context.get_remaining_time_in_millis(),
            "client_context": context.client_context.custom if context.client_context else None,
            "identity": context.identity is not None,
        },
    }
'''


def create(lam, files: dict[str, str | bytes] | None = None, runtime: str = "python3.11",
           handler: str = "app.handler", **config) -> str:
    name = f"fn-{uuid.uuid4().hex[:12]}"
    lam.create_function(
        FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler,
        Code={"ZipFile": make_zip(files or {"app.py": PROBE})}, **config,
    )
    return name


def invoke(lam, name: str, event: object = None, **kwargs):
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}), **kwargs)
    body = response["Payload"].read()
    return response, json.loads(body) if body else None


def tail(response) -> str:
    return base64.b64decode(response["LogResult"]).decode()


def test_invoke_echo_returns_the_handlers_result(lam):
    name = create(lam)
    response, body = invoke(lam, name, {"hello": "world"})
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert response["ExecutedVersion"] == "$LATEST"
    assert body["event"] == {"hello": "world"}


def test_handler_exception_answers_unhandled_with_lambdas_error_shape(lam):
    name = create(lam)
    response, body = invoke(lam, name, {"action": "raise", "detail": 7})
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == "boom: 7"
    assert body["requestId"]
    assert any("app.py" in frame for frame in body["stackTrace"])
    assert not any("bootstrap.py" in frame for frame in body["stackTrace"])


def test_import_error_is_runtime_import_module_error(lam):
    name = create(lam, {"app.py": "import not_a_module_anywhere\n"})
    response, body = invoke(lam, name)
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert "Unable to import module 'app'" in body["errorMessage"]


def test_missing_handler_function_is_runtime_handler_not_found(lam):
    name = create(lam, handler="app.nope")
    response, body = invoke(lam, name)
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.HandlerNotFound"
    assert body["errorMessage"] == "Handler 'nope' missing on module 'app'"


def test_context_carries_every_field_lambda_gives(lam):
    name = create(lam, MemorySize=256, Timeout=7)
    client_context = base64.b64encode(json.dumps({"custom": {"k": "v"}}).encode()).decode()
    response, body = invoke(lam, name, ClientContext=client_context)
    ctx = body["context"]
    assert ctx["function_name"] == name
    assert ctx["function_version"] == "$LATEST"
    assert ctx["invoked_function_arn"] == f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    assert ctx["memory_limit_in_mb"] == "256"
    assert len(ctx["aws_request_id"]) == 36
    assert ctx["log_group_name"] == f"/aws/lambda/{name}"
    assert "[$LATEST]" in ctx["log_stream_name"]
    assert 6000 < ctx["remaining"] <= 7000
    assert ctx["client_context"] == {"k": "v"}


def test_reserved_and_function_environment_variables_are_set(lam):
    name = create(lam, Environment={"Variables": {"GREETING": "hi", "TZ": "Europe/Paris"}})
    _, body = invoke(lam, name)
    env = body["env"]
    assert env["GREETING"] == "hi"
    assert env["TZ"] == "Europe/Paris"  # unreserved: the function may override it
    assert env["_HANDLER"] == "app.handler"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.11"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == f"/aws/lambda/{name}"
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"] == body["context"]["log_stream_name"]
    assert ":" in env["AWS_LAMBDA_RUNTIME_API"]
    assert env["_X_AMZN_TRACE_ID"].startswith("Root=1-")
    for key in ("LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR", "LANG", "PATH", "LD_LIBRARY_PATH",
                "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        assert env[key]
    assert body["cwd"] == env["LAMBDA_TASK_ROOT"]


def test_warm_environment_is_reused_and_keeps_module_state(lam):
    name = create(lam)
    first = invoke(lam, name)[1]
    second = invoke(lam, name)[1]
    assert second["environment"] == first["environment"]
    assert second["count"] == first["count"] + 1


def test_init_duration_appears_only_on_the_cold_start(lam):
    name = create(lam)
    cold, _ = invoke(lam, name, LogType="Tail")
    warm, _ = invoke(lam, name, LogType="Tail")
    assert "Init Duration:" in tail(cold)
    assert "Init Duration:" not in tail(warm)


def test_log_tail_has_start_output_end_and_report(lam):
    name = create(lam)
    response, _ = invoke(lam, name, {"action": "print", "text": "a line from the handler"},
                         LogType="Tail")
    lines = tail(response).splitlines()
    request_id = response["ResponseMetadata"]["HTTPHeaders"].get("x-amzn-requestid")
    assert request_id
    start = next(i for i, line in enumerate(lines) if line.startswith("START RequestId: "))
    assert lines[start].endswith("Version: $LATEST")
    assert "a line from the handler" in lines[start + 1:]
    end = next(i for i, line in enumerate(lines) if line.startswith("END RequestId: "))
    report = lines[end + 1]
    assert report.startswith("REPORT RequestId: ")
    for field in ("Duration:", "Billed Duration:", "Memory Size: 128 MB", "Max Memory Used:"):
        assert field in report


def test_concurrent_invocations_get_separate_environments(lam):
    name = create(lam)
    results: list[dict] = []

    def call() -> None:
        results.append(invoke(lam, name, {"action": "sleep", "seconds": 1.0})[1])

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Run one after another, they would have shared one warm environment.
    assert len({r["environment"] for r in results if r}) == 3


def test_timeout_stops_the_invocation_and_the_next_one_is_healthy(lam):
    name = create(lam, Timeout=1)
    started = time.monotonic()
    response, body = invoke(lam, name, {"action": "sleep", "seconds": 5}, LogType="Tail")
    elapsed = time.monotonic() - started
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Sandbox.Timedout"
    assert body["errorMessage"].endswith("Task timed out after 1.00 seconds")
    assert "Task timed out after 1.00 seconds" in tail(response)
    assert elapsed < 3.0
    response, body = invoke(lam, name)
    assert "FunctionError" not in response
    assert body["count"] == 1  # a fresh environment


def test_runtime_exit_is_runtime_exit_error_and_a_fresh_environment_follows(lam):
    name = create(lam)
    before = invoke(lam, name)[1]
    response, body = invoke(lam, name, {"action": "exit"})
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ExitError"
    assert "Runtime exited with error: exit status 3" in body["errorMessage"]
    after = invoke(lam, name)[1]
    assert after["environment"] != before["environment"]
    assert after["count"] == 1


def test_invoke_with_payload_over_6_mb_is_rejected_413(lam):
    name = create(lam)
    with pytest.raises(ClientError) as raised:
        lam.invoke(FunctionName=name, Payload=json.dumps({"x": "y" * (6 * 1024 * 1024)}))
    error = raised.value.response
    assert error["Error"]["Code"] == "RequestEntityTooLargeException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert "6291456 bytes" in error["Error"]["Message"]


def test_response_over_6_mb_is_a_function_error(lam):
    name = create(lam)
    # AWS's response limit is 100 bytes over the request's: 6291556 bytes.
    response, body = invoke(lam, name, {"action": "big", "size": 6 * 1024 * 1024 + 200})
    assert response["FunctionError"] == "Unhandled"
    assert body == {"errorType": "Function.ResponseSizeTooLarge", "errorMessage":
                    "Response payload size exceeded maximum allowed payload size (6291556 bytes)."}
    ok, body = invoke(lam, name, {"action": "big", "size": 5 * 1024 * 1024})
    assert "FunctionError" not in ok and len(body) == 5 * 1024 * 1024


def test_event_invocation_answers_202_and_dry_run_204(lam):
    name = create(lam)
    assert lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")["StatusCode"] == 202
    assert lam.invoke(FunctionName=name, InvocationType="DryRun")["StatusCode"] == 204


def test_invoking_an_unknown_function_is_resource_not_found(lam):
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="no-such-function", Payload=b"{}")


def test_payload_that_is_not_json_is_rejected(lam):
    name = create(lam)
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName=name, Payload=b"{not json")


def test_code_update_retires_the_old_environments(lam):
    name = create(lam)
    first = invoke(lam, name)[1]
    lam.update_function_code(
        FunctionName=name,
        ZipFile=make_zip({"app.py": "def handler(event, context):\n    return 'v2'\n"}),
    )
    assert invoke(lam, name)[1] == "v2"
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"VERSION": "3"}})
    response, _ = invoke(lam, name, LogType="Tail")
    assert "Init Duration:" in tail(response)
    assert first["count"] == 1


def test_tmp_is_writable_and_private_to_each_environment(lam, server):
    if server_backend(server) == "process":
        pytest.skip("the plain-process sandbox shares the host's /tmp")
    name = create(lam)
    results: list[dict] = []

    def call(file: str) -> None:
        results.append(invoke(lam, name, {"action": "tmp", "name": file, "seconds": 0.5})[1])

    threads = [threading.Thread(target=call, args=(f"f{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["files"] for r in results) == [["f0"], ["f1"]]


def server_backend(server) -> str:
    return server.env.get("LAMINA_SANDBOX") or server.sandbox_backend()


def test_runtime_interface_emulator_path_invokes_the_sole_function(server, tmp_path):
    from tests.conftest import Server

    solo = Server(tmp_path / "solo")
    solo.start()
    try:
        lam = solo.client()
        name = create(lam)
        import urllib.request

        request = urllib.request.Request(
            f"{solo.endpoint}/2015-03-31/functions/function/invocations",
            data=json.dumps({"via": "rie"}).encode(), method="POST",
        )
        body = json.loads(urllib.request.urlopen(request, timeout=30).read())
        assert body["event"] == {"via": "rie"}
        assert body["context"]["function_name"] == name
    finally:
        solo.stop()
