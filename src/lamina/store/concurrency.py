"""Rows of reserved and provisioned concurrency settings."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select, update

from lamina.store.schema import function_concurrency, provisioned_concurrency


@dataclass(frozen=True)
class ProvisionedConfig:
    """A provisioned concurrency config as put: what was asked for, and when."""

    function_name: str
    qualifier: str
    requested: int
    last_modified: str


class ConcurrencyStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- reserved ----------------------------------------------------------------

    def reserved(self) -> dict[str, int]:
        """Every function's reserved concurrency, by function name."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(function_concurrency)).all()
        return {row.function_name: row.reserved for row in rows}

    def put_reserved(self, function_name: str, reserved: int) -> None:
        with self._engine.begin() as conn:
            changed = conn.execute(
                update(function_concurrency)
                .where(function_concurrency.c.function_name == function_name)
                .values(reserved=reserved)
            ).rowcount
            if not changed:
                conn.execute(insert(function_concurrency).values(
                    function_name=function_name, reserved=reserved))

    def delete_reserved(self, function_name: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(function_concurrency).where(
                function_concurrency.c.function_name == function_name))

    # -- provisioned ---------------------------------------------------------------

    def provisioned(self) -> list[ProvisionedConfig]:
        """Every provisioned concurrency config, ordered by function and qualifier."""
        query = select(provisioned_concurrency).order_by(
            provisioned_concurrency.c.function_name, provisioned_concurrency.c.qualifier)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [ProvisionedConfig(r.function_name, r.qualifier, r.requested, r.last_modified)
                for r in rows]

    def put_provisioned(self, row: ProvisionedConfig) -> None:
        key = (provisioned_concurrency.c.function_name == row.function_name,
               provisioned_concurrency.c.qualifier == row.qualifier)
        with self._engine.begin() as conn:
            changed = conn.execute(
                update(provisioned_concurrency).where(*key)
                .values(requested=row.requested, last_modified=row.last_modified)
            ).rowcount
            if not changed:
                conn.execute(insert(provisioned_concurrency).values(
                    function_name=row.function_name, qualifier=row.qualifier,
                    requested=row.requested, last_modified=row.last_modified))

    def delete_provisioned(self, function_name: str, qualifier: str) -> bool:
        with self._engine.begin() as conn:
            result = conn.execute(delete(provisioned_concurrency).where(
                provisioned_concurrency.c.function_name == function_name,
                provisioned_concurrency.c.qualifier == qualifier))
        return result.rowcount == 1
