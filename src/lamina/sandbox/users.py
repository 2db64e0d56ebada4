"""The unprivileged host user each namespaced sandbox runs as.

Inside, a function is Lambda's `sbx_user1051` (uid 993, gid 990). Outside, that
user is one host uid/gid from a subordinate range (default 1,000,000 to
1,065,535), never 0 and never a real account: bubblewrap is started as that uid,
so the user namespace it creates maps 993 onto it, and whatever a function
manages to touch on the host (a file it creates, a signal it sends, a kernel
setting it tries to write) is checked against an unprivileged stranger.

Each live sandbox holds its own uid, so two functions never share one: a uid is
taken with an exclusive `flock` on a lock file under the state directory, which
also keeps two Lamina servers on one machine from handing out the same uid. The
kernel drops the lock when the holder dies, so a crashed server's uids come back
by themselves.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from lamina.sandbox.base import SandboxError

DEFAULT_FIRST_UID = 1_000_000
DEFAULT_COUNT = 65_536


@dataclass(frozen=True)
class HostUser:
    uid: int
    lock_fd: int


class SandboxUsers:
    def __init__(self, lock_dir: Path, first_uid: int = DEFAULT_FIRST_UID,
                 count: int = DEFAULT_COUNT) -> None:
        if first_uid <= 0 or count <= 0:
            raise SandboxError("the sandbox uid range must lie above 0")
        self._dir = lock_dir
        self._dir.mkdir(mode=0o700, exist_ok=True)
        self.first_uid = first_uid
        self.count = count
        self._next = 0

    def acquire(self) -> HostUser:
        """A uid no other live sandbox holds (on this machine)."""
        for _ in range(self.count):
            index, self._next = self._next, (self._next + 1) % self.count
            uid = self.first_uid + index
            fd = os.open(self._dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return HostUser(uid, fd)
        raise SandboxError(f"all {self.count} sandbox uids from {self.first_uid} are in use")

    @staticmethod
    def release(user: HostUser) -> None:
        os.close(user.lock_fd)  # closing drops the flock
