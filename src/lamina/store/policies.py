"""Resource-based policy documents, one per resource ARN, with compare-and-swap."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import ColumnElement, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from lamina.store.schema import policies


class PolicyStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def get(self, resource_arn: str) -> tuple[dict[str, Any], str] | None:
        """The policy document and its revision id, or None if there is none."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(policies.c.document, policies.c.revision_id).where(
                    policies.c.resource_arn == resource_arn
                )
            ).first()
        return (json.loads(row.document), row.revision_id) if row else None

    def put(self, resource_arn: str, document: dict[str, Any], revision_id: str,
            expected_revision: str | None) -> bool:
        """Write the document if the stored revision is still `expected_revision`
        (None: no policy yet); False if someone else wrote in between."""
        try:
            with self._engine.begin() as conn:
                if expected_revision is None:
                    conn.execute(
                        insert(policies).values(
                            resource_arn=resource_arn, document=json.dumps(document),
                            revision_id=revision_id,
                        )
                    )
                    return True
                result = conn.execute(
                    update(policies)
                    .where(policies.c.resource_arn == resource_arn,
                           policies.c.revision_id == expected_revision)
                    .values(document=json.dumps(document), revision_id=revision_id)
                )
                return result.rowcount == 1
        except IntegrityError:
            return False

    def delete(self, resource_arn: str, expected_revision: str) -> bool:
        with self._engine.begin() as conn:
            result = conn.execute(
                delete(policies).where(policies.c.resource_arn == resource_arn,
                                       policies.c.revision_id == expected_revision)
            )
        return result.rowcount == 1

    def delete_all(self, resource_arns: list[str], prefix: str | None = None) -> int:
        """Drop the policies of these resources, and of every ARN starting with
        `prefix` (a deleted function's versions and aliases)."""
        condition: ColumnElement[bool] = policies.c.resource_arn.in_(resource_arns)
        if prefix is not None:
            condition = condition | policies.c.resource_arn.startswith(prefix, autoescape=True)
        with self._engine.begin() as conn:
            return conn.execute(delete(policies).where(condition)).rowcount
