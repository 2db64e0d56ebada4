"""Create/Get/Update/Delete/ListCodeSigningConfigs, Put/Get/DeleteFunctionCodeSigningConfig,
ListFunctionsByCodeSigningConfig."""

from __future__ import annotations

from typing import Any

from lamina.api.operations import Call, operation


@operation("CreateCodeSigningConfig")
async def create_code_signing_config(call: Call) -> dict[str, Any]:
    p = call.params
    config = call.platform.code_signing.create(
        p.get("Description"), p["AllowedPublishers"], p.get("CodeSigningPolicies"), p.get("Tags"))
    return {"CodeSigningConfig": config.to_api()}


@operation("GetCodeSigningConfig")
async def get_code_signing_config(call: Call) -> dict[str, Any]:
    config = call.platform.code_signing.get(call.params["CodeSigningConfigArn"])
    return {"CodeSigningConfig": config.to_api()}


@operation("UpdateCodeSigningConfig")
async def update_code_signing_config(call: Call) -> dict[str, Any]:
    p = call.params
    config = call.platform.code_signing.update(
        p["CodeSigningConfigArn"], p.get("Description"), p.get("AllowedPublishers"),
        p.get("CodeSigningPolicies"))
    return {"CodeSigningConfig": config.to_api()}


@operation("DeleteCodeSigningConfig")
async def delete_code_signing_config(call: Call) -> dict[str, Any]:
    call.platform.code_signing.delete(call.params["CodeSigningConfigArn"])
    return {}


@operation("ListCodeSigningConfigs")
async def list_code_signing_configs(call: Call) -> dict[str, Any]:
    page = call.platform.code_signing.list_configs(call.params.get("Marker"), call.params.get("MaxItems"))
    return {"CodeSigningConfigs": [config.to_api() for config in page.items],
            "NextMarker": page.next_marker}


@operation("ListFunctionsByCodeSigningConfig")
async def list_functions_by_code_signing_config(call: Call) -> dict[str, Any]:
    p = call.params
    page = call.platform.code_signing.list_functions(
        p["CodeSigningConfigArn"], p.get("Marker"), p.get("MaxItems"))
    return {"FunctionArns": page.items, "NextMarker": page.next_marker}


@operation("PutFunctionCodeSigningConfig")
async def put_function_code_signing_config(call: Call) -> dict[str, Any]:
    p = call.params
    name, config = call.platform.code_signing.put_function(p["FunctionName"], p["CodeSigningConfigArn"])
    return {"CodeSigningConfigArn": config.arn, "FunctionName": name}


@operation("GetFunctionCodeSigningConfig")
async def get_function_code_signing_config(call: Call) -> dict[str, Any]:
    name, config = call.platform.code_signing.get_function(call.params["FunctionName"])
    # A function without a config: 200 with an empty body, as AWS answers.
    return {} if config is None else {"CodeSigningConfigArn": config.arn, "FunctionName": name}


@operation("DeleteFunctionCodeSigningConfig")
async def delete_function_code_signing_config(call: Call) -> dict[str, Any]:
    call.platform.code_signing.delete_function(call.params["FunctionName"])
    return {}
