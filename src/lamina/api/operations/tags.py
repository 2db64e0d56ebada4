"""TagResource, UntagResource, ListTags."""

from __future__ import annotations

from typing import Any

from lamina.api.operations import Call, operation


@operation("ListTags")
async def list_tags(call: Call) -> dict[str, Any]:
    return {"Tags": call.platform.functions.list_tags(call.params["Resource"])}


@operation("TagResource")
async def tag_resource(call: Call) -> dict[str, Any]:
    call.platform.functions.tag_resource(call.params["Resource"], call.params["Tags"])
    return {}


@operation("UntagResource")
async def untag_resource(call: Call) -> dict[str, Any]:
    call.platform.functions.untag_resource(call.params["Resource"], call.params["TagKeys"])
    return {}
