"""Function states as on AWS: Pending then Active, InProgress then Successful, with
boto3's own waiters (the ones Terraform, SAM and CDK rely on) passing against Lamina."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import aws_error, error_message, function_args, make_zip

# Long enough to observe the transitional states between two calls.
SETTLE_DELAY_S = "1.0"
FAST = {"Delay": 0.2, "MaxAttempts": 50}


@pytest.fixture(scope="module")
def slow(start_server: Any) -> Any:
    """A server whose functions take a second to settle, as AWS's take seconds."""
    return start_server({"LAMINA_FUNCTION_SETTLE_DELAY_S": SETTLE_DELAY_S}, name="states").client()


def test_new_function_is_pending_then_active_and_the_waiters_pass(slow: Any) -> None:
    created = slow.create_function(**function_args("states-new"))
    assert (created["State"], created["StateReason"], created["StateReasonCode"]) == (
        "Pending", "The function is being created.", "Creating")
    assert "LastUpdateStatus" not in created
    slow.get_waiter("function_exists").wait(FunctionName="states-new", WaiterConfig=FAST)
    assert slow.get_function_configuration(FunctionName="states-new")["State"] == "Pending"
    slow.get_waiter("function_active_v2").wait(FunctionName="states-new", WaiterConfig=FAST)
    active = slow.get_function_configuration(FunctionName="states-new")
    assert (active["State"], active["LastUpdateStatus"]) == ("Active", "Successful")
    assert "StateReason" not in active
    # Settling gives a new RevisionId, as on AWS.
    assert active["RevisionId"] != created["RevisionId"]


def test_pending_function_refuses_invocation_as_aws_does(slow: Any) -> None:
    slow.create_function(**function_args("states-invoke"))
    with aws_error(slow, "ResourceConflictException", 409) as info:
        slow.invoke(FunctionName="states-invoke", Payload=b"{}")
    assert error_message(info) == (
        "The operation cannot be performed at this time. The function is currently in the "
        "following state: Pending")
    slow.get_waiter("function_active_v2").wait(FunctionName="states-invoke", WaiterConfig=FAST)
    assert slow.invoke(FunctionName="states-invoke", Payload=b"{}")["StatusCode"] == 200


def test_update_is_in_progress_then_successful_and_refuses_a_second_update(slow: Any) -> None:
    slow.create_function(**function_args("states-update"))
    slow.get_waiter("function_active_v2").wait(FunctionName="states-update", WaiterConfig=FAST)
    updated = slow.update_function_code(
        FunctionName="states-update", ZipFile=make_zip({"app.py": "def handler(e, c):\n    return 2\n"}))
    assert (updated["State"], updated["LastUpdateStatus"], updated["LastUpdateStatusReasonCode"]) == (
        "Active", "InProgress", "Creating")
    with aws_error(slow, "ResourceConflictException", 409) as info:
        slow.update_function_configuration(FunctionName="states-update", Timeout=10)
    assert "An update is in progress for resource: " in error_message(info)
    slow.get_waiter("function_updated_v2").wait(FunctionName="states-update", WaiterConfig=FAST)
    settled = slow.get_function_configuration(FunctionName="states-update")
    assert settled["LastUpdateStatus"] == "Successful"
    assert "LastUpdateStatusReason" not in settled


def test_version_published_on_create_becomes_active_with_its_waiter(slow: Any) -> None:
    created = slow.create_function(**function_args("states-publish", Publish=True))
    # The unqualified ARN, with the new version's number, as AWS answers.
    assert (created["FunctionArn"].rsplit(":", 1)[1], created["Version"]) == ("states-publish", "1")
    slow.get_waiter("published_version_active").wait(
        FunctionName="states-publish", Qualifier="1", WaiterConfig=FAST)
    version = slow.get_function_configuration(FunctionName="states-publish", Qualifier="1")
    assert (version["State"], version["FunctionArn"].rsplit(":", 1)[1]) == ("Active", "1")
