"""Function URL configs (Create/Get/Update/Delete/ListFunctionUrlConfigs).

A function has at most one URL per qualifier: `$LATEST` (the unqualified function)
or an alias, never a version number (the service model's pattern refuses those).
The URL id is derived from the account, region, function and qualifier, like AWS's
(which is deterministic too), and stored with the config: once created it never
changes, and a config deleted and created again gets the same URL.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
from dataclasses import dataclass
from typing import Any, Callable

from lamina.control.arns import Region
from lamina.control.functions import FunctionRegistry
from lamina.control.models import LATEST
from lamina.control.paging import Page, page_of
from lamina.errors import ResourceConflictException, ResourceNotFoundException
from lamina.store.changes import unannounced
from lamina.store.function_urls import FunctionUrlStore

FUNCTION_MISSING = "Function does not exist"
CONFIG_MISSING = "The resource you requested does not exist."
# AWS's page size for ListFunctionUrlConfigs.
PAGE_SIZE = 50
# Configs (and unknown url ids) kept in memory at most.
MAX_CACHED = 10_000
# The host names URLs are served under: <url-id>.lambda-url.<region>.<URL_DOMAIN>.
URL_DOMAIN = "localhost"


def url_id_for(region: Region, function_name: str, qualifier: str) -> str:
    """32 lower-case letters and digits, as AWS's url ids look."""
    digest = hashlib.sha256(
        f"{region.account_id}:{region.region}:{function_name}:{qualifier}".encode()
    ).digest()
    return base64.b32encode(digest).decode().lower().rstrip("=")[:32]


@dataclass(frozen=True)
class FunctionUrlConfig:
    url_id: str
    function_name: str
    qualifier: str  # $LATEST or an alias name
    auth_type: str  # NONE | AWS_IAM
    invoke_mode: str  # BUFFERED | RESPONSE_STREAM
    creation_time: str
    last_modified_time: str
    cors: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FunctionUrlConfig:
        return cls(**data)

    @property
    def streams(self) -> bool:
        return self.invoke_mode == "RESPONSE_STREAM"

    def function_arn(self, region: Region) -> str:
        return region.function_arn(self.function_name,
                                   None if self.qualifier == LATEST else self.qualifier)

    def domain_name(self, region: Region) -> str:
        return f"{self.url_id}.lambda-url.{region.region}.{URL_DOMAIN}"


def _now() -> str:
    # AWS's form: 2021-10-27T18:49:05.123456Z
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FunctionUrls:
    def __init__(self, store: FunctionUrlStore, functions: FunctionRegistry, region: Region,
                 url_for: Callable[[str], str]) -> None:
        self.store = store
        self.functions = functions
        self.region = region
        # The FunctionUrl clients are given for a url id (host name, port).
        self.url_for = url_for
        # Configs by url id, read on every URL request (None: no such URL). Every
        # change in this process clears the cache; a store round trip costs about
        # half a millisecond.
        self._by_url_id: dict[str, FunctionUrlConfig | None] = {}
        # Tells other front ends that URL configs changed (store/changes.py).
        self.announce: Callable[[str], None] = unannounced

    def to_api(self, config: FunctionUrlConfig, *, full: bool = True,
               invoke_mode: bool = True) -> dict[str, Any]:
        """The config as AWS answers it. Create and Update echo InvokeMode only when it
        was given, and Create has no LastModifiedTime."""
        output: dict[str, Any] = {
            "FunctionUrl": self.url_for(config.url_id),
            "FunctionArn": config.function_arn(self.region),
            "AuthType": config.auth_type,
            "CreationTime": config.creation_time,
        }
        if config.cors is not None:
            output["Cors"] = config.cors
        if full:
            output["LastModifiedTime"] = config.last_modified_time
        if invoke_mode:
            output["InvokeMode"] = config.invoke_mode
        return output

    def _target(self, function_name: str, qualifier: str | None) -> tuple[str, str]:
        """(name, $LATEST or alias) of an existing function or alias."""
        ref = self.functions.resolve(function_name, qualifier)
        if self.functions.load_version(ref.name, LATEST) is None:
            raise ResourceNotFoundException(FUNCTION_MISSING)
        qualifier = ref.qualifier or LATEST
        if qualifier != LATEST and self.functions.aliases.get(ref.name, qualifier) is None:
            raise ResourceNotFoundException(FUNCTION_MISSING)
        return ref.name, qualifier

    def _existing(self, function_name: str, qualifier: str | None) -> FunctionUrlConfig:
        try:
            name, qualifier = self._target(function_name, qualifier)
        except ResourceNotFoundException as error:
            if error.message.startswith("Functions from"):
                raise
            raise ResourceNotFoundException(CONFIG_MISSING) from None
        data = self.store.get(name, qualifier)
        if data is None:
            raise ResourceNotFoundException(CONFIG_MISSING)
        return FunctionUrlConfig.from_json(data)

    def create(self, function_name: str, qualifier: str | None, auth_type: str,
               cors: dict[str, Any] | None, invoke_mode: str | None) -> FunctionUrlConfig:
        name, qualifier = self._target(function_name, qualifier)
        now = _now()
        config = FunctionUrlConfig(
            url_id=url_id_for(self.region, name, qualifier), function_name=name,
            qualifier=qualifier, auth_type=auth_type, invoke_mode=invoke_mode or "BUFFERED",
            creation_time=now, last_modified_time=now, cors=cors,
        )
        self._by_url_id.clear()
        if not self.store.create(name, qualifier, config.url_id, config.to_json()):
            if self.functions.load_version(name, LATEST) is None:
                raise ResourceNotFoundException(FUNCTION_MISSING)
            raise ResourceConflictException(
                f"Failed to create function url config for [functionArn = "
                f"{config.function_arn(self.region)}]. Error message:  FunctionUrlConfig exists "
                "for this Lambda function"
            )
        self.announce(name)
        return config

    def get(self, function_name: str, qualifier: str | None) -> FunctionUrlConfig:
        return self._existing(function_name, qualifier)

    def update(self, function_name: str, qualifier: str | None, auth_type: str | None,
               cors: dict[str, Any] | None, invoke_mode: str | None) -> FunctionUrlConfig:
        current = self._existing(function_name, qualifier)
        config = dataclasses.replace(
            current,
            auth_type=auth_type or current.auth_type,
            cors=cors if cors is not None else current.cors,
            invoke_mode=invoke_mode or current.invoke_mode,
            last_modified_time=_now(),
        )
        self._by_url_id.clear()
        if not self.store.replace(config.function_name, config.qualifier, config.to_json()):
            raise ResourceNotFoundException(CONFIG_MISSING)
        self.announce(config.function_name)
        return config

    def delete(self, function_name: str, qualifier: str | None) -> None:
        config = self._existing(function_name, qualifier)
        self._by_url_id.clear()
        if not self.store.delete(config.function_name, config.qualifier):
            raise ResourceNotFoundException(CONFIG_MISSING)
        self.announce(config.function_name)

    def list(self, function_name: str, marker: str | None,
             max_items: int | None) -> Page[FunctionUrlConfig]:
        ref = self.functions.resolve(function_name)
        if self.functions.load_version(ref.name, LATEST) is None:
            raise ResourceNotFoundException(FUNCTION_MISSING)
        configs = [FunctionUrlConfig.from_json(row) for row in self.store.list(ref.name)]
        if marker:
            configs = [c for c in configs if c.qualifier > marker]
        return page_of(configs, max_items, lambda c: c.qualifier, ceiling=PAGE_SIZE)

    def by_url_id(self, url_id: str) -> FunctionUrlConfig | None:
        """The config a request's host name (or path prefix) names, if it exists."""
        if url_id not in self._by_url_id:
            if len(self._by_url_id) >= MAX_CACHED:
                # Unknown ids are cached too; a scan of made-up host names must not grow it.
                self._by_url_id.clear()
            data = self.store.by_url_id(url_id)
            self._by_url_id[url_id] = FunctionUrlConfig.from_json(data) if data else None
        return self._by_url_id[url_id]

    def alias_deleted(self, name: str, alias: str) -> None:
        self._by_url_id.clear()
        self.store.delete(name, alias)
        self.announce(name)

    def changed_elsewhere(self, name: str) -> None:
        # Cached by URL id, not by function: forget them all (a rare write).
        self._by_url_id.clear()

    def function_changed(self, name: str, version: str | None) -> None:
        """A deleted function takes its URLs along (the foreign key does the same on
        databases that enforce it)."""
        if version is None:
            self._by_url_id.clear()
            self.store.delete(name)
