"""Schedules: EventBridge rules (`events`) and EventBridge Scheduler (`scheduler`),
driven by boto3 against a real server.

The server runs with LAMINA_SCHEDULE_TIME_SCALE=0.02: schedule time runs 50 times
faster than the wall clock, so rate(1 minute) fires every 1.2 s and a cron naming
every minute likewise, with AWS's relative timing. Functions log the event they get
as one `EVENT {...}` line, read back through the CloudWatch Logs API.
"""

from __future__ import annotations

import datetime
import json
import time
import uuid
from typing import Any

import pytest

from lamina.events import expressions
from tests.conftest import Server
from tests.helpers import aws_error, error_message, function_args, make_zip, wait_for

ACCOUNT = "000000000000"
RUNTIME = "python3.13"
HANDLER = make_zip({"app.py": '''
import json

def handler(event, context):
    print("EVENT " + json.dumps(event))
'''})
UTC = datetime.timezone.utc


@pytest.fixture(scope="module")
def schedule_server(start_server) -> Server:
    return start_server({"LAMINA_SCHEDULE_TIME_SCALE": "0.02"}, name="lamina-schedules")


@pytest.fixture(scope="module")
def lam(schedule_server: Server):
    return schedule_server.client()


@pytest.fixture(scope="module")
def events(schedule_server: Server):
    return schedule_server.client("events")


@pytest.fixture(scope="module")
def scheduler(schedule_server: Server):
    return schedule_server.client("scheduler")


@pytest.fixture(scope="module")
def sqs(schedule_server: Server):
    return schedule_server.client("sqs")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def new_function(lam) -> tuple[str, str]:
    name = unique("sched")
    arn = lam.create_function(**function_args(name, HANDLER, Runtime=RUNTIME))["FunctionArn"]
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    return name, arn


def allow_rule(lam, function: str, rule_arn: str) -> None:
    lam.add_permission(FunctionName=function, StatementId=unique("events"),
                       Action="lambda:InvokeFunction", Principal="events.amazonaws.com",
                       SourceArn=rule_arn)



def events_seen(server: Server, function: str) -> list[Any]:
    logs = server.client("logs")
    try:
        found = logs.filter_log_events(logGroupName=f"/aws/lambda/{function}",
                                       filterPattern="EVENT")["events"]
    except logs.exceptions.ResourceNotFoundException:
        return []
    return [json.loads(e["message"].split("EVENT ", 1)[1]) for e in found
            if e["message"].startswith("EVENT ")]


def new_queue(sqs) -> tuple[str, str]:
    name = unique("dlq")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    return url, f"arn:aws:sqs:us-east-1:{ACCOUNT}:{name}"


def dead_letters(sqs, url: str) -> list[dict[str, Any]]:
    return sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, MessageAttributeNames=["All"],
                               MaxNumberOfMessages=10).get("Messages", [])


# -- expressions (AWS's cron, translated) -------------------------------------------------


@pytest.mark.parametrize("text, after, expected", [
    ("cron(0 2 ? * SAT *)", "2026-12-01T00:03", "2026-12-05T02:00"),
    ("cron(0 9 ? * 2#1 *)", "2026-12-01T00:00", "2026-12-07T09:00"),   # first Monday
    ("cron(0 9 ? * 6L *)", "2026-12-01T00:00", "2026-12-25T09:00"),    # last Friday
    ("cron(0 9 L * ? *)", "2026-02-01T00:00", "2026-02-28T09:00"),
    ("cron(0 9 15W * ? *)", "2026-11-01T00:00", "2026-11-16T09:00"),   # the 15th is a Sunday
    ("cron(0 9 1W * ? *)", "2026-08-01T00:00", "2026-08-03T09:00"),   # Sat 1st: not July
    ("cron(0/15 * * * ? *)", "2026-12-01T00:03", "2026-12-01T00:15"),
    ("cron(0 18 ? * MON-FRI *)", "2026-12-05T00:00", "2026-12-07T18:00"),
    ("cron(0 8 1 * ? 2027)", "2026-12-01T09:00", "2027-01-01T08:00"),
])
def test_aws_cron_fields_name_the_times_aws_documents(text: str, after: str, expected: str):
    found = expressions.next_fire(expressions.parse(text),
                                  datetime.datetime.fromisoformat(after).replace(tzinfo=UTC), UTC)
    assert found == datetime.datetime.fromisoformat(expected).replace(tzinfo=UTC)


def test_cron_in_a_time_zone_and_years_that_are_over():
    nine_in_new_york = expressions.next_fire(
        expressions.parse("cron(0 9 * * ? *)"), datetime.datetime(2026, 12, 1, tzinfo=UTC),
        expressions.zone("America/New_York"))
    assert nine_in_new_york == datetime.datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
    assert expressions.next_fire(expressions.parse("cron(15 10 ? * 6L 2002-2005)"),
                                 datetime.datetime(2026, 12, 1, tzinfo=UTC), UTC) is None


# -- EventBridge rules ---------------------------------------------------------------------


def test_put_rule_refuses_what_eventbridge_refuses(events):
    for bad in ("cron(0 1 * * * *)", "cron(7 20 * * 1-7 *)", "cron(71 8 1 * ? *)",
                "rate(1 minutes)", "rate(10 minute)", "rate(10 seconds)", "rate(0 minutes)"):
        with aws_error(events, "ValidationException", 400) as info:
            events.put_rule(Name=unique("bad"), ScheduleExpression=bad)
        assert error_message(info) == "Parameter ScheduleExpression is not valid."
    with aws_error(events, "ValidationException", 400) as info:
        events.put_rule(Name=unique("bus"), ScheduleExpression="rate(1 minute)", EventBusName="other")
    assert error_message(info) == "ScheduleExpression is supported only on the default event bus."
    with aws_error(events, "ResourceNotFoundException", 400):
        events.enable_rule(Name=unique("missing"))


def test_rate_rule_invokes_the_function_with_the_scheduled_event(schedule_server, lam, events):
    function, function_arn = new_function(lam)
    rule = unique("rate")
    rule_arn = events.put_rule(Name=rule, ScheduleExpression="rate(1 minute)")["RuleArn"]
    assert rule_arn == f"arn:aws:events:us-east-1:{ACCOUNT}:rule/{rule}"
    allow_rule(lam, function, rule_arn)
    assert events.put_targets(Rule=rule, Targets=[{"Id": "fn", "Arn": function_arn}])[
        "FailedEntryCount"] == 0
    listed = [r for r in events.list_rules(NamePrefix=rule)["Rules"]]
    assert listed == [{"Name": rule, "Arn": rule_arn, "State": "ENABLED",
                       "ScheduleExpression": "rate(1 minute)", "EventBusName": "default"}]
    assert events.list_targets_by_rule(Rule=rule)["Targets"] == [{"Id": "fn", "Arn": function_arn}]

    fired = wait_for(lambda: len(e := events_seen(schedule_server, function)) >= 2 and e)
    first, second = fired[0], fired[1]
    assert first["detail-type"] == "Scheduled Event" and first["source"] == "aws.events"
    assert first["resources"] == [rule_arn] and first["detail"] == {}
    assert first["account"] == ACCOUNT and first["region"] == "us-east-1"
    assert first["version"] == "0" and first["id"] != second["id"]
    times = [datetime.datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%SZ") for e in (first, second)]
    assert (times[1] - times[0]).total_seconds() == 60

    events.disable_rule(Name=rule)
    assert events.describe_rule(Name=rule)["State"] == "DISABLED"
    events.remove_targets(Rule=rule, Ids=["fn"])
    events.delete_rule(Name=rule)
    assert events.list_rules(NamePrefix=rule)["Rules"] == []


def test_cron_rule_fires_on_the_minute_with_input_and_input_path(schedule_server, lam, events):
    function, function_arn = new_function(lam)
    rule = unique("cron")
    rule_arn = events.put_rule(Name=rule, ScheduleExpression="cron(* * * * ? *)")["RuleArn"]
    allow_rule(lam, function, rule_arn)
    events.put_targets(Rule=rule, Targets=[
        {"Id": "whole", "Arn": function_arn},
        {"Id": "constant", "Arn": function_arn, "Input": json.dumps({"custom": "input"})},
        {"Id": "path", "Arn": function_arn, "InputPath": "$.resources"},
    ])
    seen = wait_for(lambda: len(e := events_seen(schedule_server, function)) >= 3 and e)
    events.disable_rule(Name=rule)
    whole = next(e for e in seen if isinstance(e, dict) and "detail-type" in e)
    assert whole["time"].endswith(":00Z")
    assert {"custom": "input"} in seen
    assert [rule_arn] in seen


def test_a_rule_without_a_permission_for_eventbridge_does_not_invoke(schedule_server, lam, events, sqs):
    function, function_arn = new_function(lam)
    url, dlq_arn = new_queue(sqs)
    rule = unique("noperm")
    rule_arn = events.put_rule(Name=rule, ScheduleExpression="rate(1 minute)")["RuleArn"]
    events.put_targets(Rule=rule, Targets=[
        {"Id": "fn", "Arn": function_arn, "DeadLetterConfig": {"Arn": dlq_arn}}])
    message = wait_for(lambda: dead_letters(sqs, url))[0]
    events.disable_rule(Name=rule)
    attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert attributes["ERROR_CODE"] == "NO_PERMISSIONS"
    assert attributes["RULE_ARN"] == rule_arn and attributes["TARGET_ARN"] == function_arn
    assert json.loads(message["Body"])["detail-type"] == "Scheduled Event"
    assert events_seen(schedule_server, function) == []


# -- EventBridge Scheduler -------------------------------------------------------------------


def test_schedule_api_round_trip_and_aws_errors(lam, scheduler):
    _function, function_arn = new_function(lam)
    name = unique("s")
    target = {"Arn": function_arn, "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/scheduler"}
    arn = scheduler.create_schedule(Name=name, ScheduleExpression="cron(0 9 * * ? *)",
                                    ScheduleExpressionTimezone="Europe/Berlin",
                                    FlexibleTimeWindow={"Mode": "OFF"}, Target=target)["ScheduleArn"]
    assert arn == f"arn:aws:scheduler:us-east-1:{ACCOUNT}:schedule/default/{name}"
    got = scheduler.get_schedule(Name=name)
    assert got["ScheduleExpression"] == "cron(0 9 * * ? *)" and got["State"] == "ENABLED"
    assert got["ScheduleExpressionTimezone"] == "Europe/Berlin" and got["GroupName"] == "default"
    assert got["Target"]["Arn"] == function_arn
    with aws_error(scheduler, "ConflictException", 409) as info:
        scheduler.create_schedule(Name=name, ScheduleExpression="rate(1 day)",
                                  FlexibleTimeWindow={"Mode": "OFF"}, Target=target)
    assert error_message(info) == f"Schedule {name} already exists."
    with aws_error(scheduler, "ValidationException", 400) as info:
        scheduler.create_schedule(Name=unique("s"), ScheduleExpression="rate(1 minutes)",
                                  FlexibleTimeWindow={"Mode": "OFF"}, Target=target)
    assert error_message(info) == "Invalid Schedule Expression rate(1 minutes)."
    scheduler.update_schedule(Name=name, ScheduleExpression="rate(5 minutes)", State="DISABLED",
                              FlexibleTimeWindow={"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 5},
                              Target=target)
    got = scheduler.get_schedule(Name=name)
    assert got["State"] == "DISABLED" and got["FlexibleTimeWindow"]["Mode"] == "FLEXIBLE"
    listed = scheduler.list_schedules(NamePrefix=name)["Schedules"]
    assert [(s["Name"], s["State"], s["Target"]["Arn"]) for s in listed] == \
        [(name, "DISABLED", function_arn)]
    scheduler.delete_schedule(Name=name)
    with aws_error(scheduler, "ResourceNotFoundException", 404) as info:
        scheduler.get_schedule(Name=name)
    assert error_message(info) == f"Schedule {name} does not exist."


def test_rate_schedule_invokes_with_its_input_and_context_attributes(schedule_server, lam, scheduler):
    function, function_arn = new_function(lam)
    name = unique("s")
    arn = scheduler.create_schedule(
        Name=name, ScheduleExpression="rate(1 minute)", FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": function_arn, "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/scheduler",
                "Input": json.dumps({"arn": "<aws.scheduler.schedule-arn>",
                                     "at": "<aws.scheduler.scheduled-time>",
                                     "attempt": "<aws.scheduler.attempt-number>"})})["ScheduleArn"]
    seen = wait_for(lambda: len(e := events_seen(schedule_server, function)) >= 2 and e)
    scheduler.delete_schedule(Name=name)
    assert seen[0]["arn"] == arn and seen[0]["attempt"] == "1"
    times = [datetime.datetime.strptime(e["at"], "%Y-%m-%dT%H:%M:%SZ") for e in seen[:2]]
    assert (times[1] - times[0]).total_seconds() == 60


def test_one_time_schedule_fires_once_and_deletes_itself(schedule_server, lam, scheduler):
    function, function_arn = new_function(lam)
    name = unique("once")
    # In the past: a one-time schedule fires at once.
    scheduler.create_schedule(
        Name=name, ScheduleExpression="at(2026-01-01T00:00:00)", ActionAfterCompletion="DELETE",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": function_arn, "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/scheduler",
                "Input": json.dumps({"once": True})})
    assert wait_for(lambda: events_seen(schedule_server, function)) == [{"once": True}]
    wait_for(lambda: not scheduler.list_schedules(NamePrefix=name)["Schedules"])


def test_schedule_whose_target_fails_sends_the_input_to_its_dead_letter_queue(lam, scheduler, sqs):
    url, dlq_arn = new_queue(sqs)
    name = unique("dlq")
    missing = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{unique('missing')}"
    arn = scheduler.create_schedule(
        Name=name, ScheduleExpression="rate(1 minute)", FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": missing, "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/scheduler",
                "Input": json.dumps({"to": "nowhere"}),
                "RetryPolicy": {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60},
                "DeadLetterConfig": {"Arn": dlq_arn}})["ScheduleArn"]
    message = wait_for(lambda: dead_letters(sqs, url))[0]
    scheduler.delete_schedule(Name=name)
    assert json.loads(message["Body"]) == {"to": "nowhere"}
    attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert attributes["ERROR_CODE"] == "ResourceNotFoundException"
    assert attributes["SCHEDULE_ARN"] == arn and attributes["TARGET_ARN"] == missing
    assert attributes["RETRY_ATTEMPTS"] == "0"


def schedule_now(scale: float) -> datetime.datetime:
    """The server's schedule time (see lamina.events.timer.Clock), to the second."""
    origin = datetime.datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    seconds = (time.time() - origin.timestamp()) / scale
    return (origin + datetime.timedelta(seconds=seconds)).replace(microsecond=0, tzinfo=None)


def test_rules_survive_a_restart_and_fire_again_after_it(start_server):
    server = start_server({"LAMINA_SCHEDULE_TIME_SCALE": "0.02"}, name="lamina-schedules-restart")
    lam, events = server.client(), server.client("events")
    function, function_arn = new_function(lam)
    rule = unique("restart")
    rule_arn = events.put_rule(Name=rule, ScheduleExpression="rate(1 minute)")["RuleArn"]
    allow_rule(lam, function, rule_arn)
    events.put_targets(Rule=rule, Targets=[{"Id": "fn", "Arn": function_arn}])
    wait_for(lambda: events_seen(server, function))
    server.stop()
    server.start()
    restarted = schedule_now(0.02)
    assert server.client("events").describe_rule(Name=rule)["State"] == "ENABLED"

    def fired_after_restart() -> bool:
        return any(datetime.datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%SZ") > restarted
                   for e in events_seen(server, function))

    wait_for(fired_after_restart)
