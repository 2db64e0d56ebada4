"""TagResource, UntagResource, ListTags."""

from __future__ import annotations

from typing import Any

from lamina.api.operations import Call, operation
from lamina.platform import Platform


def _tagged(platform: Platform, resource: str) -> Any:
    """Who keeps a resource's tags: code signing configs their own, functions theirs."""
    return platform.code_signing if ":code-signing-config:" in resource else platform.functions


@operation("ListTags")
async def list_tags(call: Call) -> dict[str, Any]:
    resource = call.params["Resource"]
    return {"Tags": _tagged(call.platform, resource).list_tags(resource)}


@operation("TagResource")
async def tag_resource(call: Call) -> dict[str, Any]:
    resource = call.params["Resource"]
    _tagged(call.platform, resource).tag_resource(resource, call.params["Tags"])
    return {}


@operation("UntagResource")
async def untag_resource(call: Call) -> dict[str, Any]:
    resource = call.params["Resource"]
    _tagged(call.platform, resource).untag_resource(resource, call.params["TagKeys"])
    return {}
