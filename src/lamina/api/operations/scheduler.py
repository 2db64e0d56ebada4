"""EventBridge Scheduler (`scheduler`, REST-JSON): Create/Get/Update/Delete/ListSchedules."""

from __future__ import annotations

from typing import Any

from lamina.api.operations import Call, operation


@operation("CreateSchedule", service="scheduler")
async def create_schedule(call: Call) -> dict[str, Any]:
    return {"ScheduleArn": call.platform.schedules.create(call.params)}


@operation("UpdateSchedule", service="scheduler")
async def update_schedule(call: Call) -> dict[str, Any]:
    return {"ScheduleArn": call.platform.schedules.update(call.params)}


@operation("GetSchedule", service="scheduler")
async def get_schedule(call: Call) -> dict[str, Any]:
    p = call.params
    return call.platform.schedules.get(p.get("GroupName"), p["Name"])


@operation("DeleteSchedule", service="scheduler")
async def delete_schedule(call: Call) -> dict[str, Any]:
    p = call.params
    call.platform.schedules.delete(p.get("GroupName"), p["Name"])
    return {}


@operation("ListSchedules", service="scheduler")
async def list_schedules(call: Call) -> dict[str, Any]:
    p = call.params
    found, token = call.platform.schedules.list_schedules(
        p.get("GroupName"), p.get("NamePrefix"), p.get("State"), p.get("NextToken"),
        p.get("MaxResults"))
    return {"Schedules": found, "NextToken": token}
