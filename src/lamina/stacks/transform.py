"""SAM's resources expanded into the plain ones they stand for, as SAM's transform does.

An `AWS::Serverless::Function` becomes an `AWS::Lambda::Function` plus, as SAM
generates them and under SAM's logical ids: `<Fn>Alias<Name>` (AutoPublishAlias:
publish a version, point the alias at it), `<Fn>Url` and its public permissions
(FunctionUrlConfig), `<Fn>EventInvokeConfig`, and one resource per event (`<Fn><Event>`:
an event source mapping, an EventBridge rule and its permission, a Scheduler
schedule). `Api` and `HttpApi` events have no API Gateway to live in: on Lamina
they are served by the function's URL (payload format 2.0, any method and path),
and the routes they name are listed with the outputs.

Properties stay unresolved here (intrinsics and all): `deploy` resolves them in
dependency order, when what they refer to exists.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from lamina.stacks.template import IGNORED_FUNCTION_PROPERTIES, IGNORED_TYPES, Template

DEFAULT_ROLE = "arn:aws:iam::000000000000:role/lamina"


@dataclass
class Resource:
    logical_id: str
    type: str
    properties: dict[str, Any]
    # Where its code is built from: CodeUri (relative to the template), Runtime,
    # Architectures, BuildMethod, and whether it is a layer.
    build: dict[str, Any] | None = None
    depends_on: set[str] = field(default_factory=set)
    condition: str | None = None


@dataclass(frozen=True)
class Route:
    function: str
    method: str
    path: str
    kind: str


@dataclass
class Expanded:
    resources: dict[str, Resource]
    routes: list[Route]
    notes: list[str]
    # logical ids a template may name that map onto a generated resource
    aliases: dict[str, str]
    # resources accepted but not made (IAM roles), by logical id → their name
    roles: dict[str, str] = field(default_factory=dict)


def merge_globals(globals_: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    """SAM's rules: maps merge (the function's keys win), lists are the global items
    then the function's, anything else the function's value."""
    merged = dict(globals_)
    for key, value in properties.items():
        mine = merged.get(key)
        if isinstance(mine, dict) and isinstance(value, dict) and not _is_intrinsic(value):
            merged[key] = merge_globals(mine, value)
        elif isinstance(mine, list) and isinstance(value, list):
            merged[key] = list(mine) + list(value)
        else:
            merged[key] = value
    return merged


def _is_intrinsic(node: Any) -> bool:
    return isinstance(node, dict) and len(node) == 1 and (
        next(iter(node)) in ("Ref", "Condition") or str(next(iter(node))).startswith("Fn::"))


def references(node: Any) -> set[str]:
    """Logical ids a property tree names through Ref, GetAtt or Sub."""
    from lamina.stacks.template import SUB_VARIABLE

    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= references(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value.split(".")[0])
            elif key == "Fn::GetAtt":
                found.add(str(value.split(".")[0] if isinstance(value, str) else value[0]))
            elif key == "Fn::Sub":
                text = value[0] if isinstance(value, list) else value
                local = value[1] if isinstance(value, list) and len(value) > 1 else {}
                for name in SUB_VARIABLE.findall(str(text)):
                    if name not in local:
                        found.add(name.split(".")[0])
                found |= references(local)
            else:
                found |= references(value)
    return found


def expand(template: Template) -> Expanded:
    out = Expanded({}, [], [], {})
    globals_ = template.function_globals()
    for logical_id, resource in template.resources.items():
        kind = str(resource["Type"])
        properties = dict(resource.get("Properties") or {})
        condition = resource.get("Condition")
        depends = resource.get("DependsOn") or []
        depends = {str(depends)} if isinstance(depends, str) else {str(d) for d in depends}
        if kind in IGNORED_TYPES:
            out.notes.append(f"{logical_id} ({kind}) is not made: Lamina does not enforce IAM")
            out.roles[logical_id] = str(properties.get("RoleName") or logical_id)
            continue
        if kind == "AWS::Serverless::Function":
            made = list(_function(logical_id, merge_globals(globals_, properties),
                                     resource.get("Metadata") or {}, out))
        elif kind == "AWS::Serverless::LayerVersion":
            made = [_layer(logical_id, properties, resource.get("Metadata") or {})]
        elif kind == "AWS::Lambda::Function":
            made = [_plain_function(logical_id, properties, resource.get("Metadata") or {})]
        else:
            made = [Resource(logical_id, kind, properties)]
        for item in made:
            item.condition = item.condition or (str(condition) if condition else None)
            item.depends_on |= depends
            out.resources[item.logical_id] = item
    for item in out.resources.values():
        item.depends_on |= {out.aliases.get(name, name) for name in references(item.properties)}
        item.depends_on &= set(out.resources)
        item.depends_on.discard(item.logical_id)
    return out


_FUNCTION_CONFIG = {
    "FunctionName": "FunctionName", "Handler": "Handler", "Runtime": "Runtime",
    "MemorySize": "MemorySize", "Timeout": "Timeout", "Description": "Description",
    "EphemeralStorage": "EphemeralStorage", "Environment": "Environment", "Layers": "Layers",
    "Architectures": "Architectures", "PackageType": "PackageType", "ImageConfig": "ImageConfig",
    "LoggingConfig": "LoggingConfig", "SnapStart": "SnapStart", "Tags": "Tags",
    "ReservedConcurrentExecutions": "ReservedConcurrentExecutions",
}


def _function(logical_id: str, properties: dict[str, Any], metadata: dict[str, Any],
              out: Expanded) -> Iterator[Resource]:
    ignored = sorted(set(properties) & IGNORED_FUNCTION_PROPERTIES)
    if ignored:
        out.notes.append(f"{logical_id}: {', '.join(ignored)} ignored (Lamina does not enforce IAM, "
                         "VPCs, KMS or code signing)")
    function: dict[str, Any] = {_FUNCTION_CONFIG[k]: v for k, v in properties.items() if k in _FUNCTION_CONFIG}
    function["Tags"] = {**(properties.get("Tags") or {}), "lambda:createdBy": "SAM"}
    if "Tracing" in properties:
        function["TracingConfig"] = {"Mode": properties["Tracing"]}
    dead_letter = properties.get("DeadLetterQueue")
    if isinstance(dead_letter, dict) and "TargetArn" in dead_letter:
        function["DeadLetterConfig"] = {"TargetArn": dead_letter["TargetArn"]}
    build = None
    if properties.get("PackageType") == "Image":
        function["Code"] = {"ImageUri": properties.get("ImageUri")}
    elif "InlineCode" in properties:
        function["Code"] = {"ZipFile": properties["InlineCode"]}
    else:
        build = {"CodeUri": properties.get("CodeUri", "."), "Runtime": properties.get("Runtime"),
                 "Architectures": properties.get("Architectures"), "BuildMethod": metadata.get("BuildMethod")}
    yield Resource(logical_id, "AWS::Lambda::Function", function, build=build)

    alias_name = properties.get("AutoPublishAlias")
    qualifier: Any = None
    target = {"Ref": logical_id}
    if alias_name:
        alias_id = f"{logical_id}Alias{alias_name}"
        qualifier = alias_name
        alias: dict[str, Any] = {"FunctionName": target, "Name": alias_name,
                                 # Any change to the function's code or configuration changes
                                 # this, so the alias publishes a version and moves.
                                 "FunctionRevision": {"Lamina::Revision": logical_id}}
        preference = properties.get("DeploymentPreference")
        if isinstance(preference, dict) and preference.get("Enabled", True) not in (False, "false"):
            alias["DeploymentPreference"] = {"Type": preference.get("Type", "AllAtOnce")}
        if "ProvisionedConcurrencyConfig" in properties:
            alias["ProvisionedConcurrencyConfig"] = properties["ProvisionedConcurrencyConfig"]
        yield Resource(alias_id, "AWS::Lambda::Alias", alias, depends_on={logical_id})
        out.aliases[f"{logical_id}.Alias"] = alias_id

    if "EventInvokeConfig" in properties:
        config = dict(properties["EventInvokeConfig"] or {})
        invoke = {"FunctionName": target, "Qualifier": qualifier or "$LATEST",
                  **{k: config[k] for k in ("MaximumEventAgeInSeconds", "MaximumRetryAttempts") if k in config}}
        destinations = config.get("DestinationConfig") or {}
        if destinations:
            invoke["DestinationConfig"] = {
                key: {"Destination": value.get("Destination")}
                for key, value in destinations.items() if isinstance(value, dict)
            }
        yield Resource(f"{logical_id}EventInvokeConfig", "AWS::Lambda::EventInvokeConfig", invoke,
                       depends_on={f"{logical_id}Alias{alias_name}"} if alias_name else set())

    events = properties.get("Events") or {}
    url_config = properties.get("FunctionUrlConfig")
    web_events = {name: e for name, e in events.items() if e.get("Type") in ("Api", "HttpApi")}
    if url_config is not None or web_events:
        url_config = dict(url_config or {"AuthType": "NONE"})
        url_id = f"{logical_id}Url"
        url: dict[str, Any] = {"TargetFunctionArn": target, "AuthType": url_config.get("AuthType", "NONE")}
        for key in ("Cors", "InvokeMode"):
            if key in url_config:
                url[key] = url_config[key]
        if qualifier:
            url["Qualifier"] = qualifier
        after = {f"{logical_id}Alias{alias_name}"} if alias_name else set()
        yield Resource(url_id, "AWS::Lambda::Url", url, depends_on=set(after))
        if url["AuthType"] == "NONE":
            # The two statements AWS requires of a public URL (the second since October 2025).
            common = {"FunctionName": target, "Principal": "*", **({"Qualifier": qualifier} if qualifier else {})}
            yield Resource(f"{logical_id}UrlPublicPermissions", "AWS::Lambda::Permission",
                           {**common, "Action": "lambda:InvokeFunctionUrl", "FunctionUrlAuthType": "NONE"},
                           depends_on=set(after))
            yield Resource(f"{logical_id}URLInvokeAllowPublicAccess", "AWS::Lambda::Permission",
                           {**common, "Action": "lambda:InvokeFunction", "InvokedViaFunctionUrl": True},
                           depends_on=set(after))
        for name, event in web_events.items():
            props = event.get("Properties") or {}
            out.routes.append(Route(logical_id, str(props.get("Method", "ANY")).upper(),
                                    str(props.get("Path", "/")), str(event["Type"])))

    function_ref: Any = {"Ref": f"{logical_id}.Alias"} if alias_name else {"Fn::GetAtt": [logical_id, "Arn"]}
    for name, event in events.items():
        kind = event.get("Type")
        props = dict(event.get("Properties") or {})
        event_id = f"{logical_id}{name}"
        if kind == "SQS":
            mapping = {"FunctionName": function_ref, "EventSourceArn": props.pop("Queue", None), **props}
            yield Resource(event_id, "AWS::Lambda::EventSourceMapping", mapping)
        elif kind == "Schedule":
            enabled = props.get("Enabled", True) not in (False, "false")
            rule: dict[str, Any] = {
                "Name": props.get("Name"), "ScheduleExpression": props.get("Schedule"),
                "State": props.get("State") or ("ENABLED" if enabled else "DISABLED"),
                "Description": props.get("Description"),
                "Targets": [{"Id": f"{event_id}LambdaTarget", "Arn": function_ref,
                             **({"Input": props["Input"]} if "Input" in props else {})}],
            }
            yield Resource(event_id, "AWS::Events::Rule", {k: v for k, v in rule.items() if v is not None})
            yield Resource(f"{event_id}Permission", "AWS::Lambda::Permission", {
                "FunctionName": target, "Action": "lambda:InvokeFunction",
                "Principal": "events.amazonaws.com", "SourceArn": {"Fn::GetAtt": [event_id, "Arn"]},
                **({"Qualifier": qualifier} if qualifier else {})})
        elif kind == "ScheduleV2":
            schedule: dict[str, Any] = {
                k: props[k] for k in ("Name", "ScheduleExpression", "ScheduleExpressionTimezone",
                                      "Description", "State", "StartDate", "EndDate", "GroupName")
                if k in props}
            schedule["FlexibleTimeWindow"] = props.get("FlexibleTimeWindow") or {"Mode": "OFF"}
            schedule["Target"] = {"Arn": function_ref, "RoleArn": props.get("RoleArn") or DEFAULT_ROLE,
                                  **({"Input": props["Input"]} if "Input" in props else {}),
                                  **({"RetryPolicy": props["RetryPolicy"]} if "RetryPolicy" in props else {})}
            yield Resource(event_id, "AWS::Scheduler::Schedule", schedule)


def _plain_function(logical_id: str, properties: dict[str, Any], metadata: dict[str, Any]) -> Resource:
    properties = dict(properties)
    code = properties.get("Code")
    build = None
    if isinstance(code, str):
        # `Code: ./src`, a local directory, as `sam deploy` and `aws cloudformation package` accept.
        build = {"CodeUri": properties.pop("Code"), "Runtime": properties.get("Runtime"),
                 "Architectures": properties.get("Architectures"), "BuildMethod": metadata.get("BuildMethod")}
    return Resource(logical_id, "AWS::Lambda::Function", properties, build=build)


def _layer(logical_id: str, properties: dict[str, Any], metadata: dict[str, Any]) -> Resource:
    layer = {k: v for k, v in properties.items() if k != "ContentUri"}
    layer.setdefault("LayerName", logical_id)
    layer.setdefault("RetentionPolicy", "Retain")
    runtimes = properties.get("CompatibleRuntimes") or []
    build = {"CodeUri": properties.get("ContentUri", "."), "Layer": True,
             "Runtime": runtimes[0] if isinstance(runtimes, list) and runtimes else None,
             "Architectures": properties.get("CompatibleArchitectures"),
             "BuildMethod": metadata.get("BuildMethod")}
    return Resource(logical_id, "AWS::Lambda::LayerVersion", layer, build=build)


def shift_first_step(deployment_type: str) -> int | None:
    """The percentage a DeploymentPreference type (`Canary10Percent5Minutes`,
    `Linear10PercentEvery1Minute`, ...) sends to the new version first; None for
    AllAtOnce. Lamina has no CodeDeploy to shift the rest over time: the user does."""
    found = re.match(r"(?:Canary|Linear)(\d+)Percent", deployment_type)
    return int(found.group(1)) if found else None


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]
