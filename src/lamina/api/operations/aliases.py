"""CreateAlias, GetAlias, UpdateAlias, DeleteAlias, ListAliases."""

from __future__ import annotations

from typing import Any

from lamina.api.operations import Call, operation
from lamina.control.aliases import routing_weights


@operation("CreateAlias")
async def create_alias(call: Call) -> dict[str, Any]:
    p = call.params
    alias = call.platform.aliases.create(
        p["FunctionName"], p["Name"], p["FunctionVersion"], p.get("Description", ""),
        routing_weights(p.get("RoutingConfig")),
    )
    return alias.to_api(call.platform.region)


@operation("GetAlias")
async def get_alias(call: Call) -> dict[str, Any]:
    alias = call.platform.aliases.get(call.params["FunctionName"], call.params["Name"])
    return alias.to_api(call.platform.region)


@operation("UpdateAlias")
async def update_alias(call: Call) -> dict[str, Any]:
    p = call.params
    alias = call.platform.aliases.update(
        p["FunctionName"], p["Name"], p.get("FunctionVersion"), p.get("Description"),
        routing_weights(p.get("RoutingConfig")), p.get("RevisionId"),
    )
    return alias.to_api(call.platform.region)


@operation("DeleteAlias")
async def delete_alias(call: Call) -> dict[str, Any]:
    call.platform.aliases.delete(call.params["FunctionName"], call.params["Name"])
    return {}


@operation("ListAliases")
async def list_aliases(call: Call) -> dict[str, Any]:
    p = call.params
    listing = call.platform.aliases.list(
        p["FunctionName"], p.get("FunctionVersion"), p.get("Marker"), p.get("MaxItems")
    )
    region = call.platform.region
    return {
        "Aliases": [alias.to_api(region) for alias in listing.items],
        "NextMarker": listing.next_marker,
    }
