"""Versioned schema migrations, applied in order, each once, at start-up.

Append new migrations to MIGRATIONS with a new id; never edit one that has shipped.
"""

from __future__ import annotations

import datetime
from typing import Callable

from sqlalchemy import Connection, select

from lamina.store import schema

Migration = Callable[[Connection], None]


def _0001_functions(conn: Connection) -> None:
    for table in (schema.functions, schema.function_versions, schema.tags, schema.sequences):
        table.create(conn)


def _0002_versions_aliases_layers(conn: Connection) -> None:
    # Published versions are rows of function_versions already; these add the rest.
    for table in (schema.aliases, schema.layer_versions, schema.policies):
        table.create(conn)


def _0003_queues(conn: Connection) -> None:
    for table in (schema.queues, schema.queue_messages):
        table.create(conn)


MIGRATIONS: list[tuple[str, Migration]] = [
    ("0001_functions", _0001_functions),
    ("0002_versions_aliases_layers", _0002_versions_aliases_layers),
    ("0003_queues", _0003_queues),
]


def migrate(conn: Connection) -> list[str]:
    """Apply every migration not yet recorded; return the ids applied."""
    schema.schema_migrations.create(conn, checkfirst=True)
    done = set(conn.execute(select(schema.schema_migrations.c.id)).scalars())
    applied = []
    for migration_id, apply in MIGRATIONS:
        if migration_id in done:
            continue
        apply(conn)
        conn.execute(
            schema.schema_migrations.insert().values(
                id=migration_id,
                applied_at=datetime.datetime.now(datetime.timezone.utc).isoformat(),
            )
        )
        applied.append(migration_id)
    return applied
