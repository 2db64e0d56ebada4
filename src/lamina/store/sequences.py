"""Persistent counters, bumped inside the caller's transaction.

Version numbers of functions and layers come from here, so a number is never
handed out twice, even after the version that had it was deleted (as on AWS).
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, insert, select, update

from lamina.store.schema import sequences


def next_value(conn: Connection, name: str) -> int:
    current = conn.execute(select(sequences.c.value).where(sequences.c.name == name)).scalar()
    if current is None:
        conn.execute(insert(sequences).values(name=name, value=1))
        return 1
    conn.execute(update(sequences).where(sequences.c.name == name).values(value=current + 1))
    return current + 1


def current_value(conn: Connection, name: str) -> int:
    """The last number handed out, 0 if none."""
    return conn.execute(select(sequences.c.value).where(sequences.c.name == name)).scalar() or 0


def reset(conn: Connection, name: str) -> None:
    conn.execute(delete(sequences).where(sequences.c.name == name))
