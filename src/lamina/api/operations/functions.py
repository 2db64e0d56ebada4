"""CreateFunction, GetFunction, ListFunctions, Update*, DeleteFunction."""

from __future__ import annotations

from typing import Any

from lamina.api.operations import Call, operation
from lamina.control.container_images import image_config_settings
from lamina.errors import InvalidParameterValueException

# Request members that map one-to-one onto FunctionVersion fields.
_PLAIN = {
    "Role": "role",
    "Runtime": "runtime",
    "Handler": "handler",
    "Description": "description",
    "Timeout": "timeout",
    "MemorySize": "memory_size",
    "KMSKeyArn": "kms_key_arn",
    "Layers": "layers",
}
# Request members that are structures: (member, inner member) -> field.
_NESTED = {
    ("Environment", "Variables"): "environment",
    ("EphemeralStorage", "Size"): "ephemeral_storage_mb",
    ("TracingConfig", "Mode"): "tracing_mode",
    ("DeadLetterConfig", "TargetArn"): "dead_letter_target_arn",
    ("VpcConfig", "SubnetIds"): "vpc_subnet_ids",
    ("VpcConfig", "SecurityGroupIds"): "vpc_security_group_ids",
    ("LoggingConfig", "LogFormat"): "log_format",
    ("LoggingConfig", "LogGroup"): "log_group",
    ("LoggingConfig", "ApplicationLogLevel"): "application_log_level",
    ("LoggingConfig", "SystemLogLevel"): "system_log_level",
    ("SnapStart", "ApplyOn"): "snap_start_apply_on",
}


def configuration_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The FunctionVersion fields a Create/UpdateFunctionConfiguration request sets."""
    settings = {field: params[member] for member, field in _PLAIN.items() if member in params}
    for (outer, inner), field in _NESTED.items():
        if inner in (params.get(outer) or {}):
            settings[field] = params[outer][inner]
    if "Environment" in params:
        settings.setdefault("environment", {})
        settings["environment_given"] = True
    if "ImageConfig" in params:
        settings["image_config"] = image_config_settings(params["ImageConfig"])
    if "FileSystemConfigs" in params:
        settings["file_system_configs"] = [
            {"Arn": item["Arn"], "LocalMountPath": item["LocalMountPath"]}
            for item in params["FileSystemConfigs"]]
    return settings


def _image_uri(package_type: str, code: dict[str, Any]) -> str | None:
    """Code.ImageUri of a PackageType Image function (None for a .zip one)."""
    if package_type == "Image":
        if not code.get("ImageUri"):
            raise InvalidParameterValueException("Please provide ImageUri when creating a function with "
                                                 "packageType Image.")
        return str(code["ImageUri"])
    if "ImageUri" in code:
        raise InvalidParameterValueException("Please don't provide ImageUri when creating a function with "
                                             "packageType Zip.")
    return None


def _zip_file(code: dict[str, Any]) -> bytes:
    if "ZipFile" in code:
        return code["ZipFile"]
    # ImageUri never reaches here: _image_uri and UpdateFunctionCode take it first.
    raise InvalidParameterValueException(
        "Code.S3Bucket/S3Key: this Lamina server has no S3; upload the package as Code.ZipFile"
    )


def function_output(call: Call, fv: Any, arn_qualifier: str | None = None) -> dict[str, Any]:
    return call.platform.functions.configuration(fv, arn_qualifier)


def qualified_output(call: Call) -> tuple[Any, dict[str, Any]]:
    """The version FunctionName/Qualifier names and its FunctionConfiguration, whose
    FunctionArn carries the qualifier asked by (version, alias or $LATEST)."""
    registry = call.platform.functions
    ref = registry.resolve(call.params["FunctionName"], call.params.get("Qualifier"))
    fv = registry.get_version(ref.name, ref.qualifier)
    return fv, function_output(call, fv, ref.qualifier)


@operation("CreateFunction")
async def create_function(call: Call) -> dict[str, Any]:
    p = call.params
    settings = configuration_settings(p)
    settings["package_type"] = p.get("PackageType", "Zip")
    if "Architectures" in p:
        settings["architectures"] = p["Architectures"]
    image_uri = _image_uri(settings["package_type"], p["Code"])
    fv = await call.platform.functions.create_function(
        p["FunctionName"], None if image_uri else _zip_file(p["Code"]), settings, p.get("Tags") or {},
        publish=bool(p.get("Publish")), image_uri=image_uri,
        code_signing_config_arn=p.get("CodeSigningConfigArn"),
    )
    output = function_output(call, fv)
    # With Publish, AWS answers the new version's configuration under the unqualified ARN.
    output["FunctionArn"] = call.platform.region.function_arn(fv.function_name)
    return output


@operation("GetFunctionConfiguration")
async def get_function_configuration(call: Call) -> dict[str, Any]:
    return qualified_output(call)[1]


@operation("GetFunction")
async def get_function(call: Call) -> dict[str, Any]:
    registry = call.platform.functions
    fv, configuration = qualified_output(call)
    signer = call.request.app.state.code_urls
    output: dict[str, Any] = {
        "Configuration": configuration,
        "Code": {
            "RepositoryType": "S3",
            "Location": signer.url(str(call.request.base_url), fv.code_sha256_hex),
        },
    }
    if fv.package_type == "Image":
        # As on Lambda, whose images all come from ECR.
        output["Code"] = {"RepositoryType": "ECR", "ImageUri": fv.image_uri,
                          "ResolvedImageUri": fv.resolved_image_uri}
    tags = registry.tags(fv.function_name)
    if tags:
        output["Tags"] = tags
    reserved = call.platform.concurrency.reserved.get(fv.function_name)
    if reserved is not None:
        output["Concurrency"] = {"ReservedConcurrentExecutions": reserved}
    return output


@operation("ListFunctions")
async def list_functions(call: Call) -> dict[str, Any]:
    p = call.params
    all_versions = p.get("FunctionVersion") == "ALL"
    listing = call.platform.functions.list_functions(p.get("Marker"), p.get("MaxItems"), all_versions)
    return {
        # Listing every version, AWS qualifies each ARN, $LATEST's too.
        "Functions": [
            function_output(call, fv, fv.version if all_versions else None) for fv in listing.items
        ],
        "NextMarker": listing.next_marker,
    }


@operation("UpdateFunctionCode")
async def update_function_code(call: Call) -> dict[str, Any]:
    p = call.params
    if p.get("ImageUri"):
        fv = await call.platform.functions.update_image(
            p["FunctionName"], p["ImageUri"], p.get("RevisionId"), p.get("Architectures"),
            publish=bool(p.get("Publish")))
        return function_output(call, fv)
    fv = await call.platform.functions.update_code(
        p["FunctionName"], _zip_file(p), p.get("RevisionId"), p.get("Architectures"),
        publish=bool(p.get("Publish")),
    )
    return function_output(call, fv)


@operation("UpdateFunctionConfiguration")
async def update_function_configuration(call: Call) -> dict[str, Any]:
    p = call.params
    settings = configuration_settings(p)
    if settings.get("environment") == {}:
        # Clearing every variable removes Environment from the configuration (only
        # CreateFunction's echo of an empty Environment is recorded from AWS).
        settings["environment_given"] = False
    fv = call.platform.functions.update_configuration(
        p["FunctionName"], settings, p.get("RevisionId")
    )
    return function_output(call, fv)


@operation("DeleteFunction")
async def delete_function(call: Call) -> dict[str, Any]:
    call.platform.functions.delete_function(call.params["FunctionName"], call.params.get("Qualifier"))
    # AWS answers 204 (the model's StatusCode member), not the operation's default 200.
    return {"StatusCode": 204}
