"""Rows of SQS queues and their messages.

Every write commits before it returns, so a message the API acknowledged survives a
crash of the server. Receiving claims each message with a conditional update
(`... WHERE visible_at <= now`), so two receivers, in this process or another one
sharing the database, never both get a message within its visibility timeout.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from lamina.store.schema import queue_messages, queues

_m = queue_messages.c


@dataclass(frozen=True)
class QueueRow:
    name: str
    attributes: dict[str, str]
    created_at: int
    modified_at: int


@dataclass(frozen=True)
class QueueMessage:
    message_id: str
    body: str
    # {"name": {"DataType": ..., "StringValue": ...}}, BinaryValue as base64 text.
    message_attributes: dict[str, dict[str, str]]
    trace_header: str | None
    sender_id: str
    sent_at: int
    visible_at: int
    # What receiving has done to it so far.
    receive_count: int = 0
    first_received_at: int | None = None
    receipt_token: str | None = None
    dead_letter_source_arn: str | None = None


@dataclass(frozen=True)
class Redrive:
    """Where messages received too often go: the dead-letter queue's name and the count."""

    target_queue: str
    max_receive_count: int
    source_arn: str


@dataclass(frozen=True)
class MessageCounts:
    visible: int
    in_flight: int
    delayed: int


class HandleMatch(Enum):
    CURRENT = "current"
    STALE = "stale"  # the message was received again since; this handle is outdated
    GONE = "gone"


def _message(row: Any) -> QueueMessage:
    return QueueMessage(
        message_id=row.message_id,
        body=row.body,
        message_attributes=json.loads(row.message_attributes),
        trace_header=row.trace_header,
        sender_id=row.sender_id,
        sent_at=row.sent_at,
        visible_at=row.visible_at,
        receive_count=row.receive_count,
        first_received_at=row.first_received_at,
        receipt_token=row.receipt_token,
        dead_letter_source_arn=row.dead_letter_source_arn,
    )


class QueueStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- queues ------------------------------------------------------------------

    def create_queue(self, name: str, attributes: dict[str, str], now_s: int) -> bool:
        """Insert a queue; False if the name is taken."""
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(queues).values(
                        name=name, attributes=json.dumps(attributes),
                        created_at=now_s, modified_at=now_s,
                    )
                )
        except IntegrityError:
            return False
        return True

    def get_queue(self, name: str) -> QueueRow | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(queues).where(queues.c.name == name)).first()
        if row is None:
            return None
        return QueueRow(row.name, json.loads(row.attributes), row.created_at, row.modified_at)

    def list_queue_names(self, prefix: str, after: str | None, limit: int) -> list[str]:
        query = select(queues.c.name).order_by(queues.c.name).limit(limit)
        if prefix:
            # A range rather than LIKE, so `_` and `%` in a prefix mean themselves.
            query = query.where(queues.c.name >= prefix, queues.c.name < prefix + "\U0010ffff")
        if after is not None:
            query = query.where(queues.c.name > after)
        with self._engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def set_attributes(self, name: str, attributes: dict[str, str], now_s: int) -> bool:
        with self._engine.begin() as conn:
            result = conn.execute(
                update(queues).where(queues.c.name == name)
                .values(attributes=json.dumps(attributes), modified_at=now_s)
            )
        return result.rowcount == 1

    def delete_queue(self, name: str) -> bool:
        with self._engine.begin() as conn:
            conn.execute(delete(queue_messages).where(_m.queue_name == name))
            result = conn.execute(delete(queues).where(queues.c.name == name))
        return result.rowcount == 1

    # -- messages ----------------------------------------------------------------

    def add_messages(self, queue_name: str, messages: list[QueueMessage]) -> None:
        """Insert messages in one transaction: a batch is stored whole or not at all."""
        rows = [
            {
                "queue_name": queue_name,
                "message_id": m.message_id,
                "body": m.body,
                "message_attributes": json.dumps(m.message_attributes),
                "trace_header": m.trace_header,
                "sender_id": m.sender_id,
                "sent_at": m.sent_at,
                "visible_at": m.visible_at,
                "receive_count": 0,
            }
            for m in messages
        ]
        with self._engine.begin() as conn:
            conn.execute(insert(queue_messages), rows)

    def purge(self, queue_name: str) -> int:
        with self._engine.begin() as conn:
            return conn.execute(delete(queue_messages).where(_m.queue_name == queue_name)).rowcount

    def delete_expired(self, queue_name: str, sent_before: int) -> int:
        with self._engine.begin() as conn:
            return conn.execute(
                delete(queue_messages).where(
                    _m.queue_name == queue_name, _m.sent_at < sent_before
                )
            ).rowcount

    def claim(self, queue_name: str, now: int, limit: int, invisible_until: int,
              sent_after: int, token: str, redrive: Redrive | None) -> list[QueueMessage]:
        """Take up to `limit` visible messages, hiding each until `invisible_until`.

        Messages already received `max_receive_count` times move to the dead-letter
        queue instead, as SQS does on the receive that would exceed the count.
        """
        claimed: list[QueueMessage] = []
        with self._engine.begin() as conn:
            while len(claimed) < limit:
                rows = conn.execute(
                    select(queue_messages)
                    .where(_m.queue_name == queue_name, _m.visible_at <= now,
                           _m.sent_at >= sent_after)
                    .order_by(_m.visible_at, _m.seq)
                    .limit(limit - len(claimed))
                    # Receivers on other front ends pass over rows one is taking.
                    .with_for_update(skip_locked=True)
                ).all()
                if not rows:
                    break
                fresh = []
                for row in rows:
                    if redrive is not None and row.receive_count >= redrive.max_receive_count:
                        conn.execute(
                            update(queue_messages).where(
                                _m.seq == row.seq, _m.queue_name == queue_name,
                                _m.visible_at <= now,
                            ).values(
                                queue_name=redrive.target_queue, visible_at=now,
                                receive_count=0, first_received_at=None, receipt_token=None,
                                dead_letter_source_arn=redrive.source_arn,
                            )
                        )
                    else:
                        fresh.append(row)
                if not fresh:
                    continue
                # The conditions repeat what the select saw: a message another
                # receiver took (or moved) in between is not updated, nor returned.
                taken = set(conn.execute(
                    update(queue_messages)
                    .where(_m.seq.in_([row.seq for row in fresh]),
                           _m.queue_name == queue_name, _m.visible_at <= now)
                    .values(
                        visible_at=invisible_until,
                        receive_count=_m.receive_count + 1,
                        first_received_at=func.coalesce(_m.first_received_at, now),
                        receipt_token=token,
                    )
                    .returning(_m.seq)
                ).scalars())
                claimed += [
                    dataclasses.replace(
                        _message(row), visible_at=invisible_until,
                        receive_count=row.receive_count + 1,
                        first_received_at=row.first_received_at or now, receipt_token=token,
                    )
                    for row in fresh if row.seq in taken
                ]
        return claimed

    def match_handle(self, queue_name: str, message_id: str, token: str) -> HandleMatch:
        with self._engine.connect() as conn:
            current = conn.execute(
                select(_m.receipt_token).where(
                    _m.queue_name == queue_name, _m.message_id == message_id
                )
            ).first()
        if current is None:
            return HandleMatch.GONE
        return HandleMatch.CURRENT if current.receipt_token == token else HandleMatch.STALE

    def delete_messages(self, queue_name: str, handles: list[tuple[str, str]]) -> None:
        """Delete each (message id, token) whose token is from the latest receive."""
        with self._engine.begin() as conn:
            for message_id, token in handles:
                conn.execute(
                    delete(queue_messages).where(
                        _m.queue_name == queue_name, _m.message_id == message_id,
                        _m.receipt_token == token,
                    )
                )

    def set_visible_at(self, queue_name: str, message_id: str, token: str,
                       visible_at: int) -> HandleMatch:
        with self._engine.begin() as conn:
            result = conn.execute(
                update(queue_messages).where(
                    _m.queue_name == queue_name, _m.message_id == message_id,
                    _m.receipt_token == token,
                ).values(visible_at=visible_at)
            )
        if result.rowcount == 1:
            return HandleMatch.CURRENT
        return self.match_handle(queue_name, message_id, token)

    def counts(self, queue_name: str, now: int, sent_after: int) -> MessageCounts:
        hidden = _m.visible_at > now
        with self._engine.connect() as conn:
            row = conn.execute(
                select(
                    func.count().filter(~hidden),
                    func.count().filter(hidden & (_m.receive_count > 0)),
                    func.count().filter(hidden & (_m.receive_count == 0)),
                ).where(_m.queue_name == queue_name, _m.sent_at >= sent_after)
            ).one()
        return MessageCounts(visible=row[0], in_flight=row[1], delayed=row[2])

    def next_visible_at(self, queue_name: str, now: int) -> int | None:
        """When the next hidden message becomes visible, so long polls sleep till then."""
        with self._engine.connect() as conn:
            return conn.execute(
                select(func.min(_m.visible_at)).where(
                    _m.queue_name == queue_name, _m.visible_at > now
                )
            ).scalar()
