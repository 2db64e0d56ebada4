"""Rows of functions, their versions and tags. Records go in and out as plain dicts."""

from __future__ import annotations

import datetime
import json
from typing import Any, Iterable

from sqlalchemy import Engine, and_, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from lamina.store import sequences
from lamina.store.schema import aliases, function_versions, functions, tags


def version_sequence(function_name: str) -> str:
    """The counter of a function's published version numbers."""
    return f"version:{function_name}"


def _version_columns(config: dict[str, Any]) -> dict[str, Any]:
    """The stored record, and the code size kept beside it for cheap account totals."""
    return {"config": json.dumps(config), "code_size": config.get("code_size", 0)}


class FunctionStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, name: str, version: str, revision_id: str, config: dict[str, Any],
               tag_arn: str, tag_values: dict[str, str]) -> bool:
        """Insert a new function with its first version; False if the name is taken."""
        now = datetime.datetime.now(datetime.timezone.utc).isoformat()
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(functions).values(name=name, created_at=now))
                conn.execute(
                    insert(function_versions).values(
                        function_name=name, version=version, revision_id=revision_id,
                        **_version_columns(config),
                    )
                )
                if tag_values:
                    conn.execute(
                        insert(tags),
                        [{"resource_arn": tag_arn, "key": k, "value": v} for k, v in tag_values.items()],
                    )
        except IntegrityError:
            return False
        return True

    def get_version(self, name: str, version: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(function_versions.c.config).where(
                    function_versions.c.function_name == name, function_versions.c.version == version
                )
            ).first()
        return json.loads(row.config) if row else None

    def list_versions(self, version: str | None, after: tuple[str, str] | None,
                      limit: int) -> list[dict[str, Any]]:
        """Versions ordered by (function, version); only `version` ones when given."""
        query = select(function_versions.c.config).order_by(
            function_versions.c.function_name, function_versions.c.version
        )
        if version is not None:
            query = query.where(function_versions.c.version == version)
        if after is not None:
            name, ver = after
            query = query.where(
                (function_versions.c.function_name > name)
                | and_(function_versions.c.function_name == name, function_versions.c.version > ver)
            )
        with self._engine.connect() as conn:
            rows = conn.execute(query.limit(limit)).all()
        return [json.loads(row.config) for row in rows]

    def replace_version(self, name: str, version: str, expected_revision: str,
                        revision_id: str, config: dict[str, Any]) -> bool:
        """Compare-and-swap on RevisionId: False if someone else wrote in between."""
        with self._engine.begin() as conn:
            result = conn.execute(
                update(function_versions)
                .where(
                    function_versions.c.function_name == name,
                    function_versions.c.version == version,
                    function_versions.c.revision_id == expected_revision,
                )
                .values(revision_id=revision_id, **_version_columns(config))
            )
        return result.rowcount == 1

    def versions_of(self, name: str) -> list[dict[str, Any]]:
        """Every version of one function ($LATEST and published), in no set order."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(function_versions.c.config).where(function_versions.c.function_name == name)
            ).all()
        return [json.loads(row.config) for row in rows]

    def insert_version(self, name: str, version: str, revision_id: str,
                       config: dict[str, Any]) -> bool:
        """Add a published version; False if the function is gone or the number taken."""
        try:
            with self._engine.begin() as conn:
                if conn.execute(select(functions.c.name).where(functions.c.name == name)).first() is None:
                    return False
                conn.execute(
                    insert(function_versions).values(
                        function_name=name, version=version, revision_id=revision_id,
                        **_version_columns(config),
                    )
                )
        except IntegrityError:
            return False
        return True

    def delete_version(self, name: str, version: str) -> bool:
        with self._engine.begin() as conn:
            result = conn.execute(
                delete(function_versions).where(
                    function_versions.c.function_name == name, function_versions.c.version == version
                )
            )
        return result.rowcount == 1

    def last_published(self, name: str) -> int:
        """The highest version number ever published for the function, 0 if none."""
        with self._engine.connect() as conn:
            return sequences.current_value(conn, version_sequence(name))

    def delete_function(self, name: str, tag_arn: str) -> bool:
        with self._engine.begin() as conn:
            conn.execute(delete(function_versions).where(function_versions.c.function_name == name))
            conn.execute(delete(aliases).where(aliases.c.function_name == name))
            # A function created again under the same name starts over at version 1.
            sequences.reset(conn, version_sequence(name))
            conn.execute(delete(tags).where(tags.c.resource_arn == tag_arn))
            result = conn.execute(delete(functions).where(functions.c.name == name))
        return result.rowcount == 1

    def all_versions(self) -> list[dict[str, Any]]:
        """Every version of every function, in no set order."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(function_versions.c.config)).all()
        return [json.loads(row.config) for row in rows]

    def names(self) -> list[str]:
        """Every function's name, in ListFunctions' order."""
        with self._engine.connect() as conn:
            return list(conn.execute(select(functions.c.name).order_by(functions.c.name)).scalars())

    def count_and_code_size(self) -> tuple[int, int]:
        with self._engine.connect() as conn:
            count = conn.execute(select(func.count()).select_from(functions)).scalar_one()
            total = conn.execute(select(func.coalesce(func.sum(function_versions.c.code_size), 0))).scalar_one()
        return count, int(total)

    def forget_overwritten(self) -> None:
        """Leave no copy of overwritten rows in SQLite's write-ahead log: its frames
        are copied into the database (where secure_delete zeroes what they replace)
        and the log is truncated. Other databases keep no such file here."""
        if self._engine.dialect.name == "sqlite":
            with self._engine.connect() as conn:
                conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))

    # -- tags ------------------------------------------------------------------

    def get_tags(self, arn: str) -> dict[str, str]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(tags.c.key, tags.c.value).where(tags.c.resource_arn == arn))
            return {row.key: row.value for row in rows}

    def put_tags(self, arn: str, values: dict[str, str]) -> None:
        if not values:
            return
        with self._engine.begin() as conn:
            conn.execute(delete(tags).where(tags.c.resource_arn == arn, tags.c.key.in_(list(values))))
            conn.execute(insert(tags), [{"resource_arn": arn, "key": k, "value": v} for k, v in values.items()])

    def remove_tags(self, arn: str, keys: Iterable[str]) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(tags).where(tags.c.resource_arn == arn, tags.c.key.in_(list(keys))))

    # -- sequences ---------------------------------------------------------------

    def next_value(self, name: str) -> int:
        """The next number of a persistent counter (1, 2, ...), e.g. version numbers."""
        with self._engine.begin() as conn:
            return sequences.next_value(conn, name)
