"""Reserved and provisioned concurrency settings, with Lambda's rules and messages.

The settings live in the store and, for the invocation path, in memory here:
`reserved` and `provisioned_by_function` are read on every invoke by the
concurrency counter in invoke/, so they are plain dicts kept current by every write.

The account's concurrency is split the way Lambda splits it: each function with
reserved concurrency owns that many slots (a guarantee and a cap); provisioned
concurrency of a function without a reservation is set aside from the unreserved
pool for that function; everything else is the shared pool, which must keep at
least `min_unreserved_concurrency` slots.
"""

from __future__ import annotations

from typing import Callable

from lamina.control.functions import FunctionRegistry
from lamina.control.models import LATEST, FunctionVersion, aws_timestamp
from lamina.control.paging import Page, page_of
from lamina.errors import (
    InvalidParameterValueException,
    ProvisionedConcurrencyConfigNotFoundException,
    ResourceNotFoundException,
)
from lamina.limits import Limits
from lamina.store.changes import unannounced
from lamina.store.concurrency import ConcurrencyStore, ProvisionedConfig

ProvisionedKey = tuple[str, str]
# Called with (function, qualifier), the version the qualifier resolves to and the
# requested count; a count of 0 (and no version) means the config was removed.
ProvisionedListener = Callable[[str, str, FunctionVersion | None, int], None]


class ConcurrencyRegistry:
    def __init__(self, store: ConcurrencyStore, functions: FunctionRegistry, limits: Limits) -> None:
        self.store = store
        self.functions = functions
        self.limits = limits
        self.reserved: dict[str, int] = store.reserved()
        self.provisioned: dict[ProvisionedKey, ProvisionedConfig] = {
            (row.function_name, row.qualifier): row for row in store.provisioned()
        }
        # Sum of requested provisioned concurrency per function, for the counter.
        self.provisioned_by_function: dict[str, int] = {}
        # Slots of the shared pool: the account limit minus reservations minus the
        # provisioned concurrency of functions without a reservation.
        self.shared_pool = limits.concurrent_executions
        self.provisioned_listeners: list[ProvisionedListener] = []
        # Tells other front ends whose settings changed (store/changes.py).
        self.announce: Callable[[str], None] = unannounced
        self._recount()

    def changed_elsewhere(self, function_name: str) -> None:
        """Another front end changed reserved or provisioned concurrency: read them
        again. (Its provisioned environments are that front end's to run.)"""
        self.reserved.clear()
        self.reserved.update(self.store.reserved())
        self.provisioned.clear()
        self.provisioned.update({(row.function_name, row.qualifier): row
                                 for row in self.store.provisioned()})
        self._recount()

    def _recount(self) -> None:
        totals: dict[str, int] = {}
        for config in self.provisioned.values():
            totals[config.function_name] = totals.get(config.function_name, 0) + config.requested
        self.provisioned_by_function = totals
        self.shared_pool = self._shared_pool(self.reserved, totals)

    def _shared_pool(self, reserved: dict[str, int], provisioned: dict[str, int]) -> int:
        set_aside = sum(count for name, count in provisioned.items() if name not in reserved)
        return self.limits.concurrent_executions - sum(reserved.values()) - set_aside

    @property
    def unreserved_concurrency(self) -> int:
        """GetAccountSettings' UnreservedConcurrentExecutions."""
        return self.limits.concurrent_executions - sum(self.reserved.values())

    def _function_name(self, function_name: str) -> str:
        """The plain name of an existing function (404 otherwise)."""
        name = self.functions.resolve(function_name).name
        self.functions.get_version(name)
        return name

    # -- reserved concurrency ----------------------------------------------------

    def get_reserved(self, function_name: str) -> int | None:
        return self.reserved.get(self._function_name(function_name))

    def put_reserved(self, function_name: str, reserved: int) -> int:
        ref = self.functions.resolve(function_name)
        if ref.qualifier is not None:
            raise InvalidParameterValueException(
                "This operation is permitted on Lambda functions only. Aliases and versions do "
                "not support this operation. Please specify either a function name or an "
                "unqualified function ARN."
            )
        if self.functions.load_version(ref.name, LATEST) is None:
            raise self.functions.not_found(ref.name, LATEST)
        name = ref.name
        provisioned = self.provisioned_by_function.get(name, 0)
        if reserved < provisioned:
            raise InvalidParameterValueException(
                f"Specified ReservedConcurrentExecutions for function is less than the "
                f"function's provisioned concurrency [{provisioned}]."
            )
        after = {**self.reserved, name: reserved}
        if self._shared_pool(after, self.provisioned_by_function) < self.limits.min_unreserved_concurrency:
            raise InvalidParameterValueException(
                "Specified ReservedConcurrentExecutions for function decreases account's "
                "UnreservedConcurrentExecution below its minimum value of "
                f"[{self.limits.min_unreserved_concurrency}]."
            )
        self.store.put_reserved(name, reserved)
        self.reserved[name] = reserved
        self._recount()
        self.announce(name)
        return reserved

    def delete_reserved(self, function_name: str) -> None:
        name = self._function_name(function_name)
        self.store.delete_reserved(name)
        # Without the reservation its provisioned concurrency (at most the reservation)
        # is set aside from the shared pool instead, so the pool cannot shrink.
        self.reserved.pop(name, None)
        self._recount()
        self.announce(name)

    # -- provisioned concurrency ---------------------------------------------------

    def _version(self, function_name: str, qualifier: str | None,
                 writing: bool = False) -> tuple[str, str, FunctionVersion]:
        ref = self.functions.resolve(function_name, qualifier)
        unpublished = InvalidParameterValueException(
            "Provisioned Concurrency Configs cannot be applied to unpublished function versions."
            if writing else "The function resource provided must be an alias or a published version."
        )
        if ref.qualifier is None or ref.qualifier == LATEST:
            raise unpublished
        if not ref.qualifier.isdigit() and self.functions.aliases.get(ref.name, ref.qualifier) is None:
            raise ResourceNotFoundException(
                f"Cannot find alias arn: {self.functions.region.function_arn(ref.name, ref.qualifier)}"
            )
        fv = self.functions.get_version(ref.name, ref.qualifier)
        if fv.version == LATEST:  # an alias of $LATEST
            raise unpublished
        return ref.name, ref.qualifier, fv

    def put_provisioned(self, function_name: str, qualifier: str | None,
                        requested: int) -> ProvisionedConfig:
        name, qualifier, fv = self._version(function_name, qualifier, writing=True)
        others = self.provisioned_by_function.get(name, 0)
        current = self.provisioned.get((name, qualifier))
        if current is not None:
            others -= current.requested
        total = others + requested
        reserved = self.reserved.get(name)
        if reserved is not None and total > reserved:
            raise InvalidParameterValueException(
                "Requested Provisioned Concurrency should not be greater than the "
                f"reservedConcurrentExecution for function [{reserved}]."
            )
        if reserved is None:
            after = {**self.provisioned_by_function, name: total}
            if self._shared_pool(self.reserved, after) < self.limits.min_unreserved_concurrency:
                raise InvalidParameterValueException(
                    "Requested Provisioned Concurrency decreases account's "
                    "UnreservedConcurrentExecution below its minimum value of "
                    f"[{self.limits.min_unreserved_concurrency}]."
                )
        config = ProvisionedConfig(name, qualifier, requested, aws_timestamp())
        self.store.put_provisioned(config)
        self.provisioned[(name, qualifier)] = config
        self._recount()
        for listener in self.provisioned_listeners:
            listener(name, qualifier, fv, requested)
        self.announce(name)
        return config

    def _not_found(self) -> ProvisionedConcurrencyConfigNotFoundException:
        return ProvisionedConcurrencyConfigNotFoundException(
            "No Provisioned Concurrency Config found for this function"
        )

    def get_provisioned(self, function_name: str, qualifier: str | None) -> ProvisionedConfig:
        name, qualifier, _ = self._version(function_name, qualifier)
        config = self.provisioned.get((name, qualifier))
        if config is None:
            raise self._not_found()
        return config

    def delete_provisioned(self, function_name: str, qualifier: str | None) -> None:
        name, qualifier, _ = self._version(function_name, qualifier)
        # Deleting a config that does not exist succeeds, as on AWS.
        if self.store.delete_provisioned(name, qualifier):
            self._forget_provisioned(name, qualifier)
            self.announce(name)

    def _forget_provisioned(self, name: str, qualifier: str) -> None:
        self.provisioned.pop((name, qualifier), None)
        self._recount()
        for listener in self.provisioned_listeners:
            listener(name, qualifier, None, 0)

    def list_provisioned(self, function_name: str, marker: str | None = None,
                         max_items: int | None = None) -> Page[ProvisionedConfig]:
        name = self._function_name(function_name)
        following = [c for (fn, qualifier), c in sorted(self.provisioned.items())
                     if fn == name and (marker is None or qualifier > marker)]
        return page_of(following, max_items, lambda config: config.qualifier)

    # -- keeping in step with functions ----------------------------------------------

    def function_changed(self, function_name: str, version: str | None = None) -> None:
        """A function changed, lost a version, or was deleted. A deleted function's
        settings go with it (the store drops its rows by cascade; this drops the
        in-memory copies), and so does the provisioned config of a deleted version."""
        if self.functions.store.get_version(function_name, LATEST) is None:
            self.reserved.pop(function_name, None)
            for name, qualifier in [k for k in self.provisioned if k[0] == function_name]:
                self._forget_provisioned(name, qualifier)
            self._recount()
            return
        for name, qualifier in [k for k in self.provisioned if k[0] == function_name]:
            try:
                self.functions.get_version(name, qualifier)
            except ResourceNotFoundException:
                self.store.delete_provisioned(name, qualifier)
                self._forget_provisioned(name, qualifier)
