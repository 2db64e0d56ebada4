"""Every Lambda operation the server does not implement answers a 4xx naming it."""

from __future__ import annotations

from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ClientError

from lamina.api.operations import implemented_operations

MODEL = botocore.session.get_session().get_service_model("lambda")
UNIMPLEMENTED = sorted(
    name for name in MODEL.operation_names
    if name not in implemented_operations().get("lambda", [])
)


def minimal_value(shape: Any, name: str) -> Any:
    """A value the model accepts for a required member (patterns aside: boto3's
    validation is off, the server must answer before it looks at them)."""
    kind = shape.type_name
    if kind == "structure":
        return {m: minimal_value(shape.members[m], m) for m in shape.required_members}
    if kind == "list":
        return [minimal_value(shape.member, name)]
    if kind == "map":
        return {"k": minimal_value(shape.value, name)}
    if kind in ("integer", "long"):
        return max(1, int(shape.metadata.get("min", 1)))
    if kind in ("float", "double"):
        return 1.0
    if kind == "boolean":
        return True
    if kind == "blob":
        return b"{}"
    if kind == "timestamp":
        return 0
    if shape.enum:
        return shape.enum[0]
    if "Arn" in name or "Role" in name:
        return "arn:aws:lambda:us-east-1:000000000000:function:unsupported"
    return "unsupported"


def test_the_list_of_unimplemented_operations_is_not_empty() -> None:
    assert "PutRuntimeManagementConfig" in UNIMPLEMENTED


@pytest.mark.parametrize("operation", UNIMPLEMENTED)
def test_unimplemented_operation_answers_a_4xx_naming_it(lam_unchecked: Any, operation: str) -> None:
    shape = MODEL.operation_model(operation).input_shape
    params = minimal_value(shape, operation) if shape is not None else {}
    method = getattr(lam_unchecked, botocore.xform_name(operation))
    with pytest.raises(ClientError) as info:
        method(**params)
    response = info.value.response
    status = response["ResponseMetadata"]["HTTPStatusCode"]
    assert 400 <= status < 500, response
    assert response["Error"]["Code"] == "UnsupportedOperationException", response
    assert operation in response["Error"]["Message"]
