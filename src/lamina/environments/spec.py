"""What to start: the one record `environments` receives about a function version.

`invoke` builds it from the control plane's FunctionVersion (invoke/specs.py), so
nothing in this layer depends on how the control plane stores functions. The
field names are Lambda's configuration words, as in FunctionVersion, because they
mean the same things.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lamina.observe.events import LifecycleListener
from lamina.sandbox.base import FileSystemMount


@dataclass(frozen=True)
class EnvironmentSpec:
    function_name: str
    version: str
    # Changes with every update of the version's code or configuration: environments
    # of an older revision are retired.
    revision_id: str
    runtime: str
    handler: str
    code_sha256_hex: str
    memory_size: int
    timeout: int
    ephemeral_storage_mb: int
    log_group_name: str
    # The execution role, whose temporary credentials the environment gets.
    role: str
    layer_sha256_hex: tuple[str, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)
    application_log_level: str | None = None
    # LoggingConfig: Text or JSON, and the level of Lambda's own (system) records.
    log_format: str = "Text"
    system_log_level: str | None = None
    # Lambda's default outbound access; False for a function in a VPC (no NAT).
    outbound_network: bool = True
    # PackageType Image: the image to run (repository@digest) and ImageConfig's
    # overrides (None: the image's own ENTRYPOINT, CMD, WORKDIR).
    image_uri: str | None = None
    image_entry_point: tuple[str, ...] | None = None
    image_command: tuple[str, ...] | None = None
    image_working_directory: str | None = None
    # x86_64 or arm64: what its compute is priced at (observe/metrics.py).
    architecture: str = "x86_64"
    # The variables as stored, sealed under a KMS key: opened into `environment` only
    # when an environment starts (EnvironmentPool.prepare), for that environment's
    # own spec; what invoke passes on every call holds only this sealed form.
    sealed_environment: str | None = None
    # FileSystemConfigs as (access point ARN, LocalMountPath); resolved into
    # file_system_mounts when an environment starts.
    file_system_configs: tuple[tuple[str, str], ...] = ()
    file_system_mounts: tuple[FileSystemMount, ...] = ()
    # SnapStart applies: a published version of a function with ApplyOn
    # PublishedVersions, whose environments are forks of its template (snapstart.py).
    snap_start: bool = False


@dataclass(frozen=True)
class RoleCredentials:
    """Temporary credentials of a function's execution role, for one environment."""

    # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN.
    variables: dict[str, str]
    expiration: float  # epoch seconds
    revoke: Callable[[], None]


# What the control plane holds back until an environment starts: the spec with its
# variables opened and its file systems resolved (raising Lambda's KMS and EFS errors).
SpecPreparer = Callable[[EnvironmentSpec], EnvironmentSpec]


# Issues credentials for an execution role ARN (the control plane's, wired by the
# platform: this layer does not know where credentials come from).
CredentialIssuer = Callable[[str], RoleCredentials]


# Gives each new environment of a version a listener of its lifecycle events (the
# platform's metrics and traces); wired by the platform.
EnvironmentListener = Callable[[EnvironmentSpec], LifecycleListener]
