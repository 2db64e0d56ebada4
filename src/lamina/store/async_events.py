"""Rows of accepted asynchronous invocations, and of event invoke configs.

`add` commits before it returns, so an event the API answered 202 for survives a
crash. Claiming is a conditional update (`... WHERE visible_at <= now`), so two
workers, in this process or another sharing the database, never hold one event at
once; every later write names the claim's lease token, so a worker whose lease ran
out (and whose event someone else claimed) changes nothing.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from lamina.store.schema import async_events, event_invoke_configs

_e = async_events.c
_c = event_invoke_configs.c


@dataclass(frozen=True)
class AsyncEvent:
    request_id: str
    function_name: str
    qualifier: str | None
    payload: str
    client_context: str | None
    enqueued_at: int
    visible_at: int
    lease_token: str | None = None
    deliveries: int = 0
    function_errors: int = 0
    throttles: int = 0
    last_error: dict[str, Any] | None = None

    @property
    def unrecorded_claims(self) -> int:
        """Earlier claims that ended with no outcome written (a crash, a lost lease):
        each of them may have run the function."""
        return max(self.deliveries - 1 - self.function_errors - self.throttles, 0)


def _event(row: Any) -> AsyncEvent:
    return AsyncEvent(
        request_id=row.request_id, function_name=row.function_name, qualifier=row.qualifier,
        payload=row.payload, client_context=row.client_context, enqueued_at=row.enqueued_at,
        visible_at=row.visible_at, lease_token=row.lease_token, deliveries=row.deliveries,
        function_errors=row.function_errors, throttles=row.throttles,
        last_error=json.loads(row.last_error) if row.last_error else None,
    )


class AsyncEventStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, event: AsyncEvent) -> None:
        with self._engine.begin() as conn:
            conn.execute(insert(async_events).values(
                request_id=event.request_id, function_name=event.function_name,
                qualifier=event.qualifier, payload=event.payload,
                client_context=event.client_context, enqueued_at=event.enqueued_at,
                visible_at=event.visible_at, deliveries=0, function_errors=0, throttles=0,
            ))

    def ready_functions(self, now: int) -> dict[str, int]:
        """The functions with events due now, and how many each has."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(_e.function_name, func.count())
                .where(_e.visible_at <= now).group_by(_e.function_name)
            ).all()
        return {name: count for name, count in rows}

    def next_visible_at(self, now: int) -> int | None:
        with self._engine.connect() as conn:
            return conn.execute(select(func.min(_e.visible_at)).where(_e.visible_at > now)).scalar()

    def claim(self, function_name: str, now: int, lease_until: int, token: str,
              limit: int = 1) -> list[AsyncEvent]:
        """Take up to `limit` due events of the function, oldest due first."""
        with self._engine.begin() as conn:
            rows = conn.execute(
                select(async_events)
                .where(_e.function_name == function_name, _e.visible_at <= now)
                .order_by(_e.visible_at).limit(limit)
                # Front ends sharing PostgreSQL pass over rows another is taking.
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return []
            # The condition repeats what the select saw: an event another worker
            # took in between is neither updated nor returned.
            taken = set(conn.execute(
                update(async_events)
                .where(_e.request_id.in_([row.request_id for row in rows]), _e.visible_at <= now)
                .values(visible_at=lease_until, lease_token=token, deliveries=_e.deliveries + 1)
                .returning(_e.request_id)
            ).scalars())
        return [
            dataclasses.replace(_event(row), visible_at=lease_until, lease_token=token,
                                deliveries=row.deliveries + 1)
            for row in rows if row.request_id in taken
        ]

    def renew(self, tokens: list[str], lease_until: int) -> None:
        if not tokens:
            return
        with self._engine.begin() as conn:
            conn.execute(update(async_events).where(_e.lease_token.in_(tokens))
                         .values(visible_at=lease_until))

    def retry_later(self, request_id: str, token: str, visible_at: int, throttled: bool,
                    last_error: dict[str, Any]) -> bool:
        """Record a failed attempt and when to try again; False if the lease was lost."""
        counter = _e.throttles if throttled else _e.function_errors
        with self._engine.begin() as conn:
            result = conn.execute(
                update(async_events)
                .where(_e.request_id == request_id, _e.lease_token == token)
                .values({counter.name: counter + 1, "visible_at": visible_at,
                         "lease_token": None, "last_error": json.dumps(last_error)})
            )
        return result.rowcount == 1

    def give_back(self, request_id: str, token: str, visible_at: int) -> None:
        """Undo the claim of an event that was not attempted: due at `visible_at`."""
        with self._engine.begin() as conn:
            conn.execute(update(async_events).where(
                _e.request_id == request_id, _e.lease_token == token,
            ).values(visible_at=visible_at, lease_token=None, deliveries=_e.deliveries - 1))

    def release(self, tokens: list[str], now: int) -> None:
        """Give claims back unfinished (a clean stop): due at once. They still count
        as claims that may have run: a stop cancels invocations midway."""
        if not tokens:
            return
        with self._engine.begin() as conn:
            conn.execute(update(async_events).where(_e.lease_token.in_(tokens)).values(
                visible_at=now, lease_token=None,
            ))

    def finish(self, request_id: str, token: str) -> bool:
        with self._engine.begin() as conn:
            result = conn.execute(delete(async_events).where(
                _e.request_id == request_id, _e.lease_token == token,
            ))
        return result.rowcount == 1

    def pending(self) -> int:
        with self._engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(async_events)).scalar_one()


class EventInvokeConfigStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def get(self, function_name: str, qualifier: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(_c.config).where(
                _c.function_name == function_name, _c.qualifier == qualifier,
            )).first()
        return json.loads(row.config) if row else None

    def put(self, function_name: str, qualifier: str, config: dict[str, Any]) -> bool:
        """Insert or replace; False if the function is gone (the foreign key)."""
        values = {"config": json.dumps(config)}
        try:
            with self._engine.begin() as conn:
                result = conn.execute(update(event_invoke_configs).where(
                    _c.function_name == function_name, _c.qualifier == qualifier,
                ).values(values))
                if result.rowcount == 0:
                    conn.execute(insert(event_invoke_configs).values(
                        function_name=function_name, qualifier=qualifier, **values,
                    ))
        except IntegrityError:
            return False
        return True

    def delete(self, function_name: str, qualifier: str) -> bool:
        with self._engine.begin() as conn:
            result = conn.execute(delete(event_invoke_configs).where(
                _c.function_name == function_name, _c.qualifier == qualifier,
            ))
        return result.rowcount == 1

    def list(self, function_name: str) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(_c.config).where(_c.function_name == function_name)
                                .order_by(_c.qualifier)).all()
        return [json.loads(row.config) for row in rows]
