"""The pool of execution environments, per function version.

`invoke` asks for "an environment for this version" and gives it back after one
invocation; the pool decides whether that is a warm one or a cold start, stops idle
ones, and retires the environments of a superseded configuration. Environments are
keyed by (function, version, revision): an update of $LATEST changes the revision,
so new invocations start new environments and the old ones are shut down.

Two budgets bound the cold starts: the memory the host may hand out (the sum of
MemorySize over every live environment; when full, idle environments are stopped
least recently used first, else the call is throttled) and each function's scaling
rate (environments.scaling). Provisioned environments (environments.provisioned)
are handed out before on-demand ones and are never reaped for idleness.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lamina.config import Settings
from lamina.environments.container_images import container_runtime
from lamina.environments.environment import EnvironmentConfig, ExecutionEnvironment
from lamina.environments.scaling import ScalingRate
from lamina.environments.snapstart import (
    RESTORE_TIMEOUT_S,
    SnapStartTemplates,
    restore_error,
)
from lamina.environments.spec import (
    CredentialIssuer,
    EnvironmentListener,
    EnvironmentSpec,
    SpecPreparer,
)
from lamina.environments.states import State
from lamina.errors import ResourceConflictException, TooManyRequestsException
from lamina.images import ImageError, ImageStore, RuntimeImage
from lamina.images.containers import ContainerImage, ContainerImages
from lamina.observe.logs import LogStore
from lamina.runtimes.catalog import CLIENTS_DIR, RuntimeSpec, runtime_spec
from lamina.sandbox.base import SandboxBackend
from lamina.store.blobs import BlobStore
from lamina.store.unpacked import merged_layers_dir, unpacked_dir

log = logging.getLogger("lamina.environments")
VersionKey = tuple[str, str, str]


def version_key(fv: EnvironmentSpec) -> VersionKey:
    return (fv.function_name, fv.version, fv.revision_id)


@dataclass(frozen=True)
class PoolSettings:
    data_dir: Path
    region: str
    account_id: str
    # Lamina's API port, reachable from inside environments (AWS_ENDPOINT_URL).
    api_port: int | None = None
    # "image": runtimes run on their runtime image as `/`; "host": on the host's
    # interpreters (also what a backend that cannot mount images gets).
    runtime_source: str = "image"
    idle_timeout_s: float = 600.0
    init_timeout_s: float = 10.0
    init_cpu_boost: bool = True
    max_response_bytes: int = 6 * 1024 * 1024
    # The memory (MB) all live environments together may have (Settings.environment_memory_mb).
    memory_mb: int = 1 << 30
    # New environments per function per window (Limits.scaling_*).
    scaling_environments: int = 1_000
    scaling_window_s: float = 10.0

    @classmethod
    def of(cls, settings: Settings, data_dir: Path, memory_mb: int) -> PoolSettings:
        """A pool's settings as the server's settings give them (the local pool's, or a
        cluster node's, whose data directory and memory are its own)."""
        return cls(
            data_dir=data_dir, region=settings.region, account_id=settings.account_id,
            api_port=settings.port, runtime_source=settings.runtime_source,
            idle_timeout_s=settings.environment_idle_s,
            init_timeout_s=settings.limits.init_timeout_s,
            init_cpu_boost=settings.init_cpu_boost,
            max_response_bytes=settings.limits.max_sync_response_bytes,
            memory_mb=memory_mb,
            scaling_environments=settings.limits.scaling_environments,
            scaling_window_s=settings.limits.scaling_window_s,
        )


class EnvironmentPool:
    def __init__(self, backend: SandboxBackend, blobs: BlobStore, logs: LogStore,
                 settings: PoolSettings, images: ImageStore | None = None,
                 credentials: CredentialIssuer | None = None,
                 containers: ContainerImages | None = None) -> None:
        self.backend = backend
        # Container images (PackageType Image), by ResolvedImageUri once found.
        self.containers = containers
        self._containers: dict[str, ContainerImage] = {}
        self.credentials = credentials
        self.images = images
        self._images: dict[str, RuntimeImage] = {}
        self.blobs = blobs
        self.logs = logs
        self.settings = settings
        self._idle: dict[VersionKey, list[ExecutionEnvironment]] = {}
        self._all: set[ExecutionEnvironment] = set()
        # Idle provisioned environments, and every environment enrolled as provisioned.
        self._provisioned_idle: dict[VersionKey, list[ExecutionEnvironment]] = {}
        self._provisioned: set[ExecutionEnvironment] = set()
        # MemorySize charged per live environment, and their sum.
        self._charged: dict[ExecutionEnvironment, int] = {}
        self.memory_in_use_mb = 0
        self._scaling = ScalingRate(settings.scaling_environments, settings.scaling_window_s)
        # The newest revision seen per (function, version), to retire older ones.
        self._current: dict[tuple[str, str], str] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        # Listeners every new environment publishes its lifecycle events to.
        self.listeners: list[EnvironmentListener] = []
        # Opens sealed variables and resolves file systems as an environment starts.
        self.prepare: SpecPreparer | None = None
        # SnapStart versions' templates; their cold starts are forks (snapstart.py).
        self.snapstart = SnapStartTemplates(self)

    @property
    def environments(self) -> frozenset[ExecutionEnvironment]:
        return frozenset(self._all)

    async def _runtime(self, identifier: str) -> tuple[RuntimeSpec, RuntimeImage | None]:
        """How to run `identifier`, and the runtime image to run it on (built or pulled
        first if this machine does not have it yet)."""
        on_images = self.images is not None and self.backend.mounts_images
        source = self.settings.runtime_source if on_images else "host"
        runtime = runtime_spec(identifier, source=source)
        if runtime.image is None or self.images is None:
            return runtime, None
        image = self._images.get(runtime.image)
        if image is None:
            try:
                image = await asyncio.to_thread(self.images.ensure, runtime.image)
            except ImageError as error:
                raise ResourceConflictException(
                    f"The function could not start: its runtime {identifier} needs the image "
                    f"{runtime.image}, which could not be made ({error}). Run `lamina runtimes "
                    f"install {identifier}` to see why.") from error
            self._images[runtime.image] = image
        return runtime.on_image(image.own_runtime), image

    async def _container(self, fv: EnvironmentSpec) -> tuple[EnvironmentSpec, RuntimeSpec, ContainerImage]:
        """The container image of an Image function (pulled first if this machine lost
        it), how to start it, and fv with the `_HANDLER` its CMD names."""
        assert fv.image_uri is not None
        if self.containers is None or not self.backend.mounts_images:
            raise ResourceConflictException(
                f"The function could not start: the {self.backend.name} sandbox cannot run container "
                "images (it cannot mount an image as the root file system).")
        image = self._containers.get(fv.image_uri)
        if image is None:
            try:
                image = await asyncio.to_thread(self.containers.ensure, fv.image_uri)
            except ImageError as error:
                raise ResourceConflictException(
                    f"The function could not start: its image {fv.image_uri} could not be pulled "
                    f"({error}).") from error
            self._containers[fv.image_uri] = image
        runtime = container_runtime(image, fv.image_entry_point, fv.image_command)
        command = image.config.command if fv.image_command is None else fv.image_command
        return dataclasses.replace(fv, handler=command[0] if command else ""), runtime, image

    def _config(self, fv: EnvironmentSpec, initialization_type: str, runtime: RuntimeSpec,
                image: RuntimeImage | None, container: ContainerImage | None = None) -> EnvironmentConfig:
        code_root = self.settings.data_dir / "unpacked"
        layer_shas = list(fv.layer_sha256_hex)
        if container is not None:
            # The image is everything: its own /var/task, /opt and runtime client.
            working_directory = fv.image_working_directory or container.config.working_dir or "/"
            return EnvironmentConfig(
                function_version=fv, runtime=runtime, task_root=None, layers_root=None, runtime_root=None,
                root_image=container.root, working_directory=working_directory,
                **self._common(fv, initialization_type))
        return EnvironmentConfig(
            function_version=fv,
            runtime=runtime,
            task_root=unpacked_dir(self.blobs, fv.code_sha256_hex, code_root),
            layers_root=merged_layers_dir(self.blobs, layer_shas, code_root) if layer_shas else None,
            runtime_root=None if runtime.own_runtime_dir else CLIENTS_DIR,
            root_image=image.root if image is not None else None,
            **self._common(fv, initialization_type),
        )

    def _common(self, fv: EnvironmentSpec, initialization_type: str) -> dict[str, Any]:
        """What every environment's config has, whatever runs in it."""
        return dict(
            credentials=self.credentials(fv.role) if self.credentials is not None else None,
            scratch_root=self.settings.data_dir / "environments" / uuid.uuid4().hex,
            region=self.settings.region,
            account_id=self.settings.account_id,
            init_timeout_s=self.settings.init_timeout_s,
            init_cpu_boost=self.settings.init_cpu_boost,
            max_response_bytes=self.settings.max_response_bytes,
            initialization_type=initialization_type,
            network=fv.outbound_network,
            api_port=self.settings.api_port,
        )

    # -- memory -------------------------------------------------------------------

    def _make_room(self, memory_mb: int) -> list[ExecutionEnvironment]:
        """Idle on-demand environments to stop, least recently used first, so that
        memory_mb more fits; TooManyRequestsException when even stopping all of them
        would not do. Nothing changes unless there is room."""
        limit = self.settings.memory_mb
        if self.memory_in_use_mb + memory_mb <= limit:
            return []
        candidates = sorted((env for envs in self._idle.values() for env in envs),
                            key=lambda env: env.last_used)
        victims: list[ExecutionEnvironment] = []
        freed = 0
        for env in candidates:
            if self.memory_in_use_mb - freed + memory_mb <= limit:
                break
            victims.append(env)
            freed += self._charged.get(env, 0)
        if self.memory_in_use_mb - freed + memory_mb > limit:
            raise TooManyRequestsException(
                f"Rate Exceeded. No memory left for another {memory_mb} MB execution environment "
                f"({self.memory_in_use_mb} of {limit} MB in use; LAMINA_ENVIRONMENT_MEMORY_MB "
                "sets the limit).",
                Reason="ConcurrentInvocationLimitExceeded",
            )
        for env in victims:
            key = version_key(env.function_version)
            self._idle[key].remove(env)
            self._uncharge(env)
        return victims

    def _uncharge(self, env: ExecutionEnvironment) -> None:
        self.memory_in_use_mb -= self._charged.pop(env, 0)

    async def environment_config(self, fv: EnvironmentSpec,
                                 initialization_type: str) -> EnvironmentConfig:
        """How to start an environment of fv (its runtime or container image made ready)."""
        if fv.image_uri is not None:
            fv, runtime, container = await self._container(fv)
            return self._config(fv, initialization_type, runtime, None, container)
        runtime, image = await self._runtime(fv.runtime)
        return self._config(fv, initialization_type, runtime, image)

    async def start_environment(self, fv: EnvironmentSpec,
                                initialization_type: str = "on-demand") -> ExecutionEnvironment:
        """A new environment for fv, after its INIT phase (which may have failed); a
        restore from its template for a SnapStart version.

        TooManyRequestsException when the host's environment memory is used up.
        """
        if self.prepare is not None and (fv.sealed_environment or fv.file_system_configs):
            fv = self.prepare(fv)
        backend: SandboxBackend = self.backend
        restoring = await self.snapstart.backend_for(fv)
        if restoring is not None:
            backend, initialization_type = restoring, "snap-start"
        config = await self.environment_config(fv, initialization_type)
        if restoring is not None:
            config = dataclasses.replace(config, restore=True, init_timeout_s=RESTORE_TIMEOUT_S)
        if fv.image_uri is not None:
            fv = config.function_version
        victims = self._make_room(fv.memory_size)
        env = ExecutionEnvironment(config, backend, self.logs)
        env.listeners.extend(listener(fv) for listener in self.listeners)
        self._all.add(env)
        self._charged[env] = fv.memory_size
        self.memory_in_use_mb += fv.memory_size
        try:
            if victims:
                # Their memory is free only once their processes are gone.
                await asyncio.gather(*(self._stop(victim) for victim in victims))
            await env.start()
        except BaseException:
            self._stop_later(env)
            raise
        if config.restore and env.init_failure is not None:
            self._stop_later(env)
            raise restore_error(env.init_failure)
        return env

    def _retire_superseded(self, fv: EnvironmentSpec) -> None:
        slot = (fv.function_name, fv.version)
        previous = self._current.get(slot)
        self._current[slot] = fv.revision_id
        if previous is None or previous == fv.revision_id:
            return
        for env in self._idle.pop((fv.function_name, fv.version, previous), []):
            self._stop_later(env)

    async def acquire(self, fv: EnvironmentSpec) -> ExecutionEnvironment:
        """A ready environment for fv: an idle provisioned one, the most recently used
        idle on-demand one, or a new one (TooManyRequestsException if the function's
        scaling rate or the host's environment memory is used up)."""
        self._retire_superseded(fv)
        key = version_key(fv)
        if self._provisioned_idle:
            idle = self._provisioned_idle.get(key)
            while idle:
                env = idle.pop()
                if env.state is State.READY:
                    return env
        idle = self._idle.get(key)
        while idle:
            env = idle.pop()
            if env.state is State.READY:
                return env
            self._stop_later(env)
        if not self._scaling.take(fv.function_name):
            raise TooManyRequestsException(
                f"Rate Exceeded. Function {fv.function_name} may start at most "
                f"{self.settings.scaling_environments} execution environments per "
                f"{self.settings.scaling_window_s:g} seconds.",
                Reason="ConcurrentInvocationLimitExceeded",
            )
        return await self.start_environment(fv)

    def release(self, env: ExecutionEnvironment) -> None:
        if env.settling is not None and env.state is State.BUSY:
            # Its extensions are still at their post-invoke work: it is reused (or
            # stopped) once they are done, as Lambda does.
            task = asyncio.get_running_loop().create_task(self._release_when_settled(env))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
            return
        fv = env.function_version
        if env in self._provisioned:
            if env.state is State.READY:
                self._provisioned_idle.setdefault(version_key(fv), []).append(env)
                return
            # A failed provisioned environment: its process is killed here, and the
            # provisioned set sees the exit and starts a replacement.
            self._provisioned.discard(env)
            self._stop_later(env)
            return
        stale = self._current.get((fv.function_name, fv.version)) != fv.revision_id
        if env.state is not State.READY or stale or env.credentials_expiring():
            self._stop_later(env)
            return
        self._idle.setdefault(version_key(fv), []).append(env)

    async def _release_when_settled(self, env: ExecutionEnvironment) -> None:
        await env.settled()
        if env.state is not State.STOPPING and env.state is not State.GONE:
            self.release(env)

    def _stop_later(self, env: ExecutionEnvironment) -> None:
        task = asyncio.get_running_loop().create_task(self._stop(env))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def stop_environment(self, env: ExecutionEnvironment) -> None:
        """SHUTDOWN for one environment, giving back the memory it was charged."""
        await self._stop(env)

    async def _stop(self, env: ExecutionEnvironment) -> None:
        try:
            await env.shutdown()
        except Exception:
            log.exception("stopping environment %s", env.id)
        finally:
            self._all.discard(env)
            self._uncharge(env)

    # -- provisioned environments (driven by environments.provisioned) -----------------

    def enroll_provisioned(self, env: ExecutionEnvironment) -> None:
        """Hand out env before any on-demand environment of its version, and keep it warm."""
        self._provisioned.add(env)
        if env.state is State.READY:
            self._provisioned_idle.setdefault(version_key(env.function_version), []).append(env)

    def withdraw_provisioned(self, env: ExecutionEnvironment) -> None:
        """Stop env now if idle, or when its current invocation ends."""
        self._provisioned.discard(env)
        idle = self._provisioned_idle.get(version_key(env.function_version), [])
        if env in idle:
            idle.remove(env)
            self._stop_later(env)
        elif env.state not in (State.BUSY, State.STOPPING, State.GONE):
            self._stop_later(env)

    def retire_function(self, function_name: str, version: str | None = None) -> None:
        """Stop the idle environments of a changed or deleted version (None: of every
        version, the function is gone); other versions' environments stay warm."""
        for key in [k for k in self._idle
                    if k[0] == function_name and (version is None or k[1] == version)]:
            for env in self._idle.pop(key):
                self._stop_later(env)

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(min(10.0, self.settings.idle_timeout_s / 2))
            deadline = time.monotonic() - self.settings.idle_timeout_s
            for key, envs in list(self._idle.items()):
                keep = [env for env in envs if env.last_used >= deadline]
                for env in envs:
                    if env.last_used < deadline:
                        self._stop_later(env)
                self._idle[key] = keep

    async def start(self) -> None:
        # Whatever environments a crashed earlier server left: their sandboxes
        # (processes, mounts, cgroups) and their scratch directories.
        await self.backend.reap_leftovers()
        shutil.rmtree(self.settings.data_dir / "environments", ignore_errors=True)
        self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())

    async def stop(self) -> None:
        """SHUTDOWN for every environment, in parallel."""
        if self._reaper is not None:
            self._reaper.cancel()
        self._idle.clear()
        self._provisioned_idle.clear()
        self._provisioned.clear()
        await asyncio.gather(*(self._stop(env) for env in list(self._all)), return_exceptions=True)
        await self.snapstart.stop()
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
        await self.backend.close()
