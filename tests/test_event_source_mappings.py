"""Event source mappings on Lamina's SQS queues, driven by boto3 against a real server:
the API (states, validation, AWS's messages), batching, partial batch failures,
filters, redrive, disabling, and 1,000 messages processed exactly once.

The function logs each batch it gets as one `BATCH {...}` line; the tests read those
lines back through the CloudWatch Logs API, so what they assert is what the function saw.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from lamina.errors import InvalidParameterValueException
from lamina.events import filters
from tests.conftest import Server
from tests.helpers import aws_error, error_message, function_args, make_zip, wait_for

ACCOUNT = "000000000000"
RUNTIME = "python3.13"
HANDLER = make_zip({"app.py": '''
import json, time

def handler(event, context):
    records = event["Records"]
    print("BATCH " + json.dumps({
        "ids": [r["messageId"] for r in records],
        "bodies": [r["body"] for r in records],
        "counts": [r["attributes"]["ApproximateReceiveCount"] for r in records],
        "source": [r["eventSource"] for r in records],
    }))
    if any(r["body"] == "slow" and r["attributes"]["ApproximateReceiveCount"] == "1"
           for r in records):
        time.sleep(30)
    if any(r["body"] == "poison" for r in records):
        raise RuntimeError("poison")
    return {"batchItemFailures": [
        {"itemIdentifier": r["messageId"]} for r in records
        if r["body"].startswith("fail-once") and r["attributes"]["ApproximateReceiveCount"] == "1"
    ]}
'''})


@pytest.fixture(scope="module")
def esm_server(start_server) -> Server:
    return start_server(name="lamina-esm")


@pytest.fixture(scope="module")
def lam(esm_server: Server):
    return esm_server.client()


@pytest.fixture(scope="module")
def sqs(esm_server: Server):
    return esm_server.client("sqs")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def new_queue(sqs, **attributes: str) -> tuple[str, str]:
    name = unique("q")
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url, f"arn:aws:sqs:us-east-1:{ACCOUNT}:{name}"


@pytest.fixture(scope="module")
def function(lam) -> str:
    name = unique("esm")
    lam.create_function(**function_args(name, HANDLER, Runtime=RUNTIME))
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    return name


def new_function(lam, **overrides: Any) -> str:
    name = unique("esm")
    lam.create_function(**function_args(name, HANDLER, Runtime=RUNTIME, **overrides))
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    return name



def wait_state(lam, uuid_: str, state: str) -> dict[str, Any]:
    return wait_for(lambda: (m := lam.get_event_source_mapping(UUID=uuid_))["State"] == state and m)


def batches(server: Server, name: str) -> list[dict[str, Any]]:
    """Every batch the function logged, oldest first."""
    logs = server.client("logs")
    found: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"logGroupName": f"/aws/lambda/{name}", "filterPattern": "BATCH"}
    try:
        while True:
            page = logs.filter_log_events(**kwargs)
            found += [json.loads(e["message"].split("BATCH ", 1)[1]) for e in page["events"]
                      if "BATCH {" in e["message"]]
            if not page.get("nextToken"):
                return found
            kwargs["nextToken"] = page["nextToken"]
    except logs.exceptions.ResourceNotFoundException:
        return []


def bodies_seen(server: Server, name: str) -> list[str]:
    return [body for batch in batches(server, name) for body in batch["bodies"]]


def map_queue(lam, function: str, arn: str, **kwargs: Any) -> str:
    created = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=function, **kwargs)
    wait_state(lam, created["UUID"], "Enabled")
    return created["UUID"]


def queue_counts(sqs, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return (int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]))


# -- filter patterns (Lambda's syntax) --------------------------------------------------------


@pytest.mark.parametrize("pattern, event, matched", [
    ({"body": {"a": ["x"]}}, {"body": {"a": "x"}}, True),
    ({"body": {"a": ["x"]}}, {"body": {"a": ["y", "x"]}}, True),   # a list matches any item
    ({"body": {"a": [{"prefix": "ab"}]}}, {"body": {"a": "abc"}}, True),
    ({"body": {"a": [{"suffix": ".png"}]}}, {"body": {"a": "cat.jpg"}}, False),
    ({"body": {"a": [{"equals-ignore-case": "ABC"}]}}, {"body": {"a": "abc"}}, True),
    ({"body": {"a": [{"anything-but": ["x", "y"]}]}}, {"body": {"a": "z"}}, True),
    ({"body": {"a": [{"anything-but": {"prefix": "x"}}]}}, {"body": {"a": "xy"}}, False),
    ({"body": {"n": [{"numeric": [">=", 10, "<", 20]}]}}, {"body": {"n": 20}}, False),
    ({"body": {"n": [{"numeric": ["=", 5]}]}}, {"body": {"n": 5.0}}, True),
    ({"body": {"n": [{"numeric": [">", 1]}]}}, {"body": {"n": "7"}}, False),  # strings are not numbers
    ({"body": {"a": [{"exists": False}]}}, {"body": {"b": 1}}, True),
    ({"body": {"a": [{"exists": True}]}}, {"body": {"b": 1}}, False),
    ({"body": {"a": [None]}}, {"body": {"a": None}}, True),
    ({"body": {"a": [True]}}, {"body": {"a": 1}}, False),
    ({"$or": [{"body": {"a": ["1"]}}, {"body": {"b": ["2"]}}]}, {"body": {"b": "2"}}, True),
    ({"body": ["plain text"]}, {"body": "plain text"}, True),
    ({"body": {"a": ["x"]}}, {"body": "not json"}, False),
])
def test_filter_patterns_match_as_lambda_documents(pattern, event, matched):
    assert filters.matches(filters.parse_pattern(json.dumps(pattern)), event) is matched


@pytest.mark.parametrize("pattern", [
    "simple string", "[1, 2]", json.dumps({"a": "x"}), json.dumps({"a": [{"nope": 1}]}),
    json.dumps({"a": [{"numeric": [">", "1"]}]}), json.dumps({"$or": [{"a": ["x"]}]}),
    json.dumps({"a": [{"exists": "yes"}]}),
])
def test_invalid_filter_patterns_are_refused_with_aws_message(pattern):
    with pytest.raises(InvalidParameterValueException, match="Invalid filter pattern definition."):
        filters.parse_pattern(pattern)


# -- the API ------------------------------------------------------------------------------


def test_create_answers_creating_then_the_mapping_is_enabled_with_aws_fields(lam, sqs, function):
    _url, arn = new_queue(sqs)
    created = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=function)
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert created["State"] == "Creating"
    assert created["StateTransitionReason"] == "USER_INITIATED"
    assert created["BatchSize"] == 10 and created["MaximumBatchingWindowInSeconds"] == 0
    assert created["FunctionResponseTypes"] == []
    assert created["FunctionArn"] == f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{function}"
    assert created["EventSourceMappingArn"] == \
        f"arn:aws:lambda:us-east-1:{ACCOUNT}:event-source-mapping:{created['UUID']}"
    got = wait_state(lam, created["UUID"], "Enabled")
    assert got["EventSourceArn"] == arn
    listed = lam.list_event_source_mappings(EventSourceArn=arn)["EventSourceMappings"]
    assert [m["UUID"] for m in listed] == [created["UUID"]]
    by_function = lam.list_event_source_mappings(FunctionName=function)["EventSourceMappings"]
    assert created["UUID"] in [m["UUID"] for m in by_function]

    with aws_error(lam, "ResourceConflictException", 409) as info:
        lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=function)
    assert error_message(info) == (
        f'An event source mapping with SQS arn (" {arn} ") and function (" {function} ") '
        f"already exists. Please update or delete the existing mapping with UUID {created['UUID']}")

    deleted = lam.delete_event_source_mapping(UUID=created["UUID"])
    assert deleted["State"] == "Deleting"
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 202
    wait_for(lambda: not lam.list_event_source_mappings(EventSourceArn=arn)["EventSourceMappings"])
    with aws_error(lam, "ResourceNotFoundException", 404) as info:
        lam.get_event_source_mapping(UUID=created["UUID"])
    assert error_message(info) == "The resource you requested does not exist."


def test_create_refuses_what_aws_refuses_with_its_messages(lam, sqs, function):
    _url, arn = new_queue(sqs)
    missing = f"arn:aws:sqs:us-east-1:{ACCOUNT}:{unique('missing')}"
    cases = [
        ({"EventSourceArn": missing, "FunctionName": function},
         "Error occurred while ReceiveMessage. SQS Error Code: AWS.SimpleQueueService."
         "NonExistentQueue. SQS Error Message: The specified queue does not exist."),
        ({"EventSourceArn": arn, "FunctionName": unique("nope")}, "Function does not exist"),
        ({"FunctionName": function}, "Unrecognized event source."),
        ({"EventSourceArn": arn, "FunctionName": function, "BatchSize": 100},
         "Maximum batch window in seconds must be greater than 0 if maximum batch size is "
         "greater than 10"),
        ({"EventSourceArn": arn, "FunctionName": function,
          "FilterCriteria": {"Filters": [{"Pattern": "simple string"}]}},
         "Invalid filter pattern definition."),
        ({"EventSourceArn": arn, "FunctionName": function,
          "FilterCriteria": {"Filters": [{"Pattern": json.dumps({"body": {"a": "not-a-list"}})}]}},
         "Invalid filter pattern definition."),
        ({"EventSourceArn": arn, "FunctionName": function,
          "DestinationConfig": {"OnSuccess": {"Destination": arn}}},
         "Unsupported DestinationConfig parameter for given event source mapping type."),
    ]
    for params, message in cases:
        with aws_error(lam, "InvalidParameterValueException", 400) as info:
            lam.create_event_source_mapping(**params)
        assert error_message(info) == message
    with aws_error(lam, "ValidationException", 400):
        lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=function, BatchSize=10_001,
                                        MaximumBatchingWindowInSeconds=1)
    for call in (lam.get_event_source_mapping, lam.delete_event_source_mapping):
        with aws_error(lam, "ResourceNotFoundException", 404):
            call(UUID=str(uuid.uuid4()))


# -- delivery ---------------------------------------------------------------------------


def test_batch_of_ten_gathered_within_the_batching_window_is_one_invocation(esm_server, lam, sqs):
    name = new_function(lam)
    url, arn = new_queue(sqs)
    map_queue(lam, name, arn, BatchSize=10, MaximumBatchingWindowInSeconds=5)
    sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "MessageBody": f"m{i}"} for i in range(5)])
    time.sleep(0.5)
    sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "MessageBody": f"m{i}"} for i in range(5, 10)])
    seen = wait_for(lambda: batches(esm_server, name))
    assert len(seen) == 1 and sorted(seen[0]["bodies"]) == sorted(f"m{i}" for i in range(10))
    assert seen[0]["source"] == ["aws:sqs"] * 10
    wait_for(lambda: queue_counts(sqs, url) == (0, 0))


def test_event_records_have_the_sqs_shape(esm_server, lam, sqs):
    shape_handler = make_zip({"app.py": '''
import json
def handler(event, context):
    print("EVENT " + json.dumps(event))
'''})
    name = unique("esm-shape")
    lam.create_function(**function_args(name, shape_handler, Runtime=RUNTIME))
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    url, arn = new_queue(sqs)
    map_queue(lam, name, arn)
    sent = sqs.send_message(QueueUrl=url, MessageBody='{"foo": "bar"}', MessageAttributes={
        "colour": {"DataType": "String", "StringValue": "blue"}})
    logs = esm_server.client("logs")

    def event() -> dict[str, Any] | None:
        try:
            found = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}",
                                           filterPattern="EVENT")["events"]
        except logs.exceptions.ResourceNotFoundException:
            return None
        lines = [e["message"] for e in found if "EVENT {" in e["message"]]
        return json.loads(lines[0].split("EVENT ", 1)[1]) if lines else None

    record = wait_for(event)["Records"][0]
    assert record["messageId"] == sent["MessageId"]
    assert record["body"] == '{"foo": "bar"}'
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == arn
    assert record["awsRegion"] == "us-east-1"
    assert record["md5OfBody"] == sent["MD5OfMessageBody"]
    assert record["md5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert record["messageAttributes"] == {"colour": {
        "stringValue": "blue", "binaryValue": None, "stringListValues": [],
        "binaryListValues": [], "dataType": "String"}}
    assert set(record["attributes"]) == {"ApproximateReceiveCount", "SentTimestamp", "SenderId",
                                         "ApproximateFirstReceiveTimestamp"}
    assert record["attributes"]["ApproximateReceiveCount"] == "1"


def test_report_batch_item_failures_redelivers_only_the_failed_message(esm_server, lam, sqs):
    name = new_function(lam)
    url, arn = new_queue(sqs, VisibilityTimeout="1")
    map_queue(lam, name, arn, FunctionResponseTypes=["ReportBatchItemFailures"])
    sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "ok-1"}, {"Id": "b", "MessageBody": "fail-once"},
        {"Id": "c", "MessageBody": "ok-2"}])
    wait_for(lambda: bodies_seen(esm_server, name).count("fail-once") == 2)
    wait_for(lambda: queue_counts(sqs, url) == (0, 0))
    seen = bodies_seen(esm_server, name)
    assert seen.count("ok-1") == 1 and seen.count("ok-2") == 1
    counts = [c for b in batches(esm_server, name) for body, c in zip(b["bodies"], b["counts"])
              if body == "fail-once"]
    assert counts == ["1", "2"]


def test_function_errors_leave_the_batch_to_the_queues_redrive_policy(esm_server, lam, sqs):
    name = new_function(lam)
    dlq_url, dlq_arn = new_queue(sqs)
    url, arn = new_queue(sqs, VisibilityTimeout="1", RedrivePolicy=json.dumps(
        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}))
    map_queue(lam, name, arn)
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    moved = wait_for(lambda: sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=1).get("Messages"))
    assert moved[0]["Body"] == "poison"
    assert bodies_seen(esm_server, name).count("poison") == 2


def test_filter_criteria_invoke_only_for_matches_and_delete_the_rest(esm_server, lam, sqs):
    name = new_function(lam)
    url, arn = new_queue(sqs)
    pattern = {"body": {"kind": ["keep"], "size": [{"numeric": [">", 10]}],
                        "$or": [{"tag": [{"prefix": "a-"}]}, {"tag": [{"exists": False}]}]}}
    uuid_ = map_queue(lam, name, arn, FilterCriteria={"Filters": [{"Pattern": json.dumps(pattern)}]})
    keep = [{"kind": "keep", "size": 11, "tag": "a-1"}, {"kind": "keep", "size": 20}]
    drop = [{"kind": "keep", "size": 5}, {"kind": "drop", "size": 20},
            {"kind": "keep", "size": 20, "tag": "b-1"}, "plain text"]
    for body in keep + drop:
        sqs.send_message(QueueUrl=url, MessageBody=body if isinstance(body, str) else json.dumps(body))
    wait_for(lambda: queue_counts(sqs, url) == (0, 0))
    wait_for(lambda: len(bodies_seen(esm_server, name)) >= 2)
    assert sorted(json.loads(b)["size"] for b in bodies_seen(esm_server, name)) == [11, 20]
    got = lam.get_event_source_mapping(UUID=uuid_)
    metrics = json.loads(got["ResponseMetadata"]["HTTPHeaders"]["x-lamina-event-source-metrics"])
    assert metrics["PolledEventCount"] == 6 and metrics["FilteredOutEventCount"] == 4
    assert metrics["InvokedEventCount"] == 2 and metrics["FailedInvokeEventCount"] == 0


def test_disabling_a_mapping_stops_delivery_and_enabling_resumes_it(esm_server, lam, sqs):
    name = new_function(lam)
    url, arn = new_queue(sqs)
    uuid_ = map_queue(lam, name, arn)
    sqs.send_message(QueueUrl=url, MessageBody="before")
    wait_for(lambda: "before" in bodies_seen(esm_server, name))
    updated = lam.update_event_source_mapping(UUID=uuid_, Enabled=False)
    assert updated["State"] == "Disabling"
    wait_state(lam, uuid_, "Disabled")
    sqs.send_message(QueueUrl=url, MessageBody="while-disabled")
    # A disabled mapping holds no poller: the message stays visible in the queue.
    time.sleep(1.5)
    assert queue_counts(sqs, url) == (1, 0)
    assert "while-disabled" not in bodies_seen(esm_server, name)
    lam.update_event_source_mapping(UUID=uuid_, Enabled=True)
    wait_state(lam, uuid_, "Enabled")
    wait_for(lambda: "while-disabled" in bodies_seen(esm_server, name))


def test_a_thousand_messages_are_each_processed_exactly_once(esm_server, lam, sqs):
    name = new_function(lam)
    url, arn = new_queue(sqs)
    map_queue(lam, name, arn, BatchSize=10)
    sent = [f"n{i}" for i in range(1000)]
    for start in range(0, 1000, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": body} for i, body in enumerate(sent[start:start + 10])])
    wait_for(lambda: len(bodies_seen(esm_server, name)) >= 1000, timeout=60, interval=1.0)
    seen = bodies_seen(esm_server, name)
    assert sorted(seen) == sorted(sent)
    wait_for(lambda: queue_counts(sqs, url) == (0, 0))


def test_a_server_killed_mid_batch_loses_no_message(start_server):
    server = start_server(name="lamina-esm-crash")
    lam, sqs = server.client(), server.client("sqs")
    name = new_function(lam, Timeout=60)
    url, arn = new_queue(sqs, VisibilityTimeout="2")
    map_queue(lam, name, arn)
    sqs.send_message(QueueUrl=url, MessageBody="slow")
    # Received (in flight) and its function sleeping: the batch cannot have succeeded.
    wait_for(lambda: queue_counts(sqs, url) == (0, 1), interval=0.05)
    server.stop(kill=True)
    server.start()
    sqs = server.client("sqs")
    # Not deleted: it is received again once its visibility timeout is over.
    assert sum(queue_counts(sqs, url)) == 1
    wait_for(lambda: queue_counts(sqs, url) == (0, 0))
    counts = [c for b in batches(server, name) for body, c in zip(b["bodies"], b["counts"])
              if body == "slow"]
    assert "2" in counts  # the second receive, after the restart, completed


def test_mappings_poll_again_after_a_restart(start_server, tmp_path):
    server = start_server(name="lamina-esm-restart")
    lam, sqs = server.client(), server.client("sqs")
    name = new_function(lam)
    url, arn = new_queue(sqs)
    uuid_ = map_queue(lam, name, arn)
    server.stop()
    server.start()
    sqs = server.client("sqs")
    sqs.send_message(QueueUrl=url, MessageBody="after-restart")
    wait_for(lambda: "after-restart" in bodies_seen(server, name))
    assert server.client().get_event_source_mapping(UUID=uuid_)["State"] == "Enabled"
