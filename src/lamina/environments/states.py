"""The lifecycle of an execution environment, as one explicit state machine.

    starting --> ready <--> busy
       |           |         |
       +--> failed <---------+        (init error, timeout, runtime exit, OOM)
       |      |
       +------+--> stopping --> gone  (idle reaping, retirement, server shutdown)

INIT is `starting` (extensions, runtime, function code), INVOKE is `busy`,
SHUTDOWN is `stopping`. A failed environment is never reused.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    FAILED = "failed"
    STOPPING = "stopping"
    GONE = "gone"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.STARTING: frozenset({State.READY, State.FAILED, State.STOPPING}),
    State.READY: frozenset({State.BUSY, State.FAILED, State.STOPPING}),
    State.BUSY: frozenset({State.READY, State.FAILED, State.STOPPING}),
    State.FAILED: frozenset({State.STOPPING}),
    State.STOPPING: frozenset({State.GONE}),
    State.GONE: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


class Lifecycle:
    def __init__(self) -> None:
        self.state = State.STARTING

    def to(self, new: State) -> None:
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"{self.state.value} -> {new.value}")
        self.state = new

    @property
    def reusable(self) -> bool:
        return self.state is State.READY
