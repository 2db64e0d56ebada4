"""The records of the control plane, in snake_case, and their AWS wire shapes."""

from __future__ import annotations

import base64
import dataclasses
import datetime
from dataclasses import dataclass, field
from typing import Any

from lamina.control.arns import Region

LATEST = "$LATEST"


def aws_timestamp(moment: datetime.datetime | None = None) -> str:
    """Lambda's LastModified format: 2024-01-31T12:34:56.789+0000."""
    moment = moment or datetime.datetime.now(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


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
    environment: dict[str, str] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)
    architectures: list[str] = field(default_factory=lambda: ["x86_64"])
    package_type: str = "Zip"
    tracing_mode: str = "PassThrough"
    dead_letter_target_arn: str | None = None
    kms_key_arn: str | None = None
    log_format: str = "Text"
    log_group: str | None = None
    application_log_level: str | None = None
    system_log_level: str | None = None
    snap_start_apply_on: str = "None"
    state: str = "Active"
    state_reason: str | None = None
    state_reason_code: str | None = None
    last_update_status: str = "Successful"

    @property
    def code_sha256(self) -> str:
        """CodeSha256 as AWS gives it: the base64 of the zip's SHA-256."""
        return base64.b64encode(bytes.fromhex(self.code_sha256_hex)).decode()

    @property
    def log_group_name(self) -> str:
        return self.log_group or f"/aws/lambda/{self.function_name}"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FunctionVersion:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_api(self, region: Region) -> dict[str, Any]:
        """The FunctionConfiguration shape."""
        qualifier = None if self.version == LATEST else self.version
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
            "LastUpdateStatus": self.last_update_status,
            "PackageType": self.package_type,
            "Architectures": list(self.architectures),
            "EphemeralStorage": {"Size": self.ephemeral_storage_mb},
            "SnapStart": {"ApplyOn": self.snap_start_apply_on, "OptimizationStatus": "Off"},
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
        if self.environment:
            config["Environment"] = {"Variables": dict(self.environment)}
        if self.layers:
            config["Layers"] = [{"Arn": arn} for arn in self.layers]
        if self.dead_letter_target_arn:
            config["DeadLetterConfig"] = {"TargetArn": self.dead_letter_target_arn}
        if self.kms_key_arn:
            config["KMSKeyArn"] = self.kms_key_arn
        if self.state_reason:
            config["StateReason"] = self.state_reason
            config["StateReasonCode"] = self.state_reason_code
        return config
