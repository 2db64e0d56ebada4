"""Saved test events, one row per (function, event name)."""

from __future__ import annotations

import time

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lamina.store.schema import test_events

_c = test_events.c


class TestEventStore:
    # Not a test class, whatever its name says (pytest collects Test* classes).
    __test__ = False

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def names(self, function_name: str) -> list[str]:
        with self._engine.connect() as conn:
            return list(conn.execute(select(_c.name).where(_c.function_name == function_name)
                                     .order_by(_c.name)).scalars())

    def get(self, function_name: str, name: str) -> str | None:
        with self._engine.connect() as conn:
            return conn.execute(select(_c.event).where(
                _c.function_name == function_name, _c.name == name)).scalar()

    def put(self, function_name: str, name: str, event: str) -> None:
        """Save the event under its name, replacing one saved before."""
        insert = pg_insert if self._engine.dialect.name == "postgresql" else sqlite_insert
        values = {"function_name": function_name, "name": name, "event": event,
                  "updated_at": int(time.time() * 1000)}
        statement = insert(test_events).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=[_c.function_name, _c.name],
            set_={"event": values["event"], "updated_at": values["updated_at"]})
        with self._engine.begin() as conn:
            conn.execute(statement)

    def delete(self, function_name: str, name: str | None = None) -> int:
        """Delete one event, or (name None) every event of the function."""
        condition = _c.function_name == function_name
        if name is not None:
            condition = condition & (_c.name == name)
        with self._engine.begin() as conn:
            return conn.execute(delete(test_events).where(condition)).rowcount
