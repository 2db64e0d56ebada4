"""Aliases: named pointers to a version, with weighted routing to a second one,
and the resolution of FUNCTION[:QUALIFIER] that invocations go through."""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Callable

from lamina.control.functions import (
    FunctionRegistry,
    is_version_number,
    new_revision_id,
    revision_mismatch,
)
from lamina.control.models import LATEST, Alias, FunctionVersion, ResolvedTarget
from lamina.control.paging import Page, page_of
from lamina.errors import (
    InvalidParameterValueException,
    ResourceConflictException,
    ResourceNotFoundException,
    ValidationException,
)
from lamina.store.aliases import AliasStore


def routing_weights(routing_config: dict[str, Any] | None) -> dict[str, float] | None:
    """AdditionalVersionWeights out of a RoutingConfig; None when not given at all."""
    if routing_config is None:
        return None
    return dict(routing_config.get("AdditionalVersionWeights") or {})


class Aliases:
    def __init__(self, functions: FunctionRegistry, store: AliasStore,
                 rng: random.Random | None = None) -> None:
        self.functions = functions
        self.store = store
        self.region = functions.region
        # Routing draws; a seeded Random makes a split reproducible in tests.
        self._rng = rng or random.Random()
        # Called with (function name, alias name) after an alias is deleted: what
        # belongs to the alias (its policy, its function URL) goes with it.
        self.delete_listeners: list[Callable[[str, str], None]] = []

    def _alias_arn(self, function_name: str, name: str) -> str:
        return self.region.function_arn(function_name, name)

    def _existing_version(self, function_name: str, version: str) -> FunctionVersion:
        return self.functions.get_version(function_name, version)

    def _check_routing(self, function_name: str, primary: str, weights: dict[str, float]) -> None:
        """AWS's rules for AdditionalVersionWeights, with its messages."""
        if len(weights) > 1:
            raise InvalidParameterValueException(
                "Number of items in AdditionalVersionWeights cannot be greater than 1"
            )
        for version, weight in weights.items():
            if weight >= 1.0:
                # AWS refuses a weight of exactly 1.0 too: that is not a split.
                raise ValidationException(
                    f"1 validation error detected: Value '{{{version}={weight}}}' at "
                    "'routingConfig.additionalVersionWeights' failed to satisfy constraint: Map "
                    "value must satisfy constraint: [Member must have value less than or equal "
                    "to 1.0, Member must have value greater than or equal to 0.0, Member must "
                    "not be null]"
                )
            if version == primary:
                raise InvalidParameterValueException(
                    f"Invalid function version {primary}. Function version {primary} is already "
                    "included in routing configuration."
                )
            if primary == LATEST:
                raise InvalidParameterValueException(
                    "$LATEST is not supported for an alias pointing to more than 1 version"
                )
            if not is_version_number(version):
                raise ValidationException(
                    f"1 validation error detected: Value '{{{version}={weight}}}' at "
                    "'routingConfig.additionalVersionWeights' failed to satisfy constraint: Map "
                    "keys must satisfy constraint: [Member must satisfy regular expression "
                    "pattern: [0-9]+]"
                )
            self._existing_version(function_name, version)

    # -- the API ------------------------------------------------------------------

    def create(self, function_name: str, name: str, function_version: str,
               description: str = "", weights: dict[str, float] | None = None) -> Alias:
        fn = self.functions.resolve(function_name).name
        self._existing_version(fn, function_version)
        if self.store.get(fn, name) is not None:
            raise ResourceConflictException(f"Alias already exists: {self._alias_arn(fn, name)}")
        self._check_routing(fn, function_version, weights or {})
        alias = Alias(function_name=fn, name=name, function_version=function_version,
                      revision_id=new_revision_id(), description=description,
                      routing=dict(weights or {}))
        if not self.store.create(alias.to_json()):
            if self.store.get(fn, name) is not None:
                raise ResourceConflictException(f"Alias already exists: {self._alias_arn(fn, name)}")
            raise self.functions.not_found(fn)
        return alias

    def get(self, function_name: str, name: str) -> Alias:
        fn = self.functions.resolve(function_name).name
        data = self.store.get(fn, name)
        if data is None:
            self.functions.get_version(fn)  # a missing function is reported as such
            raise ResourceNotFoundException(f"Cannot find alias arn: {self._alias_arn(fn, name)}")
        return Alias.from_json(data)

    def update(
        self, function_name: str, name: str, function_version: str | None = None,
        description: str | None = None, weights: dict[str, float] | None = None,
        revision_id: str | None = None,
    ) -> Alias:
        """Change what is given (weights={} removes the routing), with
        compare-and-swap on RevisionId like every other update."""
        fn = self.functions.resolve(function_name).name
        if function_version is not None:
            self._existing_version(fn, function_version)
        while True:
            data = self.store.get(fn, name)
            if data is None:
                self.functions.get_version(fn)
                # UpdateAlias words it differently from GetAlias, as AWS does.
                raise ResourceNotFoundException(f"Alias not found: {self._alias_arn(fn, name)}")
            current = Alias.from_json(data)
            if revision_id is not None and revision_id != current.revision_id:
                raise revision_mismatch()
            updated = dataclasses.replace(
                current,
                function_version=current.function_version if function_version is None else function_version,
                description=current.description if description is None else description,
                routing=current.routing if weights is None else dict(weights),
                revision_id=new_revision_id(),
            )
            self._check_routing(fn, updated.function_version, updated.routing)
            if self.store.replace(updated.to_json(), current.revision_id):
                return updated

    def delete(self, function_name: str, name: str) -> None:
        fn = self.functions.resolve(function_name).name
        if not self.store.delete(fn, name):
            self.get(fn, name)  # the right 404: function or alias
            return
        for listener in self.delete_listeners:
            listener(fn, name)

    def list(self, function_name: str, function_version: str | None = None,
             marker: str | None = None, max_items: int | None = None) -> Page[Alias]:
        fn = self.functions.resolve(function_name).name
        self.functions.get_version(fn)  # 404 for a missing function, not an empty list
        found = [
            alias for alias in map(Alias.from_json, self.store.list(fn))
            if (function_version is None or alias.function_version == function_version)
            and (marker is None or alias.name > marker)
        ]
        return page_of(found, max_items, lambda alias: alias.name)

    # -- for invocations -------------------------------------------------------------

    def resolve_invocation_target(self, function_name: str,
                                  qualifier: str | None = None) -> ResolvedTarget:
        """The version an invocation of FUNCTION[:QUALIFIER] runs.

        `function_name` takes every form Invoke does (name, partial or full ARN,
        optionally qualified); `qualifier` is $LATEST, a version number or an alias.
        For an alias, its RoutingConfig is applied here, once per invocation: the
        additional version is chosen with its weight's probability. Raises
        ResourceNotFoundException ("Function not found: <qualified ARN>") when the
        function, version or alias does not exist.
        """
        ref = self.functions.resolve(function_name, qualifier)
        wanted = ref.qualifier or LATEST
        if wanted == LATEST or is_version_number(wanted):
            return self.functions.target(ref.name, wanted)
        alias = self.functions.get_alias(ref.name, wanted)
        version = alias.function_version
        for extra, weight in alias.routing.items():
            if self._rng.random() < weight:
                version = extra
        fv = self.functions.load_version(ref.name, version)
        if fv is None:
            raise self.functions.not_found(ref.name, wanted)
        return ResolvedTarget(fv, alias.name)
