"""AddPermission, RemovePermission, GetPolicy: a function's resource-based policy."""

from __future__ import annotations

from typing import Any

from lamina.api.operations import Call, operation
from lamina.control.permissions import Permission


@operation("AddPermission")
async def add_permission(call: Call) -> dict[str, Any]:
    p = call.params
    permission = Permission(
        statement_id=p["StatementId"], action=p["Action"], principal=p["Principal"],
        source_arn=p.get("SourceArn"), source_account=p.get("SourceAccount"),
        event_source_token=p.get("EventSourceToken"), principal_org_id=p.get("PrincipalOrgID"),
        function_url_auth_type=p.get("FunctionUrlAuthType"),
        invoked_via_function_url=p.get("InvokedViaFunctionUrl"),
    )
    statement, _revision = call.platform.permissions.add_permission(
        p["FunctionName"], p.get("Qualifier"), permission, p.get("RevisionId")
    )
    return {"Statement": statement}


@operation("RemovePermission")
async def remove_permission(call: Call) -> dict[str, Any]:
    p = call.params
    call.platform.permissions.remove_permission(
        p["FunctionName"], p.get("Qualifier"), p["StatementId"], p.get("RevisionId")
    )
    return {}


@operation("GetPolicy")
async def get_policy(call: Call) -> dict[str, Any]:
    policy, revision = call.platform.permissions.get_policy(
        call.params["FunctionName"], call.params.get("Qualifier")
    )
    return {"Policy": policy, "RevisionId": revision}
