"""Layers: publishing immutable layer versions, finding them, sharing them."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

from lamina.control.arns import Region, layer_name, parse_layer_arn
from lamina.control.code_storage import CodeStorage
from lamina.control.models import AttachedLayer, LayerVersion, aws_timestamp
from lamina.control.packages import inspect_package
from lamina.control.paging import Page, page_of
from lamina.control.policies import ResourcePolicies
from lamina.errors import InvalidParameterValueException, ResourceNotFoundException
from lamina.limits import Limits
from lamina.store.blobs import BlobStore
from lamina.store.layers import LayerStore

NOT_FOUND = "The resource you requested does not exist."
POLICY_GETTER = "GetLayerPolicy"






def check_version_number(version: int) -> None:
    if version < 1:
        raise InvalidParameterValueException("Layer Version Cannot be less than 1")


def _matches(layer: LayerVersion, runtime: str | None, architecture: str | None) -> bool:
    return (runtime is None or runtime in layer.compatible_runtimes) and (
        architecture is None or architecture in layer.compatible_architectures
    )


class Layers:
    def __init__(self, store: LayerStore, policies: ResourcePolicies, blobs: BlobStore,
                 region: Region, limits: Limits, code: CodeStorage) -> None:
        self.store = store
        self.code = code
        self.policies = policies
        self.blobs = blobs
        self.region = region
        self.limits = limits
        # Checks a signed layer's code signature for integrity (control.code_signing).
        self.check_integrity: Callable[[str, bytes], None] | None = None

    async def publish(
        self, name_or_arn: str, zip_file: bytes, description: str = "",
        compatible_runtimes: list[str] | None = None,
        compatible_architectures: list[str] | None = None, license_info: str | None = None,
    ) -> LayerVersion:
        name = self._own_layer_name(name_or_arn)
        # Off the event loop, like function code (see FunctionRegistry._inspect_code).
        info = await asyncio.to_thread(inspect_package, zip_file, self.limits, "PublishLayerVersion")
        if self.check_integrity is not None:
            # A signed layer changed since it was signed is refused now; whether its
            # publisher is allowed is decided when a function with a config uses it.
            await asyncio.to_thread(self.check_integrity, self.region.layer_arn(name), zip_file)
        async with self.blobs.stored(zip_file) as digest:
            draft = LayerVersion(
                layer_name=name, version=0, code_sha256_hex=digest, code_size=info.zipped_size,
                unzipped_size=info.unzipped_size, created_date=aws_timestamp(),
                description=description, compatible_runtimes=list(compatible_runtimes or []),
                compatible_architectures=list(compatible_architectures or []),
                license_info=license_info,
            )
            record = draft.to_json()
            del record["version"]
            draft.version = self.store.publish(record)
        return draft

    def _own_layer_name(self, name_or_arn: str) -> str:
        ref = parse_layer_arn(name_or_arn)
        if ref is not None and (ref.region, ref.account_id) != (self.region.region, self.region.account_id):
            raise InvalidParameterValueException(
                f"Layer {name_or_arn} is not in this account and region "
                f"({self.region.account_id}, {self.region.region})."
            )
        return layer_name(name_or_arn)

    def get(self, name_or_arn: str, version: int) -> LayerVersion:
        check_version_number(version)
        data = self.store.get(self._own_layer_name(name_or_arn), version)
        if data is None:
            raise ResourceNotFoundException(NOT_FOUND)
        return LayerVersion.from_json(data)

    def get_by_arn(self, arn: str) -> LayerVersion:
        ref = parse_layer_arn(arn)
        if ref is None or ref.version is None:
            raise InvalidParameterValueException(f"Invalid layer version ARN: {arn}")
        if (ref.region, ref.account_id) != (self.region.region, self.region.account_id):
            raise ResourceNotFoundException(NOT_FOUND)
        return self.get(ref.name, ref.version)

    def delete(self, name_or_arn: str, version: int) -> None:
        # Deleting a version that does not exist succeeds, as on AWS. Its blob stays
        # while functions use the version: they keep working, as on AWS.
        check_version_number(version)
        name = self._own_layer_name(name_or_arn)
        if self.store.delete(name, version, self.region.layer_arn(name, version)):
            self.code.collect()

    # -- listing ------------------------------------------------------------------

    def list_layers(self, runtime: str | None, architecture: str | None,
                    marker: str | None, max_items: int | None) -> Page[LayerVersion]:
        """Each layer with its newest version matching the filters, by layer name."""
        newest: dict[str, LayerVersion] = {}
        for data in self.store.versions():
            layer = LayerVersion.from_json(data)
            if layer.layer_name not in newest and _matches(layer, runtime, architecture):
                newest[layer.layer_name] = layer
        following = [newest[n] for n in sorted(newest) if marker is None or n > marker]
        return page_of(following, max_items, lambda layer: layer.layer_name)

    def list_versions(self, name_or_arn: str, runtime: str | None, architecture: str | None,
                      marker: str | None, max_items: int | None) -> Page[LayerVersion]:
        """A layer's versions matching the filters, newest first."""
        name = self._own_layer_name(name_or_arn)
        versions = [
            layer
            for layer in map(LayerVersion.from_json, self.store.versions(name))
            if _matches(layer, runtime, architecture)
            and (not marker or not marker.isdigit() or layer.version < int(marker))
        ]
        return page_of(versions, max_items, lambda layer: str(layer.version))

    # -- use by functions -------------------------------------------------------------

    def attach(self, arns: list[str]) -> list[AttachedLayer]:
        """The layer versions a function's Layers names, in order, or AWS's error."""
        attached = []
        seen: dict[str, str] = {}
        for arn in arns:
            ref = parse_layer_arn(arn)
            if ref is not None and ref.region != self.region.region:
                raise InvalidParameterValueException(
                    "Layers are not in the same region as the function. Layers are expected "
                    f"to be in region {self.region.region}."
                )
            data = None
            if ref is not None and ref.version is not None and (ref.region, ref.account_id) == (
                self.region.region, self.region.account_id
            ):
                data = self.store.get(ref.name, ref.version)
            if data is None or ref is None:
                raise InvalidParameterValueException(f"Layer version {arn} does not exist.")
            if ref.name in seen:
                raise InvalidParameterValueException(
                    "Two different versions of the same layer are not allowed to be referenced "
                    f"in the same function. {seen[ref.name]} and {arn} are versions of the same layer."
                )
            seen[ref.name] = arn
            attached.append(LayerVersion.from_json(data).attached(self.region))
        return attached

    # -- sharing --------------------------------------------------------------------

    def _version_arn(self, name_or_arn: str, version: int) -> str:
        """The ARN of an existing layer version, whose policy is being read or changed."""
        name = self._own_layer_name(name_or_arn)
        arn = self.region.layer_arn(name, version)
        if self.store.get(name, version) is None:
            raise ResourceNotFoundException(f"Layer version {arn} does not exist.")
        return arn

    def add_permission(
        self, name_or_arn: str, version: int, statement_id: str, action: str, principal: str,
        organization_id: str | None = None, revision_id: str | None = None,
    ) -> tuple[str, str]:
        """Grant use of a layer version; return (the statement as JSON, RevisionId)."""
        arn = self._version_arn(name_or_arn, version)
        statement: dict[str, Any] = {
            "Sid": statement_id,
            "Effect": "Allow",
            "Principal": principal if principal == "*" else {
                "AWS": principal if principal.startswith("arn:") else f"arn:aws:iam::{principal}:root"
            },
            "Action": action,
            "Resource": arn,
        }
        if organization_id:
            statement["Condition"] = {"StringEquals": {"aws:PrincipalOrgID": organization_id}}
        revision = self.policies.add_statement(arn, statement, revision_id, POLICY_GETTER)
        return json.dumps(statement, separators=(",", ":")), revision

    def get_policy(self, name_or_arn: str, version: int) -> tuple[str, str]:
        """(the policy document as JSON, RevisionId)."""
        document, revision = self.policies.get(self._version_arn(name_or_arn, version))
        return json.dumps(document, separators=(",", ":")), revision

    def remove_permission(self, name_or_arn: str, version: int, statement_id: str,
                          revision_id: str | None = None) -> None:
        self.policies.remove_statement(
            self._version_arn(name_or_arn, version), statement_id, revision_id, POLICY_GETTER
        )
