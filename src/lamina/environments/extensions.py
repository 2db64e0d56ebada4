"""Extensions of one environment: their registrations, states and the gates they hold.

Lambda's extension lifecycle (the runtime interface emulator keeps the same facts
in `registrations.go` and its gates):

- External extensions are the executables in `/opt/extensions`. They start before
  the runtime and must each register (`POST /2020-01-01/extension/register`); the
  runtime starts only when all of them have (`externals_registered`).
- Internal extensions register from the runtime's own process, under any other
  name, until INIT ends. They may not subscribe to SHUTDOWN.
- INIT ends when the runtime and every extension wait in `event/next` (`all_waiting`).
- An INVOKE event goes to every extension subscribed to it; the invocation is over
  for billing once each of them is back in `event/next` (Lambda's post-runtime
  phase): `all_waiting` again.
- SHUTDOWN goes to the external extensions subscribed to it, with a deadline;
  whoever has not called next (or exited) by then is killed with the sandbox.
- An extension that exits (crashes) ends the environment; the launcher inside the
  sandbox reports such exits (see launcher.py).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

# AWS's event types: INVOKE and SHUTDOWN are all there are.
EVENT_TYPES = frozenset({"INVOKE", "SHUTDOWN"})
# The Shutdown phase's limit: 2,000 ms with external extensions, 500 ms when only
# internal ones are registered (Lambda's documented figures).
SHUTDOWN_EXTERNAL_MS = 2000
SHUTDOWN_INTERNAL_MS = 500
# How the launcher names the runtime when it reports its exit during SHUTDOWN (no
# file in /opt/extensions has this name: it has a slash).
RUNTIME_NAME = "lamina/runtime"


class ExtensionKind(enum.Enum):
    EXTERNAL = "external"
    INTERNAL = "internal"


class ExtensionState(enum.Enum):
    REGISTERED = "registered"  # registered, not yet in event/next
    WAITING = "waiting"  # in event/next: done with whatever it was given
    BUSY = "busy"  # has an event it has not finished
    EXITED = "exited"


class ExtensionsApiError(Exception):
    """A refused Extensions API call, with the status and AWS error type to answer."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


@dataclass
class Extension:
    name: str
    kind: ExtensionKind
    events: frozenset[str]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: ExtensionState = ExtensionState.REGISTERED
    queue: collections.deque[dict[str, Any]] = field(default_factory=collections.deque)
    waiter: asyncio.Future[dict[str, Any]] | None = None
    # What it reported through init/error or exit/error, or how it exited.
    error_type: str | None = None


class Extensions:
    """The registry and its gates; one per environment."""

    def __init__(self, external_names: list[str]) -> None:
        self.external_names = tuple(external_names)
        self._by_id: dict[str, Extension] = {}
        self._by_name: dict[str, Extension] = {}
        self.registration_open = True
        self._changed = asyncio.Event()
        # Told of each registration (the platform.extension event).
        self.on_register: Callable[[Extension], None] | None = None
        # Set when an extension exits or fails while the environment depends on it.
        self.crashed: Extension | None = None
        # Set when SHUTDOWN begins (the launcher then sends the runtime SIGTERM).
        self.stopping = asyncio.Event()
        # When the last external extension registered (perf_counter): the end of
        # Lambda's Extension init phase.
        self.externals_ready_at: float | None = None
        self.runtime_exited = asyncio.Event()

    # -- registry ---------------------------------------------------------------------

    @property
    def any_registered(self) -> bool:
        return bool(self._by_id)

    def by_id(self, identifier: str | None) -> Extension:
        if not identifier:
            raise ExtensionsApiError(403, "Extension.MissingExtensionIdentifier",
                                     "Missing Lambda-Extension-Identifier header")
        extension = self._by_id.get(identifier)
        if extension is None:
            raise ExtensionsApiError(403, "Extension.InvalidExtensionIdentifier",
                                     "Invalid Lambda-Extension-Identifier")
        return extension

    def register(self, name: str | None, events: list[Any]) -> Extension:
        if not name:
            raise ExtensionsApiError(403, "Extension.InvalidExtensionName",
                                     "Missing Lambda-Extension-Name header")
        if not self.registration_open:
            raise ExtensionsApiError(403, "Extension.RegistrationClosed",
                                     "Extension registration is closed: INIT is over")
        if name in self._by_name:
            raise ExtensionsApiError(409, "Extension.AlreadyRegistered",
                                     f"Extension {name} is already registered")
        unknown = [event for event in events if event not in EVENT_TYPES]
        if unknown:
            raise ExtensionsApiError(400, "InvalidEventType",
                                     f"Invalid event type(s) {unknown}: valid types are "
                                     "INVOKE and SHUTDOWN")
        kind = ExtensionKind.EXTERNAL if name in self.external_names else ExtensionKind.INTERNAL
        if kind is ExtensionKind.INTERNAL and "SHUTDOWN" in events:
            raise ExtensionsApiError(400, "ShutdownEventNotSupportedForInternalExtension",
                                     "Internal extensions cannot register for the SHUTDOWN event")
        extension = Extension(name, kind, frozenset(events))
        self._by_id[extension.id] = extension
        self._by_name[name] = extension
        if self.externals_ready_at is None and self.externals_registered():
            self.externals_ready_at = time.perf_counter()
        if self.on_register is not None:
            self.on_register(extension)
        self._notify()
        return extension

    # -- events -----------------------------------------------------------------------

    async def next_event(self, extension: Extension) -> dict[str, Any]:
        """An extension's event/next: it is done with its last event; wait for one."""
        if extension.state is not ExtensionState.EXITED:
            extension.state = ExtensionState.WAITING
        self._notify()
        if extension.queue:
            extension.state = ExtensionState.BUSY
            return extension.queue.popleft()
        loop = asyncio.get_running_loop()
        extension.waiter = loop.create_future()
        try:
            event = await extension.waiter
        finally:
            extension.waiter = None
        return event

    def dispatch(self, event_type: str, event: dict[str, Any]) -> list[Extension]:
        """Give `event` to every living extension subscribed to `event_type`."""
        given = []
        for extension in self._by_id.values():
            if event_type not in extension.events or extension.state is ExtensionState.EXITED:
                continue
            extension.state = ExtensionState.BUSY
            waiter = extension.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(event)
            else:
                extension.queue.append(event)
            given.append(extension)
        self._notify()
        return given

    def report_error(self, extension: Extension, error_type: str | None) -> None:
        """init/error or exit/error: the extension failed; the environment cannot go on."""
        extension.error_type = error_type or "Extension.UnknownReason"
        self.crashed = self.crashed or extension
        self._notify()

    def exited(self, name: str, status: int) -> None:
        """The launcher saw an external extension's process end (or, during SHUTDOWN,
        the runtime's)."""
        if name == RUNTIME_NAME:
            self.runtime_exited.set()
            self._notify()
            return
        extension = self._by_name.get(name)
        if extension is None:
            # It exited before registering: as much a crash as any other.
            extension = Extension(name, ExtensionKind.EXTERNAL, frozenset())
            self._by_name[name] = extension
        extension.state = ExtensionState.EXITED
        if extension.error_type is None:
            extension.error_type = "Extension.Crash"
        self.crashed = self.crashed or extension
        if extension.waiter is not None and not extension.waiter.done():
            extension.waiter.cancel()
        self._notify()

    # -- gates ------------------------------------------------------------------------

    def externals_registered(self) -> bool:
        registered = {extension.name for extension in self._by_id.values()}
        return all(name in registered for name in self.external_names)

    def all_waiting(self) -> bool:
        return all(extension.state in (ExtensionState.WAITING, ExtensionState.EXITED)
                   for extension in self._by_id.values())

    def has_external(self) -> bool:
        return any(e.kind is ExtensionKind.EXTERNAL for e in self._by_id.values())

    async def until(self, condition: Callable[[], bool], stop_on_crash: bool = True) -> None:
        """Wait until `condition` holds or (`stop_on_crash`) an extension crashed
        (check `crashed`)."""
        while not condition() and (self.crashed is None or not stop_on_crash):
            self._changed.clear()
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
