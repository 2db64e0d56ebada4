"""The records of the control plane, in snake_case, and their AWS wire shapes."""

from __future__ import annotations

import base64
import dataclasses
import datetime
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from lamina.control.arns import Region

LATEST = "$LATEST"


class FunctionState(StrEnum):
    """A function version's State (the ones Lamina uses of Lambda's enum)."""

    PENDING = "Pending"
    ACTIVE = "Active"
    FAILED = "Failed"


class LastUpdateStatus(StrEnum):
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    IN_PROGRESS = "InProgress"


# Lambda's StateReason / LastUpdateStatusReason while it prepares a function, for a
# new function and for an update alike (code "Creating" in both).
CREATING_REASON = "The function is being created."
CREATING = "Creating"


def aws_timestamp(moment: datetime.datetime | None = None) -> str:
    """Lambda's LastModified format: 2024-01-31T12:34:56.789+0000."""
    moment = moment or datetime.datetime.now(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


@dataclass(frozen=True)
class AttachedLayer:
    """A layer version as a function version uses it.

    Kept with the function version (not looked up on each use) because a layer
    version is immutable and, as on AWS, a function keeps working with a layer
    version that was deleted after it was attached.
    """

    arn: str
    code_sha256_hex: str = ""
    code_size: int = 0
    unzipped_size: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> AttachedLayer:
        # Rows written before layers were checked hold bare ARNs.
        return cls(arn=data) if isinstance(data, str) else cls(**data)


@dataclass
class FunctionVersion:
    """One version of a function: its code and configuration (immutable once published)."""

    function_name: str
    version: str
    role: str
    runtime: str | None
    handler: str | None
    code_sha256_hex: str
    code_size: int
    revision_id: str
    last_modified: str
    description: str = ""
    timeout: int = 3
    memory_size: int = 128
    ephemeral_storage_mb: int = 512
    # The variables in clear, only between a request and the moment they are sealed
    # (control/environment_secrets.py): never stored, see to_json.
    environment: dict[str, str] = field(default_factory=dict)
    # Whether Environment was ever given: AWS then echoes it, even with no variables.
    environment_given: bool = False
    # The variables as stored: a KMS ciphertext blob (base64) under kms_key_arn, or
    # Lamina's aws/lambda key; None when the function has none.
    sealed_environment: str | None = None
    # FileSystemConfigs: [{"Arn": access point ARN, "LocalMountPath": "/mnt/..."}].
    file_system_configs: list[dict[str, str]] = field(default_factory=list)
    layers: list[AttachedLayer] = field(default_factory=list)
    architectures: list[str] = field(default_factory=lambda: ["x86_64"])
    package_type: str = "Zip"
    tracing_mode: str = "PassThrough"
    dead_letter_target_arn: str | None = None
    # VpcConfig. Lamina has no VPCs; as in a Lambda VPC without a NAT gateway, a
    # function attached to subnets gets no outbound network at all.
    vpc_subnet_ids: list[str] = field(default_factory=list)
    vpc_security_group_ids: list[str] = field(default_factory=list)
    kms_key_arn: str | None = None
    log_format: str = "Text"
    log_group: str | None = None
    application_log_level: str | None = None
    system_log_level: str | None = None
    snap_start_apply_on: str = "None"
    # SnapStartResponse.OptimizationStatus: "On" for a published version whose
    # environments start from its snapshot (environments/snapstart.py).
    snap_start_optimization: str = "Off"
    state: str = FunctionState.ACTIVE
    state_reason: str | None = None
    state_reason_code: str | None = None
    # None while a new function is Pending: Lambda gives no LastUpdateStatus then.
    last_update_status: str | None = LastUpdateStatus.SUCCESSFUL
    last_update_status_reason: str | None = None
    last_update_status_reason_code: str | None = None
    # Sum of the sizes of the files in the zip: code plus layers must fit the quota.
    code_unzipped_size: int = 0
    # On a published version: the RevisionId $LATEST had when it was published, so
    # publishing an unchanged $LATEST again returns this version, as AWS does.
    published_from_revision: str | None = None
    # PackageType Image: the ImageUri asked for, the same repository at the manifest
    # digest it named then (what runs), and ImageConfig's members as given.
    image_uri: str | None = None
    resolved_image_uri: str | None = None
    image_config: dict[str, Any] = field(default_factory=dict)

    @property
    def code_sha256(self) -> str:
        """CodeSha256 as AWS gives it: the base64 of the zip's SHA-256; for an image,
        its manifest digest in hex (as in ResolvedImageUri)."""
        if self.package_type == "Image":
            return self.code_sha256_hex
        return base64.b64encode(bytes.fromhex(self.code_sha256_hex)).decode()

    @property
    def outbound_network(self) -> bool:
        return not self.vpc_subnet_ids

    @property
    def log_group_name(self) -> str:
        return self.log_group or f"/aws/lambda/{self.function_name}"

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        # Variables are stored sealed, never in clear, whatever the caller forgot.
        data.pop("environment")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FunctionVersion:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["layers"] = [AttachedLayer.from_json(item) for item in values.get("layers", [])]
        return cls(**values)

    @property
    def has_environment(self) -> bool:
        return bool(self.environment or self.environment_given or self.sealed_environment)

    def to_api(self, region: Region, arn_qualifier: str | None = None,
               environment: dict[str, Any] | None = None) -> dict[str, Any]:
        """The FunctionConfiguration shape.

        FunctionArn carries the qualifier the caller asked by (an alias name or
        `$LATEST`) when given, else this version's number (none for $LATEST).
        `environment` is the EnvironmentResponse shape, once the sealed variables are
        opened (or the Error they gave); without it, the clear variables held.
        """
        qualifier = arn_qualifier or (None if self.version == LATEST else self.version)
        config: dict[str, Any] = {
            "FunctionName": self.function_name,
            "FunctionArn": region.function_arn(self.function_name, qualifier),
            "Runtime": self.runtime,
            "Role": self.role,
            "Handler": self.handler,
            "CodeSize": self.code_size,
            "Description": self.description,
            "Timeout": self.timeout,
            "MemorySize": self.memory_size,
            "LastModified": self.last_modified,
            "CodeSha256": self.code_sha256,
            "Version": self.version,
            "TracingConfig": {"Mode": self.tracing_mode},
            "RevisionId": self.revision_id,
            "State": self.state,
            "PackageType": self.package_type,
            "Architectures": list(self.architectures),
            "EphemeralStorage": {"Size": self.ephemeral_storage_mb},
            "SnapStart": {"ApplyOn": self.snap_start_apply_on,
                          "OptimizationStatus": self.snap_start_optimization},
            "LoggingConfig": {
                "LogFormat": self.log_format,
                "LogGroup": self.log_group_name,
                **(
                    {"ApplicationLogLevel": self.application_log_level}
                    if self.application_log_level
                    else {}
                ),
                **({"SystemLogLevel": self.system_log_level} if self.system_log_level else {}),
            },
        }
        if environment is not None:
            config["Environment"] = environment
        elif self.environment or self.environment_given:
            config["Environment"] = {"Variables": dict(self.environment)}
        if self.file_system_configs:
            config["FileSystemConfigs"] = [dict(item) for item in self.file_system_configs]
        if self.image_config:
            config["ImageConfigResponse"] = {"ImageConfig": dict(self.image_config)}
        if self.layers:
            config["Layers"] = [{"Arn": layer.arn, "CodeSize": layer.code_size} for layer in self.layers]
        if self.dead_letter_target_arn:
            config["DeadLetterConfig"] = {"TargetArn": self.dead_letter_target_arn}
        if self.vpc_subnet_ids:
            config["VpcConfig"] = {
                "SubnetIds": list(self.vpc_subnet_ids),
                "SecurityGroupIds": list(self.vpc_security_group_ids),
                "VpcId": "vpc-lamina",
            }
        if self.kms_key_arn:
            config["KMSKeyArn"] = self.kms_key_arn
        if self.state_reason:
            config["StateReason"] = self.state_reason
            config["StateReasonCode"] = self.state_reason_code
        if self.last_update_status:
            config["LastUpdateStatus"] = self.last_update_status
        if self.last_update_status_reason:
            config["LastUpdateStatusReason"] = self.last_update_status_reason
            config["LastUpdateStatusReasonCode"] = self.last_update_status_reason_code
        return config

    @property
    def awaits_runtime(self) -> bool:
        """Waiting for its runtime to be made ready: Pending after CreateFunction, or
        an update in progress."""
        return (self.state == FunctionState.PENDING and self.state_reason_code == CREATING) or \
            self.last_update_status == LastUpdateStatus.IN_PROGRESS


@dataclass(frozen=True)
class ResolvedTarget:
    """What an invocation of FUNCTION[:QUALIFIER] runs: one version, reached
    directly or through an alias (after the alias's weighted routing)."""

    function_version: FunctionVersion
    alias: str | None = None


@dataclass
class Alias:
    function_name: str
    name: str
    function_version: str
    revision_id: str
    description: str = ""
    # AdditionalVersionWeights: {version: share of invocations sent to it}.
    routing: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Alias:
        return cls(**data)

    @property
    def versions(self) -> set[str]:
        """Every version the alias can send an invocation to."""
        return {self.function_version, *self.routing}

    def to_api(self, region: Region) -> dict[str, Any]:
        """The AliasConfiguration shape."""
        config: dict[str, Any] = {
            "AliasArn": region.function_arn(self.function_name, self.name),
            "Name": self.name,
            "FunctionVersion": self.function_version,
            "Description": self.description,
            "RevisionId": self.revision_id,
        }
        if self.routing:
            config["RoutingConfig"] = {"AdditionalVersionWeights": dict(self.routing)}
        return config


@dataclass
class LayerVersion:
    layer_name: str
    version: int
    code_sha256_hex: str
    code_size: int
    unzipped_size: int
    created_date: str
    description: str = ""
    compatible_runtimes: list[str] = field(default_factory=list)
    compatible_architectures: list[str] = field(default_factory=list)
    license_info: str | None = None

    @property
    def code_sha256(self) -> str:
        return base64.b64encode(bytes.fromhex(self.code_sha256_hex)).decode()

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LayerVersion:
        return cls(**data)

    def attached(self, region: Region) -> AttachedLayer:
        return AttachedLayer(
            arn=region.layer_arn(self.layer_name, self.version),
            code_sha256_hex=self.code_sha256_hex,
            code_size=self.code_size,
            unzipped_size=self.unzipped_size,
        )

    def to_list_item(self, region: Region) -> dict[str, Any]:
        """The LayerVersionsListItem shape."""
        item: dict[str, Any] = {
            "LayerVersionArn": region.layer_arn(self.layer_name, self.version),
            "Version": self.version,
            "Description": self.description,
            "CreatedDate": self.created_date,
            "CompatibleRuntimes": list(self.compatible_runtimes),
            "CompatibleArchitectures": list(self.compatible_architectures),
        }
        if self.license_info is not None:
            item["LicenseInfo"] = self.license_info
        return item

    def to_api(self, region: Region, location: str) -> dict[str, Any]:
        """The GetLayerVersionResponse / PublishLayerVersionResponse shape."""
        item = self.to_list_item(region)
        return {
            **item,
            "LayerArn": region.layer_arn(self.layer_name),
            "Content": {"Location": location, "CodeSha256": self.code_sha256, "CodeSize": self.code_size},
        }
