"""Helper processes of the sandbox (bubblewrap, slirp4netns), started without
asyncio's subprocess machinery.

asyncio's default child watcher on this Python starts a thread per child and waits
until it runs, with the event loop stopped meanwhile; with a hundred sandboxes
starting at once that, not the processes themselves, took most of the loop's time
(two helpers per sandbox). Here the process is started with subprocess.Popen on
the loop's thread (vfork and exec) and its exit is read from a pidfd the loop
watches: no thread, no watcher.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from typing import Any


class Child:
    """A running helper process: its `pid`, `returncode` (None while it runs,
    -N when killed by signal N) and `wait()`, like asyncio's Process."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._exited: asyncio.Future[int] = loop.create_future()
        self._pidfd = os.pidfd_open(popen.pid)
        loop.add_reader(self._pidfd, self._reap)

    @classmethod
    def start(cls, argv: list[str], **options: Any) -> Child:
        """Popen(argv, **options), on the event loop's thread."""
        return cls(subprocess.Popen(argv, **options))

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def _reap(self) -> None:
        if self._popen.poll() is None:  # readable only once it has exited; be sure
            return
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        if not self._exited.done():
            self._exited.set_result(self._popen.returncode)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)
