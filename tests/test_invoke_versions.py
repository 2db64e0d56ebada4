"""Invoking versions, aliases (with weights) and functions with layers, end to end."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import ROLE
from tests.helpers import make_zip

ARN = "arn:aws:lambda:us-east-1:000000000000:function:"
REPORTER = '''
import os
def handler(event, context):
    return {"release": RELEASE, "version": context.function_version,
            "arn": context.invoked_function_arn}
RELEASE = %r
'''
# Runs the layers' executables through PATH (which includes /opt/bin, as on Lambda).
USES_LAYER = '''
import subprocess
def handler(event, context):
    run = lambda name: subprocess.check_output([name], text=True).strip()
    return {"tool": run("tool"), "other": run("other")}
'''


def release(number: int) -> bytes:
    return make_zip({"app.py": REPORTER % number})


def invoke(lam, name: str, **kwargs):
    response = lam.invoke(FunctionName=name, Payload=b"{}", **kwargs)
    return response, json.loads(response["Payload"].read())


@pytest.fixture
def two_releases(lam) -> str:
    """A function with version 1 (release 1), version 2 and $LATEST (release 2)."""
    name = f"rel-{uuid.uuid4().hex[:10]}"
    lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE,
                        Handler="app.handler", Code={"ZipFile": release(1)}, Publish=True)
    lam.update_function_code(FunctionName=name, ZipFile=release(2), Publish=True)
    return name


def test_invoke_by_version_and_by_alias_runs_that_version(lam, two_releases):
    name = two_releases
    lam.create_alias(FunctionName=name, Name="stable", FunctionVersion="1")
    response, body = invoke(lam, name, Qualifier="1")
    assert response["ExecutedVersion"] == "1" and body["release"] == 1 and body["version"] == "1"
    response, body = invoke(lam, f"{name}:stable")
    assert response["ExecutedVersion"] == "1" and body["release"] == 1
    assert body["arn"] == f"{ARN}{name}:stable"
    response, body = invoke(lam, name)
    assert response["ExecutedVersion"] == "$LATEST" and body["release"] == 2


def test_invoke_of_a_missing_alias_is_resource_not_found(lam, two_releases):
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=two_releases, Qualifier="nope", Payload=b"{}")


@pytest.mark.slow
def test_weighted_alias_sends_invocations_to_both_versions(lam, two_releases):
    name = two_releases
    lam.create_alias(FunctionName=name, Name="canary", FunctionVersion="1",
                     RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
    executed = {invoke(lam, name, Qualifier="canary")[0]["ExecutedVersion"] for _ in range(40)}
    assert executed == {"1", "2"}


def test_layers_are_merged_in_order_under_opt(lam):
    first = lam.publish_layer_version(
        LayerName=f"lib-{uuid.uuid4().hex[:8]}",
        Content={"ZipFile": make_zip({"bin/tool": "#!/bin/sh\necho first\n",
                                      "bin/other": "#!/bin/sh\necho only-in-first\n"}, mode=0o755)},
    )["LayerVersionArn"]
    second = lam.publish_layer_version(
        LayerName=f"lib-{uuid.uuid4().hex[:8]}",
        Content={"ZipFile": make_zip({"bin/tool": "#!/bin/sh\necho second\n"}, mode=0o755)},
    )["LayerVersionArn"]
    name = f"layered-{uuid.uuid4().hex[:10]}"
    lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": USES_LAYER})}, Layers=[first, second])
    assert invoke(lam, name)[1] == {"tool": "second", "other": "only-in-first"}
    lam.update_function_configuration(FunctionName=name, Layers=[second, first])
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert invoke(lam, name)[1] == {"tool": "first", "other": "only-in-first"}


def test_python_modules_of_a_layer_are_importable(lam):
    layer = lam.publish_layer_version(
        LayerName=f"pylib-{uuid.uuid4().hex[:8]}",
        Content={"ZipFile": make_zip({"python/greeting.py": "TEXT = 'from a layer'\n"})},
        CompatibleRuntimes=["python3.11"],
    )["LayerVersionArn"]
    name = f"imports-{uuid.uuid4().hex[:10]}"
    code = "import greeting\ndef handler(event, context):\n    return greeting.TEXT\n"
    lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": code})}, Layers=[layer])
    assert invoke(lam, name)[1] == "from a layer"
