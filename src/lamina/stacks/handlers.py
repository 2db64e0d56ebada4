"""What each resource type's creation, update and deletion is, in API calls.

One handler per type, as CloudFormation has one per resource type: `put` makes or
updates the resource from its resolved properties and returns its new state with a
function that undoes exactly that (for a rollback); `delete` removes it. They speak
only through the stack's boto3 clients, as any API user would.
"""

from __future__ import annotations

import json
import urllib.request
from typing import TYPE_CHECKING, Any, Callable

from lamina.stacks.build import Artifact, deterministic_zip_of
from lamina.stacks.records import ResourceState
from lamina.stacks.transform import DEFAULT_ROLE, Resource, shift_first_step

if TYPE_CHECKING:
    from lamina.stacks.deploy import Stack

Revert = Callable[[], None]


class _Handler:
    def put(self, stack: Stack, resource: Resource, desired: dict[str, Any], artifact: Artifact | None,
            before: ResourceState | None) -> tuple[ResourceState, Revert]:
        raise NotImplementedError

    def delete(self, stack: Stack, state: ResourceState) -> None:
        raise NotImplementedError


# -- functions ---------------------------------------------------------------------

_CONFIG_KEYS = ("Handler", "Runtime", "Role", "Description", "Timeout", "MemorySize", "Environment", "Layers",
                "EphemeralStorage", "DeadLetterConfig", "TracingConfig", "LoggingConfig", "SnapStart", "ImageConfig")
# What a key the template no longer sets goes back to (Lambda's defaults).
_RESET: dict[str, Any] = {
    "Description": "", "Timeout": 3, "MemorySize": 128, "Environment": {"Variables": {}}, "Layers": [],
    "EphemeralStorage": {"Size": 512}, "DeadLetterConfig": {"TargetArn": ""},
    "TracingConfig": {"Mode": "PassThrough"}, "LoggingConfig": {"LogFormat": "Text"},
    "SnapStart": {"ApplyOn": "None"},
}
_INTEGERS = {"Timeout", "MemorySize", "ReservedConcurrentExecutions", "BatchSize", "MaximumBatchingWindowInSeconds",
             "MaximumEventAgeInSeconds", "MaximumRetryAttempts", "ProvisionedConcurrentExecutions"}


def _typed(properties: dict[str, Any]) -> dict[str, Any]:
    """Numbers as numbers (a parameter's value is a string), environment values as strings."""
    out = {}
    for key, value in properties.items():
        if key in _INTEGERS and isinstance(value, str) and value.lstrip("-").isdigit():
            value = int(value)
        elif key == "EphemeralStorage" and isinstance(value, dict):
            value = {"Size": int(value.get("Size", 512))}
        elif key == "Environment" and isinstance(value, dict):
            value = {"Variables": {k: str(v) for k, v in (value.get("Variables") or {}).items()}}
        out[key] = value
    return out


class _Function(_Handler):
    def _config(self, properties: dict[str, Any]) -> dict[str, Any]:
        properties = _typed(properties)
        config = {k: properties[k] for k in _CONFIG_KEYS if k in properties}
        config.setdefault("Role", DEFAULT_ROLE)
        return config

    def put(self, stack: Stack, resource: Resource, desired: dict[str, Any], artifact: Artifact | None,
            before: ResourceState | None) -> tuple[ResourceState, Revert]:
        client = stack.clients.lambda_
        properties = desired["properties"]
        name = stack.physical_id(resource, properties)
        assert name is not None
        config = self._config(properties)
        code = dict(properties.get("Code") or {})
        if artifact is not None:
            code = {"ZipFile": artifact.read()}
        elif "ZipFile" in code:
            handler_file = str(config.get("Handler", "index.handler")).rsplit(".", 1)[0]
            suffix = ".py" if str(config.get("Runtime", "")).startswith("python") else ".js"
            code = {"ZipFile": deterministic_zip_of({handler_file + suffix: str(code["ZipFile"])})}
        reserved = _typed(properties).get("ReservedConcurrentExecutions")
        tags = {**{str(k): str(v) for k, v in (properties.get("Tags") or {}).items()},
                "lamina:stack-name": stack.name, "lamina:logical-id": resource.logical_id}
        if before is None:
            extra = {"PackageType": properties["PackageType"]} if "PackageType" in properties else {}
            if "Architectures" in properties:
                extra["Architectures"] = properties["Architectures"]
            client.create_function(FunctionName=name, Code=code, Tags=tags, **extra, **config)

            def revert() -> None:
                client.delete_function(FunctionName=name)
        else:
            revert = self._update(stack, name, before, desired, code, config, tags)
        try:
            result = stack.wait_function(name)
            if reserved is not None:
                client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=reserved)
            elif before is not None and "ReservedConcurrentExecutions" in before.properties:
                client.delete_function_concurrency(FunctionName=name)
        except Exception:
            revert()
            raise
        return ResourceState(resource.type, name, properties, {"Arn": result["FunctionArn"]}), revert

    def _update(self, stack: Stack, name: str, before: ResourceState, desired: dict[str, Any],
                code: dict[str, Any], config: dict[str, Any], tags: dict[str, str]) -> Revert:
        """Update code (when it changed) and configuration; the undo gives both back.
        A step that fails undoes the steps before it, since no undo is returned then."""
        client = stack.clients.lambda_
        properties = desired["properties"]
        old = stack.wait_function(name)
        old_code: bytes | None = None
        code_changes = (before.code_sha256 != desired["code_sha256"]
                        or before.properties.get("Code") != properties.get("Code")
                        # Architectures change through UpdateFunctionCode, not the configuration.
                        or before.properties.get("Architectures") != properties.get("Architectures"))
        if code_changes and old.get("PackageType", "Zip") == "Zip":
            location = client.get_function(FunctionName=name)["Code"]["Location"]
            with urllib.request.urlopen(location, timeout=60) as response:   # the server's own URL
                old_code = response.read()
        previous = {k: old[k] for k in _CONFIG_KEYS if k in old and k != "Layers"}
        previous["Layers"] = [layer["Arn"] for layer in old.get("Layers", [])]
        if "Environment" in old:
            previous["Environment"] = {"Variables": old["Environment"].get("Variables", {})}
        if not old.get("DeadLetterConfig"):
            previous.pop("DeadLetterConfig", None)
        # GetFunctionConfiguration's shapes are not UpdateFunctionConfiguration's.
        if "SnapStart" in old:
            previous["SnapStart"] = {"ApplyOn": old["SnapStart"].get("ApplyOn", "None")}
        if "ImageConfig" in (old.get("ImageConfigResponse") or {}):
            previous["ImageConfig"] = old["ImageConfigResponse"]["ImageConfig"]

        def revert() -> None:
            stack.wait_function(name)
            if old_code is not None:
                client.update_function_code(FunctionName=name, ZipFile=old_code)
                stack.wait_function(name)
            client.update_function_configuration(FunctionName=name, **previous)
            stack.wait_function(name)

        try:
            if code_changes:
                arch = {"Architectures": properties["Architectures"]} if "Architectures" in properties else {}
                client.update_function_code(FunctionName=name, **code, **arch)
                stack.wait_function(name)
            resets = {k: v for k, v in _RESET.items() if k in (before.properties or {}) and k not in config}
            client.update_function_configuration(FunctionName=name, **config, **resets)
            client.tag_resource(Resource=old["FunctionArn"], Tags=tags)
        except Exception:
            revert()
            raise
        return revert

    def delete(self, stack: Stack, state: ResourceState) -> None:
        stack.clients.lambda_.delete_function(FunctionName=state.physical_id)


class _Alias(_Handler):
    def put(self, stack: Stack, resource: Resource, desired: dict[str, Any], artifact: Artifact | None,
            before: ResourceState | None) -> tuple[ResourceState, Revert]:
        client = stack.clients.lambda_
        properties = _typed(desired["properties"])
        function, name = properties["FunctionName"], properties["Name"]
        version = client.publish_version(FunctionName=function)["Version"]
        stack.progress(f"published version {version} of {function}")
        try:
            current = client.get_alias(FunctionName=function, Name=name)
        except client.exceptions.ResourceNotFoundException:
            current = None
        if current is None:
            result = client.create_alias(FunctionName=function, Name=name, FunctionVersion=version)

            def revert() -> None:
                client.delete_alias(FunctionName=function, Name=name)
        else:
            old_version = current["FunctionVersion"]
            old_routing = current.get("RoutingConfig") or {"AdditionalVersionWeights": {}}
            step = shift_first_step(str((properties.get("DeploymentPreference") or {}).get("Type", "")))
            if step is not None and old_version != version:
                # Canary/linear: the old version keeps the alias, the new one gets the first step.
                routing = {"AdditionalVersionWeights": {version: step / 100}}
                result = client.update_alias(FunctionName=function, Name=name, FunctionVersion=old_version,
                                             RoutingConfig=routing)
                stack.progress(f"alias {name}: {step}% of invocations to version {version}; shift the rest with "
                               f"`lamina alias update {function} {name} --version {version} --no-routing`")
            else:
                result = client.update_alias(FunctionName=function, Name=name, FunctionVersion=version,
                                             RoutingConfig={"AdditionalVersionWeights": {}})

            def revert() -> None:
                client.update_alias(FunctionName=function, Name=name, FunctionVersion=old_version,
                                    RoutingConfig=old_routing)
        provisioned = properties.get("ProvisionedConcurrencyConfig")
        if provisioned:
            client.put_provisioned_concurrency_config(
                FunctionName=function, Qualifier=name,
                ProvisionedConcurrentExecutions=int(provisioned["ProvisionedConcurrentExecutions"]))
        elif before is not None and before.properties.get("ProvisionedConcurrencyConfig"):
            client.delete_provisioned_concurrency_config(FunctionName=function, Qualifier=name)
        return ResourceState(resource.type, result["AliasArn"], desired["properties"],
                             {"FunctionVersion": version}), revert

    def delete(self, stack: Stack, state: ResourceState) -> None:
        function, name = state.properties["FunctionName"], state.properties["Name"]
        stack.clients.lambda_.delete_alias(FunctionName=function, Name=name)


class _Url(_Handler):
    def put(self, stack: Stack, resource: Resource, desired: dict[str, Any], artifact: Artifact | None,
            before: ResourceState | None) -> tuple[ResourceState, Revert]:
        client = stack.clients.lambda_
        properties = desired["properties"]
        where = {"FunctionName": properties["TargetFunctionArn"],
                 **({"Qualifier": properties["Qualifier"]} if properties.get("Qualifier") else {})}
        settings = {k: properties[k] for k in ("AuthType", "Cors", "InvokeMode") if k in properties}
        if before is None:
            result = client.create_function_url_config(**where, **settings)

            def revert() -> None:
                client.delete_function_url_config(**where)
        else:
            old = client.get_function_url_config(**where)
            result = client.update_function_url_config(**where, **settings)

            def revert() -> None:
                client.update_function_url_config(**where, **{k: old[k] for k in ("AuthType", "Cors", "InvokeMode")
                                                              if k in old})
        return ResourceState(resource.type, result["FunctionArn"], properties,
                             {"FunctionUrl": result["FunctionUrl"], "FunctionArn": result["FunctionArn"]}), revert

    def delete(self, stack: Stack, state: ResourceState) -> None:
        properties = state.properties
        stack.clients.lambda_.delete_function_url_config(
            FunctionName=properties["TargetFunctionArn"],
            **({"Qualifier": properties["Qualifier"]} if properties.get("Qualifier") else {}))


class _Permission(_Handler):
    _KEYS = ("Action", "Principal", "SourceArn", "SourceAccount", "EventSourceToken", "FunctionUrlAuthType",
             "PrincipalOrgID", "InvokedViaFunctionUrl", "Qualifier")

    def put(self, stack: Stack, resource: Resource, desired: dict[str, Any], artifact: Artifact | None,
            before: ResourceState | None) -> tuple[ResourceState, Revert]:
        client = stack.clients.lambda_
        properties = desired["properties"]
        if before is not None:
            self.delete(stack, before)
        args = {k: properties[k] for k in self._KEYS if k in properties}
        client.add_permission(FunctionName=properties["FunctionName"], StatementId=resource.logical_id, **args)
        state = ResourceState(resource.type, resource.logical_id, properties)

        def revert() -> None:
            self.delete(stack, state)
            if before is not None:
                old = {k: before.properties[k] for k in self._KEYS if k in before.properties}
                client.add_permission(FunctionName=before.properties["FunctionName"],
                                      StatementId=resource.logical_id, **old)
        return state, revert

    def delete(self, stack: Stack, state: ResourceState) -> None:
        qualifier = {"Qualifier": state.properties["Qualifier"]} if state.properties.get("Qualifier") else {}
        stack.clients.lambda_.remove_permission(FunctionName=state.properties["FunctionName"],
                                                StatementId=state.physical_id, **qualifier)


class _EventSourceMapping(_Handler):
    _UPDATABLE = ("FunctionName", "BatchSize", "Enabled", "MaximumBatchingWindowInSeconds", "FilterCriteria",
                  "FunctionResponseTypes", "ScalingConfig")

    def put(self, stack: Stack, resource: Resource, desired: dict[str, Any], artifact: Artifact | None,
            before: ResourceState | None) -> tuple[ResourceState, Revert]:
        client = stack.clients.lambda_
        properties = _typed(desired["properties"])
        args = {k: properties[k] for k in self._UPDATABLE if k in properties}
        if before is None or before.properties.get("EventSourceArn") != properties.get("EventSourceArn"):
            result = client.create_event_source_mapping(EventSourceArn=properties["EventSourceArn"], **args)
            uuid = result["UUID"]
            if before is not None:
                self.delete(stack, before)

            def revert() -> None:
                client.delete_event_source_mapping(UUID=uuid)
        else:
            uuid = before.physical_id
            old = client.get_event_source_mapping(UUID=uuid)
            result = client.update_event_source_mapping(UUID=uuid, **args)

            def revert() -> None:
                client.update_event_source_mapping(UUID=uuid, **{k: old[k] for k in self._UPDATABLE
                                                                 if k in old and k != "FunctionName"})
        return ResourceState(resource.type, uuid, desired["properties"],
                             {"Id": uuid, "EventSourceMappingArn": result.get("EventSourceMappingArn", "")}), revert

    def delete(self, stack: Stack, state: ResourceState) -> None:
        stack.clients.lambda_.delete_event_source_mapping(UUID=state.physical_id)


class _Queue(_Handler):
    _ATTRIBUTES = ("DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod",
                   "ReceiveMessageWaitTimeSeconds", "VisibilityTimeout", "RedrivePolicy")

    def _attributes(self, properties: dict[str, Any]) -> dict[str, str]:
        return {k: json.dumps(v) if isinstance(v, dict) else str(v)
                for k, v in properties.items() if k in self._ATTRIBUTES}

    def put(self, stack: Stack, resource: Resource, desired: dict[str, Any], artifact: Artifact | None,
            before: ResourceState | None) -> tuple[ResourceState, Revert]:
        sqs = stack.clients.sqs
        properties = desired["properties"]
        url = stack.physical_id(resource, properties)
        assert url is not None
        name = url.rsplit("/", 1)[1]
        attributes = self._attributes(properties)
        if before is None:
            url = sqs.create_queue(QueueName=name, Attributes=attributes,
                                   tags={str(k): str(v) for k, v in (properties.get("Tags") or {}).items()})["QueueUrl"]

            def revert() -> None:
                sqs.delete_queue(QueueUrl=url)
        else:
            old = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(self._ATTRIBUTES))["Attributes"]
            sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)

            def revert() -> None:
                sqs.set_queue_attributes(QueueUrl=url, Attributes=old)
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return ResourceState(resource.type, url, properties, {"Arn": arn, "QueueName": name, "QueueUrl": url}), revert

    def delete(self, stack: Stack, state: ResourceState) -> None:
        stack.clients.sqs.delete_queue(QueueUrl=state.physical_id)


class _Rule(_Handler):
    def put(self, stack: Stack, resource: Resource, desired: dict[str, Any], artifact: Artifact | None,
            before: ResourceState | None) -> tuple[ResourceState, Revert]:
        events = stack.clients.events
        properties = desired["properties"]
        name = stack.physical_id(resource, properties)
        assert name is not None
        rule = {k: properties[k] for k in ("ScheduleExpression", "State", "Description", "EventPattern")
                if k in properties}
        old_rule = events.describe_rule(Name=name) if before is not None else None
        arn = events.put_rule(Name=name, **rule)["RuleArn"]
        targets = [{k: (json.dumps(v) if k == "Input" and not isinstance(v, str) else v) for k, v in t.items()}
                   for t in properties.get("Targets", [])]
        events.put_targets(Rule=name, Targets=targets)

        def revert() -> None:
            if old_rule is None:
                events.remove_targets(Rule=name, Ids=[t["Id"] for t in targets])
                events.delete_rule(Name=name)
            else:
                events.put_rule(Name=name, **{k: old_rule[k] for k in ("ScheduleExpression", "State", "Description")
                                              if k in old_rule})
        return ResourceState(resource.type, name, properties, {"Arn": arn}), revert

    def delete(self, stack: Stack, state: ResourceState) -> None:
        events = stack.clients.events
        ids = [t["Id"] for t in state.properties.get("Targets", [])]
        if ids:
            events.remove_targets(Rule=state.physical_id, Ids=ids)
        events.delete_rule(Name=state.physical_id)


class _Schedule(_Handler):
    _KEYS = ("ScheduleExpression", "ScheduleExpressionTimezone", "Description", "State", "StartDate", "EndDate",
             "GroupName", "FlexibleTimeWindow", "Target")

    def _args(self, properties: dict[str, Any]) -> dict[str, Any]:
        args = {k: properties[k] for k in self._KEYS if k in properties}
        target = dict(args.get("Target") or {})
        if "Input" in target and not isinstance(target["Input"], str):
            target["Input"] = json.dumps(target["Input"])
        args["Target"] = target
        return args

    def put(self, stack: Stack, resource: Resource, desired: dict[str, Any], artifact: Artifact | None,
            before: ResourceState | None) -> tuple[ResourceState, Revert]:
        scheduler = stack.clients.scheduler
        properties = desired["properties"]
        name = stack.physical_id(resource, properties)
        assert name is not None
        if before is None:
            arn = scheduler.create_schedule(Name=name, **self._args(properties))["ScheduleArn"]

            def revert() -> None:
                scheduler.delete_schedule(Name=name, **self._group(properties))
        else:
            arn = scheduler.update_schedule(Name=name, **self._args(properties))["ScheduleArn"]

            def revert() -> None:
                scheduler.update_schedule(Name=name, **self._args(before.properties))
        return ResourceState(resource.type, name, properties, {"Arn": arn}), revert

    def _group(self, properties: dict[str, Any]) -> dict[str, Any]:
        return {"GroupName": properties["GroupName"]} if "GroupName" in properties else {}

    def delete(self, stack: Stack, state: ResourceState) -> None:
        stack.clients.scheduler.delete_schedule(Name=state.physical_id, **self._group(state.properties))


class _EventInvokeConfig(_Handler):
    def put(self, stack: Stack, resource: Resource, desired: dict[str, Any], artifact: Artifact | None,
            before: ResourceState | None) -> tuple[ResourceState, Revert]:
        client = stack.clients.lambda_
        properties = _typed(desired["properties"])
        client.put_function_event_invoke_config(**properties)

        def revert() -> None:
            if before is None:
                self.delete(stack, ResourceState(resource.type, "", properties))
            else:
                client.put_function_event_invoke_config(**_typed(before.properties))
        return ResourceState(resource.type, str(properties["FunctionName"]), desired["properties"]), revert

    def delete(self, stack: Stack, state: ResourceState) -> None:
        stack.clients.lambda_.delete_function_event_invoke_config(
            FunctionName=state.properties["FunctionName"], Qualifier=state.properties.get("Qualifier", "$LATEST"))


class _Layer(_Handler):
    def put(self, stack: Stack, resource: Resource, desired: dict[str, Any], artifact: Artifact | None,
            before: ResourceState | None) -> tuple[ResourceState, Revert]:
        client = stack.clients.lambda_
        properties = desired["properties"]
        assert artifact is not None
        args = {k: properties[k] for k in ("Description", "CompatibleRuntimes", "CompatibleArchitectures",
                                           "LicenseInfo") if k in properties}
        result = client.publish_layer_version(LayerName=properties["LayerName"],
                                              Content={"ZipFile": artifact.read()}, **args)
        arn = result["LayerVersionArn"]
        state = ResourceState(resource.type, arn, properties, {"LayerVersionArn": arn})

        def revert() -> None:
            self.delete(stack, state, force=True)
        return state, revert

    def delete(self, stack: Stack, state: ResourceState, force: bool = False) -> None:
        if state.properties.get("RetentionPolicy", "Retain") != "Delete" and not force:
            stack.progress(f"RETAINED  {state.physical_id} (RetentionPolicy: Retain)")
            return
        name, version = state.physical_id.rsplit(":", 1)
        stack.clients.lambda_.delete_layer_version(LayerName=name.rsplit(":", 1)[1], VersionNumber=int(version))


HANDLERS: dict[str, _Handler] = {
    "AWS::Lambda::Function": _Function(),
    "AWS::Lambda::Alias": _Alias(),
    "AWS::Lambda::Url": _Url(),
    "AWS::Lambda::Permission": _Permission(),
    "AWS::Lambda::EventSourceMapping": _EventSourceMapping(),
    "AWS::Lambda::EventInvokeConfig": _EventInvokeConfig(),
    "AWS::Lambda::LayerVersion": _Layer(),
    "AWS::SQS::Queue": _Queue(),
    "AWS::Events::Rule": _Rule(),
    "AWS::Scheduler::Schedule": _Schedule(),
}


