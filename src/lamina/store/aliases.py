"""Rows of function aliases. Records go in and out as plain dicts."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from lamina.store.schema import aliases, functions


def _record(row: Any) -> dict[str, Any]:
    return {
        "function_name": row.function_name,
        "name": row.name,
        "function_version": row.function_version,
        "description": row.description,
        "routing": json.loads(row.routing),
        "revision_id": row.revision_id,
    }


class AliasStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, record: dict[str, Any]) -> bool:
        """Insert an alias; False if the name is taken or the function is gone."""
        try:
            with self._engine.begin() as conn:
                exists = conn.execute(
                    select(functions.c.name).where(functions.c.name == record["function_name"])
                ).first()
                if exists is None:
                    return False
                conn.execute(insert(aliases).values({**record, "routing": json.dumps(record["routing"])}))
        except IntegrityError:
            return False
        return True

    def get(self, function_name: str, name: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(aliases).where(aliases.c.function_name == function_name, aliases.c.name == name)
            ).first()
        return _record(row) if row else None

    def list(self, function_name: str) -> list[dict[str, Any]]:
        """A function's aliases in name order."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(aliases).where(aliases.c.function_name == function_name).order_by(aliases.c.name)
            ).all()
        return [_record(row) for row in rows]

    def replace(self, record: dict[str, Any], expected_revision: str) -> bool:
        """Compare-and-swap on RevisionId: False if someone else wrote in between."""
        with self._engine.begin() as conn:
            result = conn.execute(
                update(aliases)
                .where(
                    aliases.c.function_name == record["function_name"],
                    aliases.c.name == record["name"],
                    aliases.c.revision_id == expected_revision,
                )
                .values(
                    function_version=record["function_version"],
                    description=record["description"],
                    routing=json.dumps(record["routing"]),
                    revision_id=record["revision_id"],
                )
            )
        return result.rowcount == 1

    def delete(self, function_name: str, name: str) -> bool:
        with self._engine.begin() as conn:
            result = conn.execute(
                delete(aliases).where(aliases.c.function_name == function_name, aliases.c.name == name)
            )
        return result.rowcount == 1
