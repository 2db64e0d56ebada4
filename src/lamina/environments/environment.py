"""One execution environment: a sandboxed runtime serving one invocation at a time.

The environment drives the lifecycle in states.py, serves the Runtime API to its
runtime (runtime_api.py), captures the runtime's output into its log stream, and
turns what happens (a response, an error, a timeout, a crash) into an
`InvocationOutcome` shaped the way Lambda reports it.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina.environments.runtime_api import ApiResponse, RuntimeApiServer
from lamina.environments.spec import EnvironmentSpec, RoleCredentials
from lamina.environments.states import Lifecycle, State
from lamina.environments.streaming import ResponseStream
from lamina.observe.logs import LogStore, LogStream
from lamina.runtimes.catalog import RuntimeSpec
from lamina.sandbox.base import Sandbox, SandboxBackend, SandboxSpec

# Lambda's LogResult is the last 4 KB of the invocation's log.
LOG_TAIL_BYTES = 4096
_READ_CHUNK = 65536
# An environment whose role credentials end within this is not reused: one
# invocation of the longest timeout (900 s) must fit before they expire.
CREDENTIALS_MARGIN_S = 15 * 60


@dataclass(frozen=True)
class Invocation:
    request_id: str
    payload: bytes
    invoked_function_arn: str
    trace_id: str
    client_context: str | None = None
    cognito_identity: str | None = None


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
    tail: list[str] = field(default_factory=list)
    tail_size: int = 0
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
        self._sandbox: Sandbox | None = None
        self._api: RuntimeApiServer | None = None
        self._exit: asyncio.Task[int] | None = None
        self._output_fd: int | None = None
        self._partial = b""
        self._initialized = asyncio.Event()
        self._next_waiter: asyncio.Future[Invocation] | None = None
        self._pending: Invocation | None = None
        self._current: _Current | None = None
        self._init_lines: list[str] = []
        self.init_failure: bytes | None = None
        self.init_duration_ms: float | None = None
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
            "AWS_LAMBDA_LOG_GROUP_NAME": fv.log_group_name,
            "AWS_LAMBDA_LOG_STREAM_NAME": self.log_stream_name,
            "LAMBDA_TASK_ROOT": "/var/task",
            "LAMBDA_RUNTIME_DIR": "/var/runtime",
            **(self.config.credentials.variables if self.config.credentials else {
                "AWS_ACCESS_KEY_ID": "ASIALAMINAFUNCTION00",
                "AWS_SECRET_ACCESS_KEY": "lamina-function-secret",
                "AWS_SESSION_TOKEN": "lamina-function-session",
            }),
        }
        if self.config.runtime.execution_env:
            reserved["AWS_EXECUTION_ENV"] = self.config.runtime.execution_env
        if fv.application_log_level:
            reserved["AWS_LAMBDA_LOG_LEVEL"] = fv.application_log_level
        defaults = {
            "PATH": "/var/lang/bin:/usr/local/bin:/usr/bin:/bin:/opt/bin",
            "LD_LIBRARY_PATH": "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:"
                               "/var/task:/var/task/lib:/opt/lib",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "TMPDIR": "/tmp",
            "HOME": "/tmp",
        }
        # The function's own variables override the defaults, never the reserved ones.
        return {**defaults, **dict(self.config.runtime.env), **fv.environment, **reserved}

    async def start(self) -> None:
        """Run INIT: start the sandbox and wait until the runtime asks for work."""
        started = time.perf_counter()
        fv = self.config.function_version
        self.config.scratch_root.mkdir(parents=True, exist_ok=True)
        spec = SandboxSpec(
            environment_id=self.id,
            argv=list(self.config.runtime.argv),
            env=self._environment_variables(),
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
        )
        if not spec.argv:
            # A container image with neither ENTRYPOINT nor CMD, and no ImageConfig.
            self._fail_init("Runtime.InvalidEntrypoint",
                            "Error: the image has no ENTRYPOINT or CMD and ImageConfig sets "
                            "neither EntryPoint nor Command")
            return
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        self._output_fd = read_fd
        try:
            self._sandbox = await self._backend.launch(spec, write_fd)
        except OSError as exc:
            self._fail_init("Runtime.InvalidEntrypoint", f"could not start the runtime: {exc}")
            return
        finally:
            # The sandbox holds its own copy; ours must go so EOF means "all exited".
            os.close(write_fd)
        loop = asyncio.get_running_loop()
        loop.add_reader(read_fd, self._read_output)
        self._api = RuntimeApiServer(self, self._sandbox.runtime_api_socket,
                                     self.config.max_response_bytes)
        await self._api.start()
        self._exit = loop.create_task(self._sandbox.wait())
        ready = loop.create_task(self._initialized.wait())
        done, _ = await asyncio.wait({ready, self._exit}, timeout=self.config.init_timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        self.init_duration_ms = (time.perf_counter() - started) * 1000
        self._sandbox.end_init()
        if self._initialized.is_set() and self.init_failure is None:
            self.lifecycle.to(State.READY)
            return
        self._drain_output()
        if self.init_failure is None:
            if self._exit in done:
                code = self._exit.result()
                self._fail_init("Runtime.ExitError",
                                f"Runtime exited with error: {_exit_description(code)}")
            else:
                self._fail_init("Sandbox.Timedout",
                                f"Init phase timed out after {self.config.init_timeout_s:.2f} seconds")
        else:
            self.lifecycle.to(State.FAILED)

    def _fail_init(self, error_type: str, message: str) -> None:
        self.init_failure = _error_payload(error_type, message)
        self._emit(f"INIT_REPORT Init Duration: {self.init_duration_ms or 0:.2f} ms\t"
                   f"Phase: init\tStatus: error\tError Type: {error_type}")
        if self.lifecycle.state is not State.FAILED:
            self.lifecycle.to(State.FAILED)

    # -- output capture -------------------------------------------------------------

    def _read_output(self) -> None:
        fd = self._output_fd
        if fd is None:
            return
        while True:
            try:
                chunk = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                # EOF: every process holding the pipe is gone.
                self._close_output()
                return
            data = self._partial + chunk
            *lines, self._partial = data.split(b"\n")
            for line in lines:
                self._emit(line.decode("utf-8", "replace"))

    def _drain_output(self) -> None:
        """Take in everything the runtime wrote so far (it writes before it posts)."""
        self._read_output()

    def _close_output(self) -> None:
        if self._output_fd is None:
            return
        if self._partial:
            self._emit(self._partial.decode("utf-8", "replace"))
            self._partial = b""
        try:
            asyncio.get_running_loop().remove_reader(self._output_fd)
        except RuntimeError:
            pass
        os.close(self._output_fd)
        self._output_fd = None

    def _emit(self, line: str) -> None:
        self._log.write(line)
        current = self._current
        if current is not None:
            current.tail.append(line)
            current.tail_size += len(line) + 1
            while current.tail_size > 2 * LOG_TAIL_BYTES and len(current.tail) > 1:
                current.tail_size -= len(current.tail.pop(0)) + 1
        elif self.invocations == 0:
            # Output of INIT belongs to the first invocation's log tail.
            self._init_lines.append(line)

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
            current.tail.extend(self._init_lines)
            current.tail_size = sum(len(line) + 1 for line in self._init_lines)
            self._init_lines.clear()
        self._current = current
        init_ms = self.init_duration_ms if first and self.config.initialization_type == "on-demand" else None
        self._emit(f"START RequestId: {invocation.request_id} Version: {fv.version}")
        started = time.perf_counter()
        status = "success"
        error: str | None
        if self.init_failure is not None:
            payload, error, status = self.init_failure, "Unhandled", "init_error"
        else:
            self.lifecycle.to(State.BUSY)
            if self._next_waiter is not None and not self._next_waiter.done():
                self._next_waiter.set_result(invocation)
            else:
                self._pending = invocation
            assert self._exit is not None
            waiting: set[asyncio.Future[Any]] = {current.result, self._exit}
            deadline = started + fv.timeout
            while True:
                # asyncio may fire a timer up to one clock tick early; a function
                # must never be stopped before its deadline, so wait out the rest.
                remaining = deadline - time.perf_counter()
                done, _ = await asyncio.wait(waiting, timeout=max(remaining, 0),
                                             return_when=asyncio.FIRST_COMPLETED)
                if done or time.perf_counter() >= deadline:
                    break
            if current.result in done:
                payload, error = current.result.result()
                status = "error" if error else "success"
                self._drain_output()
                self.lifecycle.to(State.READY)
            elif self._exit in done:
                self._drain_output()
                payload, error, status = self._crash_outcome(invocation, self._exit.result())
            else:
                payload, error, status = self._timeout_outcome(invocation)
        if stream is not None and not stream.closed:
            # A buffered response (or an init failure, a crash, a timeout) for a
            # streaming caller: Lambda streams the payload as it is, in one piece.
            if error is None:
                stream.put(payload)
                stream.close()
            else:
                stream.close(current.error_type or _error_type_of(payload), payload)
        duration_ms = (time.perf_counter() - started) * 1000
        usage = self._sandbox.usage() if self._sandbox is not None else None
        max_used = math.ceil((usage.max_memory_bytes or 0) / 1048576) if usage else 0
        # Since August 2025 Lambda bills the INIT phase of on-demand functions too.
        billed = math.ceil(duration_ms + (init_ms or 0))
        self._emit(f"END RequestId: {invocation.request_id}")
        report = (
            f"REPORT RequestId: {invocation.request_id}\tDuration: {duration_ms:.2f} ms\t"
            f"Billed Duration: {billed} ms\tMemory Size: {fv.memory_size} MB\t"
            f"Max Memory Used: {max_used} MB"
        )
        if init_ms is not None:
            report += f"\tInit Duration: {init_ms:.2f} ms"
        if status in ("timeout", "crash", "init_error"):
            report += f"\tStatus: {'timeout' if status == 'timeout' else 'error'}"
        self._emit(report)
        self._log.flush()
        self._current = None
        tail = "\n".join(current.tail) + "\n"
        tail_bytes = tail.encode()[-LOG_TAIL_BYTES:]
        self.last_used = time.monotonic()
        return InvocationOutcome(
            payload=payload, function_error=error, duration_ms=duration_ms,
            billed_duration_ms=billed, init_duration_ms=init_ms, max_memory_used_mb=max_used,
            log_tail=tail_bytes.decode("utf-8", "ignore"), status=status,
        )

    def _timeout_outcome(self, invocation: Invocation) -> tuple[bytes, str, str]:
        seconds = f"{self.config.function_version.timeout:.2f}"
        self._drain_output()
        self._emit(f"{_iso_now()} {invocation.request_id} Task timed out after {seconds} seconds")
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

    async def shutdown(self) -> None:
        if self.lifecycle.state in (State.STOPPING, State.GONE):
            return
        self.lifecycle.to(State.STOPPING)
        if self._api is not None:
            await self._api.stop()
        if self._sandbox is not None:
            await self._sandbox.destroy()
        if self._exit is not None and not self._exit.done():
            self._exit.cancel()
        self._close_output()
        self._log.close()
        if self.config.credentials is not None:
            self.config.credentials.revoke()
        shutil.rmtree(self.config.scratch_root, ignore_errors=True)
        self.lifecycle.to(State.GONE)


def _error_type_of(payload: bytes) -> str:
    """The errorType of an error document, as runtimes write them."""
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        return "Unhandled"
    error_type = document.get("errorType") if isinstance(document, dict) else None
    return error_type if isinstance(error_type, str) and error_type else "Unhandled"


def _exit_description(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name.lower().removeprefix("sig")
        except ValueError:
            name = str(-code)
        return f"signal: {'killed' if name == 'kill' else name}"
    return f"exit status {code}"

