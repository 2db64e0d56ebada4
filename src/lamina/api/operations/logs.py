"""CloudWatch Logs, the part Lambda users read: groups, streams and events.

Served on the same endpoint as the Lambda API (JSON protocol, X-Amz-Target
`Logs_20140328.*`), so `aws logs tail /aws/lambda/NAME --follow`, boto3's `logs`
client and `lamina logs` all read the START/END/REPORT lines and function output.
"""

from __future__ import annotations

import re
from typing import Any

from lamina.api.operations import Call, operation
from lamina.errors import (
    InvalidParameterException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
)
from lamina.observe.logs import LogEvent, LogStore

DEFAULT_LIMIT = 10_000
# The logs model's LogGroupName (at most 512 characters).
LOG_GROUP_NAME_PATTERN = r"[\.\-_/#A-Za-z0-9]+"
MAX_LOG_GROUP_NAME = 512


def _store(call: Call) -> LogStore:
    return call.platform.logs


def _group(call: Call) -> str:
    name = call.params.get("logGroupName") or call.params.get("logGroupIdentifier") or ""
    # An identifier may be the group's ARN: arn:aws:logs:REGION:ACCOUNT:log-group:NAME[:*]
    if name.startswith("arn:"):
        name = name.split(":log-group:", 1)[-1].removesuffix(":*")
    if len(name) > MAX_LOG_GROUP_NAME or not re.fullmatch(LOG_GROUP_NAME_PATTERN, name):
        raise InvalidParameterException(
            f"1 validation error detected: Value '{name}' at 'logGroupName' failed to satisfy "
            f"constraint: Member must satisfy regular expression pattern: {LOG_GROUP_NAME_PATTERN}"
        )
    # "." and ".." fit the pattern, but no group has them as its name: they would
    # name the log store's own directory and the one above it.
    if name in (".", "..") or not _store(call).has_group(name):
        raise ResourceNotFoundException("The specified log group does not exist.")
    return name


def _page(items: list[Any], token: str | None, limit: int | None) -> tuple[list[Any], str | None]:
    start = int(token) if token and token.isdigit() else 0
    size = limit or DEFAULT_LIMIT
    page = items[start:start + size]
    return page, str(start + size) if start + size < len(items) else None


def _arn(call: Call, group: str) -> str:
    region = call.platform.region
    return f"arn:aws:logs:{region.region}:{region.account_id}:log-group:{group}"


@operation("DescribeLogGroups", service="logs")
async def describe_log_groups(call: Call) -> dict[str, Any]:
    groups = _store(call).group_infos(call.params.get("logGroupNamePrefix") or "")
    page, token = _page(groups, call.params.get("nextToken"), call.params.get("limit"))
    return {
        "logGroups": [
            {"logGroupName": g.name, "creationTime": g.created_ms, "storedBytes": g.stored_bytes,
             "arn": _arn(call, g.name) + ":*", "logGroupArn": _arn(call, g.name),
             "logGroupClass": "STANDARD",
             **({"retentionInDays": g.retention_days} if g.retention_days else {})}
            for g in page
        ],
        "nextToken": token,
    }


@operation("DescribeLogStreams", service="logs")
async def describe_log_streams(call: Call) -> dict[str, Any]:
    group = _group(call)
    streams = _store(call).stream_infos(group, call.params.get("logStreamNamePrefix") or "")
    if call.params.get("orderBy") != "LastEventTime":
        streams.sort(key=lambda s: s.name)
    if call.params.get("descending"):
        streams.reverse()
    page, token = _page(streams, call.params.get("nextToken"), call.params.get("limit"))
    return {
        "logStreams": [
            {"logStreamName": s.name, "creationTime": s.created_ms,
             "firstEventTimestamp": s.first_event_ms, "lastEventTimestamp": s.last_event_ms,
             "lastIngestionTime": s.last_event_ms, "storedBytes": s.stored_bytes,
             "arn": f"{_arn(call, group)}:log-stream:{s.name}"}
            for s in page
        ],
        "nextToken": token,
    }


def _event(e: LogEvent) -> dict[str, Any]:
    return {"timestamp": e.timestamp_ms, "message": e.message, "ingestionTime": e.timestamp_ms}


@operation("GetLogEvents", service="logs")
async def get_log_events(call: Call) -> dict[str, Any]:
    p = call.params
    group = _group(call)
    events = list(_store(call).events(group, [p["logStreamName"]], p.get("startTime") or 0,
                                      p.get("endTime")))
    limit = p.get("limit") or DEFAULT_LIMIT
    token = p.get("nextToken") or ""
    # Tokens are "f/<index>" (forward) and "b/<index>" (backward), as opaque to callers
    # as AWS's; without one, AWS returns the newest events unless startFromHead.
    if token[:2] in ("f/", "b/") and token[2:].isdigit():
        position = int(token[2:])
        start = position if token[0] == "f" else max(0, position - limit)
    else:
        start = 0 if p.get("startFromHead") else max(0, len(events) - limit)
    page = events[start:start + limit]
    return {
        "events": [_event(e) for e in page],
        "nextForwardToken": f"f/{start + len(page)}",
        "nextBackwardToken": f"b/{start}",
    }


@operation("FilterLogEvents", service="logs")
async def filter_log_events(call: Call) -> dict[str, Any]:
    p = call.params
    group = _group(call)
    store = _store(call)
    names = p.get("logStreamNames")
    if names is None and p.get("logStreamNamePrefix"):
        names = [s for s in store.streams(group) if s.startswith(p["logStreamNamePrefix"])]
    events = list(store.events(group, names, p.get("startTime") or 0, p.get("endTime"),
                               p.get("filterPattern")))
    page, token = _page(events, p.get("nextToken"), p.get("limit"))
    searched = names if names is not None else store.streams(group)
    return {
        "events": [{**_event(e), "logStreamName": e.stream, "eventId": e.event_id} for e in page],
        "searchedLogStreams": [{"logStreamName": n, "searchedCompletely": token is None} for n in searched],
        "nextToken": token,
    }


# CloudWatch Logs' retention settings, in days (the logs model's Days values).
RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096,
                  1827, 2192, 2557, 2922, 3288, 3653)


@operation("PutRetentionPolicy", service="logs")
async def put_retention_policy(call: Call) -> dict[str, Any]:
    group = _group(call)
    days = call.params.get("retentionInDays")
    if days not in RETENTION_DAYS:
        raise InvalidParameterException(
            f"1 validation error detected: Value '{days}' at 'retentionInDays' failed to satisfy "
            f"constraint: Member must satisfy enum value set: "
            f"[{', '.join(str(d) for d in RETENTION_DAYS)}]")
    _store(call).set_retention(group, days)
    return {}


@operation("DeleteRetentionPolicy", service="logs")
async def delete_retention_policy(call: Call) -> dict[str, Any]:
    _store(call).set_retention(_group(call), None)
    return {}


@operation("CreateLogStream", service="logs")
async def create_log_stream(call: Call) -> dict[str, Any]:
    group = _group(call)
    name = call.params.get("logStreamName") or ""
    store = _store(call)
    if name in store.streams(group):
        raise ResourceAlreadyExistsException("The specified log stream already exists")
    store.open_stream(group, name).close()
    return {}


@operation("PutLogEvents", service="logs")
async def put_log_events(call: Call) -> dict[str, Any]:
    group = _group(call)
    name = call.params.get("logStreamName") or ""
    store = _store(call)
    if name not in store.streams(group):
        raise ResourceNotFoundException("The specified log stream does not exist.")
    stream = store.open_stream(group, name)
    try:
        for event in call.params.get("logEvents") or []:
            stream.write(str(event.get("message", "")), int(event.get("timestamp") or 0))
    finally:
        stream.close()
    return {"nextSequenceToken": "0"}
