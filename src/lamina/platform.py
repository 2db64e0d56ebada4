"""Wiring: builds every layer from Settings, and starts and stops them together.

The HTTP front (`api`) and the CLI both take a Platform; nothing below `api`
knows about HTTP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamina.config import Settings
from lamina.control.aliases import Aliases
from lamina.control.arns import Region
from lamina.control.code_signing import CodeSigningConfigs
from lamina.control.code_storage import CodeStorage
from lamina.control.concurrency import ConcurrencyRegistry
from lamina.control.container_images import ContainerImageCode
from lamina.control.credentials import ExecutionRoleCredentials
from lamina.control.environment_secrets import EnvironmentSecrets, key_id_of
from lamina.control.event_invoke_configs import EventInvokeConfigs
from lamina.control.file_systems import FileSystems
from lamina.control.function_urls import URL_DOMAIN, FunctionUrls
from lamina.control.functions import FunctionRegistry, SnapshotSettled
from lamina.control.keys import Keys, MasterKey
from lamina.control.layers import Layers
from lamina.control.models import FunctionVersion
from lamina.control.permissions import FunctionPolicies
from lamina.control.policies import ResourcePolicies
from lamina.control.queues import QueueRegistry
from lamina.control.signer import SigningProfiles
from lamina.environments.container_images import ContainerImagePulls
from lamina.environments.pool import EnvironmentPool, PoolSettings
from lamina.environments.provisioned import ProvisionedEnvironments
from lamina.environments.runtime_images import RuntimeImages
from lamina.environments.spec import EnvironmentSpec, RoleCredentials
from lamina.errors import LambdaError
from lamina.events.mappings import EventSourceMappings
from lamina.events.rabbitmq import Secrets
from lamina.events.rules import EventRules
from lamina.events.schedules import Schedules
from lamina.events.timer import Clock, Timer
from lamina.images import ImageStore
from lamina.images.containers import ContainerImages
from lamina.invoke.async_events import AsyncSettings, EventQueue, EventWorkers
from lamina.invoke.concurrency import ConcurrencyCounter
from lamina.invoke.placement import Placement
from lamina.invoke.service import Invoker
from lamina.invoke.specs import environment_spec
from lamina.observe.cloudwatch import CloudWatchMetrics
from lamina.observe.logs import LogStore
from lamina.observe.metric_archive import MetricArchive, Retention
from lamina.observe.metrics import Metrics, Prices
from lamina.observe.trace_headers import Sampler, TraceHeaders, otlp_configured
from lamina.runtimes.catalog import check_runtime
from lamina.sandbox import NamespaceSettings, choose_backend
from lamina.store.aliases import AliasStore
from lamina.store.async_events import AsyncEventStore, EventInvokeConfigStore
from lamina.store.blobs import BlobStore
from lamina.store.changes import Leadership, change_feed
from lamina.store.code_signing import (
    CodeSigningStore,
    SigningJobStore,
    SigningProfileStore,
)
from lamina.store.concurrency import ConcurrencyStore
from lamina.store.database import open_database
from lamina.store.file_systems import FileSystemStore
from lamina.store.function_urls import FunctionUrlStore
from lamina.store.functions import FunctionStore
from lamina.store.keys import KeyStore
from lamina.store.layers import LayerStore
from lamina.store.metrics import MetricStore
from lamina.store.policies import PolicyStore
from lamina.store.queues import QueueStore
from lamina.store.triggers import MappingStore, TimedStore
from lamina.store.unpacked import UnpackedCode

if TYPE_CHECKING:
    from lamina.cluster.placement import ClusterPlacement, ClusterProvisioned
    from lamina.observe.tracing import InvocationTracer

log = logging.getLogger("lamina")


class Platform:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = open_database(settings.sqlalchemy_url)
        self.region = Region(settings.region, settings.account_id)
        # Temporary credentials of execution roles, which the API accepts (signed
        # with the session token) and attributes to the role.
        self.credentials = ExecutionRoleCredentials()
        self.blobs = BlobStore(settings.data_dir / "code")
        function_store, layer_store = FunctionStore(self.engine), LayerStore(self.engine)
        # environments.pool unpacks into data_dir/unpacked.
        self.code = CodeStorage(self.blobs, UnpackedCode(settings.data_dir / "unpacked"),
                                function_store, layer_store, settings.unpacked_code_mb * 1024 * 1024)
        self.policies = ResourcePolicies(PolicyStore(self.engine))
        self.layers = Layers(
            layer_store, self.policies, self.blobs, self.region, settings.limits, self.code
        )
        alias_store = AliasStore(self.engine)
        self.logs = LogStore(settings.data_dir / "logs")
        self.functions = FunctionRegistry(
            function_store, self.blobs, self.region, settings.limits,
            runtime_check=functools.partial(check_runtime, settings=settings), aliases=alias_store,
            layers=self.layers, code=self.code,
        )
        # KMS keys; every function's environment variables are stored sealed under one.
        self.keys = Keys(KeyStore(self.engine),
                         MasterKey.load(settings.data_dir, settings.kms_master_key),
                         self.region, settings.limits)
        self.environment_secrets = EnvironmentSecrets(self.keys)
        self.functions.environment_secrets = self.environment_secrets
        sealed = self.functions.seal_stored_environments()
        if sealed:
            log.info("sealed the environment variables of %d function versions", sealed)
        # EFS file systems and access points, which functions mount (FileSystemConfigs).
        settings.file_systems_root.mkdir(parents=True, exist_ok=True)
        self.file_systems = FileSystems(FileSystemStore(self.engine), settings.file_systems_root,
                                        self.region, settings.limits)
        self.functions.check_file_systems = self.file_systems.check_function_configs
        # Functions' resource-based policies, and who may invoke what.
        self.permissions = FunctionPolicies(self.policies, self.functions, self.region,
                                            settings.limits)
        self.functions.change_listeners.append(self.permissions.function_changed)
        self.function_urls = FunctionUrls(FunctionUrlStore(self.engine), self.functions,
                                          self.region, self.function_url)
        self.functions.change_listeners.append(self.function_urls.function_changed)
        # Resolves FUNCTION[:QUALIFIER] for invocations, alias weights included.
        self.aliases = Aliases(self.functions, alias_store)
        self.aliases.delete_listeners += [self.permissions.alias_deleted,
                                          self.function_urls.alias_deleted]
        self.sandbox = choose_backend(settings.sandbox or None, NamespaceSettings(
            ephemeral_dir=settings.data_dir / "ephemeral",
            code_dir=settings.data_dir / "unpacked",
            egress_allow=settings.egress_allow,
            first_uid=settings.sandbox_first_uid,
        ))
        images = ImageStore.from_settings(settings)
        # A function whose runtime image is not on this machine yet is Pending while
        # the image is made in the background, then Active (or Failed).
        self.runtime_images = RuntimeImages(
            images, on_images=self.sandbox.mounts_images and settings.runtime_source == "image")
        self.functions.runtime_ready = self.runtime_images.ready
        self.functions.install_runtime = self.runtime_images.install
        # Container images (PackageType Image) share the image cache; a function is
        # Pending while its image is pulled, as while a runtime image is made.
        containers = ContainerImages(
            settings.image_cache_dir, insecure_registries=images.insecure_registries,
            auth_file=settings.registry_auth_file, max_bytes=settings.limits.max_image_bytes)
        self.container_images = ContainerImagePulls(containers)
        self.functions.image_code = ContainerImageCode(
            containers if self.sandbox.mounts_images else None, settings.limits)
        self.functions.image_ready = self.container_images.ready
        self.functions.install_image = self.container_images.install
        self.functions.settle_delay_s = settings.function_settle_delay_s
        self.environments = EnvironmentPool(
            self.sandbox, self.blobs, self.logs,
            PoolSettings.of(settings, settings.data_dir, settings.environment_memory_mb),
            images,
            self._role_credentials,
            containers=containers,
        )
        self.functions.change_listeners.append(self._retire_function)
        self.environments.prepare = self._prepare_spec
        self.keys.change_listeners.append(self._key_changed)
        # SnapStart: a published version's INIT runs once, into its template.
        self.functions.make_snapshot = self._make_snapshot
        self.functions.change_listeners.append(self._snapshot_version_changed)
        self._snapshots: set[asyncio.Task[None]] = set()
        self.code.held = self._code_in_use
        self.concurrency = ConcurrencyRegistry(ConcurrencyStore(self.engine), self.functions,
                                               settings.limits)
        self.functions.change_listeners.append(self.concurrency.function_changed)
        self.provisioned: ProvisionedEnvironments | ClusterProvisioned = \
            ProvisionedEnvironments(self.environments)
        self.concurrency.provisioned_listeners.append(self._configure_provisioned)
        self.metrics = Metrics(Prices(settings.price_gb_second_x86_64,
                                      settings.price_gb_second_arm64, settings.price_per_request),
                               enabled=settings.metrics_enabled)
        # The model's minutes in the store (surviving restarts), read by the
        # CloudWatch API.
        self.metric_archive = MetricArchive(self.metrics, MetricStore(self.engine), Retention(
            settings.metrics_flush_s, settings.metrics_minute_retention_s,
            settings.metrics_retention_s))
        self.cloudwatch = CloudWatchMetrics(self.metric_archive)
        self.environments.listeners.append(
            lambda fv: self.metrics.listener_for(fv.function_name, fv.version, fv.architecture))
        # Code signing: the signer's profiles (private keys in data_dir/signer, 0600) and
        # Lambda's code signing configs, which check packages and layers as they deploy.
        self.signing_profiles = SigningProfiles(SigningProfileStore(self.engine),
                                                SigningJobStore(self.engine), self.region,
                                                settings.data_dir / "signer")
        self.code_signing = CodeSigningConfigs(CodeSigningStore(self.engine), self.functions,
                                               self.signing_profiles, self.blobs, self.region)
        self.code_signing.warned = self.metrics.signature_validation_error
        self.functions.code_signing = self.code_signing
        self.layers.check_integrity = self.code_signing.check_integrity
        self.async_events = EventQueue(AsyncEventStore(self.engine), self.metrics)
        # Where environments run: this host's pool, or a cluster's nodes.
        self.placement: Placement[Any] = self.environments
        self.cluster: ClusterPlacement | None = None
        if settings.cluster:
            # Only now: a server outside cluster mode never loads Ray.
            from lamina.cluster.placement import ClusterPlacement

            self.placement = self.cluster = ClusterPlacement(
                settings, self.logs, self.environments.listeners,
                lambda name: (self.concurrency.reserved.get(name), self.concurrency.shared_pool))
            self.cluster.prepare = self._prepare_spec
            self.provisioned = self.cluster.provisioned
        self.invoker = Invoker(self.aliases, self.placement, self.region, settings.limits,
                               ConcurrencyCounter(self.concurrency, self.metrics), self.metrics,
                               self.async_events)
        self._wire_tracing(settings)
        self.queues = QueueRegistry(QueueStore(self.engine), self.region, settings.limits)
        self.event_invoke_configs = EventInvokeConfigs(
            EventInvokeConfigStore(self.engine), self.functions, settings.limits
        )
        self.functions.change_listeners.append(self.event_invoke_configs.function_changed)
        self.async_workers = EventWorkers(
            self.async_events, self.invoker, self.event_invoke_configs, self.queues,
            AsyncSettings(
                delay_scale=settings.async_retry_delay_scale,
                workers_per_function=settings.async_workers_per_function,
                lease_s=settings.async_lease_s,
            ),
            reserved=lambda name: self.concurrency.reserved.get(name),
        )
        # Event source mappings: pollers that read queues and brokers for functions.
        self.event_source_mappings = EventSourceMappings(
            MappingStore(self.engine), self.functions, self.queues, self.invoker, self.region,
            settings.limits, brokers=settings.brokers, secrets=Secrets(settings.secrets_file),
        )
        # Schedules: EventBridge rules and EventBridge Scheduler, fired by one timer.
        clock = Clock(settings.schedule_time_scale)
        self.event_rules = EventRules(TimedStore(self.engine, "rules"), self.invoker,
                                      self.permissions, self.queues, self.region, clock)
        self.schedules = Schedules(TimedStore(self.engine, "schedules"), self.invoker,
                                   self.queues, self.region, clock)
        self.schedule_leadership = Leadership(self.engine, "schedule")
        self.timer = Timer(clock, [self.event_rules, self.schedules],
                           leader=self.schedule_leadership.held)
        self.event_rules.changed = self.schedules.changed = self.timer.changed
        # Front ends sharing one PostgreSQL keep each other's caches in step.
        self.changes = change_feed(self.engine)
        for topic, registry in (("function", self.functions), ("policy", self.permissions),
                                ("function-url", self.function_urls),
                                ("event-invoke-config", self.event_invoke_configs),
                                ("concurrency", self.concurrency)):
            registry.announce = functools.partial(self.changes.publish, topic)
            self.changes.subscribe(topic, registry.changed_elsewhere)
        if self.cluster is not None:
            # Provisioned environments are the cluster's, not one front end's: every
            # front end keeps the same spread, so any of them answers for it and
            # spreads it again when a node is lost.
            self.changes.subscribe("concurrency", self._provisioned_elsewhere)

    def _wire_tracing(self, settings: Settings) -> None:
        """Trace headers always; spans only when a collector is named."""
        self.invoker.trace_headers = TraceHeaders(
            Sampler(settings.trace_reservoir_per_s, settings.trace_sampling_rate))
        self.tracer: InvocationTracer | None = None
        if not otlp_configured(os.environ):
            return
        # Only now: a server without a collector never loads the OTel SDK.
        from lamina.observe.tracing import FunctionResource, InvocationTracer

        tracer = self.tracer = InvocationTracer.from_environment()
        if tracer is not None:
            self.environments.listeners.append(lambda fv: tracer.listener_for(FunctionResource(
                fv.function_name, fv.version, fv.memory_size, settings.region,
                settings.account_id, fv.architecture)))

    def function_url(self, url_id: str) -> str:
        """A function URL as clients are given it: a host name under .localhost, which
        resolves to loopback without any DNS set-up, on this server's port."""
        return f"http://{url_id}.lambda-url.{self.region.region}.{URL_DOMAIN}:{self.settings.port}/"

    def _role_credentials(self, role_arn: str) -> RoleCredentials:
        issued = self.credentials.issue(role_arn)
        return RoleCredentials(
            variables={"AWS_ACCESS_KEY_ID": issued.access_key_id,
                       "AWS_SECRET_ACCESS_KEY": issued.secret_access_key,
                       "AWS_SESSION_TOKEN": issued.session_token},
            expiration=issued.expiration,
            revoke=lambda: self.credentials.revoke(issued.access_key_id),
        )

    def _prepare_spec(self, spec: EnvironmentSpec) -> EnvironmentSpec:
        """At an environment's start: its variables opened (Lambda's KMS errors when the
        key cannot be used) and its file systems found (EFSMountFailureException)."""
        changes: dict[str, object] = {}
        if spec.sealed_environment:
            changes["environment"] = self.environment_secrets.open(
                spec.sealed_environment, self.region.function_arn(spec.function_name))
        if spec.file_system_configs:
            changes["file_system_mounts"] = self.file_systems.mounts(spec.file_system_configs)
        return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]

    def _retire_function(self, function_name: str, version: str | None = None) -> None:
        self.placement.retire_function(function_name, version)

    def _key_changed(self, key_id: str) -> None:
        """A key was disabled, enabled or scheduled for deletion: environments holding
        variables it opened are retired, so the next invocation meets the key's state."""
        for data in self.functions.store.all_versions():
            sealed = data.get("sealed_environment")
            if sealed and key_id_of(sealed) == key_id:
                self.placement.retire_function(data["function_name"], data["version"])

    def _configure_provisioned(self, function_name: str, qualifier: str,
                               fv: FunctionVersion | None, requested: int) -> None:
        spec = environment_spec(fv) if fv is not None else None
        if self.cluster is not None and spec is not None:
            # Sealed variables are opened here: nodes hold no keys.
            spec = self._prepare_spec(spec)
        self.provisioned.configure(function_name, qualifier, spec, requested)

    def _provisioned_elsewhere(self, function_name: str) -> None:
        assert self.cluster is not None
        configured = {(c.function_name, c.qualifier): c for c in self.concurrency.provisioned.values()}
        for function, qualifier in list(self.cluster.provisioned_configs):
            if function == function_name and (function, qualifier) not in configured:
                self._configure_provisioned(function, qualifier, None, 0)
        for (function, qualifier), config in configured.items():
            if function != function_name:
                continue
            try:
                fv = self.functions.get_version(function, qualifier)
            except LambdaError:
                continue
            self._configure_provisioned(function, qualifier, fv, config.requested)

    def _make_snapshot(self, fv: FunctionVersion, settled: SnapshotSettled) -> None:
        async def make() -> None:
            try:
                outcome = await self.environments.snapstart.make(environment_spec(fv))
            except Exception as error:  # noqa: BLE001 - the version fails, saying why
                log.exception("SnapStart snapshot of %s:%s", fv.function_name, fv.version)
                outcome = ("Failed", "InternalError", f"The snapshot could not be made: {error}")
            settled(outcome)

        task = asyncio.get_running_loop().create_task(make())
        self._snapshots.add(task)
        task.add_done_callback(self._snapshots.discard)

    def _snapshot_version_changed(self, function_name: str, version: str | None) -> None:
        """A deleted version (or function) takes its SnapStart template with it."""
        if version is not None and self.functions.store.get_version(function_name, version):
            return
        task = asyncio.get_running_loop().create_task(
            self.environments.snapstart.retire(function_name, version))
        self._snapshots.add(task)
        task.add_done_callback(self._snapshots.discard)

    def _code_in_use(self) -> list[Path]:
        """The unpacked trees live environments have mounted at /var/task and /opt."""
        held = []
        for env in (*self.environments.environments, *self.environments.snapstart.environments):
            if env.config.task_root is not None:
                held.append(env.config.task_root)
            if env.config.layers_root is not None:
                held.append(env.config.layers_root)
        return held

    async def start(self) -> None:
        await self.changes.start()
        if self.cluster is not None:
            await self.cluster.start()
        else:
            await self.environments.start()
        # Before any environment starts: nothing holds code that may go.
        await self.code.start()
        # Functions a stopped server left waiting for their runtime wait on.
        self.functions.resume_waiting()
        # Provisioned concurrency put before a restart is allocated again.
        for config in list(self.concurrency.provisioned.values()):
            try:
                fv = self.functions.get_version(config.function_name, config.qualifier)
            except LambdaError as error:
                log.warning("provisioned concurrency of %s:%s not started: %s",
                            config.function_name, config.qualifier, error.message)
                continue
            self._configure_provisioned(config.function_name, config.qualifier, fv, config.requested)
        # Events accepted before a restart (or a crash) are picked up again.
        await self.async_workers.start()
        # Mappings that were enabled poll again.
        await self.event_source_mappings.start()
        await self.timer.start()
        await self.metric_archive.start()

    async def stop(self) -> None:
        await self.code.stop()
        await self.timer.stop()
        self.schedule_leadership.release()
        await self.schedules.stop()
        await self.event_source_mappings.stop()
        await self.async_workers.stop()
        await self.provisioned.stop()
        await self.environments.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        # After the environments: the last invocations' reports are in the model.
        await self.metric_archive.stop()
        await self.changes.stop()
        if self.tracer is not None:
            # The last spans (the environments' final REPORTs) leave before the exit.
            await asyncio.to_thread(self.tracer.shutdown)
        self.engine.dispose()
