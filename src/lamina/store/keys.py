"""Rows of KMS keys and aliases. Key material arrives here already encrypted."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from lamina.store.schema import kms_aliases, kms_keys


class KeyStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, key_id: str, config: dict[str, Any], wrapped_material: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(insert(kms_keys).values(
                key_id=key_id, config=json.dumps(config), material=wrapped_material))

    def get(self, key_id: str) -> tuple[dict[str, Any], str] | None:
        """The key's metadata and its wrapped material."""
        with self._engine.connect() as conn:
            row = conn.execute(select(kms_keys.c.config, kms_keys.c.material)
                               .where(kms_keys.c.key_id == key_id)).first()
        return (json.loads(row.config), row.material) if row else None

    def put_config(self, key_id: str, config: dict[str, Any]) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(kms_keys).where(kms_keys.c.key_id == key_id)
                         .values(config=json.dumps(config)))

    def delete(self, key_id: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(kms_aliases).where(kms_aliases.c.key_id == key_id))
            conn.execute(delete(kms_keys).where(kms_keys.c.key_id == key_id))

    def list_ids(self) -> list[str]:
        with self._engine.connect() as conn:
            return list(conn.execute(select(kms_keys.c.key_id).order_by(kms_keys.c.key_id)).scalars())

    # -- aliases -------------------------------------------------------------------

    def create_alias(self, name: str, key_id: str, config: dict[str, Any]) -> bool:
        """False if the name is taken."""
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(kms_aliases).values(name=name, key_id=key_id,
                                                        config=json.dumps(config)))
        except IntegrityError:
            return False
        return True

    def alias_target(self, name: str) -> str | None:
        with self._engine.connect() as conn:
            return conn.execute(select(kms_aliases.c.key_id)
                                .where(kms_aliases.c.name == name)).scalar()

    def delete_alias(self, name: str) -> bool:
        with self._engine.begin() as conn:
            return conn.execute(delete(kms_aliases).where(kms_aliases.c.name == name)).rowcount == 1

    def aliases(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(name, key id, config) of every alias, by name."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(kms_aliases).order_by(kms_aliases.c.name)).all()
        return [(row.name, row.key_id, json.loads(row.config)) for row in rows]
