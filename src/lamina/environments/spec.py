"""What to start: the one record `environments` receives about a function version.

`invoke` builds it from the control plane's FunctionVersion (invoke/specs.py), so
nothing in this layer depends on how the control plane stores functions. The
field names are Lambda's configuration words, as in FunctionVersion, because they
mean the same things.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    # Lambda's default outbound access; False for a function in a VPC (no NAT).
    outbound_network: bool = True
