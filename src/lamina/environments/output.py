"""An environment's output capture: what its processes write, as log records.

Three pipes:

- stdout and stderr of the runtime and whatever it starts, split into lines:
  one line, one log event;
- stdout and stderr of the external extensions (launcher.py points them there),
  in lines too: Lambda keeps them apart as the Telemetry API's `extension` stream;
- the runtime client's framed records, on the descriptor named by
  `_LAMBDA_TELEMETRY_LOG_FD`: each record is one event however many lines it has
  (a traceback, a multi-line message), with the time the client stamped on it.
  A frame is AWS's: a 16-byte header (`>IIQ`: type, length, timestamp in
  microseconds) and the record's bytes. The type's top bytes are `0xa55a`; the
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
# A record larger than this is cut (CloudWatch's limit for one event is 256 KB).
MAX_RECORD_BYTES = 256 * 1024
# Called with each record and its timestamp in ms (None: now).
RecordSink = Callable[[str, "int | None"], None]


class _Pipe:
    """The read end of one pipe, non-blocking, watched by the event loop."""

    def __init__(self, on_data: Callable[[bytes], None], on_eof: Callable[[], None]) -> None:
        self.fd: int | None = None
        self._on_data = on_data
        self._on_eof = on_eof

    def open(self) -> int:
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        self.fd = read_end
        asyncio.get_running_loop().add_reader(read_end, self.read)
        return write_end

    def read(self) -> None:
        """Take in what is there now."""
        while self.fd is not None:
            try:
                chunk = os.read(self.fd, _READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                # EOF: every process holding the write end is gone.
                self._on_eof()
                self.close()
                return
            self._on_data(chunk)

    def close(self) -> None:
        if self.fd is None:
            return
        try:
            asyncio.get_running_loop().remove_reader(self.fd)
        except RuntimeError:
            pass
        os.close(self.fd)
        self.fd = None


class _Lines:
    def __init__(self, sink: RecordSink) -> None:
        self.sink = sink
        self.partial = b""
        self.pipe = _Pipe(self.feed, self.flush)

    def feed(self, chunk: bytes) -> None:
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        for line in lines:
            self.sink(line.decode("utf-8", "replace"), None)

    def flush(self) -> None:
        if self.partial:
            self.sink(self.partial.decode("utf-8", "replace"), None)
            self.partial = b""


class _Frames:
    def __init__(self, sink: RecordSink) -> None:
        self.sink = sink
        self.buffer = b""
        self.pipe = _Pipe(self.feed, lambda: None)

    def feed(self, chunk: bytes) -> None:
        data = self.buffer + chunk
        while len(data) >= FRAME_HEADER.size:
            kind, length, micros = FRAME_HEADER.unpack_from(data)
            if kind & FRAME_MAGIC_MASK != FRAME_MAGIC:
                # Not a frame: whatever wrote this did not speak the protocol.
                self.sink(data.decode("utf-8", "replace"), None)
                data = b""
                break
            end = FRAME_HEADER.size + length
            if len(data) < end:
                break
            record = data[FRAME_HEADER.size:FRAME_HEADER.size + min(length, MAX_RECORD_BYTES)]
            self.sink(record.decode("utf-8", "replace"), micros // 1000 or None)
            data = data[end:]
        self.buffer = data


class OutputCapture:
    def __init__(self, function_sink: RecordSink, extension_sink: RecordSink) -> None:
        self._stdout = _Lines(function_sink)
        self._frames = _Frames(function_sink)
        self._extensions = _Lines(extension_sink)

    def open(self) -> tuple[int, int, int]:
        """Write ends for the sandbox: (stdout and stderr, framed records, extensions'
        output). The caller closes them once the sandbox holds its copies, so that
        EOF means every process is gone."""
        return self._stdout.pipe.open(), self._frames.pipe.open(), self._extensions.pipe.open()

    def drain(self) -> None:
        """Take in everything written so far (the runtime writes before it posts)."""
        self._frames.pipe.read()
        self._stdout.pipe.read()
        self._extensions.pipe.read()

    def close(self) -> None:
        self.drain()
        for lines in (self._stdout, self._extensions):
            lines.flush()
        for pipe in (self._stdout.pipe, self._frames.pipe, self._extensions.pipe):
            pipe.close()
