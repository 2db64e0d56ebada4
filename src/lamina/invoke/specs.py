"""The control plane's FunctionVersion, as the environment spec `environments` takes."""

from __future__ import annotations

from typing import Any

from lamina.control.models import FunctionVersion
from lamina.environments.spec import EnvironmentSpec

# The spec of each version object the control plane hands out, by identity: a warm
# invocation would otherwise build the same spec again (the registries replace a
# version object when it changes, they do not edit it once it is installed).
_SPECS: dict[int, tuple[FunctionVersion, EnvironmentSpec]] = {}
_SPECS_KEPT = 4096


def environment_spec(fv: FunctionVersion) -> EnvironmentSpec:
    cached = _SPECS.get(id(fv))
    if cached is not None and cached[0] is fv:
        return cached[1]
    spec = _environment_spec(fv)
    if len(_SPECS) >= _SPECS_KEPT:
        _SPECS.clear()
    _SPECS[id(fv)] = (fv, spec)  # fv kept alive with it: its id cannot be reused
    return spec


def _environment_spec(fv: FunctionVersion) -> EnvironmentSpec:
    return EnvironmentSpec(
        function_name=fv.function_name,
        version=fv.version,
        revision_id=fv.revision_id,
        runtime=fv.runtime or "provided.al2023",
        handler=fv.handler or "",
        code_sha256_hex=fv.code_sha256_hex,
        memory_size=fv.memory_size,
        timeout=fv.timeout,
        ephemeral_storage_mb=fv.ephemeral_storage_mb,
        log_group_name=fv.log_group_name,
        role=fv.role,
        layer_sha256_hex=tuple(layer.code_sha256_hex for layer in fv.layers),
        environment=dict(fv.environment),
        application_log_level=fv.application_log_level,
        log_format=fv.log_format,
        system_log_level=fv.system_log_level,
        outbound_network=fv.outbound_network,
        architecture=fv.architectures[0] if fv.architectures else "x86_64",
        sealed_environment=fv.sealed_environment,
        file_system_configs=tuple((item["Arn"], item["LocalMountPath"])
                                  for item in fv.file_system_configs),
        snap_start=fv.snap_start_optimization == "On",
        **_image(fv),
    )


def _image(fv: FunctionVersion) -> dict[str, Any]:
    if fv.package_type != "Image":
        return {}
    config = fv.image_config
    return {
        "image_uri": fv.resolved_image_uri,
        "image_entry_point": tuple(config["EntryPoint"]) if "EntryPoint" in config else None,
        "image_command": tuple(config["Command"]) if "Command" in config else None,
        "image_working_directory": config.get("WorkingDirectory"),
    }
