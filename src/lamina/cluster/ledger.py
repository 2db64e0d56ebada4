"""The cluster-wide concurrency ledger: one count for every front end.

Each front end still counts its own executions (invoke/concurrency.py); the
ledger makes the account's and each function's reserved concurrency hold across
all of them. It is a plain class that placement.py runs as one named, detached Ray
actor on the head node; an actor runs its calls one at a time, so a `take` checks
and counts in one step, exactly.

Overshoot bound. While the ledger actor lives, none: a slot is counted before the
invocation is placed. Slots are leases: a front end that dies without giving its
slots back holds them until `lease_s` (the function's timeout plus a margin) runs
out, which throttles early rather than late. If the ledger actor itself is lost
(its node, the head, died) it is started again empty, and for as long as the
invocations in flight at that moment last the cluster may run up to that many
executions over a limit: at most the limit again (each was within it), once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

# Beyond the function's timeout: how long a slot is held for a front end that
# never gave it back (it died).
LEASE_MARGIN_S = 60.0


@dataclass
class _Held:
    function_name: str
    reserved: bool
    expires: float


class ConcurrencyLedger:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._held: dict[str, _Held] = {}
        self._per_function: dict[str, int] = {}
        self._unreserved = 0
        self.peak: dict[str, int] = {}

    def _expire(self, now: float) -> None:
        for token in [t for t, held in self._held.items() if held.expires < now]:
            self._drop(token)

    def _drop(self, token: str) -> None:
        held = self._held.pop(token, None)
        if held is None:
            return
        self._per_function[held.function_name] -= 1
        if not held.reserved:
            self._unreserved -= 1

    def take(self, function_name: str, reserved: int | None, unreserved_limit: int,
             timeout_s: float) -> str | None:
        """A token for one execution, or None when the function's reservation (or,
        without one, the account's unreserved concurrency) is used up."""
        now = self._clock()
        running = self._per_function.get(function_name, 0)
        if reserved is not None and running >= reserved or \
                reserved is None and self._unreserved >= unreserved_limit:
            self._expire(now)
            running = self._per_function.get(function_name, 0)
            if reserved is not None and running >= reserved or \
                    reserved is None and self._unreserved >= unreserved_limit:
                return None
        token = uuid.uuid4().hex
        self._held[token] = _Held(function_name, reserved is not None,
                                  now + timeout_s + LEASE_MARGIN_S)
        self._per_function[function_name] = running + 1
        self.peak[function_name] = max(self.peak.get(function_name, 0), running + 1)
        if reserved is None:
            self._unreserved += 1
        return token

    def release(self, token: str) -> None:
        self._drop(token)

    def counts(self) -> dict[str, object]:
        """Executions running now per function, and the highest count seen."""
        return {"running": {k: v for k, v in self._per_function.items() if v},
                "unreserved": self._unreserved, "peak": dict(self.peak)}

    def reset_peak(self) -> None:
        self.peak.clear()
