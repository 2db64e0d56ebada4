"""Tracing: X-Ray trace headers for every invocation, and spans over OTLP.

Three things, as Lambda does them:

- The trace header. Every invocation carries one (`X-Amzn-Trace-Id` in, the
  function's `_X_AMZN_TRACE_ID` and the Runtime API's `Lambda-Runtime-Trace-Id`
  out): the caller's Root when it sent one, else a new X-Ray trace id; a new
  Parent, the id of the invocation's own span; Sampled as the caller decided,
  else by X-Ray's default rule (the first request each second, then 5 %) with
  TracingConfig Active, and 0 with PassThrough.
- Spans. With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) set, each
  sampled invocation becomes the spans X-Ray shows for a function: one for the
  invocation with children Initialization (cold starts only), Invocation (the
  runtime's work) and Overhead (extensions' post-invoke work until REPORT). They
  are made from the environment's lifecycle events (observe/events.py) after the
  fact, with the ids the header named (the X-Ray Root is the OTel trace id
  without `1-` and the dash; Parent is the span id), and handed to a
  BatchSpanProcessor, whose thread exports them: the event loop only appends to
  a queue. Unset, no listener is installed and nothing is spent.
- The X-Ray daemon. Each sandbox has a UDP socket at AWS_XRAY_DAEMON_ADDRESS (the
  sandbox backend binds it); what the X-Ray SDK or Powertools Tracer send there
  (`{"format":"json","version":1}` and a newline, then a segment or subsegment
  document) arrives as `TraceSegment` events and becomes spans of the same trace,
  parented as the document says: the SDK's subsegments name the header's Parent,
  the invocation's span.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lamina.observe.events import (
    InitReport,
    InitStart,
    InvokeReport,
    InvokeStart,
    LifecycleEvent,
    LifecycleListener,
    RuntimeDone,
    TraceSegment,
)

log = logging.getLogger("lamina.tracing")

TRACING_MODES = ("Active", "PassThrough")
# The X-Ray SDK's documents start with this line (the daemon protocol).
DAEMON_HEADER = b'{"format":"json","version":1}'
# Where the X-Ray SDK finds the daemon inside a sandbox (Lambda: 169.254.79.129:2000;
# here the sandbox's own loopback, where nothing else can be reached).
DAEMON_PORT = 2000
INSTRUMENTATION_SCOPE = "lamina"
# The only X-Ray trace id version there is.
_HEX = frozenset("0123456789abcdef")


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and set(text) <= _HEX


def valid_root(root: str) -> bool:
    """1-<8 hex digits of epoch seconds>-<24 hex digits>."""
    return len(root) == 35 and root[:2] == "1-" and root[10] == "-" and \
        _is_hex(root[2:10], 8) and _is_hex(root[11:], 24)


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
        fields: dict[str, str] = {}
        extra = []
        for item in value.split(";"):
            key, sep, text = item.strip().partition("=")
            if not sep:
                continue
            if key in ("Root", "Parent", "Sampled"):
                fields.setdefault(key, text.strip())
            elif key != "Self":  # what a load balancer adds for itself
                extra.append((key, text.strip()))
        root = fields.get("Root", "").lower()
        if not valid_root(root):
            return None
        parent = fields.get("Parent", "").lower() or None
        if parent is not None and not _is_hex(parent, 16):
            parent = None
        sampled = {"1": True, "0": False}.get(fields.get("Sampled", "?"))
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
        self._lock = threading.Lock()
        self._random = random.Random()

    def sample(self) -> bool:
        second = int(time.monotonic())
        with self._lock:
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
        if caller is None:
            return InvocationTrace(TraceHeader(new_root(), new_span_id(), sampled), None)
        return InvocationTrace(TraceHeader(caller.root, new_span_id(), sampled, caller.extra),
                               caller.parent)


# -- spans ------------------------------------------------------------------------------


def otlp_configured(env: Mapping[str, str]) -> bool:
    """Whether an OTLP collector is named (the OTel SDK's own variables)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


@dataclass(frozen=True)
class FunctionResource:
    """What the spans of one function version say about where they ran."""

    function_name: str
    version: str
    memory_size_mb: int
    region: str
    account_id: str
    architecture: str = "x86_64"


class InvocationTracer:
    """Turns environments' lifecycle events (and the X-Ray documents functions send)
    into OTel spans, exported over OTLP/HTTP in the background."""

    def __init__(self, processor: Any) -> None:
        # Imported here so a server without a collector never loads the SDK.
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self._processor = processor
        self._scope = InstrumentationScope(INSTRUMENTATION_SCOPE)
        self._resources: dict[FunctionResource, Any] = {}

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> InvocationTracer | None:
        """A tracer exporting to the collector OTEL_EXPORTER_OTLP_ENDPOINT names (the
        OTel SDK reads it, and OTEL_EXPORTER_OTLP_HEADERS, OTEL_BSP_* and the rest);
        None when none is named."""
        if not otlp_configured(os.environ if env is None else env):
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        return cls(BatchSpanProcessor(OTLPSpanExporter()))

    def shutdown(self) -> None:
        """Export what is queued, and stop the exporting thread."""
        self._processor.shutdown()

    def _resource(self, function: FunctionResource) -> Any:
        found = self._resources.get(function)
        if found is None:
            from opentelemetry.sdk.resources import Resource

            found = self._resources[function] = Resource.create({
                "service.name": function.function_name,
                "cloud.provider": "aws",
                "cloud.platform": "aws_lambda",
                "cloud.region": function.region,
                "cloud.account.id": function.account_id,
                "faas.name": function.function_name,
                "faas.version": function.version,
                "faas.max_memory": function.memory_size_mb * 1024 * 1024,
                "host.arch": "arm64" if function.architecture == "arm64" else "amd64",
            })
        return found

    def listener_for(self, function: FunctionResource) -> LifecycleListener:
        """The listener one environment of this function version publishes to."""
        return _EnvironmentSpans(self, self._resource(function))

    def _emit(self, span: Any) -> None:
        self._processor.on_end(span)


@dataclass
class _Open:
    """An invocation between its START and its REPORT."""

    header: TraceHeader
    caller_parent: str | None
    request_id: str
    started_ns: int
    runtime_done_ns: int | None = None


class _EnvironmentSpans:
    """One environment's spans: it remembers INIT (for the first invocation's
    Initialization span) and the open invocation."""

    def __init__(self, tracer: InvocationTracer, resource: Any) -> None:
        self._tracer = tracer
        self._resource = resource
        self._init: tuple[int, int] | None = None
        self._init_started_ns: int | None = None
        self._open: _Open | None = None

    def __call__(self, event: LifecycleEvent) -> None:
        if isinstance(event, InvokeStart):
            header = TraceHeader.parse(event.trace_id)
            if header is not None and header.sampled and header.parent:
                self._open = _Open(header, event.parent_id, event.request_id, time.time_ns())
        elif isinstance(event, RuntimeDone):
            if self._open is not None and self._open.request_id == event.request_id:
                self._open.runtime_done_ns = time.time_ns()
        elif isinstance(event, InvokeReport):
            opened, self._open = self._open, None
            init, self._init = self._init, None
            if opened is not None and opened.request_id == event.request_id:
                self._invocation_spans(opened, event,
                                       init if event.init_duration_ms is not None else None)
        elif isinstance(event, TraceSegment):
            self._segment(event.data)
        elif isinstance(event, InitStart):
            self._init_started_ns = time.time_ns()
        elif isinstance(event, InitReport) and self._init_started_ns is not None:
            self._init = (self._init_started_ns, time.time_ns())

    def _invocation_spans(self, opened: _Open, report: InvokeReport,
                          init: tuple[int, int] | None) -> None:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import (
            SpanContext,
            SpanKind,
            Status,
            StatusCode,
            TraceFlags,
        )

        ended_ns = time.time_ns()
        trace_id = otel_trace_id(opened.header.root)
        flags = TraceFlags(TraceFlags.SAMPLED)
        assert opened.header.parent is not None
        context = SpanContext(trace_id, int(opened.header.parent, 16), False, flags)
        caller = (SpanContext(trace_id, int(opened.caller_parent, 16), True, flags)
                  if opened.caller_parent else None)
        failed = report.status != "success"
        status = Status(StatusCode.ERROR, report.error_type or report.status) if failed else Status()
        attributes: dict[str, Any] = {
            "faas.invocation_id": report.request_id,
            "faas.coldstart": init is not None,
            "cloud.resource_id": report.invoked_function_arn,
            "aws.lambda.invoked_arn": report.invoked_function_arn,
            "aws.request_id": report.request_id,
            "aws.xray.trace_id": opened.header.root,
            "aws.lambda.billed_duration_ms": report.billed_duration_ms,
            "aws.lambda.max_memory_used_mb": report.max_memory_used_mb,
        }
        if report.init_duration_ms is not None:
            attributes["aws.lambda.init_duration_ms"] = report.init_duration_ms
        if failed:
            attributes["error.type"] = report.error_type or report.status
        started_ns = init[0] if init is not None else opened.started_ns
        runtime_done_ns = opened.runtime_done_ns or ended_ns
        scope = self._tracer._scope

        def child(name: str, start_ns: int, end_ns: int) -> ReadableSpan:
            return ReadableSpan(
                name, SpanContext(trace_id, int(new_span_id(), 16), False, flags), context,
                self._resource, {"faas.invocation_id": report.request_id},
                kind=SpanKind.INTERNAL, start_time=start_ns, end_time=end_ns,
                instrumentation_scope=scope)

        spans = [ReadableSpan(
            self._resource.attributes.get("faas.name", "function"), context, caller,
            self._resource, attributes, kind=SpanKind.SERVER, status=status,
            start_time=started_ns, end_time=ended_ns, instrumentation_scope=scope)]
        if init is not None:
            spans.append(child("Initialization", init[0], init[1]))
        spans.append(child("Invocation", opened.started_ns, runtime_done_ns))
        if opened.runtime_done_ns is not None:
            spans.append(child("Overhead", runtime_done_ns, ended_ns))
        for span in spans:
            self._tracer._emit(span)

    def _segment(self, data: bytes) -> None:
        """One datagram of the X-Ray daemon protocol: the header line, then a document."""
        header, newline, body = data.partition(b"\n")
        if not newline:
            return
        try:
            if json.loads(header).get("format") != "json":
                return
            document = json.loads(body)
        except (ValueError, RecursionError, AttributeError):
            return
        if isinstance(document, dict):
            for span in xray_spans(document, self._resource, self._tracer._scope):
                self._tracer._emit(span)


def xray_spans(document: dict[str, Any], resource: Any, scope: Any,
               trace_root: str | None = None, parent_id: str | None = None) -> list[Any]:
    """The spans of an X-Ray segment or subsegment document and its nested subsegments
    (which inherit the trace id and have their parent's id as parent). Documents
    still in progress are skipped: the SDK sends them again when they close."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import (
        SpanContext,
        SpanKind,
        Status,
        StatusCode,
        TraceFlags,
    )

    root = document.get("trace_id", trace_root)
    span_id = document.get("id")
    parent = document.get("parent_id", parent_id)
    start, end = document.get("start_time"), document.get("end_time")
    if (document.get("in_progress") or not isinstance(root, str) or not valid_root(root)
            or not isinstance(span_id, str) or not _is_hex(span_id, 16)
            or not isinstance(start, (int, float)) or not isinstance(end, (int, float))):
        return []
    trace_id = otel_trace_id(root)
    flags = TraceFlags(TraceFlags.SAMPLED)
    context = SpanContext(trace_id, int(span_id, 16), False, flags)
    parent_context = (SpanContext(trace_id, int(parent, 16), False, flags)
                      if isinstance(parent, str) and _is_hex(parent, 16) else None)
    attributes: dict[str, Any] = {"aws.xray.segment_id": span_id}
    for key, value in (document.get("annotations") or {}).items():
        if isinstance(value, (str, bool, int, float)):
            attributes[f"aws.xray.annotations.{key}"] = value
    for namespace, values in (document.get("metadata") or {}).items():
        attributes[f"aws.xray.metadata.{namespace}"] = json.dumps(values, default=str)
    http = document.get("http") or {}
    request, response = http.get("request") or {}, http.get("response") or {}
    if isinstance(request.get("method"), str):
        attributes["http.request.method"] = request["method"]
    if isinstance(request.get("url"), str):
        attributes["url.full"] = request["url"]
    if isinstance(response.get("status"), int):
        attributes["http.response.status_code"] = response["status"]
    aws = document.get("aws") or {}
    if document.get("namespace") == "aws":
        attributes["rpc.system"] = "aws-api"
        attributes["rpc.service"] = str(document.get("name", ""))
        if isinstance(aws.get("operation"), str):
            attributes["rpc.method"] = aws["operation"]
    if isinstance(aws.get("region"), str):
        attributes["cloud.region"] = aws["region"]
    events = []
    cause = document.get("cause")
    for exception in (cause.get("exceptions") or []) if isinstance(cause, dict) else []:
        if isinstance(exception, dict):
            events.append(Event("exception", {
                "exception.type": str(exception.get("type", "")),
                "exception.message": str(exception.get("message", "")),
            }, int(end * 1e9)))
    failed = document.get("fault") or document.get("error")
    status = Status(StatusCode.ERROR) if failed else Status()
    kind = SpanKind.CLIENT if document.get("namespace") in ("aws", "remote") else SpanKind.INTERNAL
    spans = [ReadableSpan(
        str(document.get("name", "subsegment"))[:200], context, parent_context, resource,
        attributes, events, kind=kind, status=status, start_time=int(start * 1e9),
        end_time=int(end * 1e9), instrumentation_scope=scope)]
    for nested in document.get("subsegments") or []:
        if isinstance(nested, dict):
            spans.extend(xray_spans(nested, resource, scope, root, span_id))
    return spans
