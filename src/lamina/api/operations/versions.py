"""PublishVersion, ListVersionsByFunction."""

from __future__ import annotations

from typing import Any

from lamina.api.operations import Call, operation


@operation("PublishVersion")
async def publish_version(call: Call) -> dict[str, Any]:
    p = call.params
    fv = call.platform.functions.publish_version(
        p["FunctionName"], p.get("CodeSha256"), p.get("Description"), p.get("RevisionId")
    )
    return call.platform.functions.configuration(fv)


@operation("ListVersionsByFunction")
async def list_versions_by_function(call: Call) -> dict[str, Any]:
    p = call.params
    listing = call.platform.functions.list_versions_by_function(
        p["FunctionName"], p.get("Marker"), p.get("MaxItems")
    )
    registry = call.platform.functions
    return {
        # Listed versions carry qualified ARNs, $LATEST's too, as on AWS.
        "Versions": [registry.configuration(fv, fv.version) for fv in listing.items],
        "NextMarker": listing.next_marker,
    }
