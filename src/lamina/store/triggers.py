"""Rows of what invokes functions without a caller: event source mappings, EventBridge
rules and EventBridge Scheduler schedules.

Each is a JSON document under its key; rules and schedules also carry the time their
next firing is due, written before a firing is handed on, so a restarted server
neither repeats nor forgets one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from lamina.store.schema import event_rules, event_source_mappings, schedules

_e = event_source_mappings.c


@dataclass(frozen=True)
class TimedRow:
    """A rule or a schedule: its key, its document and its next firing (epoch ms)."""

    key: tuple[str, ...]
    config: dict[str, Any]
    next_fire_at: int | None


class MappingStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def put(self, uuid: str, function_name: str, event_source_arn: str,
            config: dict[str, Any]) -> None:
        with self._engine.begin() as conn:
            values = {"function_name": function_name, "event_source_arn": event_source_arn,
                      "config": json.dumps(config)}
            if conn.execute(update(event_source_mappings).where(_e.uuid == uuid)
                            .values(**values)).rowcount == 0:
                conn.execute(insert(event_source_mappings).values(uuid=uuid, **values))

    def get(self, uuid: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(_e.config).where(_e.uuid == uuid)).first()
        return json.loads(row.config) if row is not None else None

    def all(self) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(_e.config).order_by(_e.uuid)).all()
        return [json.loads(row.config) for row in rows]

    def delete(self, uuid: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(event_source_mappings).where(_e.uuid == uuid))


class TimedStore:
    """Rules (keyed by name) or schedules (keyed by group and name)."""

    def __init__(self, engine: Engine, kind: str) -> None:
        self._engine = engine
        self._table = event_rules if kind == "rules" else schedules
        self._keys = [c for c in self._table.c if c.primary_key]

    def _where(self, key: tuple[str, ...]) -> Any:
        return [column == value for column, value in zip(self._keys, key)]

    def create(self, key: tuple[str, ...], config: dict[str, Any], next_fire_at: int | None) -> bool:
        """Insert; False if the key is taken."""
        values = {column.name: value for column, value in zip(self._keys, key)}
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(self._table).values(
                    **values, config=json.dumps(config), next_fire_at=next_fire_at))
        except IntegrityError:
            return False
        return True

    def update(self, key: tuple[str, ...], config: dict[str, Any], next_fire_at: int | None) -> bool:
        with self._engine.begin() as conn:
            result = conn.execute(update(self._table).where(*self._where(key)).values(
                config=json.dumps(config), next_fire_at=next_fire_at))
        return result.rowcount == 1

    def advance(self, key: tuple[str, ...], due: int, next_fire_at: int | None) -> bool:
        """Move the next firing on from `due`; False if it was moved already (or the
        row is gone), so a firing is handed on once per due time."""
        table = self._table
        with self._engine.begin() as conn:
            result = conn.execute(update(table).where(
                *self._where(key), table.c.next_fire_at == due).values(next_fire_at=next_fire_at))
        return result.rowcount == 1

    def get(self, key: tuple[str, ...]) -> TimedRow | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(self._table).where(*self._where(key))).first()
        return self._row(row) if row is not None else None

    def all(self) -> list[TimedRow]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(self._table).order_by(*self._keys)).all()
        return [self._row(row) for row in rows]

    def delete(self, key: tuple[str, ...]) -> bool:
        with self._engine.begin() as conn:
            return conn.execute(delete(self._table).where(*self._where(key))).rowcount == 1

    def _row(self, row: Any) -> TimedRow:
        key = tuple(getattr(row, column.name) for column in self._keys)
        return TimedRow(key, json.loads(row.config), row.next_fire_at)
