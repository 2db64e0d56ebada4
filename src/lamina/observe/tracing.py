"""Spans per invocation over OTLP, and the X-Ray daemon's segments as spans.

With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) set, each sampled
invocation becomes the spans X-Ray shows for a function: one for the invocation
with children Initialization (cold starts only), Invocation (the runtime's work)
and Overhead (extensions' post-invoke work until REPORT). They are made from the
environment's lifecycle events (observe/events.py) after the fact, with the ids
the trace header (observe/trace_headers.py) named: the X-Ray Root is the OTel
trace id without `1-` and the dash, the function's Parent the invocation span's
id, the caller's Parent its parent. They go to a BatchSpanProcessor, whose thread
encodes and exports them: the event loop only builds them and appends to a queue.
Without a collector this module is not even imported.

Each sandbox has a UDP socket at AWS_XRAY_DAEMON_ADDRESS (the sandbox backend binds
it); what the X-Ray SDK or Powertools Tracer send there (`{"format":"json",
"version":1}`, a newline, then a segment or subsegment document) arrives as
`TraceSegment` events and becomes spans of the same trace, parented as the
document says: the SDK's subsegments name the header's Parent, the invocation's span.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from lamina.observe.events import (
    InitReport,
    InitStart,
    InvokeReport,
    InvokeStart,
    LifecycleEvent,
    LifecycleListener,
    RestoreReport,
    RestoreStart,
    RuntimeDone,
    TraceSegment,
)
from lamina.observe.trace_headers import (
    TraceHeader,
    otel_trace_id,
    otlp_configured,
    valid_root,
    valid_span_id,
)

INSTRUMENTATION_SCOPE = "lamina"
SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class _Resource(Resource):
    """A Resource whose hash is computed once: the OTLP encoder groups every span by
    its resource, and Resource hashes by serializing its attributes to JSON each
    time (a third of the exporting thread's work per span, measured)."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or super().__eq__(other)


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

    def __init__(self, processor: SpanProcessor, endpoint: str = "") -> None:
        self._processor = processor
        # Where the spans go, for people (the exporter has its own copy).
        self.endpoint = endpoint
        self.scope = InstrumentationScope(INSTRUMENTATION_SCOPE)
        self._resources: dict[FunctionResource, Resource] = {}

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> InvocationTracer | None:
        """A tracer exporting to the collector `env` (the process's environment by
        default) names in OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT
        (+ /v1/traces); None when none is named. The SDK reads the rest of its
        variables (OTEL_EXPORTER_OTLP_HEADERS, OTEL_BSP_*, ...) from the process's."""
        env = os.environ if env is None else env
        if not otlp_configured(env):
            return None
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or \
            env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").rstrip("/") + "/v1/traces"
        return cls(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)), endpoint)

    def shutdown(self) -> None:
        """Export what is queued, and stop the exporting thread."""
        self._processor.shutdown()

    def resource(self, function: FunctionResource) -> Resource:
        found = self._resources.get(function)
        if found is None:
            found = self._resources[function] = _Resource(Resource.create({
                "service.name": function.function_name,
                "cloud.provider": "aws",
                "cloud.platform": "aws_lambda",
                "cloud.region": function.region,
                "cloud.account.id": function.account_id,
                "faas.name": function.function_name,
                "faas.version": function.version,
                "faas.max_memory": function.memory_size_mb * 1024 * 1024,
                "host.arch": "arm64" if function.architecture == "arm64" else "amd64",
            }))
        return found

    def listener_for(self, function: FunctionResource) -> LifecycleListener:
        """The listener one environment of this function version publishes to."""
        return _EnvironmentSpans(self, function.function_name, self.resource(function))

    def emit(self, span: ReadableSpan) -> None:
        # BatchSpanProcessor.on_end only queues it; its thread encodes and sends.
        self._processor.on_end(span)


@dataclass
class _Open:
    """A sampled invocation between its START and its REPORT."""

    trace_id: int
    span_id: int
    caller_parent: str | None
    request_id: str
    root: str
    started_ns: int
    runtime_done_ns: int | None = None


class _EnvironmentSpans:
    """One environment's spans: it remembers INIT (for the first invocation's
    Initialization span) and the open invocation."""

    def __init__(self, tracer: InvocationTracer, function_name: str, resource: Resource) -> None:
        self._tracer = tracer
        self._name = function_name
        self._resource = resource
        self._init: tuple[int, int] | None = None
        self._init_started_ns: int | None = None
        self._open: _Open | None = None
        # By event type: a function's log lines (the most frequent events) cost one
        # dict lookup.
        self._handlers: dict[type, Any] = {
            InvokeStart: self._invoke_start, RuntimeDone: self._runtime_done,
            InvokeReport: self._invoke_report, TraceSegment: self._segment,
            InitStart: self._init_start, InitReport: self._init_report,
            RestoreStart: self._restore_start, RestoreReport: self._init_report,
        }
        # The cold start's phase span: INIT, or a SnapStart restore (as X-Ray names it).
        self._init_phase = "Initialization"

    def __call__(self, event: LifecycleEvent) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _init_start(self, event: InitStart) -> None:
        self._init_started_ns = time.time_ns()

    def _restore_start(self, event: RestoreStart) -> None:
        self._init_phase = "Restore"
        self._init_started_ns = time.time_ns()

    def _init_report(self, event: InitReport | RestoreReport) -> None:
        if self._init_started_ns is not None:
            self._init = (self._init_started_ns, time.time_ns())

    def _invoke_start(self, event: InvokeStart) -> None:
        header = TraceHeader.parse(event.trace_id)
        if header is not None and header.sampled and header.parent:
            self._open = _Open(otel_trace_id(header.root), int(header.parent, 16),
                               event.parent_id, event.request_id, header.root, time.time_ns())

    def _runtime_done(self, event: RuntimeDone) -> None:
        if self._open is not None and self._open.request_id == event.request_id:
            self._open.runtime_done_ns = time.time_ns()

    def _invoke_report(self, event: InvokeReport) -> None:
        opened, self._open = self._open, None
        init, self._init = self._init, None
        if opened is not None and opened.request_id == event.request_id:
            # Initialization only on the cold start that REPORT counts (not when a
            # provisioned environment's INIT ran long before).
            cold = event.init_duration_ms is not None or event.restore_duration_ms is not None
            self._invocation_spans(opened, event, init if cold else None)

    def _invocation_spans(self, opened: _Open, report: InvokeReport,
                          init: tuple[int, int] | None) -> None:
        ended_ns = time.time_ns()
        trace_id = opened.trace_id
        context = SpanContext(trace_id, opened.span_id, False, SAMPLED)
        caller = (SpanContext(trace_id, int(opened.caller_parent, 16), True, SAMPLED)
                  if opened.caller_parent else None)
        failed = report.status != "success"
        attributes: dict[str, Any] = {
            "faas.invocation_id": report.request_id,
            "faas.coldstart": init is not None,
            "cloud.resource_id": report.invoked_function_arn,
            "aws.xray.trace_id": opened.root,
            "aws.lambda.billed_duration_ms": report.billed_duration_ms,
            "aws.lambda.max_memory_used_mb": report.max_memory_used_mb,
        }
        if report.init_duration_ms is not None:
            attributes["aws.lambda.init_duration_ms"] = report.init_duration_ms
        if failed:
            attributes["error.type"] = report.error_type or report.status
        runtime_done_ns = opened.runtime_done_ns or ended_ns
        scope, resource = self._tracer.scope, self._resource
        child_attributes = {"faas.invocation_id": report.request_id}

        def child(name: str, start_ns: int, end_ns: int) -> ReadableSpan:
            # The function never sees these ids: the SDK's own generator will do
            # (no system call per span).
            span_id = random.getrandbits(64) or 1
            return ReadableSpan(
                name, SpanContext(trace_id, span_id, False, SAMPLED), context,
                resource, child_attributes, start_time=start_ns, end_time=end_ns,
                instrumentation_scope=scope)

        emit = self._tracer.emit
        emit(ReadableSpan(
            self._name, context, caller, resource, attributes, kind=SpanKind.SERVER,
            status=Status(StatusCode.ERROR, report.error_type or report.status) if failed else Status(),
            start_time=init[0] if init is not None else opened.started_ns, end_time=ended_ns,
            instrumentation_scope=scope))
        if init is not None:
            emit(child(self._init_phase, init[0], init[1]))
        emit(child("Invocation", opened.started_ns, runtime_done_ns))
        if opened.runtime_done_ns is not None:
            emit(child("Overhead", runtime_done_ns, ended_ns))

    def _segment(self, event: TraceSegment) -> None:
        """One datagram of the X-Ray daemon protocol: the header line, then a document."""
        header, newline, body = event.data.partition(b"\n")
        if not newline:
            return
        try:
            if json.loads(header).get("format") != "json":
                return
            document = json.loads(body)
        except (ValueError, RecursionError, AttributeError):
            return
        if isinstance(document, dict):
            for span in xray_spans(document, self._resource, self._tracer.scope):
                self._tracer.emit(span)


def xray_spans(document: dict[str, Any], resource: Resource, scope: InstrumentationScope,
               trace_root: str | None = None, parent_id: str | None = None) -> list[ReadableSpan]:
    """The spans of an X-Ray segment or subsegment document and its nested subsegments
    (which inherit the trace id and have their parent's id as parent). Documents
    still in progress are skipped: the SDK sends them again when they close."""
    root = document.get("trace_id", trace_root)
    span_id = document.get("id")
    parent = document.get("parent_id", parent_id)
    start, end = document.get("start_time"), document.get("end_time")
    if (document.get("in_progress") or not isinstance(root, str) or not valid_root(root)
            or not isinstance(span_id, str) or not valid_span_id(span_id)
            or not isinstance(start, (int, float)) or not isinstance(end, (int, float))):
        return []
    trace_id = otel_trace_id(root)
    context = SpanContext(trace_id, int(span_id, 16), False, SAMPLED)
    parent_context = (SpanContext(trace_id, int(parent, 16), False, SAMPLED)
                      if isinstance(parent, str) and valid_span_id(parent) else None)
    attributes: dict[str, Any] = {"aws.xray.segment_id": span_id}
    annotations = document.get("annotations")
    for key, value in annotations.items() if isinstance(annotations, dict) else ():
        if isinstance(value, (str, bool, int, float)):
            attributes[f"aws.xray.annotations.{key}"] = value
    metadata = document.get("metadata")
    for namespace, values in metadata.items() if isinstance(metadata, dict) else ():
        attributes[f"aws.xray.metadata.{namespace}"] = json.dumps(values, default=str)
    http = document.get("http")
    if isinstance(http, dict):
        request, response = http.get("request") or {}, http.get("response") or {}
        if isinstance(request, dict) and isinstance(request.get("method"), str):
            attributes["http.request.method"] = request["method"]
        if isinstance(request, dict) and isinstance(request.get("url"), str):
            attributes["url.full"] = request["url"]
        if isinstance(response, dict) and isinstance(response.get("status"), int):
            attributes["http.response.status_code"] = response["status"]
    aws = document.get("aws")
    aws = aws if isinstance(aws, dict) else {}
    if document.get("namespace") == "aws":
        attributes["rpc.system"] = "aws-api"
        attributes["rpc.service"] = str(document.get("name", ""))
        if isinstance(aws.get("operation"), str):
            attributes["rpc.method"] = aws["operation"]
    if isinstance(aws.get("region"), str):
        attributes["cloud.region"] = aws["region"]
    events = []
    cause = document.get("cause")
    exceptions = cause.get("exceptions") if isinstance(cause, dict) else None
    for exception in exceptions if isinstance(exceptions, list) else ():
        if isinstance(exception, dict):
            events.append(Event("exception", {
                "exception.type": str(exception.get("type", "")),
                "exception.message": str(exception.get("message", "")),
            }, int(end * 1e9)))
    failed = document.get("fault") or document.get("error")
    kind = SpanKind.CLIENT if document.get("namespace") in ("aws", "remote") else SpanKind.INTERNAL
    spans = [ReadableSpan(
        str(document.get("name", "subsegment"))[:200], context, parent_context, resource,
        attributes, events, kind=kind, status=Status(StatusCode.ERROR) if failed else Status(),
        start_time=int(start * 1e9), end_time=int(end * 1e9), instrumentation_scope=scope)]
    nested = document.get("subsegments")
    for subsegment in nested if isinstance(nested, list) else ():
        if isinstance(subsegment, dict):
            spans.extend(xray_spans(subsegment, resource, scope, root, span_id))
    return spans
