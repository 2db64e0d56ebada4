"""The SQS-compatible queue service, driven by unmodified boto3 `sqs` code and the AWS CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from botocore.exceptions import ClientError

from lamina.config import Settings
from lamina.control.messages import OutgoingMessage
from lamina.errors import QueueDoesNotExist
from lamina.platform import Platform
from tests.conftest import Server


def queue_name(prefix: str = "q") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def sqs(server: Server):
    return server.client("sqs")


@pytest.fixture
def queue(sqs) -> str:
    return sqs.create_queue(QueueName=queue_name())["QueueUrl"]


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return excinfo.value.response["Error"]["Code"]


# -- queues ------------------------------------------------------------------------


def test_create_queue_returns_url_on_the_endpoint_used_with_account_and_name(sqs, server):
    name = queue_name()
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    assert url == f"{server.endpoint}/000000000000/{name}"
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url


def test_create_queue_again_with_same_attributes_returns_same_url(sqs):
    name = queue_name()
    first = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "40"})
    again = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "40"})
    assert first["QueueUrl"] == again["QueueUrl"]


def test_create_queue_again_with_different_attributes_raises_queue_name_exists(sqs):
    name = queue_name()
    sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "40"})
    with pytest.raises(sqs.exceptions.QueueNameExists) as excinfo:
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "41"})
    assert error_code(excinfo) == "QueueAlreadyExists"
    assert "VisibilityTimeout" in excinfo.value.response["Error"]["Message"]


def test_create_queue_with_invalid_name_is_invalid_parameter_value(sqs):
    with pytest.raises(ClientError) as excinfo:
        sqs.create_queue(QueueName="bad name!")
    assert error_code(excinfo) == "InvalidParameterValue"


def test_create_queue_with_unknown_or_out_of_range_attribute_is_rejected(sqs):
    with pytest.raises(sqs.exceptions.InvalidAttributeName):
        sqs.create_queue(QueueName=queue_name(), Attributes={"Colour": "blue"})
    with pytest.raises(sqs.exceptions.InvalidAttributeValue) as excinfo:
        sqs.create_queue(QueueName=queue_name(), Attributes={"VisibilityTimeout": "43201"})
    assert "VisibilityTimeout" in excinfo.value.response["Error"]["Message"]


def test_get_queue_url_of_missing_queue_raises_queue_does_not_exist_with_legacy_code(sqs):
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as excinfo:
        sqs.get_queue_url(QueueName=queue_name("missing"))
    error = excinfo.value.response["Error"]
    assert error["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    assert error["Message"] == "The specified queue does not exist."
    assert error["Type"] == "Sender"


def test_error_body_is_json_protocol_shaped_with_query_error_header(server):
    response = httpx.post(
        server.endpoint + "/",
        content=json.dumps({"QueueName": "no-such-queue-here"}),
        headers={"X-Amz-Target": "AmazonSQS.GetQueueUrl",
                 "Content-Type": "application/x-amz-json-1.0"},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json() == {"__type": "com.amazonaws.sqs#QueueDoesNotExist",
                               "message": "The specified queue does not exist."}
    assert response.headers["x-amzn-query-error"] == (
        "AWS.SimpleQueueService.NonExistentQueue;Sender"
    )
    assert response.headers["content-type"] == "application/x-amz-json-1.0"


def test_unknown_x_amz_target_is_unknown_operation(server):
    response = httpx.post(
        server.endpoint + "/", content="{}",
        headers={"X-Amz-Target": "AmazonSQS.FlyToTheMoon",
                 "Content-Type": "application/x-amz-json-1.0"},
        timeout=10,
    )
    assert response.status_code >= 400
    assert response.json()["__type"] == "com.amazonaws.sqs#UnknownOperationException"


def test_list_queues_filters_by_prefix_and_pages_with_max_results(sqs):
    prefix = queue_name("list")
    urls = sorted(sqs.create_queue(QueueName=f"{prefix}-{i}")["QueueUrl"] for i in range(5))
    assert sorted(sqs.list_queues(QueueNamePrefix=prefix)["QueueUrls"]) == urls
    assert "NextToken" not in sqs.list_queues(QueueNamePrefix=prefix)
    seen, token = [], None
    while True:
        page = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2,
                               **({"NextToken": token} if token else {}))
        assert len(page["QueueUrls"]) <= 2
        seen += page["QueueUrls"]
        token = page.get("NextToken")
        if not token:
            break
    assert seen == urls
    paginated = sqs.get_paginator("list_queues").paginate(
        QueueNamePrefix=prefix, PaginationConfig={"PageSize": 3}
    )
    assert [u for page in paginated for u in page["QueueUrls"]] == urls


def test_list_queues_with_unmatched_prefix_has_no_queue_urls(sqs):
    assert "QueueUrls" not in sqs.list_queues(QueueNamePrefix=queue_name("nothing"))


def test_get_queue_attributes_all_reports_defaults_arn_timestamps_and_counts(sqs):
    name = queue_name()
    before = int(time.time())
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["QueueArn"] == f"arn:aws:sqs:us-east-1:000000000000:{name}"
    assert attributes["VisibilityTimeout"] == "30"
    assert attributes["MessageRetentionPeriod"] == "345600"
    assert attributes["MaximumMessageSize"] == "262144"
    assert attributes["DelaySeconds"] == "0"
    assert attributes["ReceiveMessageWaitTimeSeconds"] == "0"
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "0"
    assert before <= int(attributes["CreatedTimestamp"]) <= time.time() + 1
    only = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    assert only == {"QueueArn": attributes["QueueArn"]}


def test_get_queue_attributes_with_unknown_name_raises_invalid_attribute_name(sqs, queue):
    with pytest.raises(sqs.exceptions.InvalidAttributeName):
        sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["Colour"])


def test_set_queue_attributes_changes_them_and_rejects_read_only_ones(sqs, queue):
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"VisibilityTimeout": "7",
                                                         "DelaySeconds": "3"})
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue, AttributeNames=["VisibilityTimeout", "DelaySeconds"]
    )["Attributes"]
    assert attributes == {"VisibilityTimeout": "7", "DelaySeconds": "3"}
    with pytest.raises(sqs.exceptions.InvalidAttributeName):
        sqs.set_queue_attributes(QueueUrl=queue, Attributes={"QueueArn": "arn:x"})
    with pytest.raises(sqs.exceptions.InvalidAttributeValue):
        sqs.set_queue_attributes(QueueUrl=queue, Attributes={"DelaySeconds": "901"})


def test_deleted_queue_raises_queue_does_not_exist_everywhere(sqs):
    url = sqs.create_queue(QueueName=queue_name())["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="bye")
    sqs.delete_queue(QueueUrl=url)
    for call in (
        lambda: sqs.send_message(QueueUrl=url, MessageBody="x"),
        lambda: sqs.receive_message(QueueUrl=url),
        lambda: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]),
        lambda: sqs.purge_queue(QueueUrl=url),
        lambda: sqs.delete_queue(QueueUrl=url),
    ):
        with pytest.raises(sqs.exceptions.QueueDoesNotExist):
            call()


def test_purge_queue_removes_every_message(sqs, queue):
    sqs.send_message_batch(QueueUrl=queue, Entries=[
        {"Id": str(i), "MessageBody": f"m{i}"} for i in range(5)
    ])
    sqs.purge_queue(QueueUrl=queue)
    assert "Messages" not in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
    counts = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessages"] == "0"


# -- messages --------------------------------------------------------------------------


def test_send_receive_delete_round_trip(sqs, queue):
    sent = sqs.send_message(QueueUrl=queue, MessageBody='{"hello": "world"}')
    received = sqs.receive_message(QueueUrl=queue, MessageSystemAttributeNames=["All"])
    [message] = received["Messages"]
    assert message["MessageId"] == sent["MessageId"]
    assert message["Body"] == '{"hello": "world"}'
    assert message["MD5OfBody"] == hashlib.md5(b'{"hello": "world"}').hexdigest()
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"
    assert message["Attributes"]["SenderId"] == "000000000000"
    sent_at = int(message["Attributes"]["SentTimestamp"])
    assert abs(sent_at - time.time() * 1000) < 10_000
    assert int(message["Attributes"]["ApproximateFirstReceiveTimestamp"]) >= sent_at
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    counts = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessages"] == "0"
    assert counts["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_send_message_md5s_equal_the_digests_aws_returns(sqs, queue):
    # Digests pinned from AWS's own responses for this body and attribute.
    sent = sqs.send_message(QueueUrl=queue, MessageBody="derp", MessageAttributes={
        "timestamp": {"DataType": "Number", "StringValue": "1493147359900"},
    })
    assert sent["MD5OfMessageBody"] == "58fd9edd83341c29f1aebba81c31e257"
    assert sent["MD5OfMessageAttributes"] == "235c5c510d26fb653d073faed50ae77c"
    [message] = sqs.receive_message(QueueUrl=queue, MessageAttributeNames=["All"])["Messages"]
    assert message["MD5OfMessageAttributes"] == "235c5c510d26fb653d073faed50ae77c"
    assert message["MessageAttributes"] == {
        "timestamp": {"DataType": "Number", "StringValue": "1493147359900"}
    }


def test_receive_returns_only_the_message_attributes_asked_for_with_their_md5(sqs, queue):
    sqs.send_message(QueueUrl=queue, MessageBody="b", MessageAttributes={
        "timestamp": {"DataType": "Number", "StringValue": "1493147359901"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xffbytes"},
        "kind.custom": {"DataType": "String.custom", "StringValue": "x"},
    })
    [message] = sqs.receive_message(
        QueueUrl=queue, MessageAttributeNames=["timestamp"], VisibilityTimeout=0
    )["Messages"]
    assert message["MessageAttributes"] == {
        "timestamp": {"DataType": "Number", "StringValue": "1493147359901"}
    }
    assert message["MD5OfMessageAttributes"] == "994258b45346a2cc3f9cbb611aa7af30"
    [message] = sqs.receive_message(QueueUrl=queue, MessageAttributeNames=["All"])["Messages"]
    assert message["MessageAttributes"]["blob"] == {"DataType": "Binary",
                                                    "BinaryValue": b"\x00\xffbytes"}
    assert set(message["MessageAttributes"]) == {"timestamp", "blob", "kind.custom"}


def test_receive_without_attribute_names_returns_no_attributes(sqs, queue):
    sqs.send_message(QueueUrl=queue, MessageBody="b", MessageAttributes={
        "a": {"DataType": "String", "StringValue": "x"}})
    [message] = sqs.receive_message(QueueUrl=queue)["Messages"]
    assert "MessageAttributes" not in message
    assert "MD5OfMessageAttributes" not in message
    assert "Attributes" not in message


def test_trace_header_system_attribute_round_trips_with_its_md5(sqs, queue):
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
    sent = sqs.send_message(QueueUrl=queue, MessageBody="t", MessageSystemAttributes={
        "AWSTraceHeader": {"DataType": "String", "StringValue": trace}})
    assert len(sent["MD5OfMessageSystemAttributes"]) == 32
    [message] = sqs.receive_message(QueueUrl=queue, AttributeNames=["AWSTraceHeader"])["Messages"]
    assert message["Attributes"] == {"AWSTraceHeader": trace}


def test_message_attribute_errors_are_invalid_parameter_value(sqs, queue):
    bad = [
        {"a": {"DataType": "Float", "StringValue": "1"}},
        {"a": {"DataType": "Number", "StringValue": "one"}},
        {"AWS.reserved": {"DataType": "String", "StringValue": "x"}},
        {f"a{i}": {"DataType": "String", "StringValue": "x"} for i in range(11)},
    ]
    for attributes in bad:
        with pytest.raises(ClientError) as excinfo:
            sqs.send_message(QueueUrl=queue, MessageBody="b", MessageAttributes=attributes)
        assert error_code(excinfo) == "InvalidParameterValue", attributes


def test_message_over_256_kib_is_rejected_and_exactly_256_kib_is_accepted(sqs, queue):
    sqs.send_message(QueueUrl=queue, MessageBody="x" * 262_144)
    with pytest.raises(ClientError) as excinfo:
        sqs.send_message(QueueUrl=queue, MessageBody="x" * 262_145)
    assert error_code(excinfo) == "InvalidParameterValue"
    assert "262144 bytes" in excinfo.value.response["Error"]["Message"]


def test_body_with_characters_outside_xml_range_raises_invalid_message_contents(sqs, queue):
    with pytest.raises(sqs.exceptions.InvalidMessageContents):
        sqs.send_message(QueueUrl=queue, MessageBody="bell \x07")


def test_delay_seconds_keeps_message_delayed_until_due(sqs, queue):
    sqs.send_message(QueueUrl=queue, MessageBody="later", DelaySeconds=1)
    counts = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessagesDelayed"] == "1"
    assert counts["ApproximateNumberOfMessages"] == "0"
    assert "Messages" not in sqs.receive_message(QueueUrl=queue)
    started = time.monotonic()
    received = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=5)
    assert received["Messages"][0]["Body"] == "later"
    # The long poll woke when the delay ran out, not at the end of the wait.
    assert time.monotonic() - started < 2.5


def test_delay_seconds_out_of_range_is_invalid_parameter_value(sqs, queue):
    with pytest.raises(ClientError) as excinfo:
        sqs.send_message(QueueUrl=queue, MessageBody="b", DelaySeconds=901)
    assert error_code(excinfo) == "InvalidParameterValue"


def test_max_number_of_messages_outside_1_to_10_is_invalid_parameter_value(sqs, queue):
    for count in (0, 11):
        with pytest.raises(ClientError) as excinfo:
            sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=count)
        assert error_code(excinfo) == "InvalidParameterValue"
        assert "MaxNumberOfMessages" in excinfo.value.response["Error"]["Message"]


def test_receive_takes_at_most_max_number_of_messages(sqs, queue):
    sqs.send_message_batch(QueueUrl=queue, Entries=[
        {"Id": str(i), "MessageBody": f"m{i}"} for i in range(10)
    ])
    assert len(sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=3)["Messages"]) == 3
    assert len(sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]) == 7


# -- long polling and visibility ---------------------------------------------------------


def test_long_poll_returns_as_soon_as_a_message_is_sent_from_another_thread(server, sqs, queue):
    sender = server.client("sqs")

    def send_later() -> None:
        time.sleep(0.5)
        sender.send_message(QueueUrl=queue, MessageBody="wake up")

    thread = threading.Thread(target=send_later)
    started = time.monotonic()
    thread.start()
    received = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=10)
    elapsed = time.monotonic() - started
    thread.join()
    assert received["Messages"][0]["Body"] == "wake up"
    assert 0.4 < elapsed < 2.0


def test_long_poll_with_no_message_waits_about_wait_time_seconds(sqs, queue):
    started = time.monotonic()
    received = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=2)
    elapsed = time.monotonic() - started
    assert "Messages" not in received
    assert 1.9 < elapsed < 3.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_long_poll_sleeps_instead_of_spinning(server, sqs, queue):
    assert server.process is not None
    before = _cpu_seconds(server.process.pid)
    sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=2)
    assert _cpu_seconds(server.process.pid) - before < 0.3


def test_queue_receive_wait_time_applies_when_request_gives_none(sqs):
    url = sqs.create_queue(QueueName=queue_name(),
                           Attributes={"ReceiveMessageWaitTimeSeconds": "1"})["QueueUrl"]
    started = time.monotonic()
    sqs.receive_message(QueueUrl=url)
    assert 0.9 < time.monotonic() - started < 2.0


def test_long_poll_does_not_block_other_requests(server, sqs, queue):
    other = server.client("sqs")
    results: list[float] = []

    def poll() -> None:
        sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=2)

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.3)
    started = time.monotonic()
    other.list_queues(QueueNamePrefix="anything")
    results.append(time.monotonic() - started)
    waiter.join()
    assert results[0] < 0.5


def test_wait_time_seconds_over_20_is_invalid_parameter_value(sqs, queue):
    with pytest.raises(ClientError) as excinfo:
        sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=21)
    assert error_code(excinfo) == "InvalidParameterValue"


def test_visibility_timeout_hides_message_then_shows_it_again_with_higher_receive_count(sqs, queue):
    sqs.send_message(QueueUrl=queue, MessageBody="again")
    first = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=1,
                                AttributeNames=["ApproximateReceiveCount"])["Messages"][0]
    assert first["Attributes"]["ApproximateReceiveCount"] == "1"
    assert "Messages" not in sqs.receive_message(QueueUrl=queue)
    counts = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessagesNotVisible"] == "1"
    time.sleep(1.1)
    second = sqs.receive_message(QueueUrl=queue, AttributeNames=["ApproximateReceiveCount"],
                                 MessageSystemAttributeNames=["ApproximateFirstReceiveTimestamp"])
    [message] = second["Messages"]
    assert message["MessageId"] == first["MessageId"]
    assert message["ReceiptHandle"] != first["ReceiptHandle"]
    assert message["Attributes"]["ApproximateReceiveCount"] == "2"
    assert "ApproximateFirstReceiveTimestamp" in message["Attributes"]


def test_queue_visibility_timeout_attribute_is_the_default(sqs):
    url = sqs.create_queue(QueueName=queue_name(),
                           Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="x")
    assert "Messages" in sqs.receive_message(QueueUrl=url)
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    assert "Messages" in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=3)


def test_change_message_visibility_to_zero_shows_message_at_once(sqs, queue):
    sqs.send_message(QueueUrl=queue, MessageBody="x")
    [message] = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=600)["Messages"]
    sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"],
                                  VisibilityTimeout=0)
    assert sqs.receive_message(QueueUrl=queue)["Messages"][0]["MessageId"] == message["MessageId"]


def test_change_message_visibility_extends_the_timeout(sqs, queue):
    sqs.send_message(QueueUrl=queue, MessageBody="x")
    [message] = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=1)["Messages"]
    sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"],
                                  VisibilityTimeout=30)
    time.sleep(1.2)
    assert "Messages" not in sqs.receive_message(QueueUrl=queue)


def test_change_message_visibility_batch_reports_each_entry(sqs, queue):
    sqs.send_message_batch(QueueUrl=queue, Entries=[
        {"Id": str(i), "MessageBody": f"m{i}"} for i in range(2)
    ])
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=2,
                                   VisibilityTimeout=600)["Messages"]
    result = sqs.change_message_visibility_batch(QueueUrl=queue, Entries=[
        {"Id": "a", "ReceiptHandle": messages[0]["ReceiptHandle"], "VisibilityTimeout": 0},
        {"Id": "b", "ReceiptHandle": messages[1]["ReceiptHandle"], "VisibilityTimeout": 0},
        {"Id": "c", "ReceiptHandle": "not-a-handle", "VisibilityTimeout": 0},
    ])
    assert sorted(e["Id"] for e in result["Successful"]) == ["a", "b"]
    assert result["Failed"] == [{"Id": "c", "SenderFault": True, "Code": "ReceiptHandleIsInvalid",
                                 "Message": 'The input receipt handle "not-a-handle" is not a '
                                            "valid receipt handle."}]
    assert len(sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]) == 2


# -- receipt handles ---------------------------------------------------------------------


def test_delete_with_invalid_receipt_handle_raises_receipt_handle_is_invalid(sqs, queue):
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        sqs.delete_message(QueueUrl=queue, ReceiptHandle="garbage")


def test_receipt_handle_of_another_queue_is_invalid(sqs, queue):
    other = sqs.create_queue(QueueName=queue_name())["QueueUrl"]
    sqs.send_message(QueueUrl=other, MessageBody="x")
    [message] = sqs.receive_message(QueueUrl=other)["Messages"]
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])


def test_delete_with_stale_receipt_handle_succeeds_but_keeps_the_message(sqs, queue):
    sqs.send_message(QueueUrl=queue, MessageBody="x")
    [old] = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=0)["Messages"]
    [new] = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=0)["Messages"]
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=old["ReceiptHandle"])
    assert sqs.receive_message(QueueUrl=queue)["Messages"][0]["MessageId"] == new["MessageId"]


def test_deleting_twice_with_the_same_handle_succeeds(sqs, queue):
    sqs.send_message(QueueUrl=queue, MessageBody="x")
    [message] = sqs.receive_message(QueueUrl=queue)["Messages"]
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])


def test_change_visibility_of_deleted_message_is_invalid_parameter_value(sqs, queue):
    sqs.send_message(QueueUrl=queue, MessageBody="x")
    [message] = sqs.receive_message(QueueUrl=queue)["Messages"]
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    with pytest.raises(ClientError) as excinfo:
        sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"],
                                      VisibilityTimeout=10)
    assert error_code(excinfo) == "InvalidParameterValue"


# -- batches -----------------------------------------------------------------------------


def test_send_message_batch_stores_good_entries_and_reports_bad_ones(sqs, queue):
    result = sqs.send_message_batch(QueueUrl=queue, Entries=[
        {"Id": "ok1", "MessageBody": "one"},
        {"Id": "late", "MessageBody": "two", "DelaySeconds": 901},
        {"Id": "ok2", "MessageBody": "three",
         "MessageAttributes": {"timestamp": {"DataType": "Number",
                                             "StringValue": "1493147359900"}}},
        {"Id": "bad_chars", "MessageBody": "\x00"},
    ])
    successful = {e["Id"]: e for e in result["Successful"]}
    assert set(successful) == {"ok1", "ok2"}
    assert successful["ok1"]["MD5OfMessageBody"] == hashlib.md5(b"one").hexdigest()
    assert successful["ok2"]["MD5OfMessageAttributes"] == "235c5c510d26fb653d073faed50ae77c"
    failed = {e["Id"]: e for e in result["Failed"]}
    assert set(failed) == {"late", "bad_chars"}
    assert failed["late"]["Code"] == "InvalidParameterValue"
    assert failed["late"]["SenderFault"] is True
    assert failed["bad_chars"]["Code"] == "InvalidMessageContents"
    bodies = {m["Body"] for m in sqs.receive_message(QueueUrl=queue,
                                                     MaxNumberOfMessages=10)["Messages"]}
    assert bodies == {"one", "three"}


def test_delete_message_batch_deletes_good_entries_and_reports_bad_ones(sqs, queue):
    sqs.send_message_batch(QueueUrl=queue, Entries=[
        {"Id": str(i), "MessageBody": f"m{i}"} for i in range(3)
    ])
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=3)["Messages"]
    result = sqs.delete_message_batch(QueueUrl=queue, Entries=[
        *({"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)),
        {"Id": "broken", "ReceiptHandle": "nope"},
    ])
    assert sorted(e["Id"] for e in result["Successful"]) == ["d0", "d1", "d2"]
    failed = [(e["Id"], e["Code"]) for e in result["Failed"]]
    assert failed == [("broken", "ReceiptHandleIsInvalid")]
    counts = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessagesNotVisible"] == "0"


@pytest.mark.parametrize("operation, fields", [
    ("send_message_batch", {"MessageBody": "x"}),
    ("delete_message_batch", {"ReceiptHandle": "x"}),
    ("change_message_visibility_batch", {"ReceiptHandle": "x", "VisibilityTimeout": 0}),
])
def test_batch_request_rules_raise_their_sqs_errors(server, queue, operation, fields):
    sqs = server.client("sqs", validate=False)
    method = getattr(sqs, operation)

    def entry(entry_id: str) -> dict:
        return {"Id": entry_id, **fields}

    with pytest.raises(sqs.exceptions.EmptyBatchRequest) as excinfo:
        method(QueueUrl=queue, Entries=[])
    assert error_code(excinfo) == "AWS.SimpleQueueService.EmptyBatchRequest"
    with pytest.raises(sqs.exceptions.TooManyEntriesInBatchRequest):
        method(QueueUrl=queue, Entries=[entry(str(i)) for i in range(11)])
    with pytest.raises(sqs.exceptions.BatchEntryIdsNotDistinct):
        method(QueueUrl=queue, Entries=[entry("same"), entry("same")])
    with pytest.raises(sqs.exceptions.InvalidBatchEntryId):
        method(QueueUrl=queue, Entries=[entry("no spaces")])


def test_send_message_batch_over_256_kib_in_total_raises_batch_request_too_long(sqs, queue):
    with pytest.raises(sqs.exceptions.BatchRequestTooLong):
        sqs.send_message_batch(QueueUrl=queue, Entries=[
            {"Id": str(i), "MessageBody": "x" * 100_000} for i in range(3)
        ])


# -- dead-letter queues and concurrency ---------------------------------------------------


def test_redrive_policy_moves_message_to_dead_letter_queue_after_max_receive_count(sqs):
    dlq = sqs.create_queue(QueueName=queue_name("dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(
        QueueUrl=dlq, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    source = sqs.create_queue(QueueName=queue_name("src"), Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}),
    })["QueueUrl"]
    policy = sqs.get_queue_attributes(QueueUrl=source, AttributeNames=["RedrivePolicy"])
    assert json.loads(policy["Attributes"]["RedrivePolicy"]) == {
        "deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}
    sent = sqs.send_message(QueueUrl=source, MessageBody="poison")
    for _ in range(2):
        assert "Messages" in sqs.receive_message(QueueUrl=source, VisibilityTimeout=0)
    assert "Messages" not in sqs.receive_message(QueueUrl=source)
    [moved] = sqs.receive_message(QueueUrl=dlq, MessageSystemAttributeNames=["All"])["Messages"]
    assert moved["MessageId"] == sent["MessageId"]
    assert moved["Body"] == "poison"
    assert moved["Attributes"]["DeadLetterQueueSourceArn"].endswith(source.rsplit("/", 1)[1])


def test_redrive_policy_to_missing_queue_is_invalid_attribute_value(sqs):
    policy = {"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:nowhere-1",
              "maxReceiveCount": 3}
    with pytest.raises(sqs.exceptions.InvalidAttributeValue):
        sqs.create_queue(QueueName=queue_name(), Attributes={"RedrivePolicy": json.dumps(policy)})


def test_concurrent_receivers_never_get_the_same_message(server, sqs, queue):
    for start in range(0, 40, 10):
        sqs.send_message_batch(QueueUrl=queue, Entries=[
            {"Id": str(i), "MessageBody": str(i)} for i in range(start, start + 10)
        ])
    got: list[str] = []
    lock = threading.Lock()

    def drain() -> None:
        client = server.client("sqs")
        while True:
            messages = client.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                              VisibilityTimeout=60).get("Messages", [])
            if not messages:
                return
            with lock:
                got.extend(m["Body"] for m in messages)

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got, key=int) == [str(i) for i in range(40)]


# -- in-process API ------------------------------------------------------------------------


def test_in_process_send_message_by_arn_reaches_receivers(tmp_path: Path):
    platform = Platform(Settings(data_dir=tmp_path / "data"))
    try:
        queues = platform.queues
        queue = queues.create_queue("destination", {})
        message_id = queues.send_message(queue.arn, '{"event": 1}', {
            "origin": {"DataType": "String", "StringValue": "async-invoke"}})
        [received] = asyncio.run(queues.receive("destination"))
        assert received.row.message_id == message_id
        assert received.row.body == '{"event": 1}'
        assert received.row.message_attributes["origin"]["StringValue"] == "async-invoke"
        with pytest.raises(QueueDoesNotExist):
            queues.send_message("arn:aws:sqs:us-east-1:000000000000:absent", "x")
    finally:
        asyncio.run(platform.stop())


def test_two_servers_sharing_one_database_never_claim_the_same_message(tmp_path: Path):
    # Two platforms on one SQLite file stand for two server processes: each claim is
    # a conditional update, so a message goes to exactly one of them.
    settings = Settings(data_dir=tmp_path / "data")
    platforms = [Platform(settings), Platform(settings)]
    try:
        first = platforms[0].queues
        first.create_queue("shared", {})
        for start in range(0, 200, 10):
            first.send_batch("shared", [(str(i), OutgoingMessage(str(i)))
                                        for i in range(start, start + 10)])
        got: list[list[str]] = [[], []]
        barrier = threading.Barrier(2)

        def drain(index: int) -> None:
            async def run() -> None:
                barrier.wait()
                while True:
                    messages = await platforms[index].queues.receive("shared", 2, 60)
                    if not messages:
                        return
                    got[index].extend(m.row.body for m in messages)

            asyncio.run(run())

        threads = [threading.Thread(target=drain, args=(i,)) for i in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(got[0] + got[1], key=int) == [str(i) for i in range(200)]
        assert got[0] and got[1]
    finally:
        for platform in platforms:
            asyncio.run(platform.stop())


# -- durability, signatures and the CLI ----------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # A one-second minimum retention, so expiry can be seen in a test.
    srv = Server(tmp_path_factory.mktemp("sqs-durable") / "data",
                 env={"LAMINA_ACCESS_KEYS": "AKIDSQS:sqs-secret", "LAMINA_MIN_RETENTION_S": "1"})
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.slow
def test_sent_and_in_flight_messages_survive_a_sigkill_restart(keyed_server: Server):
    sqs = keyed_server.client("sqs", key="AKIDSQS", secret="sqs-secret")
    # Long enough to outlast a restart on a busy machine; the test then waits for
    # the in-flight message to come back rather than sleeping a fixed time.
    url = sqs.create_queue(QueueName="durable", Attributes={"VisibilityTimeout": "8"})["QueueUrl"]
    sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "MessageBody": f"m{i}"} for i in range(3)
    ])
    [in_flight] = sqs.receive_message(QueueUrl=url)["Messages"]
    keyed_server.stop(kill=True)
    keyed_server.start()
    sqs = keyed_server.client("sqs", key="AKIDSQS", secret="sqs-secret")
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["VisibilityTimeout"] == "8"
    assert attributes["ApproximateNumberOfMessages"] == "2"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"
    counts: dict[str, str] = {}
    deadline = time.monotonic() + 30
    while len(counts) < 3 and time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2,
                                       VisibilityTimeout=60,
                                       AttributeNames=["ApproximateReceiveCount"]).get("Messages", [])
        counts.update({m["Body"]: m["Attributes"]["ApproximateReceiveCount"] for m in messages})
    assert counts == {body: "2" if body == in_flight["Body"] else "1"
                      for body in ("m0", "m1", "m2")}


def test_sqs_requests_with_a_wrong_secret_are_rejected(keyed_server: Server):
    sqs = keyed_server.client("sqs", key="AKIDSQS", secret="wrong")
    with pytest.raises(ClientError) as excinfo:
        sqs.list_queues()
    assert error_code(excinfo) == "InvalidSignatureException"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_messages_older_than_the_retention_period_are_gone(keyed_server: Server):
    sqs = keyed_server.client("sqs", key="AKIDSQS", secret="sqs-secret")
    url = sqs.create_queue(QueueName=queue_name("brief"),
                           Attributes={"MessageRetentionPeriod": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="short-lived")
    time.sleep(1.1)
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessages"] == "0"
    assert "Messages" not in sqs.receive_message(QueueUrl=url)


def test_aws_cli_sends_and_receives_a_message(server: Server, sqs, queue):
    aws = Path(sys.executable).parent / "aws"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    common = ["--endpoint-url", server.endpoint, "--region", "us-east-1", "--output", "json"]

    def run(*args: str) -> dict:
        done = subprocess.run([str(aws), "sqs", *args, *common], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if done.stdout.strip() else {}

    sent = run("send-message", "--queue-url", queue, "--message-body", "from the cli",
               "--message-attributes", '{"k": {"DataType": "String", "StringValue": "v"}}')
    assert sent["MD5OfMessageBody"] == hashlib.md5(b"from the cli").hexdigest()
    received = run("receive-message", "--queue-url", queue, "--message-attribute-names", "All",
                   "--wait-time-seconds", "1")
    [message] = received["Messages"]
    assert message["MessageId"] == sent["MessageId"]
    assert message["Body"] == "from the cli"
    assert message["MessageAttributes"] == {"k": {"DataType": "String", "StringValue": "v"}}
    run("delete-message", "--queue-url", queue, "--receipt-handle", message["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=queue)
