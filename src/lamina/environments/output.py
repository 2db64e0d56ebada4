"""An environment's output capture: what its processes write, as log records.

Two pipes, as on Lambda:

- stdout and stderr of every process (runtime, extensions, whatever they start),
  split into lines: one line, one log event;
- the runtime client's framed records, on the descriptor named by
  `_LAMBDA_TELEMETRY_LOG_FD`: each record is one event however many lines it has
  (a traceback, a multi-line message), with the time the client stamped on it.
  A frame is AWS's: a 16-byte header (`>IIQ`: type, length, timestamp in
  microseconds) and the record's bytes. The type's top bytes are `0xa55a00`; the
  low byte says text (3) or JSON (2).
"""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Callable

_READ_CHUNK = 65536
FRAME_HEADER = struct.Struct(">IIQ")
FRAME_MAGIC = 0xA55A0000
FRAME_MAGIC_MASK = 0xFFFF0000
# A record larger than this is cut (Lambda's CloudWatch event limit is 256 KB).
MAX_RECORD_BYTES = 256 * 1024
# Called with each record and its timestamp in ms (None: now).
RecordSink = Callable[[str, "int | None"], None]


class OutputCapture:
    def __init__(self, sink: RecordSink) -> None:
        self._sink = sink
        self._stdout_fd: int | None = None
        self._frames_fd: int | None = None
        self._partial = b""
        self._frames = b""

    def open(self) -> tuple[int, int]:
        """The write ends to hand the sandbox: (stdout and stderr, framed records).
        The caller closes them once the sandbox holds its copies, so that EOF
        means every process is gone."""
        stdout_read, stdout_write = os.pipe()
        frames_read, frames_write = os.pipe()
        for fd in (stdout_read, frames_read):
            os.set_blocking(fd, False)
        self._stdout_fd, self._frames_fd = stdout_read, frames_read
        loop = asyncio.get_running_loop()
        loop.add_reader(stdout_read, self._read_stdout)
        loop.add_reader(frames_read, self._read_frames)
        return stdout_write, frames_write

    def drain(self) -> None:
        """Take in everything written so far (the runtime writes before it posts)."""
        self._read_frames()
        self._read_stdout()

    def _read(self, fd: int | None) -> bytes | None:
        """What is there now; b"" when nothing is, None at EOF."""
        if fd is None:
            return b""
        data = b""
        while True:
            try:
                chunk = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                return data
            except OSError:
                chunk = b""
            if not chunk:
                return data or None
            data += chunk

    def _read_stdout(self) -> None:
        chunk = self._read(self._stdout_fd)
        if chunk is None:
            self._close_stdout()
            return
        if not chunk:
            return
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            self._sink(line.decode("utf-8", "replace"), None)

    def _read_frames(self) -> None:
        chunk = self._read(self._frames_fd)
        if chunk is None:
            self._close_fd("_frames_fd")
            chunk = b""
        data = self._frames + chunk
        while len(data) >= FRAME_HEADER.size:
            kind, length, micros = FRAME_HEADER.unpack_from(data)
            if kind & FRAME_MAGIC_MASK != FRAME_MAGIC:
                # Not a frame: whatever wrote this did not speak the protocol.
                self._sink(data.decode("utf-8", "replace"), None)
                data = b""
                break
            end = FRAME_HEADER.size + length
            if len(data) < end:
                break
            record = data[FRAME_HEADER.size:min(end, FRAME_HEADER.size + MAX_RECORD_BYTES)]
            self._sink(record.decode("utf-8", "replace"), micros // 1000 or None)
            data = data[end:]
        self._frames = data

    def _close_stdout(self) -> None:
        if self._partial:
            self._sink(self._partial.decode("utf-8", "replace"), None)
            self._partial = b""
        self._close_fd("_stdout_fd")

    def _close_fd(self, attribute: str) -> None:
        fd = getattr(self, attribute)
        if fd is None:
            return
        try:
            asyncio.get_running_loop().remove_reader(fd)
        except RuntimeError:
            pass
        os.close(fd)
        setattr(self, attribute, None)

    def close(self) -> None:
        self.drain()
        self._close_stdout()
        self._close_fd("_frames_fd")
