"""Layers through boto3: publish, read, list, delete, share, and use from functions."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.request
import uuid
from typing import Iterator

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ROLE, Server
from tests.helpers import ECHO, make_zip

LAYER_ARN = "arn:aws:lambda:us-east-1:000000000000:layer:"
LIB = make_zip({"python/lib.py": "VALUE = 1\n"})


def layer_name() -> str:
    return f"layer-{uuid.uuid4().hex[:10]}"


def publish(lam, name: str, content: bytes = LIB, **extra):
    return lam.publish_layer_version(LayerName=name, Content={"ZipFile": content}, **extra)


def error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    return exc.value.response["Error"]["Code"], exc.value.response["Error"]["Message"]


def create_function(lam, **extra) -> str:
    name = f"uses-layers-{uuid.uuid4().hex[:8]}"
    lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE,
                        Handler="app.handler", Code={"ZipFile": extra.pop("code", ECHO)}, **extra)
    return name


def test_publish_layer_version_returns_aws_shape_with_downloadable_content(lam):
    name = layer_name()
    published = publish(lam, name, Description="shared code", CompatibleRuntimes=["python3.11"],
                        CompatibleArchitectures=["x86_64"], LicenseInfo="MIT")
    assert published["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert published["LayerArn"] == f"{LAYER_ARN}{name}"
    assert published["LayerVersionArn"] == f"{LAYER_ARN}{name}:1"
    assert published["Version"] == 1
    assert (published["Description"], published["LicenseInfo"]) == ("shared code", "MIT")
    assert published["CompatibleRuntimes"] == ["python3.11"]
    assert published["CompatibleArchitectures"] == ["x86_64"]
    content = published["Content"]
    assert content["CodeSize"] == len(LIB)
    assert content["CodeSha256"] == base64.b64encode(hashlib.sha256(LIB).digest()).decode()
    with urllib.request.urlopen(content["Location"]) as response:
        assert response.read() == LIB
    assert publish(lam, name)["Version"] == 2


def test_get_layer_version_and_by_arn_agree(lam):
    name = layer_name()
    arn = publish(lam, name, Description="d")["LayerVersionArn"]
    by_number = lam.get_layer_version(LayerName=name, VersionNumber=1)
    by_arn = lam.get_layer_version_by_arn(Arn=arn)
    by_layer_arn = lam.get_layer_version(LayerName=f"{LAYER_ARN}{name}", VersionNumber=1)
    for found in (by_number, by_arn, by_layer_arn):
        assert found["LayerVersionArn"] == arn and found["Description"] == "d"
        assert found["Content"]["CodeSize"] == len(LIB)


def test_get_missing_layer_version_is_404(lam):
    with pytest.raises(ClientError) as exc:
        lam.get_layer_version(LayerName=layer_name(), VersionNumber=1)
    assert error(exc) == ("ResourceNotFoundException", "The resource you requested does not exist.")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_layer_version_by_arn(Arn=f"{LAYER_ARN}{layer_name()}:3")


def test_publish_layer_with_a_bad_zip_is_refused(lam):
    with pytest.raises(ClientError) as exc:
        publish(lam, layer_name(), content=b"not a zip")
    assert error(exc)[0] == "InvalidParameterValueException"


def test_list_layer_versions_newest_first_with_filters_and_pagination(lam):
    name = layer_name()
    publish(lam, name, CompatibleRuntimes=["python3.11"], CompatibleArchitectures=["x86_64"])
    publish(lam, name, CompatibleRuntimes=["nodejs20.x"], CompatibleArchitectures=["arm64"])
    publish(lam, name, CompatibleRuntimes=["python3.11", "python3.12"], CompatibleArchitectures=["arm64"])
    versions = lambda **f: [v["Version"] for v in lam.list_layer_versions(LayerName=name, **f)["LayerVersions"]]  # noqa: E731
    assert versions() == [3, 2, 1]
    assert versions(CompatibleRuntime="python3.11") == [3, 1]
    assert versions(CompatibleArchitecture="arm64") == [3, 2]
    assert versions(CompatibleRuntime="python3.11", CompatibleArchitecture="arm64") == [3]
    first = lam.list_layer_versions(LayerName=name, MaxItems=2)
    assert first["NextMarker"]
    pages = lam.get_paginator("list_layer_versions").paginate(LayerName=name, PaginationConfig={"PageSize": 1})
    assert [v["Version"] for page in pages for v in page["LayerVersions"]] == [3, 2, 1]
    assert lam.list_layer_versions(LayerName=layer_name())["LayerVersions"] == []


def test_list_layers_shows_the_latest_matching_version_per_layer(lam):
    first, second = sorted([layer_name(), layer_name()])
    publish(lam, first, CompatibleRuntimes=["provided.al2023"])
    publish(lam, first, CompatibleRuntimes=["java21"])
    publish(lam, second, CompatibleRuntimes=["provided.al2023"])
    layers = {
        layer["LayerName"]: layer
        for page in lam.get_paginator("list_layers").paginate(PaginationConfig={"PageSize": 1})
        for layer in page["Layers"]
    }
    assert layers[first]["LatestMatchingVersion"]["Version"] == 2
    assert layers[first]["LayerArn"] == f"{LAYER_ARN}{first}"
    matching = {
        layer["LayerName"]: layer["LatestMatchingVersion"]["Version"]
        for layer in lam.list_layers(CompatibleRuntime="provided.al2023")["Layers"]
    }
    assert matching[first] == 1 and matching[second] == 1
    assert first not in {l["LayerName"] for l in lam.list_layers(CompatibleRuntime="ruby3.3")["Layers"]}


def test_delete_layer_version_is_idempotent_and_numbers_are_not_reused(lam):
    name = layer_name()
    publish(lam, name)
    publish(lam, name)
    lam.delete_layer_version(LayerName=name, VersionNumber=2)
    lam.delete_layer_version(LayerName=name, VersionNumber=2)
    assert [v["Version"] for v in lam.list_layer_versions(LayerName=name)["LayerVersions"]] == [1]
    assert publish(lam, name)["Version"] == 3


def test_layer_permissions_build_an_aws_policy_document(lam):
    name = layer_name()
    arn = publish(lam, name)["LayerVersionArn"]
    with pytest.raises(ClientError) as exc:
        lam.get_layer_version_policy(LayerName=name, VersionNumber=1)
    assert error(exc) == ("ResourceNotFoundException", "No policy is associated with the given resource.")
    added = lam.add_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="xaccount",
                                             Action="lambda:GetLayerVersion", Principal="223456789012")
    assert added["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert json.loads(added["Statement"]) == {
        "Sid": "xaccount", "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::223456789012:root"},
        "Action": "lambda:GetLayerVersion", "Resource": arn,
    }
    org = lam.add_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="org",
                                           Action="lambda:GetLayerVersion", Principal="*",
                                           OrganizationId="o-abcdef1234", RevisionId=added["RevisionId"])
    policy = lam.get_layer_version_policy(LayerName=name, VersionNumber=1)
    assert policy["RevisionId"] == org["RevisionId"]
    document = json.loads(policy["Policy"])
    assert document["Version"] == "2012-10-17"
    assert [s["Sid"] for s in document["Statement"]] == ["xaccount", "org"]
    assert document["Statement"][1]["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": "o-abcdef1234"}}

    with pytest.raises(ClientError) as exc:
        lam.add_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="org",
                                         Action="lambda:GetLayerVersion", Principal="*")
    assert error(exc)[0] == "ResourceConflictException"
    with pytest.raises(ClientError) as exc:
        lam.remove_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="org",
                                            RevisionId=added["RevisionId"])
    assert error(exc)[0] == "PreconditionFailedException"
    lam.remove_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="org")
    with pytest.raises(ClientError) as exc:
        lam.remove_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="org")
    assert error(exc) == ("ResourceNotFoundException", "Statement org is not found in resource policy.")
    lam.remove_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="xaccount")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_layer_version_policy(LayerName=name, VersionNumber=1)


def test_permission_on_a_missing_layer_version_is_404(lam):
    with pytest.raises(ClientError) as exc:
        lam.add_layer_version_permission(LayerName="nolayer", VersionNumber=4, StatementId="s",
                                         Action="lambda:GetLayerVersion", Principal="*")
    assert error(exc) == ("ResourceNotFoundException", f"Layer version {LAYER_ARN}nolayer:4 does not exist.")


def test_permission_action_other_than_get_layer_version_is_a_validation_error(lam_unchecked):
    name = layer_name()
    publish(lam_unchecked, name)
    with pytest.raises(ClientError) as exc:
        lam_unchecked.add_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="s",
                                                   Action="lambda:InvokeFunction", Principal="*")
    assert error(exc)[0] == "ValidationException"


# -- functions using layers ----------------------------------------------------------------


def test_function_layers_keep_order_and_report_code_size(lam):
    first = publish(lam, layer_name())["LayerVersionArn"]
    second = publish(lam, layer_name(), content=make_zip({"bin/tool": "#!/bin/sh\n"}))["LayerVersionArn"]
    name = create_function(lam, Layers=[second, first])
    config = lam.get_function_configuration(FunctionName=name)
    assert config["Layers"] == [
        {"Arn": second, "CodeSize": lam.get_layer_version_by_arn(Arn=second)["Content"]["CodeSize"]},
        {"Arn": first, "CodeSize": len(LIB)},
    ]
    updated = lam.update_function_configuration(FunctionName=name, Layers=[first])
    assert [layer["Arn"] for layer in updated["Layers"]] == [first]
    assert "Layers" not in lam.update_function_configuration(FunctionName=name, Layers=[])


def test_function_keeps_a_layer_version_deleted_after_it_was_attached(lam):
    name_of_layer = layer_name()
    arn = publish(lam, name_of_layer)["LayerVersionArn"]
    name = create_function(lam, Layers=[arn])
    lam.delete_layer_version(LayerName=name_of_layer, VersionNumber=1)
    assert lam.get_function_configuration(FunctionName=name)["Layers"] == [{"Arn": arn, "CodeSize": len(LIB)}]


def test_function_with_a_missing_layer_is_rejected_like_aws(lam):
    missing = f"{LAYER_ARN}{layer_name()}:1"
    with pytest.raises(ClientError) as exc:
        create_function(lam, Layers=[missing])
    assert error(exc) == ("InvalidParameterValueException", f"Layer version {missing} does not exist.")
    name = create_function(lam)
    with pytest.raises(ClientError) as exc:
        lam.update_function_configuration(FunctionName=name, Layers=[missing])
    assert error(exc)[0] == "InvalidParameterValueException"


def test_function_with_six_layers_is_rejected(lam):
    arns = [publish(lam, layer_name())["LayerVersionArn"] for _ in range(6)]
    with pytest.raises(ClientError) as exc:
        create_function(lam, Layers=arns)
    assert error(exc) == ("InvalidParameterValueException", "Cannot reference more than 5 layers.")
    assert len(lam.get_function_configuration(FunctionName=create_function(lam, Layers=arns[:5]))["Layers"]) == 5


def test_two_versions_of_one_layer_in_a_function_are_rejected(lam):
    name = layer_name()
    arns = [publish(lam, name)["LayerVersionArn"] for _ in range(2)]
    with pytest.raises(ClientError) as exc:
        create_function(lam, Layers=arns)
    code, message = error(exc)
    assert code == "InvalidParameterValueException" and "same layer" in message


def test_published_version_keeps_its_layers(lam):
    first = publish(lam, layer_name())["LayerVersionArn"]
    name = create_function(lam, Layers=[first], Publish=True)
    lam.update_function_configuration(FunctionName=name, Layers=[])
    assert [l["Arn"] for l in lam.get_function_configuration(FunctionName=name, Qualifier="1")["Layers"]] == [first]


# -- the unzipped quota counts code and layers together ------------------------------------

SMALL_QUOTA = 20_000


@pytest.fixture(scope="module")
def small_quota(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("quota") / "data",
                    env={"LAMINA_MAX_UNZIPPED_CODE_BYTES": str(SMALL_QUOTA)})
    server.start()
    yield server
    server.stop()


def test_code_combined_with_layers_over_the_unzipped_quota_is_rejected(small_quota):
    lam = small_quota.client()
    big = make_zip({"python/blob.bin": b"x" * 12_000})
    arn = publish(lam, "big", content=big)["LayerVersionArn"]
    code = make_zip({"app.py": "def handler(e, c):\n    return 1\n", "data.bin": b"y" * 9_000})
    total = 12_000 + 9_000 + len("def handler(e, c):\n    return 1\n")
    expected = (
        f"Function code combined with layers exceeds the maximum allowed size of {SMALL_QUOTA} "
        f"bytes. The actual size is {total} bytes."
    )
    with pytest.raises(ClientError) as exc:
        create_function(lam, code=code, Layers=[arn])
    assert error(exc) == ("InvalidParameterValueException", expected)

    name = create_function(lam, code=code)
    with pytest.raises(ClientError) as exc:
        lam.update_function_configuration(FunctionName=name, Layers=[arn])
    assert error(exc) == ("InvalidParameterValueException", expected)

    small = create_function(lam, Layers=[arn])
    with pytest.raises(ClientError) as exc:
        lam.update_function_code(FunctionName=small, ZipFile=code)
    assert error(exc) == ("InvalidParameterValueException", expected)
