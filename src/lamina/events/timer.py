"""The clock schedules run on, and the one task that fires what is due.

Rules and schedules keep their next firing (in schedule time, epoch ms) in the
store. The timer sleeps until the earliest is due (or a change wakes it), hands each
due firing to its owner, which queues the invocation durably, and only then moves
the stored time on: a crash in between fires it again at most once more, never
loses it.

Downtime. A firing that came due while the server was down is not made up for, as
EventBridge documents for its rules ("not fired retroactively"); the next one is
counted from the restart. A one-time Scheduler schedule (at()) that came due during
the downtime fires once at the restart, since otherwise it would never fire.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from typing import Callable, Protocol

from lamina.store.triggers import TimedRow, TimedStore

log = logging.getLogger("lamina.events.timer")

UTC = datetime.timezone.utc
# The timer looks at the store at least this often (schedule changes made by another
# server sharing the database wake nobody here).
POLL_S = 5.0


class Clock:
    """Schedule time: the wall clock, or, with `scale` < 1, a faster one that starts
    at the beginning of the current UTC day (so times stay plausible dates)."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        today = datetime.datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.origin = today.timestamp()

    def now(self) -> datetime.datetime:
        real = time.time()
        if self.scale == 1.0:
            return datetime.datetime.fromtimestamp(real, UTC)
        return datetime.datetime.fromtimestamp(self.origin + (real - self.origin) / self.scale, UTC)

    def real_seconds(self, schedule_seconds: float) -> float:
        """How long a span of schedule time takes on the wall clock."""
        return schedule_seconds * self.scale

    def seconds_until(self, moment: datetime.datetime) -> float:
        return max(0.0, self.real_seconds((moment - self.now()).total_seconds()))


def to_ms(moment: datetime.datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, UTC)


class Timed(Protocol):
    """A kind of thing that fires: EventBridge rules, Scheduler schedules."""

    store: TimedStore

    def fire(self, row: TimedRow, due: datetime.datetime) -> None:
        """Hand one firing on (durably queued when this returns)."""

    def following(self, row: TimedRow, due: datetime.datetime) -> datetime.datetime | None:
        """The firing after `due`, None if there is none."""

    def after_downtime(self, row: TimedRow, due: datetime.datetime,
                       now: datetime.datetime) -> datetime.datetime | None:
        """Where a firing missed while the server was down goes."""


class Timer:
    def __init__(self, clock: Clock, owners: list[Timed],
                 leader: Callable[[], bool] = lambda: True) -> None:
        self.clock = clock
        self.owners = owners
        # Front ends sharing a database fire schedules from one of them at a time.
        self.leader = leader
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def changed(self) -> None:
        """A rule or schedule changed: look again now."""
        self._wake.set()

    async def start(self) -> None:
        now = self.clock.now()
        # Grace for the restart itself: firings due within it are not "missed".
        grace = datetime.timedelta(seconds=max(1.0, 1.0 / self.clock.scale))
        for owner in self.owners if self.leader() else ():
            for row in owner.store.all():
                if row.next_fire_at is None:
                    continue
                due = from_ms(row.next_fire_at)
                if due < now - grace:
                    owner.store.advance(row.key, row.next_fire_at,
                                        to_ms(owner.after_downtime(row, due, now)))
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                sleep = self._fire_due() if self.leader() else POLL_S
            except Exception:
                log.exception("firing schedules failed")
                sleep = POLL_S
            try:
                await asyncio.wait_for(self._wake.wait(), sleep)
            except asyncio.TimeoutError:
                pass

    def _fire_due(self) -> float:
        """Fire everything due; return how long to sleep until the next."""
        now = self.clock.now()
        sleep = POLL_S
        for owner in self.owners:
            for row in owner.store.all():
                if row.next_fire_at is None:
                    continue
                due = from_ms(row.next_fire_at)
                if due > now:
                    sleep = min(sleep, self.clock.seconds_until(due))
                    continue
                try:
                    owner.fire(row, due)
                except Exception:
                    log.exception("firing %s failed", "/".join(row.key))
                following = owner.following(row, due)
                owner.store.advance(row.key, row.next_fire_at, to_ms(following))
                if following is not None:
                    sleep = min(sleep, self.clock.seconds_until(following))
        return sleep
