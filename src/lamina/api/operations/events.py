"""EventBridge (`events`, JSON protocol): the rule and target operations schedules use."""

from __future__ import annotations

from typing import Any

from lamina.api.operations import Call, operation


@operation("PutRule", service="events")
async def put_rule(call: Call) -> dict[str, Any]:
    return {"RuleArn": call.platform.event_rules.put_rule(call.params)}


@operation("DescribeRule", service="events")
async def describe_rule(call: Call) -> dict[str, Any]:
    p = call.params
    return call.platform.event_rules.describe_rule(p["Name"], p.get("EventBusName"))


@operation("EnableRule", service="events")
async def enable_rule(call: Call) -> dict[str, Any]:
    p = call.params
    call.platform.event_rules.set_state(p["Name"], p.get("EventBusName"), "ENABLED")
    return {}


@operation("DisableRule", service="events")
async def disable_rule(call: Call) -> dict[str, Any]:
    p = call.params
    call.platform.event_rules.set_state(p["Name"], p.get("EventBusName"), "DISABLED")
    return {}


@operation("DeleteRule", service="events")
async def delete_rule(call: Call) -> dict[str, Any]:
    p = call.params
    call.platform.event_rules.delete_rule(p["Name"], p.get("EventBusName"))
    return {}


@operation("ListRules", service="events")
async def list_rules(call: Call) -> dict[str, Any]:
    p = call.params
    rules, token = call.platform.event_rules.list_rules(
        p.get("NamePrefix"), p.get("EventBusName"), p.get("NextToken"), p.get("Limit"))
    return {"Rules": rules, "NextToken": token}


@operation("PutTargets", service="events")
async def put_targets(call: Call) -> dict[str, Any]:
    p = call.params
    failed = call.platform.event_rules.put_targets(p["Rule"], p.get("EventBusName"), p["Targets"])
    return {"FailedEntryCount": len(failed), "FailedEntries": failed}


@operation("RemoveTargets", service="events")
async def remove_targets(call: Call) -> dict[str, Any]:
    p = call.params
    call.platform.event_rules.remove_targets(p["Rule"], p.get("EventBusName"), p["Ids"])
    return {"FailedEntryCount": 0, "FailedEntries": []}


@operation("ListTargetsByRule", service="events")
async def list_targets_by_rule(call: Call) -> dict[str, Any]:
    p = call.params
    return {"Targets": call.platform.event_rules.list_targets(p["Rule"], p.get("EventBusName"))}
