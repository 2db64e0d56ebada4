"""Reading a SAM or CloudFormation template, and refusing what cannot deploy.

The YAML is parsed by cfn-lint's decoder, which knows CloudFormation's short tags
(`!Ref`, `!GetAtt A.B`, `!Sub`, ...) and keeps each node's line, so every mistake
is reported as `template.yaml:LINE: what is wrong`, all of them at once, before
anything is built or changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

DEFAULT_TEMPLATE_NAMES = ("template.yaml", "template.yml", "template.json")

TOP_LEVEL = {"AWSTemplateFormatVersion", "Transform", "Description", "Metadata", "Parameters",
             "Mappings", "Conditions", "Resources", "Outputs", "Globals", "Rules"}
RESOURCE_KEYS = {"Type", "Properties", "DependsOn", "Condition", "Metadata", "DeletionPolicy",
                 "UpdateReplacePolicy", "UpdatePolicy", "CreationPolicy"}

# Properties AWS accepts that mean nothing on one Lamina server (IAM, VPCs, KMS, code
# signing): accepted, and named in a note so nobody thinks they are enforced.
IGNORED_FUNCTION_PROPERTIES = {
    "Policies", "Role", "RolePath", "AssumeRolePolicyDocument", "PermissionsBoundary", "VpcConfig",
    "KmsKeyArn", "CodeSigningConfigArn", "FileSystemConfigs", "RuntimeManagementConfig",
    "PropagateTags", "RecursiveLoop", "SourceKMSKeyArn", "AutoPublishCodeSha256",
    "AutoPublishAliasAllProperties", "VersionDeletionPolicy", "VersionDescription",
}
SERVERLESS_FUNCTION = {
    "CodeUri", "InlineCode", "Handler", "Runtime", "MemorySize", "Timeout", "EphemeralStorage",
    "Environment", "Layers", "Architectures", "AutoPublishAlias", "DeploymentPreference",
    "ProvisionedConcurrencyConfig", "ReservedConcurrentExecutions", "EventInvokeConfig",
    "DeadLetterQueue", "FunctionUrlConfig", "SnapStart", "LoggingConfig", "Tracing", "PackageType",
    "ImageUri", "ImageConfig", "Events", "FunctionName", "Description", "Tags",
} | IGNORED_FUNCTION_PROPERTIES
# What `Globals: Function:` may set (SAM's list, less what Lamina ignores anyway).
GLOBAL_FUNCTION = SERVERLESS_FUNCTION - {"Events", "FunctionName", "ImageUri", "InlineCode"}

PROPERTIES: dict[str, set[str]] = {
    "AWS::Serverless::Function": SERVERLESS_FUNCTION,
    "AWS::Serverless::LayerVersion": {"ContentUri", "LayerName", "Description", "CompatibleRuntimes",
                                      "CompatibleArchitectures", "LicenseInfo", "RetentionPolicy"},
    "AWS::Lambda::Function": {
        "Code", "FunctionName", "Handler", "Runtime", "Role", "MemorySize", "Timeout", "Description",
        "EphemeralStorage", "Environment", "Layers", "Architectures", "PackageType", "ImageConfig",
        "DeadLetterConfig", "TracingConfig", "LoggingConfig", "SnapStart", "Tags",
        "ReservedConcurrentExecutions", "VpcConfig", "KmsKeyArn", "CodeSigningConfigArn",
        "FileSystemConfigs", "RuntimeManagementConfig", "RecursiveLoop",
    },
    "AWS::Lambda::Permission": {"FunctionName", "Action", "Principal", "SourceArn", "SourceAccount",
                                "EventSourceToken", "FunctionUrlAuthType", "PrincipalOrgID",
                                "InvokedViaFunctionUrl"},
    "AWS::Lambda::Url": {"TargetFunctionArn", "Qualifier", "AuthType", "Cors", "InvokeMode"},
    "AWS::Lambda::EventSourceMapping": {
        "EventSourceArn", "FunctionName", "BatchSize", "Enabled", "MaximumBatchingWindowInSeconds",
        "FilterCriteria", "FunctionResponseTypes", "ScalingConfig",
    },
    "AWS::SQS::Queue": {"QueueName", "DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod",
                        "ReceiveMessageWaitTimeSeconds", "VisibilityTimeout", "RedrivePolicy", "Tags"},
    # Roles are accepted and not made: Lamina runs every function with the role ARN it is given.
    "AWS::IAM::Role": {"AssumeRolePolicyDocument", "Description", "ManagedPolicyArns", "MaxSessionDuration",
                       "Path", "PermissionsBoundary", "Policies", "RoleName", "Tags"},
}
IGNORED_TYPES = {"AWS::IAM::Role"}

# GetAtt attributes per type; the generated resources SAM documents are added by
# `implicit_resources`.
ATTRIBUTES: dict[str, set[str]] = {
    "AWS::Serverless::Function": {"Arn"},
    "AWS::Lambda::Function": {"Arn"},
    "AWS::Lambda::Url": {"FunctionUrl", "FunctionArn"},
    "AWS::Lambda::EventSourceMapping": {"Id", "EventSourceMappingArn"},
    "AWS::SQS::Queue": {"Arn", "QueueName", "QueueUrl"},
    "AWS::IAM::Role": {"Arn", "RoleId"},
    "AWS::Serverless::LayerVersion": set(),
    "AWS::Lambda::Permission": set(),
    "Lamina::Implicit::Api": {"RootResourceId"},
}

EVENT_PROPERTIES: dict[str, set[str]] = {
    "SQS": {"Queue", "BatchSize", "Enabled", "MaximumBatchingWindowInSeconds", "FilterCriteria",
            "FunctionResponseTypes", "ScalingConfig"},
    "Schedule": {"Schedule", "Name", "Description", "Enabled", "State", "Input", "RetryPolicy",
                 "DeadLetterConfig"},
    "ScheduleV2": {"ScheduleExpression", "ScheduleExpressionTimezone", "Name", "Description", "State",
                   "Input", "FlexibleTimeWindow", "StartDate", "EndDate", "RetryPolicy", "RoleArn",
                   "GroupName", "DeadLetterConfig", "KmsKeyArn", "OmitName", "PermissionsBoundary"},
    "Api": {"Path", "Method", "RestApiId", "Auth", "RequestModel", "RequestParameters", "TimeoutInMillis"},
    "HttpApi": {"Path", "Method", "ApiId", "Auth", "PayloadFormatVersion", "RouteSettings",
                "TimeoutInMillis"},
}

PSEUDO_PARAMETERS = {"AWS::Region", "AWS::AccountId", "AWS::StackName", "AWS::StackId",
                     "AWS::Partition", "AWS::URLSuffix", "AWS::NoValue", "AWS::NotificationARNs"}
INTRINSICS = {"Ref", "Fn::Sub", "Fn::GetAtt", "Fn::If", "Fn::Join", "Fn::Select", "Fn::Split",
              "Fn::FindInMap", "Fn::Equals", "Fn::And", "Fn::Or", "Fn::Not", "Condition",
              "Fn::Base64", "Fn::GetAZs", "Fn::ImportValue", "Fn::Cidr", "Fn::Transform",
              "Fn::Length", "Fn::ToJsonString"}
SUPPORTED_INTRINSICS = INTRINSICS - {"Fn::GetAZs", "Fn::ImportValue", "Fn::Cidr", "Fn::Transform",
                                     "Fn::Length", "Fn::ToJsonString"}
SUB_VARIABLE = re.compile(r"\$\{(?!!)([^}]+)\}")


@dataclass
class Problem:
    line: int | None
    message: str


class TemplateError(Exception):
    """Everything wrong with a template, each with its line."""

    def __init__(self, path: Path, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.path.name}:{p.line}: {p.message}" if p.line else f"{self.path.name}: {p.message}"
                for p in self.problems]


def line_of(node: Any) -> int | None:
    """The 1-based line a decoded node starts on (numbers and booleans carry none)."""
    mark = getattr(node, "start_mark", None)
    return mark.line + 1 if mark is not None else None


@dataclass
class Template:
    path: Path
    body: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        return self.path.parent

    def section(self, name: str) -> dict[str, Any]:
        value = self.body.get(name) or {}
        return value if isinstance(value, dict) else {}

    @property
    def resources(self) -> dict[str, Any]:
        return self.section("Resources")

    def __post_init__(self) -> None:
        for key in ("Api", "HttpApi"):
            if key in self.section("Globals"):
                self.notes.append(f"Globals: {key} ignored: Api and HttpApi events are served by "
                                  "function URLs, which have no stages, authorizers or throttling")

    def function_globals(self) -> dict[str, Any]:
        return (self.section("Globals").get("Function") or {})


def find_template(given: Path | None) -> Path:
    """SAM's lookup: the file given, a template.yaml in the directory given, or in `.`."""
    if given is not None and given.is_file():
        return given
    directory = given or Path(".")
    for name in DEFAULT_TEMPLATE_NAMES:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"no {' or '.join(DEFAULT_TEMPLATE_NAMES)} in {directory.resolve()}")


def _checked_cache(text: str) -> Path:
    """Where a template that passed the checks is kept, as plain JSON: keyed by its
    text and by this module (the checks), so a change to either parses it again."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    key = hashlib.sha256(Path(__file__).read_bytes() + b"\0" + text.encode()).hexdigest()
    return Path(base) / "lamina" / "templates" / f"{key}.json"


def load_template(path: Path) -> Template:
    """Parse and check `path`; TemplateError lists every problem found.

    cfn-lint loads most of itself on import (about 1 s, a third of a redeploy with
    no change), so a template already checked is read back from the cache instead.
    """
    text = path.read_text()
    cached = _checked_cache(text)
    if cached.is_file():
        return Template(path, json.loads(cached.read_text()))
    from cfnlint.decode import decode_str

    body, matches = decode_str(text)
    if matches or body is None:
        raise TemplateError(path, [Problem(m.linenumber, m.message) for m in matches]
                            or [Problem(None, "the template is empty")])
    if not isinstance(body, dict):
        raise TemplateError(path, [Problem(1, "a template is a mapping with a Resources section")])
    template = Template(path, body)
    problems = list(_check(template))
    if problems:
        raise TemplateError(path, problems)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(body, default=str))
    partial.replace(cached)
    return template


def implicit_resources(template: Template) -> dict[str, str]:
    """The resources SAM generates that a template may reference, by logical id → type
    (SAM's "generated resources" page): a function's role, its URL, the implicit APIs."""
    found: dict[str, str] = {}
    globals_ = template.function_globals()
    for logical_id, resource in template.resources.items():
        if not isinstance(resource, dict) or resource.get("Type") != "AWS::Serverless::Function":
            continue
        properties = resource.get("Properties") or {}
        found[f"{logical_id}Role"] = "AWS::IAM::Role"
        if "FunctionUrlConfig" in properties or "FunctionUrlConfig" in globals_:
            found[f"{logical_id}Url"] = "AWS::Lambda::Url"
        for event in (properties.get("Events") or {}).values():
            kind = event.get("Type") if isinstance(event, dict) else None
            if kind == "Api":
                found["ServerlessRestApi"] = "Lamina::Implicit::Api"
            elif kind == "HttpApi":
                found["ServerlessHttpApi"] = "Lamina::Implicit::Api"
    return found


def _check(template: Template) -> Iterator[Problem]:
    body = template.body
    for key in body:
        if key not in TOP_LEVEL:
            yield Problem(line_of(key), f"unknown top-level section {key!r}")
    if not template.resources:
        yield Problem(None, "the template has no Resources")
        return
    for key in template.section("Globals"):
        if key not in ("Function", "Api", "HttpApi"):
            yield Problem(line_of(key), f"Globals section {key!r} is not supported by Lamina "
                                        "(Globals: Function is; Api and HttpApi are ignored)")
    for key in template.function_globals():
        if key not in GLOBAL_FUNCTION:
            yield Problem(line_of(key), f"unknown property {key!r} in Globals: Function")
    types: dict[str, str] = {}
    for logical_id, resource in template.resources.items():
        if not isinstance(resource, dict) or "Type" not in resource:
            yield Problem(line_of(logical_id), f"resource {logical_id} has no Type")
            continue
        kind = str(resource["Type"])
        types[logical_id] = kind
        if kind not in PROPERTIES:
            yield Problem(line_of(resource["Type"]),
                          f"resource {logical_id}: type {kind} is not supported by Lamina "
                          f"(supported: {', '.join(sorted(PROPERTIES))})")
            continue
        for key in resource:
            if key not in RESOURCE_KEYS:
                yield Problem(line_of(key), f"resource {logical_id}: unknown attribute {key!r}")
        depends = resource.get("DependsOn") or []
        for name in [depends] if isinstance(depends, str) else depends:
            if name not in template.resources:
                yield Problem(line_of(name) or line_of(logical_id),
                              f"resource {logical_id}: DependsOn names {name!r}, which is not a resource")
        properties = resource.get("Properties") or {}
        if not isinstance(properties, dict):
            yield Problem(line_of(properties), f"resource {logical_id}: Properties must be a mapping")
            continue
        for key in properties:
            if key not in PROPERTIES[kind]:
                yield Problem(line_of(key), f"unknown property {key!r} of {kind} {logical_id} "
                                            f"(allowed: {', '.join(sorted(PROPERTIES[kind]))})")
        if kind == "AWS::Serverless::Function":
            yield from _check_events(logical_id, properties.get("Events") or {})
    types.update(implicit_resources(template))
    names = set(types) | set(template.section("Parameters")) | PSEUDO_PARAMETERS
    conditions = set(template.section("Conditions"))
    for section in ("Resources", "Outputs", "Conditions", "Globals"):
        yield from _check_references(template.section(section), names, types, conditions,
                                     template.section("Parameters"))


def _check_events(logical_id: str, events: Any) -> Iterator[Problem]:
    if not isinstance(events, dict):
        yield Problem(line_of(events), f"resource {logical_id}: Events must be a mapping")
        return
    for event_id, event in events.items():
        kind = event.get("Type") if isinstance(event, dict) else None
        if kind not in EVENT_PROPERTIES:
            yield Problem(line_of(kind) or line_of(event_id),
                          f"event {event_id} of {logical_id}: event type {kind} is not supported by "
                          f"Lamina (supported: {', '.join(sorted(EVENT_PROPERTIES))})")
            continue
        for key in event.get("Properties") or {}:
            if key not in EVENT_PROPERTIES[kind]:
                yield Problem(line_of(key), f"unknown property {key!r} of {kind} event {event_id} "
                                            f"(allowed: {', '.join(sorted(EVENT_PROPERTIES[kind]))})")


def _check_references(node: Any, names: set[str], types: dict[str, str], conditions: set[str],
                      parameters: dict[str, Any], line: int | None = None) -> Iterator[Problem]:
    line = line_of(node) or line
    if isinstance(node, list):
        for item in node:
            yield from _check_references(item, names, types, conditions, parameters, line)
        return
    if not isinstance(node, dict):
        return
    if len(node) == 1:
        (key, value), = node.items()
        where = line_of(key) or line
        if key in INTRINSICS and key not in SUPPORTED_INTRINSICS:
            yield Problem(where, f"{key} is not supported by Lamina")
            return
        if key == "Ref" and isinstance(value, str):
            # SAM's `!Ref Function.Alias` / `.Version` name the generated alias and version.
            target = value.split(".")[0] if value.endswith((".Alias", ".Version")) else value
            if target not in names:
                yield Problem(where, f"Ref to {value!r}: no parameter or resource of that name")
        elif key == "Fn::GetAtt":
            parts = value.split(".", 1) if isinstance(value, str) else value
            if not isinstance(parts, list) or len(parts) != 2 or not all(isinstance(p, str) for p in parts):
                yield Problem(where, "Fn::GetAtt takes [LogicalId, Attribute]")
            else:
                yield from _check_attribute(parts[0], parts[1], types, where)
        elif key == "Fn::Sub":
            text, local = (value[0], value[1] if len(value) > 1 else {}) if isinstance(value, list) \
                else (value, {})
            if isinstance(text, str):
                for name in SUB_VARIABLE.findall(text):
                    if name in local:
                        continue
                    if "." in name and name.split(".", 1)[0] in types:
                        resource, attribute = name.split(".", 1)
                        yield from _check_attribute(resource, attribute, types, where)
                    elif name not in names:
                        yield Problem(where, f"Fn::Sub variable ${{{name}}}: no parameter or resource "
                                             "of that name")
        elif key in ("Condition", "Fn::If"):
            name = value[0] if key == "Fn::If" and isinstance(value, list) and value else value
            if isinstance(name, str) and name not in conditions:
                yield Problem(where, f"{key} names condition {name!r}, which Conditions does not define")
    for key, value in node.items():
        if key == "Condition" and isinstance(value, str) and len(node) > 1 and value not in conditions:
            yield Problem(line_of(key), f"Condition {value!r} is not defined in Conditions")
        yield from _check_references(value, names, types, conditions, parameters, line)


def _check_attribute(logical_id: str, attribute: str, types: dict[str, str],
                     line: int | None) -> Iterator[Problem]:
    if logical_id not in types:
        yield Problem(line, f"Fn::GetAtt {logical_id}.{attribute}: no resource {logical_id}")
        return
    allowed = ATTRIBUTES.get(types[logical_id], set())
    if attribute not in allowed:
        yield Problem(line, f"Fn::GetAtt {logical_id}.{attribute}: {types[logical_id]} has "
                            + (f"the attributes {', '.join(sorted(allowed))}" if allowed else "no attributes"))
