"""Wiring: builds every layer from Settings, and starts and stops them together.

The HTTP front (`api`) and the CLI both take a Platform; nothing below `api`
knows about HTTP.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path

from lamina.config import Settings
from lamina.control.aliases import Aliases
from lamina.control.arns import Region
from lamina.control.code_storage import CodeStorage
from lamina.control.concurrency import ConcurrencyRegistry
from lamina.control.container_images import ContainerImageCode
from lamina.control.credentials import ExecutionRoleCredentials
from lamina.control.event_invoke_configs import EventInvokeConfigs
from lamina.control.function_urls import URL_DOMAIN, FunctionUrls
from lamina.control.functions import FunctionRegistry, SnapshotSettled
from lamina.control.layers import Layers
from lamina.control.models import FunctionVersion
from lamina.control.permissions import FunctionPolicies
from lamina.control.policies import ResourcePolicies
from lamina.control.queues import QueueRegistry
from lamina.environments.container_images import ContainerImagePulls
from lamina.environments.pool import EnvironmentPool, PoolSettings
from lamina.environments.provisioned import ProvisionedEnvironments
from lamina.environments.runtime_images import RuntimeImages
from lamina.environments.spec import RoleCredentials
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
from lamina.invoke.service import Invoker
from lamina.invoke.specs import environment_spec
from lamina.observe.logs import LogStore
from lamina.observe.metrics import Metrics, Prices
from lamina.runtimes.catalog import check_runtime
from lamina.sandbox import NamespaceSettings, choose_backend
from lamina.store.aliases import AliasStore
from lamina.store.async_events import AsyncEventStore, EventInvokeConfigStore
from lamina.store.blobs import BlobStore
from lamina.store.concurrency import ConcurrencyStore
from lamina.store.database import open_database
from lamina.store.function_urls import FunctionUrlStore
from lamina.store.functions import FunctionStore
from lamina.store.layers import LayerStore
from lamina.store.policies import PolicyStore
from lamina.store.queues import QueueStore
from lamina.store.triggers import MappingStore, TimedStore
from lamina.store.unpacked import UnpackedCode

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
            PoolSettings(
                data_dir=settings.data_dir,
                region=settings.region,
                account_id=settings.account_id,
                api_port=settings.port,
                runtime_source=settings.runtime_source,
                idle_timeout_s=settings.environment_idle_s,
                init_timeout_s=settings.limits.init_timeout_s,
                init_cpu_boost=settings.init_cpu_boost,
                max_response_bytes=settings.limits.max_sync_response_bytes,
                memory_mb=settings.environment_memory_mb,
                scaling_environments=settings.limits.scaling_environments,
                scaling_window_s=settings.limits.scaling_window_s,
            ),
            images,
            self._role_credentials,
            containers=containers,
        )
        self.functions.change_listeners.append(self.environments.retire_function)
        # SnapStart: a published version's INIT runs once, into its template.
        self.functions.make_snapshot = self._make_snapshot
        self.functions.change_listeners.append(self._snapshot_version_changed)
        self._snapshots: set[asyncio.Task[None]] = set()
        self.code.held = self._code_in_use
        self.concurrency = ConcurrencyRegistry(ConcurrencyStore(self.engine), self.functions,
                                               settings.limits)
        self.functions.change_listeners.append(self.concurrency.function_changed)
        self.provisioned = ProvisionedEnvironments(self.environments)
        self.concurrency.provisioned_listeners.append(self._configure_provisioned)
        self.metrics = Metrics(Prices(settings.price_gb_second_x86_64,
                                      settings.price_gb_second_arm64, settings.price_per_request))
        self.environments.listeners.append(
            lambda fv: self.metrics.listener_for(fv.function_name, fv.version, fv.architecture))
        self.async_events = EventQueue(AsyncEventStore(self.engine), self.metrics)
        self.invoker = Invoker(self.aliases, self.environments, self.region, settings.limits,
                               ConcurrencyCounter(self.concurrency, self.metrics), self.metrics,
                               self.async_events)
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
        self.timer = Timer(clock, [self.event_rules, self.schedules])
        self.event_rules.changed = self.schedules.changed = self.timer.changed

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

    def _configure_provisioned(self, function_name: str, qualifier: str,
                               fv: FunctionVersion | None, requested: int) -> None:
        spec = environment_spec(fv) if fv is not None else None
        self.provisioned.configure(function_name, qualifier, spec, requested)

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

    async def stop(self) -> None:
        await self.code.stop()
        await self.timer.stop()
        await self.schedules.stop()
        await self.event_source_mappings.stop()
        await self.async_workers.stop()
        await self.provisioned.stop()
        await self.environments.stop()
        self.engine.dispose()
