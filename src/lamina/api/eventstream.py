"""AWS's event stream encoding (`application/vnd.amazon.eventstream`), the writing side.

botocore has only the decoder (`botocore.eventstream`) and awscrt encodes messages
only inside its RPC client, so the encoder is here: each message is a prelude
(total length, headers length, CRC32 of those 8 bytes), headers (name, type 7 =
string, value), the payload, and a CRC32 of all that precedes it. Tests read it
back with botocore's own parser, which checks both CRCs.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING = 7


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (struct.pack(">B", len(raw_name)) + raw_name + struct.pack(">BH", _STRING, len(raw_value))
            + raw_value)


def message(headers: dict[str, str], payload: bytes) -> bytes:
    encoded = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return body + struct.pack(">I", zlib.crc32(body))


def event(event_type: str, payload: bytes, content_type: str) -> bytes:
    """One event of an operation's event stream, as AWS's services send them."""
    return message({":event-type": event_type, ":content-type": content_type,
                    ":message-type": "event"}, payload)


def json_event(event_type: str, members: dict[str, Any]) -> bytes:
    """An event whose members travel as a JSON document (its unset members left out)."""
    document = {k: v for k, v in members.items() if v is not None}
    return event(event_type, json.dumps(document).encode(), "application/json")
