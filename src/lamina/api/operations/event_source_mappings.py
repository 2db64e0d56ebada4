"""Create/Get/Update/Delete/ListEventSourceMappings."""

from __future__ import annotations

import json
from typing import Any

from lamina.api.operations import Call, operation


@operation("CreateEventSourceMapping")
async def create_mapping(call: Call) -> dict[str, Any]:
    platform = call.platform
    return platform.event_source_mappings.create(call.params).to_api(platform.region)


@operation("GetEventSourceMapping")
async def get_mapping(call: Call) -> dict[str, Any]:
    platform = call.platform
    mappings = platform.event_source_mappings
    mapping = mappings.get(call.params["UUID"])
    # Lambda's event source mapping metrics (PolledEventCount, FilteredOutEventCount,
    # InvokedEventCount, FailedInvokeEventCount, the oldest message's age), counted
    # since this server started; a Lamina extension AWS's clients ignore.
    call.headers["X-Lamina-Event-Source-Metrics"] = json.dumps(mappings.stats(mapping.uuid))
    return mapping.to_api(platform.region)


@operation("UpdateEventSourceMapping")
async def update_mapping(call: Call) -> dict[str, Any]:
    platform = call.platform
    params = dict(call.params)
    uuid = params.pop("UUID")
    return platform.event_source_mappings.update(uuid, params).to_api(platform.region)


@operation("DeleteEventSourceMapping")
async def delete_mapping(call: Call) -> dict[str, Any]:
    platform = call.platform
    return platform.event_source_mappings.delete(call.params["UUID"]).to_api(platform.region)


@operation("ListEventSourceMappings")
async def list_mappings(call: Call) -> dict[str, Any]:
    p = call.params
    platform = call.platform
    page, marker = platform.event_source_mappings.list_mappings(
        p.get("FunctionName"), p.get("EventSourceArn"), p.get("Marker"), p.get("MaxItems"))
    return {"EventSourceMappings": [m.to_api(platform.region) for m in page],
            "NextMarker": marker}
