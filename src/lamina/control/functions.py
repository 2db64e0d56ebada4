"""Functions: create, read, update and delete, with Lambda's rules and messages."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from lamina.control.arns import FunctionRef, Region, parse_function_ref
from lamina.control.code_storage import CodeStorage
from lamina.control.container_images import ContainerImageCode, ImageCode, ImageSettled
from lamina.control.environment_secrets import EnvironmentSecrets, KeyProblem
from lamina.control.layers import Layers
from lamina.control.models import (
    CREATING,
    CREATING_REASON,
    LATEST,
    Alias,
    FunctionState,
    FunctionVersion,
    LastUpdateStatus,
    ResolvedTarget,
    aws_timestamp,
)
from lamina.control.packages import PackageInfo, inspect_package
from lamina.control.paging import PAGE_SIZE, Page, page_of
from lamina.errors import (
    CodeStorageExceededException,
    InvalidParameterValueException,
    PreconditionFailedException,
    ResourceConflictException,
    ResourceNotFoundException,
    SnapStartNotReadyException,
    ValidationException,
)
from lamina.limits import Limits
from lamina.runtimes.contract import RESERVED_VARIABLES
from lamina.store.aliases import AliasStore
from lamina.store.blobs import BlobStore
from lamina.store.changes import unannounced
from lamina.store.functions import FunctionStore, version_sequence

if TYPE_CHECKING:
    from lamina.control.code_signing import CodeSigningConfigs

log = logging.getLogger("lamina.control")

MAX_TAGS = 50
# AWS's answer to code signing anything of a PackageType Image function.
IMAGES_NOT_SIGNED = "Code signing is not supported for functions created with container images."
# A function's own name; with an ARN around it, the model allows 140 characters.
FUNCTION_NAME_MAX = 64


# Called with the outcome of making a runtime ready: None, or the StateReason to show.
RuntimeSettled = Callable[[str | None], None]
# Called with the outcome of making a SnapStart version's snapshot: None (Active), or
# (State, StateReasonCode, StateReason): Failed, or Active without SnapStart.
SnapshotSettled = Callable[[tuple[str, str, str] | None], None]
# Fields of FunctionVersion that UpdateFunctionConfiguration may change.
CONFIGURABLE = frozenset(
    {
        "role", "runtime", "handler", "description", "timeout", "memory_size",
        "ephemeral_storage_mb", "environment", "environment_given", "layers", "tracing_mode",
        "dead_letter_target_arn", "vpc_subnet_ids", "vpc_security_group_ids", "kms_key_arn", "log_format", "log_group",
        "application_log_level", "system_log_level", "snap_start_apply_on", "image_config",
        "file_system_configs",
    }
)


def too_many_tags() -> InvalidParameterValueException:
    # AWS's wording names no number.
    return InvalidParameterValueException("Number of tags exceeds resource tag limit.")


def new_revision_id() -> str:
    return str(uuid.uuid4())


def revision_mismatch() -> PreconditionFailedException:
    return PreconditionFailedException(
        "The Revision Id provided does not match the latest Revision Id. Call the "
        "GetFunction/GetAlias API to retrieve the latest Revision Id"
    )


def is_version_number(qualifier: str) -> bool:
    return qualifier.isdigit()


def version_order(version: str) -> tuple[int, int]:
    """$LATEST first, then published versions by number (not by text: 2 before 10)."""
    return (0, 0) if version == LATEST else (1, int(version))


def out_of_range(field: str, value: int, low: int, high: int) -> list[str]:
    """AWS's wording for a number outside Lambda's quota, as a validation problem.

    The service model allows more than the quotas (e.g. MemorySize up to 32768), so
    these are checked here, against limits.py, and reported the way the model's are.
    """
    if low <= value <= high:
        return []
    bound = (
        f"greater than or equal to {low}" if value < low else f"less than or equal to {high}"
    )
    return [f"Value '{value}' at '{field}' failed to satisfy constraint: Member must have value {bound}"]


# LoggingConfig's closed sets (botocore's enums).
LOG_FORMATS = ("JSON", "Text")
APPLICATION_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
SYSTEM_LOG_LEVELS = ("DEBUG", "INFO", "WARN")


def not_in(field: str, value: str | None, allowed: tuple[str, ...]) -> list[str]:
    """AWS's wording for a value outside an enum, as a validation problem."""
    if value is None or value in allowed:
        return []
    return [f"Value '{value}' at '{field}' failed to satisfy constraint: Member must satisfy "
            f"enum value set: [{', '.join(allowed)}]"]


def with_logging_defaults(fv: FunctionVersion) -> FunctionVersion:
    """LoggingConfig as Lambda keeps it: JSON brings both levels (INFO unless given);
    Text has none (switching back to Text drops them)."""
    if fv.log_format == "JSON":
        return dataclasses.replace(fv, application_log_level=fv.application_log_level or "INFO",
                                   system_log_level=fv.system_log_level or "INFO")
    if fv.application_log_level is None and fv.system_log_level is None:
        return fv
    return dataclasses.replace(fv, application_log_level=None, system_log_level=None)


def not_ready(state: str) -> ResourceConflictException:
    return ResourceConflictException(
        "The operation cannot be performed at this time. The function is currently in the "
        f"following state: {state}"
    )


def update_in_progress(function_arn: str) -> ResourceConflictException:
    return ResourceConflictException(
        "The operation cannot be performed at this time. An update is in progress for "
        f"resource: {function_arn}"
    )


def _waiting(fv: FunctionVersion) -> FunctionVersion:
    """fv while its runtime is made ready: a function that was Active stays Active with
    its update in progress (as on Lambda); a new or Failed one is Pending."""
    if fv.state == FunctionState.ACTIVE:
        return dataclasses.replace(
            fv, last_update_status=LastUpdateStatus.IN_PROGRESS,
            last_update_status_reason=CREATING_REASON, last_update_status_reason_code=CREATING)
    return dataclasses.replace(
        fv, state=FunctionState.PENDING, state_reason=CREATING_REASON, state_reason_code=CREATING,
        last_update_status=LastUpdateStatus.IN_PROGRESS if fv.last_update_status else None,
        last_update_status_reason=CREATING_REASON if fv.last_update_status else None,
        last_update_status_reason_code=CREATING if fv.last_update_status else None)


def _ready(fv: FunctionVersion) -> FunctionVersion:
    return dataclasses.replace(
        fv, state=FunctionState.ACTIVE, state_reason=None, state_reason_code=None,
        last_update_status=LastUpdateStatus.SUCCESSFUL, last_update_status_reason=None,
        last_update_status_reason_code=None)


def _failed(fv: FunctionVersion, reason: str, code: str = "InternalError") -> FunctionVersion:
    # Lambda would keep running the previous configuration after a failed update;
    # Lamina keeps only the current one, which cannot run without its runtime.
    return dataclasses.replace(
        fv, state=FunctionState.FAILED, state_reason=reason, state_reason_code=code,
        last_update_status=LastUpdateStatus.FAILED, last_update_status_reason=reason,
        last_update_status_reason_code=code)


@dataclass(frozen=True)
class AccountUsage:
    """GetAccountSettings' AccountUsage: what this account has stored."""

    function_count: int
    total_code_size: int




class FunctionRegistry:
    def __init__(
        self,
        store: FunctionStore,
        blobs: BlobStore,
        region: Region,
        limits: Limits,
        runtime_check: Callable[[str], None] | None = None,
        *,
        aliases: AliasStore,
        layers: Layers,
        code: CodeStorage,
    ) -> None:
        self.store = store
        # Removes code no version refers to any more, after deletes and code updates.
        self.code = code
        self.aliases = aliases
        self.layers = layers
        self.blobs = blobs
        self.region = region
        self.limits = limits
        # Raises for runtimes this host cannot run (see runtimes.catalog).
        self._runtime_check = runtime_check
        # Whether a runtime can start environments here now (its image is installed),
        # and how to make it so, in the background, calling back on the event loop.
        # Left unset, every runtime is ready.
        self.runtime_ready: Callable[[str], bool] = lambda identifier: True
        self.install_runtime: Callable[[str, RuntimeSettled], None] | None = None
        # The same for container images (PackageType Image), by ResolvedImageUri;
        # image_code resolves and checks ImageUris (None: Image functions refused).
        self.image_code: ContainerImageCode | None = None
        self.image_ready: Callable[[str], bool] = lambda resolved_uri: True
        self.install_image: Callable[[str, ImageSettled], None] | None = None
        # A version whose runtime is ready still answers Pending (InProgress) first and
        # settles this much later, on the event loop, as Lambda's do (config.py).
        self.settle_delay_s = 0.0
        # Called with (function name, version) after that version changed or was
        # deleted; version None: the whole function was deleted. Published versions
        # never change, so an update of $LATEST concerns $LATEST alone.
        self.change_listeners: list[Callable[[str, str | None], None]] = []
        # Code signing (control.code_signing): new packages and layers are checked
        # against the function's code signing config before anything is stored.
        self.code_signing: CodeSigningConfigs | None = None
        # Makes a published SnapStart version's snapshot, then calls back (wired by
        # the platform; None: SnapStart versions are published Active, without one).
        self.make_snapshot: Callable[[FunctionVersion, SnapshotSettled], None] | None = None
        # Versions read on every invoke; a store round trip through SQLAlchemy costs
        # about half a millisecond, a dict lookup nothing. Every write in this
        # process invalidates the function's entries. (Several nodes sharing one
        # PostgreSQL will need the store to broadcast changes instead.)
        self._versions: dict[tuple[str, str], FunctionVersion] = {}
        # Tells other front ends sharing the database (store/changes.py) what changed
        # here: "NAME" (the function was deleted) or "NAME:VERSION".
        self.announce: Callable[[str], None] = unannounced
        # Seals environment variables before they are stored (None: kept in clear,
        # for registries built without a key service, e.g. in unit tests).
        self.environment_secrets: EnvironmentSecrets | None = None
        # Checks FileSystemConfigs against the access points that exist.
        self.check_file_systems: Callable[[list[dict[str, str]]], None] | None = None

    def _changed(self, name: str, version: str | None = None) -> None:
        self._forget(name, version)
        self.announce(name if version is None else f"{name}:{version}")

    def _forget(self, name: str, version: str | None) -> None:
        for key in [k for k in self._versions if k[0] == name]:
            del self._versions[key]
        for listener in self.change_listeners:
            listener(name, version)

    def changed_elsewhere(self, key: str) -> None:
        """Another front end announced a change (see `announce`); "*": anything may
        have changed."""
        if key == "*":
            names = {name for name, _ in self._versions}
            self._versions.clear()
            for name in names:
                self._forget(name, LATEST)
            return
        name, _, version = key.partition(":")
        self._forget(name, version or None)

    # -- reading ----------------------------------------------------------------

    def resolve(self, function_name: str, qualifier: str | None = None) -> FunctionRef:
        return parse_function_ref(function_name, self.region, qualifier)

    def not_found(self, name: str, qualifier: str | None = None) -> ResourceNotFoundException:
        return ResourceNotFoundException(
            f"Function not found: {self.region.function_arn(name, qualifier)}"
        )

    def get_version(self, function_name: str, qualifier: str | None = None) -> FunctionVersion:
        """The version a qualifier ($LATEST, a number or an alias) names; an alias's
        primary version (its weighted routing applies to invocations only)."""
        return self.target(function_name, qualifier).function_version

    def target(self, function_name: str, qualifier: str | None = None) -> ResolvedTarget:
        ref = self.resolve(function_name, qualifier)
        version = ref.qualifier or LATEST
        alias = None
        if version != LATEST and not is_version_number(version):
            alias = self.get_alias(ref.name, version)
            version = alias.function_version
        fv = self.load_version(ref.name, version)
        if fv is None:
            raise self.not_found(ref.name, ref.qualifier)
        return ResolvedTarget(fv, alias.name if alias else None)

    def load_version(self, name: str, version: str) -> FunctionVersion | None:
        """$LATEST or a version number, through the cache. Aliases are not cached:
        they change without the function changing."""
        key = (name, version)
        cached = self._versions.get(key)
        if cached is not None:
            return cached
        data = self.store.get_version(name, version)
        if data is None:
            return None
        fv = self._versions[key] = FunctionVersion.from_json(data)
        return fv

    def get_alias(self, function_name: str, name: str) -> Alias:
        data = self.aliases.get(function_name, name)
        if data is None:
            raise self.not_found(function_name, name)
        return Alias.from_json(data)

    def list_versions_by_function(self, function_name: str, marker: str | None,
                                  max_items: int | None) -> Page[FunctionVersion]:
        ref = self.resolve(function_name)
        versions = sorted(
            (FunctionVersion.from_json(row) for row in self.store.versions_of(ref.name)),
            key=lambda fv: version_order(fv.version),
        )
        if not versions:
            raise self.not_found(ref.name)
        if marker and (marker == LATEST or is_version_number(marker)):
            versions = [fv for fv in versions if version_order(fv.version) > version_order(marker)]
        return page_of(versions, max_items, lambda fv: fv.version, ceiling=PAGE_SIZE)

    def list_functions(self, marker: str | None, max_items: int | None,
                       all_versions: bool = False) -> Page[FunctionVersion]:
        # Lambda returns at most 50 functions per page, whatever MaxItems asks for.
        limit = min(max_items or PAGE_SIZE, PAGE_SIZE)
        after = None
        if marker:
            name, _, version = marker.partition(":")
            after = (name, version)
        rows = self.store.list_versions(None if all_versions else LATEST, after, limit + 1)
        found = [FunctionVersion.from_json(row) for row in rows[:limit]]
        next_marker = None
        if len(rows) > limit:
            last = found[-1]
            next_marker = f"{last.function_name}:{last.version}"
        return Page(found, next_marker)

    def function_names(self) -> list[str]:
        """Every function's name, sorted: one query, no configuration read (the
        console filters and pages names, then asks for 50 configurations)."""
        return self.store.names()

    def sole_function_name(self) -> str | None:
        """The function a single-function tool means: one named "function", or the only one."""
        if self.store.get_version("function", LATEST) is not None:
            return "function"
        listing = self.list_functions(None, 2)
        return listing.items[0].function_name if len(listing.items) == 1 else None

    def function_arn(self, name: str) -> str:
        return self.region.function_arn(name)

    def tags(self, name: str) -> dict[str, str]:
        return self.store.get_tags(self.function_arn(name))

    def account_usage(self) -> AccountUsage:
        """Functions, and the code of every function version and layer version (as AWS counts)."""
        count, code_size = self.store.count_and_code_size()
        return AccountUsage(function_count=count,
                            total_code_size=code_size + self.layers.store.total_code_size())

    # -- writing ----------------------------------------------------------------

    async def _inspect_code(self, zip_file: bytes, operation: str) -> PackageInfo:
        # Reading a package to its end takes up to a second for 250 MB unzipped:
        # on a worker thread, so other requests and invocations go on meanwhile.
        info = await asyncio.to_thread(inspect_package, zip_file, self.limits, operation)
        used = self.account_usage().total_code_size
        if used + info.zipped_size > self.limits.total_code_size_bytes:
            raise CodeStorageExceededException(
                f"Code storage limit exceeded: {self.limits.total_code_size_bytes} bytes"
            )
        return info

    # -- environment variables, sealed ---------------------------------------------

    def _sealed(self, fv: FunctionVersion) -> FunctionVersion:
        """fv with its clear variables sealed under its key (nothing in clear is kept)."""
        if self.environment_secrets is None or not fv.environment:
            return fv
        sealed = self.environment_secrets.seal(fv.environment, fv.kms_key_arn,
                                               self.function_arn(fv.function_name))
        return dataclasses.replace(fv, environment={}, sealed_environment=sealed)

    def configuration(self, fv: FunctionVersion, arn_qualifier: str | None = None) -> dict[str, Any]:
        """The FunctionConfiguration shape, variables opened; when the key cannot open
        them, Lambda's Environment.Error, and the key's problem as the state reason."""
        if fv.sealed_environment is None or self.environment_secrets is None:
            return fv.to_api(self.region, arn_qualifier)
        opened = self.environment_secrets.try_open(fv.sealed_environment,
                                                   self.function_arn(fv.function_name))
        if isinstance(opened, KeyProblem):
            error = opened.error
            config = fv.to_api(self.region, arn_qualifier, environment={
                "Error": {"ErrorCode": error.error_type, "Message": error.message}})
            # Lambda's function turns Inactive until its key can be used again.
            config.update(State="Inactive", StateReason=error.message,
                          StateReasonCode=opened.reason_code)
            return config
        return fv.to_api(self.region, arn_qualifier, environment={"Variables": opened})

    def seal_stored_environments(self) -> int:
        """Seal the variables of versions stored in clear before they were sealed
        (the second half of migration 0011); how many were."""
        if self.environment_secrets is None:
            return 0
        count = 0
        for data in self.store.all_versions():
            if not data.get("environment"):
                continue
            fv = FunctionVersion.from_json(data)
            sealed = self._sealed(fv)
            if self.store.replace_version(fv.function_name, fv.version, fv.revision_id,
                                          fv.revision_id, sealed.to_json()):
                count += 1
        if count:
            self.store.forget_overwritten()
        return count

    def _attach_layers(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Settings with Layers (ARNs) turned into the layer versions they name."""
        if "layers" not in settings:
            return settings
        arns = settings["layers"]
        if len(arns) > self.limits.max_layers:
            raise InvalidParameterValueException(
                f"Cannot reference more than {self.limits.max_layers} layers."
            )
        return {**settings, "layers": self.layers.attach(arns)}

    def _check_unzipped_total(self, fv: FunctionVersion) -> None:
        limit = self.limits.max_unzipped_code_bytes
        total = fv.code_unzipped_size + sum(layer.unzipped_size for layer in fv.layers)
        if total > limit:
            raise InvalidParameterValueException(
                f"Function code combined with layers exceeds the maximum allowed size of {limit} "
                f"bytes. The actual size is {total} bytes."
            )

    def _validate(self, fv: FunctionVersion) -> None:
        limits = self.limits
        problems = [
            *out_of_range("memorySize", fv.memory_size, limits.min_memory_size_mb,
                          limits.max_memory_size_mb),
            *out_of_range("timeout", fv.timeout, limits.min_timeout_s, limits.max_timeout_s),
            *out_of_range("ephemeralStorage.size", fv.ephemeral_storage_mb,
                          limits.min_ephemeral_storage_mb, limits.max_ephemeral_storage_mb),
            *not_in("loggingConfig.logFormat", fv.log_format, LOG_FORMATS),
            *not_in("loggingConfig.applicationLogLevel", fv.application_log_level,
                    APPLICATION_LOG_LEVELS),
            *not_in("loggingConfig.systemLogLevel", fv.system_log_level, SYSTEM_LOG_LEVELS),
        ]
        if problems:
            raise ValidationException.of(problems)
        reserved = sorted(RESERVED_VARIABLES.intersection(fv.environment))
        if reserved:
            raise InvalidParameterValueException(
                "Lambda was unable to configure your environment variables because the "
                "environment variables you have provided contains reserved keys that are "
                f"currently not supported for modification. Reserved keys used in this request: "
                f"{','.join(reserved)}"
            )
        measured = json.dumps(fv.environment, separators=(",", ":"))
        if len(measured.encode()) > limits.max_environment_bytes:
            raise InvalidParameterValueException(
                "Lambda was unable to configure your environment variables because the "
                "environment variables you have provided exceeded the 4KB limit. "
                f"String measured: {measured}"
            )
        if len(fv.layers) > limits.max_layers:
            raise InvalidParameterValueException(
                f"Cannot reference more than {limits.max_layers} layers."
            )
        self._check_dead_letter_target(fv.dead_letter_target_arn)
        if len(fv.file_system_configs) > limits.max_function_file_systems:
            raise ValidationException.of([
                f"Value '{fv.file_system_configs}' at 'fileSystemConfigs' failed to satisfy "
                f"constraint: Member must have length less than or equal to "
                f"{limits.max_function_file_systems}"])
        if fv.file_system_configs:
            if self.check_file_systems is None:
                raise InvalidParameterValueException(
                    "FileSystemConfigs are not supported by this Lamina server.")
            self.check_file_systems(fv.file_system_configs)
        if fv.package_type == "Zip" and fv.image_config:
            raise InvalidParameterValueException(
                "ImageConfig is not supported for functions with PackageType Zip.")
        if fv.package_type == "Image" and fv.layers:
            raise InvalidParameterValueException(
                "Layers are not supported for functions with PackageType Image; add their "
                "content to the image.")
        if fv.package_type == "Zip":
            if not fv.runtime:
                raise InvalidParameterValueException("Runtime is required for .zip file archive deployment packages.")
            if not fv.handler:
                raise InvalidParameterValueException("Handler is required for .zip file archive deployment packages.")
            if self._runtime_check is not None:
                self._runtime_check(fv.runtime)

    def _check_dead_letter_target(self, arn: str | None) -> None:
        # "" removes the dead-letter queue. AWS also takes SNS topics; Lamina has none.
        if arn and self.region.queue_name(arn) is None:
            raise InvalidParameterValueException(
                f"DeadLetterConfig.TargetArn: {arn} is not a dead-letter target this Lamina "
                "server can deliver to; it must be one of its SQS queues "
                f"({self.region.queue_arn('NAME')}). SNS topics are not supported."
            )

    async def create_function(
        self, name: str, zip_file: bytes | None, settings: dict[str, Any], tags: dict[str, str],
        publish: bool = False, image_uri: str | None = None,
        code_signing_config_arn: str | None = None,
    ) -> FunctionVersion:
        ref = self.resolve(name)
        if ref.qualifier:
            raise InvalidParameterValueException(
                "Unsupported parameter: FunctionName must not carry a qualifier on CreateFunction."
            )
        if len(tags) > MAX_TAGS:
            raise too_many_tags()
        if image_uri is not None and code_signing_config_arn is not None:
            raise InvalidParameterValueException(IMAGES_NOT_SIGNED)
        if len(ref.name) > FUNCTION_NAME_MAX:
            # AWS checks a function name's own length itself (the model allows an ARN's).
            raise InvalidParameterValueException(
                f"1 validation error detected: Value '{ref.name}' at 'functionName' failed to "
                f"satisfy constraint: Member must have length less than or equal to {FUNCTION_NAME_MAX}"
            )
        # Validate the configuration first: a refused function stores no code.
        # Runtime and Handler may be absent (Image packages); _validate decides.
        defaults = {
            "runtime": None,
            "handler": None,
            "timeout": self.limits.default_timeout_s,
            "memory_size": self.limits.default_memory_size_mb,
            "ephemeral_storage_mb": self.limits.default_ephemeral_storage_mb,
        }
        draft = FunctionVersion(
            function_name=ref.name, version=LATEST, code_sha256_hex="0" * 64, code_size=0,
            revision_id=new_revision_id(), last_modified=aws_timestamp(),
            **{**defaults, **self._attach_layers(settings)},
        )
        self._validate(draft)
        if self.environment_secrets is not None and draft.kms_key_arn:
            self.environment_secrets.check_key(draft.kms_key_arn)
        draft = self._sealed(draft)
        if image_uri is not None:
            draft = self._with_image(draft, await self._resolve_image(image_uri, draft.architectures))
        draft = with_logging_defaults(draft)
        # Every new function is Pending first (no LastUpdateStatus then), as on Lambda.
        draft = _waiting(dataclasses.replace(draft, state=FunctionState.PENDING,
                                             last_update_status=None))
        if self.store.get_version(ref.name, LATEST) is not None:
            raise self._exists(ref.name)
        if zip_file is None:
            return await self._create_image_function(ref.name, draft, tags, publish)
        info = await self._inspect_code(zip_file, "CreateFunction")
        fv = dataclasses.replace(draft, code_size=info.zipped_size,
                                 code_unzipped_size=info.unzipped_size)
        self._check_unzipped_total(fv)
        signing = None
        if self.code_signing is not None:
            signing = self.code_signing.config_for(None, code_signing_config_arn)
            if signing is not None:
                await asyncio.to_thread(self.code_signing.check, signing, ref.name, zip_file, fv.layers)
        async with self.blobs.stored(zip_file) as digest:
            fv.code_sha256_hex = digest
            created = self.store.create(ref.name, LATEST, fv.revision_id, fv.to_json(),
                                        self.function_arn(ref.name), tags)
        if not created:
            self.code.collect()  # the blob may be nobody's
            raise self._exists(ref.name)
        if signing is not None and self.code_signing is not None:
            self.code_signing.use(ref.name, signing)
        self._install(fv)
        return self._publish(ref.name) if publish else fv

    async def _resolve_image(self, image_uri: str, architectures: list[str]) -> ImageCode:
        if self.image_code is None:
            raise InvalidParameterValueException(
                "PackageType Image is not supported by this Lamina server; use Code.ZipFile")
        return await self.image_code.resolve(image_uri, architectures)

    @staticmethod
    def _with_image(fv: FunctionVersion, code: ImageCode) -> FunctionVersion:
        # CodeSize is 0 for an image, as on Lambda: the code-storage quota counts
        # .zip packages only.
        return dataclasses.replace(fv, image_uri=code.image_uri, resolved_image_uri=code.resolved_image_uri,
                                   code_sha256_hex=code.digest_hex, code_size=0, code_unzipped_size=0)

    async def _create_image_function(self, name: str, fv: FunctionVersion, tags: dict[str, str],
                                     publish: bool) -> FunctionVersion:
        if not self.store.create(name, LATEST, fv.revision_id, fv.to_json(), self.function_arn(name), tags):
            raise self._exists(name)
        if fv.awaits_runtime:
            self._install(fv)
        return self._publish(name) if publish else fv

    async def update_image(
        self, function_name: str, image_uri: str, revision_id: str | None = None,
        architectures: list[str] | None = None, publish: bool = False,
    ) -> FunctionVersion:
        """UpdateFunctionCode with an ImageUri: the tag is resolved again, to the digest
        it names now."""
        name = self.resolve(function_name).name
        current = self.get_version(name)
        if current.package_type != "Image":
            raise InvalidParameterValueException(
                "Please don't provide ImageUri when updating a function with packageType Zip.")
        if revision_id is not None and revision_id != current.revision_id:
            raise revision_mismatch()
        self._check_not_updating(current)
        code = await self._resolve_image(image_uri, architectures or current.architectures)

        def change(current: FunctionVersion) -> FunctionVersion:
            return self._with_image(
                dataclasses.replace(current, architectures=architectures or current.architectures), code)

        updated = self._update_latest(function_name, revision_id, change)
        return self._publish(name) if publish else updated

    def _exists(self, name: str) -> ResourceConflictException:
        return ResourceConflictException(f"Function already exist: {name}")

    def _update_latest(
        self, function_name: str, revision_id: str | None,
        change: Callable[[FunctionVersion], FunctionVersion],
    ) -> FunctionVersion:
        """Read-modify-write of $LATEST with compare-and-swap on RevisionId.

        With a caller's RevisionId, a mismatch is the caller's 412. Without one,
        a concurrent writer just means: read again and reapply, so no update is lost.
        """
        ref = self.resolve(function_name)
        if ref.qualifier not in (None, LATEST):
            raise InvalidParameterValueException(
                "Only the $LATEST version of a function can be updated."
            )
        while True:
            data = self.store.get_version(ref.name, LATEST)
            if data is None:
                raise self.not_found(ref.name)
            current = FunctionVersion.from_json(data)
            if revision_id is not None and revision_id != current.revision_id:
                raise revision_mismatch()
            self._check_not_updating(current)
            updated = self._with_runtime_state(dataclasses.replace(
                change(current), revision_id=new_revision_id(), last_modified=aws_timestamp()
            ))
            if self.store.replace_version(ref.name, LATEST, current.revision_id,
                                          updated.revision_id, updated.to_json()):
                self._changed(ref.name, LATEST)
                if updated.awaits_runtime:
                    self._install(updated)
                return updated

    def update_configuration(
        self, function_name: str, settings: dict[str, Any], revision_id: str | None = None
    ) -> FunctionVersion:
        unknown = set(settings) - CONFIGURABLE
        if unknown:
            raise InvalidParameterValueException(f"Unsupported configuration: {sorted(unknown)}")
        settings = self._attach_layers(settings)
        if "layers" in settings and self.code_signing is not None:
            name = self.resolve(function_name).name
            signing = self.code_signing.config_for(name, None)
            if signing is not None:
                self.code_signing.check(signing, name, None, settings["layers"])
        secrets = self.environment_secrets
        if secrets is not None and settings.get("kms_key_arn"):
            secrets.check_key(settings["kms_key_arn"])

        def change(current: FunctionVersion) -> FunctionVersion:
            updated = dataclasses.replace(current, **settings)
            if "environment" in settings:
                updated.sealed_environment = None
            elif secrets is not None and current.sealed_environment is not None and \
                    (updated.kms_key_arn or None) != (current.kms_key_arn or None):
                # A new key: sealed again under it (the old one must still open them).
                updated.environment = secrets.open(current.sealed_environment,
                                                   self.function_arn(current.function_name))
                updated.sealed_environment = None
            self._validate(updated)
            self._check_unzipped_total(updated)
            return with_logging_defaults(self._sealed(updated))

        return self._update_latest(function_name, revision_id, change)

    async def update_code(
        self, function_name: str, zip_file: bytes, revision_id: str | None = None,
        architectures: list[str] | None = None, publish: bool = False,
    ) -> FunctionVersion:
        name = self.resolve(function_name).name
        # 404, 409 and 412 before storing anything: a refused update leaves no blob behind.
        current = self.get_version(name)
        if current.package_type == "Image":
            raise InvalidParameterValueException(
                "Please provide ImageUri when updating a function with packageType Image.")
        if revision_id is not None and revision_id != current.revision_id:
            raise revision_mismatch()
        self._check_not_updating(current)
        info = await self._inspect_code(zip_file, "UpdateFunctionCode")
        self._check_unzipped_total(dataclasses.replace(current, code_unzipped_size=info.unzipped_size))
        signing = self.code_signing.config_for(name, None) if self.code_signing else None
        if signing is not None and self.code_signing is not None:
            await asyncio.to_thread(self.code_signing.check, signing, name, zip_file, current.layers)
        try:
            async with self.blobs.stored(zip_file) as digest:

                def change(current: FunctionVersion) -> FunctionVersion:
                    updated = dataclasses.replace(
                        current, code_sha256_hex=digest, code_size=info.zipped_size,
                        code_unzipped_size=info.unzipped_size,
                        architectures=architectures or current.architectures,
                    )
                    self._check_unzipped_total(updated)
                    return updated

                updated = self._update_latest(function_name, revision_id, change)
        finally:
            # The code $LATEST had (unless a published version has it too), or the
            # new blob if the update was refused.
            self.code.collect()
        return self._publish(name) if publish else updated

    def publish_version(
        self, function_name: str, code_sha256: str | None = None,
        description: str | None = None, revision_id: str | None = None,
    ) -> FunctionVersion:
        """Snapshot $LATEST as the next version number; an unchanged $LATEST gives
        back the version already published from it, as AWS does."""
        name = self.resolve(function_name).name
        latest = self.get_version(name)
        if revision_id is not None and revision_id != latest.revision_id:
            raise revision_mismatch()
        if code_sha256 and code_sha256 != latest.code_sha256:
            raise InvalidParameterValueException(
                f"CodeSHA256 ({code_sha256}) is different from current CodeSHA256 in $LATEST "
                f"({latest.code_sha256}). Please try again with the CodeSHA256 in $LATEST."
            )
        self._check_not_updating(latest)
        return self._publish(name, description)

    def _publish(self, name: str, description: str | None = None) -> FunctionVersion:
        """PublishVersion's work; CreateFunction and UpdateFunctionCode with Publish
        come here directly: their version may be published while it is made ready."""
        latest = self.get_version(name)
        last = self.store.last_published(name)
        if last:
            data = self.store.get_version(name, str(last))
            if data is not None and data.get("published_from_revision") == latest.revision_id:
                return FunctionVersion.from_json(data)
        published = dataclasses.replace(
            latest,
            version=str(self.store.next_value(version_sequence(name))),
            revision_id=new_revision_id(),
            last_modified=aws_timestamp(),
            description=latest.description if description is None else description,
            published_from_revision=latest.revision_id,
        )
        if latest.awaits_runtime:
            # A version published while $LATEST is made ready is a new function
            # version being created: Pending, without LastUpdateStatus, as on AWS.
            published = dataclasses.replace(
                published, state=FunctionState.PENDING, state_reason=CREATING_REASON,
                state_reason_code=CREATING, last_update_status=None,
                last_update_status_reason=None, last_update_status_reason_code=None)
        snapshot = published.snap_start_apply_on == "PublishedVersions" and \
            self.make_snapshot is not None and not published.awaits_runtime
        if snapshot:
            # Pending while INIT runs once and its environment becomes the template.
            published = dataclasses.replace(
                published, snap_start_optimization="On", state=FunctionState.PENDING,
                state_reason=CREATING_REASON, state_reason_code=CREATING,
                last_update_status=None, last_update_status_reason=None,
                last_update_status_reason_code=None)
        if not self.store.insert_version(name, published.version, published.revision_id,
                                         published.to_json()):
            raise self.not_found(name)
        if snapshot and self.make_snapshot is not None:
            self.make_snapshot(published, functools.partial(
                self._snapshot_settled, name, published.version))
        return published

    def _snapshot_settled(self, name: str, version: str,
                          outcome: tuple[str, str, str] | None) -> None:
        data = self.store.get_version(name, version)
        if data is None:
            return  # deleted meanwhile
        fv = FunctionVersion.from_json(data)
        if outcome is None:
            settled = _ready(fv)
        else:
            state, code, reason = outcome
            if state == FunctionState.FAILED:
                settled = _failed(fv, reason, code)
            else:
                settled = dataclasses.replace(_ready(fv), snap_start_optimization="Off",
                                              state_reason=reason, state_reason_code=code)
        if self.store.replace_version(name, version, fv.revision_id, settled.revision_id,
                                      settled.to_json()):
            self._changed(name, version)

    # -- states: waiting for the runtime ---------------------------------------------

    def _awaits_runtime(self, fv: FunctionVersion) -> bool:
        if fv.package_type == "Image":
            return fv.resolved_image_uri is not None and not self.image_ready(fv.resolved_image_uri)
        return fv.package_type == "Zip" and fv.runtime is not None and not self.runtime_ready(fv.runtime)

    def _with_runtime_state(self, fv: FunctionVersion) -> FunctionVersion:
        """An updated $LATEST while it is made ready: Active with its update
        InProgress (Pending again after a failure); it settles asynchronously."""
        return _waiting(fv)

    def _check_not_updating(self, fv: FunctionVersion) -> None:
        """Lambda refuses to change or publish a function still being made ready."""
        if fv.state == FunctionState.PENDING:
            raise not_ready(fv.state)
        if fv.last_update_status == LastUpdateStatus.IN_PROGRESS:
            raise update_in_progress(self.function_arn(fv.function_name))

    def check_invocable(self, fv: FunctionVersion) -> None:
        """ResourceConflictException, as from Lambda, for a version that cannot run now."""
        if fv.state == FunctionState.PENDING and fv.snap_start_optimization == "On":
            raise SnapStartNotReadyException(
                "Lambda is initializing your function. You can invoke the function when the "
                "function state becomes Active.")
        if fv.state != FunctionState.ACTIVE:
            raise not_ready(fv.state)
        if fv.last_update_status == LastUpdateStatus.IN_PROGRESS:
            # Lambda would run the previous configuration meanwhile; Lamina keeps none.
            raise update_in_progress(self.function_arn(fv.function_name))

    def _install(self, fv: FunctionVersion) -> None:
        """Settle fv once its runtime (or image) is ready: later, never within the
        request that changed it, so its answer shows Pending / InProgress as Lambda's does."""
        if fv.package_type == "Image":
            uri = fv.resolved_image_uri
            if uri is None:
                return
            settled = functools.partial(self._image_settled, fv.function_name, uri)
            if self._awaits_runtime(fv) and self.install_image is not None:
                self.install_image(uri, settled)
            else:
                self._settle_later(functools.partial(settled, None))
            return
        if not self._awaits_runtime(fv) or self.install_runtime is None:
            self._settle_later(functools.partial(
                self._runtime_settled, fv.function_name, fv.runtime, None))
            return
        assert fv.runtime is not None
        self.install_runtime(fv.runtime, functools.partial(
            self._runtime_settled, fv.function_name, fv.runtime))

    def _image_settled(self, name: str, resolved_uri: str, failure: tuple[str, str] | None) -> None:
        """The image `resolved_uri` is here (failure None) or could not be pulled
        (StateReasonCode, StateReason): the versions of `name` waiting on it settle."""
        self._settle(name, lambda fv: fv.package_type == "Image" and fv.resolved_image_uri == resolved_uri,
                     resolved_uri, None if failure is None else failure[1],
                     "InternalError" if failure is None else failure[0])

    def _settle_later(self, settle: Callable[[], None]) -> None:
        """Run `settle` after settle_delay_s, on the event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside a server (tools, tests of the registry)
            settle()
            return
        loop.call_later(self.settle_delay_s, settle)

    def _runtime_settled(self, name: str, runtime: str | None, failure: str | None) -> None:
        """The runtime `runtime` is ready (failure None) or could not be made ready:
        every version of `name` waiting on it becomes Active, or Failed."""
        self._settle(name, lambda fv: fv.package_type == "Zip" and fv.runtime == runtime, runtime or "its runtime", failure)

    def _settle(self, name: str, waits_on: Callable[[FunctionVersion], bool], what: str,
                failure: str | None, code: str = "InternalError") -> None:
        versions = [FunctionVersion.from_json(data) for data in self.store.versions_of(name)]
        latest = next((fv for fv in versions if fv.version == LATEST), None)
        if latest is None or not waits_on(latest) or not latest.awaits_runtime:
            latest_revision = None
        else:
            # $LATEST gets a new RevisionId with its new state; a published version
            # keeps its own (as on Lambda), and stays the one published from $LATEST.
            latest_revision = (latest.revision_id, new_revision_id())
        for fv in versions:
            if not waits_on(fv) or not fv.awaits_runtime:
                continue
            settled = _ready(fv) if failure is None else _failed(fv, failure, code)
            if latest_revision is not None:
                if fv.version == LATEST:
                    settled.revision_id = latest_revision[1]
                elif fv.published_from_revision == latest_revision[0]:
                    settled.published_from_revision = latest_revision[1]
            if self.store.replace_version(name, fv.version, fv.revision_id, settled.revision_id,
                                          settled.to_json()):
                self._changed(name, fv.version)
            else:
                log.warning("%s:%s changed while %s was made ready", name, fv.version, what)

    def resume_waiting(self) -> int:
        """Make ready again the runtimes of versions left waiting by a stopped server;
        how many versions wait."""
        waiting = 0
        after: tuple[str, str] | None = None
        while rows := self.store.list_versions(None, after, PAGE_SIZE):
            for data in rows:
                fv = FunctionVersion.from_json(data)
                if fv.awaits_runtime:
                    waiting += 1
                    self._install(fv)
            after = (rows[-1]["function_name"], rows[-1]["version"])
        return waiting

    def delete_function(self, function_name: str, qualifier: str | None = None) -> None:
        ref = self.resolve(function_name, qualifier)
        if ref.qualifier == LATEST:
            raise InvalidParameterValueException(
                "$LATEST version cannot be deleted without deleting the function."
            )
        if ref.qualifier is not None:
            self._delete_version(ref.name, ref.qualifier)
        elif not self.store.delete_function(ref.name, self.function_arn(ref.name)):
            raise self.not_found(ref.name)
        # Environments first: idle ones are stopping, and code they hold goes once they are gone.
        self._changed(ref.name, ref.qualifier)
        self.code.collect()

    def _delete_version(self, name: str, version: str) -> None:
        if not is_version_number(version):
            raise InvalidParameterValueException("Deletion of aliases is not supported.")
        users = [a["name"] for a in self.aliases.list(name) if version in Alias.from_json(a).versions]
        if users:
            raise ResourceConflictException(
                "Unable to delete version because the following aliases reference it: "
                f"[{', '.join(users)}]"
            )
        if not self.store.delete_version(name, version):
            # A version that does not exist is deleted already (AWS: idempotent), as
            # long as the function exists.
            if self.store.get_version(name, LATEST) is None:
                raise self.not_found(name)

    # -- tags -------------------------------------------------------------------

    def _function_for_arn(self, resource_arn: str) -> str:
        ref = self.resolve(resource_arn)
        if ref.qualifier is not None:
            raise InvalidParameterValueException(
                "Tags on function aliases and versions are not supported. Please specify a function ARN."
            )
        if self.store.get_version(ref.name, LATEST) is None:
            raise self.not_found(ref.name, ref.qualifier)
        return ref.name

    def list_tags(self, resource_arn: str) -> dict[str, str]:
        return self.tags(self._function_for_arn(resource_arn))

    def tag_resource(self, resource_arn: str, values: dict[str, str]) -> None:
        name = self._function_for_arn(resource_arn)
        existing = self.tags(name)
        if not values:
            # AWS's own (unhelpful) wording for TagResource without tags.
            raise InvalidParameterValueException("An error occurred and the request cannot be processed.")
        if len(set(existing) | set(values)) > MAX_TAGS:
            raise too_many_tags()
        self.store.put_tags(self.function_arn(name), values)

    def untag_resource(self, resource_arn: str, keys: list[str]) -> None:
        self.store.remove_tags(self.function_arn(self._function_for_arn(resource_arn)), keys)
