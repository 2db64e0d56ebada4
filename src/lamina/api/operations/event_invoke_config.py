"""Put/Update/Get/List/DeleteFunctionEventInvokeConfig."""

from __future__ import annotations

from typing import Any

from lamina.api.operations import Call, operation


def _settings(call: Call) -> tuple[Any, ...]:
    p = call.params
    return (p["FunctionName"], p.get("Qualifier"), p.get("MaximumRetryAttempts"),
            p.get("MaximumEventAgeInSeconds"), p.get("DestinationConfig"))


@operation("PutFunctionEventInvokeConfig")
async def put_config(call: Call) -> dict[str, Any]:
    config = call.platform.event_invoke_configs.put(*_settings(call))
    return config.to_api(call.platform.region)


@operation("UpdateFunctionEventInvokeConfig")
async def update_config(call: Call) -> dict[str, Any]:
    config = call.platform.event_invoke_configs.update(*_settings(call))
    return config.to_api(call.platform.region)


@operation("GetFunctionEventInvokeConfig")
async def get_config(call: Call) -> dict[str, Any]:
    p = call.params
    config = call.platform.event_invoke_configs.get(p["FunctionName"], p.get("Qualifier"))
    return config.to_api(call.platform.region)


@operation("DeleteFunctionEventInvokeConfig")
async def delete_config(call: Call) -> dict[str, Any]:
    p = call.params
    call.platform.event_invoke_configs.delete(p["FunctionName"], p.get("Qualifier"))
    return {}


@operation("ListFunctionEventInvokeConfigs")
async def list_configs(call: Call) -> dict[str, Any]:
    p = call.params
    listing = call.platform.event_invoke_configs.list(p["FunctionName"], p.get("Marker"),
                                                      p.get("MaxItems"))
    region = call.platform.region
    return {
        "FunctionEventInvokeConfigs": [config.to_api(region) for config in listing.items],
        "NextMarker": listing.next_marker,
    }
