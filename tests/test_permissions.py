"""Functions' resource-based policies: AddPermission, RemovePermission, GetPolicy with
AWS's statement shapes and messages (as recorded against AWS), and their enforcement
on Invoke for keys of other accounts."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import Server
from tests.helpers import aws_error, error_message, function_args

OWN_KEY, OWN_SECRET = "AKIDOWNACCOUNT", "own-secret"
OTHER_KEY, OTHER_SECRET, OTHER_ACCOUNT = "AKIDOTHERACCOUNT", "other-secret", "111122223333"
ACCOUNT = "000000000000"
S3_ARN = "arn:aws:s3:::test-bucket"


def arn(name: str, qualifier: str | None = None) -> str:
    base = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}"
    return f"{base}:{qualifier}" if qualifier else base


@pytest.fixture
def fn(lam) -> str:
    name = f"perm-{uuid.uuid4().hex[:8]}"
    lam.create_function(**function_args(name, Runtime="python3.13"))
    return name


def policy(lam, name: str, **kwargs: object) -> dict:
    return json.loads(lam.get_policy(FunctionName=name, **kwargs)["Policy"])


def test_service_principal_with_source_arn_is_written_as_aws_writes_it(lam, fn):
    response = lam.add_permission(FunctionName=fn, StatementId="s3", Action="lambda:InvokeFunction",
                                  Principal="s3.amazonaws.com", SourceArn=S3_ARN)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 201
    statement = {
        "Sid": "s3", "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "lambda:InvokeFunction", "Resource": arn(fn),
        "Condition": {"ArnLike": {"AWS:SourceArn": S3_ARN}},
    }
    assert json.loads(response["Statement"]) == statement
    got = lam.get_policy(FunctionName=fn)
    assert json.loads(got["Policy"]) == {"Version": "2012-10-17", "Id": "default",
                                         "Statement": [statement]}
    assert got["RevisionId"]


def test_principal_forms_and_optional_conditions(lam, fn):
    def add(sid: str, **kwargs: object) -> dict:
        kwargs.setdefault("Action", "lambda:InvokeFunction")
        return json.loads(lam.add_permission(FunctionName=fn, StatementId=sid, **kwargs)["Statement"])

    wildcard = add("wildcard", Principal="*", SourceAccount=ACCOUNT)
    assert wildcard["Principal"] == "*"
    assert wildcard["Condition"] == {"StringEquals": {"AWS:SourceAccount": ACCOUNT}}
    assert add("account", Principal=OTHER_ACCOUNT)["Principal"] == {
        "AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:root"}
    user = f"arn:aws:iam::{OTHER_ACCOUNT}:user/someone"
    assert add("user", Principal=user)["Principal"] == {"AWS": user}
    url = add("urlPermission", Action="lambda:InvokeFunctionUrl", Principal="*", SourceArn=S3_ARN,
              SourceAccount=ACCOUNT, PrincipalOrgID="o-1234567890", FunctionUrlAuthType="NONE")
    assert url["Condition"] == {
        "StringEquals": {"AWS:SourceAccount": ACCOUNT, "lambda:FunctionUrlAuthType": "NONE",
                         "aws:PrincipalOrgID": "o-1234567890"},
        "ArnLike": {"AWS:SourceArn": S3_ARN},
    }
    token = "amzn1.ask.skill.xxxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
    alexa = add("alexaSkill", Principal="*", EventSourceToken=token)
    assert alexa["Condition"] == {"StringEquals": {"lambda:EventSourceToken": token}}
    via_url = add("viaUrl", Principal="*", InvokedViaFunctionUrl=True)
    assert via_url["Condition"] == {"Bool": {"lambda:InvokedViaFunctionUrl": "true"}}
    assert [s["Sid"] for s in policy(lam, fn)["Statement"]] == [
        "wildcard", "account", "user", "urlPermission", "alexaSkill", "viaUrl"]


def test_add_permission_errors_carry_aws_messages(lam, lam_unchecked, fn):
    base = {"FunctionName": fn, "Action": "lambda:InvokeFunction", "Principal": "s3.amazonaws.com"}
    with aws_error(lam_unchecked, "ValidationException", 400) as info:
        lam_unchecked.add_permission(**{**base, "StatementId": "example.com"})
    assert error_message(info) == (
        "1 validation error detected: Value 'example.com' at 'statementId' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: ([a-zA-Z0-9-_]+)")
    with aws_error(lam, "InvalidParameterValueException", 400) as info:
        lam.add_permission(**{**base, "FunctionName": f"{fn}:alias-not-42"}, StatementId="s3",
                           Qualifier="42")
    assert error_message(info) == (
        "The derived qualifier from the function name does not match the specified qualifier.")
    with aws_error(lam, "InvalidParameterValueException", 400) as info:
        lam.add_permission(**{**base, "FunctionName": f"{fn}:$LATEST"}, StatementId="s3",
                           Qualifier="$LATEST")
    assert error_message(info) == "We currently do not support adding policies for $LATEST."
    with aws_error(lam, "InvalidParameterValueException", 400) as info:
        lam.add_permission(**{**base, "Principal": "invalid.nonaws.com"}, StatementId="lambda",
                           SourceAccount=ACCOUNT)
    assert error_message(info) == (
        "The provided principal was invalid. Please check the principal and try again.")
    with aws_error(lam, "ResourceNotFoundException", 404) as info:
        lam.add_permission(**{**base, "FunctionName": "doesnotexist"}, StatementId="s3")
    assert error_message(info) == f"Function not found: {arn('doesnotexist')}"
    with aws_error(lam, "ResourceNotFoundException", 404) as info:
        lam.add_permission(**base, StatementId="s3", Qualifier="alias-doesnotexist")
    assert error_message(info) == f"Cannot find alias arn: {arn(fn, 'alias-doesnotexist')}"
    with aws_error(lam, "ResourceNotFoundException", 404) as info:
        lam.add_permission(**base, StatementId="s3", Qualifier="42")
    assert error_message(info) == f"Function not found: {arn(fn, '42')}"
    with aws_error(lam_unchecked, "ValidationException", 400) as info:
        lam_unchecked.add_permission(**base, StatementId="s3",
                                     Qualifier="invalid-qualifier-with-?-char")
    assert "at 'qualifier' failed to satisfy constraint" in error_message(info)
    with aws_error(lam, "InvalidParameterValueException", 400) as info:
        lam.add_permission(**base, StatementId="s3", FunctionUrlAuthType="NONE")
    assert "FunctionUrlAuthType" in error_message(info)
    lam.add_permission(**base, StatementId="s3")
    with aws_error(lam, "ResourceConflictException", 409) as info:
        lam.add_permission(**base, StatementId="s3")
    assert error_message(info) == (
        "The statement id (s3) provided already exists. Please provide a new statement id, or "
        "remove the existing statement.")


def test_remove_permission_and_get_policy_errors(lam, fn):
    with aws_error(lam, "ResourceNotFoundException", 404) as info:
        lam.remove_permission(FunctionName="doesnotexist", StatementId="s3")
    assert error_message(info) == f"No policy found for: {arn('doesnotexist')}"
    with aws_error(lam, "ResourceNotFoundException", 404) as info:
        lam.remove_permission(FunctionName=fn, StatementId="s3")
    assert error_message(info) == "No policy is associated with the given resource."
    with aws_error(lam, "ResourceNotFoundException", 404) as info:
        lam.remove_permission(FunctionName=fn, StatementId="s3", Qualifier="alias-doesnotexist")
    assert error_message(info) == f"Cannot find alias arn: {arn(fn, 'alias-doesnotexist')}"
    for kwargs in ({"FunctionName": "doesnotexist"}, {"FunctionName": fn},
                   {"FunctionName": fn, "Qualifier": "42"}):
        with aws_error(lam, "ResourceNotFoundException", 404) as info:
            lam.get_policy(**kwargs)
        assert error_message(info) == "The resource you requested does not exist."
    for sid in ("s3", "sqs"):
        lam.add_permission(FunctionName=fn, StatementId=sid, Action="lambda:InvokeFunction",
                           Principal=f"{sid}.amazonaws.com")
    with aws_error(lam, "ResourceNotFoundException", 404) as info:
        lam.remove_permission(FunctionName=fn, StatementId="non-existent")
    assert error_message(info) == "Statement non-existent is not found in resource policy."
    lam.remove_permission(FunctionName=fn, StatementId="sqs")
    assert [s["Sid"] for s in policy(lam, fn)["Statement"]] == ["s3"]
    lam.remove_permission(FunctionName=fn, StatementId="s3")
    with aws_error(lam, "ResourceNotFoundException", 404) as info:
        lam.get_policy(FunctionName=fn)
    assert error_message(info) == "The resource you requested does not exist."


def test_revision_id_must_match_the_latest_policy(lam, fn):
    args = {"FunctionName": fn, "Action": "lambda:InvokeFunction", "Principal": "s3.amazonaws.com"}
    with aws_error(lam, "PreconditionFailedException", 412) as info:
        lam.add_permission(**args, StatementId="s3", RevisionId="wrong")
    assert error_message(info) == (
        "The Revision Id provided does not match the latest Revision Id. Call the GetPolicy API "
        "to retrieve the latest Revision Id")
    lam.add_permission(**args, StatementId="s3")
    revision = lam.get_policy(FunctionName=fn)["RevisionId"]
    lam.add_permission(**args, StatementId="s3_2", RevisionId=revision)
    with aws_error(lam, "PreconditionFailedException", 412):
        lam.remove_permission(FunctionName=fn, StatementId="s3", RevisionId=revision)
    latest = lam.get_policy(FunctionName=fn)["RevisionId"]
    assert latest != revision
    lam.remove_permission(FunctionName=fn, StatementId="s3", RevisionId=latest)


def test_versions_and_aliases_have_policies_of_their_own(lam, fn):
    lam.get_waiter("function_active_v2").wait(FunctionName=fn)
    lam.publish_version(FunctionName=fn)
    lam.create_alias(FunctionName=fn, Name="live", FunctionVersion="1")
    args = {"Action": "lambda:InvokeFunction", "Principal": "s3.amazonaws.com"}
    lam.add_permission(FunctionName=fn, StatementId="v1", Qualifier="1", **args)
    lam.add_permission(FunctionName=f"{fn}:live", StatementId="alias", **args)
    assert [s["Resource"] for s in policy(lam, fn, Qualifier="1")["Statement"]] == [arn(fn, "1")]
    assert [s["Resource"] for s in policy(lam, fn, Qualifier="live")["Statement"]] == [
        arn(fn, "live")]
    with aws_error(lam, "ResourceNotFoundException", 404):
        lam.get_policy(FunctionName=fn)


def test_a_policy_over_20_kb_is_refused(lam, fn):
    source = "arn:aws:s3:::" + "b" * 60
    with aws_error(lam, "PolicyLengthExceededException", 400) as info:
        for index in range(200):
            lam.add_permission(FunctionName=fn, StatementId=f"statement-{index}",
                               Action="lambda:InvokeFunction", Principal="s3.amazonaws.com",
                               SourceArn=source)
    assert "bigger than the limit (20480)" in error_message(info)
    assert 20 < len(policy(lam, fn)["Statement"]) < 200


def test_deleting_a_function_deletes_its_policies(lam, fn):
    lam.add_permission(FunctionName=fn, StatementId="s3", Action="lambda:InvokeFunction",
                       Principal="s3.amazonaws.com")
    lam.delete_function(FunctionName=fn)
    lam.create_function(**function_args(fn, Runtime="python3.13"))
    with aws_error(lam, "ResourceNotFoundException", 404):
        lam.get_policy(FunctionName=fn)


# -- enforcement on Invoke, with keys of two accounts ---------------------------


@pytest.fixture(scope="module")
def accounts(start_server) -> Server:
    return start_server(
        {"LAMINA_ACCESS_KEYS": f"{OWN_KEY}:{OWN_SECRET},{OTHER_KEY}:{OTHER_SECRET}:{OTHER_ACCOUNT}"},
        name="lamina-accounts",
    )


def test_other_accounts_invoke_only_what_the_policy_grants(accounts):
    own = accounts.client(key=OWN_KEY, secret=OWN_SECRET)
    other = accounts.client(key=OTHER_KEY, secret=OTHER_SECRET)
    name = f"cross-{uuid.uuid4().hex[:8]}"
    own.create_function(**function_args(name, Runtime="python3.13"))
    own.get_waiter("function_active_v2").wait(FunctionName=name)
    assert own.invoke(FunctionName=name, Payload=b'{"a": 1}')["StatusCode"] == 200
    with aws_error(other, "AccessDeniedException", 403) as info:
        other.invoke(FunctionName=arn(name), Payload=b"{}")
    assert f"arn:aws:iam::{OTHER_ACCOUNT}:root is not authorized" in error_message(info)
    with aws_error(other, "AccessDeniedException", 403):
        other.invoke_with_response_stream(FunctionName=arn(name), Payload=b"{}")
    own.publish_version(FunctionName=name)
    own.create_alias(FunctionName=name, Name="shared", FunctionVersion="1")
    own.add_permission(FunctionName=name, Qualifier="shared", StatementId="partner",
                       Action="lambda:InvokeFunction", Principal=OTHER_ACCOUNT)
    result = other.invoke(FunctionName=arn(name, "shared"), Payload=b'{"from": "partner"}')
    assert json.loads(result["Payload"].read()) == {"from": "partner"}
    # The alias's grant is not the function's.
    with aws_error(other, "AccessDeniedException", 403):
        other.invoke(FunctionName=arn(name), Payload=b"{}")
    # A grant conditioned on a source the caller does not have is no grant.
    own.add_permission(FunctionName=name, StatementId="conditioned", Action="lambda:InvokeFunction",
                       Principal=OTHER_ACCOUNT, SourceArn=S3_ARN)
    with aws_error(other, "AccessDeniedException", 403):
        other.invoke(FunctionName=arn(name), Payload=b"{}")
    own.add_permission(FunctionName=name, StatementId="plain", Action="lambda:*",
                       Principal=OTHER_ACCOUNT)
    assert other.invoke(FunctionName=arn(name), Payload=b"{}")["StatusCode"] == 200
