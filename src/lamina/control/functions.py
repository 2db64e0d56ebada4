"""Functions: create, read, update and delete, with Lambda's rules and messages."""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from lamina.control.arns import FunctionRef, Region, parse_function_ref
from lamina.control.models import LATEST, FunctionVersion, aws_timestamp
from lamina.control.packages import inspect_package
from lamina.errors import (
    CodeStorageExceededException,
    InvalidParameterValueException,
    PreconditionFailedException,
    ResourceConflictException,
    ResourceNotFoundException,
    ValidationException,
)
from lamina.limits import Limits
from lamina.runtimes.contract import RESERVED_VARIABLES
from lamina.store.blobs import BlobStore
from lamina.store.functions import FunctionStore

MAX_TAGS = 50
MAX_LIST_ITEMS = 50
# Fields of FunctionVersion that UpdateFunctionConfiguration may change.
CONFIGURABLE = frozenset(
    {
        "role", "runtime", "handler", "description", "timeout", "memory_size",
        "ephemeral_storage_mb", "environment", "layers", "tracing_mode",
        "dead_letter_target_arn", "kms_key_arn", "log_format", "log_group",
        "application_log_level", "system_log_level", "snap_start_apply_on",
    }
)


def new_revision_id() -> str:
    return str(uuid.uuid4())


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


@dataclass(frozen=True)
class AccountUsage:
    """GetAccountSettings' AccountUsage: what this account has stored."""

    function_count: int
    total_code_size: int


@dataclass(frozen=True)
class FunctionListing:
    functions: list[FunctionVersion]
    next_marker: str | None


class FunctionRegistry:
    def __init__(
        self,
        store: FunctionStore,
        blobs: BlobStore,
        region: Region,
        limits: Limits,
        runtime_check: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.region = region
        self.limits = limits
        # Raises for runtimes this host cannot run (see runtimes.catalog).
        self._runtime_check = runtime_check
        # Called with a function's name after its code or configuration changed or it
        # was deleted, so running environments of the old revision can be retired.
        self.change_listeners: list[Callable[[str], None]] = []
        # Versions read on every invoke; a store round trip through SQLAlchemy costs
        # about half a millisecond, a dict lookup nothing. Every write in this
        # process invalidates the function's entries. (Several nodes sharing one
        # PostgreSQL will need the store to broadcast changes instead.)
        self._versions: dict[tuple[str, str], FunctionVersion] = {}

    def _changed(self, name: str) -> None:
        for key in [k for k in self._versions if k[0] == name]:
            del self._versions[key]
        for listener in self.change_listeners:
            listener(name)

    # -- reading ----------------------------------------------------------------

    def resolve(self, function_name: str, qualifier: str | None = None) -> FunctionRef:
        return parse_function_ref(function_name, self.region, qualifier)

    def not_found(self, name: str, qualifier: str | None = None) -> ResourceNotFoundException:
        return ResourceNotFoundException(
            f"Function not found: {self.region.function_arn(name, qualifier)}"
        )

    def get_version(self, function_name: str, qualifier: str | None = None) -> FunctionVersion:
        ref = self.resolve(function_name, qualifier)
        key = (ref.name, ref.qualifier or LATEST)
        cached = self._versions.get(key)
        if cached is not None:
            return cached
        data = self.store.get_version(*key)
        if data is None:
            raise self.not_found(ref.name, ref.qualifier)
        fv = self._versions[key] = FunctionVersion.from_json(data)
        return fv

    def list_functions(self, marker: str | None, max_items: int | None,
                       all_versions: bool = False) -> FunctionListing:
        # Lambda returns at most 50 functions per page, whatever MaxItems asks for.
        limit = min(max_items or MAX_LIST_ITEMS, MAX_LIST_ITEMS)
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
        return FunctionListing(found, next_marker)

    def sole_function_name(self) -> str | None:
        """The function a single-function tool means: one named "function", or the only one."""
        if self.store.get_version("function", LATEST) is not None:
            return "function"
        listing = self.list_functions(None, 2)
        return listing.functions[0].function_name if len(listing.functions) == 1 else None

    def function_arn(self, name: str) -> str:
        return self.region.function_arn(name)

    def tags(self, name: str) -> dict[str, str]:
        return self.store.get_tags(self.function_arn(name))

    def account_usage(self) -> AccountUsage:
        count, code_size = self.store.count_and_code_size()
        return AccountUsage(function_count=count, total_code_size=code_size)

    # -- writing ----------------------------------------------------------------

    def _store_code(self, zip_file: bytes, operation: str) -> tuple[str, int]:
        info = inspect_package(zip_file, self.limits, operation)
        used = self.account_usage().total_code_size
        if used + info.zipped_size > self.limits.total_code_size_bytes:
            raise CodeStorageExceededException(
                f"Code storage limit exceeded: {self.limits.total_code_size_bytes} bytes"
            )
        return self.blobs.put(zip_file), info.zipped_size

    def _validate(self, fv: FunctionVersion) -> None:
        limits = self.limits
        problems = [
            *out_of_range("memorySize", fv.memory_size, limits.min_memory_size_mb,
                          limits.max_memory_size_mb),
            *out_of_range("timeout", fv.timeout, limits.min_timeout_s, limits.max_timeout_s),
            *out_of_range("ephemeralStorage.size", fv.ephemeral_storage_mb,
                          limits.min_ephemeral_storage_mb, limits.max_ephemeral_storage_mb),
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
        if fv.package_type == "Zip":
            if not fv.runtime:
                raise InvalidParameterValueException("Runtime is required for .zip file archive deployment packages.")
            if not fv.handler:
                raise InvalidParameterValueException("Handler is required for .zip file archive deployment packages.")
            if self._runtime_check is not None:
                self._runtime_check(fv.runtime)

    def create_function(
        self, name: str, zip_file: bytes, settings: dict[str, Any], tags: dict[str, str],
    ) -> FunctionVersion:
        ref = self.resolve(name)
        if ref.qualifier:
            raise InvalidParameterValueException(
                "Unsupported parameter: FunctionName must not carry a qualifier on CreateFunction."
            )
        if len(tags) > MAX_TAGS:
            raise InvalidParameterValueException(f"Number of tags exceeds resource tag limit of {MAX_TAGS}.")
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
            **{**defaults, **settings},
        )
        self._validate(draft)
        if self.store.get_version(ref.name, LATEST) is not None:
            raise self._exists(ref.name)
        digest, size = self._store_code(zip_file, "CreateFunction")
        fv = dataclasses.replace(draft, code_sha256_hex=digest, code_size=size)
        if not self.store.create(ref.name, LATEST, fv.revision_id, fv.to_json(),
                                 self.function_arn(ref.name), tags):
            raise self._exists(ref.name)
        return fv

    def _exists(self, name: str) -> ResourceConflictException:
        return ResourceConflictException(f"Function already exist: {name}")

    @staticmethod
    def _check_revision(current: FunctionVersion, revision_id: str | None) -> None:
        if revision_id is not None and revision_id != current.revision_id:
            raise PreconditionFailedException(
                "The Revision Id provided does not match the latest Revision Id. Call the "
                "GetFunction/GetAlias API to retrieve the latest Revision Id"
            )

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
            self._check_revision(current, revision_id)
            updated = dataclasses.replace(
                change(current), revision_id=new_revision_id(), last_modified=aws_timestamp()
            )
            if self.store.replace_version(ref.name, LATEST, current.revision_id,
                                          updated.revision_id, updated.to_json()):
                self._changed(ref.name)
                return updated

    def update_configuration(
        self, function_name: str, settings: dict[str, Any], revision_id: str | None = None
    ) -> FunctionVersion:
        unknown = set(settings) - CONFIGURABLE
        if unknown:
            raise InvalidParameterValueException(f"Unsupported configuration: {sorted(unknown)}")

        def change(current: FunctionVersion) -> FunctionVersion:
            updated = dataclasses.replace(current, **settings)
            self._validate(updated)
            return updated

        return self._update_latest(function_name, revision_id, change)

    def update_code(
        self, function_name: str, zip_file: bytes, revision_id: str | None = None,
        architectures: list[str] | None = None,
    ) -> FunctionVersion:
        # 404 and 412 before storing anything: a refused update leaves no blob behind.
        current = self.get_version(self.resolve(function_name).name)
        self._check_revision(current, revision_id)
        digest, size = self._store_code(zip_file, "UpdateFunctionCode")

        def change(current: FunctionVersion) -> FunctionVersion:
            return dataclasses.replace(
                current, code_sha256_hex=digest, code_size=size,
                architectures=architectures or current.architectures,
            )

        return self._update_latest(function_name, revision_id, change)

    def delete_function(self, function_name: str, qualifier: str | None = None) -> None:
        ref = self.resolve(function_name, qualifier)
        if ref.qualifier == LATEST:
            raise InvalidParameterValueException(
                "$LATEST version cannot be deleted without deleting the function."
            )
        if ref.qualifier is not None:
            raise self.not_found(ref.name, ref.qualifier)
        if not self.store.delete_function(ref.name, self.function_arn(ref.name)):
            raise self.not_found(ref.name)
        self._changed(ref.name)

    # -- tags -------------------------------------------------------------------

    def _function_for_arn(self, resource_arn: str) -> str:
        ref = self.resolve(resource_arn)
        if ref.qualifier is not None or self.store.get_version(ref.name, LATEST) is None:
            raise self.not_found(ref.name, ref.qualifier)
        return ref.name

    def list_tags(self, resource_arn: str) -> dict[str, str]:
        return self.tags(self._function_for_arn(resource_arn))

    def tag_resource(self, resource_arn: str, values: dict[str, str]) -> None:
        name = self._function_for_arn(resource_arn)
        existing = self.tags(name)
        if len(set(existing) | set(values)) > MAX_TAGS:
            raise InvalidParameterValueException(f"Number of tags exceeds resource tag limit of {MAX_TAGS}.")
        self.store.put_tags(self.function_arn(name), values)

    def untag_resource(self, resource_arn: str, keys: list[str]) -> None:
        self.store.remove_tags(self.function_arn(self._function_for_arn(resource_arn)), keys)
