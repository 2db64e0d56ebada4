"""PublishLayerVersion, GetLayerVersion(ByArn), ListLayers, ListLayerVersions,
DeleteLayerVersion, Add/RemoveLayerVersionPermission, GetLayerVersionPolicy."""

from __future__ import annotations

from typing import Any

from lamina.api.operations import Call, operation
from lamina.control.models import LayerVersion
from lamina.errors import InvalidParameterValueException


def layer_output(call: Call, layer: LayerVersion) -> dict[str, Any]:
    signer = call.request.app.state.code_urls
    location = signer.url(str(call.request.base_url), layer.code_sha256_hex)
    return layer.to_api(call.platform.region, location)


@operation("PublishLayerVersion")
async def publish_layer_version(call: Call) -> dict[str, Any]:
    p = call.params
    content = p["Content"]
    if "ZipFile" not in content:
        raise InvalidParameterValueException(
            "Content.S3Bucket/S3Key: this Lamina server has no S3; upload the layer as Content.ZipFile"
        )
    layer = await call.platform.layers.publish(
        p["LayerName"], content["ZipFile"], p.get("Description", ""),
        p.get("CompatibleRuntimes"), p.get("CompatibleArchitectures"), p.get("LicenseInfo"),
    )
    return layer_output(call, layer)


@operation("GetLayerVersion")
async def get_layer_version(call: Call) -> dict[str, Any]:
    layer = call.platform.layers.get(call.params["LayerName"], call.params["VersionNumber"])
    return layer_output(call, layer)


@operation("GetLayerVersionByArn")
async def get_layer_version_by_arn(call: Call) -> dict[str, Any]:
    return layer_output(call, call.platform.layers.get_by_arn(call.params["Arn"]))


@operation("ListLayers")
async def list_layers(call: Call) -> dict[str, Any]:
    p = call.params
    listing = call.platform.layers.list_layers(
        p.get("CompatibleRuntime"), p.get("CompatibleArchitecture"), p.get("Marker"), p.get("MaxItems")
    )
    region = call.platform.region
    return {
        "Layers": [
            {
                "LayerName": layer.layer_name,
                "LayerArn": region.layer_arn(layer.layer_name),
                "LatestMatchingVersion": layer.to_list_item(region),
            }
            for layer in listing.items
        ],
        "NextMarker": listing.next_marker,
    }


@operation("ListLayerVersions")
async def list_layer_versions(call: Call) -> dict[str, Any]:
    p = call.params
    listing = call.platform.layers.list_versions(
        p["LayerName"], p.get("CompatibleRuntime"), p.get("CompatibleArchitecture"),
        p.get("Marker"), p.get("MaxItems"),
    )
    region = call.platform.region
    return {
        "LayerVersions": [layer.to_list_item(region) for layer in listing.items],
        "NextMarker": listing.next_marker,
    }


@operation("DeleteLayerVersion")
async def delete_layer_version(call: Call) -> dict[str, Any]:
    call.platform.layers.delete(call.params["LayerName"], call.params["VersionNumber"])
    return {}


@operation("AddLayerVersionPermission")
async def add_layer_version_permission(call: Call) -> dict[str, Any]:
    p = call.params
    statement, revision = call.platform.layers.add_permission(
        p["LayerName"], p["VersionNumber"], p["StatementId"], p["Action"], p["Principal"],
        p.get("OrganizationId"), p.get("RevisionId"),
    )
    return {"Statement": statement, "RevisionId": revision}


@operation("GetLayerVersionPolicy")
async def get_layer_version_policy(call: Call) -> dict[str, Any]:
    policy, revision = call.platform.layers.get_policy(call.params["LayerName"], call.params["VersionNumber"])
    return {"Policy": policy, "RevisionId": revision}


@operation("RemoveLayerVersionPermission")
async def remove_layer_version_permission(call: Call) -> dict[str, Any]:
    p = call.params
    call.platform.layers.remove_permission(
        p["LayerName"], p["VersionNumber"], p["StatementId"], p.get("RevisionId")
    )
    return {}
