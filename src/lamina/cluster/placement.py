"""ClusterPlacement: the front end's side of cluster mode (see __init__.py).

Which node runs an invocation: one with an idle warm environment of the version
(the most idle first), else the one with the most free environment memory. The
front end's view of the nodes is what their agents reported at the last poll
(every POLL_S), kept current in between by what this front end itself placed;
other front ends' placements show up at the next poll, so two front ends may both
cold-start where one warm environment would have done (never a wrong answer).

A node is dropped from the view as soon as a call to its agent fails with a Ray
error (its invocations in flight fail with ServiceException, which the Invoker
answers and async events retry), and when Ray reports it dead; a new node is
used from the poll after its agent answers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from lamina.cluster.agent import NodeAgent, RunResult, raise_wire_error
from lamina.cluster.ledger import ConcurrencyLedger
from lamina.config import Settings
from lamina.environments.environment import Invocation, InvocationOutcome, _end_stream
from lamina.environments.pool import version_key
from lamina.environments.provisioned import ProvisionedStatus
from lamina.environments.report import error_type_of
from lamina.environments.spec import EnvironmentListener, EnvironmentSpec, SpecPreparer
from lamina.environments.streaming import ResponseStream
from lamina.errors import ServiceException, TooManyRequestsException
from lamina.observe.events import LifecycleListener
from lamina.observe.logs import LogStore, LogStream

log = logging.getLogger("lamina.cluster")

# How often the view of the nodes is refreshed from Ray and the agents.
POLL_S = 1.0
# An agent that does not answer its status within this is left out until it does.
STATUS_TIMEOUT_S = 5.0
# Ray Client sessions that fail to start before one is given up on.
CONNECT_ATTEMPTS = 5
LEDGER_NAME = "lamina-concurrency-ledger"
AGENT_PREFIX = "lamina-agent-"
# AWS's message for every concurrency throttle (invoke/concurrency.py).
RATE_EXCEEDED = "Rate Exceeded."
# Log streams of remote environments kept open on this front end.
MAX_OPEN_STREAMS = 1_000


def connect(address: str, namespace: str) -> None:
    """Join the Ray cluster as a driver (once per process). Through Ray Client the
    head starts a server process for each client, which a busy head may not manage
    within Ray's own deadline: that is tried again, for up to CONNECT_ATTEMPTS."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            ray.init(address=address, namespace=namespace, logging_level=logging.WARNING,
                     log_to_driver=False)
            return
        except ConnectionError as error:
            if not address.startswith("ray://") or attempt == CONNECT_ATTEMPTS:
                raise
            log.warning("joining the Ray cluster at %s failed (%s); trying again", address,
                        str(error).splitlines()[0] if str(error) else type(error).__name__)
            ray.shutdown()
            time.sleep(2.0)


def environment_nodes(resource: str) -> list[dict[str, Any]]:
    """The live Ray nodes that run environments (advertise `resource`)."""
    return [node for node in ray.nodes()
            if node.get("Alive") and node.get("Resources", {}).get(resource)]


def node_labels(node: dict[str, Any], resource: str) -> dict[str, float]:
    """A node's own custom resources (what tells nodes apart), without Ray's."""
    return {name: value for name, value in node.get("Resources", {}).items()
            if name not in ("CPU", "GPU", "memory", "object_store_memory", resource)
            and not name.startswith("node:") and not name.startswith("accelerator_type")}


def agent_for(node_id: str, settings: Settings, labels: dict[str, float]) -> Any:
    """The node's agent: started pinned to the node if no front end started it yet."""
    actor = ray.remote(NodeAgent).options(  # type: ignore[attr-defined]
        name=AGENT_PREFIX + node_id, namespace=settings.cluster_namespace,
        lifetime="detached", get_if_exists=True, num_cpus=0, max_concurrency=10_000,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
    return actor.remote(settings, node_id, labels)


def ledger(namespace: str) -> Any:
    """The concurrency ledger, on the head node (it goes with the cluster)."""
    return ray.remote(ConcurrencyLedger).options(  # type: ignore[attr-defined]
        name=LEDGER_NAME, namespace=namespace, lifetime="detached", get_if_exists=True,
        num_cpus=0, max_restarts=-1, resources={"node:__internal_head__": 0.001}).remote()


@dataclass
class Node:
    node_id: str
    agent: Any
    labels: dict[str, float]
    memory_mb: int = 0
    memory_in_use_mb: int = 0
    # Idle environments per version key ("\0"-joined), as last seen plus placed since.
    idle: dict[str, int] = field(default_factory=dict)
    alive: bool = False
    in_flight: int = 0
    # Provisioned environments per "function\0qualifier", as the agent reported.
    provisioned: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def free_mb(self) -> int:
        return self.memory_mb - self.memory_in_use_mb


@dataclass
class ClusterLease:
    """One invocation's place: a node, and the ledger's slot."""

    placement: ClusterPlacement
    node: Node
    spec: EnvironmentSpec
    token: str
    key: str

    async def invoke(self, invocation: Invocation,
                     stream: ResponseStream | None = None) -> InvocationOutcome:
        return await self.placement.run(self, invocation, stream)


class ClusterPlacement:
    def __init__(self, settings: Settings, logs: LogStore, listeners: list[EnvironmentListener],
                 limits_for: Callable[[str], tuple[int | None, int]]) -> None:
        self.settings = settings
        self.logs = logs
        # The local pool's listener factories (metrics, tracing): the same list object,
        # so listeners added later apply to remote environments too.
        self.listeners = listeners
        # (reserved concurrency or None, the account's unreserved limit) of a function.
        self.limits_for = limits_for
        # A signed URL this front end serves a code blob at (set by `lamina serve`).
        self.code_url: Callable[[str], str] | None = None
        # Opens sealed variables and resolves file systems: done here, as nodes hold
        # no keys (the platform's, as for the local pool).
        self.prepare: SpecPreparer | None = None
        self.nodes: dict[str, Node] = {}
        # Ray Client does not carry streaming generators: through it a streamed response
        # comes back whole, at the end.
        self.streams_chunks = not settings.cluster.startswith("ray://")
        self._ledger: Any = None
        self._poller: asyncio.Task[None] | None = None
        self._remote_listeners: dict[str, list[LifecycleListener]] = {}
        self._streams: dict[tuple[str, str], LogStream] = {}
        self.provisioned_configs: dict[tuple[str, str], tuple[EnvironmentSpec | None, int]] = {}
        # What the platform (and the API's provisioned-concurrency status) talks to.
        self.provisioned = ClusterProvisioned(self)

    # -- start and stop -----------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        await asyncio.to_thread(connect, settings.cluster, settings.cluster_namespace)
        self._ledger = await asyncio.to_thread(ledger, settings.cluster_namespace)
        await self.refresh()
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        # The agents and their environments stay: they belong to the cluster, and
        # other front ends use them.
        if self._poller is not None:
            self._poller.cancel()
        for stream in self._streams.values():
            stream.close()
        self._streams.clear()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                await self.refresh()
            except Exception:
                log.exception("refreshing the cluster's nodes")

    async def refresh(self) -> None:
        """The view of the nodes, from Ray (which nodes live) and their agents."""
        settings = self.settings
        found = await asyncio.to_thread(environment_nodes, settings.cluster_node_resource)
        live = {node["NodeID"]: node for node in found}
        changed = False
        for node_id in [n for n in self.nodes if n not in live]:
            del self.nodes[node_id]
            changed = True
        for node_id, info in live.items():
            if node_id not in self.nodes:
                labels = node_labels(info, settings.cluster_node_resource)
                try:
                    agent = await asyncio.to_thread(agent_for, node_id, settings, labels)
                except Exception as error:  # noqa: BLE001 - tried again at the next poll
                    log.warning("no agent on node %s yet: %s", node_id[:12], error)
                    continue
                self.nodes[node_id] = Node(node_id, agent, labels)
        statuses = await asyncio.gather(
            *(asyncio.wait_for(self._status(node), STATUS_TIMEOUT_S) for node in self.nodes.values()),
            return_exceptions=True)
        for node, status in zip(list(self.nodes.values()), statuses):
            if isinstance(status, BaseException):
                if node.alive:
                    log.warning("node %s does not answer: %s", node.node_id[:12], status)
                    changed = True
                node.alive = False
                continue
            if not node.alive:
                changed = True
            node.alive = True
            node.memory_mb = status["memory_mb"]
            node.memory_in_use_mb = status["memory_in_use_mb"]
            node.idle = dict(status["idle"])
            node.provisioned = dict(status.get("provisioned", {}))
        if changed and self.provisioned_configs:
            for (name, qualifier), (spec, requested) in list(self.provisioned_configs.items()):
                self._spread_provisioned(name, qualifier, spec, requested)

    async def _status(self, node: Node) -> dict[str, Any]:
        status: dict[str, Any] = await node.agent.status.remote()
        return status

    # -- placing ------------------------------------------------------------------

    def _choose(self, spec: EnvironmentSpec, key: str) -> Node:
        live = [node for node in self.nodes.values() if node.alive]
        if not live:
            raise ServiceException(
                "No cluster node can run the invocation now: no live node advertises the "
                f"resource {self.settings.cluster_node_resource}.")
        warm = [node for node in live if node.idle.get(key, 0) > 0]
        if warm:
            node = max(warm, key=lambda n: (n.idle[key], -n.in_flight))
            node.idle[key] -= 1
            return node
        node = max(live, key=lambda n: (n.free_mb, -n.in_flight))
        # Counted at once so that the next cold start goes elsewhere if this node
        # is now the fuller one; the next poll says what it really holds.
        node.memory_in_use_mb += spec.memory_size
        return node

    async def acquire(self, spec: EnvironmentSpec) -> ClusterLease:
        reserved, unreserved = self.limits_for(spec.function_name)
        token = await self._ledger.take.remote(spec.function_name, reserved, unreserved,
                                               float(spec.timeout))
        if token is None:
            reason = "ReservedFunctionConcurrentInvocationLimitExceeded" if reserved is not None \
                else "ConcurrentInvocationLimitExceeded"
            raise TooManyRequestsException(RATE_EXCEEDED, Reason=reason)
        key = "\x00".join(version_key(spec))
        try:
            node = self._choose(spec, key)
        except BaseException:
            self._ledger.release.remote(token)
            raise
        node.in_flight += 1
        return ClusterLease(self, node, spec, token, key)

    def release(self, lease: ClusterLease) -> None:
        self._ledger.release.remote(lease.token)
        lease.node.in_flight -= 1

    def _code_urls(self, spec: EnvironmentSpec) -> dict[str, str]:
        if self.code_url is None:
            raise ServiceException("This front end serves no code to the cluster's nodes.")
        digests = [*spec.layer_sha256_hex]
        if spec.image_uri is None and spec.code_sha256_hex:
            digests.append(spec.code_sha256_hex)
        return {sha: self.code_url(sha) for sha in digests}

    async def run(self, lease: ClusterLease, invocation: Invocation,
                  stream: ResponseStream | None) -> InvocationOutcome:
        node = lease.node
        spec = lease.spec
        if self.prepare is not None and (spec.sealed_environment or spec.file_system_configs):
            spec = self.prepare(spec)
        try:
            if stream is not None and self.streams_chunks:
                return await self._run_streamed(lease, spec, invocation, stream)
            result: RunResult = await node.agent.run.remote(spec, self._code_urls(spec), invocation)
        except ray.exceptions.RayError as error:
            if not isinstance(error, ray.exceptions.RayTaskError):
                # The node (or its agent) is gone: nothing more goes there until a poll
                # finds it answering again.
                node.alive = False
            log.warning("invocation %s on node %s failed: %s", invocation.request_id,
                        node.node_id[:12], error)
            _end_stream(stream, b"", "Unhandled", "Sandbox.Failure")
            raise ServiceException(
                "An error occurred and the request cannot be processed: the cluster node "
                "running the invocation was lost.") from None
        self._forward(result)
        if result.error is not None:
            _end_stream(stream, b"", "Unhandled", "Sandbox.Failure")
            raise_wire_error(result.error)
        assert result.outcome is not None
        outcome = result.outcome
        if outcome.status in ("success", "error"):
            node.idle[lease.key] = node.idle.get(lease.key, 0) + 1
        # The response comes back whole: a streamed invocation on a node is streamed
        # to its caller in one piece, as Lambda streams a buffered response.
        _end_stream(stream, outcome.payload, outcome.function_error,
                    _error_type(outcome) if outcome.function_error else None)
        return outcome

    async def _run_streamed(self, lease: ClusterLease, spec: EnvironmentSpec,
                            invocation: Invocation, stream: ResponseStream) -> InvocationOutcome:
        """The response read as the node's runtime writes it, chunk by chunk through a
        Ray streaming generator; this front end's stream applies Lambda's pacing."""
        pieces = lease.node.agent.run_streamed.options(num_returns="streaming").remote(
            spec, self._code_urls(spec), invocation, stream.limit_bytes)
        end: tuple[Any, ...] | None = None
        async for ref in pieces:
            item = await ref
            if item[0] == "open":
                stream.open(item[1], item[2])
            elif item[0] == "chunk":
                stream.put(item[1])
            else:
                end = item
        assert end is not None
        _, error_type, error_body, result = end
        self._forward(result)
        if result.error is not None:
            stream.close("Sandbox.Failure", None)
            raise_wire_error(result.error)
        stream.close(error_type, error_body)
        assert result.outcome is not None
        if result.outcome.status in ("success", "error"):
            lease.node.idle[lease.key] = lease.node.idle.get(lease.key, 0) + 1
        return result.outcome

    def _forward(self, result: RunResult) -> None:
        """The run's lifecycle events to this front end's listeners (metrics, traces),
        its log lines to this front end's log store."""
        if result.environment_id is not None and result.events and result.function_version:
            listeners = self._remote_listeners.get(result.environment_id)
            if listeners is None:
                if len(self._remote_listeners) > 10 * MAX_OPEN_STREAMS:
                    self._remote_listeners.clear()
                fv = result.function_version
                listeners = self._remote_listeners[result.environment_id] = [
                    factory(fv) for factory in self.listeners]
            for event in result.events:
                for listener in listeners:
                    try:
                        listener(event)
                    except Exception:
                        log.exception("listener of a remote environment")
        touched = set()
        for group, stream_name, timestamp_ms, message in result.log_lines:
            stream = self._streams.get((group, stream_name))
            if stream is None:
                if len(self._streams) >= MAX_OPEN_STREAMS:
                    oldest = next(iter(self._streams))
                    self._streams.pop(oldest).close()
                stream = self._streams[(group, stream_name)] = self.logs.open_stream(group, stream_name)
            stream.write(message, timestamp_ms)
            touched.add(stream)
        for stream in touched:
            stream.flush()

    # -- what the control plane says ----------------------------------------------

    def retire_function(self, function_name: str, version: str | None = None) -> None:
        for node in self.nodes.values():
            if node.alive:
                node.agent.retire_function.remote(function_name, version)
            for key in [k for k in node.idle if k.split("\x00")[0] == function_name
                        and (version is None or k.split("\x00")[1] == version)]:
                del node.idle[key]

    def configure_provisioned(self, function_name: str, qualifier: str,
                              spec: EnvironmentSpec | None, requested: int) -> None:
        """Provisioned concurrency spread over the live nodes (the same split on every
        front end: by node id), and spread again when a node comes or goes."""
        if spec is None or requested == 0:
            self.provisioned_configs.pop((function_name, qualifier), None)
        else:
            self.provisioned_configs[(function_name, qualifier)] = (spec, requested)
        self._spread_provisioned(function_name, qualifier, spec, requested)

    def _spread_provisioned(self, function_name: str, qualifier: str,
                            spec: EnvironmentSpec | None, requested: int) -> None:
        live = sorted((node for node in self.nodes.values() if node.alive), key=lambda n: n.node_id)
        if not live:
            return
        share, extra = divmod(requested, len(live))
        urls = self._code_urls(spec) if spec is not None and requested else {}
        for index, node in enumerate(live):
            count = share + (1 if index < extra else 0)
            node.agent.configure_provisioned.remote(function_name, qualifier, spec, count, urls)

    # -- operations ---------------------------------------------------------------

    async def status(self) -> list[dict[str, Any]]:
        statuses = []
        for node in self.nodes.values():
            try:
                statuses.append(await asyncio.wait_for(self._status(node), STATUS_TIMEOUT_S))
            except Exception as error:  # noqa: BLE001 - shown as such
                statuses.append({"node_id": node.node_id, "labels": node.labels,
                                 "error": str(error)})
        return statuses

    async def ledger_counts(self) -> dict[str, Any]:
        counts: dict[str, Any] = await self._ledger.counts.remote()
        return counts


class ClusterProvisioned:
    """Provisioned concurrency over the cluster, with the interface of the local
    environments.provisioned.ProvisionedEnvironments (configure, status, stop)."""

    def __init__(self, placement: ClusterPlacement) -> None:
        self.placement = placement

    def configure(self, function_name: str, qualifier: str, fv: EnvironmentSpec | None,
                  requested: int) -> None:
        self.placement.configure_provisioned(function_name, qualifier, fv, requested)

    def status(self, function_name: str, qualifier: str) -> ProvisionedStatus | None:
        """Summed over the live nodes, as their agents last reported."""
        config = self.placement.provisioned_configs.get((function_name, qualifier))
        if config is None:
            return None
        key = f"{function_name}\x00{qualifier}"
        allocated, failures = 0, []
        for node in self.placement.nodes.values():
            found = node.provisioned.get(key) if node.alive else None
            if found is None:
                continue
            allocated += found["allocated"]
            if found["failure"]:
                failures.append(found["failure"])
        if failures:
            return ProvisionedStatus(allocated, allocated, "FAILED", failures[0])
        return ProvisionedStatus(allocated, allocated,
                                 "READY" if allocated >= config[1] else "IN_PROGRESS")

    async def stop(self) -> None:
        # The environments belong to the nodes, and stay for the other front ends.
        return None


def _error_type(outcome: InvocationOutcome) -> str:
    return error_type_of(outcome.payload) or "Unhandled"
