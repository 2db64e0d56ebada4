"""Code signing configs, the functions that use them, and the signer's profiles."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from lamina.store.schema import (
    code_signing_configs,
    function_code_signing_configs,
    signing_jobs,
    signing_profiles,
)

_configs = code_signing_configs.c
_uses = function_code_signing_configs.c
_profiles = signing_profiles.c
_jobs = signing_jobs.c


class CodeSigningStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- configs ------------------------------------------------------------------

    def create(self, config_id: str, config: dict[str, Any]) -> None:
        with self._engine.begin() as conn:
            conn.execute(insert(code_signing_configs).values(id=config_id, config=json.dumps(config)))

    def get(self, config_id: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(_configs.config).where(_configs.id == config_id)).first()
        return json.loads(row.config) if row else None

    def replace(self, config_id: str, config: dict[str, Any]) -> bool:
        with self._engine.begin() as conn:
            result = conn.execute(update(code_signing_configs).where(_configs.id == config_id)
                                  .values(config=json.dumps(config)))
        return result.rowcount == 1

    def delete(self, config_id: str) -> bool:
        """False if it does not exist; IntegrityError if a function still uses it."""
        with self._engine.begin() as conn:
            return conn.execute(delete(code_signing_configs)
                                .where(_configs.id == config_id)).rowcount == 1

    def all(self) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(_configs.config).order_by(_configs.id)).all()
        return [json.loads(row.config) for row in rows]

    # -- functions' use of them -----------------------------------------------------

    def use(self, function_name: str, config_id: str) -> bool:
        """Set (or replace) the config a function uses; False if either is gone."""
        try:
            with self._engine.begin() as conn:
                conn.execute(delete(function_code_signing_configs)
                             .where(_uses.function_name == function_name))
                conn.execute(insert(function_code_signing_configs)
                             .values(function_name=function_name, config_id=config_id))
        except IntegrityError:
            return False
        return True

    def config_of(self, function_name: str) -> str | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(_uses.config_id)
                               .where(_uses.function_name == function_name)).first()
        return row.config_id if row else None

    def stop_using(self, function_name: str) -> bool:
        with self._engine.begin() as conn:
            return conn.execute(delete(function_code_signing_configs)
                                .where(_uses.function_name == function_name)).rowcount == 1

    def functions_using(self, config_id: str) -> list[str]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(_uses.function_name).where(_uses.config_id == config_id)
                                .order_by(_uses.function_name)).all()
        return [row.function_name for row in rows]


class SigningProfileStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, name: str, profile: dict[str, Any]) -> bool:
        """False if a profile of that name exists (in any status)."""
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(signing_profiles).values(name=name, config=json.dumps(profile)))
        except IntegrityError:
            return False
        return True

    def get(self, name: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(_profiles.config).where(_profiles.name == name)).first()
        return json.loads(row.config) if row else None

    def replace(self, name: str, profile: dict[str, Any]) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(signing_profiles).where(_profiles.name == name)
                         .values(config=json.dumps(profile)))

    def all(self) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(_profiles.config).order_by(_profiles.name)).all()
        return [json.loads(row.config) for row in rows]


class SigningJobStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, job_id: str, created_at: float, job: dict[str, Any]) -> None:
        with self._engine.begin() as conn:
            conn.execute(insert(signing_jobs).values(job_id=job_id, created_at=created_at,
                                                     config=json.dumps(job)))

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(_jobs.config).where(_jobs.job_id == job_id)).first()
        return json.loads(row.config) if row else None

    def replace(self, job_id: str, job: dict[str, Any]) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(signing_jobs).where(_jobs.job_id == job_id)
                         .values(config=json.dumps(job)))

    def all(self) -> list[dict[str, Any]]:
        """Every job, newest first."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(_jobs.config)
                                .order_by(_jobs.created_at.desc(), _jobs.job_id)).all()
        return [json.loads(row.config) for row in rows]
