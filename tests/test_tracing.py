"""Tracing: TracingConfig, the X-Amzn-Trace-Id a function gets, spans over OTLP/HTTP
and the X-Ray daemon address, against a real server and a real OTLP receiver.

The server exports to an OTLP/HTTP receiver this module runs on loopback (the
spans decoded with opentelemetry-proto); its sampling rate is 1.0 so that an
Active function without a caller's header is sampled every time, not only on
the first request of a second.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.conftest import Server
from tests.helpers import aws_error, error_message, function_args, make_zip
from tests.test_function_urls import Url, make_public, package, site_packages

TRACE_ENV = """
import os

def handler(event, context):
    return os.environ.get("_X_AMZN_TRACE_ID")
"""

URL_TRACE_ENV = """
import json, os

def handler(event, context):
    return {"statusCode": 200, "body": json.dumps({
        "env": os.environ.get("_X_AMZN_TRACE_ID"),
        "event": event["headers"].get("x-amzn-trace-id")})}
"""

POWERTOOLS_TRACER = """
import os
from aws_lambda_powertools import Tracer

tracer = Tracer(service="orders")


@tracer.capture_method
def place_order(order_id):
    tracer.put_annotation(key="order_id", value=order_id)
    return order_id


@tracer.capture_lambda_handler
def handler(event, context):
    place_order(event["order_id"])
    return {"trace": os.environ["_X_AMZN_TRACE_ID"],
            "daemon": os.environ.get("AWS_XRAY_DAEMON_ADDRESS"),
            "context_missing": os.environ.get("AWS_XRAY_CONTEXT_MISSING")}
"""

# A function that speaks the daemon protocol itself, as every X-Ray SDK does: a
# subsegment with a nested AWS call that failed, one still in progress (sent again
# when it closes, so not a span yet) and a datagram that is no document at all.
RAW_DAEMON = """
import json, os, socket, time

def handler(event, context):
    header = dict(item.split("=", 1) for item in os.environ["_X_AMZN_TRACE_ID"].split(";"))
    host, port = os.environ["AWS_XRAY_DAEMON_ADDRESS"].split(":")
    now = time.time()
    work = {"type": "subsegment", "trace_id": header["Root"], "parent_id": header["Parent"],
            "id": "aaaaaaaaaaaaaaaa", "name": "work", "start_time": now - 0.002, "end_time": now,
            "annotations": {"tenant": "t-1", "weight": 3}, "metadata": {"debug": {"k": [1, 2]}},
            "subsegments": [{"id": "bbbbbbbbbbbbbbbb", "name": "DynamoDB", "namespace": "aws",
                             "start_time": now - 0.001, "end_time": now, "fault": True,
                             "aws": {"operation": "GetItem", "region": "us-east-1"},
                             "http": {"response": {"status": 500}},
                             "cause": {"exceptions": [{"type": "ClientError",
                                                       "message": "boom"}]}}]}
    pending = dict(work, id="cccccccccccccccc", name="pending", in_progress=True,
                   subsegments=[])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for document in (pending, work):
            sock.sendto(b'{"format":"json","version":1}\\n' + json.dumps(document).encode(),
                        (host, int(port)))
        sock.sendto(b"not the protocol", (host, int(port)))
    return os.environ["_X_AMZN_TRACE_ID"]
"""

HEADER = re.compile(r"Root=(1-[0-9a-f]{8}-[0-9a-f]{24});Parent=([0-9a-f]{16});Sampled=([01])")


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    start_ns: int
    end_ns: int


def _value(any_value: Any) -> Any:
    return getattr(any_value, any_value.WhichOneof("value")) if any_value.WhichOneof("value") else None


class OtlpReceiver:
    """An OTLP/HTTP collector on loopback that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver._received(self.path, body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _received(self, path: str, body: bytes) -> None:
        assert path == "/v1/traces", path
        request = ExportTraceServiceRequest.FromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(Span(
                        span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(),
                        span.name, span.kind, {kv.key: _value(kv.value) for kv in span.attributes},
                        resource, span.start_time_unix_nano, span.end_time_unix_nano))
        with self._changed:
            self.spans.extend(spans)
            self._changed.notify_all()

    def wait_for(self, found: Callable[[list[Span]], bool], timeout: float = 30) -> list[Span]:
        """Every span received, once `found` holds for them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not found(self.spans):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"spans never arrived; got {[s.name for s in self.spans]}"
                self._changed.wait(remaining)
            return list(self.spans)

    def trace(self, trace_id: str, count: int) -> list[Span]:
        """The spans of one trace, once at least `count` have arrived."""
        spans = self.wait_for(lambda spans: sum(s.trace_id == trace_id for s in spans) >= count)
        return [span for span in spans if span.trace_id == trace_id]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def traced(start_server: Callable[..., Server], receiver: OtlpReceiver) -> Server:
    return start_server({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                         "OTEL_BSP_SCHEDULE_DELAY": "50",
                         "LAMINA_TRACE_SAMPLING_RATE": "1.0"}, name="lamina-traced")


@pytest.fixture(scope="module")
def lam(traced: Server) -> Any:
    return traced.client()


def new_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create(lam: Any, name: str, code: str, **overrides: Any) -> None:
    lam.create_function(**function_args(name, make_zip({"app.py": code}), **overrides))
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.1})


def invoke(lam: Any, name: str, trace_header: str | None = None, payload: bytes = b"{}",
           operation: str = "Invoke") -> Any:
    """Invoke (or InvokeWithResponseStream), sending X-Amzn-Trace-Id when given; the
    decoded payload."""
    def add_header(request: Any, **_: Any) -> None:
        request.headers["X-Amzn-Trace-Id"] = trace_header

    event = f"before-sign.lambda.{operation}"
    if trace_header is not None:
        lam.meta.events.register_first(event, add_header)
    try:
        if operation == "Invoke":
            answer = lam.invoke(FunctionName=name, Payload=payload)
            assert "FunctionError" not in answer, answer["Payload"].read()
            return json.loads(answer["Payload"].read())
        answer = lam.invoke_with_response_stream(FunctionName=name, Payload=payload)
        body = b"".join(item["PayloadChunk"]["Payload"] for item in answer["EventStream"]
                        if "PayloadChunk" in item)
        return json.loads(body)
    finally:
        if trace_header is not None:
            lam.meta.events.unregister(event, add_header)


def xray_root() -> str:
    return f"1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"


def otel_id(root: str) -> str:
    return root[2:10] + root[11:]


# -- TracingConfig ----------------------------------------------------------------------


def test_tracing_config_is_stored_updated_and_shown_everywhere(lam):
    name = new_name("trace-config")
    created = lam.create_function(**function_args(name, TracingConfig={"Mode": "Active"}))
    assert created["TracingConfig"] == {"Mode": "Active"}
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.1})
    assert lam.get_function(FunctionName=name)["Configuration"]["TracingConfig"] == {"Mode": "Active"}
    listed = [f for f in lam.list_functions()["Functions"] if f["FunctionName"] == name]
    assert listed[0]["TracingConfig"] == {"Mode": "Active"}
    updated = lam.update_function_configuration(FunctionName=name, TracingConfig={"Mode": "PassThrough"})
    assert updated["TracingConfig"] == {"Mode": "PassThrough"}
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.1})
    version = lam.publish_version(FunctionName=name)
    assert version["TracingConfig"] == {"Mode": "PassThrough"}
    default = new_name("trace-default")
    assert lam.create_function(**function_args(default))["TracingConfig"] == {"Mode": "PassThrough"}


def test_a_tracing_mode_outside_the_enum_is_rejected_as_aws_does(traced):
    unchecked = traced.client(validate=False)
    name = new_name("trace-bad")
    expected = ("1 validation error detected: Value 'Sometimes' at 'tracingConfig.mode' failed "
                "to satisfy constraint: Member must satisfy enum value set: [Active, PassThrough]")
    with aws_error(unchecked, "ValidationException", 400) as info:
        unchecked.create_function(**function_args(name, TracingConfig={"Mode": "Sometimes"}))
    assert error_message(info) == expected
    unchecked.create_function(**function_args(name))
    with aws_error(unchecked, "ValidationException", 400) as info:
        unchecked.update_function_configuration(FunctionName=name, TracingConfig={"Mode": "Sometimes"})
    assert error_message(info) == expected


# -- the trace header ---------------------------------------------------------------------


def test_an_incoming_trace_header_reaches_the_function_and_its_spans(lam, receiver):
    name = new_name("trace-in")
    create(lam, name, TRACE_ENV)
    root, caller = xray_root(), "53995c3f42cd8ad8"
    seen = invoke(lam, name, f"Root={root};Parent={caller};Sampled=1")
    found = HEADER.fullmatch(seen)
    assert found, seen
    assert found[1] == root and found[3] == "1"
    # The function's Parent is the invocation's own segment, child of the caller's.
    own = found[2]
    assert own != caller
    spans = receiver.trace(otel_id(root), 4)
    by_name = {span.name: span for span in spans}
    assert set(by_name) == {name, "Initialization", "Invocation", "Overhead"}
    function = by_name[name]
    assert (function.span_id, function.parent_span_id) == (own, caller)
    for child in ("Initialization", "Invocation", "Overhead"):
        assert by_name[child].parent_span_id == own
        assert function.start_ns <= by_name[child].start_ns <= by_name[child].end_ns <= function.end_ns
    assert by_name["Initialization"].end_ns <= by_name["Invocation"].start_ns
    assert by_name["Invocation"].end_ns <= by_name["Overhead"].start_ns
    assert function.kind == 2  # SERVER
    assert function.attributes["faas.coldstart"] is True
    assert function.attributes["faas.invocation_id"]
    assert function.attributes["cloud.resource_id"].endswith(f":function:{name}")
    assert function.resource["service.name"] == function.resource["faas.name"] == name
    assert function.resource["cloud.platform"] == "aws_lambda"
    assert function.resource["faas.version"] == "$LATEST"

    # Warm, through InvokeWithResponseStream: the same header, no Initialization.
    warm_root = xray_root()
    seen = invoke(lam, name, f"Root={warm_root};Parent={caller};Sampled=1",
                  operation="InvokeWithResponseStream")
    assert HEADER.fullmatch(seen)[1] == warm_root
    warm = receiver.trace(otel_id(warm_root), 3)
    assert sorted(span.name for span in warm) == sorted([name, "Invocation", "Overhead"])
    assert next(s for s in warm if s.name == name).attributes["faas.coldstart"] is False


def test_active_without_a_header_makes_a_new_sampled_trace(lam, receiver):
    name = new_name("trace-active")
    create(lam, name, TRACE_ENV, TracingConfig={"Mode": "Active"})
    first, second = invoke(lam, name), invoke(lam, name)
    assert HEADER.fullmatch(first) and HEADER.fullmatch(second), (first, second)
    assert HEADER.fullmatch(first)[3] == "1"
    assert HEADER.fullmatch(first)[1] != HEADER.fullmatch(second)[1]
    epoch = int(HEADER.fullmatch(first)[1][2:10], 16)
    assert abs(epoch - time.time()) < 60
    spans = receiver.trace(otel_id(HEADER.fullmatch(first)[1]), 4)
    root = next(span for span in spans if span.name == name)
    assert root.parent_span_id == ""  # nobody called it with a trace
    assert root.span_id == HEADER.fullmatch(first)[2]


def test_pass_through_without_a_header_gets_an_unsampled_id_and_no_spans(lam, receiver):
    name = new_name("trace-pass")
    create(lam, name, TRACE_ENV)
    seen = invoke(lam, name)
    found = HEADER.fullmatch(seen)
    assert found and found[3] == "0", seen
    # A sampled invocation after it: once its spans are in, the earlier one's would be.
    later = xray_root()
    invoke(lam, name, f"Root={later};Sampled=1")
    spans = receiver.trace(otel_id(later), 3)
    assert all(span.trace_id != otel_id(found[1]) for span in receiver.spans)
    assert next(s for s in spans if s.name == name).parent_span_id == ""


def test_a_caller_that_leaves_sampling_to_lambda_gets_its_decision(lam):
    name = new_name("trace-decide")
    create(lam, name, TRACE_ENV, TracingConfig={"Mode": "Active"})
    root = xray_root()
    found = HEADER.fullmatch(invoke(lam, name, f"Root={root};Sampled=?"))
    assert found and (found[1], found[3]) == (root, "1")
    passed = new_name("trace-decide-pass")
    create(lam, passed, TRACE_ENV)
    found = HEADER.fullmatch(invoke(lam, passed, f"Root={root}"))
    assert found and (found[1], found[3]) == (root, "0")
    # X-Ray's other fields are passed on; a load balancer's Self is not.
    seen = invoke(lam, passed, f"Self=1-67891233-12456789abcdef012345678;Root={root};"
                               "Sampled=1;Lineage=a87bd80c:1|68fd508a:5")
    assert HEADER.match(seen)[1] == root and HEADER.match(seen)[3] == "1"
    assert seen.endswith(";Sampled=1;Lineage=a87bd80c:1|68fd508a:5") and "Self" not in seen
    # A header without a valid Root is no trace: a new one starts.
    found = HEADER.fullmatch(invoke(lam, passed, "Root=garbage;Sampled=1"))
    assert found and found[1] != "garbage"


def test_a_function_url_request_passes_its_trace_header_on(lam, traced, receiver):
    name = new_name("trace-url")
    create(lam, name, URL_TRACE_ENV)
    url = Url(traced, lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"])
    make_public(lam, name)
    root = xray_root()
    sent = f"Root={root};Parent=53995c3f42cd8ad8;Sampled=1"
    answer = url.request("GET", "/", headers={"X-Amzn-Trace-Id": sent})
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["event"] == sent
    assert HEADER.fullmatch(got["env"])[1] == root
    assert len(receiver.trace(otel_id(root), 4)) >= 4
    # Without one, the event and the function still share a Root.
    got = url.request("GET", "/").json()
    assert got["event"].startswith("Root=1-")
    assert HEADER.fullmatch(got["env"])[1] == got["event"].removeprefix("Root=")


# -- the X-Ray daemon address ----------------------------------------------------------------


def test_powertools_tracer_segments_arrive_as_spans_of_the_invocation(lam, receiver):
    name = new_name("trace-powertools")
    code = package(site_packages("aws-lambda-powertools[tracer]", "aws-xray-sdk"), POWERTOOLS_TRACER)
    lam.create_function(**function_args(name, code, Runtime="python3.13",
                                        TracingConfig={"Mode": "Active"}, Timeout=30,
                                        MemorySize=512))
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.1})
    answer = invoke(lam, name, payload=json.dumps({"order_id": "o-42"}).encode())
    found = HEADER.fullmatch(answer["trace"])
    assert found, answer
    assert answer["daemon"] and answer["context_missing"] == "LOG_ERROR"
    root, own = found[1], found[2]
    # The subsegment and the handler's segment are separate datagrams: wait for both.
    spans = receiver.wait_for(lambda spans: {"## handler", "place_order"} <= {
        "place_order" if "place_order" in s.name else s.name
        for s in spans if s.trace_id == otel_id(root)})
    spans = [span for span in spans if span.trace_id == otel_id(root)]
    handler = next(span for span in spans if span.name == "## handler")
    order = next(span for span in spans if "place_order" in span.name)
    # The SDK's subsegments hang under the invocation's span, which is in the trace too.
    assert handler.parent_span_id == own
    assert order.parent_span_id == handler.span_id
    assert order.attributes["aws.xray.annotations.order_id"] == "o-42"
    assert handler.resource["faas.name"] == name
    assert any(span.span_id == own and span.name == name
               for span in receiver.trace(otel_id(root), 6))


def test_segments_sent_to_the_daemon_address_become_spans_with_their_attributes(lam, receiver):
    name = new_name("trace-daemon")
    create(lam, name, RAW_DAEMON, TracingConfig={"Mode": "Active"})
    found = HEADER.fullmatch(invoke(lam, name))
    assert found and found[3] == "1"
    root, own = found[1], found[2]
    spans = receiver.wait_for(lambda spans: sum(
        s.trace_id == otel_id(root) and s.name in ("work", "DynamoDB") for s in spans) == 2)
    by_name = {span.name: span for span in spans if span.trace_id == otel_id(root)}
    work, call = by_name["work"], by_name["DynamoDB"]
    assert (work.span_id, work.parent_span_id) == ("aaaaaaaaaaaaaaaa", own)
    assert (call.span_id, call.parent_span_id) == ("bbbbbbbbbbbbbbbb", work.span_id)
    assert work.attributes["aws.xray.annotations.tenant"] == "t-1"
    assert work.attributes["aws.xray.annotations.weight"] == 3
    assert json.loads(work.attributes["aws.xray.metadata.debug"]) == {"k": [1, 2]}
    assert call.kind == 3  # CLIENT
    assert (call.attributes["rpc.system"], call.attributes["rpc.method"]) == ("aws-api", "GetItem")
    assert call.attributes["http.response.status_code"] == 500
    assert work.resource["faas.name"] == name
    # The invocation's own spans are there too; the document in progress is not a span.
    trace = receiver.trace(otel_id(root), 6)
    assert {span.name for span in trace} == {name, "Initialization", "Invocation", "Overhead",
                                             "work", "DynamoDB"}

