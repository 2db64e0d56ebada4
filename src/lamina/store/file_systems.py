"""Rows of EFS file systems and access points, as JSON descriptions."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from lamina.store.schema import access_points, file_systems


class FileSystemStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create_file_system(self, file_system_id: str, creation_token: str,
                           config: dict[str, Any]) -> bool:
        """False if the creation token was used before."""
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(file_systems).values(
                    file_system_id=file_system_id, creation_token=creation_token,
                    config=json.dumps(config)))
        except IntegrityError:
            return False
        return True

    def file_system_by_token(self, creation_token: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(file_systems.c.config)
                               .where(file_systems.c.creation_token == creation_token)).first()
        return json.loads(row.config) if row else None

    def file_system(self, file_system_id: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(file_systems.c.config)
                               .where(file_systems.c.file_system_id == file_system_id)).first()
        return json.loads(row.config) if row else None

    def list_file_systems(self) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(file_systems.c.config)
                                .order_by(file_systems.c.file_system_id)).all()
        return [json.loads(row.config) for row in rows]

    def count_file_systems(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(file_systems)).scalar_one())

    def put_file_system(self, file_system_id: str, config: dict[str, Any]) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(file_systems).where(file_systems.c.file_system_id == file_system_id)
                         .values(config=json.dumps(config)))

    def delete_file_system(self, file_system_id: str) -> bool:
        with self._engine.begin() as conn:
            return conn.execute(delete(file_systems).where(
                file_systems.c.file_system_id == file_system_id)).rowcount == 1

    # -- access points -----------------------------------------------------------

    def create_access_point(self, access_point_id: str, file_system_id: str, client_token: str,
                            config: dict[str, Any]) -> bool:
        """False if the client token was used before."""
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(access_points).values(
                    access_point_id=access_point_id, file_system_id=file_system_id,
                    client_token=client_token, config=json.dumps(config)))
        except IntegrityError:
            return False
        return True

    def access_point_by_token(self, client_token: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(access_points.c.config)
                               .where(access_points.c.client_token == client_token)).first()
        return json.loads(row.config) if row else None

    def access_point(self, access_point_id: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(access_points.c.config)
                               .where(access_points.c.access_point_id == access_point_id)).first()
        return json.loads(row.config) if row else None

    def access_points(self, file_system_id: str | None = None) -> list[dict[str, Any]]:
        query = select(access_points.c.config).order_by(access_points.c.access_point_id)
        if file_system_id is not None:
            query = query.where(access_points.c.file_system_id == file_system_id)
        with self._engine.connect() as conn:
            return [json.loads(row.config) for row in conn.execute(query).all()]

    def delete_access_point(self, access_point_id: str) -> bool:
        with self._engine.begin() as conn:
            return conn.execute(delete(access_points).where(
                access_points.c.access_point_id == access_point_id)).rowcount == 1
