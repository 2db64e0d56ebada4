"""Counting concurrent executions, and throttling the calls over the limit.

An invocation takes a slot before it asks for an execution environment and gives
it back when it is done. `take` is synchronous (no await between the check and
the increment), so on one event loop the count is exact: with a reservation of 2,
the third parallel call is refused even if all three arrive in the same tick.

Where a slot comes from (see control/concurrency.py for the split):
- a function with reserved concurrency uses only its reservation;
- a function without one uses its provisioned concurrency first, then the shared pool.
"""

from __future__ import annotations

from lamina.control.concurrency import ConcurrencyRegistry
from lamina.errors import TooManyRequestsException
from lamina.observe.metrics import Metrics

# Which part of the account's concurrency a slot was taken from.
Slot = int
RESERVED: Slot = 0
PROVISIONED: Slot = 1
SHARED: Slot = 2

# AWS's message for every concurrency throttle; the Reason tells them apart.
RATE_EXCEEDED = "Rate Exceeded."


class ConcurrencyCounter:
    def __init__(self, settings: ConcurrencyRegistry, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self.shared_in_use = 0
        # Executions running in the whole account.
        self.running = 0
        # Slots in use out of each function's own provisioned allocation.
        self._provisioned_in_use: dict[str, int] = {}
        metrics.account_gauges = self.account_gauges
        metrics.provisioned_allocated = lambda: dict(settings.provisioned_by_function)

    def take(self, function_name: str, resource: str | None = None) -> Slot:
        """A slot for one execution of the function, or TooManyRequestsException (429).
        `resource` (FUNCTION:QUALIFIER, as called) names the throttle's Resource."""
        metrics = self._metrics
        usage = metrics.function(function_name)
        settings = self._settings
        reserved = settings.reserved.get(function_name)
        slot = SHARED
        if reserved is not None:
            if usage.concurrent_executions >= reserved:
                metrics.throttled(function_name, resource)
                raise TooManyRequestsException(
                    RATE_EXCEEDED, Reason="ReservedFunctionConcurrentInvocationLimitExceeded")
            slot = RESERVED
        else:
            provisioned = settings.provisioned_by_function.get(function_name)
            if provisioned:
                own = self._provisioned_in_use.get(function_name, 0)
                if own < provisioned:
                    self._provisioned_in_use[function_name] = own + 1
                    slot = PROVISIONED
            if slot == SHARED:
                if self.shared_in_use >= settings.shared_pool:
                    metrics.throttled(function_name, resource)
                    raise TooManyRequestsException(RATE_EXCEEDED,
                                                   Reason="ConcurrentInvocationLimitExceeded")
                self.shared_in_use += 1
            if provisioned:
                metrics.provisioned_used(function_name, spillover=slot == SHARED)
        usage.concurrent_executions += 1
        if slot == PROVISIONED:
            usage.provisioned_concurrent_executions += 1
        self.running += 1
        metrics.concurrency_sampled(function_name, usage.concurrent_executions, self.running,
                                    self.shared_in_use)
        return slot

    def release(self, function_name: str, slot: Slot) -> None:
        usage = self._metrics.function(function_name)
        usage.concurrent_executions -= 1
        self.running -= 1
        if slot == SHARED:
            self.shared_in_use -= 1
        elif slot == PROVISIONED:
            self._provisioned_in_use[function_name] -= 1
            usage.provisioned_concurrent_executions -= 1

    def in_use(self, function_name: str) -> int:
        return self._metrics.function(function_name).concurrent_executions

    def account_gauges(self) -> dict[str, float]:
        """Lambda's account-level concurrency figures, now."""
        settings = self._settings
        allocated = sum(settings.reserved.values()) + sum(
            n for name, n in settings.provisioned_by_function.items()
            if name not in settings.reserved)
        return {
            "ConcurrentExecutions": float(self.running),
            "UnreservedConcurrentExecutions": float(self.shared_in_use),
            # What is spoken for: unreserved executions running plus every allocation.
            "ClaimedAccountConcurrency": float(self.shared_in_use + allocated),
        }
