"""The node agent: one per Ray node, owning that node's execution environments.

A plain class; placement.py makes it an async Ray actor pinned to its node
(NodeAffinitySchedulingStrategy, not soft), so everything here runs on the node's
own event loop and nothing imports ray. One call, `run`, carries a whole invocation
(code fetched if missing, an environment taken from the node's pool, INVOKE, the
environment given back): a warm invocation is one round trip from the front end.

What an environment writes and reports stays with the front end that asked: the
lifecycle events (which the front end's metrics and tracing listen to) and the log
lines of the run come back with its outcome, so CloudWatch Logs and metrics are
served by the front ends as in single-host mode.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from lamina import errors
from lamina.config import Settings, default_environment_memory_mb
from lamina.environments.environment import (
    ExecutionEnvironment,
    Invocation,
    InvocationOutcome,
)
from lamina.environments.pool import EnvironmentPool, PoolSettings, version_key
from lamina.environments.provisioned import ProvisionedEnvironments
from lamina.environments.spec import EnvironmentSpec
from lamina.environments.states import State
from lamina.environments.streaming import ResponseStream
from lamina.observe.events import LifecycleEvent
from lamina.observe.logs import LogStore, LogStream, now_ms

log = logging.getLogger("lamina.cluster")

# Log lines kept per stream between two runs (an environment's SHUTDOWN lines, which
# no run carries back); beyond it the oldest go.
MAX_PENDING_LINES = 10_000
# Code fetched from a front end: how long one download may take.
FETCH_TIMEOUT_S = 60.0

# A node's stream passes the response on unpaced: the front end's applies Lambda's rate.
UNPACED_BYTES_PER_S = 1 << 40

# An error as it crosses the wire: the LambdaError class's name, message, fields.
WireError = tuple[str, str, dict[str, Any]]


def wire_error(error: BaseException) -> WireError:
    if isinstance(error, errors.LambdaError):
        return type(error).__name__, error.message, dict(error.fields)
    return "ServiceException", f"The node could not run the invocation: {error}", {}


def raise_wire_error(error: WireError) -> None:
    name, message, fields = error
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.LambdaError)):
        cls = errors.ServiceException
    raise cls(message, **fields)


@dataclass
class RunResult:
    """What `run` sends back: the outcome (or the error Invoke answers), and what the
    environment said meanwhile."""

    outcome: InvocationOutcome | None = None
    error: WireError | None = None
    environment_id: str | None = None
    function_version: EnvironmentSpec | None = None
    events: list[LifecycleEvent] = field(default_factory=list)
    # (log group, log stream, timestamp ms, message)
    log_lines: list[tuple[str, str, int, str]] = field(default_factory=list)


class _EventBuffer:
    """One environment's listener: its lifecycle events, until a run takes them."""

    def __init__(self) -> None:
        self.events: list[LifecycleEvent] = []

    def __call__(self, event: LifecycleEvent) -> None:
        self.events.append(event)

    def drain(self) -> list[LifecycleEvent]:
        taken, self.events = self.events, []
        return taken


class _ForwardedStream(LogStream):
    def __init__(self, store: ForwardingLogStore, group: str, name: str) -> None:
        self.name = name
        self._file = None
        self._store = store
        self._group = group

    def write(self, message: str, timestamp_ms: int | None = None) -> None:
        lines = self._store.pending[self.name]
        lines.append((self._group, self.name, timestamp_ms or now_ms(), message))
        if len(lines) > MAX_PENDING_LINES:
            del lines[: len(lines) - MAX_PENDING_LINES]


class ForwardingLogStore(LogStore):
    """Log streams whose lines go back to the front end instead of to this node's disk."""

    def __init__(self) -> None:
        self.pending: defaultdict[str, list[tuple[str, str, int, str]]] = defaultdict(list)

    def open_stream(self, group: str, stream: str) -> LogStream:
        return _ForwardedStream(self, group, stream)

    def drain(self, stream: str) -> list[tuple[str, str, int, str]]:
        return self.pending.pop(stream, [])


def node_data_dir(settings: Settings, node_id: str) -> Path:
    return settings.cluster_node_dir / node_id[:16]


class NodeAgent:
    def __init__(self, settings: Settings, node_id: str, labels: dict[str, float]) -> None:
        from lamina.images import ImageStore
        from lamina.images.containers import ContainerImages
        from lamina.sandbox import NamespaceSettings, choose_backend
        from lamina.store.blobs import BlobStore

        # Ray's workers install uvloop's policy; the netlink sockets the sandboxes' egress
        # rules are read with (pyroute2, on loops of their own) need asyncio's own.
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
        data_dir = node_data_dir(settings, node_id)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.node_id = node_id
        # The node's custom resources, which tell nodes apart in `lamina cluster status`.
        self.labels = labels
        self.settings = settings = settings.replace(data_dir=data_dir)
        self.blobs = BlobStore(data_dir / "code")
        self.logs = ForwardingLogStore()
        sandbox = choose_backend(settings.sandbox or None, NamespaceSettings(
            ephemeral_dir=data_dir / "ephemeral",
            code_dir=data_dir / "unpacked",
            egress_allow=settings.egress_allow,
            first_uid=settings.sandbox_first_uid,
        ))
        images = ImageStore.from_settings(settings)
        containers = ContainerImages(
            settings.image_cache_dir, insecure_registries=images.insecure_registries,
            auth_file=settings.registry_auth_file, max_bytes=settings.limits.max_image_bytes)
        self.memory_mb = settings.cluster_node_memory_mb or default_environment_memory_mb()
        self.pool = EnvironmentPool(
            sandbox, self.blobs, self.logs,
            PoolSettings.of(settings, data_dir, self.memory_mb),
            images, None, containers=containers)
        self.pool.listeners.append(lambda fv: _EventBuffer())
        self.provisioned = ProvisionedEnvironments(self.pool)
        # (function, qualifier) -> environments requested of this node.
        self._provisioned: dict[tuple[str, str], int] = {}
        self._started: asyncio.Task[None] | None = None
        self._fetching: dict[str, asyncio.Future[None]] = {}
        self.runs = 0

    async def _ready(self) -> None:
        if self._started is None:
            self._started = asyncio.get_running_loop().create_task(self.pool.start())
        await self._started

    # -- code ---------------------------------------------------------------------

    async def _fetch(self, sha256_hex: str, url: str) -> None:
        """The blob in this node's cache, downloaded once however many runs wait."""
        if self.blobs.path(sha256_hex).exists():
            return
        waiting = self._fetching.get(sha256_hex)
        if waiting is None:
            waiting = self._fetching[sha256_hex] = asyncio.ensure_future(
                asyncio.to_thread(self._download, sha256_hex, url))
            waiting.add_done_callback(lambda _: self._fetching.pop(sha256_hex, None))
        await asyncio.shield(waiting)

    def _download(self, sha256_hex: str, url: str) -> None:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:  # noqa: S310 - the front end's own URL
            data = response.read()
        if hashlib.sha256(data).hexdigest() != sha256_hex:
            raise errors.ServiceException(f"The code {sha256_hex} fetched from {url} does not match its digest.")
        self.blobs.put(data)

    async def _code(self, spec: EnvironmentSpec, code_urls: dict[str, str]) -> None:
        wanted = ([spec.code_sha256_hex] if spec.image_uri is None and spec.code_sha256_hex else []) \
            + list(spec.layer_sha256_hex)
        await asyncio.gather(*(self._fetch(sha, code_urls[sha]) for sha in wanted))

    # -- invocations --------------------------------------------------------------

    async def _acquire(self, spec: EnvironmentSpec,
                       code_urls: dict[str, str]) -> ExecutionEnvironment | RunResult:
        """An environment for one invocation, its code fetched first; or the error
        (AWS's shape) to answer with."""
        await self._ready()
        self.runs += 1
        try:
            await self._code(spec, code_urls)
            return await self.pool.acquire(spec)
        except Exception as error:  # noqa: BLE001 - every error goes back as AWS's
            if not isinstance(error, errors.LambdaError):
                log.exception("starting an environment of %s:%s", spec.function_name, spec.version)
            return RunResult(error=wire_error(error))

    async def run(self, spec: EnvironmentSpec, code_urls: dict[str, str],
                  invocation: Invocation) -> RunResult:
        taken = await self._acquire(spec, code_urls)
        if isinstance(taken, RunResult):
            return taken
        env = taken
        try:
            outcome = await env.invoke(invocation)
        except Exception as error:  # noqa: BLE001
            log.exception("invocation %s", invocation.request_id)
            return self._result(env, RunResult(error=wire_error(error)))
        finally:
            self.pool.release(env)
        return self._result(env, RunResult(outcome=outcome))

    async def run_streamed(self, spec: EnvironmentSpec, code_urls: dict[str, str],
                           invocation: Invocation,
                           limit_bytes: int) -> AsyncIterator[tuple[Any, ...]]:
        """`run` for a caller reading the response as the function writes it: yields
        ("open", content type, streaming mode) once the runtime has begun its
        response, ("chunk", bytes) as it arrives, and last ("end", error type, error
        document, RunResult). The front end paces what its reader gets; here the
        response only passes through (the runtime is held back when a megabyte waits)."""
        taken = await self._acquire(spec, code_urls)
        if isinstance(taken, RunResult):
            yield ("end", None, None, taken)
            return
        env = taken
        stream = ResponseStream(limit_bytes, limit_bytes, UNPACED_BYTES_PER_S)
        running = asyncio.get_running_loop().create_task(env.invoke(invocation, stream))
        try:
            await stream.wait_open()
            if stream.opened:
                yield ("open", stream.content_type, stream.streaming_mode)
            async for chunk in stream:
                yield ("chunk", chunk)
            try:
                outcome = await running
            except Exception as error:  # noqa: BLE001
                log.exception("invocation %s", invocation.request_id)
                result = RunResult(error=wire_error(error))
            else:
                result = RunResult(outcome=outcome)
        finally:
            if not running.done():
                # The front end went away: the function runs on to its end, as on Lambda.
                stream.abandon()
                running.add_done_callback(lambda _: self.pool.release(env))
            else:
                self.pool.release(env)
        yield ("end", stream.error_type, stream.error_body, self._result(env, result))

    def _result(self, env: ExecutionEnvironment, result: RunResult) -> RunResult:
        result.environment_id = env.id
        result.function_version = env.function_version
        for listener in env.listeners:
            if isinstance(listener, _EventBuffer):
                result.events = listener.drain()
        result.log_lines = self.logs.drain(env.log_stream_name)
        return result

    def retire_function(self, function_name: str, version: str | None = None) -> None:
        self.pool.retire_function(function_name, version)

    async def configure_provisioned(self, function_name: str, qualifier: str,
                                    spec: EnvironmentSpec | None, requested: int,
                                    code_urls: dict[str, str]) -> None:
        """Keep `requested` provisioned environments of spec on this node (0: none)."""
        await self._ready()
        if spec is not None and requested:
            await self._code(spec, code_urls)
            self._provisioned[(function_name, qualifier)] = requested
        else:
            self._provisioned.pop((function_name, qualifier), None)
        self.provisioned.configure(function_name, qualifier, spec, requested)

    # -- operations ---------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """This node now: memory, and environments per version (busy and idle)."""
        await self._ready()
        versions: dict[str, dict[str, int]] = {}
        idle: dict[str, int] = {}
        for env in self.pool.environments:
            fv = env.function_version
            name = f"{fv.function_name}:{fv.version}"
            counts = versions.setdefault(name, {"busy": 0, "idle": 0, "starting": 0})
            state = env.state
            if state is State.READY:
                counts["idle"] += 1
                key = "\x00".join(version_key(fv))
                idle[key] = idle.get(key, 0) + 1
            elif state is State.BUSY:
                counts["busy"] += 1
            else:
                counts["starting"] += 1
        return {
            "node_id": self.node_id,
            "labels": self.labels,
            "memory_mb": self.memory_mb,
            "memory_in_use_mb": self.pool.memory_in_use_mb,
            "environments": len(self.pool.environments),
            "versions": versions,
            "idle": idle,
            "provisioned": self._provisioned_status(),
            "runs": self.runs,
            "at": time.time(),
        }

    def _provisioned_status(self) -> dict[str, dict[str, Any]]:
        """Per "function\0qualifier": environments requested of this node, allocated,
        and why allocation failed (None: it did not)."""
        found = {}
        for (function_name, qualifier), requested in self._provisioned.items():
            status = self.provisioned.status(function_name, qualifier)
            found[f"{function_name}\x00{qualifier}"] = {
                "requested": requested,
                "allocated": status.allocated if status is not None else 0,
                "failure": status.reason if status is not None and status.status == "FAILED" else None,
            }
        return found

    def ping(self) -> str:
        return self.node_id

    async def stop(self) -> None:
        await self.provisioned.stop()
        await self.pool.stop()
