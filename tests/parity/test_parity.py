"""Runs every parity scenario against a real `lamina serve` with boto3.

A scenario matches when every call gives AWS's recorded answer: for an error its
code, HTTP status and message; for a success the members the scenario lists. The
session summary counts the matches (see tests/parity/conftest.py).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from botocore import xform_name
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.parity import results
from tests.parity.model import (
    ROLE,
    Absent,
    Call,
    Including,
    Matches,
    Prefix,
    Present,
    Scenario,
    Wait,
    placeholder_pattern,
)
from tests.parity.scenarios import all_scenarios

SCENARIOS = all_scenarios()


def _param(scenario: Scenario) -> Any:
    marks = []
    if scenario.known_difference:
        marks.append(pytest.mark.xfail(reason=scenario.known_difference, strict=True))
    return pytest.param(scenario, id=scenario.name, marks=marks)


class Names:
    """Fresh resource names for one run of a scenario, and placeholder substitution."""

    def __init__(self, region: str, account: str) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.values = {
            "fn": f"parity-fn-{suffix}",
            "layer": f"parity-layer-{suffix}",
            "region": region,
            "account": account,
            "role": ROLE,
        }
        self.values["fn_arn"] = f"arn:aws:lambda:{region}:{account}:function:{self.values['fn']}"
        self.values["layer_arn"] = f"arn:aws:lambda:{region}:{account}:layer:{self.values['layer']}"

    def fill(self, value: Any) -> Any:
        if isinstance(value, str):
            return placeholder_pattern().sub(lambda m: self.values[m.group(1)], value)
        if isinstance(value, dict):
            return {self.fill(k): self.fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.fill(v) for v in value)
        if isinstance(value, Matches):
            return Matches(self.fill(value.pattern))
        if isinstance(value, Prefix):
            return Prefix(self.fill(value.text))
        if isinstance(value, Including):
            return Including(self.fill(value.items))
        return value


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where `actual` differs from what AWS answered; [] when it matches."""
    if isinstance(expected, Present):
        return [] if actual is not None else [f"{path}: missing"]
    if isinstance(expected, Matches):
        ok = isinstance(actual, str) and __import__("re").fullmatch(expected.pattern, actual)
        return [] if ok else [f"{path}: {actual!r} does not match {expected.pattern!r}"]
    if isinstance(expected, Prefix):
        ok = isinstance(actual, str) and actual.startswith(expected.text)
        return [] if ok else [f"{path}: {actual!r} does not start with {expected.text!r}"]
    if isinstance(expected, Including):
        if not isinstance(actual, list):
            return [f"{path}: expected a list, got {actual!r}"]
        return [f"{path}: no item matches {item!r}" for item in expected.items
                if not any(not differences(item, candidate) for candidate in actual)]
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {actual!r}"]
        found: list[str] = []
        for key, value in expected.items():
            if isinstance(value, Absent):
                if key in actual:
                    found.append(f"{path}.{key}: AWS leaves it out, got {actual[key]!r}")
            elif key not in actual:
                found.append(f"{path}.{key}: missing (AWS: {value!r})")
            else:
                found.extend(differences(value, actual[key], f"{path}.{key}"))
        return found
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: expected {expected!r}, got {actual!r}"]
        return [d for i, (e, a) in enumerate(zip(expected, actual))
                for d in differences(e, a, f"{path}[{i}]")]
    return [] if expected == actual else [f"{path}: expected {expected!r}, got {actual!r}"]


def _run_call(client: Any, step: Call, names: Names) -> list[str]:
    params = names.fill(step.params)
    method = getattr(client, _snake(step.operation))
    try:
        response = method(**params)
    except ClientError as error:
        got = error.response
        code = got["Error"]["Code"]
        status = got["ResponseMetadata"]["HTTPStatusCode"]
        message = got["Error"].get("Message")
        if step.error is None:
            return [f"{step.operation}: AWS succeeds, got {code} ({status}): {message}"]
        want_code, want_status, want_message = names.fill(step.error)
        problems = []
        if (code, status) != (want_code, want_status):
            problems.append(f"{step.operation}: AWS answers {want_code} ({want_status}), "
                            f"got {code} ({status})")
        problems += [f"{step.operation} message{d}" for d in
                     differences(want_message, message)]
        return problems
    if step.error is not None:
        return [f"{step.operation}: AWS answers {step.error[0]} ({step.error[1]}), got success"]
    problems = []
    status = response["ResponseMetadata"]["HTTPStatusCode"]
    if step.status is not None and status != step.status:
        problems.append(f"{step.operation}: AWS answers HTTP {step.status}, got {status}")
    if step.response is not None:
        expected = names.fill(step.response)
        if "Payload" in response and hasattr(response["Payload"], "read"):
            raw = response["Payload"].read()
            response["Payload"] = json.loads(raw) if isinstance(expected.get("Payload"), (dict, list)) else raw
        problems += [f"{step.operation}{d}" for d in differences(expected, response)]
    return problems


def _snake(operation: str) -> str:
    return xform_name(operation)


def _cleanup(client: Any, names: Names) -> None:
    try:
        client.delete_function(FunctionName=names.values["fn"])
    except ClientError:
        pass
    for _ in range(3):
        try:
            versions = client.list_layer_versions(LayerName=names.values["layer"])["LayerVersions"]
        except ClientError:
            return
        for version in versions:
            client.delete_layer_version(LayerName=names.values["layer"],
                                        VersionNumber=version["Version"])
        if not versions:
            return


# Lambda takes seconds to make a function Active; a server that takes a moment too
# lets scenarios see (and waiters wait out) Pending and InProgress, as against AWS.
SETTLE_DELAY_S = "0.3"


@pytest.fixture(scope="module")
def parity_client(start_server: Any) -> Any:
    import boto3

    server = start_server({"LAMINA_FUNCTION_SETTLE_DELAY_S": SETTLE_DELAY_S}, name="parity")
    return boto3.client(
        "lambda", endpoint_url=server.endpoint, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
        # The server's validation is under test, not boto3's.
        config=Config(parameter_validation=False, retries={"max_attempts": 1}, read_timeout=120),
    )


@pytest.mark.parametrize("scenario", [_param(s) for s in SCENARIOS])
def test_scenario_matches_aws(scenario: Scenario, parity_client: Any) -> None:
    names = Names("us-east-1", "000000000000")
    problems: list[str] = []
    try:
        for number, step in enumerate(scenario.steps, 1):
            if isinstance(step, Wait):
                waiter = parity_client.get_waiter(step.waiter)
                waiter.wait(**names.fill(step.params), WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
                continue
            found = _run_call(parity_client, step, names)
            if found:
                problems = [f"step {number}: {p}" for p in found]
                break
    finally:
        _cleanup(parity_client, names)
    results.record(scenario.name, not problems)
    assert not problems, "\n".join(problems)
