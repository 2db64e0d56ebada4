"""Create/Get/Update/Delete/ListFunctionUrlConfigs."""

from __future__ import annotations

from typing import Any

from lamina.api.operations import Call, operation


@operation("CreateFunctionUrlConfig")
async def create_function_url_config(call: Call) -> dict[str, Any]:
    p = call.params
    urls = call.platform.function_urls
    config = urls.create(p["FunctionName"], p.get("Qualifier"), p["AuthType"], p.get("Cors"),
                         p.get("InvokeMode"))
    return urls.to_api(config, full=False, invoke_mode="InvokeMode" in p)


@operation("GetFunctionUrlConfig")
async def get_function_url_config(call: Call) -> dict[str, Any]:
    urls = call.platform.function_urls
    return urls.to_api(urls.get(call.params["FunctionName"], call.params.get("Qualifier")))


@operation("UpdateFunctionUrlConfig")
async def update_function_url_config(call: Call) -> dict[str, Any]:
    p = call.params
    urls = call.platform.function_urls
    config = urls.update(p["FunctionName"], p.get("Qualifier"), p.get("AuthType"), p.get("Cors"),
                         p.get("InvokeMode"))
    return urls.to_api(config, invoke_mode="InvokeMode" in p)


@operation("DeleteFunctionUrlConfig")
async def delete_function_url_config(call: Call) -> dict[str, Any]:
    call.platform.function_urls.delete(call.params["FunctionName"], call.params.get("Qualifier"))
    return {}


@operation("ListFunctionUrlConfigs")
async def list_function_url_configs(call: Call) -> dict[str, Any]:
    p = call.params
    urls = call.platform.function_urls
    page = urls.list(p["FunctionName"], p.get("Marker"), p.get("MaxItems"))
    return {
        "FunctionUrlConfigs": [urls.to_api(config) for config in page.items],
        "NextMarker": page.next_marker,
    }
