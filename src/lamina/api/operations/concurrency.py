"""Reserved concurrency (Put/Get/DeleteFunctionConcurrency) and provisioned concurrency
configs (Put/Get/Delete/ListProvisionedConcurrencyConfig[s])."""

from __future__ import annotations

from typing import Any

from lamina.api.operations import Call, operation
from lamina.control.concurrency import ProvisionedConfig

# Lamina extension on GetFunctionConcurrency: executions of the function in flight
# now. AWS has no API for this live number; `lamina concurrency NAME` shows it.
IN_USE_HEADER = "X-Lamina-Concurrent-Executions"


@operation("PutFunctionConcurrency")
async def put_function_concurrency(call: Call) -> dict[str, Any]:
    p = call.params
    reserved = call.platform.concurrency.put_reserved(p["FunctionName"], p["ReservedConcurrentExecutions"])
    return {"ReservedConcurrentExecutions": reserved}


@operation("GetFunctionConcurrency")
async def get_function_concurrency(call: Call) -> dict[str, Any]:
    concurrency = call.platform.concurrency
    name = call.platform.functions.resolve(call.params["FunctionName"]).name
    reserved = concurrency.get_reserved(name)
    call.headers[IN_USE_HEADER] = str(call.platform.invoker.concurrency.in_use(name))
    return {} if reserved is None else {"ReservedConcurrentExecutions": reserved}


@operation("DeleteFunctionConcurrency")
async def delete_function_concurrency(call: Call) -> dict[str, Any]:
    call.platform.concurrency.delete_reserved(call.params["FunctionName"])
    return {}


def _provisioned_output(call: Call, config: ProvisionedConfig) -> dict[str, Any]:
    status = call.platform.provisioned.status(config.function_name, config.qualifier)
    output: dict[str, Any] = {
        "RequestedProvisionedConcurrentExecutions": config.requested,
        "AllocatedProvisionedConcurrentExecutions": status.allocated if status else 0,
        "AvailableProvisionedConcurrentExecutions": status.available if status else 0,
        "Status": status.status if status else "FAILED",
        "LastModified": config.last_modified,
    }
    reason = status.reason if status else "The version or alias no longer exists."
    if reason:
        output["StatusReason"] = reason
    return output


@operation("PutProvisionedConcurrencyConfig")
async def put_provisioned_concurrency_config(call: Call) -> dict[str, Any]:
    p = call.params
    config = call.platform.concurrency.put_provisioned(
        p["FunctionName"], p.get("Qualifier"), p["ProvisionedConcurrentExecutions"])
    return _provisioned_output(call, config)


@operation("GetProvisionedConcurrencyConfig")
async def get_provisioned_concurrency_config(call: Call) -> dict[str, Any]:
    p = call.params
    config = call.platform.concurrency.get_provisioned(p["FunctionName"], p.get("Qualifier"))
    return _provisioned_output(call, config)


@operation("DeleteProvisionedConcurrencyConfig")
async def delete_provisioned_concurrency_config(call: Call) -> dict[str, Any]:
    p = call.params
    call.platform.concurrency.delete_provisioned(p["FunctionName"], p.get("Qualifier"))
    return {}


@operation("ListProvisionedConcurrencyConfigs")
async def list_provisioned_concurrency_configs(call: Call) -> dict[str, Any]:
    p = call.params
    listing = call.platform.concurrency.list_provisioned(
        p["FunctionName"], p.get("Marker"), p.get("MaxItems")
    )
    region = call.platform.region
    return {
        "ProvisionedConcurrencyConfigs": [
            {"FunctionArn": region.function_arn(c.function_name, c.qualifier),
             **_provisioned_output(call, c)}
            for c in listing.items
        ],
        "NextMarker": listing.next_marker,
    }
