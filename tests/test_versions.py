"""PublishVersion, ListVersionsByFunction and qualified reads, through boto3."""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ROLE
from tests.helpers import ECHO, make_zip

ARN = "arn:aws:lambda:us-east-1:000000000000:function:"


def create(lam, **extra) -> str:
    name = f"ver-{uuid.uuid4().hex[:10]}"
    lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE,
                        Handler="app.handler", Code={"ZipFile": ECHO}, **extra)
    return name


def error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    return exc.value.response["Error"]["Code"], exc.value.response["Error"]["Message"]


def test_publish_version_snapshots_latest_as_version_1_with_qualified_arn(lam):
    name = create(lam, Description="first")
    published = lam.publish_version(FunctionName=name, Description="release one")
    assert published["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert published["Version"] == "1"
    assert published["FunctionArn"] == f"{ARN}{name}:1"
    assert published["Description"] == "release one"
    latest = lam.get_function_configuration(FunctionName=name)
    assert published["CodeSha256"] == latest["CodeSha256"]
    assert latest["Description"] == "first"
    assert published["RevisionId"] != latest["RevisionId"]


def test_publishing_unchanged_latest_returns_the_existing_version(lam):
    name = create(lam)
    first = lam.publish_version(FunctionName=name)
    again = lam.publish_version(FunctionName=name)
    assert again["Version"] == first["Version"] == "1"
    assert again["RevisionId"] == first["RevisionId"]


def test_publishing_after_a_code_or_configuration_change_makes_a_new_version(lam):
    name = create(lam)
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": "def handler(e, c):\n    return 2\n"}))
    assert lam.publish_version(FunctionName=name)["Version"] == "2"
    lam.update_function_configuration(FunctionName=name, Timeout=9)
    third = lam.publish_version(FunctionName=name)
    assert third["Version"] == "3" and third["Timeout"] == 9
    assert lam.get_function_configuration(FunctionName=name, Qualifier="1")["Timeout"] == 3


def test_publish_with_stale_code_sha256_is_invalid_and_publishes_nothing(lam):
    name = create(lam)
    with pytest.raises(ClientError) as exc:
        lam.publish_version(FunctionName=name, CodeSha256="A" * 43 + "=")
    code, message = error(exc)
    assert code == "InvalidParameterValueException"
    assert "is different from current CodeSHA256 in $LATEST" in message
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]] == ["$LATEST"]


def test_publish_with_matching_code_sha256_and_revision_id_succeeds(lam):
    name = create(lam)
    latest = lam.get_function_configuration(FunctionName=name)
    published = lam.publish_version(FunctionName=name, CodeSha256=latest["CodeSha256"],
                                    RevisionId=latest["RevisionId"])
    assert published["Version"] == "1"


def test_publish_with_stale_revision_id_is_412(lam):
    name = create(lam)
    with pytest.raises(ClientError) as exc:
        lam.publish_version(FunctionName=name, RevisionId=str(uuid.uuid4()))
    assert error(exc)[0] == "PreconditionFailedException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


def test_publish_of_a_missing_function_is_404(lam):
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.publish_version(FunctionName="no-such-function-here")


def test_create_and_update_code_with_publish_return_the_new_version(lam):
    name = create(lam, Publish=True)
    assert lam.get_function_configuration(FunctionName=name, Qualifier="1")["Version"] == "1"
    updated = lam.update_function_code(FunctionName=name, Publish=True,
                                       ZipFile=make_zip({"app.py": "def handler(e, c):\n    return 3\n"}))
    assert updated["Version"] == "2"
    assert updated["FunctionArn"] == f"{ARN}{name}:2"


def test_get_function_by_version_qualifier_and_by_qualified_arn(lam):
    name = create(lam)
    lam.publish_version(FunctionName=name)
    lam.update_function_configuration(FunctionName=name, MemorySize=256)
    by_qualifier = lam.get_function(FunctionName=name, Qualifier="1")["Configuration"]
    by_arn = lam.get_function(FunctionName=f"{ARN}{name}:1")["Configuration"]
    by_short = lam.get_function_configuration(FunctionName=f"{name}:1")
    for config in (by_qualifier, by_arn, by_short):
        assert config["Version"] == "1"
        assert config["MemorySize"] == 128
        assert config["FunctionArn"] == f"{ARN}{name}:1"
    assert lam.get_function(FunctionName=name)["Configuration"]["MemorySize"] == 256


def test_get_missing_version_is_404_naming_the_qualified_arn(lam):
    name = create(lam)
    with pytest.raises(ClientError) as exc:
        lam.get_function_configuration(FunctionName=name, Qualifier="7")
    assert error(exc) == ("ResourceNotFoundException", f"Function not found: {ARN}{name}:7")


def test_list_versions_puts_latest_first_then_numeric_order_and_paginates(lam):
    name = create(lam)
    for i in range(11):
        lam.update_function_configuration(FunctionName=name, Timeout=i + 1)
        lam.publish_version(FunctionName=name)
    versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]]
    assert versions == ["$LATEST"] + [str(i) for i in range(1, 12)]
    pages = lam.get_paginator("list_versions_by_function").paginate(
        FunctionName=name, PaginationConfig={"PageSize": 5})
    paged = [v["Version"] for page in pages for v in page["Versions"]]
    assert paged == versions
    listed = lam.list_versions_by_function(FunctionName=name, MaxItems=2)
    assert listed["Versions"][0]["FunctionArn"] == f"{ARN}{name}:$LATEST"
    assert listed["NextMarker"] == "1"


def test_delete_version_removes_only_that_version_and_numbers_are_never_reused(lam):
    name = create(lam)
    lam.publish_version(FunctionName=name)
    lam.update_function_configuration(FunctionName=name, Timeout=5)
    lam.publish_version(FunctionName=name)
    lam.delete_function(FunctionName=name, Qualifier="2")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name, Qualifier="2")
    assert lam.get_function(FunctionName=name, Qualifier="1")["Configuration"]["Version"] == "1"
    lam.update_function_configuration(FunctionName=name, Timeout=6)
    assert lam.publish_version(FunctionName=name)["Version"] == "3"


def test_delete_latest_by_qualifier_is_refused(lam):
    name = create(lam)
    with pytest.raises(ClientError) as exc:
        lam.delete_function(FunctionName=name, Qualifier="$LATEST")
    assert error(exc)[0] == "InvalidParameterValueException"


def test_delete_function_removes_its_versions_and_a_new_one_starts_at_1(lam):
    name = create(lam)
    lam.publish_version(FunctionName=name)
    lam.delete_function(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name, Qualifier="1")
    lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE,
                        Handler="app.handler", Code={"ZipFile": ECHO})
    assert lam.publish_version(FunctionName=name)["Version"] == "1"


def test_list_functions_all_includes_published_versions(lam):
    name = create(lam)
    lam.publish_version(FunctionName=name)
    everything = [
        f["FunctionArn"]
        for page in lam.get_paginator("list_functions").paginate(FunctionVersion="ALL")
        for f in page["Functions"]
    ]
    assert f"{ARN}{name}:1" in everything and f"{ARN}{name}:$LATEST" in everything
    latest_only = [
        f["FunctionArn"] for page in lam.get_paginator("list_functions").paginate() for f in page["Functions"]
    ]
    assert f"{ARN}{name}:1" not in latest_only
