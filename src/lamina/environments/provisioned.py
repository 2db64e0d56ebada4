"""Provisioned concurrency: environments initialized ahead of time and kept warm.

One `ProvisionedSet` per config (function, qualifier) keeps `requested`
environments of the version the qualifier resolves to, each started with
AWS_LAMBDA_INITIALIZATION_TYPE=provisioned-concurrency. The pool hands them out
before on-demand environments and never reaps them for idleness. A watcher per
environment waits for its process to exit (a crash, an OOM kill, a timeout's
kill) and starts a replacement; meanwhile the status is IN_PROGRESS again.

Status, as Lambda reports it: IN_PROGRESS until every requested environment has
finished INIT, then READY; FAILED (with a StatusReason) when INIT fails or the
host has no memory left for them, after which no more are started until the
config is put again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Coroutine

from lamina.environments.environment import ExecutionEnvironment
from lamina.environments.pool import EnvironmentPool
from lamina.environments.spec import EnvironmentSpec
from lamina.environments.states import State
from lamina.errors import TooManyRequestsException

log = logging.getLogger("lamina.environments")
INITIALIZATION_TYPE = "provisioned-concurrency"


@dataclass(frozen=True)
class ProvisionedStatus:
    allocated: int
    available: int
    status: str  # IN_PROGRESS | READY | FAILED
    reason: str | None = None


@dataclass(eq=False)
class ProvisionedSet:
    key: tuple[str, str]
    function_version: EnvironmentSpec
    requested: int
    environments: set[ExecutionEnvironment] = field(default_factory=set)
    failure: str | None = None
    filling: asyncio.Task[None] | None = None

    def status(self) -> ProvisionedStatus:
        allocated = len(self.environments)
        if self.failure is not None:
            return ProvisionedStatus(allocated, allocated, "FAILED", self.failure)
        ready = allocated >= self.requested
        return ProvisionedStatus(allocated, allocated, "READY" if ready else "IN_PROGRESS")


def _init_failure_reason(env: ExecutionEnvironment) -> str:
    parts = ["FUNCTION_ERROR_INIT_FAILURE"]
    try:
        error = json.loads(env.init_failure or b"{}")
        parts += [str(error[k]) for k in ("errorType", "errorMessage") if error.get(k)]
    except (ValueError, TypeError, AttributeError):
        pass  # not Lambda's error shape: the reason code alone
    return ": ".join(parts)


class ProvisionedEnvironments:
    def __init__(self, pool: EnvironmentPool) -> None:
        self.pool = pool
        self._sets: dict[tuple[str, str], ProvisionedSet] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def configure(self, function_name: str, qualifier: str, fv: EnvironmentSpec | None,
                  requested: int) -> None:
        """Keep `requested` environments of fv for (function, qualifier); 0 removes them."""
        key = (function_name, qualifier)
        current = self._sets.get(key)
        if current is not None and (fv is None or requested == 0
                                    or current.function_version.revision_id != fv.revision_id
                                    or current.function_version.version != fv.version):
            self._remove(key)
            current = None
        if fv is None or requested == 0:
            return
        if current is None:
            current = self._sets[key] = ProvisionedSet(key, fv, requested)
        current.requested = requested
        current.failure = None
        for env in list(current.environments)[: max(0, len(current.environments) - requested)]:
            current.environments.discard(env)
            self.pool.withdraw_provisioned(env)
        self._fill(current)

    def _remove(self, key: tuple[str, str]) -> None:
        found = self._sets.pop(key, None)
        if found is None:
            return
        if found.filling is not None:
            found.filling.cancel()
        for env in found.environments:
            self.pool.withdraw_provisioned(env)
        found.environments.clear()

    def status(self, function_name: str, qualifier: str) -> ProvisionedStatus | None:
        found = self._sets.get((function_name, qualifier))
        return found.status() if found is not None else None

    def _fill(self, target: ProvisionedSet) -> None:
        if target.filling is None or target.filling.done():
            target.filling = self._spawn(self._fill_until_ready(target))

    async def _fill_until_ready(self, target: ProvisionedSet) -> None:
        while target.failure is None and len(target.environments) < target.requested:
            missing = target.requested - len(target.environments)
            await asyncio.gather(*(self._start_one(target) for _ in range(missing)))

    async def _start_one(self, target: ProvisionedSet) -> None:
        try:
            env = await self.pool.start_environment(target.function_version, INITIALIZATION_TYPE)
        except TooManyRequestsException as error:
            target.failure = f"INSUFFICIENT_CAPACITY: {error.message}"
            return
        except Exception as error:
            log.exception("starting a provisioned environment of %s",
                          target.function_version.function_name)
            target.failure = f"INTERNAL_ERROR: {error}"
            return
        if env.state is not State.READY:
            target.failure = _init_failure_reason(env)
            self.pool.withdraw_provisioned(env)
            return
        if self._sets.get(target.key) is not target or len(target.environments) >= target.requested:
            # Removed or shrunk while this one started.
            self.pool.withdraw_provisioned(env)
            return
        target.environments.add(env)
        self.pool.enroll_provisioned(env)
        self._spawn(self._watch(target, env))

    async def _watch(self, target: ProvisionedSet, env: ExecutionEnvironment) -> None:
        await env.wait_exit()
        if env not in target.environments:
            return  # withdrawn on purpose
        log.warning("provisioned environment %s of %s:%s exited; starting a replacement",
                    env.id, target.function_version.function_name, target.function_version.version)
        target.environments.discard(env)
        self.pool.withdraw_provisioned(env)
        if self._sets.get(target.key) is target:
            self._fill(target)

    async def stop(self) -> None:
        """Stop maintaining (the pool stops the environments themselves)."""
        self._sets.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
