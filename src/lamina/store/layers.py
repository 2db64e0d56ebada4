"""Rows of layer versions. Records go in and out as plain dicts."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, and_, delete, func, insert, select

from lamina.store import sequences
from lamina.store.schema import layer_versions, policies

_JSON_COLUMNS = ("compatible_runtimes", "compatible_architectures")


def _record(row: Any) -> dict[str, Any]:
    record = dict(row._mapping)
    for column in _JSON_COLUMNS:
        record[column] = json.loads(record[column])
    return record


def layer_sequence(layer_name: str) -> str:
    return f"layer:{layer_name}"


class LayerStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def publish(self, record: dict[str, Any]) -> int:
        """Insert the next version of a layer (numbers are never reused); return it."""
        with self._engine.begin() as conn:
            version = sequences.next_value(conn, layer_sequence(record["layer_name"]))
            values = {**record, "version": version}
            for column in _JSON_COLUMNS:
                values[column] = json.dumps(values[column])
            conn.execute(insert(layer_versions).values(**values))
        return version

    def get(self, layer_name: str, version: int) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(layer_versions).where(
                    layer_versions.c.layer_name == layer_name, layer_versions.c.version == version
                )
            ).first()
        return _record(row) if row else None

    def versions(self, layer_name: str | None = None) -> list[dict[str, Any]]:
        """Layer versions by name, newest version first; one layer's when named."""
        query = select(layer_versions).order_by(
            layer_versions.c.layer_name, layer_versions.c.version.desc()
        )
        if layer_name is not None:
            query = query.where(layer_versions.c.layer_name == layer_name)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_record(row) for row in rows]

    def delete(self, layer_name: str, version: int, policy_arn: str) -> bool:
        with self._engine.begin() as conn:
            conn.execute(delete(policies).where(policies.c.resource_arn == policy_arn))
            result = conn.execute(
                delete(layer_versions).where(
                    and_(layer_versions.c.layer_name == layer_name, layer_versions.c.version == version)
                )
            )
        return result.rowcount == 1

    def total_code_size(self) -> int:
        with self._engine.connect() as conn:
            return conn.execute(select(func.coalesce(func.sum(layer_versions.c.code_size), 0))).scalar_one()
