"""The change feed: tells every front end's caches that a record changed.

Registries above the store keep what every invocation reads in memory (function
versions, resource policies, function URL configs, event invoke configs, reserved
and provisioned concurrency). A write in this process updates those caches at once.
When several front ends share one PostgreSQL, each write is also announced with
`NOTIFY` after its transaction committed, and every other front end, `LISTEN`ing,
drops or reloads its copy: a change made on one front end is seen by the others
within the notification's delivery time (about a millisecond on one network),
before the next invocation that starts after it. SQLite is one process's database:
there the feed is local only.

Announcements name a topic (what kind of record) and a key (which one, usually the
function name); subscribers of the topic get the key, on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections import defaultdict
from typing import Any, Callable

from sqlalchemy import Engine, text

log = logging.getLogger("lamina.store")

CHANNEL = "lamina_changes"

Handler = Callable[[str], None]


class ChangeFeed:
    """Local delivery: the handlers of this process, nothing else."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Call `handler(key)` for changes of `topic` made by other front ends.
        (This process's own writes update its caches directly.)"""
        self._handlers[topic].append(handler)

    def publish(self, topic: str, key: str) -> None:
        """Announce a committed change to the other front ends."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def _deliver(self, topic: str, key: str) -> None:
        for handler in self._handlers.get(topic, ()):
            try:
                handler(key)
            except Exception:
                log.exception("applying a change of %s %s failed", topic, key)


class PostgresChangeFeed(ChangeFeed):
    """NOTIFY on publish; a thread LISTENs on its own connection and hands what
    other front ends announced to the event loop."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self._engine = engine
        # Our own announcements come back to us too; the origin tells them apart.
        self._origin = uuid.uuid4().hex
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._listening = threading.Event()

    def publish(self, topic: str, key: str) -> None:
        payload = json.dumps({"o": self._origin, "t": topic, "k": key})
        with self._engine.begin() as conn:
            conn.execute(text("SELECT pg_notify(:channel, :payload)"),
                         {"channel": CHANNEL, "payload": payload})

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._listen, args=(loop,), name="lamina-changes",
                                        daemon=True)
        self._thread.start()
        # Changes made after start() returns are not missed.
        await loop.run_in_executor(None, self._listening.wait, 10.0)

    async def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5.0)

    def _conninfo(self) -> str:
        url = self._engine.url.set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        import psycopg  # only with PostgreSQL

        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._conninfo(), autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._received(loop, note.payload)
            except Exception:
                if self._stopping.is_set():
                    return
                # A lost connection may have lost announcements: drop every cache.
                log.exception("change feed connection lost; reconnecting")
                loop.call_soon_threadsafe(self._deliver_all)
                self._stopping.wait(1.0)

    def _received(self, loop: asyncio.AbstractEventLoop, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if message.get("o") == self._origin:
            return
        loop.call_soon_threadsafe(self._deliver, str(message["t"]), str(message["k"]))

    def _deliver_all(self) -> None:
        for topic in list(self._handlers):
            self._deliver(topic, "*")


def change_feed(engine: Engine) -> ChangeFeed:
    """The feed that fits the database: shared for PostgreSQL, local otherwise."""
    if engine.dialect.name == "postgresql":
        return PostgresChangeFeed(engine)
    return ChangeFeed()


def unannounced(key: str) -> None:
    """What a registry announces through when no feed is attached (one process)."""


class Leadership:
    """Whether this front end is the one that runs a once-per-database task (the
    schedule timer). With SQLite there is one front end: always. With PostgreSQL the
    holder of a session advisory lock is; the lock goes with its connection, so when
    the holder stops or dies another front end takes over at its next look."""

    def __init__(self, engine: Engine, name: str) -> None:
        self._engine = engine
        # Advisory locks are named by a 64-bit number.
        self._key = int.from_bytes(name.encode()[:8].ljust(8, b"\0"), "big", signed=True)
        self._conn: Any = None
        self._holding = False

    def held(self) -> bool:
        if self._engine.dialect.name != "postgresql":
            return True
        try:
            if self._conn is None:
                self._conn = self._engine.connect()
                self._conn.detach()  # closing it must end the session, and the lock
            if self._holding:
                # Still connected is still holding.
                self._conn.execute(text("SELECT 1"))
            else:
                self._holding = bool(self._conn.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}).scalar())
            self._conn.commit()
            return self._holding
        except Exception:
            log.exception("checking leadership failed")
            self.release()
        return False

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None
        self._holding = False
