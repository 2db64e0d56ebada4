"""SQS: queues and messages, served on the Lambda endpoint through the JSON protocol.

Queue URLs are `{endpoint}/{account}/{queue name}`, built from the URL the client
used, so whatever endpoint boto3 or the CLI was given comes back in QueueUrl.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from lamina.api.operations import Call, operation
from lamina.control.messages import OutgoingMessage
from lamina.control.queues import BatchResult
from lamina.errors import QueueDoesNotExist


def _queue_url(call: Call, name: str) -> str:
    base = str(call.request.base_url).rstrip("/")
    return f"{base}/{call.platform.region.account_id}/{name}"


def _queue_name(call: Call) -> str:
    path = urlsplit(call.params["QueueUrl"]).path.strip("/").split("/")
    if len(path) != 2 or path[0] != call.platform.region.account_id:
        raise QueueDoesNotExist("The specified queue does not exist.")
    return path[1]


def _outgoing(entry: dict[str, Any]) -> OutgoingMessage:
    return OutgoingMessage(
        body=entry["MessageBody"],
        delay_seconds=entry.get("DelaySeconds"),
        message_attributes=entry.get("MessageAttributes") or {},
        system_attributes=entry.get("MessageSystemAttributes") or {},
    )


def _batch_output(result: BatchResult) -> dict[str, Any]:
    return {
        "Successful": [
            {"Id": entry_id, **(value.to_api() if value is not None else {})}
            for entry_id, value in result.successful
        ],
        "Failed": [failure.to_api() for failure in result.failed],
    }


@operation("CreateQueue", service="sqs")
async def create_queue(call: Call) -> dict[str, Any]:
    queue = call.platform.queues.create_queue(
        call.params["QueueName"], call.params.get("Attributes") or {}
    )
    return {"QueueUrl": _queue_url(call, queue.name)}


@operation("GetQueueUrl", service="sqs")
async def get_queue_url(call: Call) -> dict[str, Any]:
    owner = call.params.get("QueueOwnerAWSAccountId")
    if owner is not None and owner != call.platform.region.account_id:
        raise QueueDoesNotExist("The specified queue does not exist.")
    queue = call.platform.queues.get_queue(call.params["QueueName"])
    return {"QueueUrl": _queue_url(call, queue.name)}


@operation("ListQueues", service="sqs")
async def list_queues(call: Call) -> dict[str, Any]:
    p = call.params
    listing = call.platform.queues.list_queues(
        p.get("QueueNamePrefix"), p.get("MaxResults"), p.get("NextToken")
    )
    # Like SQS, no QueueUrls member at all when nothing matches.
    return {
        "QueueUrls": [_queue_url(call, name) for name in listing.names] or None,
        "NextToken": listing.next_token,
    }


@operation("DeleteQueue", service="sqs")
async def delete_queue(call: Call) -> dict[str, Any]:
    call.platform.queues.delete_queue(_queue_name(call))
    return {}


@operation("PurgeQueue", service="sqs")
async def purge_queue(call: Call) -> dict[str, Any]:
    call.platform.queues.purge_queue(_queue_name(call))
    return {}


@operation("GetQueueAttributes", service="sqs")
async def get_queue_attributes(call: Call) -> dict[str, Any]:
    attributes = call.platform.queues.get_attributes(
        _queue_name(call), call.params.get("AttributeNames") or []
    )
    return {"Attributes": attributes or None}


@operation("SetQueueAttributes", service="sqs")
async def set_queue_attributes(call: Call) -> dict[str, Any]:
    call.platform.queues.set_attributes(_queue_name(call), call.params["Attributes"])
    return {}


@operation("SendMessage", service="sqs")
async def send_message(call: Call) -> dict[str, Any]:
    sent = call.platform.queues.send(_queue_name(call), _outgoing(call.params))
    return sent.to_api()


@operation("SendMessageBatch", service="sqs")
async def send_message_batch(call: Call) -> dict[str, Any]:
    entries = [(entry["Id"], _outgoing(entry)) for entry in call.params["Entries"]]
    return _batch_output(call.platform.queues.send_batch(_queue_name(call), entries))


@operation("ReceiveMessage", service="sqs")
async def receive_message(call: Call) -> dict[str, Any]:
    p = call.params
    messages = await call.platform.queues.receive(
        _queue_name(call), p.get("MaxNumberOfMessages"), p.get("VisibilityTimeout"),
        p.get("WaitTimeSeconds"),
    )
    # AttributeNames is the older spelling of MessageSystemAttributeNames; SQS takes both.
    system = [*(p.get("AttributeNames") or []), *(p.get("MessageSystemAttributeNames") or [])]
    attributes = p.get("MessageAttributeNames") or []
    return {"Messages": [m.to_api(system, attributes) for m in messages] or None}


@operation("DeleteMessage", service="sqs")
async def delete_message(call: Call) -> dict[str, Any]:
    call.platform.queues.delete_message(_queue_name(call), call.params["ReceiptHandle"])
    return {}


@operation("DeleteMessageBatch", service="sqs")
async def delete_message_batch(call: Call) -> dict[str, Any]:
    entries = [(entry["Id"], entry["ReceiptHandle"]) for entry in call.params["Entries"]]
    return _batch_output(call.platform.queues.delete_batch(_queue_name(call), entries))


@operation("ChangeMessageVisibility", service="sqs")
async def change_message_visibility(call: Call) -> dict[str, Any]:
    p = call.params
    call.platform.queues.change_visibility(
        _queue_name(call), p["ReceiptHandle"], p["VisibilityTimeout"]
    )
    return {}


@operation("ChangeMessageVisibilityBatch", service="sqs")
async def change_message_visibility_batch(call: Call) -> dict[str, Any]:
    entries = [
        (entry["Id"], (entry["ReceiptHandle"], entry.get("VisibilityTimeout") or 0))
        for entry in call.params["Entries"]
    ]
    return _batch_output(call.platform.queues.change_visibility_batch(_queue_name(call), entries))
