"""Aliases through boto3, and weighted routing through resolve_invocation_target."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from lamina.config import load_settings
from lamina.platform import Platform
from tests.conftest import ROLE
from tests.helpers import ECHO

ARN = "arn:aws:lambda:us-east-1:000000000000:function:"


def create_with_versions(lam, count: int) -> str:
    """A function with published versions 1..count (each with Timeout = its number)."""
    name = f"alias-{uuid.uuid4().hex[:10]}"
    lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE,
                        Handler="app.handler", Code={"ZipFile": ECHO})
    for number in range(1, count + 1):
        lam.update_function_configuration(FunctionName=name, Timeout=number)
        assert lam.publish_version(FunctionName=name)["Version"] == str(number)
    return name


def error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    return exc.value.response["Error"]["Code"], exc.value.response["Error"]["Message"]


def test_create_and_get_alias_returns_aws_alias_configuration(lam):
    name = create_with_versions(lam, 1)
    created = lam.create_alias(FunctionName=name, Name="prod", FunctionVersion="1", Description="live")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["AliasArn"] == f"{ARN}{name}:prod"
    assert (created["Name"], created["FunctionVersion"], created["Description"]) == ("prod", "1", "live")
    fetched = lam.get_alias(FunctionName=name, Name="prod")
    assert fetched["RevisionId"] == created["RevisionId"]
    assert "RoutingConfig" not in fetched


def test_get_function_by_alias_qualifier_and_alias_arn_reads_the_aliased_version(lam):
    name = create_with_versions(lam, 2)
    lam.create_alias(FunctionName=name, Name="stable", FunctionVersion="1")
    for config in (
        lam.get_function_configuration(FunctionName=name, Qualifier="stable"),
        lam.get_function(FunctionName=f"{ARN}{name}:stable")["Configuration"],
        lam.get_function_configuration(FunctionName=f"{name}:stable"),
    ):
        assert config["Version"] == "1" and config["Timeout"] == 1
        assert config["FunctionArn"] == f"{ARN}{name}:stable"


def test_get_function_with_missing_alias_is_404_naming_the_alias_arn(lam):
    name = create_with_versions(lam, 1)
    with pytest.raises(ClientError) as exc:
        lam.get_function(FunctionName=name, Qualifier="nope")
    assert error(exc) == ("ResourceNotFoundException", f"Function not found: {ARN}{name}:nope")
    with pytest.raises(ClientError) as exc:
        lam.get_alias(FunctionName=name, Name="nope")
    assert error(exc) == ("ResourceNotFoundException", f"Cannot find alias arn: {ARN}{name}:nope")


def test_create_alias_twice_conflicts_and_to_missing_version_is_404(lam):
    name = create_with_versions(lam, 1)
    lam.create_alias(FunctionName=name, Name="prod", FunctionVersion="1")
    with pytest.raises(ClientError) as exc:
        lam.create_alias(FunctionName=name, Name="prod", FunctionVersion="1")
    assert error(exc) == ("ResourceConflictException", f"Alias already exists: {ARN}{name}:prod")
    with pytest.raises(ClientError) as exc:
        lam.create_alias(FunctionName=name, Name="beta", FunctionVersion="9")
    assert error(exc) == ("ResourceNotFoundException", f"Function not found: {ARN}{name}:9")


def test_alias_to_latest_is_allowed_but_not_with_weights(lam):
    name = create_with_versions(lam, 1)
    assert lam.create_alias(FunctionName=name, Name="dev", FunctionVersion="$LATEST")["FunctionVersion"] == "$LATEST"
    with pytest.raises(ClientError) as exc:
        lam.create_alias(FunctionName=name, Name="mixed", FunctionVersion="$LATEST",
                         RoutingConfig={"AdditionalVersionWeights": {"1": 0.5}})
    assert error(exc) == ("InvalidParameterValueException",
                          "$LATEST is not supported for an alias pointing to more than 1 version")


@pytest.mark.parametrize(
    ("weights", "code", "fragment"),
    [
        ({"1": 0.5}, "InvalidParameterValueException", "Function version 1 is already included in routing configuration"),
        ({"2": 0.1, "3": 0.1}, "InvalidParameterValueException", "cannot be greater than 1"),
        ({"2": 1.5}, "ValidationException", "Member must have value less than or equal to 1.0"),
        ({"$LATEST": 0.5}, "ValidationException", "regular expression pattern: [0-9]+"),
        ({"7": 0.5}, "ResourceNotFoundException", "Function not found"),
    ],
)
def test_routing_config_is_checked_like_aws(lam_unchecked, weights, code, fragment):
    lam = lam_unchecked
    name = create_with_versions(lam, 3)
    with pytest.raises(ClientError) as exc:
        lam.create_alias(FunctionName=name, Name="canary", FunctionVersion="1",
                         RoutingConfig={"AdditionalVersionWeights": weights})
    got_code, message = error(exc)
    assert got_code == code and fragment in message


def test_update_alias_moves_it_and_checks_revision_id(lam):
    name = create_with_versions(lam, 2)
    created = lam.create_alias(FunctionName=name, Name="prod", FunctionVersion="1")
    with pytest.raises(ClientError) as exc:
        lam.update_alias(FunctionName=name, Name="prod", FunctionVersion="2", RevisionId=str(uuid.uuid4()))
    assert error(exc)[0] == "PreconditionFailedException"
    updated = lam.update_alias(FunctionName=name, Name="prod", FunctionVersion="2",
                               RevisionId=created["RevisionId"],
                               RoutingConfig={"AdditionalVersionWeights": {"1": 0.25}})
    assert updated["FunctionVersion"] == "2"
    assert updated["RoutingConfig"] == {"AdditionalVersionWeights": {"1": 0.25}}
    assert updated["RevisionId"] != created["RevisionId"]
    assert updated["Description"] == ""
    cleared = lam.update_alias(FunctionName=name, Name="prod", RoutingConfig={"AdditionalVersionWeights": {}})
    assert "RoutingConfig" not in cleared and cleared["FunctionVersion"] == "2"


def test_list_aliases_filters_by_version_and_paginates(lam):
    name = create_with_versions(lam, 2)
    for alias, version in [("a", "1"), ("b", "2"), ("c", "1"), ("d", "1")]:
        lam.create_alias(FunctionName=name, Name=alias, FunctionVersion=version)
    everything = [a["Name"] for a in lam.list_aliases(FunctionName=name)["Aliases"]]
    assert everything == ["a", "b", "c", "d"]
    assert [a["Name"] for a in lam.list_aliases(FunctionName=name, FunctionVersion="1")["Aliases"]] == ["a", "c", "d"]
    first = lam.list_aliases(FunctionName=name, MaxItems=3)
    assert len(first["Aliases"]) == 3 and first["NextMarker"] == "c"
    pages = lam.get_paginator("list_aliases").paginate(FunctionName=name, PaginationConfig={"PageSize": 1})
    assert [a["Name"] for page in pages for a in page["Aliases"]] == everything


def test_delete_alias_then_get_is_404(lam):
    name = create_with_versions(lam, 1)
    lam.create_alias(FunctionName=name, Name="prod", FunctionVersion="1")
    lam.delete_alias(FunctionName=name, Name="prod")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_alias(FunctionName=name, Name="prod")


def test_deleting_a_version_an_alias_points_to_fails_like_aws(lam):
    name = create_with_versions(lam, 3)
    lam.create_alias(FunctionName=name, Name="prod", FunctionVersion="1")
    lam.create_alias(FunctionName=name, Name="canary", FunctionVersion="2",
                     RoutingConfig={"AdditionalVersionWeights": {"3": 0.1}})
    with pytest.raises(ClientError) as exc:
        lam.delete_function(FunctionName=name, Qualifier="1")
    assert error(exc) == ("ResourceConflictException",
                          "Unable to delete version because the following aliases reference it: [prod]")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    # A version reached only through RoutingConfig is referenced too.
    with pytest.raises(ClientError) as exc:
        lam.delete_function(FunctionName=name, Qualifier="3")
    assert error(exc)[1].endswith("[canary]")
    lam.delete_alias(FunctionName=name, Name="prod")
    lam.delete_function(FunctionName=name, Qualifier="1")


def test_delete_function_removes_its_aliases(lam):
    name = create_with_versions(lam, 1)
    lam.create_alias(FunctionName=name, Name="prod", FunctionVersion="1")
    lam.delete_function(FunctionName=name)
    lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE,
                        Handler="app.handler", Code={"ZipFile": ECHO})
    assert lam.list_aliases(FunctionName=name)["Aliases"] == []


# -- resolution for invocations, in-process on a private data dir ----------------------


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    return Platform(load_settings(env={}, data_dir=tmp_path / "data"))


def published_function(platform: Platform, versions: int) -> str:
    registry = platform.functions
    asyncio.run(registry.create_function("fn", ECHO, {"role": ROLE, "runtime": "python3.11", "handler": "app.handler"}, {}))
    for number in range(1, versions + 1):
        registry.update_configuration("fn", {"timeout": number})
        registry.publish_version("fn")
    return "fn"


def test_resolve_invocation_target_handles_latest_versions_aliases_and_arns(platform):
    name = published_function(platform, 2)
    platform.aliases.create(name, "prod", "1")
    resolve = platform.aliases.resolve_invocation_target
    assert resolve(name).function_version.version == "$LATEST"
    assert resolve(name, "$LATEST").alias is None
    assert resolve(name, "2").function_version.timeout == 2
    target = resolve(f"{ARN}{name}:prod")
    assert (target.function_version.version, target.alias) == ("1", "prod")
    for missing in ("9", "nope"):
        with pytest.raises(Exception) as exc:
            resolve(name, missing)
        assert type(exc.value).__name__ == "ResourceNotFoundException"
        assert exc.value.message == f"Function not found: {ARN}{name}:{missing}"


def test_weighted_alias_splits_invocations_by_weight(platform):
    name = published_function(platform, 2)
    platform.aliases.create(name, "canary", "1", weights={"2": 0.3})
    platform.aliases._rng = random.Random(20240601)
    chosen = [platform.aliases.resolve_invocation_target(name, "canary") for _ in range(1000)]
    to_second = sum(t.function_version.version == "2" for t in chosen)
    assert 230 <= to_second <= 370
    assert {t.alias for t in chosen} == {"canary"}
    assert {t.function_version.version for t in chosen} == {"1", "2"}
