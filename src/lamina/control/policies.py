"""Resource-based policies: a JSON policy document of statements per resource.

Each change is a compare-and-swap on the policy's RevisionId: a caller's RevisionId
that no longer matches is the caller's 412; without one, a concurrent writer just
means read again and reapply, so no statement is lost.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable

from lamina.errors import (
    PolicyLengthExceededException,
    PreconditionFailedException,
    ResourceConflictException,
    ResourceNotFoundException,
)
from lamina.store.policies import PolicyStore

NO_POLICY = "No policy is associated with the given resource."
EMPTY_POLICY: dict[str, Any] = {"Version": "2012-10-17", "Id": "default", "Statement": []}


class ResourcePolicies:
    def __init__(self, store: PolicyStore) -> None:
        self.store = store

    def get(self, resource_arn: str) -> tuple[dict[str, Any], str]:
        found = self.store.get(resource_arn)
        if found is None:
            raise ResourceNotFoundException(NO_POLICY)
        return found

    def _change(
        self, resource_arn: str, revision_id: str | None, getter_api: str,
        change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    ) -> str:
        while True:
            found = self.store.get(resource_arn)
            document, current = found if found else ({**EMPTY_POLICY}, None)
            if revision_id is not None and revision_id != current:
                raise PreconditionFailedException(
                    "The Revision Id provided does not match the latest Revision Id. "
                    f"Call the {getter_api} API to retrieve the latest Revision Id"
                )
            statements = change(list(document["Statement"]))
            new_revision = str(uuid.uuid4())
            if not statements:
                # The last statement gone: the resource has no policy any more.
                if current is None or self.store.delete(resource_arn, current):
                    return new_revision
                continue
            if self.store.put(resource_arn, {**document, "Statement": statements}, new_revision, current):
                return new_revision

    def add_statement(self, resource_arn: str, statement: dict[str, Any], revision_id: str | None,
                      getter_api: str, max_bytes: int | None = None) -> str:
        """Append a statement (its Sid must be new); return the new RevisionId. With
        `max_bytes`, the resulting document must stay within it, as written out."""
        sid = statement["Sid"]

        def add(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if any(s.get("Sid") == sid for s in statements):
                raise ResourceConflictException(
                    f"The statement id ({sid}) provided already exists. Please provide a new "
                    "statement id, or remove the existing statement."
                )
            added = [*statements, statement]
            if max_bytes is not None:
                document = {**EMPTY_POLICY, "Statement": added}
                size = len(json.dumps(document, separators=(",", ":")).encode())
                if size > max_bytes:
                    raise PolicyLengthExceededException(
                        f"The final policy size ({size}) is bigger than the limit ({max_bytes})."
                    )
            return added

        return self._change(resource_arn, revision_id, getter_api, add)

    def remove_statement(self, resource_arn: str, sid: str, revision_id: str | None,
                         getter_api: str) -> None:
        def remove(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if not statements:
                raise ResourceNotFoundException(NO_POLICY)
            kept = [s for s in statements if s.get("Sid") != sid]
            if len(kept) == len(statements):
                raise ResourceNotFoundException(f"Statement {sid} is not found in resource policy.")
            return kept

        self._change(resource_arn, revision_id, getter_api, remove)
