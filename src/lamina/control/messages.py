"""SQS messages: what a message may contain, the digests SDKs check, receipt handles.

The rules and wording follow SQS; `control.queues` applies them when sending and
receiving.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from lamina.errors import (
    InvalidMessageContents,
    InvalidParameterValueException,
    MissingRequiredParameterException,
    ReceiptHandleIsInvalid,
)
from lamina.store.queues import QueueMessage

# XML 1.0's characters: SQS rejects anything else in a body.
_INVALID_BODY_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,256}$")
_DATA_TYPE = re.compile(r"^(String|Number|Binary)(\..{1,255})?$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def now_ms() -> int:
    return int(time.time() * 1000)


def md5_of_attributes(attributes: Mapping[str, Mapping[str, Any]]) -> str:
    """MD5OfMessageAttributes exactly as SQS computes it, and as SDKs verify it.

    Attributes sorted by name; each contributes its name and data type, each as a
    4-byte big-endian length and UTF-8 bytes, then a transport byte (1 for
    String/Number, 2 for Binary) and the value, length-prefixed the same way.
    """
    digest = hashlib.md5()

    def put(data: bytes) -> None:
        digest.update(struct.pack(">I", len(data)))
        digest.update(data)

    for name in sorted(attributes):
        value = attributes[name]
        put(name.encode())
        put(value["DataType"].encode())
        if "BinaryValue" in value:
            digest.update(b"\x02")
            put(_binary(value["BinaryValue"]))
        else:
            digest.update(b"\x01")
            put(value["StringValue"].encode())
    return digest.hexdigest()


def _binary(value: bytes | str) -> bytes:
    # Stored attributes keep binary values as base64 text.
    return value if isinstance(value, bytes) else base64.b64decode(value)


def md5_of_body(body: str) -> str:
    return hashlib.md5(body.encode()).hexdigest()


def invalid_value(parameter: str, value: object, reason: str) -> InvalidParameterValueException:
    return InvalidParameterValueException(
        f"Value {value} for parameter {parameter} is invalid. Reason: {reason}"
    )


@dataclass(frozen=True)
class OutgoingMessage:
    """A message as a sender gives it: body, optional delay and attributes."""

    body: str
    delay_seconds: int | None = None
    # {"name": {"DataType": "String", "StringValue": "..."}} (BinaryValue as bytes).
    message_attributes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # MessageSystemAttributes; SQS knows one, AWSTraceHeader.
    system_attributes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class SentMessage:
    message_id: str
    md5_of_body: str
    md5_of_message_attributes: str | None
    md5_of_system_attributes: str | None

    def to_api(self) -> dict[str, Any]:
        return {
            "MessageId": self.message_id,
            "MD5OfMessageBody": self.md5_of_body,
            "MD5OfMessageAttributes": self.md5_of_message_attributes,
            "MD5OfMessageSystemAttributes": self.md5_of_system_attributes,
        }


@dataclass(frozen=True)
class ReceivedMessage:
    row: QueueMessage
    receipt_handle: str

    def to_api(self, system_names: Iterable[str], attribute_names: Iterable[str]) -> dict[str, Any]:
        """The Message shape, with the system and message attributes the caller asked for."""
        row = self.row
        message: dict[str, Any] = {
            "MessageId": row.message_id,
            "ReceiptHandle": self.receipt_handle,
            "MD5OfBody": md5_of_body(row.body),
            "Body": row.body,
        }
        available = {
            "SenderId": row.sender_id,
            "SentTimestamp": str(row.sent_at),
            "ApproximateReceiveCount": str(row.receive_count),
            "ApproximateFirstReceiveTimestamp": str(row.first_received_at),
            "AWSTraceHeader": row.trace_header,
            "DeadLetterQueueSourceArn": row.dead_letter_source_arn,
        }
        wanted = set(system_names)
        system = {
            name: value for name, value in available.items()
            if value is not None and ("All" in wanted or name in wanted)
        }
        if system:
            message["Attributes"] = system
        selected = _select_attributes(row.message_attributes, list(attribute_names))
        if selected:
            # The digest covers the attributes returned, which is what SDKs recompute.
            message["MD5OfMessageAttributes"] = md5_of_attributes(selected)
            message["MessageAttributes"] = {
                name: (
                    {"DataType": value["DataType"], "BinaryValue": _binary(value["BinaryValue"])}
                    if "BinaryValue" in value else dict(value)
                )
                for name, value in selected.items()
            }
        return message


def _select_attributes(attributes: dict[str, dict[str, str]],
                       names: list[str]) -> dict[str, dict[str, str]]:
    if "All" in names or ".*" in names:
        return attributes
    prefixes = tuple(name[:-1] for name in names if name.endswith(".*"))
    exact = set(names)
    return {
        name: value for name, value in attributes.items()
        if name in exact or (prefixes and name.startswith(prefixes))
    }


def check_body(body: str) -> None:
    if not body:
        raise MissingRequiredParameterException(
            "The request must contain the parameter MessageBody."
        )
    if _INVALID_BODY_CHARS.search(body):
        raise InvalidMessageContents(
            "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | "
            "#x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF"
        )


def checked_message_attributes(
    attributes: Mapping[str, Mapping[str, Any]], limit: int
) -> tuple[dict[str, dict[str, str]], int]:
    """Attributes in stored form (binary as base64 text) and their size in bytes."""
    if len(attributes) > limit:
        raise InvalidParameterValueException(
            f"Number of message attributes [{len(attributes)}] exceeds the allowed "
            f"maximum [{limit}]."
        )
    stored: dict[str, dict[str, str]] = {}
    size = 0
    for name, value in attributes.items():
        lowered = name.lower()
        if (not _ATTRIBUTE_NAME.match(name) or ".." in name or name.startswith(".")
                or name.endswith(".") or lowered.startswith(("aws.", "amazon."))):
            raise InvalidParameterValueException(
                f"Message (user) attribute name '{name}' is invalid. The attribute name can "
                "contain A-Z, a-z, 0-9, underscore (_), hyphen (-), and period (.) characters."
            )
        data_type = value.get("DataType") or ""
        found = _DATA_TYPE.match(data_type)
        if found is None:
            raise InvalidParameterValueException(
                f"The type of message (user) attribute '{name}' is invalid. You must use "
                "only the following supported type prefixes: Binary, Number, String."
            )
        kind = found.group(1)
        member = "BinaryValue" if kind == "Binary" else "StringValue"
        raw = value.get(member)
        if not raw:
            raise InvalidParameterValueException(
                f"Message (user) attribute '{name}' must contain a non-empty value of "
                f"message attribute type '{kind}'."
            )
        if kind == "Number" and not _NUMBER.match(raw):
            raise InvalidParameterValueException(
                f"Can't cast the value of message (user) attribute '{name}' to a number."
            )
        if kind == "Binary":
            data = raw if isinstance(raw, bytes) else raw.encode()
            stored[name] = {"DataType": data_type,
                            "BinaryValue": base64.b64encode(data).decode()}
            size += len(data)
        else:
            stored[name] = {"DataType": data_type, "StringValue": raw}
            size += len(raw.encode())
        size += len(name.encode()) + len(data_type.encode())
    return stored, size


def checked_system_attributes(
    attributes: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, str]]:
    for name, value in attributes.items():
        if name != "AWSTraceHeader":
            raise InvalidParameterValueException(
                f"Message system attribute name '{name}' is invalid."
            )
        if value.get("DataType") != "String" or not value.get("StringValue"):
            raise InvalidParameterValueException(
                "Message system attribute 'AWSTraceHeader' must be of type String with a "
                "non-empty StringValue."
            )
    return {name: {"DataType": "String", "StringValue": value["StringValue"]}
            for name, value in attributes.items()}


def new_receipt_handle(queue_name: str, message_id: str, token: str) -> str:
    return base64.b64encode(f"{queue_name} {message_id} {token}".encode()).decode()


def parse_receipt_handle(queue_name: str, handle: str) -> tuple[str, str]:
    """(message id, receive token); the handle must be one this queue gave out."""
    try:
        parts = base64.b64decode(handle, validate=True).decode().split(" ")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        parts = []
    if len(parts) != 3 or parts[0] != queue_name:
        raise ReceiptHandleIsInvalid(
            f'The input receipt handle "{handle}" is not a valid receipt handle.'
        )
    return parts[1], parts[2]
