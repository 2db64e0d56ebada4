"""One execution environment: a sandboxed runtime serving one invocation at a time.

The environment drives the lifecycle in states.py, serves the Runtime API to its
runtime (runtime_api.py) and, on the same port, the Extensions and Telemetry APIs
(extensions_api.py, telemetry_api.py), captures the runtime's output, and turns
what happens (a response, an error, a timeout, a crash) into an
`InvocationOutcome` shaped the way Lambda reports it. What happens is also
published as typed lifecycle events (observe/events.py): the log stream's
START/END/REPORT lines and the Telemetry API's platform stream are made from
those, never from output.

With extensions the phases are Lambda's: external extensions start and register
before the runtime starts (launcher.py); INIT ends when the runtime and every
extension wait for their next event; an invocation ends for billing when the
runtime has answered and every extension subscribed to INVOKE is back in
event/next (the post-runtime phase, counted in REPORT's Duration, while the caller
already has its response); SHUTDOWN sends the runtime SIGTERM and gives extensions
their deadline before the sandbox is killed.

Apart from here: output capture and framing (output.py), an invocation's
accounting (report.py), the extensions' registry and gates (extensions.py).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina.environments.extensions import (
    SHUTDOWN_EXTERNAL_MS,
    SHUTDOWN_INTERNAL_MS,
    Extension,
    Extensions,
    ExtensionState,
)
from lamina.environments.extensions_api import ExtensionsApi, FunctionInfo
from lamina.environments.launcher import external_extensions, runtime_argv
from lamina.environments.output import OutputCapture
from lamina.environments.report import (
    EVENT_STATUS,
    LogTail,
    billed_duration_ms,
    error_type_of,
    max_memory_used_mb,
)
from lamina.environments.runtime_api import ApiResponse, RuntimeApiServer
from lamina.environments.spec import EnvironmentSpec, RoleCredentials
from lamina.environments.states import Lifecycle, State
from lamina.environments.streaming import ResponseStream
from lamina.environments.telemetry_api import Telemetry
from lamina.observe.events import (
    ExtensionLog,
    ExtensionRegistered,
    FunctionLog,
    InitReport,
    InitRuntimeDone,
    InitStart,
    InvokeReport,
    InvokeStart,
    LifecycleEvent,
    LifecycleListener,
    RestoreReport,
    RestoreRuntimeDone,
    RestoreStart,
    RuntimeDone,
    Shutdown,
    TelemetrySubscribed,
    TraceSegment,
)
from lamina.observe.logs import (
    LoggingSettings,
    LogStore,
    LogStream,
    SystemLogWriter,
    application_level_of,
    level_at_least,
)
from lamina.runtimes.catalog import RuntimeSpec
from lamina.sandbox.base import Sandbox, SandboxBackend, SandboxSpec

# An environment whose role credentials end within this is not reused: one
# invocation of the longest timeout (900 s) must fit before they expire.
CREDENTIALS_MARGIN_S = 15 * 60


@dataclass(frozen=True)
class Invocation:
    request_id: str
    payload: bytes
    invoked_function_arn: str
    # The X-Amzn-Trace-Id the function gets (Root=...;Parent=...;Sampled=...).
    trace_id: str
    client_context: str | None = None
    cognito_identity: str | None = None
    # The caller's segment id (Parent of the header it sent), for the spans.
    trace_parent: str | None = None


@dataclass
class InvocationOutcome:
    payload: bytes
    # "Unhandled" (or a runtime's error type) when the function failed, as in
    # the X-Amz-Function-Error header; None on success.
    function_error: str | None
    duration_ms: float
    billed_duration_ms: int
    init_duration_ms: float | None
    max_memory_used_mb: int
    log_tail: str
    status: str = "success"  # success | error | timeout | crash | init_error


@dataclass(frozen=True)
class EnvironmentConfig:
    function_version: EnvironmentSpec
    runtime: RuntimeSpec
    # None: a container image, which brings its own /var/task.
    task_root: Path | None
    layers_root: Path | None
    # Lamina's runtime clients at /var/runtime; None when the image brings its own.
    runtime_root: Path | None
    scratch_root: Path
    region: str
    account_id: str
    network: bool = True
    api_port: int | None = None
    # The runtime image's root file system, `/` of the sandbox (None: the host's).
    root_image: Path | None = None
    # The execution role's temporary credentials (None: placeholders, which this
    # server's API does not accept when it checks signatures).
    credentials: RoleCredentials | None = None
    init_timeout_s: float = 10.0
    init_cpu_boost: bool = True
    max_response_bytes: int = 6 * 1024 * 1024
    initialization_type: str = "on-demand"
    working_directory: str = "/var/task"
    # Restored from its SnapStart version's template: a restore phase (restore
    # events, Restore Duration) in place of INIT.
    restore: bool = False


def _log_stream_name(version: str) -> str:
    day = time.strftime("%Y/%m/%d", time.gmtime())
    return f"{day}/[{version}]{uuid.uuid4().hex}"


def _error_payload(error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()


def _iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


@dataclass
class _Current:
    invocation: Invocation
    result: asyncio.Future[tuple[bytes, str | None]]
    tail: LogTail = field(default_factory=LogTail)
    # Where the response goes as the runtime writes it, when the caller streams.
    stream: ResponseStream | None = None
    # The runtime's Lambda-Runtime-Function-Error-Type, when it reported an error.
    error_type: str | None = None


class ExecutionEnvironment:
    def __init__(self, config: EnvironmentConfig, backend: SandboxBackend, logs: LogStore) -> None:
        self.config = config
        self.id = uuid.uuid4().hex
        self.lifecycle = Lifecycle()
        self._backend = backend
        fv = config.function_version
        self.log_stream_name = _log_stream_name(fv.version)
        self._log: LogStream = logs.open_stream(fv.log_group_name, self.log_stream_name)
        self._system_log = SystemLogWriter(self._log, LoggingSettings(
            fv.log_format, fv.application_log_level, fv.system_log_level))
        self._system_log.sink = self._keep_tail
        self.extensions = Extensions(external_extensions(config.layers_root))
        self.extensions.on_register = self._extension_registered
        self._extensions_api = ExtensionsApi(self.extensions, FunctionInfo(
            fv.function_name, fv.version, fv.handler, config.account_id))
        self.telemetry = Telemetry(self.extensions, self._connect_inside, fv.log_format)
        self.telemetry.on_subscribe = lambda subscription: self.publish(TelemetrySubscribed(
            subscription.extension_name, tuple(sorted(subscription.types))))
        self.listeners: list[LifecycleListener] = [self._system_log, self.telemetry.publish]
        self._crash_watch: asyncio.Task[None] | None = None
        # The post-runtime phase of the last invocation, while extensions finish.
        self.settling: asyncio.Task[None] | None = None
        self._sandbox: Sandbox | None = None
        self._api: RuntimeApiServer | None = None
        self._exit: asyncio.Task[int] | None = None
        self._output = OutputCapture(self._emit, self._emit_extension)
        self._initialized = asyncio.Event()
        self._next_waiter: asyncio.Future[Invocation] | None = None
        self._pending: Invocation | None = None
        self._current: _Current | None = None
        # Output of INIT, for the first invocation's LogResult.
        self._init_tail = LogTail()
        self.init_failure: bytes | None = None
        self.init_duration_ms: float | None = None
        # SnapStart: (Restore Duration, Billed Restore Duration) for the first REPORT.
        self.restore: tuple[float, int] | None = None
        self.invocations = 0
        self.last_used = time.monotonic()

    def credentials_expiring(self) -> bool:
        """True when its role credentials end soon: the environment is replaced
        rather than reused, which is how credentials rotate."""
        credentials = self.config.credentials
        return credentials is not None and credentials.expiration - time.time() < CREDENTIALS_MARGIN_S

    @property
    def state(self) -> State:
        return self.lifecycle.state

    @property
    def function_version(self) -> EnvironmentSpec:
        return self.config.function_version

    # -- INIT ---------------------------------------------------------------------

    def _environment_variables(self) -> dict[str, str]:
        fv = self.config.function_version
        region = self.config.region
        reserved = {
            "_HANDLER": fv.handler,
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "AWS_LAMBDA_FUNCTION_NAME": fv.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fv.memory_size),
            "AWS_LAMBDA_FUNCTION_VERSION": fv.version,
            "AWS_LAMBDA_INITIALIZATION_TYPE": self.config.initialization_type,
            "LAMBDA_TASK_ROOT": "/var/task",
            "LAMBDA_RUNTIME_DIR": "/var/runtime",
            **(self.config.credentials.variables if self.config.credentials else {
                "AWS_ACCESS_KEY_ID": "ASIALAMINAFUNCTION00",
                "AWS_SECRET_ACCESS_KEY": "lamina-function-secret",
                "AWS_SESSION_TOKEN": "lamina-function-session",
            }),
        }
        if not fv.snap_start:
            # Not set in SnapStart functions on Lambda: the snapshot is shared by
            # environments that each write to a stream of their own.
            reserved["AWS_LAMBDA_LOG_GROUP_NAME"] = fv.log_group_name
            reserved["AWS_LAMBDA_LOG_STREAM_NAME"] = self.log_stream_name
        if self.config.runtime.execution_env:
            reserved["AWS_EXECUTION_ENV"] = self.config.runtime.execution_env
        if fv.log_format == "JSON":
            reserved["AWS_LAMBDA_LOG_FORMAT"] = "JSON"
            reserved["AWS_LAMBDA_LOG_LEVEL"] = fv.application_log_level or "INFO"
        elif fv.application_log_level:
            reserved["AWS_LAMBDA_LOG_LEVEL"] = fv.application_log_level
        defaults = {
            "PATH": "/var/lang/bin:/usr/local/bin:/usr/bin:/bin:/opt/bin",
            "LD_LIBRARY_PATH": "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:"
                               "/var/task:/var/task/lib:/opt/lib",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "TMPDIR": "/tmp",
            "HOME": "/tmp",
            # Lambda's (a function may set its own): the X-Ray SDK logs, rather than
            # raises, when it has no trace context (e.g. outside an invocation).
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        }
        # The function's own variables override the defaults, never the reserved ones.
        return {**defaults, **dict(self.config.runtime.env), **fv.environment, **reserved}

    # -- lifecycle events ------------------------------------------------------------

    def publish(self, event: LifecycleEvent) -> None:
        for listener in self.listeners:
            listener(event)

    def _extension_registered(self, extension: Extension) -> None:
        self.publish(ExtensionRegistered(extension.name, tuple(sorted(extension.events))))

    async def _connect_inside(self, port: int) -> Any:
        if self._sandbox is None:
            raise OSError("the environment has no sandbox")
        return await self._sandbox.connect(port)

    def _command(self) -> list[str]:
        """The sandbox's command: the runtime's, behind AWS_LAMBDA_EXEC_WRAPPER (managed
        runtimes only, as on Lambda) and the extensions' launcher."""
        fv = self.config.function_version
        if not self.config.runtime.argv:
            return []  # a container image with no entrypoint: INIT fails on it
        managed = fv.runtime is not None and not fv.runtime.startswith("provided")
        wrapper = fv.environment.get("AWS_LAMBDA_EXEC_WRAPPER") if managed else None
        return runtime_argv(list(self.config.runtime.argv), wrapper,
                            list(self.extensions.external_names))

    async def _init_complete(self) -> None:
        """INIT's gate: the runtime and every extension wait for their next event."""
        await self._initialized.wait()
        await self.extensions.until(self.extensions.all_waiting)

    async def start(self) -> None:
        """Run INIT: start the extensions and the sandbox, and wait until the runtime
        and every extension ask for work."""
        started = time.perf_counter()
        fv = self.config.function_version
        initialization_type = self.config.initialization_type
        if self.config.restore:
            self.publish(RestoreStart(fv.function_name, fv.version, self.config.runtime.identifier,
                                      self.id, fv.memory_size))
        else:
            self.publish(InitStart(initialization_type, fv.function_name, fv.version,
                                   self.config.runtime.identifier))
        self.config.scratch_root.mkdir(parents=True, exist_ok=True)
        stdout_fd, frames_fd, extensions_fd = self._output.open()
        env = self._environment_variables()
        env["_LAMBDA_TELEMETRY_LOG_FD"] = str(frames_fd)
        inherited = [frames_fd]
        if self.extensions.external_names:
            env["_LAMINA_EXTENSIONS_LOG_FD"] = str(extensions_fd)
            inherited.append(extensions_fd)
        spec = SandboxSpec(
            environment_id=self.id,
            argv=self._command(),
            env=env,
            inherited_fds=tuple(inherited),
            task_root=self.config.task_root,
            runtime_root=self.config.runtime_root,
            layers_root=self.config.layers_root,
            scratch_root=self.config.scratch_root,
            memory_mb=fv.memory_size,
            ephemeral_storage_mb=fv.ephemeral_storage_mb,
            network=self.config.network,
            system_paths=self.config.runtime.system_paths,
            init_cpu_boost=self.config.init_cpu_boost,
            api_port=self.config.api_port,
            root_image=self.config.root_image,
            working_directory=self.config.working_directory,
            file_systems=fv.file_system_mounts,
        )
        try:
            if not spec.argv:
                # A container image with neither ENTRYPOINT nor CMD, and no ImageConfig.
                self._fail_init("Runtime.InvalidEntrypoint",
                                "Error: the image has no ENTRYPOINT or CMD and ImageConfig sets "
                                "neither EntryPoint nor Command")
                return
            self._sandbox = await self._backend.launch(spec, stdout_fd)
        except OSError as exc:
            # TimeoutError (an OSError) says nothing by itself.
            reason = str(exc) or ("its sandbox did not come up in time"
                                  if isinstance(exc, TimeoutError) else type(exc).__name__)
            self._fail_init("Runtime.InvalidEntrypoint", f"could not start the runtime: {reason}")
            return
        finally:
            # The sandbox holds its own copies; ours must go so EOF means "all exited".
            for fd in (stdout_fd, frames_fd, extensions_fd):
                os.close(fd)
        loop = asyncio.get_running_loop()
        self._api = RuntimeApiServer(self, self._sandbox.runtime_api_socket,
                                     self.config.max_response_bytes,
                                     routes=(self._extensions_api.route, self.telemetry.route))
        await self._api.start()
        self._read_trace_segments()
        self._exit = loop.create_task(self._sandbox.wait())
        self._crash_watch = loop.create_task(self.extensions.until(lambda: False))
        self._crash_watch.add_done_callback(self._extension_crashed)
        ready = loop.create_task(self._init_complete())
        done, _ = await asyncio.wait({ready, self._exit, self._crash_watch},
                                     timeout=self.config.init_timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        self.extensions.registration_open = False
        self.init_duration_ms = (time.perf_counter() - started) * 1000
        self._sandbox.end_init()
        if ready in done and self.init_failure is None:
            resumed_at = getattr(self._sandbox, "resumed_at", None)
            if resumed_at is not None:  # restored from a SnapStart template
                self.restore = (self.init_duration_ms,
                                math.ceil((time.perf_counter() - resumed_at) * 1000))
            self.lifecycle.to(State.READY)
            extensions_ms = 0.0
            if self.extensions.external_names and self.extensions.externals_ready_at is not None:
                extensions_ms = (self.extensions.externals_ready_at - started) * 1000
            self._init_over("success", extensions_ms=extensions_ms)
            return
        self._drain_output()
        crashed = self.extensions.crashed
        if self.init_failure is None and crashed is not None:
            self._fail_init(crashed.error_type or "Extension.Crash",
                            f"Extension {crashed.name} failed: {crashed.error_type}")
        elif self.init_failure is None:
            if self._exit in done:
                code = self._exit.result()
                self._fail_init("Runtime.ExitError",
                                f"Runtime exited with error: {_exit_description(code)}")
            else:
                self._fail_init("Sandbox.Timedout",
                                f"Init phase timed out after {self.config.init_timeout_s:.2f} seconds")
        else:
            # The runtime reported it (init/error): its error type, Lambda's events.
            self._init_over("error", error_type_of(self.init_failure) or "Runtime.Unknown")
            self.lifecycle.to(State.FAILED)

    def _fail_init(self, error_type: str, message: str) -> None:
        self.init_failure = _error_payload(error_type, message)
        self._init_over("error", error_type)
        if self.lifecycle.state is not State.FAILED:
            self.lifecycle.to(State.FAILED)

    def _init_over(self, status: str, error_type: str | None = None,
                   extensions_ms: float = 0.0) -> None:
        """The events that end INIT (or a SnapStart restore), and the Telemetry API's
        INIT buffer with them."""
        duration_ms = self.init_duration_ms or 0.0
        if self.config.restore:
            self.publish(RestoreRuntimeDone(status, error_type))
            self.publish(RestoreReport(status, duration_ms, error_type))
        else:
            initialization_type = self.config.initialization_type
            self.publish(InitRuntimeDone(initialization_type, status, error_type))
            self.publish(InitReport(initialization_type, status, duration_ms, extensions_ms,
                                    error_type=error_type))
        self.telemetry.end_init()

    # -- the X-Ray daemon address --------------------------------------------------------

    def _read_trace_segments(self) -> None:
        """What the function sends to AWS_XRAY_DAEMON_ADDRESS becomes TraceSegment
        events (spans, when tracing exports any; otherwise dropped, as by a daemon
        that has nowhere to send)."""
        sock = self._sandbox.trace_daemon_socket if self._sandbox is not None else None
        if sock is None:
            return
        sock.setblocking(False)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._trace_segments_ready, sock)

    def _trace_segments_ready(self, sock: socket.socket) -> None:
        # A bounded batch per wake-up: a function flooding the port cannot hold the loop.
        for _ in range(64):
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._stop_trace_segments()
                return
            self.publish(TraceSegment(data))

    def _stop_trace_segments(self) -> None:
        sock = self._sandbox.trace_daemon_socket if self._sandbox is not None else None
        if sock is not None and sock.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(sock.fileno())

    # -- output capture (output.py) ---------------------------------------------------

    def _drain_output(self) -> None:
        """Take in everything the runtime wrote so far (it writes before it posts)."""
        self._output.drain()

    def _emit(self, line: str, timestamp_ms: int | None = None) -> None:
        """One record of the function's output (a line, or a whole framed record)."""
        level = self.config.function_version.application_log_level
        if level is not None and self.config.function_version.log_format == "JSON" \
                and not level_at_least(application_level_of(line), level):
            return  # Lambda's ApplicationLogLevel filter (records without a level are INFO)
        self.publish(FunctionLog(line, timestamp_ms) if timestamp_ms else FunctionLog(line))
        if self._current is None:
            # Between invocations (extensions' post-invoke work, background
            # threads) no END will flush it: readers see it now.
            self._log.flush()

    def _emit_extension(self, line: str, timestamp_ms: int | None = None) -> None:
        """One line an external extension wrote."""
        self.publish(ExtensionLog(line, timestamp_ms) if timestamp_ms else ExtensionLog(line))
        if self._current is None:
            self._log.flush()

    def _keep_tail(self, line: str) -> None:
        """Every line of the log stream, for LogResult (the invocation's last 4 KB)."""
        current = self._current
        if current is not None:
            current.tail.add(line)
        elif self.invocations == 0:
            self._init_tail.add(line)

    # -- Runtime API (called by runtime_api.py) ---------------------------------------

    async def next_invocation(self) -> ApiResponse:
        self._initialized.set()
        if self._pending is None:
            loop = asyncio.get_running_loop()
            self._next_waiter = loop.create_future()
            try:
                invocation = await self._next_waiter
            finally:
                self._next_waiter = None
        else:
            invocation, self._pending = self._pending, None
        deadline_ms = int(time.time() * 1000) + self.config.function_version.timeout * 1000
        headers = {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": invocation.invoked_function_arn,
            "Lambda-Runtime-Trace-Id": invocation.trace_id,
        }
        if invocation.client_context:
            headers["Lambda-Runtime-Client-Context"] = invocation.client_context
        if invocation.cognito_identity:
            headers["Lambda-Runtime-Cognito-Identity"] = invocation.cognito_identity
        return ApiResponse(200, invocation.payload, headers)

    def _settle(self, request_id: str, payload: bytes, error: str | None) -> ApiResponse:
        current = self._current
        if current is None or current.invocation.request_id != request_id:
            return ApiResponse.error(400, "InvalidRequestID", f"Invalid request ID: {request_id}")
        if current.result.done():
            return ApiResponse.error(400, "InvalidStateTransition",
                                     "Invocation already has a response")
        current.result.set_result((payload, error))
        return ApiResponse.accepted()

    def invocation_response(self, request_id: str, body: bytes) -> ApiResponse:
        return self._settle(request_id, body, None)

    def invocation_error(self, request_id: str, body: bytes, error_type: str | None) -> ApiResponse:
        payload = body or _error_payload(error_type or "Unhandled", "")
        current = self._current
        if current is not None and current.invocation.request_id == request_id and not current.result.done():
            current.error_type = error_type
        return self._settle(request_id, payload, "Unhandled")

    def response_stream(self, request_id: str) -> ResponseStream | None:
        current = self._current
        if (current is None or current.invocation.request_id != request_id
                or current.result.done() or current.stream is None or current.stream.opened):
            return None
        return current.stream

    def response_streamed(self, request_id: str, error_type: str | None, error_body: bytes | None,
                          cut: bool) -> ApiResponse:
        current = self._current
        stream = current.stream if current is not None else None
        if current is None or stream is None or current.invocation.request_id != request_id:
            return ApiResponse.error(400, "InvalidRequestID", f"Invalid request ID: {request_id}")
        if cut or stream.error_type is not None:
            # Over the size limit: the stream already ended with the error.
            error_type, error_body = stream.error_type, stream.error_body
        if error_type is None:
            stream.close()
            return self._settle(request_id, b"", None)
        body = error_body or _error_payload(error_type, "")
        stream.close(error_type, body)
        current.error_type = error_type
        answer = self._settle(request_id, body, "Unhandled")
        if cut:
            return ApiResponse.error(413, "RequestEntityTooLarge",
                                     f"Response payload size exceeded maximum allowed payload size "
                                     f"({stream.limit_bytes} bytes).")
        return answer

    def init_error(self, body: bytes, error_type: str | None) -> ApiResponse:
        if self.lifecycle.state is not State.STARTING:
            return ApiResponse.error(403, "InvalidStateTransition", "init is over")
        try:
            parsed = json.loads(body)
            error_type = error_type or parsed.get("errorType")
        except (ValueError, AttributeError, RecursionError):  # a runtime's body, any shape
            pass
        self.init_failure = body or _error_payload(error_type or "Runtime.Unknown", "")
        self._initialized.set()
        return ApiResponse.accepted()

    # -- INVOKE -----------------------------------------------------------------------

    async def invoke(self, invocation: Invocation, stream: ResponseStream | None = None) -> InvocationOutcome:
        """Run one invocation. With a stream, the response goes there as the runtime
        writes it (the outcome's payload is then empty, or the error document), and the
        stream is closed by the time this returns, whatever happened."""
        fv = self.config.function_version
        first = self.invocations == 0
        self.invocations += 1
        self.last_used = time.monotonic()
        loop = asyncio.get_running_loop()
        current = _Current(invocation, loop.create_future(), stream=stream)
        if first:
            current.tail.take(self._init_tail)
        self._current = current
        init_ms = self.init_duration_ms if first and self.config.initialization_type == "on-demand" else None
        self.publish(InvokeStart(invocation.request_id, fv.version, invocation.trace_id,
                                 parent_id=invocation.trace_parent))
        started = time.perf_counter()
        deadline = started + fv.timeout
        status = "success"
        error: str | None
        error_type: str | None = None
        if self.init_failure is not None:
            payload, error, status = self.init_failure, "Unhandled", "init_error"
            error_type = error_type_of(payload)
            _end_stream(stream, payload, error, error_type)
        else:
            self.lifecycle.to(State.BUSY)
            subscribed = self._dispatch_invoke(invocation, deadline)
            if self._next_waiter is not None and not self._next_waiter.done():
                self._next_waiter.set_result(invocation)
            else:
                self._pending = invocation
            assert self._exit is not None
            waiting: set[asyncio.Future[Any]] = {current.result, self._exit}
            if self._crash_watch is not None:
                waiting.add(self._crash_watch)
            done = await self._wait_until(waiting, deadline)
            if current.result in done:
                payload, error = current.result.result()
                status = "error" if error else "success"
                # The runtime's Lambda-Runtime-Function-Error-Type names it first.
                error_type = (current.error_type or error_type_of(payload)) if error else None
                self._drain_output()
            elif self._exit in done:
                self._drain_output()
                payload, error, status = self._crash_outcome(invocation, self._exit.result())
                error_type = error_type_of(payload)
            elif self._crash_watch is not None and self._crash_watch in done:
                payload, error, status = self._extension_crash_outcome(invocation)
                error_type = error_type_of(payload)
            else:
                payload, error, status = self._timeout_outcome(invocation)
                error_type = "Sandbox.Timedout"
            _end_stream(stream, payload, error, error_type)
            runtime_ms = (time.perf_counter() - started) * 1000
            self.publish(RuntimeDone(invocation.request_id, EVENT_STATUS[status], runtime_ms,
                                     len(payload), invocation.trace_id, error_type))
            if subscribed and status in ("success", "error") and not self.extensions.all_waiting():
                # Lambda's post-runtime phase: the caller has its response now; the
                # invocation is over (for REPORT, billing and reuse) once every
                # extension subscribed to INVOKE is back in event/next.
                self.settling = loop.create_task(self._post_runtime(
                    invocation, started, deadline, init_ms, status, error_type))
                outcome = self._outcome(current, payload, error, status, runtime_ms, init_ms)
                self._current = None
                return outcome
            if status in ("success", "error"):
                self.lifecycle.to(State.READY)
        duration_ms, memory_mb = self._report(invocation, started, init_ms, status, error_type)
        self._current = None
        return self._outcome(current, payload, error, status, duration_ms, init_ms, memory_mb)

    def _report(self, invocation: Invocation, started: float, init_ms: float | None,
                status: str, error_type: str | None) -> tuple[float, int]:
        """Close the invocation's accounting (REPORT, platform.report); its duration and
        Max Memory Used (read once: the outcome carries the same figure)."""
        fv = self.config.function_version
        duration_ms = (time.perf_counter() - started) * 1000
        billed = billed_duration_ms(duration_ms, init_ms)
        restore, self.restore = self.restore, None
        memory_mb = self._max_memory_used_mb()
        self.publish(InvokeReport(
            invocation.request_id, EVENT_STATUS[status], duration_ms, billed, fv.memory_size,
            memory_mb, invocation.trace_id, init_ms,
            error_type if status not in ("success", "error") else None,
            invoked_function_arn=invocation.invoked_function_arn,
            restore_duration_ms=restore[0] if restore else None,
            billed_restore_duration_ms=restore[1] if restore else None))
        self._log.flush()
        self.last_used = time.monotonic()
        return duration_ms, memory_mb

    def _max_memory_used_mb(self) -> int:
        return max_memory_used_mb(self._sandbox.usage() if self._sandbox is not None else None)

    def _outcome(self, current: _Current, payload: bytes, error: str | None, status: str,
                 duration_ms: float, init_ms: float | None,
                 memory_mb: int | None = None) -> InvocationOutcome:
        self.last_used = time.monotonic()
        return InvocationOutcome(
            payload=payload, function_error=error, duration_ms=duration_ms,
            billed_duration_ms=billed_duration_ms(duration_ms, init_ms), init_duration_ms=init_ms,
            max_memory_used_mb=self._max_memory_used_mb() if memory_mb is None else memory_mb,
            log_tail=current.tail.text(),
            status=status,
        )

    async def settled(self) -> None:
        """Until the post-runtime phase of the last invocation is over."""
        if self.settling is not None:
            await asyncio.wait({self.settling})

    @staticmethod
    async def _wait_until(waiting: set[asyncio.Future[Any]], deadline: float) -> set[asyncio.Future[Any]]:
        """The futures of `waiting` done by `deadline` (perf_counter), at least one
        unless the deadline passed. What asyncio.wait does, without the task and set
        bookkeeping it adds on every invocation's path."""
        loop = asyncio.get_running_loop()
        while True:
            done = {future for future in waiting if future.done()}
            remaining = deadline - time.perf_counter()
            # asyncio may fire a timer up to one clock tick early; a function
            # must never be stopped before its deadline, so wait out the rest.
            if done or remaining <= 0:
                return done
            woken: asyncio.Future[None] = loop.create_future()

            def wake(_: object = None, woken: asyncio.Future[None] = woken) -> None:
                if not woken.done():
                    woken.set_result(None)

            for future in waiting:
                future.add_done_callback(wake)
            timer = loop.call_later(remaining, wake)
            try:
                await woken
            finally:
                timer.cancel()
                for future in waiting:
                    future.remove_done_callback(wake)

    def _dispatch_invoke(self, invocation: Invocation, deadline: float) -> list[Extension]:
        if not self.extensions.any_registered:
            return []
        deadline_ms = int(time.time() * 1000 + (deadline - time.perf_counter()) * 1000)
        return [extension for extension in self.extensions.dispatch("INVOKE", {
            "eventType": "INVOKE",
            "deadlineMs": deadline_ms,
            "requestId": invocation.request_id,
            "invokedFunctionArn": invocation.invoked_function_arn,
            "tracing": {"type": "X-Amzn-Trace-Id", "value": invocation.trace_id},
        })]

    async def _post_runtime(self, invocation: Invocation, started: float, deadline: float,
                            init_ms: float | None, status: str,
                            error_type: str | None) -> None:
        """The extensions' post-invoke work, then the invocation's REPORT."""
        try:
            await self._finish_post_runtime(invocation, started, deadline, init_ms, status,
                                            error_type)
        finally:
            self.settling = None
            if self.lifecycle.state is State.BUSY:  # it failed on the way
                self.lifecycle.to(State.FAILED)

    async def _finish_post_runtime(self, invocation: Invocation, started: float,
                                   deadline: float, init_ms: float | None, status: str,
                                   error_type: str | None) -> None:
        """Wait for every INVOKE subscriber to be back in event/next, a crash, the
        runtime's exit or the function's deadline; then REPORT."""
        assert self._exit is not None and self._crash_watch is not None
        settled = asyncio.get_running_loop().create_task(
            self.extensions.until(self.extensions.all_waiting))
        try:
            done = await self._wait_until({settled, self._exit, self._crash_watch}, deadline)
        finally:
            settled.cancel()
        self._drain_output()
        crashed = self.extensions.crashed
        if settled in done and crashed is None:
            pass
        elif self._crash_watch in done or crashed is not None:
            status = "crash"
            error_type = crashed.error_type if crashed else "Extension.Crash"
        elif self._exit in done:
            status, error_type = "crash", "Runtime.ExitError"
        else:
            # The extensions overran the function's timeout: the invocation timed out.
            self._timeout_outcome(invocation)
            status, error_type = "timeout", "Sandbox.Timedout"
        self._report(invocation, started, init_ms, status, error_type)
        if self.lifecycle.state is State.BUSY:
            self.lifecycle.to(State.READY if status in ("success", "error") else State.FAILED)

    def _extension_crashed(self, _: asyncio.Task[None]) -> None:
        # An extension that dies between invocations ends the environment (as on
        # Lambda); one that dies during INIT or INVOKE is handled there.
        if self.lifecycle.state is State.READY:
            self.lifecycle.to(State.FAILED)

    def _extension_crash_outcome(self, invocation: Invocation) -> tuple[bytes, str, str]:
        self._drain_output()
        crashed = self.extensions.crashed
        error_type = (crashed.error_type if crashed else None) or "Extension.Crash"
        name = crashed.name if crashed else "?"
        message = f"RequestId: {invocation.request_id} Error: extension {name} failed"
        self._emit(message)
        self._emit(error_type)
        self.lifecycle.to(State.FAILED)
        return _error_payload(error_type, message), "Unhandled", "crash"

    def _timeout_outcome(self, invocation: Invocation) -> tuple[bytes, str, str]:
        seconds = f"{self.config.function_version.timeout:.2f}"
        self._drain_output()
        self._emit(f"{_iso_now()} {invocation.request_id} Task timed out after {seconds} seconds")
        if self.lifecycle.state is State.BUSY:
            self.lifecycle.to(State.FAILED)
        message = f"RequestId: {invocation.request_id} Error: Task timed out after {seconds} seconds"
        return _error_payload("Sandbox.Timedout", message), "Unhandled", "timeout"

    def _crash_outcome(self, invocation: Invocation, code: int) -> tuple[bytes, str, str]:
        oom = self._sandbox is not None and self._sandbox.oom_killed()
        error_type = "Runtime.OutOfMemory" if oom else "Runtime.ExitError"
        message = f"RequestId: {invocation.request_id} Error: Runtime exited with error: {_exit_description(code)}"
        self._emit(message)
        self._emit(error_type)
        self.lifecycle.to(State.FAILED)
        return _error_payload(error_type, message), "Unhandled", "crash"

    async def wait_exit(self) -> None:
        """Until the runtime's main process has exited, for whatever reason (a crash,
        an OOM kill, our own shutdown); at once if it never started."""
        if self._exit is not None:
            await asyncio.wait({self._exit})

    # -- SHUTDOWN ---------------------------------------------------------------------

    async def _shut_down_extensions(self, reason: str) -> None:
        """Lambda's Shutdown phase: SHUTDOWN to every extension subscribed to it, which
        has until the deadline (2,000 ms with external extensions, 500 ms with internal
        ones only) to call next again or exit; then the sandbox is killed."""
        limit_ms = SHUTDOWN_EXTERNAL_MS if self.extensions.has_external() else SHUTDOWN_INTERNAL_MS
        deadline = time.perf_counter() + limit_ms / 1000
        # What the subscribers are owed first: the last invocation's records.
        await self.telemetry.flush()
        self.publish(Shutdown(reason))
        # The runtime gets SIGTERM (from the launcher, with external extensions).
        self.extensions.stopping.set()
        subscribed = self.extensions.dispatch("SHUTDOWN", {
            "eventType": "SHUTDOWN", "shutdownReason": reason,
            "deadlineMs": int(time.time() * 1000) + limit_ms,
        })
        launcher = bool(self.extensions.external_names)

        def finished() -> bool:
            # Done with SHUTDOWN (back in next, or exited), and the runtime gone
            # after its SIGTERM (which only the launcher sends and sees).
            return all(e.state in (ExtensionState.WAITING, ExtensionState.EXITED)
                       for e in subscribed) and (
                not launcher or self.extensions.runtime_exited.is_set())

        # An extension exiting during SHUTDOWN is what is expected, not a crash.
        done = asyncio.get_running_loop().create_task(
            self.extensions.until(finished, stop_on_crash=False))
        assert self._exit is not None
        try:
            await self._wait_until({done, self._exit}, deadline)
        finally:
            done.cancel()
        self._drain_output()

    async def shutdown(self) -> None:
        if self.lifecycle.state in (State.STOPPING, State.GONE):
            return
        failed = self.lifecycle.state is State.FAILED
        self.lifecycle.to(State.STOPPING)
        if self._crash_watch is not None:
            self._crash_watch.cancel()
        if self.settling is not None:
            self.settling.cancel()
        if self.extensions.any_registered and self._exit is not None and not self._exit.done():
            await self._shut_down_extensions("failure" if failed else "spindown")
        await self.telemetry.flush()
        self.telemetry.close()
        if self._api is not None:
            await self._api.stop()
        if self._sandbox is not None:
            self._stop_trace_segments()
            await self._sandbox.destroy()
        if self._exit is not None and not self._exit.done():
            self._exit.cancel()
        self._output.close()
        self._log.close()
        if self.config.credentials is not None:
            self.config.credentials.revoke()
        shutil.rmtree(self.config.scratch_root, ignore_errors=True)
        self.lifecycle.to(State.GONE)


def _end_stream(stream: ResponseStream | None, payload: bytes, error: str | None,
                error_type: str | None) -> None:
    """A buffered response (or an init failure, a crash, a timeout) for a streaming
    caller: Lambda streams the payload as it is, in one piece."""
    if stream is None or stream.closed:
        return
    if error is None:
        stream.put(payload)
        stream.close()
    else:
        stream.close(error_type or "Unhandled", payload)


def _exit_description(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name.lower().removeprefix("sig")
        except ValueError:
            name = str(-code)
        return f"signal: {'killed' if name == 'kill' else name}"
    return f"exit status {code}"

