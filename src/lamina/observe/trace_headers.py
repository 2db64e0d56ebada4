"""The X-Ray trace header every invocation carries, as Lambda makes it.

`X-Amzn-Trace-Id` in (Invoke, InvokeWithResponseStream, function URLs), the
function's `_X_AMZN_TRACE_ID` and the Runtime API's `Lambda-Runtime-Trace-Id` out:
the caller's Root when it sent a valid one, else a new X-Ray trace id; a new
Parent, the id of the invocation's own span (observe/tracing.py); Sampled as the
caller decided, else by X-Ray's default rule (the first request each second, then
5 %) with TracingConfig Active, and 0 with PassThrough, which passes a header on
but does not trace on its own.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

# Version 1 (the only one), 8 hex digits of epoch seconds, 24 random ones.
_ROOT = re.compile(r"1-[0-9a-f]{8}-[0-9a-f]{24}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
# The header as Lamina writes it, parsed without the general loop (the listener
# reads one per invocation).
_CANONICAL = re.compile(r"Root=(1-[0-9a-f]{8}-[0-9a-f]{24});Parent=([0-9a-f]{16});Sampled=([01])")
# Other fields (Lineage, ...) are passed on only when they look like X-Ray's and the
# header stays within X-Ray's size: they end up in the function's environment and
# in a Runtime API header.
_EXTRA = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}=[A-Za-z0-9:|._-]{0,128}")
MAX_HEADER_CHARS = 256


def valid_span_id(text: str) -> bool:
    return _SPAN_ID.fullmatch(text) is not None


def valid_root(root: str) -> bool:
    """1-<8 hex digits of epoch seconds>-<24 hex digits>."""
    return _ROOT.fullmatch(root) is not None


def new_root(now_s: float | None = None) -> str:
    epoch = int(time.time() if now_s is None else now_s)
    return f"1-{epoch:08x}-{os.urandom(12).hex()}"


def new_span_id() -> str:
    span_id = os.urandom(8).hex()
    return span_id if span_id != "0" * 16 else new_span_id()


def otel_trace_id(root: str) -> int:
    """The OTel trace id of an X-Ray Root: its 32 hex digits, without `1-` and the dash."""
    return int(root[2:10] + root[11:], 16)


@dataclass(frozen=True)
class TraceHeader:
    """An X-Amzn-Trace-Id: `Root=1-...;Parent=...;Sampled=1` (and fields X-Ray adds,
    such as Lineage, kept as they came)."""

    root: str
    parent: str | None = None
    # None: the sender left the decision to the receiver (absent, or `Sampled=?`).
    sampled: bool | None = None
    extra: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, value: str | None) -> TraceHeader | None:
        """The header, or None when it is absent or has no valid Root (X-Ray then
        starts a new trace, as if none had come)."""
        if not value:
            return None
        canonical = _CANONICAL.fullmatch(value)
        if canonical is not None:
            return cls(canonical[1], canonical[2], canonical[3] == "1")
        fields: dict[str, str] = {}
        extra = []
        for item in value.split(";"):
            key, sep, text = item.strip().partition("=")
            if not sep:
                continue
            if key in ("Root", "Parent", "Sampled"):
                fields.setdefault(key, text.strip())
            elif key != "Self" and _EXTRA.fullmatch(item.strip()):  # Self: a load balancer's own
                extra.append((key, text.strip()))
        root = fields.get("Root", "").lower()
        if not valid_root(root):
            return None
        parent = fields.get("Parent", "").lower() or None
        if parent is not None and not valid_span_id(parent):
            parent = None
        sampled = {"1": True, "0": False}.get(fields.get("Sampled", "?"))
        while extra and len(str(cls(root, parent, sampled, tuple(extra)))) > MAX_HEADER_CHARS:
            extra.pop()
        return cls(root, parent, sampled, tuple(extra))

    def __str__(self) -> str:
        text = f"Root={self.root}"
        if self.parent:
            text += f";Parent={self.parent}"
        if self.sampled is not None:
            text += f";Sampled={int(self.sampled)}"
        return text + "".join(f";{key}={value}" for key, value in self.extra)


class Sampler:
    """X-Ray's default sampling rule: a reservoir of `reservoir_per_s` requests each
    second, then `rate` of the rest."""

    def __init__(self, reservoir_per_s: int = 1, rate: float = 0.05) -> None:
        self.reservoir_per_s = reservoir_per_s
        self.rate = rate
        self._second = -1
        self._taken = 0
        self._random = random.Random()

    def sample(self) -> bool:
        """Called on the event loop, once per invocation Lambda decides for."""
        second = int(time.monotonic())
        if second != self._second:
            self._second, self._taken = second, 0
        if self._taken < self.reservoir_per_s:
            self._taken += 1
            return True
        return self._random.random() < self.rate


@dataclass(frozen=True)
class InvocationTrace:
    # What the function gets, with its own Parent: the invocation span's id.
    header: TraceHeader
    # The caller's segment, which the invocation's span is a child of.
    caller_parent: str | None


class TraceHeaders:
    """The trace header of each invocation, from the caller's and the function's
    TracingConfig."""

    def __init__(self, sampler: Sampler | None = None) -> None:
        self.sampler = sampler or Sampler()

    def for_invocation(self, tracing_mode: str, incoming: str | None) -> InvocationTrace:
        caller = TraceHeader.parse(incoming)
        sampled = caller.sampled if caller is not None else None
        if sampled is None:
            # The decision is Lambda's: X-Ray's rule with Active; PassThrough does not
            # trace on its own (it still passes a header on, unsampled).
            sampled = tracing_mode == "Active" and self.sampler.sample()
        # One system call for both ids: they are seen by the function, so not from a
        # generator whose state its outputs would give away.
        random_hex = os.urandom(20).hex()
        span_id = random_hex[24:] if random_hex[24:] != "0" * 16 else new_span_id()
        if caller is None:
            root = f"1-{int(time.time()):08x}-{random_hex[:24]}"
            return InvocationTrace(TraceHeader(root, span_id, sampled), None)
        return InvocationTrace(TraceHeader(caller.root, span_id, sampled, caller.extra),
                               caller.parent)


def otlp_configured(env: Mapping[str, str]) -> bool:
    """Whether an OTLP collector is named (the OTel SDK's own variables)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
