"""Function URL configs, one row per (function, qualifier), found also by URL id."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from lamina.store.schema import function_urls

_c = function_urls.c


class FunctionUrlStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def get(self, function_name: str, qualifier: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(_c.config).where(
                _c.function_name == function_name, _c.qualifier == qualifier,
            )).first()
        return json.loads(row.config) if row else None

    def by_url_id(self, url_id: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(_c.config).where(_c.url_id == url_id)).first()
        return json.loads(row.config) if row else None

    def create(self, function_name: str, qualifier: str, url_id: str,
               config: dict[str, Any]) -> bool:
        """False if the (function, qualifier) already has one, or the function is gone."""
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(function_urls).values(
                    function_name=function_name, qualifier=qualifier, url_id=url_id,
                    config=json.dumps(config),
                ))
        except IntegrityError:
            return False
        return True

    def replace(self, function_name: str, qualifier: str, config: dict[str, Any]) -> bool:
        with self._engine.begin() as conn:
            result = conn.execute(update(function_urls).where(
                _c.function_name == function_name, _c.qualifier == qualifier,
            ).values(config=json.dumps(config)))
        return result.rowcount == 1

    def delete(self, function_name: str, qualifier: str | None = None) -> int:
        """Delete one config, or (qualifier None) every config of the function."""
        condition = _c.function_name == function_name
        if qualifier is not None:
            condition = condition & (_c.qualifier == qualifier)
        with self._engine.begin() as conn:
            return conn.execute(delete(function_urls).where(condition)).rowcount

    def list(self, function_name: str) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(_c.config).where(_c.function_name == function_name)
                                .order_by(_c.qualifier)).all()
        return [json.loads(row.config) for row in rows]
