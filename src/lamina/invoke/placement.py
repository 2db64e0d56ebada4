"""Where an invocation runs: the seam between `invoke` and the machines.

The Invoker asks a Placement for "an environment for this version" (`acquire`),
runs one invocation on what it got (`invoke` on the returned handle, streamed or
buffered) and gives it back (`release`). Two placements exist, chosen at start-up
(platform.py):

- the local pool (environments.pool.EnvironmentPool): environments on this host;
  its handles are the ExecutionEnvironments themselves;
- the cluster (lamina.cluster, with `lamina serve --cluster ray://HOST:PORT`):
  environments on the nodes of a Ray cluster, each owned by that node's agent.

Nothing above this module knows which one it talks to. Besides the invocation path
a placement takes what the control plane tells it about versions: `retire_function`
when a version changes or goes away.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from lamina.environments.environment import Invocation, InvocationOutcome
from lamina.environments.spec import EnvironmentSpec
from lamina.environments.streaming import ResponseStream


class Placed(Protocol):
    """An environment taken for one invocation."""

    async def invoke(self, invocation: Invocation,
                     stream: ResponseStream | None = None) -> InvocationOutcome: ...


PlacedT = TypeVar("PlacedT", bound=Placed)


class Placement(Protocol[PlacedT]):
    async def acquire(self, spec: EnvironmentSpec) -> PlacedT:
        """An environment ready for one invocation of spec's version, or
        TooManyRequestsException (no memory or scaling rate left)."""
        ...

    def release(self, placed: PlacedT) -> None:
        """The invocation on `placed` is over (whatever its outcome)."""
        ...

    def retire_function(self, function_name: str, version: str | None = None) -> None:
        """Stop the idle environments of a changed or deleted version (None: all)."""
        ...
